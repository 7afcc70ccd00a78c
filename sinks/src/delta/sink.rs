//! The Delta sink: applies events in source commit order and says what is durable.
//!
//! ```text
//!  Committed ─────────▶ per table: drop rows ≤ table position ─▶ one Delta commit (txn)
//!  StreamChunk ───────▶ spill file (not visible)
//!  StreamCommit ──────▶ spill files + rest, stamped with the commit position ─▶ one commit
//!  StreamAbort ───────▶ delete spill files
//!  Snapshot ──────────▶ Delta data files (not visible)
//!  SnapshotCommit ────▶ one commit per table
//!  SnapshotChunk ─────▶ one commit: rows + txn(position) + txn(chunk number)
//!  Marker ────────────▶ nothing (an empty transaction), its end is durable
//! ```
//!
//! A source transaction spanning tables becomes one commit per table (Delta has no
//! multi-table transaction). An event is durable once every table in it committed, and only
//! then is its end position reported, so the slot is never confirmed past a table that has
//! not yet committed; after a crash the lagging tables catch up and the others skip.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replication::change::{Event, TableBatch, TableName};
use replication::evolution::{Columns, SchemaPolicies};
use replication::Lsn;

use super::history::SchemaHistory;
use super::spill::Spill;
use super::table::{ChangelogTable, Part, PendingCommit};
use crate::{Error, Result};

/// Where one table stands, for `sluice status`.
#[derive(Debug, Clone)]
pub struct TablePosition {
    /// Source table.
    pub table: Arc<TableName>,
    /// Delta table directory.
    pub path: PathBuf,
    /// Delta table version (`None`: not created yet).
    pub delta_version: Option<u64>,
    /// Last source commit position in it.
    pub position: Option<Lsn>,
    /// Last incremental-snapshot chunk committed to it.
    pub snapshot_chunk: Option<u64>,
    /// Its columns (`None`: not created yet).
    pub schema: Option<deltalake::arrow::datatypes::SchemaRef>,
    /// The source table's columns as last recorded (`None`: not created yet): what a source
    /// compares the table's first shape with under the `stop` policy.
    pub shape: Option<Columns>,
}

/// A set of changelog tables under one directory.
pub struct DeltaSink {
    root: PathBuf,
    app_id: String,
    tables: HashMap<Arc<TableName>, ChangelogTable>,
    spill: Spill,
    /// Data files of the initial snapshot, per table, until it commits.
    snapshot: BTreeMap<Arc<TableName>, PendingCommit>,
    history: Arc<SchemaHistory>,
}

impl DeltaSink {
    /// Open (not create) the tables for `tables` under `root`, reading back their positions
    /// and shapes; schema changes follow `policies`. Clears spill files a previous run left
    /// behind.
    pub async fn open(
        root: &Path,
        app_id: &str,
        tables: &[TableName],
        policies: SchemaPolicies,
    ) -> Result<Self> {
        let history = Arc::new(SchemaHistory::open(root, app_id, policies).await?);
        let mut sink = Self::open_with(root, app_id, tables, history).await?;
        sink.spill = Spill::open(root.join("_sluice_spill").join(app_id))?;
        Ok(sink)
    }

    /// Open the tables to read their positions, touching nothing on disk.
    pub async fn open_read_only(root: &Path, app_id: &str, tables: &[TableName]) -> Result<Self> {
        let history = Arc::new(SchemaHistory::open(root, app_id, SchemaPolicies::default()).await?);
        Self::open_with(root, app_id, tables, history).await
    }

    async fn open_with(
        root: &Path,
        app_id: &str,
        tables: &[TableName],
        history: Arc<SchemaHistory>,
    ) -> Result<Self> {
        let mut opened = HashMap::new();
        for t in tables {
            let name = Arc::new(t.clone());
            let table = ChangelogTable::open(root, name.clone(), app_id, history.clone()).await?;
            opened.insert(name, table);
        }
        Ok(DeltaSink {
            spill: Spill::unopened(),
            snapshot: BTreeMap::new(),
            root: root.to_path_buf(),
            app_id: app_id.to_string(),
            tables: opened,
            history,
        })
    }

    /// The schema history the tables record changes in; the pipeline gives it the snapshot
    /// queue for the `resnapshot` policy ([`SchemaHistory::set_resnapshot`]).
    pub fn history(&self) -> Arc<SchemaHistory> {
        self.history.clone()
    }

    /// Each table's Delta version and source position, sorted by table.
    pub fn positions(&self) -> Vec<TablePosition> {
        let mut out: Vec<_> = self
            .tables
            .values()
            .map(|t| TablePosition {
                table: t.name().clone(),
                path: t.path().to_path_buf(),
                delta_version: t.version(),
                position: t.position(),
                snapshot_chunk: t.snapshot_chunk(),
                schema: t.arrow_schema(),
                shape: t.shape().cloned(),
            })
            .collect();
        out.sort_by(|a, b| a.table.cmp(&b.table));
        out
    }

    /// Apply one event. Returns the position that became durable, if any.
    pub async fn apply(&mut self, event: Event) -> Result<Option<Lsn>> {
        let app_id = self.app_id.clone();
        match event {
            Event::Committed {
                tables,
                commit_lsn,
                end_lsn,
                gtid,
            } => {
                for (table, parts) in group(tables) {
                    let t = self.table(&table).await?;
                    t.commit_gtid(parts, &app_id, commit_lsn, gtid.as_deref())
                        .await?;
                }
                Ok(Some(end_lsn))
            }
            Event::StreamChunk {
                xid,
                subxid,
                tables,
            } => {
                for tb in tables {
                    self.spill.write(xid, subxid, &tb.table, &tb.batch)?;
                }
                Ok(None)
            }
            Event::Snapshot { tables } => {
                for tb in tables {
                    let mut pending = self.snapshot.remove(&tb.table).unwrap_or_default();
                    self.table(&tb.table)
                        .await?
                        .write(&mut pending, tb.batch)
                        .await?;
                    self.snapshot.insert(tb.table, pending);
                }
                Ok(None)
            }
            Event::SnapshotCommit {
                commit_lsn,
                end_lsn,
            } => {
                for (table, pending) in std::mem::take(&mut self.snapshot) {
                    self.table(&table)
                        .await?
                        .finish(pending, &app_id, commit_lsn)
                        .await?;
                }
                Ok(Some(end_lsn))
            }
            Event::SnapshotChunk {
                table,
                chunk,
                commit_lsn,
                end_lsn,
            } => {
                self.table(&table.table)
                    .await?
                    .commit_chunk(table.batch, &app_id, commit_lsn, chunk)
                    .await?;
                Ok(Some(end_lsn))
            }
            // A watermark the source did not turn into a chunk: an empty transaction.
            Event::Marker { end_lsn, .. } => Ok(Some(end_lsn)),
            Event::StreamAbort { xid, subxid } => {
                self.spill.abort(xid, subxid);
                Ok(None)
            }
            Event::StreamCommit {
                xid,
                tables,
                commit_lsn,
                end_lsn,
                commit_ts,
            } => {
                let mut by_table: BTreeMap<Arc<TableName>, Vec<Part>> = BTreeMap::new();
                for (table, path) in self.spill.take(xid) {
                    by_table.entry(table).or_default().push(Part::Spilled(path));
                }
                for tb in tables {
                    by_table
                        .entry(tb.table)
                        .or_default()
                        .push(Part::Batch(tb.batch));
                }
                for (table, parts) in by_table {
                    let t = self.table(&table).await?;
                    t.commit(parts, Some((commit_lsn, commit_ts)), &app_id, commit_lsn)
                        .await?;
                }
                Ok(Some(end_lsn))
            }
        }
    }

    async fn table(&mut self, name: &Arc<TableName>) -> Result<&mut ChangelogTable> {
        if !self.tables.contains_key(name) {
            let t =
                ChangelogTable::open(&self.root, name.clone(), &self.app_id, self.history.clone())
                    .await?;
            self.tables.insert(name.clone(), t);
        }
        self.tables.get_mut(name).ok_or_else(|| Error::InvalidPath {
            path: self.root.display().to_string(),
            reason: format!("table {name} vanished"),
        })
    }
}

/// Batches per table, keeping their order.
fn group(tables: Vec<TableBatch>) -> BTreeMap<Arc<TableName>, Vec<Part>> {
    let mut out: BTreeMap<Arc<TableName>, Vec<Part>> = BTreeMap::new();
    for tb in tables {
        out.entry(tb.table).or_default().push(Part::Batch(tb.batch));
    }
    out
}
