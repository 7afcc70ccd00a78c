//! The runner of one hub sink: reads batches after its cursor, keeps a window of them in
//! flight (never two sharing a key), parks what the sink refused, and moves the cursor past
//! the acknowledged prefix.
//!
//! ```text
//!   reader thread: Batcher ─▶ channel (READ_AHEAD batches) ─▶ key free, window not full?
//!      ▲ nothing up to W: wait for W to move        │          yes: spawn deliver ─┐
//!      └───────────────────────────────────────────┘          no: wait for a      │
//!                                                               completion        │
//!   completions (any order) ─▶ park refused ─▶ cursor := end of done prefix ◀──────┘
//! ```
//!
//! The changelog is read (Parquet decoded, rows and keys encoded as JSON, batches cut and
//! their key hashes collected) on a thread of its own, a few batches ahead of delivery: on
//! two cores, reading one batch overlaps with encoding and sending the ones before it. The
//! loop itself only checks and counts key hashes.
//!
//! The cursor is stored by a writer task of its own, coalesced and at most every
//! [`CURSOR_EVERY`]: the loop hands it the newest cursor and goes on joining and dispatching
//! while the previous one is fsynced, so a slow disk never stalls delivery (a store takes up
//! to half a second on a busy disk). A crash therefore resends at most the batches
//! acknowledged since the last store, with the same idempotency keys.
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

/// Batches read ahead of delivery: with the one being read, what the reader holds besides
/// the window in flight.
const READ_AHEAD: usize = 4;

/// Least time between two cursor stores (each is two fsyncs): what a crash may resend, at
/// most, besides the window.
const CURSOR_EVERY: Duration = Duration::from_millis(50);

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
    keys: Vec<u64>,
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
                let next = tokio::time::Instant::now() + CURSOR_EVERY;
                tokio::task::spawn_blocking(move || c.store(&p))
                    .await
                    .map_err(|e| bug(&e.to_string()))??;
                // Cursors handed over meanwhile are coalesced into the next store.
                tokio::time::sleep_until(next).await;
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

/// What the reader thread hands the loop.
enum Read {
    /// The next batch.
    Batch(Batch),
    /// Everything up to this hub position was handed out.
    UpTo(Lsn),
}

/// Reads batches after the cursor on a blocking thread into a channel of [`READ_AHEAD`],
/// waiting for the hub position to move when everything up to it is read. Ends when the
/// receiver is dropped or `stop` is cancelled.
fn spawn_reader(
    mut batcher: Batcher,
    mut hub: watch::Receiver<Lsn>,
    stop: CancellationToken,
) -> tokio::sync::mpsc::Receiver<Result<Read>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || loop {
        let w = *hub.borrow_and_update();
        let read = match batcher.next_batch(w) {
            Ok(Some(batch)) => Ok(Read::Batch(batch)),
            Ok(None) => Ok(Read::UpTo(w)),
            Err(e) => Err(e),
        };
        let (up_to, failed) = (matches!(read, Ok(Read::UpTo(_))), read.is_err());
        if tx.blocking_send(read).is_err() || failed {
            return;
        }
        if up_to {
            let moved = runtime.block_on(async {
                tokio::select! {
                    changed = hub.changed() => changed.is_ok(),
                    _ = stop.cancelled() => false,
                }
            });
            if !moved {
                // The pipeline ended (or the loop did): nothing more will be written.
                runtime.block_on(stop.cancelled());
                return;
            }
        }
    });
    rx
}

/// Hashes of [`Change::key_hash`] are already uniform: used as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Keys in flight, and how many times the batches in flight hold each.
type Busy = HashMap<u64, usize, std::hash::BuildHasherDefault<KeyHasher>>;

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
    // The reader stops with this loop, however it ends.
    let stop = cancel.child_token();
    let _stop = stop.clone().drop_guard();
    let mut reads = spawn_reader(Batcher::new(reader, options.limits), hub.clone(), stop);
    let mut dead = DeadLetters::new(&options.lake, &id.pipeline, &id.sink);
    let mut tasks: JoinSet<(u64, Result<Ack>)> = JoinSet::new();
    let mut slots: BTreeMap<u64, Slot> = BTreeMap::new();
    let mut busy = Busy::default();
    let mut next: Option<Batch> = None;
    let mut read_up_to: Option<Lsn> = None;
    let mut next_id = 0u64;
    tracing::info!(sink = %id.sink, lsn = cursor.lsn, seq = cursor.seq, "hub sink starting after its cursor");
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Some(e) = writer.failed().await {
            return Err(e);
        }
        if let Some(mut batch) = next.take() {
            let free = !batch.keys.iter().any(|k| busy.contains_key(k));
            if free && tasks.len() < options.window.max(1) {
                let keys = std::mem::take(&mut batch.keys);
                for k in &keys {
                    *busy.entry(*k).or_default() += 1;
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
            read = reads.recv(), if next.is_none() => match read {
                Some(Ok(Read::Batch(batch))) => next = Some(batch),
                Some(Ok(Read::UpTo(w))) => {
                    read_up_to = Some(w);
                    if tasks.is_empty() {
                        report(&id.sink, &cursor, None);
                    }
                }
                Some(Err(e)) => return Err(e),
                // The reader ends on its own only once the pipeline has: wait for the
                // deliveries in flight and the cancellation.
                None => {
                    if tasks.is_empty() {
                        cancel.cancelled().await;
                        return Ok(());
                    }
                }
            },
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
