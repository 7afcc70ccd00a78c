//! Per-table Arrow builders: the batcher. Rows are decoded from pgoutput tuples straight into
//! the column builders, with the CDC columns first so that columns added later
//! (ALTER TABLE ADD COLUMN) are appended at the end of both the Arrow and the Delta schema.
//!
//! ```text
//!  _sluice_op | _sluice_lsn | _sluice_seq | _sluice_commit_ts | _sluice_unchanged | id | …
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use super::column::{ColumnBuilder, ColumnType};
use super::pgoutput::{Relation, Tuple, Value};
use crate::change::{
    TableName, COMMIT_TS_COLUMN, LSN_COLUMN, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN,
};
use crate::{Error, Lsn, Result};

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

/// How each column of a relation decodes. Derived from a Relation message.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    /// The table.
    pub table: Arc<TableName>,
    /// (name, type, part of the replica identity) per column, in table order.
    pub columns: Vec<(String, ColumnType, bool)>,
    /// Type OIDs, for messages.
    pub type_oids: Vec<u32>,
}

impl TableShape {
    /// Derive the shape of `relation`. In binary mode a column type Sluice cannot decode in
    /// binary is an error that asks for a restart (which re-checks the catalog and switches
    /// the connection to text mode).
    pub fn from_relation(
        relation: &Relation,
        binary: bool,
        enums: &HashSet<u32>,
        lsn: Lsn,
    ) -> Result<Self> {
        let table = Arc::new(TableName {
            schema: relation.namespace.clone(),
            name: relation.name.clone(),
        });
        let mut columns = Vec::with_capacity(relation.columns.len());
        for c in &relation.columns {
            let ty = if binary {
                ColumnType::from_oid(c.type_oid, c.type_modifier, enums).ok_or_else(|| {
                    Error::SchemaChange {
                        table: table.to_string(),
                        column: c.name.clone(),
                        lsn,
                        reason: format!(
                            "type oid {} appeared while streaming in binary mode; restart sluice so it re-reads the catalog and streams this table as text",
                            c.type_oid
                        ),
                    }
                })?
            } else {
                ColumnType::from_oid_text_mode(c.type_oid, c.type_modifier)
            };
            columns.push((c.name.clone(), ty, c.is_key));
        }
        Ok(TableShape {
            table,
            columns,
            type_oids: relation.columns.iter().map(|c| c.type_oid).collect(),
        })
    }

    /// The Arrow schema: CDC columns, then the table's columns.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = cdc_fields();
        fields.extend(
            self.columns
                .iter()
                .map(|(name, ty, _)| Field::new(name, ty.arrow_type(), true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// Whether `next` only appends columns to `self` (the one change a Delta table follows);
    /// otherwise the first incompatible column and why.
    pub fn check_evolution(&self, next: &TableShape) -> Result<(), (String, String)> {
        for (i, (name, ty, _)) in self.columns.iter().enumerate() {
            match next.columns.get(i) {
                None => return Err((name.clone(), "column dropped or renamed".into())),
                Some((n, _, _)) if n != name => {
                    return Err((name.clone(), format!("column dropped or renamed (now {n})")))
                }
                Some((_, t, _)) if t != ty => {
                    return Err((
                        name.clone(),
                        format!(
                            "type changed from {:?} to {:?}",
                            ty.arrow_type(),
                            t.arrow_type()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
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

/// Accumulates rows of one table until the batch is taken.
pub struct TableBuilder {
    shape: Arc<TableShape>,
    schema: SchemaRef,
    op: StringBuilder,
    lsn: Int64Builder,
    seq: Int64Builder,
    commit_ts: TimestampMicrosecondBuilder,
    unchanged: ListBuilder<StringBuilder>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl TableBuilder {
    /// Empty builders for `shape`, sized for `capacity` rows.
    pub fn new(shape: Arc<TableShape>, capacity: usize) -> Self {
        let columns = shape
            .columns
            .iter()
            .map(|(_, ty, _)| ColumnBuilder::new(*ty, capacity))
            .collect();
        TableBuilder {
            schema: shape.schema(),
            op: StringBuilder::with_capacity(capacity, capacity),
            lsn: Int64Builder::with_capacity(capacity),
            seq: Int64Builder::with_capacity(capacity),
            commit_ts: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            unchanged: ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "element",
                DataType::Utf8,
                true,
            ))),
            columns,
            rows: 0,
            shape,
        }
    }

    /// The shape this builder decodes.
    pub fn shape(&self) -> &Arc<TableShape> {
        &self.shape
    }

    /// The batches' schema (CDC columns, then the table's).
    pub fn schema(&self) -> deltalake::arrow::datatypes::SchemaRef {
        self.schema.clone()
    }

    /// Rows accumulated.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Append one row decoded from `tuple`.
    pub fn append(&mut self, op: Op, pos: RowPosition, tuple: &Tuple<'_>) -> Result<()> {
        self.append_values(op, pos, tuple.len(), tuple.values())
    }

    /// Append one row from `len` values in column order (a pgoutput tuple or a COPY row).
    pub fn append_values<'a>(
        &mut self,
        op: Op,
        pos: RowPosition,
        len: usize,
        values: impl Iterator<Item = Value<'a>>,
    ) -> Result<()> {
        if len != self.columns.len() {
            return Err(Error::SchemaChange {
                table: self.shape.table.to_string(),
                column: String::new(),
                lsn: pos.lsn,
                reason: format!("row has {len} columns, relation has {}", self.columns.len()),
            });
        }
        let mut any_unchanged = false;
        for (i, value) in values.enumerate() {
            if value == Value::Unchanged {
                any_unchanged = true;
                self.unchanged
                    .values()
                    .append_value(&self.shape.columns[i].0);
            }
            if let Err(reason) = self.columns[i].append(value) {
                // Definite error: the pipeline stops and these builders are discarded.
                return Err(self.value_error(i, pos.lsn, reason));
            }
        }
        self.unchanged.append(any_unchanged);
        self.append_cdc(op, pos);
        Ok(())
    }

    /// Append a row whose data columns are all null (a truncate marker).
    pub fn append_empty(&mut self, op: Op, pos: RowPosition) {
        for c in &mut self.columns {
            c.append_null();
        }
        self.unchanged.append(false);
        self.append_cdc(op, pos);
    }

    fn append_cdc(&mut self, op: Op, pos: RowPosition) {
        self.op.append_value(op.code());
        self.lsn.append_value(pos.lsn.0 as i64);
        self.seq.append_value(pos.seq);
        self.commit_ts.append_value(pos.commit_ts);
        self.rows += 1;
    }

    fn value_error(&self, column: usize, lsn: Lsn, reason: String) -> Error {
        let (name, ty, _) = &self.shape.columns[column];
        Error::Value {
            table: self.shape.table.to_string(),
            column: name.clone(),
            pg_type: format!("oid {} as {:?}", self.shape.type_oids[column], ty.kind),
            lsn,
            reason,
        }
    }

    /// Take the accumulated rows as a batch; `None` when empty. The builders stay usable.
    pub fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.op.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.commit_ts.finish()),
            Arc::new(self.unchanged.finish()),
        ];
        arrays.extend(self.columns.iter_mut().map(|c| c.finish()));
        self.rows = 0;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }
}
