//! One changelog Delta table: created on first change with the mapped schema, appended to
//! with commits that carry the pipeline's `txn` action.
//!
//! Exactly-once rests on one fact: a commit's data files and its `txn` action
//! (appId = pipeline name, version = last source commit position in it) land atomically in one
//! Delta log entry. On start the version is read back; rows at or below it are dropped before
//! writing, so replaying the source after a crash at any instant writes nothing twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{AsArray, BooleanArray, Int64Array};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use replication::cdc::cdc_fields;
use replication::change::{stamp_position, TableName, LSN_COLUMN, OP_COLUMN, SEQ_COLUMN};
use replication::evolution::{diff, lake_column, source_columns, Columns, COMPANION_SUFFIX};

use super::history::{SchemaChangeRecord, SchemaHistory, Shape};
use super::spill;
use replication::Lsn;

use crate::{Error, Result};

/// Parquet files roll over at this size, which bounds the writer's buffers.
const TARGET_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Rows to commit: in memory, or in a spill file written earlier.
pub enum Part {
    /// A batch in memory.
    Batch(RecordBatch),
    /// An Arrow IPC spill file, read (and deleted) at commit.
    Spilled(PathBuf),
}

/// A commit being assembled: its data files are written as rows arrive.
#[derive(Default)]
pub struct PendingCommit {
    writer: Option<RecordBatchWriter>,
    /// Schema changes first seen in this commit's rows (recorded in its metadata).
    schema_changes: Vec<SchemaChangeRecord>,
    /// Rows written, by op (for the metrics, once committed).
    ops: OpCounts,
    /// Arrow bytes written.
    bytes: usize,
}

/// Rows by `_sluice_op`: `c`, `u`, `d`, `r`, `t`.
#[derive(Default, Clone, Copy)]
struct OpCounts([u64; 5]);

const OPS: [&str; 5] = ["c", "u", "d", "r", "t"];

impl OpCounts {
    fn add(&mut self, batch: &RecordBatch) {
        let Some(ops) = batch
            .column_by_name(OP_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            return;
        };
        for op in ops.iter().flatten() {
            if let Some(i) = OPS.iter().position(|o| *o == op) {
                self.0[i] += 1;
            }
        }
    }

    fn rows(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// A changelog table and the last source position committed to it.
pub struct ChangelogTable {
    name: Arc<TableName>,
    path: PathBuf,
    table: Option<DeltaTable>,
    /// Highest source commit position in the table (`txn` version), if any.
    position: Option<Lsn>,
    /// Last incremental-snapshot chunk committed (`txn` version of [`chunk_app_id`]).
    snapshot_chunk: Option<u64>,
    history: Arc<SchemaHistory>,
    /// The source columns the table last recorded, and the position (lsn, seq) they hold
    /// from (see [`SchemaHistory`]).
    shape: Option<Shape>,
    /// The last batch schema seen and the lake schema its columns are written under (`None`:
    /// the same names).
    mapping: Option<(SchemaRef, Option<SchemaRef>)>,
}

/// The `txn` application id under which a pipeline's incremental-snapshot chunk numbers are
/// committed, beside its source position.
pub fn chunk_app_id(app_id: &str) -> String {
    format!("{app_id}/snapshot-chunk")
}

impl ChangelogTable {
    /// Open the table at `root/schema/name` if it exists and read back the pipeline's position.
    /// `history` holds the schema changes the table followed.
    pub async fn open(
        root: &Path,
        name: Arc<TableName>,
        app_id: &str,
        history: Arc<SchemaHistory>,
    ) -> Result<Self> {
        let path = root.join(&name.schema).join(&name.name);
        let mut this = ChangelogTable {
            shape: history.shape(&name),
            name,
            path,
            table: None,
            position: None,
            snapshot_chunk: None,
            history,
            mapping: None,
        };
        if this.path.join("_delta_log").is_dir() {
            let table = deltalake::open_table(this.url()?)
                .await
                .map_err(|e| this.delta(e))?;
            let snapshot = table.snapshot().map_err(|e| this.delta(e))?;
            let log = table.log_store();
            let version = snapshot
                .transaction_version(log.as_ref(), app_id)
                .await
                .map_err(|e| this.delta(e))?;
            let chunk = snapshot
                .transaction_version(log.as_ref(), &chunk_app_id(app_id))
                .await
                .map_err(|e| this.delta(e))?;
            this.position = version.map(|v| Lsn(v as u64));
            this.snapshot_chunk = chunk.map(|v| v as u64);
            if this.shape.is_none() {
                // Never changed shape: the lake's columns are the source's.
                let held = snapshot.snapshot().arrow_schema();
                this.shape = Some((source_columns(&held), (Lsn::ZERO, 0)));
            }
            this.table = Some(table);
        }
        Ok(this)
    }

    /// The source columns the table last recorded (`None`: not created yet).
    pub fn shape(&self) -> Option<&Columns> {
        self.shape.as_ref().map(|(c, _)| c)
    }

    /// The source table.
    pub fn name(&self) -> &Arc<TableName> {
        &self.name
    }

    /// The Delta table's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Last source position committed, if any.
    pub fn position(&self) -> Option<Lsn> {
        self.position
    }

    /// Last incremental-snapshot chunk committed, if any.
    pub fn snapshot_chunk(&self) -> Option<u64> {
        self.snapshot_chunk
    }

    /// The Delta table version, if the table exists.
    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(|t| t.version())
    }

    /// The table's Arrow schema (`None`: not created yet).
    pub fn arrow_schema(&self) -> Option<deltalake::arrow::datatypes::SchemaRef> {
        let state = self.table.as_ref()?.snapshot().ok()?;
        Some(state.snapshot().arrow_schema())
    }

    fn url(&self) -> Result<url::Url> {
        let absolute = std::path::absolute(&self.path).map_err(|source| Error::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        url::Url::from_directory_path(&absolute).map_err(|()| Error::InvalidPath {
            path: self.path.display().to_string(),
            reason: "not an absolute local path".into(),
        })
    }

    fn delta(&self, source: deltalake::DeltaTableError) -> Error {
        Error::Delta {
            table: self.name.to_string(),
            source,
        }
    }

    /// Rows of `batch` above the committed position (all of them, except just after a restart).
    fn unseen(&self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let Some(position) = self.position else {
            return Ok(Some(batch));
        };
        let lsn = batch
            .column_by_name(LSN_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| Error::Arrow {
                table: self.name.to_string(),
                source: deltalake::arrow::error::ArrowError::SchemaError(
                    "batch has no _sluice_lsn column".into(),
                ),
            })?;
        let keep: BooleanArray = lsn
            .iter()
            .map(|v| v.map(|v| v as u64 > position.0))
            .collect();
        if keep.true_count() == batch.num_rows() {
            return Ok(Some(batch));
        }
        let kept = filter_record_batch(&batch, &keep).map_err(|source| Error::Arrow {
            table: self.name.to_string(),
            source,
        })?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }

    /// Append `parts` (all with positions ≤ `commit_lsn`) in one Delta commit carrying the
    /// `txn` action for `commit_lsn`, dropping rows already committed. Spill files are read
    /// one at a time, so memory holds one chunk, not the transaction. `stamp` sets the
    /// position columns of rows that did not know them yet (streamed transactions).
    /// Returns whether anything was committed.
    pub async fn commit(
        &mut self,
        parts: Vec<Part>,
        stamp: Option<(Lsn, i64)>,
        app_id: &str,
        commit_lsn: Lsn,
    ) -> Result<bool> {
        let pending = self.write_parts(parts, stamp).await?;
        self.commit_with(pending, app_id, commit_lsn, None, None)
            .await
    }

    /// [`ChangelogTable::commit`] for rows that know their position, recording the source's
    /// GTID set (MySQL/MariaDB) as `sluice.gtid` commit metadata.
    pub async fn commit_gtid(
        &mut self,
        parts: Vec<Part>,
        app_id: &str,
        commit_lsn: Lsn,
        gtid: Option<&str>,
    ) -> Result<bool> {
        let pending = self.write_parts(parts, None).await?;
        self.commit_with(pending, app_id, commit_lsn, None, gtid)
            .await
    }

    async fn write_parts(
        &mut self,
        parts: Vec<Part>,
        stamp: Option<(Lsn, i64)>,
    ) -> Result<PendingCommit> {
        let mut pending = PendingCommit::default();
        for part in parts {
            let batches = match part {
                Part::Batch(b) => vec![b],
                Part::Spilled(path) => spill::read(&self.name, &path)?,
            };
            for batch in batches {
                let batch = match stamp {
                    Some((lsn, ts)) => {
                        stamp_position(&batch, lsn, ts).map_err(|source| Error::Arrow {
                            table: self.name.to_string(),
                            source,
                        })?
                    }
                    None => batch,
                };
                self.write(&mut pending, batch).await?;
            }
        }
        Ok(pending)
    }

    /// Commit one incremental-snapshot chunk: its rows (possibly none) and, in the same
    /// commit, the chunk's number beside the source position, so that the chunk's progress is
    /// durable exactly when its rows are.
    ///
    /// A chunk is recognised as committed by its number, not by position: its rows may share
    /// the position of the transaction just before it (MySQL/MariaDB place a chunk at the
    /// boundary the stream stands at).
    pub async fn commit_chunk(
        &mut self,
        batch: RecordBatch,
        app_id: &str,
        commit_lsn: Lsn,
        chunk: u64,
    ) -> Result<()> {
        if self.snapshot_chunk.is_some_and(|done| chunk <= done) {
            return Ok(());
        }
        let mut pending = PendingCommit::default();
        self.append(&mut pending, batch).await?;
        if pending.writer.is_none() {
            pending.writer = Some(self.writer()?);
        }
        self.commit_with(pending, app_id, commit_lsn, Some(chunk), None)
            .await
            .map(|_| ())
    }

    fn writer(&self) -> Result<RecordBatchWriter> {
        let table = self.table.as_ref().ok_or_else(|| self.vanished())?;
        RecordBatchWriter::for_table(table)
            .map(|w| w.with_target_file_size(TARGET_FILE_SIZE))
            .map_err(|source| Error::Delta {
                table: self.name.to_string(),
                source,
            })
    }

    /// Write `batch`'s unseen rows as data files of `pending` (not visible until
    /// [`ChangelogTable::finish`]). Creates the table on its first rows; columns the batch adds
    /// are added to the schema by the commit.
    pub async fn write(&mut self, pending: &mut PendingCommit, batch: RecordBatch) -> Result<()> {
        match self.unseen(batch)? {
            Some(batch) => self.append(pending, batch).await,
            None => Ok(()),
        }
    }

    /// [`ChangelogTable::write`] without the position filter.
    async fn append(&mut self, pending: &mut PendingCommit, batch: RecordBatch) -> Result<()> {
        if self.table.is_none() {
            self.create(&batch).await?;
            self.shape = Some((source_columns(&batch.schema()), first_position(&batch)));
        }
        let batch = self.evolve(pending, batch).await?;
        pending.ops.add(&batch);
        pending.bytes += batch.get_array_memory_size();
        let writer = match &mut pending.writer {
            Some(w) => w,
            None => pending.writer.insert(self.writer()?),
        };
        writer
            .write_with_mode(batch, WriteMode::MergeSchema)
            .await
            .map_err(|source| Error::Delta {
                table: self.name.to_string(),
                source,
            })
    }

    /// Follow the batch's shape: record a change from the last recorded shape in the schema
    /// history (once: a replayed batch from before the change is written, not recorded), then
    /// name the batch's columns as the lake holds them (see [`replication::evolution`]).
    async fn evolve(
        &mut self,
        pending: &mut PendingCommit,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mapped = match &self.mapping {
            Some((seen, mapped)) if Arc::ptr_eq(seen, &schema) => mapped.clone(),
            _ => {
                let columns = source_columns(&schema);
                let at = first_position(&batch);
                match self.shape.take() {
                    Some((before, since)) if at >= since => {
                        let changes = diff(&before, &columns);
                        if !changes.is_empty() {
                            let record = self
                                .history
                                .record(&self.name, at, &before, &columns, &changes)
                                .await?;
                            pending.schema_changes.push(record);
                            self.shape = Some((columns, at));
                        } else {
                            self.shape = Some((before, since));
                        }
                    }
                    // Rows from before the recorded change (a replay): written as they are.
                    held => self.shape = held.or(Some((columns, at))),
                }
                let lake = match &pending.writer {
                    Some(w) => Some(w.arrow_schema()),
                    None => self.arrow_schema(),
                };
                let mapped = lake.and_then(|lake| lake_names(&schema, &lake));
                self.mapping = Some((schema, mapped.clone()));
                mapped
            }
        };
        match mapped {
            None => Ok(batch),
            Some(mapped) => {
                RecordBatch::try_new(mapped, batch.columns().to_vec()).map_err(|source| {
                    Error::Arrow {
                        table: self.name.to_string(),
                        source,
                    }
                })
            }
        }
    }

    /// Make `pending`'s files visible in one Delta commit carrying the `txn` action for
    /// `commit_lsn`. Returns whether there was anything to commit.
    pub async fn finish(
        &mut self,
        pending: PendingCommit,
        app_id: &str,
        commit_lsn: Lsn,
    ) -> Result<bool> {
        self.commit_with(pending, app_id, commit_lsn, None, None)
            .await
    }

    async fn commit_with(
        &mut self,
        pending: PendingCommit,
        app_id: &str,
        commit_lsn: Lsn,
        chunk: Option<u64>,
        gtid: Option<&str>,
    ) -> Result<bool> {
        let Some(writer) = pending.writer else {
            return Ok(false);
        };
        let mut properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(app_id, commit_lsn.0 as i64));
        if let Some(chunk) = chunk {
            properties = properties
                .with_application_transaction(Transaction::new(chunk_app_id(app_id), chunk as i64));
        }
        let mut metadata = vec![
            ("sluice.pipeline".to_string(), serde_json::json!(app_id)),
            (
                "sluice.commit_lsn".to_string(),
                serde_json::json!(commit_lsn.to_string()),
            ),
        ];
        if let Some(gtid) = gtid {
            metadata.push(("sluice.gtid".to_string(), serde_json::json!(gtid)));
        }
        if !pending.schema_changes.is_empty() {
            metadata.push((
                "sluice.schema_changes".to_string(),
                serde_json::json!(pending.schema_changes),
            ));
        }
        let properties = properties.with_metadata(metadata);
        let mut writer = writer.with_commit_properties(properties);
        let name = self.name.to_string();
        let table = self.table.as_mut().ok_or_else(|| Error::InvalidPath {
            path: name.clone(),
            reason: "table vanished".into(),
        })?;
        writer
            .flush_and_commit(table)
            .await
            .map_err(|source| Error::Delta {
                table: name,
                source,
            })?;
        self.position = Some(commit_lsn);
        if chunk.is_some() {
            self.snapshot_chunk = chunk;
        }
        self.record(pending.ops, pending.bytes);
        Ok(true)
    }

    /// The metrics of one commit.
    fn record(&self, ops: OpCounts, bytes: usize) {
        let table = self.name.to_string();
        metrics::counter!(crate::metrics::DELTA_COMMITS, "table" => table.clone()).increment(1);
        for (op, n) in OPS.iter().zip(ops.0) {
            if n > 0 {
                metrics::counter!(crate::metrics::CHANGES, "table" => table.clone(), "op" => *op)
                    .increment(n);
            }
        }
        metrics::histogram!(crate::metrics::BATCH_ROWS).record(ops.rows() as f64);
        metrics::histogram!(crate::metrics::BATCH_BYTES).record(bytes as f64);
    }

    fn vanished(&self) -> Error {
        Error::InvalidPath {
            path: self.path.display().to_string(),
            reason: "table vanished".into(),
        }
    }

    async fn create(&mut self, first: &RecordBatch) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(|source| Error::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        let name = self.name.to_string();
        let delta = |source| Error::Delta {
            table: name.clone(),
            source,
        };
        let schema: StructType = first.schema().as_ref().try_into_kernel().map_err(|e| {
            delta(deltalake::DeltaTableError::Generic(format!(
                "schema not representable in delta: {e}"
            )))
        })?;
        let table = DeltaTable::try_from_url(self.url()?).await.map_err(delta)?;
        let table = table
            .create()
            .with_table_name(self.name.name.clone())
            .with_comment(format!("sluice changelog of {}", self.name))
            .with_columns(schema.fields().cloned())
            .await
            .map_err(delta)?;
        tracing::info!(table = %self.name, path = %self.path.display(), "created delta table");
        self.table = Some(table);
        Ok(())
    }
}

/// The (lsn, seq) of a batch's first row.
fn first_position(batch: &RecordBatch) -> (Lsn, i64) {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .filter(|c| !c.is_empty())
            .map_or(0, |c| c.value(0))
    };
    (Lsn(column(LSN_COLUMN) as u64), column(SEQ_COLUMN))
}

/// The batch schema with each source column named as the lake holds it (`None`: no name
/// changes): a column whose type differs from the lake's column of that name goes to
/// `name__<type>` (see [`replication::evolution::lake_column`]). Companions keep their names.
fn lake_names(batch: &Schema, lake: &Schema) -> Option<SchemaRef> {
    let held = |name: &str| {
        lake.field_with_name(name)
            .ok()
            .map(|f| f.data_type().clone())
    };
    let cdc = cdc_fields().len();
    let mut renamed = false;
    let fields: Vec<Field> = batch
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let companion = f
                .name()
                .strip_suffix(COMPANION_SUFFIX)
                .is_some_and(|base| batch.field_with_name(base).is_ok());
            if i < cdc || companion {
                return f.as_ref().clone();
            }
            let name = lake_column(f.name(), f.data_type(), &held);
            if name != *f.name() {
                renamed = true;
            }
            f.as_ref().clone().with_name(name.into_owned())
        })
        .collect();
    renamed.then(|| Arc::new(Schema::new_with_metadata(fields, batch.metadata().clone())))
}
