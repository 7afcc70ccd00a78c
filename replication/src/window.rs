//! The stream side of incremental snapshots (DBLog): the source's view of each chunk's
//! window, and the messages Sluice writes into the PostgreSQL WAL.
//!
//! ```text
//!  driver:  register(id) ─ emit LOW(id) ─ SELECT chunk ─ send rows(id) ─ emit HIGH(id)
//!  stream:  … changes … LOW(id) … changes to keys k₁ k₂ … HIGH(id) … changes …
//!                        └──── window: keys changed here ─┘
//!  at HIGH: chunk rows minus {k₁, k₂ …} ─▶ Event::SnapshotChunk at HIGH's commit position
//! ```
//!
//! Why it is exact: the chunk was read after LOW committed and before HIGH was written. For a
//! key no transaction changed inside the window, the row read is the row as of HIGH; emitted at
//! HIGH, it sits in commit order. For a key that was changed inside the window, the streamed
//! change is at least as new as what the read saw, so the chunk's row is dropped. A window
//! the key comparison cannot reason about is thrown away and the chunk read again: a
//! streamed (large) transaction on the table committing inside the window (its rows went to
//! the sinks as they arrived, not kept for comparison), a truncate, a row without its key
//! (REPLICA IDENTITY other than the primary key), or a schema change of the table.
//!
//! Watermarks the source does not know (a previous run's, after a crash) are ignored: that
//! chunk is read again with new watermarks, and its old rows were never committed.
//!
//! **Positioned windows (MySQL/MariaDB).** The binlog has no logical messages, and Sluice does
//! not write to the source. Instead each chunk is read in its own consistent-snapshot
//! transaction, which names the exact binlog position `at` its rows are as of. The window opens
//! when the source takes the registration (the driver waits for that, through a
//! [`ToSource::Ping`], before it starts the read, so the window opens at or before `at`) and
//! closes at the first transaction boundary at or after `at` where the stream stands once the
//! rows arrived. Keys changed between registration and `at` are dropped too: their streamed
//! changes carry whole rows (`binlog_row_image = FULL`), so the latest one already is the row.
//!
//! ```text
//!  driver:  register(id) ─ ping ─ consistent snapshot (at) ─ SELECT chunk ─ rows(id, at)
//!  stream:  … register … changes to k₁ … at … changes to k₂ … boundary ≥ at, rows here
//!  at the boundary: chunk rows minus {k₁, k₂} ─▶ Event::SnapshotChunk at the boundary
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, StringArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::change::{stamp_position, Event, TableBatch, TableName, OP_COLUMN};
use crate::{Error, Lsn, Result};

/// A message Sluice writes into the WAL with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The pipeline it is meant for (every slot of the database sees every message).
    pub pipeline: String,
    /// What it says.
    #[serde(flatten)]
    pub body: MarkerBody,
}

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerBody {
    /// A chunk's window opens (the read starts after this commits).
    Low { id: u64 },
    /// A chunk's window closes (the read finished before this was written).
    High { id: u64 },
    /// `sluice snapshot`: re-snapshot a table (or the rows matching a predicate).
    Request(SnapshotRequest),
}

/// A request to snapshot one table incrementally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// `schema.table`.
    pub table: String,
    /// Only rows matching this SQL predicate.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl Marker {
    /// The JSON written into the WAL.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse a marker's content; `None` if it is not one of ours.
    pub fn decode(content: &str) -> Option<Marker> {
        serde_json::from_str(content).ok()
    }
}

/// A chunk whose window the source should track, registered before its low watermark.
#[derive(Debug, Clone)]
pub struct ChunkWindow {
    /// Watermark id (unique within the process).
    pub id: u64,
    /// The table read.
    pub table: Arc<TableName>,
    /// Primary key column names.
    pub key: Vec<String>,
    /// Chunk number, committed with the rows as the durable progress.
    pub chunk: u64,
}

/// What became of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Handed to the sinks at `end_lsn` (the high watermark, or a MySQL chunk's boundary);
    /// durable once the sink reports its chunk number committed (the position may be shared
    /// with the transaction before it, so it cannot tell).
    Emitted { end_lsn: Lsn, rows: usize },
    /// The window cannot be resolved by key; read the chunk again.
    Retry { reason: &'static str },
}

/// One chunk read.
#[derive(Debug)]
pub struct ChunkRead {
    /// The rows, op `r`, positions to be stamped when the window closes.
    pub batches: Vec<RecordBatch>,
    /// Rows read.
    pub rows: usize,
    /// The chunk's last key (text, per key column); `None`: this was the last chunk.
    pub upper: Option<Vec<String>>,
}

/// Driver → source.
#[derive(Debug)]
pub enum ToSource {
    /// Track this chunk's window (sent before its low watermark is written).
    Register(ChunkWindow, oneshot::Sender<ChunkOutcome>),
    /// The chunk's rows (sent before its high watermark is written); `at`: the source
    /// position they are as of, for positioned windows.
    Rows {
        id: u64,
        batches: Vec<RecordBatch>,
        at: Option<Lsn>,
    },
    /// Answered once every message sent before it was taken.
    Ping(oneshot::Sender<()>),
    /// The chunk failed before its high watermark: stop tracking it.
    Forget { id: u64 },
}

/// A snapshot request found in the stream with the commit position of the message, handed to
/// whoever persists it; the source waits for the acknowledgement before moving past it, so the
/// request is never confirmed away unstored.
pub type RequestSender = mpsc::UnboundedSender<(SnapshotRequest, Lsn, oneshot::Sender<()>)>;

struct Window {
    spec: ChunkWindow,
    reply: oneshot::Sender<ChunkOutcome>,
    /// The low watermark was seen.
    open: bool,
    /// Keys changed inside the window, in Arrow row format.
    changed: HashSet<Box<[u8]>>,
    converter: Option<RowConverter>,
    retry: Option<&'static str>,
    rows: Option<Vec<RecordBatch>>,
    /// Positioned windows: the position the rows are as of.
    at: Option<Lsn>,
}

/// What the source does with an event after the windows saw it.
pub enum Step {
    /// Deliver it.
    Deliver(Event),
    /// Persist the request (and wait for that), then deliver the event.
    Request(SnapshotRequest, Event),
}

/// Tracks the windows of in-flight chunks for one source session.
pub struct Windows {
    pipeline: String,
    rx: Option<mpsc::UnboundedReceiver<ToSource>>,
    windows: HashMap<u64, Window>,
    /// Tables touched by each streamed transaction in progress.
    streams: HashMap<u32, HashSet<Arc<TableName>>>,
    /// Windows open on registration and close at a position (MySQL/MariaDB), instead of at
    /// watermarks.
    positioned: bool,
}

/// The source's end of the incremental-snapshot driver.
#[derive(Debug)]
pub struct SnapshotLink {
    /// Chunks to track and their rows.
    pub chunks: mpsc::UnboundedReceiver<ToSource>,
    /// Where snapshot requests found in the stream go to be persisted.
    pub requests: RequestSender,
    /// Whether no incremental snapshot is pending (`--until caught-up` waits for it).
    pub idle: tokio::sync::watch::Receiver<bool>,
}

impl Windows {
    /// Windows for `pipeline`, registered through `rx` (none: snapshots are not driven).
    pub fn new(pipeline: String, rx: Option<mpsc::UnboundedReceiver<ToSource>>) -> Self {
        Windows {
            pipeline,
            rx,
            windows: HashMap::new(),
            streams: HashMap::new(),
            positioned: false,
        }
    }

    /// Positioned windows (see the module doc), for a source without watermarks.
    pub fn positioned(rx: Option<mpsc::UnboundedReceiver<ToSource>>) -> Self {
        Windows {
            positioned: true,
            ..Windows::new(String::new(), rx)
        }
    }

    /// Whether a chunk is registered and not yet resolved.
    pub fn busy(&mut self) -> bool {
        self.drain();
        !self.windows.is_empty()
    }

    /// Wait for the driver's next message and take it (never returns without a driver).
    pub async fn message(&mut self) {
        let message = match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => None,
        };
        match message {
            Some(message) => self.take(message),
            // The driver is gone: nothing more will come.
            None => {
                self.rx = None;
                std::future::pending().await
            }
        }
    }

    /// Take the driver's messages.
    pub fn drain(&mut self) {
        while let Some(message) = self.rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
            self.take(message);
        }
    }

    fn take(&mut self, message: ToSource) {
        match message {
            ToSource::Register(spec, reply) => {
                self.windows.insert(
                    spec.id,
                    Window {
                        spec,
                        reply,
                        open: self.positioned,
                        changed: HashSet::new(),
                        converter: None,
                        retry: None,
                        rows: None,
                        at: None,
                    },
                );
            }
            ToSource::Rows { id, batches, at } => {
                if let Some(w) = self.windows.get_mut(&id) {
                    w.rows = Some(batches);
                    w.at = at;
                }
            }
            ToSource::Ping(reply) => {
                let _ = reply.send(());
            }
            ToSource::Forget { id } => {
                self.windows.remove(&id);
            }
        }
    }

    /// Look at an event on its way to the sinks.
    pub fn observe(&mut self, event: Event) -> Result<Step> {
        match &event {
            Event::Committed { tables, .. } => {
                for w in self.windows.values_mut().filter(|w| w.open) {
                    let table = w.spec.table.clone();
                    for tb in tables.iter().filter(|tb| tb.table == table) {
                        w.record(tb)?;
                    }
                }
            }
            Event::StreamChunk { xid, tables, .. } => {
                let touched = self.streams.entry(*xid).or_default();
                touched.extend(tables.iter().map(|t| t.table.clone()));
            }
            Event::StreamAbort { xid, subxid } if xid == subxid => {
                self.streams.remove(xid);
            }
            Event::StreamCommit { xid, tables, .. } => {
                let mut touched = self.streams.remove(xid).unwrap_or_default();
                touched.extend(tables.iter().map(|t| t.table.clone()));
                for w in self.windows.values_mut().filter(|w| w.open) {
                    if touched.contains(&w.spec.table) {
                        w.retry
                            .get_or_insert("a streamed transaction changed the table");
                    }
                }
            }
            Event::Marker { content, .. } => {
                if let Some(marker) = Marker::decode(content) {
                    if marker.pipeline == self.pipeline {
                        return self.marker(marker.body, event);
                    }
                }
            }
            _ => {}
        }
        Ok(Step::Deliver(event))
    }

    /// A table's shape changed in the stream: chunks of it read before cannot be trusted.
    pub fn schema_changed(&mut self, table: &TableName) {
        for w in self.windows.values_mut().filter(|w| w.open) {
            if *w.spec.table == *table {
                w.retry.get_or_insert("the table's schema changed");
            }
        }
    }

    fn marker(&mut self, body: MarkerBody, event: Event) -> Result<Step> {
        self.drain();
        match body {
            MarkerBody::Low { id } => {
                if let Some(w) = self.windows.get_mut(&id) {
                    w.open = true;
                }
                Ok(Step::Deliver(event))
            }
            MarkerBody::High { id } => {
                let Some(w) = self.windows.remove(&id) else {
                    return Ok(Step::Deliver(event));
                };
                let Event::Marker {
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                    ..
                } = event
                else {
                    return Ok(Step::Deliver(event));
                };
                match w.settle(commit_lsn, end_lsn, commit_ts)? {
                    Some(chunk) => Ok(Step::Deliver(chunk)),
                    None => Ok(Step::Deliver(event)),
                }
            }
            MarkerBody::Request(request) => Ok(Step::Request(request, event)),
        }
    }
}

impl Windows {
    /// Positioned windows: whether a chunk's rows are in and its position `at` was reached by
    /// `boundary`, the transaction boundary the stream stands at.
    pub fn ready(&mut self, boundary: Lsn) -> bool {
        self.drain();
        self.windows
            .values()
            .any(|w| w.rows.is_some() && w.at.is_some_and(|at| at <= boundary))
    }

    /// Positioned windows: settle every ready chunk at `boundary` (everything up to it was
    /// observed), in registration order. Returns the chunk events to deliver.
    pub fn settle_ready(&mut self, boundary: Lsn, commit_ts: i64) -> Result<Vec<Event>> {
        let mut ready: Vec<u64> = self
            .windows
            .iter()
            .filter(|(_, w)| w.rows.is_some() && w.at.is_some_and(|at| at <= boundary))
            .map(|(id, _)| *id)
            .collect();
        ready.sort_unstable();
        let mut out = Vec::new();
        for id in ready {
            if let Some(w) = self.windows.remove(&id) {
                out.extend(w.settle(boundary, boundary, commit_ts)?);
            }
        }
        Ok(out)
    }
}

impl Window {
    /// Close the window at `commit_lsn`: the chunk event to deliver (the driver told it was
    /// emitted), or `None` with the driver told to read the chunk again.
    fn settle(mut self, commit_lsn: Lsn, end_lsn: Lsn, commit_ts: i64) -> Result<Option<Event>> {
        let (outcome, event) = match self.resolve(commit_lsn, commit_ts)? {
            Some(batch) => (
                ChunkOutcome::Emitted {
                    end_lsn,
                    rows: batch.num_rows(),
                },
                Some(Event::SnapshotChunk {
                    table: TableBatch {
                        table: self.spec.table.clone(),
                        batch,
                    },
                    chunk: self.spec.chunk,
                    commit_lsn,
                    end_lsn,
                }),
            ),
            None => (
                ChunkOutcome::Retry {
                    reason: self.retry.unwrap_or("the chunk's rows never arrived"),
                },
                None,
            ),
        };
        // A closed reply: the driver is gone, and the session with it.
        let _ = self.reply.send(outcome);
        Ok(event)
    }

    fn key_columns(&self, batch: &RecordBatch) -> Result<Option<Vec<ArrayRef>>> {
        let mut out = Vec::with_capacity(self.spec.key.len());
        for name in &self.spec.key {
            match batch.column_by_name(name) {
                Some(c) => out.push(c.clone()),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn converter(&mut self, columns: &[ArrayRef]) -> Result<&mut RowConverter> {
        if self.converter.is_none() {
            let fields = columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields).map_err(arrow_error)?);
        }
        self.converter
            .as_mut()
            .ok_or_else(|| Error::Protocol("row converter".into()))
    }

    /// Remember the keys a committed batch of the window's table changed.
    fn record(&mut self, tb: &TableBatch) -> Result<()> {
        if self.retry.is_some() {
            return Ok(());
        }
        let batch = &tb.batch;
        let truncated = batch
            .column_by_name(OP_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .is_some_and(|ops| ops.iter().any(|op| op == Some("t")));
        if truncated {
            self.retry = Some("the table was truncated");
            return Ok(());
        }
        let Some(columns) = self.key_columns(batch)? else {
            self.retry = Some("the table's key columns changed");
            return Ok(());
        };
        if columns.iter().any(|c| c.null_count() > 0) {
            self.retry = Some("a change without its primary key (replica identity)");
            return Ok(());
        }
        let rows = match self.converter(&columns)?.convert_columns(&columns) {
            Ok(rows) => rows,
            Err(_) => {
                self.retry = Some("the key's type changed");
                return Ok(());
            }
        };
        for row in rows.iter() {
            self.changed.insert(row.as_ref().into());
        }
        Ok(())
    }

    /// The chunk's rows whose key no change in the window touched, stamped with the high
    /// watermark's position, as one batch; `None` when the chunk must be read again.
    fn resolve(&mut self, commit_lsn: Lsn, commit_ts: i64) -> Result<Option<RecordBatch>> {
        if self.retry.is_some() || !self.open {
            self.retry.get_or_insert("the low watermark was not seen");
            return Ok(None);
        }
        let Some(batches) = self.rows.take() else {
            return Ok(None);
        };
        if batches.is_empty() {
            return Ok(None);
        }
        // The batches of one chunk can differ by `<column>__text` companions (a batch has one
        // only if a value its column cannot hold appeared in it): concatenate on the union of
        // their columns, never on the first batch's (which would drop the others' companions).
        let schema = Arc::new(
            Schema::try_merge(batches.iter().map(|b| b.schema().as_ref().clone()))
                .map_err(arrow_error)?,
        );
        let mut kept = Vec::with_capacity(batches.len());
        for batch in &batches {
            let batch = if self.changed.is_empty() {
                batch.clone()
            } else {
                let columns = self
                    .key_columns(batch)?
                    .ok_or_else(|| Error::Protocol("chunk batch without its key".into()))?;
                let rows = self
                    .converter(&columns)?
                    .convert_columns(&columns)
                    .map_err(arrow_error)?;
                let keep: BooleanArray = rows
                    .iter()
                    .map(|r| Some(!self.changed.contains(r.as_ref())))
                    .collect();
                filter_record_batch(batch, &keep).map_err(arrow_error)?
            };
            let batch = stamp_position(&batch, commit_lsn, commit_ts).map_err(arrow_error)?;
            kept.push(widen(&batch, &schema)?);
        }
        let batch =
            deltalake::arrow::compute::concat_batches(&schema, &kept).map_err(arrow_error)?;
        Ok(Some(batch))
    }
}

/// `batch` with `schema`'s columns, null where it has none of that name.
fn widen(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() == schema.fields().len() {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| new_null_array(f.data_type(), batch.num_rows()))
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

fn arrow_error(e: deltalake::arrow::error::ArrowError) -> Error {
    Error::Protocol(format!("incremental snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn table() -> Arc<TableName> {
        Arc::new(TableName::parse("public.t").unwrap())
    }

    fn batch(ops: &[&str], ids: &[i64]) -> RecordBatch {
        let n = ids.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new(OP_COLUMN, DataType::Utf8, false),
            Field::new(crate::change::LSN_COLUMN, DataType::Int64, false),
            Field::new(
                crate::change::COMMIT_TS_COLUMN,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("id", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ops.to_vec())),
                Arc::new(Int64Array::from(vec![0; n])),
                Arc::new(
                    deltalake::arrow::array::TimestampMicrosecondArray::from(vec![0; n])
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(ids.to_vec())),
            ],
        )
        .unwrap()
    }

    fn marker(body: MarkerBody, lsn: u64) -> Event {
        Event::Marker {
            content: Marker {
                pipeline: "p".into(),
                body,
            }
            .encode(),
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_ts: 7,
        }
    }

    fn committed(ops: &[&str], ids: &[i64]) -> Event {
        Event::Committed {
            tables: vec![TableBatch {
                table: table(),
                batch: batch(ops, ids),
            }],
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            gtid: None,
        }
    }

    fn setup() -> (
        Windows,
        mpsc::UnboundedSender<ToSource>,
        oneshot::Receiver<ChunkOutcome>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, outcome) = oneshot::channel();
        tx.send(ToSource::Register(
            ChunkWindow {
                id: 9,
                table: table(),
                key: vec!["id".into()],
                chunk: 3,
            },
            reply,
        ))
        .unwrap();
        (Windows::new("p".into(), Some(rx)), tx, outcome)
    }

    fn deliver(step: Step) -> Event {
        match step {
            Step::Deliver(e) => e,
            Step::Request(..) => panic!("unexpected request"),
        }
    }

    #[test]
    fn keys_changed_inside_the_window_are_dropped_from_the_chunk() {
        let (mut w, tx, mut outcome) = setup();
        // Before the low watermark: not in the window.
        deliver(w.observe(committed(&["u"], &[1])).unwrap());
        deliver(w.observe(marker(MarkerBody::Low { id: 9 }, 100)).unwrap());
        deliver(w.observe(committed(&["u", "d"], &[2, 3])).unwrap());
        tx.send(ToSource::Rows {
            at: None,
            id: 9,
            batches: vec![batch(&["r"; 4], &[1, 2, 3, 4])],
        })
        .unwrap();
        let event = deliver(w.observe(marker(MarkerBody::High { id: 9 }, 200)).unwrap());
        let Event::SnapshotChunk {
            table,
            chunk,
            commit_lsn,
            ..
        } = event
        else {
            panic!("expected a chunk")
        };
        assert_eq!((chunk, commit_lsn), (3, Lsn(200)));
        let ids = table.batch.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 4]);
        let lsn = table
            .batch
            .column_by_name(crate::change::LSN_COLUMN)
            .unwrap();
        let lsn = lsn.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(lsn.iter().all(|v| v == Some(200)));
        assert_eq!(
            outcome.try_recv().unwrap(),
            ChunkOutcome::Emitted {
                end_lsn: Lsn(208),
                rows: 2
            }
        );
        assert!(!w.busy());
    }

    #[test]
    fn a_companion_in_a_later_batch_of_the_chunk_is_kept() {
        let plain = batch(&["r"; 2], &[1, 2]);
        let mut fields: Vec<Field> = plain
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("d__text", DataType::Utf8, true));
        let mut columns = batch(&["r"], &[3]).columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![Some("infinity")])));
        let with = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        for batches in [vec![plain.clone(), with.clone()], vec![with, plain]] {
            let (mut w, tx, _outcome) = setup();
            deliver(w.observe(marker(MarkerBody::Low { id: 9 }, 100)).unwrap());
            tx.send(ToSource::Rows {
                at: None,
                id: 9,
                batches,
            })
            .unwrap();
            let event = deliver(w.observe(marker(MarkerBody::High { id: 9 }, 200)).unwrap());
            let Event::SnapshotChunk { table, .. } = event else {
                panic!("expected a chunk")
            };
            assert_eq!(table.batch.num_rows(), 3);
            let text = table.batch.column_by_name("d__text").unwrap();
            let text = text.as_any().downcast_ref::<StringArray>().unwrap();
            let ids = table.batch.column_by_name("id").unwrap();
            let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
            for (id, text) in ids.iter().zip(text.iter()) {
                assert_eq!(text, (id == Some(3)).then_some("infinity"));
            }
        }
    }

    #[test]
    fn a_truncate_or_streamed_commit_in_the_window_means_read_again() {
        for disturbance in [
            committed(&["t"], &[0]),
            Event::StreamCommit {
                xid: 5,
                tables: vec![],
                commit_lsn: Lsn(1),
                end_lsn: Lsn(2),
                commit_ts: 0,
            },
        ] {
            let (mut w, tx, mut outcome) = setup();
            deliver(
                w.observe(Event::StreamChunk {
                    xid: 5,
                    subxid: 5,
                    tables: vec![TableBatch {
                        table: table(),
                        batch: batch(&["c"], &[1]),
                    }],
                })
                .unwrap(),
            );
            deliver(w.observe(marker(MarkerBody::Low { id: 9 }, 100)).unwrap());
            deliver(w.observe(disturbance).unwrap());
            tx.send(ToSource::Rows {
                at: None,
                id: 9,
                batches: vec![batch(&["r"], &[1])],
            })
            .unwrap();
            let event = deliver(w.observe(marker(MarkerBody::High { id: 9 }, 200)).unwrap());
            assert!(matches!(event, Event::Marker { .. }));
            assert!(matches!(
                outcome.try_recv().unwrap(),
                ChunkOutcome::Retry { .. }
            ));
        }
    }

    #[test]
    fn other_pipelines_and_unknown_watermarks_pass_through() {
        let (mut w, _tx, _outcome) = setup();
        let other = Event::Marker {
            content: Marker {
                pipeline: "q".into(),
                body: MarkerBody::High { id: 9 },
            }
            .encode(),
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_ts: 0,
        };
        assert!(matches!(
            deliver(w.observe(other).unwrap()),
            Event::Marker { .. }
        ));
        assert!(matches!(
            deliver(w.observe(marker(MarkerBody::High { id: 77 }, 5)).unwrap()),
            Event::Marker { .. }
        ));
        let request = marker(
            MarkerBody::Request(SnapshotRequest {
                table: "public.t".into(),
                filter: Some("id > 5".into()),
            }),
            9,
        );
        assert!(
            matches!(w.observe(request).unwrap(), Step::Request(r, _) if r.filter.as_deref() == Some("id > 5"))
        );
    }
}
