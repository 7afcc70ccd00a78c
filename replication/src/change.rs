//! The change model: what crosses from a source to the sinks.
//!
//! Only Arrow record batches plus a small position header travel; every row carries its
//! transaction's commit position and its ordinal in it in the CDC columns below, so a sink
//! can make each commit idempotent by position.

use std::fmt;
use std::sync::Arc;

use deltalake::arrow::array::{Int64Array, TimestampMicrosecondArray};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use crate::Lsn;

/// CDC column: the operation (`c` insert, `u` update, `d` delete, `r` snapshot read,
/// `t` truncate).
pub const OP_COLUMN: &str = "_sluice_op";
/// CDC column: the commit position of the row's source transaction.
pub const LSN_COLUMN: &str = "_sluice_lsn";
/// CDC column: the row's ordinal within its source transaction.
pub const SEQ_COLUMN: &str = "_sluice_seq";
/// CDC column: the source transaction's commit time (UTC).
pub const COMMIT_TS_COLUMN: &str = "_sluice_commit_ts";
/// CDC column: names of columns whose value was not sent (unchanged TOAST), else null.
pub const UNCHANGED_COLUMN: &str = "_sluice_unchanged";

/// Prefix of the logical decoding messages (`pg_logical_emit_message`) Sluice writes into the
/// WAL: incremental-snapshot watermarks and snapshot requests.
pub const MARKER_PREFIX: &str = "sluice";

/// A schema-qualified source table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema (PostgreSQL namespace).
    pub schema: String,
    /// Table name within the schema.
    pub name: String,
}

impl TableName {
    /// Parse `schema.table`; a bare `table` is in `public`.
    pub fn parse(s: &str) -> Option<Self> {
        let (schema, name) = s.split_once('.').unwrap_or(("public", s));
        if schema.is_empty() || name.is_empty() || name.contains('.') {
            return None;
        }
        Some(TableName {
            schema: schema.to_string(),
            name: name.to_string(),
        })
    }

    /// The name quoted for SQL: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quote an SQL identifier (doubling embedded quotes).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quote an SQL string literal (doubling embedded quotes), for the few statements that cannot
/// take bound parameters (replication commands, `SET TRANSACTION SNAPSHOT`).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows of one table in one event.
#[derive(Debug, Clone)]
pub struct TableBatch {
    /// The source table.
    pub table: Arc<TableName>,
    /// Rows with the CDC columns first, then the table's columns in table order.
    pub batch: RecordBatch,
}

/// What a source sends to the sinks, in source commit order.
#[derive(Debug, Clone)]
pub enum Event {
    /// Whole committed transactions. `commit_lsn` is the last transaction's commit position,
    /// `end_lsn` the position just past it (what the slot may be confirmed to once durable).
    ///
    /// `gtid`: the source's own name for the position when it has one (MySQL/MariaDB: the
    /// GTID set after the last transaction), kept in the Delta commit metadata.
    Committed {
        tables: Vec<TableBatch>,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        gtid: Option<Arc<str>>,
    },
    /// Rows of an in-progress (streamed) transaction `xid`, made by (sub)transaction
    /// `subxid`: to be written but not made visible until [`Event::StreamCommit`].
    StreamChunk {
        xid: u32,
        subxid: u32,
        tables: Vec<TableBatch>,
    },
    /// The streamed transaction `xid` committed: the rest of its rows, then make all of it
    /// visible atomically per table.
    /// Rows of streamed transactions carry no position until this event: the sink stamps
    /// `commit_lsn` and `commit_ts` on every row of the transaction with [`stamp_position`].
    StreamCommit {
        xid: u32,
        tables: Vec<TableBatch>,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    /// Streamed (sub)transaction aborted: discard its rows (`subxid == xid`: all of them).
    StreamAbort { xid: u32, subxid: u32 },
    /// Rows of the initial snapshot, already carrying their position: written as they come,
    /// visible only after [`Event::SnapshotCommit`].
    Snapshot { tables: Vec<TableBatch> },
    /// The initial snapshot is complete: make it visible, one commit per table at `commit_lsn`.
    SnapshotCommit { commit_lsn: Lsn, end_lsn: Lsn },
    /// A transaction carrying a Sluice message (`pg_logical_emit_message` with prefix
    /// [`MARKER_PREFIX`]): an incremental-snapshot watermark or a snapshot request. The source
    /// consumes it; to a sink it is an empty transaction.
    Marker {
        content: String,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    /// One chunk of an incremental snapshot, emitted at its high watermark: rows (op `r`) of
    /// one table carrying the watermark transaction's position, committed together with the
    /// chunk's number so that the chunk's progress is durable with its rows.
    SnapshotChunk {
        table: TableBatch,
        chunk: u64,
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
}

impl Event {
    /// Approximate memory held by the event, for the byte-bounded queues.
    pub fn memory_size(&self) -> usize {
        let tables = match self {
            Event::Committed { tables, .. }
            | Event::StreamChunk { tables, .. }
            | Event::StreamCommit { tables, .. }
            | Event::Snapshot { tables } => tables.as_slice(),
            Event::SnapshotChunk { table, .. } => std::slice::from_ref(table),
            Event::StreamAbort { .. } | Event::SnapshotCommit { .. } | Event::Marker { .. } => &[],
        };
        64 + tables
            .iter()
            .map(|t| t.batch.get_array_memory_size())
            .sum::<usize>()
    }

    /// Number of rows carried.
    pub fn rows(&self) -> usize {
        match self {
            Event::Committed { tables, .. }
            | Event::StreamChunk { tables, .. }
            | Event::StreamCommit { tables, .. }
            | Event::Snapshot { tables } => tables.iter().map(|t| t.batch.num_rows()).sum(),
            Event::SnapshotChunk { table, .. } => table.batch.num_rows(),
            Event::StreamAbort { .. } | Event::SnapshotCommit { .. } | Event::Marker { .. } => 0,
        }
    }
}

/// Replace the `_sluice_lsn` and `_sluice_commit_ts` columns of a batch with constants:
/// rows of a streamed transaction learn their commit position only when it commits.
pub fn stamp_position(
    batch: &RecordBatch,
    commit_lsn: Lsn,
    commit_ts: i64,
) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    let lsn = schema.index_of(LSN_COLUMN)?;
    let ts = schema.index_of(COMMIT_TS_COLUMN)?;
    columns[lsn] = Arc::new(Int64Array::from_value(commit_lsn.0 as i64, n));
    columns[ts] =
        Arc::new(TimestampMicrosecondArray::from_value(commit_ts, n).with_timezone("UTC"));
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_and_quote() {
        let t = TableName::parse("shop.orders").unwrap();
        assert_eq!(t.to_string(), "shop.orders");
        assert_eq!(TableName::parse("orders").unwrap().schema, "public");
        assert_eq!(
            TableName::parse("a.we\"ird").unwrap().quoted(),
            "\"a\".\"we\"\"ird\""
        );
        assert!(TableName::parse("a.b.c").is_none());
        assert!(TableName::parse(".b").is_none());
    }
}
