//! Initial snapshot: copy the configured tables as they were at the slot's consistent point,
//! in parallel, so that streaming from that point continues with no gap and no duplicate.
//!
//! ```text
//!  replication conn: CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT ─▶ (consistent point, snapshot)
//!        │ (kept open and idle until every worker imported the snapshot)
//!  worker × N: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT 'id'; check txid_current_snapshot()
//!        └─▶ for each CTID block range: COPY (SELECT …) TO STDOUT (FORMAT binary)
//!              └─▶ CopyDecoder ─▶ TableBuilder (op 'r') ─▶ queue: Event::Snapshot
//! ```
//!
//! Snapshot rows carry position *consistent point − 1* from the start, so the sinks write them
//! as data files as they arrive and make each table's visible in one commit at
//! [`Event::SnapshotCommit`]. A transaction whose commit record starts exactly at the
//! consistent point is not in the snapshot and is streamed; keeping snapshot rows one below
//! keeps the two distinct for the sinks' position filter.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio_postgres::Client as SqlClient;

use super::catalog::{self, TypeSupport};
use super::client::Client;
use super::column::ColumnType;
use super::conninfo::ConnInfo;
use super::copy::CopyDecoder;
use super::pgoutput::{Relation, RelationColumn};
use super::table::{Op, RowPosition, TableBuilder, TableShape};
use crate::change::{quote_ident, quote_literal, Event, TableBatch, TableName};
use crate::queue;
use crate::{Error, Lsn, Result};

/// `text` type OID: columns without a binary decoder are copied as their text output.
const TEXT_OID: u32 = 25;

/// A slot created with an exported snapshot. The snapshot stays importable while this
/// connection stays open and idle.
pub struct ExportedSnapshot {
    client: Client,
    /// Where streaming starts; the snapshot shows every transaction committed before it.
    pub consistent_point: Lsn,
    /// Snapshot name for `SET TRANSACTION SNAPSHOT`.
    pub name: String,
}

impl ExportedSnapshot {
    /// Create the logical slot `slot` (pgoutput) and export its snapshot. A temporary slot
    /// disappears with the connection (`snapshot = "initial_only"`).
    pub async fn create(info: &ConnInfo, slot: &str, temporary: bool) -> Result<Self> {
        let mut client = Client::connect(info, Some("database")).await?;
        let rows = client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot),
                if temporary { "TEMPORARY " } else { "" }
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let field = |i: usize| {
            row.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| Error::Protocol("CREATE_REPLICATION_SLOT row is incomplete".into()))
        };
        let consistent_point = field(1)?.parse().map_err(Error::Protocol)?;
        Ok(ExportedSnapshot {
            name: field(2)?,
            consistent_point,
            client,
        })
    }

    /// Close the exporting connection (after every worker imported the snapshot).
    pub async fn close(self) {
        self.client.terminate().await;
    }
}

/// How to copy one table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub(crate) shape: Arc<TableShape>,
    /// `SELECT <columns> FROM <table>`.
    pub(crate) select: String,
    /// Table size in blocks when planned.
    pages: u64,
    /// Row count estimate (`reltuples`), for progress.
    pub(crate) estimate: u64,
}

/// One CTID block range of one table; `end` `None` means to the end of the table.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    table: usize,
    start: u64,
    end: Option<u64>,
}

impl TablePlan {
    /// The table.
    pub fn table(&self) -> &Arc<TableName> {
        &self.shape.table
    }

    /// Row count estimate (`reltuples`).
    pub fn estimate(&self) -> u64 {
        self.estimate
    }
}

/// Read each table's columns and size, and decide how every column is copied.
pub async fn plan(
    client: &SqlClient,
    tables: &[TableName],
    types: &TypeSupport,
) -> Result<Vec<TablePlan>> {
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid::oid, a.atttypmod,
                        (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        greatest(c.reltuples, 0)::bigint,
                        t.typtype = 'd' OR EXISTS (
                            SELECT 1 FROM pg_cast k
                             WHERE k.castsource = a.atttypid AND k.casttarget = 'text'::regtype
                               AND k.castmethod = 'f')
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                  WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(|source| Error::Sql {
                context: format!("reading columns of {table}"),
                source,
            })?;
        let mut columns = Vec::with_capacity(rows.len());
        let mut select = Vec::with_capacity(rows.len());
        let mut pages = 0;
        let mut estimate = 0;
        for row in rows {
            let (name, oid, typmod): (String, u32, i32) = (row.get(0), row.get(1), row.get(2));
            pages = row.get::<_, i64>(3).max(0) as u64;
            estimate = row.get::<_, i64>(4).max(0) as u64;
            let decodable = ColumnType::from_oid(oid, typmod, &types.enums).is_some();
            let cast_is_not_output: bool = row.get(5);
            let (type_oid, expr) = if decodable {
                (oid, quote_ident(&name))
            } else {
                (TEXT_OID, text_expression(&name, cast_is_not_output))
            };
            select.push(expr);
            columns.push(RelationColumn {
                is_key: false,
                name,
                type_oid,
                type_modifier: typmod,
            });
        }
        let relation = Relation {
            oid: 0,
            namespace: table.schema.clone(),
            name: table.name.clone(),
            replica_identity: b'd',
            columns,
        };
        let shape = TableShape::from_relation(&relation, true, &types.enums, Lsn::ZERO)?;
        plans.push(TablePlan {
            shape: Arc::new(shape),
            select: format!("SELECT {} FROM {}", select.join(", "), table.quoted()),
            pages,
            estimate,
        });
    }
    Ok(plans)
}

/// The select expression of a column without a binary decoder: its text exactly as the type's
/// output function prints it, which is what streaming sends for it in text mode (same Arrow
/// type, text, and same value whichever path carried it).
///
/// `col::text` is that for most types (an I/O coercion: enums, ranges, composites, arrays,
/// money, macaddr, bit, xml…), but not where `pg_cast` has a function cast to text:
/// `inet`/`cidr` (`network_show` prints `::1/128` where `inet_out` prints `::1`), `"char"`;
/// nor for a domain, whose cast is its base type's (a char(n) domain would lose its padding
/// to `rtrim`, a bool domain print `true` for `t`). Those use `format('%s', col)`, which
/// calls the type's output function. It costs about 25%
/// more server time per such column (1M `inet`: 0.53 s against 0.42 s), so the plain cast
/// stays where it is exact. `IS DISTINCT FROM NULL` is a scalar null test even for a
/// composite (`ROW(NULL, NULL) IS NULL` is true): a row of nulls stays `(,)`, not NULL.
fn text_expression(column: &str, cast_is_not_output: bool) -> String {
    let c = quote_ident(column);
    if cast_is_not_output {
        format!("CASE WHEN {c} IS DISTINCT FROM NULL THEN format('%s', {c}) END AS {c}")
    } else {
        format!("{c}::text AS {c}")
    }
}

/// Split every table into block ranges of `chunk_pages`, largest tables first.
fn chunks(plans: &[TablePlan], chunk_pages: u64) -> VecDeque<Chunk> {
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(plans[*i].pages));
    let mut out = VecDeque::new();
    for table in order {
        let pages = plans[table].pages;
        let mut start = 0;
        while start + chunk_pages < pages {
            out.push_back(Chunk {
                table,
                start,
                end: Some(start + chunk_pages),
            });
            start += chunk_pages;
        }
        // The last range is open-ended: the table may have grown since it was measured.
        out.push_back(Chunk {
            table,
            start,
            end: None,
        });
    }
    out
}

/// Settings of one snapshot run.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Server to copy from.
    pub conninfo: ConnInfo,
    /// Parallel connections.
    pub workers: usize,
    /// Block range per COPY.
    pub chunk_pages: u64,
    /// Rows per chunk sent to the sinks.
    pub max_rows: usize,
    /// Position of every snapshot row (consistent point − 1) and the snapshot's time.
    pub position: RowPosition,
}

/// Copy every planned table at `snapshot` with `options.workers` connections, sending the
/// rows as [`Event::Snapshot`]s. Returns the number of rows copied; `progress[i]` counts the
/// rows of `plans[i]` as they are sent. The caller sends the [`Event::SnapshotCommit`] that
/// makes them visible.
pub async fn copy_tables(
    snapshot: &ExportedSnapshot,
    plans: Vec<TablePlan>,
    options: &SnapshotOptions,
    tx: &queue::Sender<Event>,
    progress: Vec<Arc<AtomicU64>>,
) -> Result<u64> {
    if progress.len() != plans.len() {
        return Err(Error::Protocol("one progress counter per table".into()));
    }
    let work = Arc::new(Mutex::new(chunks(&plans, options.chunk_pages.max(1))));
    let progress = Arc::new(progress);
    let plans = Arc::new(plans);
    let seen_snapshots = Arc::new(Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..options.workers.max(1) {
        workers.push(worker(
            options,
            &snapshot.name,
            work.clone(),
            plans.clone(),
            progress.clone(),
            tx,
            seen_snapshots.clone(),
        ));
    }
    let mut rows = 0;
    for r in futures::future::join_all(workers).await {
        rows += r?;
    }
    Ok(rows)
}

async fn worker(
    options: &SnapshotOptions,
    snapshot: &str,
    work: Arc<Mutex<VecDeque<Chunk>>>,
    plans: Arc<Vec<TablePlan>>,
    progress: Arc<Vec<Arc<AtomicU64>>>,
    tx: &queue::Sender<Event>,
    seen_snapshots: Arc<Mutex<HashSet<String>>>,
) -> Result<u64> {
    let client = catalog::connect(&options.conninfo).await?;
    let sql = |context: &'static str| {
        move |source| Error::Sql {
            context: context.to_string(),
            source,
        }
    };
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .await
        .map_err(sql("importing the exported snapshot"))?;
    // Every connection must see exactly the same snapshot.
    let seen: String = client
        .query_one("SELECT txid_current_snapshot()::text", &[])
        .await
        .map_err(sql("reading the imported snapshot"))?
        .get(0);
    {
        let mut all = seen_snapshots
            .lock()
            .map_err(|_| Error::Protocol("poisoned".into()))?;
        all.insert(seen);
        if all.len() > 1 {
            return Err(Error::Protocol(format!(
                "snapshot workers see different snapshots {all:?}: refusing an inconsistent copy"
            )));
        }
    }
    let mut rows = 0u64;
    loop {
        let chunk = work
            .lock()
            .map_err(|_| Error::Protocol("poisoned".into()))?
            .pop_front();
        let Some(chunk) = chunk else { break };
        let plan = &plans[chunk.table];
        rows += copy_chunk(&client, plan, chunk, options, tx, &progress[chunk.table]).await?;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(sql("ending the snapshot transaction"))?;
    Ok(rows)
}

async fn copy_chunk(
    client: &SqlClient,
    plan: &TablePlan,
    chunk: Chunk,
    options: &SnapshotOptions,
    tx: &queue::Sender<Event>,
    progress: &AtomicU64,
) -> Result<u64> {
    let max_rows = options.max_rows;
    let range = match chunk.end {
        Some(end) => format!(
            "ctid >= '({},0)'::tid AND ctid < '({end},0)'::tid",
            chunk.start
        ),
        None => format!("ctid >= '({},0)'::tid", chunk.start),
    };
    let statement = format!(
        "COPY ({} WHERE {range}) TO STDOUT (FORMAT binary)",
        plan.select
    );
    let table = plan.shape.table.clone();
    let stream = client
        .copy_out(&statement)
        .await
        .map_err(|source| Error::Sql {
            context: format!("copying {table}"),
            source,
        })?;
    futures::pin_mut!(stream);
    let mut decoder = CopyDecoder::new();
    let mut builder = TableBuilder::new(plan.shape.clone(), max_rows.min(8192));
    let pos = options.position;
    let mut rows = 0u64;
    while let Some(data) = stream.next().await {
        let data = data.map_err(|source| Error::Sql {
            context: format!("copying {table}"),
            source,
        })?;
        decoder.push(&data);
        decoder.rows(|row| {
            builder.append_values(Op::Read, pos, row.len(), row.values())?;
            rows += 1;
            Ok::<_, Error>(())
        })?;
        if builder.rows() >= max_rows {
            progress.fetch_add(builder.rows() as u64, Ordering::Relaxed);
            send(&mut builder, &table, tx).await?;
        }
    }
    if !decoder.finished() {
        return Err(Error::Protocol(format!(
            "copy of {table} ended without its trailer"
        )));
    }
    progress.fetch_add(builder.rows() as u64, Ordering::Relaxed);
    send(&mut builder, &table, tx).await?;
    Ok(rows)
}

async fn send(
    builder: &mut TableBuilder,
    table: &Arc<TableName>,
    tx: &queue::Sender<Event>,
) -> Result<()> {
    let Some(batch) = builder.take()? else {
        return Ok(());
    };
    let event = Event::Snapshot {
        tables: vec![TableBatch {
            table: table.clone(),
            batch,
        }],
    };
    let permit = tx
        .reserve(event.memory_size())
        .await
        .map_err(|_| Error::SinkStopped)?;
    tx.send(event, permit).map_err(|_| Error::SinkStopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_columns_select_their_output_text_with_quoted_names() {
        assert_eq!(
            text_expression("ip", true),
            r#"CASE WHEN "ip" IS DISTINCT FROM NULL THEN format('%s', "ip") END AS "ip""#
        );
        assert_eq!(
            text_expression(r#"we"ird"#, false),
            r#""we""ird"::text AS "we""ird""#
        );
    }
}
