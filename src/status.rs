//! `sluice status`: what a pipeline's source, tables, snapshots, schema changes and hub sinks
//! look like now, gathered once into a [`Report`] and printed as text lines or, with
//! `--json`, as one JSON document (the same facts; its fields are documented in the README,
//! "sluice status --json").
//!
//! Gathering reads the source (slot or binlog position), the lake (table positions, schema
//! history, snapshot state) and each hub sink's cursor and stats file; it never writes.

use std::path::Path;

use replication::change::TableName;
use replication::Lsn;
use serde::Serialize;
use sinks::delta::{DeltaSink, SchemaHistory};
use sinks::http::DestinationStats;

use crate::engine::PipelineError;
use crate::state::{SnapshotState, State};

/// Everything `sluice status` shows.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `[pipeline] name`.
    pub pipeline: String,
    /// The source's position and lag.
    pub source: SourceStatus,
    /// The initial snapshot (PostgreSQL; MySQL/MariaDB pipelines report their snapshots
    /// as incremental ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_snapshot: Option<InitialSnapshot>,
    /// Incremental snapshots queued or running.
    pub incremental_snapshots: Vec<IncrementalSnapshot>,
    /// `sluice snapshot` requests not yet taken by the running pipeline (MySQL/MariaDB).
    pub snapshot_requests_waiting: usize,
    /// One per table of the pipeline.
    pub tables: Vec<TableStatus>,
    /// Schema changes the pipeline followed, oldest first.
    pub schema_changes: Vec<SchemaChange>,
    /// One per hub sink (webhook, REST).
    pub sinks: Vec<SinkStatus>,
}

/// The source's side.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceStatus {
    /// A replication slot.
    Postgres {
        /// Its name.
        slot: String,
        /// Whether it exists yet (it is created by the first `sluice run`).
        created: bool,
        /// Position confirmed durable (`0/16B3748`).
        confirmed_flush: Option<String>,
        /// WAL bytes the slot holds beyond what was confirmed.
        lag_bytes: Option<i64>,
        /// Whether a consumer is connected.
        streaming: bool,
    },
    /// A binlog position.
    Mysql {
        /// The server's current position (`binlog.000003:1234`).
        server_position: String,
        /// Where the pipeline resumes (`None`: not started).
        resume_position: Option<String>,
        /// Binlog bytes after the resume position (across rotated files), while its file exists.
        lag_bytes: Option<u64>,
    },
}

/// The initial snapshot's state.
#[derive(Debug, Serialize)]
pub struct InitialSnapshot {
    /// `pending` (in progress or interrupted), `done`, `skipped` (`snapshot = never`),
    /// `none` (no state yet) or `unreadable`.
    pub state: &'static str,
    /// The slot's consistent point it was taken at.
    pub consistent_point: Option<String>,
    /// Why the state file could not be read (`state = "unreadable"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One incremental snapshot.
#[derive(Debug, Serialize)]
pub struct IncrementalSnapshot {
    /// `schema.table`.
    pub table: String,
    /// `added`, `resume` or `requested`.
    pub reason: String,
    /// Only rows matching a `--where` predicate.
    pub filtered: bool,
    /// `queued` or `in progress`.
    pub state: &'static str,
    /// Last chunk committed to the table.
    pub committed_chunk: Option<u64>,
}

/// One table's Delta changelog.
#[derive(Debug, Serialize)]
pub struct TableStatus {
    /// `schema.table`.
    pub table: String,
    /// Delta table version (`None`: not created yet).
    pub delta_version: Option<u64>,
    /// Last source position committed to it, as text (`0/16B3748`, `binlog.000003:1234`).
    pub position: Option<String>,
    /// The Delta table's directory.
    pub path: String,
}

/// A schema change followed.
#[derive(Debug, Serialize)]
pub struct SchemaChange {
    /// `schema.table`.
    pub table: String,
    /// Source position of the first row with the new shape.
    pub position: String,
    /// The changes, in words (`changed qty from integer to long`).
    pub changes: String,
    /// What the pipeline did.
    pub action: String,
}

/// One hub sink.
#[derive(Debug, Serialize)]
pub struct SinkStatus {
    /// `[[sinks]] name`.
    pub name: String,
    /// Why its cursor could not be read (the other fields are then zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its cursor: the position of the last change delivered or parked.
    pub cursor: CursorPosition,
    /// Changes in the changelog after the cursor, up to the hub position.
    pub lag_changes: u64,
    /// Now minus the commit time of the oldest of them (0 when caught up).
    pub lag_seconds: f64,
    /// Changes delivered so far.
    pub delivered: u64,
    /// Changes parked in its dead-letter table so far.
    pub parked: u64,
    /// The hub position: the changelog is complete up to it.
    pub hub_position: u64,
    /// Whether a process is delivering for it now (its stats file is fresh).
    pub running: bool,
    /// Its traffic since it started, while running.
    pub traffic: Option<DestinationStats>,
}

/// A sink cursor's position.
#[derive(Debug, Default, Serialize)]
pub struct CursorPosition {
    /// Commit position (the changelog's `_sluice_lsn`).
    pub lsn: u64,
    /// Ordinal in the transaction.
    pub seq: i64,
}

impl Report {
    /// The lake-side facts of a pipeline of `tables` (everything but the source), with
    /// `position` rendering a changelog position for the source kind.
    pub async fn gather(
        lake: &Path,
        pipeline: &str,
        tables: &[TableName],
        source: SourceStatus,
        state: &Result<Option<State>, String>,
        sinks: &[crate::hub::HubSinkSettings],
        position: impl Fn(Lsn) -> String,
    ) -> Result<Report, PipelineError> {
        let positions = DeltaSink::open_read_only(lake, pipeline, tables)
            .await?
            .positions();
        let incremental_snapshots = match state {
            Ok(Some(state)) => state
                .incremental
                .iter()
                .map(|job| {
                    let committed = positions
                        .iter()
                        .find(|p| p.table.to_string() == job.table)
                        .and_then(|p| p.snapshot_chunk);
                    let started = job.chunks.iter().any(|c| Some(c.chunk) <= committed);
                    IncrementalSnapshot {
                        table: job.table.clone(),
                        reason: job.reason.clone(),
                        filtered: job.filter.is_some(),
                        state: if started { "in progress" } else { "queued" },
                        committed_chunk: committed.filter(|_| started),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let tables = positions
            .iter()
            .map(|p| TableStatus {
                table: p.table.to_string(),
                delta_version: p.delta_version,
                position: p.position.map(&position),
                path: p.path.display().to_string(),
            })
            .collect();
        let schema_changes = SchemaHistory::records(lake)
            .await?
            .into_iter()
            .filter(|r| r.pipeline == pipeline)
            .map(|r| SchemaChange {
                table: r.table,
                position: position(r.position),
                changes: r.changes,
                action: r.action,
            })
            .collect();
        Ok(Report {
            pipeline: pipeline.to_string(),
            source,
            initial_snapshot: None,
            incremental_snapshots,
            snapshot_requests_waiting: crate::state::mailbox_requests(lake, pipeline)
                .map_or(0, |r| r.len()),
            tables,
            schema_changes,
            sinks: crate::hub::sink_statuses(lake, pipeline, sinks).await,
        })
    }

    /// The initial snapshot as recorded in `state`.
    pub fn initial_snapshot(state: &Result<Option<State>, String>) -> InitialSnapshot {
        match state {
            Ok(Some(state)) => InitialSnapshot {
                state: match state.snapshot {
                    SnapshotState::Pending => "pending",
                    SnapshotState::Done => "done",
                    SnapshotState::Skipped => "skipped",
                },
                consistent_point: state.consistent_point.as_ref().map(|p| p.to_string()),
                error: None,
            },
            Ok(None) => InitialSnapshot {
                state: "none",
                consistent_point: None,
                error: None,
            },
            Err(e) => InitialSnapshot {
                state: "unreadable",
                consistent_point: None,
                error: Some(e.clone()),
            },
        }
    }

    /// The report as `sluice status` prints it: one line per fact.
    pub fn print_text(&self) {
        match &self.source {
            SourceStatus::Postgres {
                slot,
                created: false,
                ..
            } => println!("slot {slot}: not created yet"),
            SourceStatus::Postgres {
                slot,
                confirmed_flush,
                lag_bytes,
                streaming,
                ..
            } => println!(
                "slot {slot}: confirmed_flush {} lag {} bytes{}",
                confirmed_flush.as_deref().unwrap_or("-"),
                lag_bytes.map_or("-".into(), |b| b.to_string()),
                if *streaming { " (streaming)" } else { "" }
            ),
            SourceStatus::Mysql {
                server_position,
                resume_position,
                lag_bytes,
            } => println!(
                "binlog: server at {server_position}, pipeline resumes at {}{}",
                resume_position.as_deref().unwrap_or("- (not started)"),
                lag_bytes.map_or(String::new(), |b| format!(" lag {b} bytes"))
            ),
        }
        if let Some(s) = &self.initial_snapshot {
            match s.state {
                "none" => println!("initial snapshot: none"),
                "unreadable" => println!(
                    "initial snapshot: state unreadable ({})",
                    s.error.as_deref().unwrap_or("")
                ),
                state => println!(
                    "initial snapshot: {}{}",
                    match state {
                        "pending" => "in progress or interrupted",
                        "done" => "done",
                        _ => "none (snapshot = never)",
                    },
                    s.consistent_point
                        .as_ref()
                        .map(|p| format!(" (consistent point {p})"))
                        .unwrap_or_default()
                ),
            }
        }
        for job in &self.incremental_snapshots {
            println!(
                "incremental snapshot of {} ({}{}): {}",
                job.table,
                job.reason,
                if job.filtered { ", filtered" } else { "" },
                match job.committed_chunk {
                    Some(chunk) => format!("in progress, chunk {chunk} committed"),
                    None => "queued".to_string(),
                }
            );
        }
        if self.snapshot_requests_waiting > 0 {
            println!(
                "snapshot requests waiting for the pipeline to take them: {}",
                self.snapshot_requests_waiting
            );
        }
        for t in &self.tables {
            println!(
                "table {}: delta version {} position {} ({})",
                t.table,
                t.delta_version.map_or("-".into(), |v| v.to_string()),
                t.position.as_deref().unwrap_or("-"),
                t.path
            );
        }
        for c in &self.schema_changes {
            println!(
                "schema change of {} at {}: {} ({})",
                c.table, c.position, c.changes, c.action
            );
        }
        for s in &self.sinks {
            if let Some(e) = &s.error {
                println!("hub sink {}: {e}", s.name);
                continue;
            }
            let live = match &s.traffic {
                Some(d) => format!(
                    " in flight {} concurrency limit {} retries {} 429s {} refused {}",
                    d.in_flight, d.limit, d.retries, d.throttled, d.rejected
                ),
                None => " (not running)".into(),
            };
            println!(
                "hub sink {}: cursor {}/{} lag {} changes {:.1} s delivered {} parked {}{} (hub position {})",
                s.name,
                s.cursor.lsn,
                s.cursor.seq,
                s.lag_changes,
                s.lag_seconds,
                s.delivered,
                s.parked,
                live,
                s.hub_position
            );
        }
    }
}
