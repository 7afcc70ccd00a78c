//! The MySQL/MariaDB source as the core sees it: preflight, where to start reading the binlog,
//! the initial snapshot at one consistent binlog position, sessions of binlog streaming, and
//! the resume position kept in the state file.
//!
//! ```text
//!  binlog source ──queue──▶ Delta sink ──durable position──▶ source
//!        │ resume position (durable, or the last boundary when idle)
//!        ▼
//!  <lake>/_sluice_state/<pipeline>.json  (written by the core at most every second, and at
//!                                         the end of every session)
//! ```
//!
//! Exactly once: each Delta commit carries the packed binlog position of its last transaction
//! as the `txn` version; the stream resumes at or before every table's position, and the sink
//! drops what a table already holds. The state file only saves re-reading: lose it, and the
//! next run starts from the oldest table position instead.

use std::sync::Arc;
use std::time::Instant;

use replication::cdc::{now_micros, RowPosition};
use replication::change::TableName;
use replication::mysql::catalog;
use replication::mysql::position::BinlogPosition;
use replication::mysql::snapshot::{self as my_snapshot, Consistent, KeyPlan};
use replication::mysql::source::{self as binlog, MySourceOptions, Resume};
use replication::source::{BatchLimits, SourceExit};
use replication::window::{ChunkRead, ToSource};
use replication::Lsn;
use sinks::delta::DeltaSink;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{MySettings, SnapshotMode};
use crate::engine::incremental::{
    bad_predicate, catch_up, log_queued, queue_catch_up, ChunkJob, ChunkReader, Sizes,
};
use crate::engine::{InitialLoad, Opened, Pipeline, PipelineError, Prepared, Source, Stream};
use crate::progress::Progress;
use crate::state::{SnapshotState, State, Store};

/// One binlog connection's options, and where it reports the resume position.
pub struct Session {
    options: MySourceOptions,
    resume: watch::Sender<Resume>,
}

impl Source for MySettings {
    type Plan = MySourceOptions;
    type Session = Session;
    type Reader = MyReader;
    type Resume = Resume;

    const MAILBOX: bool = true;
    const RESUME: &'static str = "binlog position";

    fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            name: &self.name,
            lake: &self.lake,
            tables: &self.tables,
            policies: &self.policies,
            max_inflight_bytes: self.max_inflight_bytes,
            hub: &self.hub,
            health: &self.health,
            sizes: Sizes {
                chunk_rows: self.snapshot_chunk_rows,
                batch_rows: self.max_batch_rows,
                inflight_bytes: self.max_inflight_bytes,
            },
        }
    }

    async fn check(&self) -> Result<Vec<String>, PipelineError> {
        let mut conn = catalog::connect(&self.info).await?;
        Ok(catalog::preflight(&mut conn, &self.info.user, &self.tables, self.server_id).await?)
    }

    /// Decide where the binlog is read from: the saved resume position, else the oldest table
    /// position, else now after an initial snapshot (or without one); copy now the tables an
    /// incremental snapshot cannot (no primary key) and queue the others.
    async fn prepare(
        &self,
        until_caught_up: bool,
    ) -> Result<Option<Prepared<MySourceOptions>>, PipelineError> {
        let settings = self;
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
        let interrupted = state.snapshot == SnapshotState::Pending
            && settings.snapshot != SnapshotMode::InitialOnly;
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
                return Ok(None);
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
                catch_up(&state, &settings.tables, &positions)
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
            queue_catch_up(s, &settings.tables, &queued);
        })?;
        log_queued(&queued);
        drop(conn);
        tracing::info!(server = %server.version, mariadb = server.mariadb, position = %start, "starting from binlog position");
        let until = if until_caught_up {
            current.packed()
        } else {
            None
        };
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
            freshness: settings.health.freshness.clone(),
        };
        Ok(Some(Prepared {
            store,
            plan: options,
        }))
    }

    /// The session starts from the last saved resume position.
    async fn session(
        &self,
        plan: &MySourceOptions,
        store: &Store,
    ) -> Result<Opened<Session, Resume>, PipelineError> {
        let mut options = plan.clone();
        let state = store.get();
        if let Some(p) = state.binlog {
            options.start = p;
            options.start_gtid = state.binlog_gtid;
            options.start_executed = state.binlog_gtid_executed;
        }
        let (resume, resume_rx) = watch::channel(Resume {
            position: options.start.clone(),
            gtid: options.start_gtid.clone(),
            executed: options.start_executed.clone(),
        });
        Ok((Session { options, resume }, Some(resume_rx)))
    }

    fn reader(&self, session: &Session) -> MyReader {
        MyReader {
            settings: self.clone(),
            mariadb: session.options.mariadb,
        }
    }

    async fn stream(
        &self,
        session: Session,
        stream: Stream,
    ) -> Result<SourceExit, replication::Error> {
        let Session {
            mut options,
            resume,
        } = session;
        options.known = stream.known;
        binlog::run(
            options,
            stream.tx,
            stream.durable,
            resume,
            Some(stream.link),
            stream.stop,
        )
        .await
    }

    /// Record where a restart resumes (and its GTID set), unless it is already recorded.
    fn save_resume(store: &Store, resume: Resume) -> Result<(), PipelineError> {
        if store.get().binlog.as_ref() == Some(&resume.position) {
            return Ok(());
        }
        store.update(|s| {
            s.binlog = Some(resume.position);
            s.binlog_gtid = resume.gtid;
            s.binlog_gtid_executed = resume.executed;
        })
    }

    /// The request is left in the lake's request mailbox, which the running pipeline looks at
    /// every second.
    async fn request_snapshot(
        &self,
        table: &TableName,
        filter: Option<&str>,
    ) -> Result<String, PipelineError> {
        let settings = self;
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
                .map_err(|e| bad_predicate(table, &e))?;
        }
        let request = replication::window::SnapshotRequest {
            table: table.to_string(),
            filter: filter.map(str::to_string),
        };
        crate::state::post_request(&settings.lake, &settings.name, &request)
            .map_err(|e| PipelineError::state(&settings.lake, e))?;
        Ok("requested; the running pipeline takes it up within a second (or its next run)".into())
    }
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
    let started = Instant::now();
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
    let load = InitialLoad::start(
        &settings.pipeline(),
        sink,
        Progress::new("snapshot"),
        started,
    );
    let row_position = RowPosition {
        lsn: packed,
        seq: 0,
        commit_ts: now_micros(),
    };
    let mut copied = Ok(0u64);
    for table in &todo {
        let counter = load.progress().add(&table.to_string(), 0);
        let rows = snapshot
            .copy_table(
                table,
                settings.max_batch_rows.min(65_536),
                row_position,
                load.tx(),
                &counter,
            )
            .await;
        match rows {
            Ok(n) => {
                load.progress().finish(&table.to_string());
                copied = copied.map(|c| c + n);
            }
            Err(e) => {
                copied = Err(e);
                break;
            }
        }
    }
    load.end(copied, (packed, packed), snapshot.close()).await?;
    let oldest = done.iter().map(|(_, at)| *at).min();
    Ok(match oldest {
        Some(at) if at < packed => (BinlogPosition::unpack(at, &position.file), None),
        _ => (position, executed),
    })
}

/// MySQL/MariaDB: each chunk is read in a consistent snapshot of its own, whose binlog
/// position places it in the stream.
pub struct MyReader {
    settings: MySettings,
    mariadb: bool,
}

/// One MySQL/MariaDB table's chunks.
pub struct MyJob {
    snapshot: Consistent,
    plan: KeyPlan,
}

impl ChunkReader for MyReader {
    type Job = MyJob;

    async fn begin(&self, table: &TableName) -> Result<MyJob, PipelineError> {
        let mut snapshot = Consistent::begin(&self.settings.info, self.mariadb).await?;
        let plan = snapshot.plan(table).await?;
        snapshot.release().await?;
        Ok(MyJob { snapshot, plan })
    }
}

impl ChunkJob for MyJob {
    fn table(&self) -> (Arc<TableName>, Vec<String>) {
        (self.plan.shape.table.clone(), self.plan.key_names())
    }

    fn estimate(&self) -> u64 {
        self.plan.estimate
    }

    async fn replan(&mut self) -> Result<(), PipelineError> {
        let table = (*self.plan.shape.table).clone();
        self.plan = self.snapshot.plan(&table).await?;
        Ok(())
    }

    async fn open(
        &mut self,
        _: u64,
        to_source: &mpsc::UnboundedSender<ToSource>,
    ) -> Result<bool, PipelineError> {
        // The read's snapshot must start after the source opened the window.
        let (ping, pong) = oneshot::channel();
        if to_source.send(ToSource::Ping(ping)).is_err() {
            return Ok(false);
        }
        Ok(pong.await.is_ok())
    }

    async fn read(
        &mut self,
        after: Option<&[String]>,
        filter: Option<&str>,
        size: usize,
        max_rows: usize,
    ) -> Result<(ChunkRead, Option<Lsn>), PipelineError> {
        self.snapshot.renew().await?;
        let at = self.snapshot.position.packed().ok_or_else(|| {
            replication::Error::Protocol(format!(
                "binlog position {} cannot be ordered",
                self.snapshot.position
            ))
        })?;
        let position = RowPosition {
            lsn: at,
            seq: 0,
            commit_ts: now_micros(),
        };
        let read = self
            .snapshot
            .read_chunk(&self.plan, after, filter, size, max_rows, position)
            .await?;
        self.snapshot.release().await?;
        Ok((read, Some(at)))
    }

    async fn close(&mut self, _: u64) -> Result<(), PipelineError> {
        Ok(())
    }
}
