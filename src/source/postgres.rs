//! The PostgreSQL source as the core sees it: preflight, publication and slot, the initial
//! snapshot from the slot's exported snapshot, sessions of pgoutput streaming, and incremental
//! snapshot chunks bracketed by watermarks in the WAL.
//!
//! ```text
//!  prepare: preflight ─▶ publication ─▶ slot (created with an exported snapshot: initial load)
//!  session: type support, wal_sender_timeout ─▶ pgoutput stream from the slot's confirmed
//!           position, which the core moves (flush_lsn) only as far as the lake is durable
//! ```
//!
//! The slot keeps the resume position: a session restarts from its confirmed position and the
//! sink skips what each table already holds, so nothing is kept in the state file for it
//! (`Resume = Infallible`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use replication::cdc::now_micros;
use replication::change::TableName;
use replication::postgres::catalog::{self, TypeSupport};
use replication::postgres::incremental::{self, KeyedPlan};
use replication::postgres::snapshot::{self, ExportedSnapshot, SnapshotOptions};
use replication::postgres::source::{self, SourceOptions};
use replication::postgres::table::RowPosition;
use replication::source::{BatchLimits, SourceExit};
use replication::window::{ChunkRead, Marker, MarkerBody, SnapshotRequest, ToSource};
use replication::Lsn;
use sinks::delta::DeltaSink;
use tokio::sync::mpsc;

use crate::config::{Settings, SnapshotMode};
use crate::engine::incremental::{
    bad_predicate, catch_up, log_queued, queue_catch_up, ChunkJob, ChunkReader, Sizes,
};
use crate::engine::{InitialLoad, Opened, Pipeline, PipelineError, Prepared, Source, Stream};
use crate::progress::Progress;
use crate::source::slot_guard::SlotGuard;
use crate::state::{SnapshotState, State, Store};

/// What every session of a run streams until.
pub struct Plan {
    /// Stop once everything committed before this WAL position is durable.
    until: Option<Lsn>,
}

/// What one session read from the server before streaming.
pub struct Session {
    types: TypeSupport,
    wal_sender_timeout: Duration,
    until: Option<Lsn>,
}

impl Source for Settings {
    type Plan = Plan;
    type Session = Session;
    type Reader = PgReader;
    type Resume = Infallible;

    const MAILBOX: bool = false;

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
        let client = catalog::connect(&self.conninfo).await?;
        Ok(catalog::preflight(
            &client,
            &catalog::Requirements {
                slot: &self.slot,
                tables: &self.tables,
            },
        )
        .await?)
    }

    /// Prepare the publication and the slot (taking the initial snapshot when the slot is
    /// created), and queue the incremental snapshots a previous run left to do.
    async fn prepare(
        &self,
        until_caught_up: bool,
    ) -> Result<Option<Prepared<Plan>>, PipelineError> {
        let settings = self;
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
                catalog::ensure_publication(&client, &settings.publication, &settings.tables)
                    .await?;
                initial_snapshot(settings, true).await?;
                return Ok(None);
            }
            SnapshotMode::Never => {
                catalog::ensure_publication(&client, &settings.publication, &settings.tables)
                    .await?;
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
                catalog::ensure_publication(&client, &settings.publication, &settings.tables)
                    .await?;
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
                check_keys(
                    &client,
                    &todo.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
                )
                .await
                .map_err(|e| {
                    match (e, todo.iter().any(|(_, r)| *r == "resume")) {
                        (
                            PipelineError::Source(replication::Error::NoPrimaryKey { table }),
                            true,
                        ) => PipelineError::SnapshotInterrupted {
                            table,
                            slot: settings.slot.clone(),
                            lake: settings.lake.display().to_string(),
                        },
                        (e, _) => e,
                    }
                })?;
                catalog::ensure_publication(&client, &settings.publication, &settings.tables)
                    .await?;
                store.update(|s| {
                    s.snapshot = SnapshotState::Done;
                    queue_catch_up(s, &settings.tables, &todo);
                })?;
                log_queued(&todo);
                store
            }
        };
        let until = if until_caught_up {
            Some(catalog::current_wal_lsn(&client).await?)
        } else {
            None
        };
        Ok(Some(Prepared {
            store,
            plan: Plan { until },
        }))
    }

    async fn session(
        &self,
        plan: &Plan,
        _: &Store,
    ) -> Result<Opened<Session, Infallible>, PipelineError> {
        let client = catalog::connect(&self.conninfo).await?;
        // A lost slot can never stream again: say so, with how to recover, before trying.
        self.guard().check(&client, &mut None).await?;
        let types = catalog::type_support(&client, &self.tables).await?;
        if !types.binary {
            tracing::info!(columns = ?types.text_columns, "streaming in text mode for types without a binary decoder");
        }
        let wal_sender_timeout = catalog::wal_sender_timeout(&client).await?;
        let session = Session {
            types,
            wal_sender_timeout,
            until: plan.until,
        };
        Ok((session, None))
    }

    fn reader(&self, _: &Session) -> PgReader {
        PgReader(self.clone())
    }

    async fn stream(
        &self,
        session: Session,
        stream: Stream,
    ) -> Result<SourceExit, replication::Error> {
        let options = SourceOptions {
            conninfo: self.conninfo.clone(),
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            limits: BatchLimits {
                max_rows: self.max_batch_rows,
                max_bytes: self.max_batch_bytes,
            },
            max_latency: self.max_batch_latency,
            types: session.types,
            wal_sender_timeout: session.wal_sender_timeout,
            until: session.until,
            pipeline: self.name.clone(),
            policies: self.policies.clone(),
            known: stream.known,
            freshness: self.health.freshness.clone(),
        };
        // The guard may stop the stream (a lost slot); it stops when the stream ends.
        let source_stop = stream.stop.child_token();
        let guard_stop = stream.stop.child_token();
        let guard = tokio::spawn(self.guard().run(guard_stop.clone(), source_stop.clone()));
        let streamed = source::run(
            options,
            stream.tx,
            stream.durable,
            Some(stream.link),
            source_stop,
        )
        .await;
        guard_stop.cancel();
        if let Ok(Err(lost)) = guard.await {
            return Err(lost);
        }
        match streamed {
            // object_not_in_prerequisite_state: "can no longer get changes from replication
            // slot" when the slot was lost after this session's check; say how to recover.
            Err(replication::Error::Server { code, message }) if code == "55000" => {
                let client = catalog::connect(&self.conninfo).await?;
                self.guard().check(&client, &mut None).await?;
                Err(replication::Error::Server { code, message })
            }
            other => other,
        }
    }

    fn save_resume(_: &Store, resume: Infallible) -> Result<(), PipelineError> {
        match resume {}
    }

    /// The request travels through the WAL (a logical decoding message): the running pipeline
    /// finds it in its stream.
    async fn request_snapshot(
        &self,
        table: &TableName,
        filter: Option<&str>,
    ) -> Result<String, PipelineError> {
        let client = catalog::connect(&self.conninfo).await?;
        if !catalog::slot_exists(&client, &self.slot).await? {
            return Err(replication::Error::Preflight {
                problems: vec![format!(
                    "pipeline {} has not started yet (slot {} does not exist): its first run snapshots every table",
                    self.name, self.slot
                )],
            }
            .into());
        }
        check_keys(&client, std::slice::from_ref(table)).await?;
        if let Some(filter) = filter {
            incremental::check_filter(&client, table, filter)
                .await
                .map_err(|e| bad_predicate(table, &e))?;
        }
        let marker = Marker {
            pipeline: self.name.clone(),
            body: MarkerBody::Request(SnapshotRequest {
                table: table.to_string(),
                filter: filter.map(str::to_string),
            }),
        };
        let lsn = incremental::emit(&client, &marker).await?;
        Ok(format!(
            "requested at {lsn}; the running pipeline takes it up (or its next run)"
        ))
    }
}

impl Settings {
    /// The slot's heartbeat writer and WAL guard.
    fn guard(&self) -> SlotGuard {
        SlotGuard {
            conninfo: self.conninfo.clone(),
            slot: self.slot.clone(),
            heartbeat: self.heartbeat,
            warn_share: self.wal_warn_share,
            health: self.health.clone(),
            state: crate::state::path(&self.lake, &self.name)
                .display()
                .to_string(),
        }
    }
}

/// Tables that need an incremental snapshot before streaming alone is enough (see
/// [`catch_up`]; the initial load commits each table once, at consistent point
/// − 1, so a table without a position was not finished). Nothing is changed here.
async fn catch_up_snapshots(
    settings: &Settings,
    state: &State,
) -> Result<Vec<(TableName, &'static str)>, PipelineError> {
    let sink = DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
    Ok(catch_up(state, &settings.tables, &sink.positions()))
}

/// Create the slot with an exported snapshot and copy every table as of its consistent point;
/// the rows land as op `r`, one Delta commit per table. Returns the consistent point.
async fn initial_snapshot(settings: &Settings, temporary: bool) -> Result<Lsn, PipelineError> {
    let started = Instant::now();
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
    let mut load = InitialLoad::start(&settings.pipeline(), sink, progress, started);
    let copied = snapshot::copy_tables(&exported, plans, &options, load.tx(), counters).await;
    load.stop_reporting().await;
    if copied.is_ok() {
        for table in &tables {
            load.progress().finish(table);
        }
    }
    load.end(copied, (commit_lsn, point), exported.close())
        .await?;
    Ok(point)
}

/// Refuse tables an incremental snapshot cannot read (no primary key), before anything is
/// created.
async fn check_keys(
    client: &tokio_postgres::Client,
    tables: &[TableName],
) -> Result<(), PipelineError> {
    for table in tables {
        if incremental::primary_key(client, table).await?.is_empty() {
            return Err(replication::Error::NoPrimaryKey {
                table: table.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// PostgreSQL: each read is bracketed by watermarks written into the WAL.
pub struct PgReader(Settings);

/// One PostgreSQL table's chunks.
pub struct PgJob {
    client: tokio_postgres::Client,
    types: TypeSupport,
    plan: KeyedPlan,
    pipeline: String,
}

impl ChunkReader for PgReader {
    type Job = PgJob;

    async fn begin(&self, table: &TableName) -> Result<PgJob, PipelineError> {
        let client = catalog::connect(&self.0.conninfo).await?;
        let types = catalog::type_support(&client, std::slice::from_ref(table)).await?;
        let plan = incremental::plan(&client, table, &types).await?;
        Ok(PgJob {
            client,
            types,
            plan,
            pipeline: self.0.name.clone(),
        })
    }
}

impl PgJob {
    async fn mark(&self, body: MarkerBody) -> Result<(), PipelineError> {
        let marker = Marker {
            pipeline: self.pipeline.clone(),
            body,
        };
        incremental::emit(&self.client, &marker).await?;
        Ok(())
    }
}

impl ChunkJob for PgJob {
    fn table(&self) -> (Arc<TableName>, Vec<String>) {
        (self.plan.table().clone(), self.plan.key_names())
    }

    fn estimate(&self) -> u64 {
        self.plan.estimate()
    }

    async fn replan(&mut self) -> Result<(), PipelineError> {
        let table = (**self.plan.table()).clone();
        self.plan = incremental::plan(&self.client, &table, &self.types).await?;
        Ok(())
    }

    async fn open(
        &mut self,
        id: u64,
        _: &mpsc::UnboundedSender<ToSource>,
    ) -> Result<bool, PipelineError> {
        self.mark(MarkerBody::Low { id }).await?;
        Ok(true)
    }

    async fn read(
        &mut self,
        after: Option<&[String]>,
        filter: Option<&str>,
        size: usize,
        max_rows: usize,
    ) -> Result<(ChunkRead, Option<Lsn>), PipelineError> {
        let read = incremental::read_chunk(&self.client, &self.plan, after, filter, size, max_rows)
            .await?;
        Ok((read, None))
    }

    async fn close(&mut self, id: u64) -> Result<(), PipelineError> {
        self.mark(MarkerBody::High { id }).await
    }
}
