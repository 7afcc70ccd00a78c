//! The hub: sinks that consume the changelog instead of the source.
//!
//! ```text
//!   source ─▶ core ─▶ delta sink ──(confirms the slot)──▶ changelog tables
//!                        │ hub position W (watch in process; <lake>/_sluice_state/<p>.hub.json)
//!                        ▼
//!   ChangelogReader (per sink): log versions ≤ W, Parquet files in bounded batches,
//!   tables merged in (_sluice_lsn, _sluice_seq) order, rows after the cursor
//!                        │ Batcher: segments (one commit position) cut by rows/bytes
//!                        ▼
//!   runner: in-flight window, no two in-flight batches sharing a key ─▶ HubSink::deliver
//!                        │ Ack::Delivered / Ack::Parked (dead letters written first)
//!                        ▼
//!   cursor <lake>/_sluice_cursors/<pipeline>/<sink>.json (temp, fsync, rename)
//! ```
//!
//! # The contract of a hub sink ([`HubSink`])
//!
//! - **Ordering**: a sink is handed [`Batch`]es. A batch holds changes of one commit position
//!   (one *segment*: every row of the sink's tables committed at that source position), in
//!   `(lsn, seq)` order, so a source transaction's cross-table order is kept inside a batch.
//!   Batches are cut deterministically from the cursor (max rows, max bytes; never timers),
//!   so a batch resent after a crash carries the same rows. Batches may be in flight in
//!   parallel, but the runner never hands over a batch sharing a key (table + key columns)
//!   with one still in flight: changes of one key are delivered in commit order.
//! - **Acknowledged**: [`HubSink::deliver`] returns [`Ack::Delivered`] once the destination
//!   accepted every change of the batch (the sink retries transient failures itself), or
//!   [`Ack::Parked`] naming the changes the destination definitely refused (the rest of the
//!   batch accepted). An `Err` stops the sink (definite) or restarts it from its cursor
//!   (transient); nothing of the batch counts as acknowledged.
//! - **Durability and the cursor**: the runner owns the cursor, never the sink. It moves
//!   past a batch only when it and every batch before it were acknowledged, and parked
//!   changes are written to the dead-letter table before it moves. After a crash the batches
//!   past the cursor are delivered again with the same idempotency keys: exactly-once effect
//!   given an idempotent receiver.
//! - **Isolation**: a hub sink never confirms the source and never holds back the lake; it
//!   reads only what is durable in every table (≤ W). A stalled destination only grows its
//!   own lag; its memory is bounded by its in-flight window.

mod batch;
mod cursor;
mod dead_letters;
mod json_text;
mod log;
mod position;
mod reader;
mod redeliver;
mod runner;

use std::future::Future;
use std::sync::Arc;

use replication::change::TableName;

pub use batch::{Batch, BatchLimits, Batcher};
pub use cursor::{cursor_path, Cursor, CURSORS_DIR};
pub use dead_letters::{
    dead_letter_path, DeadLetters, ParkedChange, ParkedId, ParkedRecord, Resolution,
    DEAD_LETTERS_DIR,
};
pub use position::{hub_file, HubPosition, HubState, STATE_DIR};
pub use reader::{key_hash, Change, ChangelogReader, KeyColumns, Mark};
pub use redeliver::{redeliver, RedeliverReport};
pub use runner::{run, RunOptions, Until};

/// The hub's identity of one sink: which pipeline's changelog, which tables, under what name.
#[derive(Debug, Clone)]
pub struct SinkIdentity {
    /// Pipeline name (the changelog's `txn` appId).
    pub pipeline: String,
    /// Sink name, unique within the pipeline (names its cursor and dead letters).
    pub sink: String,
    /// The tables it consumes, in a fixed order.
    pub tables: Vec<TableName>,
}

/// What a sink says about one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Every change was accepted.
    Delivered,
    /// These changes were refused for good (the others were accepted): park them.
    Parked(Vec<ParkedChange>),
}

/// A sink that consumes the changelog (see the module docs for ordering, acknowledgement and
/// durability). Implementations are shared by the runner's delivery tasks.
pub trait HubSink: Send + Sync + 'static {
    /// Delivers one batch until it is accepted or definitely refused.
    fn deliver(&self, batch: Arc<Batch>) -> impl Future<Output = crate::Result<Ack>> + Send;
}
