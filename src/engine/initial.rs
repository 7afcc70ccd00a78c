//! The sink side of an initial snapshot, the same for both sources: the Delta sink behind its
//! queue, the progress reporter, and the end, which commits the copy only when all of it
//! succeeded.
//!
//! ```text
//!  InitialLoad::start ─▶ source copies into tx() (counting rows in progress()) ─▶ end:
//!      commit at (commit position, durable end) if the copy succeeded, else nothing visible;
//!      wait for the sink; close the source's snapshot; "initial snapshot done"
//! ```
//!
//! Each table lands as one Delta commit at the snapshot's position, so a table without a
//! position in the lake was not finished (see `incremental::catch_up`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use replication::change::Event;
use replication::{queue, Lsn};
use sinks::delta::DeltaSink;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sink::{finish_snapshot, spawn_sink, SinkHandle, SinkTask};
use super::source::Pipeline;
use super::PipelineError;
use crate::progress::Progress;

/// An initial snapshot in progress: where its rows go and how far it got.
pub struct InitialLoad {
    tx: queue::Sender<Event>,
    sink_task: SinkTask,
    progress: Arc<Progress>,
    stop_reporting: CancellationToken,
    reporter: Option<JoinHandle<()>>,
    started: Instant,
    lake: PathBuf,
}

impl InitialLoad {
    /// Run `sink` on its task and report `progress` (its tables may already be added) until
    /// the end; `started` is when the snapshot began, for the last log line.
    pub fn start(
        pipeline: &Pipeline<'_>,
        sink: DeltaSink,
        progress: Arc<Progress>,
        started: Instant,
    ) -> Self {
        let SinkHandle {
            tx,
            task: sink_task,
            ..
        } = spawn_sink(
            sink,
            pipeline.max_inflight_bytes,
            pipeline.hub.clone(),
            pipeline.health.freshness.clone(),
        );
        let stop_reporting = CancellationToken::new();
        let reporter = tokio::spawn(progress.clone().report(stop_reporting.clone()));
        InitialLoad {
            tx,
            sink_task,
            progress,
            stop_reporting,
            reporter: Some(reporter),
            started,
            lake: pipeline.lake.to_path_buf(),
        }
    }

    /// Where the copied rows go.
    pub fn tx(&self) -> &queue::Sender<Event> {
        &self.tx
    }

    /// The tables' row counters.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Stop reporting progress, after one last report.
    pub async fn stop_reporting(&mut self) {
        self.stop_reporting.cancel();
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.await;
        }
    }

    /// End the load: when `copied` succeeded, make it visible at `commit.0`, durable up to
    /// `commit.1`; wait for the sink, then `close` the source's snapshot. Returns the rows
    /// copied; a sink failure comes before the copy's.
    pub async fn end(
        mut self,
        copied: Result<u64, replication::Error>,
        commit: (Lsn, Lsn),
        close: impl Future<Output = ()>,
    ) -> Result<u64, PipelineError> {
        self.stop_reporting().await;
        let commit = copied.is_ok().then_some(commit);
        let sink_result = finish_snapshot(self.tx, self.sink_task, &self.lake, commit).await;
        close.await;
        sink_result?;
        let rows = copied?;
        tracing::info!(
            rows,
            seconds = self.started.elapsed().as_secs_f64(),
            "initial snapshot done"
        );
        Ok(rows)
    }
}
