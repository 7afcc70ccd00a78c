//! The MySQL/MariaDB pipeline: preflight, where to start reading the binlog, sessions with
//! retries, and the resume position kept in the state file.
//!
//! ```text
//!  binlog source ──queue──▶ Delta sink ──durable position──▶ source
//!        │ resume position (durable, or the last boundary when idle)
//!        ▼
//!  <lake>/_sluice_state/<pipeline>.json  (written at most every second, and at the end)
//! ```
//!
//! Exactly once: each Delta commit carries the packed binlog position of its last transaction
//! as the `txn` version; the stream resumes at or before every table's position, and the sink
//! drops what a table already holds. The state file only saves re-reading: lose it, and the
//! next run starts from the oldest table position instead.

use std::sync::Arc;
use std::time::Duration;

use replication::mysql::catalog;
use replication::mysql::position::BinlogPosition;
use replication::mysql::source::{self as binlog, MySourceOptions, Resume};
use replication::source::{BatchLimits, SourceExit};
use sinks::delta::DeltaSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use replication::cdc::{now_micros, RowPosition};
use replication::change::TableName;
use replication::mysql::snapshot::{self as my_snapshot, Consistent};

use crate::config::{MySettings, SnapshotMode};
use crate::pipeline::{
    finish_snapshot, join_sink, spawn_sink, with_retries, PipelineError, SinkHandle,
};
use crate::progress::Progress;
use crate::snapshots::{self, MyReader, Sizes};
use crate::state::{SnapshotState, State, Store};

/// How often the resume position is written while it moves.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Every problem that would stop replication, each with its fix.
pub async fn check(settings: &MySettings) -> Result<Vec<String>, PipelineError> {
    let mut conn = catalog::connect(&settings.info).await?;
    Ok(catalog::preflight(
        &mut conn,
        &settings.info.user,
        &settings.tables,
        settings.server_id,
    )
    .await?)
}

/// Stream the binlog into the lake until cancelled, caught up, or a definite error.
pub async fn run(
    settings: &MySettings,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let mut conn = catalog::connect(&settings.info).await?;
    let problems = catalog::preflight(
        &mut conn,
        &settings.info.user,
        &settings.tables,
        settings.server_id,
    )
    .await?;
    if !problems.is_empty() {
        return Err(replication::Error::Preflight { problems }.into());
    }
    let server = catalog::server(&mut conn).await?;
    let charsets = catalog::charsets(&mut conn).await?;
    let (current, current_executed) = catalog::current_position_gtids(&mut conn).await?;
    let store = Store::load(
        &settings.lake,
        &settings.name,
        State::fresh(&settings.tables, SnapshotState::Skipped),
    )?;
    let state = store.get();
    // An interrupted initial load is finished by incremental snapshots beside the stream; with
    // initial_only there is no stream, so its unfinished tables are copied again instead.
    let interrupted =
        state.snapshot == SnapshotState::Pending && settings.snapshot != SnapshotMode::InitialOnly;
    let first_run = state.binlog.is_none() && !interrupted;
    let snapshotted = first_run && settings.snapshot != SnapshotMode::Never;
    let mut queued = Vec::new();
    // MySQL's executed GTID set as of `start`, when it is known (read with it).
    let mut start_executed = None;
    let start = if snapshotted {
        store.update(|s| s.snapshot = SnapshotState::Pending)?;
        let (start, executed) = initial_snapshot(settings, server.mariadb, None).await?;
        if settings.snapshot == SnapshotMode::InitialOnly {
            store.update(|s| {
                s.snapshot = SnapshotState::Done;
                s.binlog = Some(start);
            })?;
            return Ok(SourceExit::CaughtUp);
        }
        start_executed = executed;
        start
    } else {
        let sink =
            DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
        let positions = sink.positions();
        let start = match &state.binlog {
            Some(p) if !interrupted => p.clone(),
            // No position kept: the oldest table position if the lake has any, else now.
            _ => match positions.iter().filter_map(|p| p.position).min() {
                Some(lsn) => BinlogPosition::unpack(lsn, &current.file),
                None => {
                    start_executed = current_executed;
                    current.clone()
                }
            },
        };
        let todo = if settings.snapshot == SnapshotMode::Never {
            Vec::new()
        } else {
            snapshots::catch_up(&state, &settings.tables, &positions)
        };
        // Tables with a primary key are snapshotted in chunks beside the stream; the others
        // are copied now, at a fresh consistent position (the sink skips their binlog changes
        // up to it).
        let mut keyless = Vec::new();
        for (table, reason) in todo {
            match my_snapshot::plan(&mut conn, &table).await {
                Ok(_) => queued.push((table, reason)),
                Err(replication::Error::NoPrimaryKey { .. }) => keyless.push(table),
                Err(e) => return Err(e.into()),
            }
        }
        if !keyless.is_empty() {
            initial_snapshot(settings, server.mariadb, Some(&keyless)).await?;
        }
        start
    };
    let logs = catalog::binary_logs(&mut conn).await?;
    if !logs.contains(&start.file) {
        return Err(replication::Error::BinlogPurged {
            file: start.file.clone(),
            position: start.to_string(),
            state: crate::state::path(&settings.lake, &settings.name)
                .display()
                .to_string(),
        }
        .into());
    }
    store.update(|s| {
        if s.binlog.as_ref() != Some(&start) {
            // A position found here (snapshot, table positions, now) has no MariaDB GTID set;
            // MySQL's executed set is known when it was read with the position.
            s.binlog_gtid = None;
            s.binlog_gtid_executed = start_executed.clone();
        }
        if snapshotted || interrupted {
            s.snapshot = SnapshotState::Done;
        }
        s.binlog = Some(start.clone());
        snapshots::queue_catch_up(s, &settings.tables, &queued);
    })?;
    snapshots::log_queued(&queued);
    drop(conn);
    tracing::info!(server = %server.version, mariadb = server.mariadb, position = %start, "starting from binlog position");
    let until = if until_caught_up {
        current.packed()
    } else {
        None
    };
    let store = Arc::new(store);
    let options = MySourceOptions {
        info: settings.info.clone(),
        server_id: settings.server_id,
        mariadb: server.mariadb,
        checksum: server.checksum,
        tables: settings.tables.clone(),
        start,
        start_gtid: None,
        start_executed: None,
        charsets,
        limits: BatchLimits {
            max_rows: settings.max_batch_rows,
            max_bytes: settings.max_batch_bytes,
        },
        max_latency: settings.max_batch_latency,
        until,
        policies: settings.policies.clone(),
        known: std::collections::HashMap::new(),
    };
    with_retries(&cancel, || {
        session(settings, options.clone(), store.clone(), cancel.clone())
    })
    .await
}

/// Check a `sluice snapshot` request (the pipeline has started, the table has a usable key,
/// the predicate is valid) and leave it in the pipeline's request mailbox.
pub async fn request_snapshot(
    settings: &MySettings,
    table: &TableName,
    filter: Option<&str>,
) -> Result<(), PipelineError> {
    let started = State::load(&settings.lake, &settings.name)
        .map_err(|e| PipelineError::state(&settings.lake, e))?
        .is_some_and(|s| s.binlog.is_some());
    if !started {
        return Err(replication::Error::Preflight {
            problems: vec![format!(
                "pipeline {} has not started yet: its first run snapshots every table",
                settings.name
            )],
        }
        .into());
    }
    let mut conn = catalog::connect(&settings.info).await?;
    my_snapshot::plan(&mut conn, table).await?;
    if let Some(predicate) = filter {
        my_snapshot::check_filter(&mut conn, table, predicate)
            .await
            .map_err(|e| snapshots::bad_predicate(table, &e))?;
    }
    let request = replication::window::SnapshotRequest {
        table: table.to_string(),
        filter: filter.map(str::to_string),
    };
    crate::state::post_request(&settings.lake, &settings.name, &request)
        .map_err(|e| PipelineError::state(&settings.lake, e))?;
    Ok(())
}

/// Copy the tables a previous run did not finish (all of them on a first run; of `only`, when
/// given) at one consistent binlog position; each table commits once, at that position.
/// Returns where streaming starts: the oldest position any table was copied at, so a table
/// finished by an interrupted earlier run misses nothing (the sink skips what each table
/// already holds); with MySQL's executed GTID set when that is the snapshot's position.
async fn initial_snapshot(
    settings: &MySettings,
    mariadb: bool,
    only: Option<&[TableName]>,
) -> Result<(BinlogPosition, Option<String>), PipelineError> {
    let started = std::time::Instant::now();
    let sink = DeltaSink::open(
        &settings.lake,
        &settings.name,
        &settings.tables,
        settings.policies.clone(),
    )
    .await?;
    let done: Vec<_> = sink
        .positions()
        .into_iter()
        .filter_map(|p| p.position.map(|at| ((*p.table).clone(), at)))
        .collect();
    let todo: Vec<_> = settings
        .tables
        .iter()
        .filter(|t| !done.iter().any(|(d, _)| d == *t))
        .filter(|t| only.is_none_or(|only| only.contains(t)))
        .cloned()
        .collect();
    let mut snapshot = Consistent::begin(&settings.info, mariadb).await?;
    let position = snapshot.position.clone();
    let executed = snapshot.executed.clone();
    let packed = position.packed().ok_or_else(|| {
        replication::Error::Protocol(format!("binlog position {position} cannot be ordered"))
    })?;
    tracing::info!(%position, tables = todo.len(), "initial snapshot started");
    let SinkHandle {
        tx,
        task: sink_task,
        ..
    } = spawn_sink(sink, settings.max_inflight_bytes, settings.hub.clone());
    let progress = Progress::new("snapshot");
    let stop_reporting = CancellationToken::new();
    let reporter = tokio::spawn(progress.clone().report(stop_reporting.clone()));
    let row_position = RowPosition {
        lsn: packed,
        seq: 0,
        commit_ts: now_micros(),
    };
    let mut copied = Ok(0u64);
    for table in &todo {
        let counter = progress.add(&table.to_string(), 0);
        let rows = snapshot
            .copy_table(
                table,
                settings.max_batch_rows.min(65_536),
                row_position,
                &tx,
                &counter,
            )
            .await;
        match rows {
            Ok(n) => {
                progress.finish(&table.to_string());
                copied = copied.map(|c| c + n);
            }
            Err(e) => {
                copied = Err(e);
                break;
            }
        }
    }
    stop_reporting.cancel();
    let _ = reporter.await;
    let commit = copied.is_ok().then_some((packed, packed));
    let sink_result = finish_snapshot(tx, sink_task, &settings.lake, commit).await;
    snapshot.close().await;
    sink_result?;
    let rows = copied?;
    tracing::info!(
        rows,
        seconds = started.elapsed().as_secs_f64(),
        "initial snapshot done"
    );
    let oldest = done.iter().map(|(_, at)| *at).min();
    Ok(match oldest {
        Some(at) if at < packed => (BinlogPosition::unpack(at, &position.file), None),
        _ => (position, executed),
    })
}

/// One binlog connection's worth of streaming, from the last saved resume position.
async fn session(
    settings: &MySettings,
    mut options: MySourceOptions,
    store: Arc<Store>,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let state = store.get();
    if let Some(p) = state.binlog {
        options.start = p;
        options.start_gtid = state.binlog_gtid;
        options.start_executed = state.binlog_gtid_executed;
    }
    let sink = DeltaSink::open(
        &settings.lake,
        &settings.name,
        &settings.tables,
        settings.policies.clone(),
    )
    .await?;
    let positions = sink.positions();
    let committed = positions
        .iter()
        .map(|p| ((*p.table).clone(), p.snapshot_chunk))
        .collect();
    options.known = positions
        .into_iter()
        .filter_map(|p| Some(((*p.table).clone(), p.shape?)))
        .collect();
    let history = sink.history();
    let SinkHandle {
        tx,
        durable,
        chunks,
        task: sink_task,
    } = spawn_sink(sink, settings.max_inflight_bytes, settings.hub.clone());
    let (snapshots, link) = snapshots::session(
        MyReader {
            settings: settings.clone(),
            mariadb: options.mariadb,
        },
        Sizes {
            chunk_rows: settings.snapshot_chunk_rows,
            batch_rows: settings.max_batch_rows,
            inflight_bytes: settings.max_inflight_bytes,
        },
        settings.tables.clone(),
        store.clone(),
        committed,
        chunks,
    );
    let snapshots = snapshots.with_mailbox(&settings.lake, &settings.name);
    history.set_resnapshot(snapshots.resnapshots());
    let (resume_tx, resume_rx) = watch::channel(Resume {
        position: options.start.clone(),
        gtid: options.start_gtid.clone(),
        executed: options.start_executed.clone(),
    });
    let saver = tokio::spawn(save_resume(resume_rx.clone(), store.clone()));
    // The driver failing stops the source; the source ending stops the driver.
    let stop = cancel.child_token();
    let driver = snapshots.spawn(stop.clone());
    let source_result =
        binlog::run(options, tx, durable, resume_tx, Some(link), stop.clone()).await;
    stop.cancel();
    let driver_result = driver.await.unwrap_or(Ok(()));
    let sink_result = join_sink(sink_task, &settings.lake).await;
    saver.abort();
    let _ = saver.await;
    // The last position, whatever the outcome: it is never past what is durable.
    let last = resume_rx.borrow().clone();
    save(&store, last)?;
    sink_result?;
    driver_result?;
    Ok(source_result?)
}

/// Record where a restart resumes (and its GTID set), unless it is already recorded.
fn save(store: &Store, resume: Resume) -> Result<(), PipelineError> {
    if store.get().binlog.as_ref() == Some(&resume.position) {
        return Ok(());
    }
    store.update(|s| {
        s.binlog = Some(resume.position);
        s.binlog_gtid = resume.gtid;
        s.binlog_gtid_executed = resume.executed;
    })
}

/// Write the resume position as it moves, at most every [`SAVE_EVERY`].
async fn save_resume(mut resume: watch::Receiver<Resume>, store: Arc<Store>) {
    while resume.changed().await.is_ok() {
        let position = resume.borrow_and_update().clone();
        if let Err(e) = save(&store, position) {
            tracing::warn!(error = %e, "saving the binlog position");
        }
        tokio::time::sleep(SAVE_EVERY).await;
    }
}
