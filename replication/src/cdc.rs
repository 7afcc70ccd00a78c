//! The CDC columns every changelog row carries, whatever the source, and their builders.
//!
//! ```text
//!  _sluice_op | _sluice_lsn | _sluice_seq | _sluice_commit_ts | _sluice_unchanged | columns…
//! ```

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

use crate::change::{COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN};
use crate::Lsn;

/// Row operation codes written to `_sluice_op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert.
    Insert,
    /// Update (the new row).
    Update,
    /// Delete (the old key or row).
    Delete,
    /// Snapshot read.
    Read,
    /// Truncate (one row, data columns null).
    Truncate,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Where a row sits in the source's history.
#[derive(Debug, Clone, Copy)]
pub struct RowPosition {
    /// Commit position of the transaction.
    pub lsn: Lsn,
    /// Ordinal within the transaction.
    pub seq: i64,
    /// Commit time, µs since 1970-01-01 UTC.
    pub commit_ts: i64,
}

/// The CDC columns every changelog row carries.
pub fn cdc_fields() -> Vec<Field> {
    vec![
        Field::new(OP_COLUMN, DataType::Utf8, false),
        Field::new(LSN_COLUMN, DataType::Int64, false),
        Field::new(SEQ_COLUMN, DataType::Int64, false),
        Field::new(
            COMMIT_TS_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            UNCHANGED_COLUMN,
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        ),
    ]
}

/// Builders of the CDC columns.
pub struct CdcBuilder {
    op: StringBuilder,
    lsn: Int64Builder,
    seq: Int64Builder,
    commit_ts: TimestampMicrosecondBuilder,
    unchanged: ListBuilder<StringBuilder>,
    any_unchanged: bool,
    rows: usize,
}

impl CdcBuilder {
    /// Empty builders with room for `capacity` rows.
    pub fn new(capacity: usize) -> Self {
        CdcBuilder {
            op: StringBuilder::with_capacity(capacity, capacity),
            lsn: Int64Builder::with_capacity(capacity),
            seq: Int64Builder::with_capacity(capacity),
            commit_ts: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            unchanged: ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "element",
                DataType::Utf8,
                true,
            ))),
            any_unchanged: false,
            rows: 0,
        }
    }

    /// Rows appended since the last [`CdcBuilder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Record that `column` of the row being appended was not sent.
    pub fn unchanged(&mut self, column: &str) {
        self.any_unchanged = true;
        self.unchanged.values().append_value(column);
    }

    /// Close the row being appended (its data columns are appended by the caller).
    pub fn append(&mut self, op: Op, pos: RowPosition) {
        self.unchanged
            .append(std::mem::take(&mut self.any_unchanged));
        self.op.append_value(op.code());
        self.lsn.append_value(pos.lsn.0 as i64);
        self.seq.append_value(pos.seq);
        self.commit_ts.append_value(pos.commit_ts);
        self.rows += 1;
    }

    /// Set the commit position and time of every row from `start` on: rows of a transaction
    /// whose commit position is known only when it commits (the binlog's).
    pub fn stamp_since(&mut self, start: usize, pos: RowPosition) {
        for v in self.lsn.values_slice_mut().iter_mut().skip(start) {
            *v = pos.lsn.0 as i64;
        }
        for v in self.commit_ts.values_slice_mut().iter_mut().skip(start) {
            *v = pos.commit_ts;
        }
    }

    /// The five CDC arrays, leaving the builders empty.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        vec![
            Arc::new(self.op.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.commit_ts.finish()),
            Arc::new(self.unchanged.finish()),
        ]
    }
}

/// Now, in microseconds since the epoch (the commit time given to snapshot rows).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
