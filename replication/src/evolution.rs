//! Schema drift: what happens to a changelog table when its source table changes shape.
//!
//! A table's shape, for the lake, is its list of *source columns*: name and Arrow type, in
//! table order (the data columns of a batch, without the CDC columns and the `__text`
//! companions). Sources compare shapes only under the `stop` policy; the Delta sink compares
//! each batch's shape with the last one it recorded, writes every difference to the schema
//! history, and maps the batch onto the lake's columns:
//!
//! ```text
//!  source column (name, type) ──▶ lake column `name`          if the lake has none, or the same type
//!                                 lake column `name__<type>`  otherwise (created on first use)
//!  lake column absent from the batch ──▶ null for these rows (a dropped or renamed column)
//! ```
//!
//! So no value is ever converted or lost: a column whose type changes continues in a new
//! column named after its new Delta type (`qty__long`), a renamed column continues under its
//! new name, and a dropped column stays in the table, null from then on. The rule depends only
//! on the batch and the lake's schema, so a change made while Sluice was stopped is handled
//! exactly like one seen live, and replaying after a crash maps the same way.

use std::collections::HashMap;

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::cdc::cdc_fields;
use crate::change::TableName;

/// Suffix of the string column that carries, beside a typed column, the exact text of values
/// its type cannot hold (zero dates, `infinity`, …).
pub const COMPANION_SUFFIX: &str = "__text";

/// Append the companion columns that hold values (taking them) after a batch's columns, in
/// column order: `companions[i]` belongs to the column named `names[i]`. Returns the batch
/// schema; a batch without companions keeps `schema` (the sink null-fills the companion
/// columns the Delta table already has).
pub fn with_companions<'a>(
    schema: SchemaRef,
    arrays: &mut Vec<ArrayRef>,
    companions: &mut [Option<StringBuilder>],
    names: impl Iterator<Item = &'a str>,
) -> SchemaRef {
    if companions.iter().all(Option::is_none) {
        return schema;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (companion, name) in companions.iter_mut().zip(names) {
        if let Some(mut b) = companion.take() {
            fields.push(Field::new(
                format!("{name}{COMPANION_SUFFIX}"),
                DataType::Utf8,
                true,
            ));
            arrays.push(Arc::new(b.finish()));
        }
    }
    Arc::new(Schema::new(fields))
}

/// What a schema change does to the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaPolicy {
    /// Never stop: the lake's table follows (new columns, kept columns, new typed columns).
    #[default]
    Evolve,
    /// As `evolve`, and a rename or type change also re-reads the table by an incremental
    /// snapshot at its new shape, so every row carries the new columns.
    Resnapshot,
    /// Stop the pipeline at any change other than added columns, with everything before it
    /// durable.
    Stop,
}

/// The policy of every table: a default and per-table overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaPolicies {
    /// For tables without an override.
    pub default: SchemaPolicy,
    /// Per-table overrides.
    pub tables: HashMap<TableName, SchemaPolicy>,
}

impl SchemaPolicies {
    /// The policy for `table`.
    pub fn of(&self, table: &TableName) -> SchemaPolicy {
        self.tables.get(table).copied().unwrap_or(self.default)
    }
}

/// A table's source columns: name and Arrow type, in table order.
pub type Columns = Vec<(String, DataType)>;

/// The source columns of a batch or table schema: the fields after the CDC columns, without
/// `__text` companions of another field.
pub fn source_columns(schema: &Schema) -> Columns {
    let fields = schema.fields();
    fields
        .iter()
        .skip(cdc_fields().len())
        .filter(|f| {
            f.name()
                .strip_suffix(COMPANION_SUFFIX)
                .is_none_or(|base| !fields.iter().any(|g| g.name() == base))
        })
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

/// One difference between two shapes of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ColumnChange {
    /// A new column.
    Added { column: String, r#type: String },
    /// A column no longer sent.
    Dropped { column: String },
    /// A column at the same place under a new name, with the same type.
    Renamed { from: String, to: String },
    /// A column whose type changed (or that was dropped and added again with another type).
    Retyped {
        column: String,
        from: String,
        to: String,
    },
}

impl ColumnChange {
    /// Whether rows written before the change lack the column's values under its new name or
    /// type (what `resnapshot` re-reads the table for).
    pub fn incompatible(&self) -> bool {
        matches!(
            self,
            ColumnChange::Renamed { .. } | ColumnChange::Retyped { .. }
        )
    }

    /// Whether the `stop` policy stops at this change (it follows added columns only).
    pub fn stops(&self) -> bool {
        !matches!(self, ColumnChange::Added { .. })
    }

    /// The column the change is about (its old name for a rename).
    pub fn column(&self) -> &str {
        match self {
            ColumnChange::Added { column, .. }
            | ColumnChange::Dropped { column }
            | ColumnChange::Retyped { column, .. } => column,
            ColumnChange::Renamed { from, .. } => from,
        }
    }
}

impl std::fmt::Display for ColumnChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnChange::Added { column, r#type } => write!(f, "added {column} {type}"),
            ColumnChange::Dropped { column } => write!(f, "dropped {column}"),
            ColumnChange::Renamed { from, to } => write!(f, "renamed {from} to {to}"),
            ColumnChange::Retyped { column, from, to } => {
                write!(f, "changed {column} from {from} to {to}")
            }
        }
    }
}

/// Why the `stop` policy stopped at `change`, with the fix.
pub fn stop_reason(change: &ColumnChange) -> String {
    format!(
        "{change}, and on_schema_change is \"stop\" for this table: set it to \"evolve\" or \"resnapshot\" (see the README) and run again, the changes from here on are kept in the source"
    )
}

/// The differences from `before` to `after`, in column order. A column dropped at the same
/// place where one of the same type was added is a rename (pgoutput and the binlog describe
/// columns in table order, so a rename keeps its place); anything else is a drop and an add.
pub fn diff(before: &[(String, DataType)], after: &[(String, DataType)]) -> Vec<ColumnChange> {
    let position =
        |cols: &[(String, DataType)], name: &str| cols.iter().position(|(n, _)| n == name);
    // A column in both shapes that moved among the columns both have was dropped and added
    // again (PostgreSQL appends a re-added column; ALTER TYPE and MODIFY keep the place).
    let common = |cols: &[(String, DataType)], other: &[(String, DataType)]| -> Vec<String> {
        cols.iter()
            .filter(|(n, _)| position(other, n).is_some())
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (common_before, common_after) = (common(before, after), common(after, before));
    let moved = |name: &str| {
        common_before.iter().position(|n| n == name) != common_after.iter().position(|n| n == name)
    };
    let mut changes = Vec::new();
    let mut renamed_to = Vec::new();
    let mut readded = Vec::new();
    for (i, (name, ty)) in before.iter().enumerate() {
        match position(after, name) {
            Some(j) if !same_type(&after[j].1, ty) && moved(name) => {
                readded.push(name.clone());
                changes.push(ColumnChange::Dropped {
                    column: name.clone(),
                });
            }
            Some(j) if !same_type(&after[j].1, ty) => changes.push(ColumnChange::Retyped {
                column: name.clone(),
                from: type_name(ty),
                to: type_name(&after[j].1),
            }),
            Some(_) => {}
            None => match after.get(i) {
                Some((to, t)) if same_type(t, ty) && position(before, to).is_none() => {
                    renamed_to.push(to.clone());
                    changes.push(ColumnChange::Renamed {
                        from: name.clone(),
                        to: to.clone(),
                    });
                }
                _ => changes.push(ColumnChange::Dropped {
                    column: name.clone(),
                }),
            },
        }
    }
    for (name, ty) in after {
        let new = position(before, name).is_none() && !renamed_to.contains(name);
        if new || readded.contains(name) {
            changes.push(ColumnChange::Added {
                column: name.clone(),
                r#type: type_name(ty),
            });
        }
    }
    changes
}

/// The lake column that carries source column `name` of type `ty`, given the columns the
/// lake's table has (name → type): `name` itself unless the lake holds another type under it,
/// else `name__<type>` (`qty__long`, `price__decimal_12_2`), numbered on the rare clash.
pub fn lake_column<'a>(
    name: &'a str,
    ty: &DataType,
    lake: &dyn Fn(&str) -> Option<DataType>,
) -> std::borrow::Cow<'a, str> {
    match lake(name) {
        None => return name.into(),
        Some(held) if same_type(&held, ty) => return name.into(),
        Some(_) => {}
    }
    let base = format!(
        "{name}__{}",
        type_name(ty)
            .replace(['(', ')', ','], "_")
            .trim_end_matches('_')
    );
    let mut candidate = base.clone();
    let mut n = 2;
    while lake(&candidate).is_some_and(|held| !same_type(&held, ty)) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate.into()
}

/// Whether two Arrow types are the same Delta type (shapes read back from the lake or the
/// history differ from a batch's in details Delta does not keep: time zone names, list field
/// nullability).
pub fn same_type(a: &DataType, b: &DataType) -> bool {
    a == b || type_name(a) == type_name(b)
}

/// A Delta-style name of an Arrow type, as the history and new column names show it.
pub fn type_name(ty: &DataType) -> String {
    match ty {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 => "short".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("array_{}", type_name(f.data_type())),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, DataType)]) -> Columns {
        spec.iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    #[test]
    fn diff_names_each_kind_of_change() {
        let before = cols(&[
            ("id", DataType::Int64),
            ("qty", DataType::Int32),
            ("note", DataType::Utf8),
            ("old", DataType::Utf8),
            ("gone", DataType::Boolean),
        ]);
        let after = cols(&[
            ("id", DataType::Int64),
            ("qty", DataType::Int64),
            ("note", DataType::Utf8),
            ("new", DataType::Utf8),
            ("extra", DataType::Date32),
        ]);
        let changes = diff(&before, &after);
        assert_eq!(
            changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "changed qty from integer to long",
                "renamed old to new",
                "dropped gone",
                "added extra date",
            ]
        );
        assert!(changes[0].incompatible() && changes[1].incompatible());
        assert!(!changes[2].incompatible() && changes[2].stops());
        assert!(!changes[3].stops());
        assert!(diff(&before, &before).is_empty());
        // Dropped and added again with another type: the column moves to the end.
        let readded = cols(&[
            ("id", DataType::Int64),
            ("flag", DataType::Boolean),
            ("x", DataType::Utf8),
        ]);
        let after = cols(&[
            ("id", DataType::Int64),
            ("x", DataType::Utf8),
            ("flag", DataType::Int32),
        ]);
        assert_eq!(
            diff(&readded, &after)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["dropped flag", "added flag integer"]
        );
    }

    #[test]
    fn lake_columns_never_change_type() {
        let lake: HashMap<&str, DataType> = [
            ("qty", DataType::Int32),
            ("qty__long", DataType::Int64),
            ("p", DataType::Decimal128(10, 2)),
            ("x__string", DataType::Int32),
        ]
        .into();
        let get = |n: &str| lake.get(n).cloned();
        assert_eq!(lake_column("qty", &DataType::Int32, &get), "qty");
        assert_eq!(lake_column("qty", &DataType::Int64, &get), "qty__long");
        assert_eq!(lake_column("new", &DataType::Int64, &get), "new");
        assert_eq!(
            lake_column("p", &DataType::Decimal128(12, 2), &get),
            "p__decimal_12_2"
        );
        let lake2: HashMap<&str, DataType> =
            [("x", DataType::Int32), ("x__string", DataType::Int32)].into();
        let get2 = |n: &str| lake2.get(n).cloned();
        assert_eq!(lake_column("x", &DataType::Utf8, &get2), "x__string_2");
    }
}
