//! The pipeline core: wires the source to the sink through a byte-bounded queue, carries the
//! durable position back to the source, and retries transient failures.
//!
//! ```text
//!  source task ──queue (max_inflight_bytes)──▶ sink task
//!       ▲                                          │ end position of each durable event
//!       └──────────── watch<Lsn> (durable) ◀───────┘
//! ```
//!
//! Batching happens in the source (rows are decoded straight into per-table Arrow builders,
//! which are the batch); the core decides the limits. With one sink the durable position is
//! the sink's; with several it will be the minimum over them.
//!
//! Restart safety: every session starts from the Delta tables' own positions, so a retried
//! session (or a restarted process) re-reads from the slot's confirmed position and skips what
//! is already durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use replication::cdc::now_micros;
use replication::change::{Event, TableName};
use replication::postgres::catalog;
use replication::postgres::snapshot::{self, ExportedSnapshot, SnapshotOptions};
use replication::postgres::source::{self, SourceOptions};
use replication::postgres::table::RowPosition;
use replication::source::{BatchLimits, SourceExit};
use replication::{queue, ErrorClass, Lsn};
use sinks::delta::DeltaSink;
use sinks::hub::HubPosition;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, SnapshotMode};
use crate::progress::Progress;
use crate::snapshots;
use crate::state::{SnapshotState, State, Store};

/// First and longest wait between retries of a transient failure.
pub(crate) const BACKOFF: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(30));

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] replication::Error),
    /// The sink failed.
    #[error(transparent)]
    Sink(Box<sinks::Error>),
    /// The pipeline's state file could not be read or written.
    #[error("pipeline state in {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A previous run died during the initial snapshot of a table that an incremental
    /// snapshot cannot finish.
    #[error("the initial snapshot of table {table} was interrupted and it has no primary key, which finishing it incrementally needs: add a primary key and run again, or drop the slot (SELECT pg_drop_replication_slot('{slot}')) and delete {lake} to start over")]
    SnapshotInterrupted {
        table: String,
        slot: String,
        lake: String,
    },
}

impl From<sinks::Error> for PipelineError {
    fn from(e: sinks::Error) -> Self {
        PipelineError::Sink(Box::new(e))
    }
}

impl PipelineError {
    /// The state file beside `lake` could not be read or written.
    pub fn state(lake: &std::path::Path, source: std::io::Error) -> Self {
        PipelineError::State {
            path: lake.display().to_string(),
            source,
        }
    }

    /// Retry, stop, or bug.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Sink(e) => e.class(),
            PipelineError::State { .. } => ErrorClass::Transient,
            PipelineError::SnapshotInterrupted { .. } => ErrorClass::Definite,
        }
    }
}

/// Prepare the source (publication and slot), then stream until cancelled, caught up, or a
/// definite error. Transient errors are retried with backoff.
pub async fn run(
    settings: &Settings,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let client = catalog::connect(&settings.conninfo).await?;
    let problems = catalog::preflight(
        &client,
        &catalog::Requirements {
            slot: &settings.slot,
            tables: &settings.tables,
        },
    )
    .await?;
    if !problems.is_empty() {
        return Err(replication::Error::Preflight { problems }.into());
    }
    let store = match settings.snapshot {
        SnapshotMode::InitialOnly => {
            catalog::ensure_publication(&client, &settings.publication, &settings.tables).await?;
            initial_snapshot(settings, true).await?;
            return Ok(SourceExit::CaughtUp);
        }
        SnapshotMode::Never => {
            catalog::ensure_publication(&client, &settings.publication, &settings.tables).await?;
            if catalog::ensure_slot(&client, &settings.slot).await? {
                tracing::info!(slot = %settings.slot, "created replication slot");
            }
            Store::load(
                &settings.lake,
                &settings.name,
                State::fresh(&settings.tables, SnapshotState::Skipped),
            )?
        }
        SnapshotMode::Initial if !catalog::slot_exists(&client, &settings.slot).await? => {
            catalog::ensure_publication(&client, &settings.publication, &settings.tables).await?;
            let store = Store::new(
                &settings.lake,
                &settings.name,
                State::fresh(&settings.tables, SnapshotState::Pending),
            );
            store.update(|_| ())?;
            let point = initial_snapshot(settings, false).await?;
            store.update(|s| {
                s.snapshot = SnapshotState::Done;
                s.consistent_point = Some(point.to_string());
            })?;
            store
        }
        SnapshotMode::Initial => {
            let store = Store::load(
                &settings.lake,
                &settings.name,
                State::fresh(&settings.tables, SnapshotState::Done),
            )?;
            let todo = catch_up_snapshots(settings, &store.get()).await?;
            snapshots::check_keys(
                &client,
                &todo.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| match (e, todo.iter().any(|(_, r)| *r == "resume")) {
                (PipelineError::Source(replication::Error::NoPrimaryKey { table }), true) => {
                    PipelineError::SnapshotInterrupted {
                        table,
                        slot: settings.slot.clone(),
                        lake: settings.lake.display().to_string(),
                    }
                }
                (e, _) => e,
            })?;
            catalog::ensure_publication(&client, &settings.publication, &settings.tables).await?;
            store.update(|s| {
                s.snapshot = SnapshotState::Done;
                snapshots::queue_catch_up(s, &settings.tables, &todo);
            })?;
            snapshots::log_queued(&todo);
            store
        }
    };
    let store = Arc::new(store);
    let until = if until_caught_up {
        Some(catalog::current_wal_lsn(&client).await?)
    } else {
        None
    };
    drop(client);
    with_retries(&cancel, || {
        session(settings, until, store.clone(), cancel.clone())
    })
    .await
}

/// Run sessions until one ends without a transient failure, waiting longer after each.
pub(crate) async fn with_retries<F, Fut>(
    cancel: &CancellationToken,
    mut session: F,
) -> Result<SourceExit, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<SourceExit, PipelineError>>,
{
    let mut backoff = BACKOFF.0;
    loop {
        match session().await {
            Ok(exit) => return Ok(exit),
            Err(e) if e.class() == ErrorClass::Transient && !cancel.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "transient failure, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Ok(SourceExit::Cancelled),
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Tables that need an incremental snapshot before streaming alone is enough (see
/// [`snapshots::catch_up`]; the initial load commits each table once, at consistent point
/// − 1, so a table without a position was not finished). Nothing is changed here.
async fn catch_up_snapshots(
    settings: &Settings,
    state: &State,
) -> Result<Vec<(TableName, &'static str)>, PipelineError> {
    let sink = DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
    Ok(snapshots::catch_up(
        state,
        &settings.tables,
        &sink.positions(),
    ))
}

/// One connection's worth of streaming, with the incremental snapshots beside it.
async fn session(
    settings: &Settings,
    until: Option<Lsn>,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let client = catalog::connect(&settings.conninfo).await?;
    let types = catalog::type_support(&client, &settings.tables).await?;
    if !types.binary {
        tracing::info!(columns = ?types.text_columns, "streaming in text mode for types without a binary decoder");
    }
    let wal_sender_timeout = catalog::wal_sender_timeout(&client).await?;
    drop(client);

    let sink = DeltaSink::open(
        &settings.lake,
        &settings.name,
        &settings.tables,
        settings.policies.clone(),
    )
    .await?;
    let mut committed = HashMap::new();
    let mut known = HashMap::new();
    for p in sink.positions() {
        if let Some(position) = p.position {
            tracing::info!(table = %p.table, %position, "resuming after durable position");
        }
        committed.insert((*p.table).clone(), p.snapshot_chunk);
        if let Some(shape) = p.shape {
            known.insert((*p.table).clone(), shape);
        }
    }
    let history = sink.history();
    let SinkHandle {
        tx,
        durable: durable_rx,
        chunks,
        task: sink_task,
    } = spawn_sink(sink, settings.max_inflight_bytes, settings.hub.clone());
    let (snapshots, link) = snapshots::session(
        snapshots::PgReader(settings.clone()),
        snapshots::Sizes {
            chunk_rows: settings.snapshot_chunk_rows,
            batch_rows: settings.max_batch_rows,
            inflight_bytes: settings.max_inflight_bytes,
        },
        settings.tables.clone(),
        store,
        committed,
        chunks,
    );
    history.set_resnapshot(snapshots.resnapshots());
    let options = SourceOptions {
        conninfo: settings.conninfo.clone(),
        slot: settings.slot.clone(),
        publication: settings.publication.clone(),
        limits: BatchLimits {
            max_rows: settings.max_batch_rows,
            max_bytes: settings.max_batch_bytes,
        },
        max_latency: settings.max_batch_latency,
        types,
        wal_sender_timeout,
        until,
        pipeline: settings.name.clone(),
        policies: settings.policies.clone(),
        known,
    };
    // The driver failing stops the source; the source ending stops the driver.
    let stop = cancel.child_token();
    let driver = snapshots.spawn(stop.clone());
    let source_result = source::run(options, tx, durable_rx, Some(link), stop.clone()).await;
    stop.cancel();
    let driver_result = driver.await.unwrap_or(Ok(()));
    // The source dropped its queue sender: the sink drains what is queued, then ends.
    let sink_result = join_sink(sink_task, &settings.lake).await;
    // A sink failure is the root cause when both fail (the source sees "sink stopped").
    sink_result?;
    driver_result?;
    Ok(source_result?)
}

pub(crate) type SinkTask = tokio::task::JoinHandle<Result<(), sinks::Error>>;

/// The last incremental-snapshot chunk the sink committed: table and chunk number.
pub(crate) type CommittedChunk = Option<(Arc<TableName>, u64)>;

/// The sink running on its own task behind a byte-bounded queue.
pub(crate) struct SinkHandle {
    pub tx: queue::Sender<Event>,
    /// The durable source position.
    pub durable: watch::Receiver<Lsn>,
    /// The last snapshot chunk committed. A chunk's position may equal the transaction's
    /// before it (MySQL places chunks at the boundary the stream stands at), so its
    /// durability is told by number, not by the durable position.
    pub chunks: watch::Receiver<CommittedChunk>,
    pub task: SinkTask,
}

/// Run the sink on its own task behind a byte-bounded queue; it publishes the durable position
/// and the chunks it committed.
///
/// Each event's commit position is published on `hub` once it is durable in every table:
/// the hub position W that hub sinks read up to (see `sinks::hub`).
pub(crate) fn spawn_sink(mut sink: DeltaSink, budget: usize, hub: HubPosition) -> SinkHandle {
    let (tx, mut rx) = queue::channel::<Event>(budget);
    let (durable_tx, durable) = watch::channel(Lsn::ZERO);
    let (chunks_tx, chunks) = watch::channel(None);
    let task = tokio::spawn(async move {
        while let Some((event, permit)) = rx.recv().await {
            let rows = event.rows();
            let chunk = match &event {
                Event::SnapshotChunk { table, chunk, .. } => Some((table.table.clone(), *chunk)),
                _ => None,
            };
            let commit = match &event {
                Event::Committed { commit_lsn, .. }
                | Event::StreamCommit { commit_lsn, .. }
                | Event::SnapshotCommit { commit_lsn, .. }
                | Event::SnapshotChunk { commit_lsn, .. } => Some(*commit_lsn),
                _ => None,
            };
            if let Some(end) = sink.apply(event).await? {
                tracing::debug!(rows, %end, "durable");
                durable_tx.send_replace(end);
                if let Some(commit) = commit {
                    hub.publish(commit);
                }
            }
            if chunk.is_some() {
                chunks_tx.send_replace(chunk);
            }
            drop(permit);
        }
        Ok::<_, sinks::Error>(())
    });
    SinkHandle {
        tx,
        durable,
        chunks,
        task,
    }
}

/// End a snapshot's stream to the sink: make it visible (`commit`: at `.0`, durable up to
/// `.1`) when the copy succeeded, then wait for the sink to finish.
pub(crate) async fn finish_snapshot(
    tx: queue::Sender<Event>,
    sink_task: SinkTask,
    lake: &std::path::Path,
    commit: Option<(Lsn, Lsn)>,
) -> Result<(), sinks::Error> {
    if let Some((commit_lsn, end_lsn)) = commit {
        let commit = Event::SnapshotCommit {
            commit_lsn,
            end_lsn,
        };
        if let Ok(permit) = tx.reserve(commit.memory_size()).await {
            let _ = tx.send(commit, permit);
        }
    }
    drop(tx);
    join_sink(sink_task, lake).await
}

pub(crate) async fn join_sink(task: SinkTask, lake: &std::path::Path) -> Result<(), sinks::Error> {
    match task.await {
        Ok(r) => r,
        Err(join) => Err(sinks::Error::Io {
            path: lake.display().to_string(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Create the slot with an exported snapshot and copy every table as of its consistent point;
/// the rows land as op `r`, one Delta commit per table. Returns the consistent point.
async fn initial_snapshot(settings: &Settings, temporary: bool) -> Result<Lsn, PipelineError> {
    let started = std::time::Instant::now();
    let client = catalog::connect(&settings.conninfo).await?;
    let types = catalog::type_support(&client, &settings.tables).await?;
    let exported = ExportedSnapshot::create(&settings.conninfo, &settings.slot, temporary).await?;
    let point = exported.consistent_point;
    tracing::info!(slot = %settings.slot, consistent_point = %point, tables = settings.tables.len(), "initial snapshot started");
    let plans = snapshot::plan(&client, &settings.tables, &types).await?;
    drop(client);
    let sink = DeltaSink::open(
        &settings.lake,
        &settings.name,
        &settings.tables,
        settings.policies.clone(),
    )
    .await?;
    let SinkHandle {
        tx,
        task: sink_task,
        ..
    } = spawn_sink(sink, settings.max_inflight_bytes, settings.hub.clone());
    // One below the consistent point: see replication::postgres::snapshot.
    let commit_lsn = Lsn(point.0.saturating_sub(1));
    let options = SnapshotOptions {
        conninfo: settings.conninfo.clone(),
        workers: settings.snapshot_workers,
        chunk_pages: settings.snapshot_chunk_pages,
        max_rows: settings.max_batch_rows.min(65_536),
        position: RowPosition {
            lsn: commit_lsn,
            seq: 0,
            commit_ts: now_micros(),
        },
    };
    let progress = Progress::new("snapshot");
    let tables: Vec<String> = plans.iter().map(|p| p.table().to_string()).collect();
    let counters = plans
        .iter()
        .zip(&tables)
        .map(|(plan, table)| progress.add(table, plan.estimate()))
        .collect();
    let stop_reporting = CancellationToken::new();
    let reporter = tokio::spawn(progress.clone().report(stop_reporting.clone()));
    let copied = snapshot::copy_tables(&exported, plans, &options, &tx, counters).await;
    stop_reporting.cancel();
    let _ = reporter.await;
    if copied.is_ok() {
        for table in &tables {
            progress.finish(table);
        }
    }
    let commit = copied.is_ok().then_some((commit_lsn, point));
    let sink_result = finish_snapshot(tx, sink_task, &settings.lake, commit).await;
    exported.close().await;
    sink_result?;
    let rows = copied?;
    tracing::info!(
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "initial snapshot done"
    );
    Ok(point)
}
