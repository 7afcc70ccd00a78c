//! The SQL side of incremental snapshots: read a table in primary-key order, one chunk at a
//! time, between two watermarks written into the WAL (see [`super::window`] for the stream
//! side and why the result is exact).
//!
//! ```text
//!  emit LOW ─▶ BEGIN REPEATABLE READ
//!              SELECT key::text … WHERE key > after [AND filter] ORDER BY key OFFSET size-1 LIMIT 1
//!              COPY (SELECT … WHERE key > after AND key <= upper [AND filter]) TO STDOUT (binary)
//!              COMMIT ─▶ emit HIGH
//! ```
//!
//! Chunks are keyset ranges `(after, upper]` so that reading one costs an index range scan,
//! whatever its position in the table; the last chunk has no upper bound. Keys travel as text
//! and come back as typed literals, so any primary key type works.

use std::sync::Arc;

use deltalake::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tokio_postgres::Client as SqlClient;

use super::catalog::TypeSupport;
use super::copy::CopyDecoder;
use super::snapshot::{self, TablePlan};
use super::table::{Op, RowPosition, TableBuilder};
use crate::change::{quote_ident, quote_literal, TableName, MARKER_PREFIX};
use crate::window::{ChunkRead, Marker};
use crate::{Error, Lsn, Result};

/// A table planned for keyset reads.
#[derive(Debug, Clone)]
pub struct KeyedPlan {
    plan: TablePlan,
    /// Primary key columns: (name, SQL type) in key order.
    key: Vec<(String, String)>,
}

impl KeyedPlan {
    /// The table.
    pub fn table(&self) -> &Arc<TableName> {
        &self.plan.shape.table
    }

    /// Primary key column names, in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Row count estimate, for progress.
    pub fn estimate(&self) -> u64 {
        self.plan.estimate
    }

    fn key_list(&self) -> String {
        let names: Vec<_> = self.key.iter().map(|(n, _)| quote_ident(n)).collect();
        format!("({})", names.join(", "))
    }

    fn key_literal(&self, values: &[String]) -> String {
        let literals: Vec<_> = self
            .key
            .iter()
            .zip(values)
            .map(|((_, ty), v)| format!("{}::{ty}", quote_literal(v)))
            .collect();
        format!("({})", literals.join(", "))
    }
}

/// The primary key of `table` as (column, SQL type) in key order; empty when it has none.
pub async fn primary_key(client: &SqlClient, table: &TableName) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = $1::text::regclass AND i.indisprimary
              ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&table.quoted()],
        )
        .await
        .map_err(|source| Error::Sql {
            context: format!("reading the primary key of {table}"),
            source,
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Plan `table` for keyset reads; a table without a primary key is refused.
pub async fn plan(client: &SqlClient, table: &TableName, types: &TypeSupport) -> Result<KeyedPlan> {
    let key = primary_key(client, table).await?;
    if key.is_empty() {
        return Err(Error::NoPrimaryKey {
            table: table.to_string(),
        });
    }
    let mut plans = snapshot::plan(client, std::slice::from_ref(table), types).await?;
    let plan = plans
        .pop()
        .ok_or_else(|| Error::Protocol(format!("no plan for {table}")))?;
    Ok(KeyedPlan { plan, key })
}

/// Check that `filter` is a valid predicate on `table` (without reading any row).
pub async fn check_filter(client: &SqlClient, table: &TableName, filter: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "EXPLAIN SELECT 1 FROM {} WHERE ({filter})",
            table.quoted()
        ))
        .await
        .map_err(|source| Error::Sql {
            context: format!("checking the predicate on {table}"),
            source,
        })
}

/// Write a Sluice marker into the WAL (a transactional logical decoding message, committed on
/// its own). Returns its position.
pub async fn emit(client: &SqlClient, marker: &Marker) -> Result<Lsn> {
    let lsn: String = client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&MARKER_PREFIX, &marker.encode()],
        )
        .await
        .map_err(|source| Error::Sql {
            context: "writing a watermark into the WAL".into(),
            source,
        })?
        .get(0);
    lsn.parse().map_err(Error::Protocol)
}

/// Read the chunk of at most `size` rows after key `after` (from the start when `None`),
/// restricted to `filter`, in `max_rows` batches.
pub async fn read_chunk(
    client: &SqlClient,
    plan: &KeyedPlan,
    after: Option<&[String]>,
    filter: Option<&str>,
    size: usize,
    max_rows: usize,
) -> Result<ChunkRead> {
    let table = plan.table().clone();
    let sql = |source| Error::Sql {
        context: format!("reading a snapshot chunk of {table}"),
        source,
    };
    let mut conditions = Vec::new();
    if let Some(after) = after {
        conditions.push(format!("{} > {}", plan.key_list(), plan.key_literal(after)));
    }
    if let Some(filter) = filter {
        conditions.push(format!("({filter})"));
    }
    // Qualified: a bare ORDER BY name would pick the output column (the text cast) and sort
    // by text, without the index.
    let order: Vec<_> = plan
        .key
        .iter()
        .map(|(n, _)| format!("t.{}", quote_ident(n)))
        .collect();
    let texts: Vec<_> = plan
        .key
        .iter()
        .map(|(n, _)| format!("t.{}::text", quote_ident(n)))
        .collect();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(sql)?;
    let bound = client
        .query_opt(
            &format!(
                "SELECT {} FROM {} AS t {} ORDER BY {} OFFSET {} LIMIT 1",
                texts.join(", "),
                table.quoted(),
                where_clause(&conditions),
                order.join(", "),
                size.max(1) - 1
            ),
            &[],
        )
        .await
        .map_err(sql)?;
    let upper: Option<Vec<String>> = bound.map(|row| {
        (0..plan.key.len())
            .map(|i| row.get::<_, String>(i))
            .collect()
    });
    if let Some(upper) = &upper {
        conditions.push(format!(
            "{} <= {}",
            plan.key_list(),
            plan.key_literal(upper)
        ));
    }
    let statement = format!(
        "COPY ({} {}) TO STDOUT (FORMAT binary)",
        plan.plan.select,
        where_clause(&conditions)
    );
    let stream = client.copy_out(&statement).await.map_err(sql)?;
    futures::pin_mut!(stream);
    let mut decoder = CopyDecoder::new();
    let mut builder = TableBuilder::new(plan.plan.shape.clone(), max_rows.min(size).max(1));
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(data) = stream.next().await {
        decoder.push(&data.map_err(sql)?);
        decoder.rows(|row| {
            // The position is stamped at the high watermark; the ordinal is the key order.
            let position = RowPosition {
                lsn: Lsn::ZERO,
                seq: rows as i64,
                commit_ts: 0,
            };
            builder.append_values(Op::Read, position, row.len(), row.values())?;
            rows += 1;
            Ok::<_, Error>(())
        })?;
        if builder.rows() >= max_rows {
            batches.extend(builder.take()?);
        }
    }
    if !decoder.finished() {
        return Err(Error::Protocol(format!(
            "copy of {table} ended without its trailer"
        )));
    }
    batches.extend(builder.take()?);
    if batches.is_empty() {
        // An empty chunk still commits (its number is the progress): an empty batch carries
        // the schema.
        batches.push(RecordBatch::new_empty(builder.schema()));
    }
    client.batch_execute("COMMIT").await.map_err(sql)?;
    Ok(ChunkRead {
        batches,
        rows,
        upper,
    })
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}
