//! The pipeline core, one for both sources: it wires a source to the Delta changelog through a
//! byte-bounded queue, carries the durable position back to the source, runs the initial and
//! incremental snapshots beside the stream, keeps the resume position, publishes the hub
//! position, and retries transient failures. What differs per source kind is behind
//! [`Source`] (`source::postgres`, `source::mysql`).
//!
//! ```text
//!  run: Source::prepare (once) ── preflight; initial snapshot (InitialLoad) or catch-up queued
//!    │
//!    ▼  with_retries: a transient failure starts a new session after a backoff (0.5 s … 30 s)
//!  session ─────────────────────────────────────────────────────────────────────────────────┐
//!  │ Source::session (connect; read the resume position)                                   │
//!  │                                                                                       │
//!  │ Source::stream ──queue (max_inflight_bytes)──▶ sink task ──▶ Delta changelog           │
//!  │   ▲        ▲                                    │   │                                  │
//!  │   │        └──── durable: watch<Lsn> ◀──────────┘   └──▶ HubPosition W ──▶ hub sinks   │
//!  │   │         (confirms: slot flush_lsn, binlog resume)    (read the changelog up to W)  │
//!  │   └── SnapshotLink ◀── incremental driver ◀── chunks committed (by number) ──┘         │
//!  │                                                                                       │
//!  │ resume saver (MySQL/MariaDB): Source::save_resume every second, and at the end        │
//!  └───────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Invariants:
//!
//! - **Only the changelog confirms the source.** The sink task publishes, on `durable`, the
//!   end position of each event once it is durable in every changelog table; the source
//!   confirms its slot (PostgreSQL `flush_lsn` feedback) or moves its resume position
//!   (MySQL/MariaDB, saved in the state file) no further, and only after that. A crash at any
//!   instant loses nothing: the source still has everything the lake does not.
//! - **A hub sink never confirms.** The same commit positions are published as the hub
//!   position W, after the Delta commit; hub sinks (webhooks, `sluice deliver`) read the
//!   changelog up to W with cursors of their own. A slow or failing API therefore never pins
//!   WAL or binlog on the source and never slows the lake, and a hub sink can be rebuilt from
//!   the changelog.
//! - **Every session starts from the lake.** The sink reads each table's position back from
//!   its Delta `txn` versions and drops what a table already holds, so a retried session or a
//!   restarted process duplicates nothing; the state file only saves re-reading.
//! - **A session ends in order.** The source returns (dropping its queue sender), the
//!   incremental driver stops, the sink drains what is queued and ends, then the last resume
//!   position is saved (never past what is durable). A sink failure is reported before the
//!   driver's and the source's, as it is the root cause when both fail.
//! - **An initial load is visible whole or not at all**: each table commits once, at the
//!   snapshot's position, and only when the whole copy succeeded.
//!
//! Shutdown (Ctrl-C, SIGTERM) and SIGHUP reload cancel the run's token: the session ends as
//! above, and `sluice run` starts a new run with the new configuration after a reload.
//!
//! A file per role: [`Source`] and what passes through it (`source`), the run loop and one
//! session (`run`), the sink task (`sink`), the sink side of an initial snapshot (`initial`),
//! the incremental snapshot driver ([`incremental`]), and [`PipelineError`] (`error`).

mod error;
pub mod incremental;
mod initial;
mod run;
mod sink;
mod source;

pub use error::PipelineError;
pub(crate) use initial::InitialLoad;
pub use run::run;
pub(crate) use sink::CommittedChunk;
pub use source::{Opened, Pipeline, Prepared, Source, Stream};
