//! The schema history: every change of a source table's shape the changelog followed, in a
//! Delta table of its own (`<lake>/_sluice_schema_history`) that any Delta reader can query,
//! and the handle the changelog tables share to record changes and ask for re-snapshots.
//!
//! ```text
//!  batch with a new shape ─▶ diff against the table's last recorded shape
//!        ─▶ (resnapshot policy, rename or type change) request stored by the snapshot driver
//!        ─▶ one history row committed ─▶ the batch is written (its commit metadata names it)
//! ```
//!
//! The row is committed before the data that first has the new shape, and the last row per
//! table is the shape a restarted pipeline compares with: a crash between the two leaves the
//! change recorded once (the replayed batch matches the recorded shape), never lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use replication::change::TableName;
use replication::evolution::{type_name, ColumnChange, Columns, SchemaPolicies, SchemaPolicy};
use replication::Lsn;

use crate::{Error, Result};

/// Directory of the history table under the lake.
pub const HISTORY_DIR: &str = "_sluice_schema_history";

/// Where a changelog table asks for its re-snapshot (the `resnapshot` policy): the pipeline's
/// snapshot queue. `queue` returns once the request is durable (or why it could not be).
pub trait ResnapshotQueue: Send + Sync {
    /// Queue a re-snapshot of `table`.
    fn queue(&self, table: &TableName) -> std::result::Result<(), String>;
}

/// A table's source columns and the position (lsn, seq) of the first row that has them.
pub type Shape = (Columns, (Lsn, i64));

/// One recorded change of one table's shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaChangeRecord {
    /// Pipeline that followed it.
    pub pipeline: String,
    /// Source table.
    pub table: String,
    /// Source position of the first row with the new shape.
    #[serde(serialize_with = "lsn_number")]
    pub position: Lsn,
    /// That row's ordinal in its transaction.
    pub seq: i64,
    /// When it was recorded, µs since the epoch.
    pub recorded_at: i64,
    /// The changes, in column order (`changed qty from integer to long; added note string`).
    pub changes: String,
    /// The same as JSON: `[{"change": "retyped", "column": "qty", "from": "integer", "to":
    /// "long"}, …]` (`added`, `dropped`, `renamed` with `from`/`to`, `retyped`).
    pub changes_json: String,
    /// Source columns before: JSON `[[name, type], …]`.
    pub before: String,
    /// Source columns after.
    pub after: String,
    /// What Sluice did (`evolved`, `evolved; re-snapshot requested`).
    pub action: String,
}

/// The schema history shared by a pipeline's changelog tables.
pub struct SchemaHistory {
    root: PathBuf,
    app_id: String,
    policies: SchemaPolicies,
    /// The last recorded shape per table, and the position it holds from.
    shapes: Mutex<HashMap<TableName, Shape>>,
    table: tokio::sync::Mutex<Option<DeltaTable>>,
    resnapshot: Mutex<Option<Arc<dyn ResnapshotQueue>>>,
}

fn history_schema() -> Arc<Schema> {
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("pipeline"),
        text("table"),
        Field::new("position", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("changes"),
        text("changes_json"),
        text("before"),
        text("after"),
        text("action"),
    ]))
}

fn delta(source: deltalake::DeltaTableError) -> Error {
    Error::Delta {
        table: HISTORY_DIR.into(),
        source,
    }
}

fn arrow(source: deltalake::arrow::error::ArrowError) -> Error {
    Error::Arrow {
        table: HISTORY_DIR.into(),
        source,
    }
}

fn lsn_number<S: serde::Serializer>(lsn: &Lsn, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(lsn.0)
}

/// Source columns as the history stores them.
fn columns_json(columns: &Columns) -> String {
    let pairs: Vec<(&str, String)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), type_name(t)))
        .collect();
    serde_json::to_string(&pairs).unwrap_or_default()
}

impl SchemaHistory {
    /// Open the history under `root` and read back the last shape this pipeline recorded for
    /// each table.
    pub async fn open(root: &Path, app_id: &str, policies: SchemaPolicies) -> Result<Self> {
        let history = SchemaHistory {
            root: root.to_path_buf(),
            app_id: app_id.to_string(),
            policies,
            shapes: Mutex::new(HashMap::new()),
            table: tokio::sync::Mutex::new(None),
            resnapshot: Mutex::new(None),
        };
        let path = history.path();
        if path.join("_delta_log").is_dir() {
            let table = deltalake::open_table(url(&path)?).await.map_err(delta)?;
            let mut shapes = HashMap::new();
            for record in super::SideTable::scan_table(&table, &path)
                .await?
                .iter()
                .flat_map(records_of)
            {
                if record.pipeline != app_id {
                    continue;
                }
                if let (Some(t), Ok(after)) = (
                    TableName::parse(&record.table),
                    serde_json::from_str::<Vec<(String, String)>>(&record.after),
                ) {
                    // Types are kept as names; the shape compares by name too.
                    let cols = after
                        .into_iter()
                        .map(|(n, ty)| (n, named_type(&ty)))
                        .collect();
                    // Records are read in no particular order: keep the latest.
                    let at = (record.position, record.seq);
                    match shapes.get(&t) {
                        Some((_, held)) if *held > at => {}
                        _ => {
                            shapes.insert(t, (cols, at));
                        }
                    }
                }
            }
            *history.shapes.lock().unwrap_or_else(|e| e.into_inner()) = shapes;
            *history.table.lock().await = Some(table);
        }
        Ok(history)
    }

    fn path(&self) -> PathBuf {
        self.root.join(HISTORY_DIR)
    }

    /// The policy of `table`.
    pub fn policy(&self, table: &TableName) -> SchemaPolicy {
        self.policies.of(table)
    }

    /// The last shape recorded for `table`, if any, and the position it holds from.
    pub fn shape(&self, table: &TableName) -> Option<Shape> {
        self.shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
    }

    /// Route re-snapshot requests (the `resnapshot` policy) to the running snapshot driver.
    pub fn set_resnapshot(&self, queue: Arc<dyn ResnapshotQueue>) {
        *self.resnapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue);
    }

    /// Record that `table` changed from `before` to `after` at `position`: ask for a
    /// re-snapshot when the policy wants one (and wait until it is stored), then commit the
    /// history row. Returns the record (also put in the data commit's metadata).
    pub async fn record(
        &self,
        table: &TableName,
        (position, seq): (Lsn, i64),
        before: &Columns,
        after: &Columns,
        changes: &[ColumnChange],
    ) -> Result<SchemaChangeRecord> {
        let mut action = "evolved".to_string();
        if self.policy(table) == SchemaPolicy::Resnapshot
            && changes.iter().any(ColumnChange::incompatible)
        {
            let queue = self
                .resnapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match queue {
                Some(queue) => {
                    queue.queue(table).map_err(|reason| Error::Io {
                        path: self.path().display().to_string(),
                        source: std::io::Error::other(format!(
                            "storing a re-snapshot request for {table}: {reason}"
                        )),
                    })?;
                    action.push_str("; re-snapshot requested");
                }
                // The initial load reads every table at its current shape anyway.
                None => action.push_str(" (during a snapshot: no re-snapshot needed)"),
            }
        }
        let record = SchemaChangeRecord {
            pipeline: self.app_id.clone(),
            table: table.to_string(),
            position,
            seq,
            recorded_at: replication::cdc::now_micros(),
            changes: changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            changes_json: serde_json::to_string(changes).unwrap_or_default(),
            before: columns_json(before),
            after: columns_json(after),
            action,
        };
        self.append(&record).await?;
        self.shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.clone(), (after.clone(), (position, seq)));
        tracing::warn!(
            table = %table,
            position = %position,
            changes = %record.changes,
            action = %record.action,
            "source table changed shape"
        );
        Ok(record)
    }

    async fn append(&self, record: &SchemaChangeRecord) -> Result<()> {
        let schema = history_schema();
        let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                text(&record.pipeline),
                text(&record.table),
                Arc::new(Int64Array::from(vec![record.position.0 as i64])),
                Arc::new(Int64Array::from(vec![record.seq])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![record.recorded_at]).with_timezone("UTC"),
                ),
                text(&record.changes),
                text(&record.changes_json),
                text(&record.before),
                text(&record.after),
                text(&record.action),
            ],
        )
        .map_err(arrow)?;
        let mut guard = self.table.lock().await;
        if guard.is_none() {
            let path = self.path();
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
                delta(deltalake::DeltaTableError::Generic(format!(
                    "schema not representable in delta: {e}"
                )))
            })?;
            let table = DeltaTable::try_from_url(url(&path)?)
                .await
                .map_err(delta)?
                .create()
                .with_table_name(HISTORY_DIR)
                .with_comment("sluice: schema changes of the source tables")
                .with_columns(columns.fields().cloned())
                .await
                .map_err(delta)?;
            *guard = Some(table);
        }
        let Some(table) = guard.as_mut() else {
            return Ok(());
        };
        let mut writer = RecordBatchWriter::for_table(table).map_err(delta)?;
        writer.write(batch).await.map_err(delta)?;
        writer.flush_and_commit(table).await.map_err(delta)?;
        Ok(())
    }

    /// Every change recorded (by any pipeline writing to this lake), oldest first.
    pub async fn records(root: &Path) -> Result<Vec<SchemaChangeRecord>> {
        let mut records: Vec<SchemaChangeRecord> = super::SideTable::scan(&root.join(HISTORY_DIR))
            .await?
            .iter()
            .flat_map(records_of)
            .collect();
        records.sort_by_key(|r| (r.position, r.seq, r.recorded_at));
        Ok(records)
    }
}

/// The Arrow type a history type name stands for, as far as shapes are compared (by name).
fn named_type(name: &str) -> DataType {
    match name {
        "boolean" => DataType::Boolean,
        "short" => DataType::Int16,
        "integer" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => match other
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)))
        {
            Some((p, s)) => DataType::Decimal128(p, s),
            None => match other.strip_prefix("array_") {
                Some(element) => {
                    DataType::List(Arc::new(Field::new("element", named_type(element), true)))
                }
                None => DataType::Utf8,
            },
        },
    }
}

use super::side_table::url;

/// Read every row of the history table (it is small: one row per schema change).
fn records_of(batch: &RecordBatch) -> Vec<SchemaChangeRecord> {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
    };
    let (
        Some(pipeline),
        Some(table),
        Some(changes),
        Some(changes_json),
        Some(before),
        Some(after),
        Some(action),
    ) = (
        text("pipeline"),
        text("table"),
        text("changes"),
        text("changes_json"),
        text("before"),
        text("after"),
        text("action"),
    )
    else {
        return Vec::new();
    };
    let position = batch.column_by_name("position").and_then(|c| {
        c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
            .cloned()
    });
    let seq = batch.column_by_name("seq").and_then(|c| {
        c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
            .cloned()
    });
    let recorded = batch.column_by_name("recorded_at").and_then(|c| {
        c.as_primitive_opt::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
            .cloned()
    });
    (0..batch.num_rows())
        .map(|i| SchemaChangeRecord {
            pipeline: pipeline.value(i).to_string(),
            table: table.value(i).to_string(),
            position: Lsn(position.as_ref().map_or(0, |p| p.value(i)) as u64),
            seq: seq.as_ref().map_or(0, |p| p.value(i)),
            recorded_at: recorded.as_ref().map_or(0, |r| r.value(i)),
            changes: changes.value(i).to_string(),
            changes_json: changes_json.value(i).to_string(),
            before: before.value(i).to_string(),
            after: after.value(i).to_string(),
            action: action.value(i).to_string(),
        })
        .collect()
}
