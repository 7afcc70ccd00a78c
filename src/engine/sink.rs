//! The Delta sink on its own task behind a byte-bounded queue: what it reports back (the durable
//! position, the snapshot chunks it committed) and how it is ended.
//!
//! The durable position goes back to the source, and only to it: it is what the source may
//! confirm. The same commit positions are published as the hub position, which hub sinks read
//! up to and never past. The commit time of each event made durable is recorded in the
//! source's [`Freshness`] (the newest durable commit time, for the lag in seconds).

use std::sync::Arc;

use replication::change::{Event, TableName};
use replication::health::Freshness;
use replication::{queue, Lsn};
use sinks::delta::DeltaSink;
use sinks::hub::HubPosition;
use sinks::metrics as m;
use tokio::sync::watch;

/// The sink's task: it ends when the queue's senders are gone and the queue is drained.
pub(crate) type SinkTask = tokio::task::JoinHandle<Result<(), sinks::Error>>;

/// The last incremental-snapshot chunk the sink committed: table and chunk number.
pub(crate) type CommittedChunk = Option<(Arc<TableName>, u64)>;

/// The sink running on its own task behind a byte-bounded queue.
pub(crate) struct SinkHandle {
    /// Where the source sends its events, bounded in bytes.
    pub tx: queue::Sender<Event>,
    /// The durable source position.
    pub durable: watch::Receiver<Lsn>,
    /// The last snapshot chunk committed. A chunk's position may equal the transaction's
    /// before it (MySQL places chunks at the boundary the stream stands at), so its
    /// durability is told by number, not by the durable position.
    pub chunks: watch::Receiver<CommittedChunk>,
    /// The sink's task (see [`join_sink`]).
    pub task: SinkTask,
}

/// Run the sink on its own task behind a byte-bounded queue; it publishes the durable position
/// and the chunks it committed.
///
/// Each event's commit position is published on `hub` once it is durable in every table:
/// the hub position W that hub sinks read up to (see `sinks::hub`); its commit time is
/// recorded in `freshness`.
pub(crate) fn spawn_sink(
    mut sink: DeltaSink,
    budget: usize,
    hub: HubPosition,
    freshness: Freshness,
) -> SinkHandle {
    let (tx, mut rx) = queue::channel::<Event>(budget);
    let (durable_tx, durable) = watch::channel(Lsn::ZERO);
    let (chunks_tx, chunks) = watch::channel(None);
    metrics::gauge!(m::QUEUE_BUDGET).set(rx.capacity() as f64);
    let task = tokio::spawn(async move {
        while let Some((event, permit)) = rx.recv().await {
            metrics::gauge!(m::QUEUE_BYTES).set(rx.in_use() as f64);
            let rows = event.rows();
            let commit_ts = commit_ts(&event);
            let chunk = match &event {
                Event::SnapshotChunk { table, chunk, .. } => Some((table.table.clone(), *chunk)),
                _ => None,
            };
            let commit = match &event {
                Event::Committed { commit_lsn, .. }
                | Event::StreamCommit { commit_lsn, .. }
                | Event::SnapshotCommit { commit_lsn, .. }
                | Event::SnapshotChunk { commit_lsn, .. } => Some(*commit_lsn),
                _ => None,
            };
            if let Some(commit) = commit {
                metrics::gauge!(m::SOURCE_POSITION).set(commit.0 as f64);
            }
            if let Some(end) = sink.apply(event).await? {
                tracing::debug!(rows, %end, "durable");
                durable_tx.send_replace(end);
                metrics::gauge!(m::DURABLE_POSITION).set(end.0 as f64);
                crate::observe::durable(end.0, commit_ts);
                if let Some(commit) = commit {
                    hub.publish(commit);
                }
                if let Some(ts) = commit_ts {
                    freshness.record(ts);
                }
            }
            if chunk.is_some() {
                chunks_tx.send_replace(chunk);
            }
            drop(permit);
        }
        Ok::<_, sinks::Error>(())
    });
    SinkHandle {
        tx,
        durable,
        chunks,
        task,
    }
}

/// The source commit time (unix microseconds) of an event's newest row, if it has rows that
/// carry one (snapshot rows carry the snapshot's time).
fn commit_ts(event: &Event) -> Option<i64> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::TimestampMicrosecondType;
    let tables = match event {
        Event::Committed { tables, .. } => tables,
        Event::StreamCommit { commit_ts, .. } | Event::Marker { commit_ts, .. } => {
            return Some(*commit_ts)
        }
        _ => return None,
    };
    tables
        .iter()
        .filter_map(|t| {
            let ts = t
                .batch
                .column_by_name(replication::change::COMMIT_TS_COLUMN)?
                .as_primitive_opt::<TimestampMicrosecondType>()?;
            (!ts.is_empty()).then(|| ts.value(ts.len() - 1))
        })
        .max()
}

/// End a snapshot's stream to the sink: make it visible (`commit`: at `.0`, durable up to
/// `.1`) when the copy succeeded, then wait for the sink to finish.
pub(crate) async fn finish_snapshot(
    tx: queue::Sender<Event>,
    sink_task: SinkTask,
    lake: &std::path::Path,
    commit: Option<(Lsn, Lsn)>,
) -> Result<(), sinks::Error> {
    if let Some((commit_lsn, end_lsn)) = commit {
        let commit = Event::SnapshotCommit {
            commit_lsn,
            end_lsn,
        };
        if let Ok(permit) = tx.reserve(commit.memory_size()).await {
            let _ = tx.send(commit, permit);
        }
    }
    drop(tx);
    join_sink(sink_task, lake).await
}

/// Wait for the sink's task to end; a panic or abort is an I/O error on the lake.
pub(crate) async fn join_sink(task: SinkTask, lake: &std::path::Path) -> Result<(), sinks::Error> {
    match task.await {
        Ok(r) => r,
        Err(join) => Err(sinks::Error::Io {
            path: lake.display().to_string(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}
