//! Per-table Arrow builders: the batcher. Rows are decoded from pgoutput tuples straight into
//! the column builders, with the CDC columns first so that columns added later
//! (ALTER TABLE ADD COLUMN) are appended at the end of both the Arrow and the Delta schema.
//!
//! ```text
//!  _sluice_op | _sluice_lsn | _sluice_seq | _sluice_commit_ts | _sluice_unchanged | id | … | day__text
//! ```
//!
//! A value the column's Delta type cannot hold (`infinity` in a date, `NaN` in a
//! numeric(p,s), a two-dimensional array…) lands as NULL in the column and as PostgreSQL's
//! exact text in a `<column>__text` string companion, present in a batch only once such a
//! value appears in it.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayBuilder, ArrayRef, StringBuilder};
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;

use super::column::{ColumnBuilder, ColumnType};
use super::pgoutput::{Relation, Tuple, Value};
use crate::cdc::CdcBuilder;
use crate::change::TableName;
use crate::evolution::with_companions;
use crate::{Error, Lsn, Result};

pub use crate::cdc::{cdc_fields, Op, RowPosition};

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

    /// The table's source columns (name, Arrow type), as the lake compares shapes.
    pub fn source_columns(&self) -> crate::evolution::Columns {
        self.columns
            .iter()
            .map(|(name, ty, _)| (name.clone(), ty.arrow_type()))
            .collect()
    }
}

/// Accumulates rows of one table until the batch is taken.
pub struct TableBuilder {
    shape: Arc<TableShape>,
    schema: SchemaRef,
    cdc: CdcBuilder,
    columns: Vec<ColumnBuilder>,
    /// `<column>__text` companions, made when a value the column's type cannot hold first
    /// appears in the batch (earlier rows null). A batch without one leaves the column out:
    /// the sink adds it to the Delta schema when it first appears, and earlier rows read null.
    companions: Vec<Option<StringBuilder>>,
    /// Whether any companion exists in the batch being built.
    any_companion: bool,
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
            cdc: CdcBuilder::new(capacity),
            companions: shape.columns.iter().map(|_| None).collect(),
            any_companion: false,
            columns,
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
        self.cdc.rows()
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
        let row = self.cdc.rows();
        let mut failed = None;
        for (i, (column, value)) in self.columns.iter_mut().zip(values).enumerate() {
            if value == Value::Unchanged {
                self.cdc.unchanged(&self.shape.columns[i].0);
            }
            match column.append(value) {
                Ok(None) => {}
                Ok(Some(text)) => {
                    self.companions[i]
                        .get_or_insert_with(|| {
                            let mut b = StringBuilder::with_capacity(row + 1, text.len());
                            b.append_nulls(row);
                            b
                        })
                        .append_value(text);
                    self.any_companion = true;
                }
                Err(reason) => {
                    failed = Some((i, reason));
                    break;
                }
            }
        }
        if let Some((i, reason)) = failed {
            // Definite error: the pipeline stops and these builders are discarded.
            return Err(self.value_error(i, pos.lsn, reason));
        }
        if self.any_companion {
            // The companions of columns that landed typed in this row get their null (kept
            // off the per-value path: companions are rare).
            for companion in self.companions.iter_mut().flatten() {
                if companion.len() == row {
                    companion.append_null();
                }
            }
        }
        self.cdc.append(op, pos);
        Ok(())
    }

    /// Append a row whose data columns are all null (a truncate marker).
    pub fn append_empty(&mut self, op: Op, pos: RowPosition) {
        for c in &mut self.columns {
            c.append_null();
        }
        for companion in self.companions.iter_mut().flatten() {
            companion.append_null();
        }
        self.cdc.append(op, pos);
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
        if self.cdc.rows() == 0 {
            return Ok(None);
        }
        let mut arrays: Vec<ArrayRef> = self.cdc.finish();
        arrays.extend(self.columns.iter_mut().map(|c| c.finish()));
        let schema = if std::mem::take(&mut self.any_companion) {
            with_companions(
                self.schema.clone(),
                &mut arrays,
                &mut self.companions,
                self.shape.columns.iter().map(|(name, _, _)| name.as_str()),
            )
        } else {
            self.schema.clone()
        };
        Ok(Some(RecordBatch::try_new(schema, arrays)?))
    }
}
