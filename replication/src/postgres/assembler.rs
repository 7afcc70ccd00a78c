//! Turns decoded pgoutput messages into [`Event`]s: whole transactions batched per table, and
//! chunks of streamed in-progress transactions.
//!
//! ```text
//!  Begin ─ I/U/D/T … ─ Commit ──▶ committed builders ──(max rows | max bytes | latency,
//!                                                       at a commit)──▶ Event::Committed
//!  StreamStart(xid) ─ I/U/D(subxid) … ─ StreamStop     ──▶ per-(xid, subxid) builders
//!                                   (over max rows/bytes)──▶ Event::StreamChunk
//!  StreamCommit(xid) ──▶ Event::StreamCommit    StreamAbort(xid, subxid) ──▶ Event::StreamAbort
//! ```
//!
//! Invariants: an `Event::Committed` holds only whole transactions; rows of an open ordinary
//! transaction sit in the committed builders but are never emitted before its Commit (a batch
//! is taken only at a transaction boundary); rows of a streamed transaction are never mixed
//! with rows of another transaction.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::pgoutput::{Message, OldTuple, Relation, Tuple};
use super::table::{Op, RowPosition, TableBuilder, TableShape};
use super::value::PG_EPOCH_OFFSET_MICROS;
use crate::change::{Event, TableBatch, TableName, MARKER_PREFIX};
use crate::evolution::{self, ColumnChange, Columns, SchemaPolicies, SchemaPolicy};
use crate::source::BatchLimits;
use crate::{Error, Lsn, Result};

/// Relation OIDs and xids are small integers chosen by the server: a multiplicative hash is
/// enough, and the per-row map look-ups are on the hot path.
#[derive(Default)]
struct OidHasher(u64);

impl Hasher for OidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u32(u32::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type OidMap<K, V> = HashMap<K, V, BuildHasherDefault<OidHasher>>;

/// Transaction state of the ordinary (non-streamed) stream.
#[derive(Debug, Clone, Copy)]
struct OpenTransaction {
    final_lsn: Lsn,
    commit_ts: i64,
    seq: i64,
}

/// A streamed transaction in progress.
#[derive(Default)]
struct Stream {
    /// Builders per (subxid, relation oid).
    builders: OidMap<(u32, u32), TableBuilder>,
    rows: usize,
    bytes: usize,
    seq: i64,
}

/// The message-to-event state machine. Sans-IO: feed it messages, take events out.
pub struct Assembler {
    limits: BatchLimits,
    binary: bool,
    enums: HashSet<u32>,
    /// Primary key columns per table, for updates of REPLICA IDENTITY FULL tables.
    primary_keys: HashMap<TableName, Vec<String>>,
    shapes: OidMap<u32, Arc<TableShape>>,
    /// Builders of committed (and the one open) ordinary transactions, per relation oid.
    builders: OidMap<u32, TableBuilder>,
    /// Builders replaced by a schema change, waiting to be emitted with the next batch.
    retired: Vec<TableBuilder>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Last commit in the pending batch: (commit lsn, end lsn).
    pending_commit: Option<(Lsn, Lsn)>,
    open: Option<OpenTransaction>,
    /// Streamed transactions by top-level xid, and the one whose chunk is being received.
    streams: OidMap<u32, Stream>,
    streaming_xid: Option<u32>,
    /// Content of a Sluice marker message in the open transaction.
    marker: Option<String>,
    events: Vec<Event>,
    /// What a change of a table's columns does.
    policies: SchemaPolicies,
    /// The shapes the lake last recorded, for tables not described yet in this session: a
    /// `stop` table's first shape is checked against them (a change made while stopped).
    known: HashMap<TableName, Columns>,
}

impl Assembler {
    /// A fresh assembler. `binary` tells whether values arrive in binary format; `enums` lists
    /// the enum type OIDs (whose binary form is the label); `primary_keys` the primary key
    /// columns of the tables that have one.
    pub fn new(
        limits: BatchLimits,
        binary: bool,
        enums: HashSet<u32>,
        primary_keys: HashMap<TableName, Vec<String>>,
    ) -> Self {
        Assembler {
            limits,
            binary,
            enums,
            primary_keys,
            shapes: OidMap::default(),
            builders: OidMap::default(),
            retired: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            pending_commit: None,
            open: None,
            streams: OidMap::default(),
            streaming_xid: None,
            marker: None,
            events: Vec::new(),
            policies: SchemaPolicies::default(),
            known: HashMap::new(),
        }
    }

    /// Follow schema changes by `policies`; `known` holds the shapes the lake last recorded
    /// (checked against a `stop` table's first shape).
    pub fn with_schema_policies(
        mut self,
        policies: SchemaPolicies,
        known: HashMap<TableName, Columns>,
    ) -> Self {
        self.policies = policies;
        self.known = known;
        self
    }

    /// Whether the stream is between ordinary transactions (streams may be open).
    pub fn at_boundary(&self) -> bool {
        self.open.is_none()
    }

    /// Whether committed rows wait to be emitted.
    pub fn has_pending(&self) -> bool {
        self.pending_commit.is_some()
    }

    /// Events produced so far, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Apply one message. `lsn` is the XLogData start, used in error messages; `size` the
    /// message's byte length, used to estimate batch memory.
    pub fn apply(&mut self, message: Message<'_>, lsn: Lsn, size: usize) -> Result<()> {
        match message {
            Message::Begin {
                final_lsn,
                commit_ts,
                ..
            } => {
                self.open = Some(OpenTransaction {
                    final_lsn,
                    commit_ts: commit_ts + PG_EPOCH_OFFSET_MICROS,
                    seq: 0,
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                let Some(open) = self.open.take() else {
                    return Err(Error::Protocol(format!(
                        "commit at {commit_lsn} without begin"
                    )));
                };
                if let Some(content) = self.marker.take() {
                    // A marker orders rows: everything before it is emitted first, at its own
                    // position (a chunk emitted at the marker's position must sort after it).
                    if open.seq > 0 {
                        self.pending_commit = Some((commit_lsn, end_lsn));
                    }
                    self.flush()?;
                    self.events.push(Event::Marker {
                        content,
                        commit_lsn,
                        end_lsn,
                        commit_ts: open.commit_ts,
                    });
                    return Ok(());
                }
                self.pending_commit = Some((commit_lsn, end_lsn));
                if self.pending_rows >= self.limits.max_rows
                    || self.pending_bytes >= self.limits.max_bytes
                {
                    self.flush()?;
                }
            }
            Message::Relation(relation) => self.relation(&relation, lsn)?,
            Message::Insert { xid, relation, new } => {
                self.row(xid, relation, lsn, size, |b, pos| {
                    b.append(Op::Insert, pos, &new)
                })?
            }
            Message::Update {
                xid,
                relation,
                old,
                new,
            } => {
                // The old key is sent only when the key changed; a full old row (REPLICA
                // IDENTITY FULL) is compared on the identity columns.
                let changed_key = match old {
                    Some(OldTuple::Key(t)) => Some(t),
                    Some(OldTuple::Full(t)) if self.key_differs(relation, &t, &new, lsn)? => {
                        Some(t)
                    }
                    _ => None,
                };
                if let Some(old) = changed_key {
                    self.row(xid, relation, lsn, size, |b, pos| {
                        b.append(Op::Delete, pos, &old)
                    })?;
                }
                self.row(xid, relation, lsn, size, |b, pos| {
                    b.append(Op::Update, pos, &new)
                })?
            }
            Message::Delete { xid, relation, old } => {
                let (OldTuple::Key(old) | OldTuple::Full(old)) = old;
                self.row(xid, relation, lsn, size, |b, pos| {
                    b.append(Op::Delete, pos, &old)
                })?
            }
            Message::Truncate { xid, relations, .. } => {
                for relation in relations {
                    self.row(xid, relation, lsn, size, |b, pos| {
                        b.append_empty(Op::Truncate, pos);
                        Ok(())
                    })?;
                }
            }
            Message::StreamStart { xid, .. } => {
                self.streams.entry(xid).or_default();
                self.streaming_xid = Some(xid);
            }
            Message::StreamStop => self.streaming_xid = None,
            Message::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_ts,
            } => {
                // Streamed transactions commit in order with ordinary ones: emit what is
                // pending first so events stay in commit order.
                self.flush()?;
                let stream = self.streams.remove(&xid).unwrap_or_default();
                self.events.push(Event::StreamCommit {
                    xid,
                    tables: take_all(stream)?,
                    commit_lsn,
                    end_lsn,
                    commit_ts: commit_ts + PG_EPOCH_OFFSET_MICROS,
                });
            }
            Message::StreamAbort { xid, subxid } => {
                if subxid == xid {
                    self.streams.remove(&xid);
                } else if let Some(stream) = self.streams.get_mut(&xid) {
                    stream.builders.retain(|(s, _), _| *s != subxid);
                }
                self.events.push(Event::StreamAbort { xid, subxid });
            }
            Message::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == MARKER_PREFIX && self.open.is_some() => {
                self.marker = Some(String::from_utf8_lossy(content).into_owned());
            }
            Message::Origin { .. } | Message::Type { .. } | Message::Message { .. } => {}
        }
        Ok(())
    }

    /// Emit the committed transactions before a definite error, when the open transaction (if
    /// any) has not added rows to the builders yet; its rows would otherwise be mixed in.
    /// Returns whether anything could be flushed.
    pub fn flush_before_error(&mut self) -> Result<bool> {
        if self.open.is_some_and(|t| t.seq > 0) || self.pending_commit.is_none() {
            return Ok(false);
        }
        let open = self.open.take();
        let flushed = self.flush();
        self.open = open;
        flushed.map(|()| true)
    }

    /// Emit the pending committed transactions as one event. Only at a boundary.
    pub fn flush(&mut self) -> Result<()> {
        let Some((commit_lsn, end_lsn)) = self.pending_commit.take() else {
            return Ok(());
        };
        debug_assert!(self.open.is_none(), "flush inside a transaction");
        let mut tables = Vec::new();
        for mut b in self.retired.drain(..) {
            if let Some(batch) = b.take()? {
                tables.push(TableBatch {
                    table: b.shape().table.clone(),
                    batch,
                });
            }
        }
        for b in self.builders.values_mut() {
            if let Some(batch) = b.take()? {
                tables.push(TableBatch {
                    table: b.shape().table.clone(),
                    batch,
                });
            }
        }
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.events.push(Event::Committed {
            tables,
            commit_lsn,
            end_lsn,
            gtid: None,
        });
        Ok(())
    }

    fn relation(&mut self, relation: &Relation, lsn: Lsn) -> Result<()> {
        let shape = Arc::new(TableShape::from_relation(
            relation,
            self.binary,
            &self.enums,
            lsn,
        )?);
        let stop = self.policies.of(&shape.table) == SchemaPolicy::Stop;
        let Some(old) = self.shapes.get(&relation.oid) else {
            // The first description in this session: under `stop`, compare with the lake.
            if let Some(known) = self.known.remove(&*shape.table).filter(|_| stop) {
                stop_at(&shape, &known, &shape.source_columns(), lsn)?;
            }
            self.shapes.insert(relation.oid, shape);
            return Ok(());
        };
        if **old == *shape {
            return Ok(());
        }
        if stop {
            stop_at(&shape, &old.source_columns(), &shape.source_columns(), lsn)?;
        }
        // The old builders keep the old shape: the ordinary one is emitted with the next
        // batch, a streamed transaction's rows so far become a chunk (spilled with their
        // schema). The sink follows the new shape (see crate::evolution).
        if let Some(b) = self.builders.remove(&relation.oid) {
            self.retired.push(b);
        }
        let streams: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.builders.keys().any(|(_, oid)| *oid == relation.oid))
            .map(|(xid, _)| *xid)
            .collect();
        for xid in streams {
            self.flush_stream(xid)?;
            if let Some(stream) = self.streams.get_mut(&xid) {
                stream.builders.retain(|(_, oid), _| *oid != relation.oid);
            }
        }
        self.shapes.insert(relation.oid, shape);
        Ok(())
    }

    fn key_differs(
        &self,
        relation: u32,
        old: &Tuple<'_>,
        new: &Tuple<'_>,
        lsn: Lsn,
    ) -> Result<bool> {
        let shape = self
            .shapes
            .get(&relation)
            .ok_or(Error::UnknownRelation { oid: relation, lsn })?;
        // REPLICA IDENTITY FULL marks every column as identity: where the table has a primary
        // key, only a change of it is a key change (a `d` + `u`); otherwise any change is. A
        // key read at start-up that no longer matches the columns (renamed since) is ignored:
        // a `d` + `u` too many is exact, a key change written as `u` would not be.
        let primary_key = self.primary_keys.get(&*shape.table).filter(|pk| {
            pk.iter()
                .all(|k| shape.columns.iter().any(|(name, _, _)| name == k))
        });
        Ok(shape
            .columns
            .iter()
            .zip(old.values().zip(new.values()))
            .any(|((name, _, is_key), (o, n))| {
                let key = primary_key.map_or(*is_key, |pk| pk.contains(name));
                key && o != n && n != super::pgoutput::Value::Unchanged
            }))
    }

    /// Append one row to the right builder: the streamed transaction's when `xid` is set,
    /// else the ordinary transaction's.
    fn row(
        &mut self,
        xid: Option<u32>,
        relation: u32,
        lsn: Lsn,
        size: usize,
        append: impl FnOnce(&mut TableBuilder, RowPosition) -> Result<()>,
    ) -> Result<()> {
        let capacity = self.limits.max_rows.min(8192);
        // The shape is looked up only when a builder is created: not per row.
        let shapes = &self.shapes;
        let new_builder = || -> Result<TableBuilder> {
            let shape = shapes
                .get(&relation)
                .ok_or(Error::UnknownRelation { oid: relation, lsn })?;
            Ok(TableBuilder::new(shape.clone(), capacity))
        };
        match (xid, self.streaming_xid) {
            (Some(subxid), Some(top)) => {
                let stream = self.streams.entry(top).or_default();
                let builder = match stream.builders.entry((subxid, relation)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(new_builder()?),
                };
                // Position is stamped at commit; the ordinal is known now.
                let pos = RowPosition {
                    lsn: Lsn::ZERO,
                    seq: stream.seq,
                    commit_ts: 0,
                };
                append(builder, pos)?;
                stream.seq += 1;
                stream.rows += 1;
                stream.bytes += size;
                if stream.rows >= self.limits.max_rows || stream.bytes >= self.limits.max_bytes {
                    self.flush_stream(top)?;
                }
            }
            (None, _) => {
                let open = self.open.as_mut().ok_or_else(|| {
                    Error::Protocol(format!("change at {lsn} outside a transaction"))
                })?;
                let pos = RowPosition {
                    lsn: open.final_lsn,
                    seq: open.seq,
                    commit_ts: open.commit_ts,
                };
                open.seq += 1;
                let builder = match self.builders.entry(relation) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(new_builder()?),
                };
                append(builder, pos)?;
                self.pending_rows += 1;
                self.pending_bytes += size;
            }
            (Some(_), None) => {
                return Err(Error::Protocol(format!(
                    "streamed change at {lsn} outside a stream block"
                )))
            }
        }
        Ok(())
    }

    /// Emit a streamed transaction's rows so far as chunks (one per subtransaction).
    fn flush_stream(&mut self, xid: u32) -> Result<()> {
        let Some(stream) = self.streams.get_mut(&xid) else {
            return Ok(());
        };
        let mut by_subxid: HashMap<u32, Vec<TableBatch>> = HashMap::new();
        for ((subxid, _), b) in stream.builders.iter_mut() {
            if let Some(batch) = b.take()? {
                by_subxid.entry(*subxid).or_default().push(TableBatch {
                    table: b.shape().table.clone(),
                    batch,
                });
            }
        }
        stream.rows = 0;
        stream.bytes = 0;
        for (subxid, tables) in by_subxid {
            self.events.push(Event::StreamChunk {
                xid,
                subxid,
                tables,
            });
        }
        Ok(())
    }
}

/// The remaining rows of a committed stream, still unstamped: the sink stamps the commit
/// position on every row of the transaction (chunks included) when it makes it visible.
fn take_all(stream: Stream) -> Result<Vec<TableBatch>> {
    let mut tables = Vec::new();
    for (_, mut b) in stream.builders {
        if let Some(batch) = b.take()? {
            tables.push(TableBatch {
                table: b.shape().table.clone(),
                batch,
            });
        }
    }
    Ok(tables)
}

/// Under the `stop` policy: the error for the first change from `before` to `after` that the
/// policy does not follow (anything but added columns).
fn stop_at(shape: &TableShape, before: &Columns, after: &Columns, lsn: Lsn) -> Result<()> {
    match evolution::diff(before, after)
        .into_iter()
        .find(ColumnChange::stops)
    {
        Some(change) => Err(Error::SchemaChange {
            table: shape.table.to_string(),
            column: change.column().to_string(),
            lsn,
            reason: evolution::stop_reason(&change),
        }),
        None => Ok(()),
    }
}
