//! Incremental snapshots, driven beside the stream (DBLog; the source's side is
//! `replication::window`, the SQL sides `replication::postgres::incremental` and
//! `replication::mysql::snapshot`). The driver is the same for both sources; what differs is
//! behind [`ChunkReader`] (`source::postgres::PgReader`, `source::mysql::MyReader`):
//! PostgreSQL brackets each read with watermarks written into the WAL, MySQL/MariaDB reads each
//! chunk in a consistent snapshot whose binlog position places it.
//!
//! ```text
//!  state file: queue of snapshots ──▶ driver (one chunk at a time)
//!     ▲                                 │ register ─▶ LOW ─▶ read chunk ─▶ store bound ─▶ rows ─▶ HIGH
//!     │ requests (sluice snapshot,      ▼
//!     │ found in the stream)        source: window ─▶ Event::SnapshotChunk ─▶ sink commit
//!     └── persister ◀── source                     (rows + chunk number, one Delta commit)
//! ```
//!
//! Used for tables added to the configuration of a running pipeline, for `sluice snapshot`,
//! and to finish an initial load that was interrupted (its exported snapshot died with its
//! connection). One chunk is in flight at a time: its bound is stored before it can commit,
//! and the next bound is stored only once the sink reports that chunk committed (by number:
//! a MySQL chunk may share its position with the transaction before it, so the durable
//! position cannot tell), so after a crash the chunk number the Delta table holds is always
//! one of the two bounds kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use replication::change::TableName;
use replication::window::{
    ChunkOutcome, ChunkRead, ChunkWindow, RequestSender, SnapshotLink, SnapshotRequest, ToSource,
};
use replication::{ErrorClass, Lsn};
use sinks::delta::ResnapshotQueue;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{CommittedChunk, PipelineError};
use crate::progress::Progress;
use crate::state::{Incremental, State, Store};

/// Rows of the first chunk of a snapshot, which measures the row size for the next ones.
const FIRST_CHUNK_ROWS: usize = 1000;

/// A chunk read again this many times in a row is worth a warning (and every as many after).
const RETRIES_WARN: u32 = 20;

/// Watermark ids count up from a random start per process: watermarks of an earlier process
/// that the stream replays after a crash must never match a window of this one.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static ID_BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn next_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let base = *ID_BASE.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    base.wrapping_add(NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// What the driver asks of a source kind: a job per table, which reads its chunks.
pub trait ChunkReader: Send + Sync + 'static {
    type Job: ChunkJob;

    /// Prepare to read `table` in key order.
    fn begin(
        &self,
        table: &TableName,
    ) -> impl std::future::Future<Output = Result<Self::Job, PipelineError>> + Send;
}

/// One table's chunks, read one at a time by the driver:
/// `open` → `read` → (rows to the source) → `close`.
pub trait ChunkJob: Send {
    /// The table and its key column names.
    fn table(&self) -> (Arc<TableName>, Vec<String>);
    /// The server's estimate of the rows to read.
    fn estimate(&self) -> u64;
    /// The table's shape may have changed: plan again.
    fn replan(&mut self) -> impl std::future::Future<Output = Result<(), PipelineError>> + Send;
    /// Open chunk `id`'s window, after its registration was sent. False: the source is gone.
    fn open(
        &mut self,
        id: u64,
        to_source: &mpsc::UnboundedSender<ToSource>,
    ) -> impl std::future::Future<Output = Result<bool, PipelineError>> + Send;
    /// Read at most `size` rows after key `after`, in batches of at most `max_rows`, and the
    /// source position they are as of when the reader knows it.
    fn read(
        &mut self,
        after: Option<&[String]>,
        filter: Option<&str>,
        size: usize,
        max_rows: usize,
    ) -> impl std::future::Future<Output = Result<(ChunkRead, Option<Lsn>), PipelineError>> + Send;
    /// Close chunk `id`'s window, after its rows were sent.
    fn close(
        &mut self,
        id: u64,
    ) -> impl std::future::Future<Output = Result<(), PipelineError>> + Send;
}

/// How big chunks and their batches may be.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Most rows per chunk.
    pub chunk_rows: usize,
    /// Most rows per batch.
    pub batch_rows: usize,
    /// The in-flight byte budget (a chunk is sized to half of it).
    pub inflight_bytes: usize,
}

/// Tables that need an incremental snapshot before streaming alone is enough: those an
/// interrupted initial load did not commit (`resume`: no position in the lake) and those new
/// to the configuration (`added`), unless already queued.
pub fn catch_up(
    state: &State,
    tables: &[TableName],
    positions: &[sinks::delta::TablePosition],
) -> Vec<(TableName, &'static str)> {
    let queued = |t: &TableName| state.incremental.iter().any(|j| j.table == t.to_string());
    let mut todo: Vec<(TableName, &'static str)> = Vec::new();
    if state.snapshot == crate::state::SnapshotState::Pending {
        for p in positions {
            if p.position.is_none() && !queued(&p.table) {
                todo.push(((*p.table).clone(), "resume"));
            }
        }
    }
    if let Some(known) = &state.tables {
        for t in tables {
            let new = !known.contains(&t.to_string());
            if new && !queued(t) && !todo.iter().any(|(q, _)| q == t) {
                todo.push((t.clone(), "added"));
            }
        }
    }
    todo
}

/// Record in `state` that the pipeline now covers `tables` (dropping queued snapshots of tables
/// it no longer has) and queue `todo` (from [`catch_up`]).
pub fn queue_catch_up(state: &mut State, tables: &[TableName], todo: &[(TableName, &'static str)]) {
    let configured: Vec<String> = tables.iter().map(ToString::to_string).collect();
    state.incremental.retain(|j| configured.contains(&j.table));
    state.tables = Some(configured);
    for (table, reason) in todo {
        state.incremental.push(Incremental {
            table: table.to_string(),
            filter: None,
            reason: (*reason).to_string(),
            chunks: Vec::new(),
        });
    }
}

/// Log what [`queue_catch_up`] queued (once it is stored).
pub fn log_queued(todo: &[(TableName, &'static str)]) {
    for (table, reason) in todo {
        tracing::info!(%table, reason, "incremental snapshot queued");
    }
}

/// A `--where` predicate the server refused (`e` from checking it), as one line with its fix.
pub fn bad_predicate(table: &TableName, e: &replication::Error) -> replication::Error {
    replication::Error::Preflight {
        problems: vec![format!(
            "--where is not a valid predicate on {table}: {}: fix the predicate",
            e.to_string()
                .trim_start_matches(&format!("checking the predicate on {table}: "))
        )],
    }
}

/// The driver's handles for one session, and the source's ends.
pub struct Session<R: ChunkReader> {
    driver: Driver<R>,
    requests: mpsc::UnboundedReceiver<(SnapshotRequest, Lsn, oneshot::Sender<()>)>,
    /// The lake and pipeline whose request mailbox to watch.
    mailbox: Option<(std::path::PathBuf, String)>,
}

/// Wire a session: the driver, and the link the source takes. `committed` holds each table's
/// last committed chunk number (read from the Delta tables); `tables` are the pipeline's.
pub fn session<R: ChunkReader>(
    reader: R,
    sizes: Sizes,
    tables: Vec<TableName>,
    store: Arc<Store>,
    committed: HashMap<TableName, Option<u64>>,
    committed_chunks: watch::Receiver<CommittedChunk>,
) -> (Session<R>, SnapshotLink) {
    let (to_source, chunks) = mpsc::unbounded_channel();
    let (requests_tx, requests): (RequestSender, _) = mpsc::unbounded_channel();
    let pending = !store.get().incremental.is_empty();
    let (idle_tx, idle) = watch::channel(!pending);
    let driver = Driver {
        reader,
        sizes,
        tables,
        store,
        committed,
        to_source,
        committed_chunks,
        idle: Arc::new(idle_tx),
        wake: Arc::new(Notify::new()),
        progress: Progress::new("incremental snapshot"),
        registered: None,
    };
    (
        Session {
            driver,
            requests,
            mailbox: None,
        },
        SnapshotLink {
            chunks,
            requests: requests_tx,
            idle,
        },
    )
}

impl<R: ChunkReader> Session<R> {
    /// Also take the requests `sluice snapshot` leaves in the lake for `pipeline`: those
    /// already there now (so `--until caught-up` waits for them), the others as they come.
    pub fn with_mailbox(mut self, lake: &std::path::Path, pipeline: &str) -> Self {
        take_mailbox(lake, pipeline, &self.intake());
        self.mailbox = Some((lake.to_path_buf(), pipeline.to_string()));
        self
    }

    /// Where the sink queues re-snapshots after a schema change (the `resnapshot` policy; see
    /// `sinks::delta::DeltaSink::set_resnapshot`). It writes the state file itself, so it
    /// works until the sink ends, also while the driver shuts down.
    pub fn resnapshots(&self) -> Arc<dyn ResnapshotQueue> {
        Arc::new(self.intake())
    }

    fn intake(&self) -> Intake {
        Intake {
            store: self.driver.store.clone(),
            tables: self.driver.tables.clone(),
            wake: self.driver.wake.clone(),
            idle: self.driver.idle.clone(),
        }
    }

    /// [`Session::run`] on a task of its own; a failure cancels `stop` (and so the source).
    pub fn spawn(
        self,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), PipelineError>> {
        tokio::spawn(async move {
            let result = self.run(stop.clone()).await;
            if result.is_err() {
                stop.cancel();
            }
            result
        })
    }

    /// Run the driver and the request intake (from the stream, or from the mailbox) until
    /// cancelled or the source goes away.
    /// A definite failure of a `sluice snapshot` request drops that request (logged); any
    /// other failure ends the session with it.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), PipelineError> {
        let intake = self.intake();
        let Session {
            mut driver,
            requests,
            mailbox,
        } = self;
        // The persister ends when its source has no requests to send (MySQL); the driver
        // goes on.
        let persister = {
            let intake = intake.clone();
            async move {
                persist_requests(requests, intake).await;
                std::future::pending::<()>().await
            }
        };
        let mailbox = async {
            match mailbox {
                Some((lake, pipeline)) => watch_mailbox(lake, pipeline, intake).await,
                None => std::future::pending::<()>().await,
            }
        };
        let reporter = driver.progress.clone().report(cancel.clone());
        tokio::select! {
            r = driver.run(&cancel) => r,
            () = persister => Ok(()),
            () = mailbox => Ok(()),
            () = reporter => Ok(()),
        }
    }
}

/// Takes snapshot requests into the state file's queue and wakes the driver.
#[derive(Clone)]
struct Intake {
    store: Arc<Store>,
    tables: Vec<TableName>,
    wake: Arc<Notify>,
    idle: Arc<watch::Sender<bool>>,
}

impl Intake {
    /// Queue `request` (a table outside the pipeline is ignored with a warning), recording
    /// `seen` as the last request taken.
    fn take(&self, request: &SnapshotRequest, seen: String) -> Result<(), PipelineError> {
        self.queue(request, Some(seen), "requested")
    }

    /// Queue `request` for `reason`, recording `seen` (when given) as the last request taken.
    fn queue(
        &self,
        request: &SnapshotRequest,
        seen: Option<String>,
        reason: &str,
    ) -> Result<(), PipelineError> {
        let Some(table) = TableName::parse(&request.table).filter(|t| self.tables.contains(t))
        else {
            tracing::warn!(table = %request.table, "snapshot request ignored: the table is not in this pipeline");
            return Ok(());
        };
        self.store.update(|s| {
            if let Some(seen) = seen {
                s.requests_seen = Some(seen);
            }
            let job = Incremental {
                table: table.to_string(),
                filter: request.filter.clone(),
                reason: reason.into(),
                chunks: Vec::new(),
            };
            // A re-snapshot asked for again (a replay after a crash) is queued once.
            if !(reason == SCHEMA_CHANGE
                && s.incremental
                    .iter()
                    .any(|j| same(j, &job) && j.chunks.is_empty()))
            {
                s.incremental.push(job);
            }
        })?;
        tracing::info!(%table, filtered = request.filter.is_some(), "incremental snapshot requested");
        // Busy before the source moves on, so `--until caught-up` waits for it.
        self.idle.send_replace(false);
        self.wake.notify_one();
        Ok(())
    }
}

/// Store every request the source finds, then acknowledge it.
async fn persist_requests(
    mut requests: mpsc::UnboundedReceiver<(SnapshotRequest, Lsn, oneshot::Sender<()>)>,
    intake: Intake,
) {
    while let Some((request, lsn, ack)) = requests.recv().await {
        let seen = intake
            .store
            .get()
            .requests_seen
            .and_then(|s| s.parse::<Lsn>().ok());
        if seen.is_none_or(|seen| lsn > seen) {
            if let Err(e) = intake.take(&request, lsn.to_string()) {
                // Not acknowledged: the source stops and the request is read again.
                tracing::error!(error = %e, "storing a snapshot request");
                return;
            }
        }
        let _ = ack.send(());
    }
}

/// Why a table is re-snapshotted after a schema change (the `resnapshot` policy).
const SCHEMA_CHANGE: &str = "schema change";

impl ResnapshotQueue for Intake {
    fn queue(&self, table: &TableName) -> Result<(), String> {
        let request = SnapshotRequest {
            table: table.to_string(),
            filter: None,
        };
        Intake::queue(self, &request, None, SCHEMA_CHANGE).map_err(|e| e.to_string())
    }
}

/// How often the mailbox is looked at.
const MAILBOX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Take the requests `sluice snapshot` leaves in the pipeline's mailbox (see
/// [`crate::state::mailbox`]), every [`MAILBOX_EVERY`].
async fn watch_mailbox(lake: std::path::PathBuf, pipeline: String, intake: Intake) {
    let mut tick = tokio::time::interval(MAILBOX_EVERY);
    loop {
        tick.tick().await;
        take_mailbox(&lake, &pipeline, &intake);
    }
}

/// Store each request of the mailbox in the state file, then remove its file (a request stored
/// but not yet removed is known by its name and not taken twice).
fn take_mailbox(lake: &std::path::Path, pipeline: &str, intake: &Intake) {
    let requests = match crate::state::mailbox_requests(lake, pipeline) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the snapshot request mailbox");
            return;
        }
    };
    let dir = crate::state::mailbox(lake, pipeline);
    for (name, request) in requests {
        let seen = intake.store.get().requests_seen;
        if seen.is_none_or(|seen| name > seen) {
            match request {
                Ok(request) => {
                    if let Err(e) = intake.take(&request, name.clone()) {
                        tracing::error!(error = %e, "storing a snapshot request");
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "unreadable snapshot request removed")
                }
            }
        }
        if let Err(e) = std::fs::remove_file(dir.join(&name)) {
            tracing::warn!(file = %name, error = %e, "removing a snapshot request");
        }
    }
}

struct Driver<R: ChunkReader> {
    reader: R,
    sizes: Sizes,
    tables: Vec<TableName>,
    store: Arc<Store>,
    committed: HashMap<TableName, Option<u64>>,
    to_source: mpsc::UnboundedSender<ToSource>,
    /// The last chunk the sink committed.
    committed_chunks: watch::Receiver<CommittedChunk>,
    idle: Arc<watch::Sender<bool>>,
    wake: Arc<Notify>,
    progress: Arc<Progress>,
    /// The chunk registered with the source and not yet resolved.
    registered: Option<u64>,
}

/// How a snapshot run ended without error.
enum Ended {
    Complete,
    /// Cancelled, or the source went away: the session is ending.
    Stopped,
}

impl<R: ChunkReader> Driver<R> {
    async fn run(&mut self, cancel: &CancellationToken) -> Result<(), PipelineError> {
        loop {
            let next = self.store.get().incremental.first().cloned();
            let Some(job) = next else {
                self.idle.send_replace(true);
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = cancel.cancelled() => return Ok(()),
                }
            };
            self.idle.send_replace(false);
            match self.snapshot(&job, cancel).await {
                Ok(Ended::Complete) => self.store.update(|s| remove(s, &job))?,
                Ok(Ended::Stopped) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Definite && job.reason == "requested" => {
                    if let Some(id) = self.registered.take() {
                        // The source must not wait for that chunk's watermarks.
                        let _ = self.to_source.send(ToSource::Forget { id });
                    }
                    tracing::error!(table = %job.table, error = %e, "incremental snapshot request dropped");
                    self.store.update(|s| remove(s, &job))?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Snapshot one table chunk by chunk, resuming after its last committed chunk.
    async fn snapshot(
        &mut self,
        job: &Incremental,
        cancel: &CancellationToken,
    ) -> Result<Ended, PipelineError> {
        let table = TableName::parse(&job.table).ok_or_else(|| {
            PipelineError::Source(replication::Error::Protocol(format!(
                "bad table name {} in the state file",
                job.table
            )))
        })?;
        let committed = self.committed.get(&table).copied().flatten();
        let Some(mut after) = job.resume_after(committed) else {
            return Ok(Ended::Complete);
        };
        let mut number = committed.unwrap_or(0) + 1;
        let mut job_reader = self.reader.begin(&table).await?;
        tracing::info!(%table, reason = %job.reason, resumed = after.is_some(), filtered = job.filter.is_some(), "incremental snapshot started");
        let started = Instant::now();
        let counted = self.progress.add(&job.table, job_reader.estimate());
        let mut total = 0u64;
        // The previous chunk, emitted but perhaps not durable yet: its Delta commit overlaps
        // the next chunk's read. It must be durable before the next bound is stored, so the
        // chunk number a crash leaves in the table is always one of the two bounds kept.
        let mut emitted: Option<(u64, usize)> = None;
        // Chunks are sized by bytes too: the first is small, the next ones hold as many rows
        // as fit half the in-flight budget (at most snapshot_chunk_rows), so a table of wide
        // rows cannot blow the memory bound.
        let budget = self.sizes.inflight_bytes / 2;
        let mut size = self.sizes.chunk_rows.min(FIRST_CHUNK_ROWS);
        let mut retries = 0u32;
        loop {
            let id = next_id();
            let (reply, outcome) = oneshot::channel();
            let (table_name, key) = job_reader.table();
            let window = ChunkWindow {
                id,
                table: table_name,
                key,
                chunk: number,
            };
            if self
                .to_source
                .send(ToSource::Register(window, reply))
                .is_err()
            {
                return Ok(Ended::Stopped);
            }
            self.registered = Some(id);
            if !job_reader.open(id, &self.to_source).await? {
                return Ok(Ended::Stopped);
            }
            let (read, at) = job_reader
                .read(
                    after.as_deref(),
                    job.filter.as_deref(),
                    size,
                    self.sizes.batch_rows.min(65_536),
                )
                .await?;
            let bytes: usize = read.batches.iter().map(|b| b.get_array_memory_size()).sum();
            if let Some(per_row) = bytes.checked_div(read.rows) {
                size = (budget / per_row.max(1)).clamp(1, self.sizes.chunk_rows);
            }
            if let Some((chunk, rows)) = emitted.take() {
                if !self.wait_committed(&table, chunk, cancel).await {
                    return Ok(Ended::Stopped);
                }
                self.durable_chunk(&table, chunk, rows, &counted);
                total += rows as u64;
            }
            self.store.update(|s| {
                if let Some(j) = s.incremental.iter_mut().find(|j| same(j, job)) {
                    j.hand_out(number, read.upper.clone());
                }
            })?;
            let rows = ToSource::Rows {
                id,
                batches: read.batches,
                at,
            };
            if self.to_source.send(rows).is_err() {
                return Ok(Ended::Stopped);
            }
            job_reader.close(id).await?;
            let outcome = tokio::select! {
                o = outcome => o,
                () = cancel.cancelled() => return Ok(Ended::Stopped),
            };
            self.registered = None;
            match outcome {
                Err(_) => return Ok(Ended::Stopped),
                Ok(ChunkOutcome::Retry { reason }) => {
                    retries += 1;
                    if retries % RETRIES_WARN == 0 {
                        tracing::warn!(%table, chunk = number, retries, reason, "chunk read again and again");
                    } else {
                        tracing::debug!(%table, chunk = number, reason, "chunk read again");
                    }
                    // The table's shape may be what changed.
                    job_reader.replan().await?;
                }
                Ok(ChunkOutcome::Emitted { rows, .. }) => {
                    retries = 0;
                    emitted = Some((number, rows));
                    number += 1;
                    match read.upper {
                        Some(upper) => after = Some(upper),
                        None => break,
                    }
                }
            }
        }
        if let Some((chunk, rows)) = emitted {
            if !self.wait_committed(&table, chunk, cancel).await {
                return Ok(Ended::Stopped);
            }
            self.durable_chunk(&table, chunk, rows, &counted);
            total += rows as u64;
        }
        self.progress.finish(&job.table);
        tracing::info!(
            %table,
            rows = total,
            seconds = started.elapsed().as_secs_f64(),
            "incremental snapshot done"
        );
        Ok(Ended::Complete)
    }

    fn durable_chunk(&mut self, table: &TableName, chunk: u64, rows: usize, counted: &AtomicU64) {
        tracing::debug!(%table, chunk, rows, "chunk durable");
        self.committed.insert(table.clone(), Some(chunk));
        counted.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Wait until the sink committed chunk `chunk` of `table`; false when the session is ending.
    async fn wait_committed(
        &mut self,
        table: &TableName,
        chunk: u64,
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            let last = self.committed_chunks.borrow_and_update().clone();
            if last.is_some_and(|(t, n)| *t == *table && n >= chunk) {
                return true;
            }
            tokio::select! {
                changed = self.committed_chunks.changed() => if changed.is_err() { return false },
                () = cancel.cancelled() => return false,
            }
        }
    }
}

/// The same job (its chunk bounds move on as it runs).
fn same(a: &Incremental, b: &Incremental) -> bool {
    a.table == b.table && a.filter == b.filter && a.reason == b.reason
}

fn remove(state: &mut State, job: &Incremental) {
    if let Some(i) = state.incremental.iter().position(|j| same(j, job)) {
        state.incremental.remove(i);
    }
}
