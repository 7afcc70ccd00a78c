//! The runner of one hub sink: reads batches after its cursor, keeps a window of them in
//! flight (never two sharing a key), parks what the sink refused, and moves the cursor past
//! the acknowledged prefix.
//!
//! ```text
//!   Batcher ──next batch──▶ key free and window not full? ──▶ spawn deliver ─┐
//!      ▲ (blocking reads in spawn_blocking)        no: wait for a completion  │
//!      └── W moved (watch) ◀── nothing to read                                 │
//!   completions (any order) ─▶ park refused ─▶ cursor := end of done prefix ◀─┘
//! ```
//!
//! The cursor is stored by a writer task of its own, coalesced: the loop hands it the newest
//! cursor and goes on joining and dispatching while the previous one is fsynced, so a slow
//! disk never stalls delivery (a store takes up to half a second on a busy disk). A crash
//! therefore resends at most the batches acknowledged since the last store, with the same
//! idempotency keys.
//!
//! Transient errors (a file being written, a dead-letter commit conflict) restart the sink
//! from its cursor after a backoff; in-flight batches are abandoned and resent with the same
//! keys. Cancellation abandons the in-flight batches the same way.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use replication::{ErrorClass, Lsn};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, BatchLimits, Batcher};
use super::cursor::{cursor_path, Cursor};
use super::dead_letters::DeadLetters;
use super::reader::{Change, ChangelogReader, KeyColumns, Mark};
use super::{Ack, HubSink, SinkIdentity};
use crate::{Error, Result};

/// First and longest wait before restarting after a transient failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

/// When the runner ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until cancelled.
    Forever,
    /// Once everything up to the hub position at start is delivered or parked.
    CaughtUp,
}

/// How one sink runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Pipeline, sink name, tables.
    pub identity: SinkIdentity,
    /// The lake directory.
    pub lake: PathBuf,
    /// Key columns per table, for per-key order.
    pub keys: KeyColumns,
    /// Batch cutting.
    pub limits: BatchLimits,
    /// Most batches in flight (the sink's own concurrency adapts below it).
    pub window: usize,
    /// When to stop.
    pub until: Until,
}

/// A batch handed to the sink and not yet past the cursor.
struct Slot {
    last: Mark,
    /// Commit time of its first change (unix microseconds), for the lag.
    first_ts: i64,
    rows: u64,
    keys: Vec<String>,
    /// `Some(parked count)` once acknowledged.
    done: Option<u64>,
}

/// Runs `sink` until cancelled (or caught up), restarting after transient failures.
pub async fn run<S: HubSink>(
    sink: Arc<S>,
    options: RunOptions,
    mut hub: watch::Receiver<Lsn>,
    cancel: CancellationToken,
) -> Result<()> {
    let target = *hub.borrow();
    let mut backoff = BACKOFF.0;
    loop {
        match run_once(&sink, &options, &mut hub, target, &cancel).await {
            Ok(()) => return Ok(()),
            Err(e) if e.class() == ErrorClass::Transient && !cancel.is_cancelled() => {
                tracing::warn!(sink = %options.identity.sink, error = %e, retry_in = ?backoff, "hub sink failed, restarting from its cursor");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Stores the newest cursor it is handed, one store at a time, skipping those superseded
/// while a store ran.
struct CursorWriter {
    tx: watch::Sender<Cursor>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl CursorWriter {
    fn spawn(path: PathBuf, cursor: Cursor) -> Self {
        let (tx, mut rx) = watch::channel(cursor);
        let task = tokio::spawn(async move {
            // `changed` reports a value sent before the sender was dropped, then the end.
            while rx.changed().await.is_ok() {
                let mut c = rx.borrow_and_update().clone();
                let p = path.clone();
                tokio::task::spawn_blocking(move || c.store(&p))
                    .await
                    .map_err(|e| bug(&e.to_string()))??;
            }
            Ok(())
        });
        CursorWriter {
            tx,
            task: Some(task),
        }
    }

    /// Hands over the newest cursor.
    fn set(&self, cursor: &Cursor) {
        self.tx.send_replace(cursor.clone());
    }

    /// If a store failed (the writer ended early), its error.
    async fn failed(&mut self) -> Option<Error> {
        if !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let task = self.task.take()?;
        Some(match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => bug("cursor writer ended"),
            Err(e) => bug(&e.to_string()),
        })
    }

    /// Stores the last cursor handed over and ends.
    async fn finish(self) -> Result<()> {
        drop(self.tx);
        match self.task {
            Some(task) => task.await.map_err(|e| bug(&e.to_string()))?,
            None => Ok(()),
        }
    }
}

async fn run_once<S: HubSink>(
    sink: &Arc<S>,
    options: &RunOptions,
    hub: &mut watch::Receiver<Lsn>,
    target: Lsn,
    cancel: &CancellationToken,
) -> Result<()> {
    let id = &options.identity;
    let path = cursor_path(&options.lake, &id.pipeline, &id.sink);
    let cursor = Cursor::load(&path)?;
    let mut writer = CursorWriter::spawn(path, cursor.clone());
    let result = deliver_loop(sink, options, hub, target, cancel, cursor, &mut writer).await;
    // The last cursor is stored on every way out; a delivery error comes first.
    let stored = writer.finish().await;
    result.and(stored)
}

async fn deliver_loop<S: HubSink>(
    sink: &Arc<S>,
    options: &RunOptions,
    hub: &mut watch::Receiver<Lsn>,
    target: Lsn,
    cancel: &CancellationToken,
    mut cursor: Cursor,
    writer: &mut CursorWriter,
) -> Result<()> {
    let id = &options.identity;
    let reader = ChangelogReader::open(
        &options.lake,
        &id.pipeline,
        &id.tables,
        &options.keys,
        cursor.after(),
    );
    let mut batcher = Some(Batcher::new(reader, options.limits));
    let mut dead = DeadLetters::new(&options.lake, &id.pipeline, &id.sink);
    let mut tasks: JoinSet<(u64, Result<Ack>)> = JoinSet::new();
    let mut slots: BTreeMap<u64, Slot> = BTreeMap::new();
    let mut busy: HashMap<String, usize> = HashMap::new();
    let mut next: Option<Batch> = None;
    let mut read_up_to: Option<Lsn> = None;
    let mut hub_open = true;
    let mut next_id = 0u64;
    tracing::info!(sink = %id.sink, lsn = cursor.lsn, seq = cursor.seq, "hub sink starting after its cursor");
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Some(e) = writer.failed().await {
            return Err(e);
        }
        let w = *hub.borrow_and_update();
        if next.is_none() && read_up_to != Some(w) {
            let mut b = batcher.take().ok_or_else(|| bug("batcher lost"))?;
            let (b, read) = tokio::task::spawn_blocking(move || {
                let r = b.next_batch(w);
                (b, r)
            })
            .await
            .map_err(|e| bug(&e.to_string()))?;
            batcher = Some(b);
            match read? {
                Some(batch) => next = Some(batch),
                None => {
                    read_up_to = Some(w);
                    if tasks.is_empty() {
                        report(&id.sink, &cursor, None);
                    }
                }
            }
        }
        if let Some(batch) = next.take() {
            let free = !batch.changes.iter().any(|c| busy.contains_key(&c.key_id));
            if free && tasks.len() < options.window.max(1) {
                let mut keys: Vec<String> =
                    batch.changes.iter().map(|c| c.key_id.clone()).collect();
                keys.sort();
                keys.dedup();
                for k in &keys {
                    *busy.entry(k.clone()).or_default() += 1;
                }
                let slot_id = next_id;
                next_id += 1;
                slots.insert(
                    slot_id,
                    Slot {
                        last: batch.changes.last().map(Change::mark).unwrap_or_default(),
                        first_ts: batch.changes.first().map_or(0, |c| c.commit_ts),
                        rows: batch.changes.len() as u64,
                        keys,
                        done: None,
                    },
                );
                let sink = sink.clone();
                tasks.spawn(async move { (slot_id, sink.deliver(Arc::new(batch)).await) });
                continue;
            }
            next = Some(batch);
        }
        if next.is_none()
            && tasks.is_empty()
            && options.until == Until::CaughtUp
            && read_up_to.is_some_and(|r| r >= target)
        {
            tracing::info!(sink = %id.sink, lsn = cursor.lsn, seq = cursor.seq, "hub sink caught up");
            return Ok(());
        }
        tokio::select! {
            done = tasks.join_next(), if !tasks.is_empty() => {
                let Some(done) = done else { continue };
                let (slot_id, ack) = done.map_err(|e| bug(&e.to_string()))?;
                let parked = match ack? {
                    Ack::Delivered => 0,
                    Ack::Parked(parked) => {
                        dead.park(&parked).await?;
                        tracing::warn!(sink = %id.sink, parked = parked.len(), "changes parked in the dead-letter table");
                        parked.len() as u64
                    }
                };
                let slot = slots.get_mut(&slot_id).ok_or_else(|| bug("unknown batch"))?;
                slot.done = Some(parked);
                for k in &slot.keys {
                    if let Some(n) = busy.get_mut(k) {
                        *n -= 1;
                        if *n == 0 {
                            busy.remove(k);
                        }
                    }
                }
                if advance(&mut slots, &mut cursor) {
                    let oldest = slots
                        .values()
                        .map(|s| s.first_ts)
                        .chain(next.as_ref().and_then(|b| b.changes.first()).map(|c| c.commit_ts))
                        .min();
                    report(&id.sink, &cursor, oldest);
                    writer.set(&cursor);
                }
            }
            changed = hub.changed(), if next.is_none() && hub_open => {
                hub_open = changed.is_ok();
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// The sink's metrics: cursor position and counts, and the lag (now minus the commit time of
/// the oldest change not passed; `None`: caught up).
fn report(sink: &str, cursor: &Cursor, oldest: Option<i64>) {
    use crate::metrics::{SINK_CURSOR_POSITION, SINK_DELIVERED, SINK_LAG_SECONDS, SINK_PARKED};
    let sink = sink.to_string();
    metrics::gauge!(SINK_CURSOR_POSITION, "sink" => sink.clone()).set(cursor.lsn as f64);
    metrics::counter!(SINK_DELIVERED, "sink" => sink.clone()).absolute(cursor.delivered);
    metrics::counter!(SINK_PARKED, "sink" => sink.clone()).absolute(cursor.parked);
    let lag = oldest.map_or(0.0, |ts| {
        let now = super::position::now_ms() as i64 * 1000;
        (now - ts).max(0) as f64 / 1e6
    });
    metrics::gauge!(SINK_LAG_SECONDS, "sink" => sink).set(lag);
}

/// Moves `cursor` past the acknowledged prefix of `slots`; whether it moved.
fn advance(slots: &mut BTreeMap<u64, Slot>, cursor: &mut Cursor) -> bool {
    let mut moved = false;
    while let Some(entry) = slots.first_entry() {
        let Some(parked) = entry.get().done else {
            break;
        };
        let slot = entry.remove();
        (cursor.lsn, cursor.seq, cursor.table, cursor.dup) = slot.last;
        cursor.delivered += slot.rows - parked;
        cursor.parked += parked;
        moved = true;
    }
    moved
}

fn bug(what: &str) -> Error {
    Error::Corrupt {
        path: "hub runner".into(),
        reason: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_only_past_the_acknowledged_prefix() {
        let mut slots = BTreeMap::new();
        for (i, done) in [(0u64, None), (1, Some(0)), (2, Some(1))] {
            slots.insert(
                i,
                Slot {
                    last: (10 + i, 0, String::new(), 0),
                    first_ts: 0,
                    rows: 2,
                    keys: Vec::new(),
                    done,
                },
            );
        }
        let mut c = Cursor::default();
        assert!(!advance(&mut slots, &mut c));
        assert_eq!(c.after(), (0, 0, String::new(), 0));
        slots.get_mut(&0).unwrap().done = Some(0);
        assert!(advance(&mut slots, &mut c));
        assert_eq!(
            (c.after(), c.delivered, c.parked),
            ((12, 0, String::new(), 0), 5, 1)
        );
        assert!(slots.is_empty());
    }
}
