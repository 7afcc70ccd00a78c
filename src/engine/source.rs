//! What differs per source kind, as the core sees it: the [`Source`] trait, implemented by the
//! settings of each kind (`source::postgres` for PostgreSQL, `source::mysql` for
//! MySQL/MariaDB).
//!
//! The core calls, in this order: [`Source::prepare`] once per run, then per session
//! [`Source::session`], [`Source::reader`], [`Source::stream`], and [`Source::save_resume`]
//! while the resume position moves and once at the end. [`Source::check`] and
//! [`Source::request_snapshot`] are the `sluice check` and `sluice snapshot` commands.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;

use replication::change::{Event, TableName};
use replication::evolution::{Columns, SchemaPolicies};
use replication::health::SourceHealth;
use replication::source::SourceExit;
use replication::window::SnapshotLink;
use replication::{queue, Lsn};
use sinks::hub::HubPosition;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::incremental::{ChunkReader, Sizes};
use super::PipelineError;
use crate::state::Store;

/// What the core uses of a pipeline's settings, whichever its source.
pub struct Pipeline<'a> {
    /// The pipeline's name (the Delta `txn` appId, the state file's name).
    pub name: &'a str,
    /// Where the changelog tables and the state file live.
    pub lake: &'a Path,
    /// The tables replicated.
    pub tables: &'a [TableName],
    /// What a change of a table's columns does.
    pub policies: &'a SchemaPolicies,
    /// The byte budget of the queue between the source and the sink.
    pub max_inflight_bytes: usize,
    /// Where the commit positions durable in every table are published for hub sinks.
    pub hub: &'a HubPosition,
    /// How big incremental snapshot chunks and their batches may be.
    pub sizes: Sizes,
    /// What the run shares about the source's health (the newest durable commit time, the
    /// slot's WAL retention).
    pub health: &'a SourceHealth,
}

/// What [`Source::prepare`] leaves for streaming.
pub struct Prepared<P> {
    /// The pipeline's state file, with the catch-up snapshots queued.
    pub store: Store,
    /// What each session needs from the preparation (where to start, until where).
    pub plan: P,
}

/// A session's options and, for a source that keeps one, its resume position as it moves.
pub type Opened<S, R> = (S, Option<watch::Receiver<R>>);

/// The core's ends of one session, handed to [`Source::stream`].
pub struct Stream {
    /// The queue to the sink, bounded in bytes: the source waits when it is full.
    pub tx: queue::Sender<Event>,
    /// The end position of the last event durable in every changelog table: the source
    /// confirms (PostgreSQL `flush_lsn`) or resumes (MySQL/MariaDB) no further than this.
    pub durable: watch::Receiver<Lsn>,
    /// The incremental snapshot driver's link: chunks to place in the stream, requests found
    /// in it.
    pub link: SnapshotLink,
    /// Each table's columns as the lake last recorded them.
    pub known: HashMap<TableName, Columns>,
    /// Cancelled on shutdown, reload, or when the snapshot driver fails.
    pub stop: CancellationToken,
}

/// One source kind: how it is checked, prepared, streamed and resumed. Implemented by the
/// kind's settings.
///
/// A source confirms its position (the slot's `flush_lsn`, the saved binlog position) only up
/// to [`Stream::durable`]; nothing else may move it.
pub trait Source: Sync + 'static {
    /// What [`Source::prepare`] hands to every session of the run.
    type Plan: Sync;
    /// One session's connection-specific options, from [`Source::session`].
    type Session;
    /// How the session's incremental snapshots read their chunks.
    type Reader: ChunkReader;
    /// Where a restart resumes, for a source that keeps it in the state file (MySQL/MariaDB);
    /// `Infallible` for one whose server keeps it (a PostgreSQL slot).
    type Resume: Clone + Send + Sync + 'static;

    /// Whether `sluice snapshot` requests wait in the lake's mailbox (MySQL/MariaDB) rather
    /// than travel in the stream (PostgreSQL: a message in the WAL).
    const MAILBOX: bool;

    /// What the resume position is called in log lines.
    const RESUME: &'static str = "resume position";

    /// The settings the core uses.
    fn pipeline(&self) -> Pipeline<'_>;

    /// Every problem that would stop replication, each with its fix (`sluice check`).
    fn check(&self) -> impl Future<Output = Result<Vec<String>, PipelineError>>;

    /// Once per run, before any session: refuse what preflight finds, take the initial
    /// snapshot when one is due, queue the catch-up snapshots, and decide where streaming
    /// starts (and, with `until_caught_up`, where it stops). `None`: nothing to stream
    /// (`snapshot = "initial_only"`), the initial load is durable and the run ends caught up.
    fn prepare(
        &self,
        until_caught_up: bool,
    ) -> impl Future<Output = Result<Option<Prepared<Self::Plan>>, PipelineError>>;

    /// Before each session's sink opens: what this connection needs, and the resume position
    /// it starts from when the source keeps one (the core saves it as it moves).
    fn session(
        &self,
        plan: &Self::Plan,
        store: &Store,
    ) -> impl Future<Output = Result<Opened<Self::Session, Self::Resume>, PipelineError>>;

    /// The session's incremental snapshot reader.
    fn reader(&self, session: &Self::Session) -> Self::Reader;

    /// Stream until cancelled, caught up, or an error; the queue sender is dropped on return,
    /// which lets the sink drain and end.
    fn stream(
        &self,
        session: Self::Session,
        stream: Stream,
    ) -> impl Future<Output = Result<SourceExit, replication::Error>>;

    /// Record where a restart resumes (unless already recorded).
    fn save_resume(store: &Store, resume: Self::Resume) -> Result<(), PipelineError>;

    /// Check a `sluice snapshot` request (the pipeline has started, the table has a usable
    /// key, the predicate is valid) and hand it to the pipeline; returns how it travels, as
    /// the rest of the sentence "snapshot of TABLE …" (e.g. "requested at 0/16B3748; the
    /// running pipeline takes it up (or its next run)").
    fn request_snapshot(
        &self,
        table: &TableName,
        filter: Option<&str>,
    ) -> impl Future<Output = Result<String, PipelineError>>;
}
