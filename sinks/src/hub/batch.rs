//! Cutting the merged changelog into batches: each batch holds changes of one segment (one
//! commit position), cut greedily by max rows and max bytes, never by time.
//!
//! Determinism: the cursor always stands on a batch boundary (the runner moves it only past
//! whole batches), and greedy cutting from a boundary gives the same batches every time, so
//! a batch resent after a crash carries the same rows, positions and idempotency key.
//! Changing `max_rows` or `max_bytes` changes the boundaries from the cursor on.

use std::sync::Arc;

use replication::change::TableName;
use replication::Lsn;

use super::reader::{Change, ChangelogReader};
use crate::Result;

/// Limits of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many changes.
    pub max_rows: usize,
    /// At most about this many bytes of rows (a single larger row travels alone).
    pub max_bytes: usize,
}

/// A batch of changes of one commit position, in `(lsn, seq)` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The changes (never empty).
    pub changes: Vec<Change>,
    /// Their [`Change::key_hash`]es in change order, runs of one key written once: what
    /// the runner keeps from being in flight twice. A key may appear more than once (the
    /// runner counts each appearance in and out); not sorting them saves a sort of every
    /// batch, most of whose keys are distinct anyway.
    pub keys: Vec<u64>,
}

impl Batch {
    /// A batch of `changes`.
    pub fn new(changes: Vec<Change>) -> Self {
        let mut keys: Vec<u64> = changes.iter().map(|c| c.key_hash).collect();
        keys.dedup();
        Batch { changes, keys }
    }

    /// Position of its first change.
    pub fn first(&self) -> (u64, i64) {
        self.changes.first().map_or((0, 0), Change::position)
    }

    /// Position of its last change.
    pub fn last(&self) -> (u64, i64) {
        self.changes.last().map_or((0, 0), Change::position)
    }

    /// The tables it touches, sorted, without repeats.
    pub fn tables(&self) -> Vec<Arc<TableName>> {
        let mut t: Vec<_> = self.changes.iter().map(|c| c.table.clone()).collect();
        t.sort();
        t.dedup();
        t
    }
}

/// Cuts batches from a reader.
pub struct Batcher {
    reader: ChangelogReader,
    limits: BatchLimits,
    pending: Option<Change>,
}

impl Batcher {
    /// Batches of `reader`'s changes within `limits`.
    pub fn new(reader: ChangelogReader, limits: BatchLimits) -> Self {
        Batcher {
            reader,
            limits,
            pending: None,
        }
    }

    /// The next batch at or below `w`, `None` if everything up to `w` was handed out. A
    /// segment at or below `w` is complete, so a batch never closes early for lack of rows.
    pub fn next_batch(&mut self, w: Lsn) -> Result<Option<Batch>> {
        let first = match self.pending.take() {
            Some(c) => c,
            None => match self.reader.next(w)? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let mut bytes = first.size();
        // Sized for a whole batch up front (most are full while catching up), so the
        // changes, 150 bytes each, are not copied again as the vector grows.
        let mut changes = Vec::with_capacity(self.limits.max_rows.clamp(1, 4096));
        changes.push(first);
        while changes.len() < self.limits.max_rows {
            let Some(next) = self.reader.next(w)? else {
                break;
            };
            if next.lsn != changes[0].lsn || bytes + next.size() > self.limits.max_bytes {
                self.pending = Some(next);
                break;
            }
            bytes += next.size();
            changes.push(next);
        }
        Ok(Some(Batch::new(changes)))
    }
}
