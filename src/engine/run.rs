//! The run loop: prepare once, then sessions with retries; one session wires the sink, the
//! incremental snapshot driver, the source's stream and the resume saver, and ends them in
//! order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use replication::source::SourceExit;
use replication::ErrorClass;
use sinks::delta::DeltaSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::incremental;
use super::sink::{join_sink, spawn_sink, SinkHandle};
use super::source::{Prepared, Source, Stream};
use super::PipelineError;
use crate::state::Store;

/// First and longest wait between retries of a transient failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// How often the resume position is written while it moves (it is also written at the end of
/// every session).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Prepare the source, then stream until cancelled, caught up, or a definite error. Transient
/// errors are retried with backoff, the preparation's too: a sidecar started before its
/// database accepts connections waits for it (a definite problem, such as a bad password or a
/// missing table, still stops at once).
pub async fn run<S: Source>(
    source: &S,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let prepared = with_retries(&cancel, "preparing", |_| source.prepare(until_caught_up)).await?;
    let Some(Some(Prepared { store, plan })) = prepared else {
        // Cancelled while waiting (`None`), or nothing to stream (`Some(None)`).
        return Ok(match prepared {
            None => SourceExit::Cancelled,
            Some(_) => SourceExit::CaughtUp,
        });
    };
    let store = Arc::new(store);
    with_retries(&cancel, "streaming", |connected| {
        session(source, &plan, store.clone(), cancel.clone(), connected)
    })
    .await
    .map(|exit| exit.unwrap_or(SourceExit::Cancelled))
}

/// Run `attempt` until it ends without a transient failure, waiting longer after each failure
/// in a row; `None` when cancelled while waiting. An attempt that set the flag it is handed
/// (a session that reached the source: connected and streaming) ends the row, so a
/// connection cut now and then (a proxy, a failover) costs the first wait each time, not the
/// 30 s a database that stays down grows it to. Each failure is logged once, at warn, and
/// counted (`sluice_source_retries_total`).
async fn with_retries<T, F, Fut>(
    cancel: &CancellationToken,
    stage: &str,
    mut attempt: F,
) -> Result<Option<T>, PipelineError>
where
    F: FnMut(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Result<T, PipelineError>>,
{
    let mut backoff = BACKOFF.0;
    let connected = Arc::new(AtomicBool::new(false));
    loop {
        match attempt(connected.clone()).await {
            Ok(done) => return Ok(Some(done)),
            Err(e) if e.class() == ErrorClass::Transient && !cancel.is_cancelled() => {
                if connected.swap(false, Ordering::Relaxed) {
                    backoff = BACKOFF.0;
                }
                tracing::warn!(error = %e, retry_in = ?backoff, stage, "transient failure, retrying");
                metrics::counter!(sinks::metrics::SOURCE_RETRIES).increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Ok(None),
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One connection's worth of streaming, with the incremental snapshots beside it.
///
/// Every session starts from what the lake holds (the sink reads each table's position back),
/// so a retried session re-reads from the source's confirmed position and skips what is
/// already durable.
async fn session<S: Source>(
    source: &S,
    plan: &S::Plan,
    store: Arc<Store>,
    cancel: CancellationToken,
    connected: Arc<AtomicBool>,
) -> Result<SourceExit, PipelineError> {
    let pipeline = source.pipeline();
    let (session, resume) = source.session(plan, &store).await?;
    connected.store(true, Ordering::Relaxed);
    let sink = DeltaSink::open(
        pipeline.lake,
        pipeline.name,
        pipeline.tables,
        pipeline.policies.clone(),
    )
    .await?;
    let mut committed = HashMap::new();
    let mut known = HashMap::new();
    for p in sink.positions() {
        // Without a resume position of its own, the source resumes after what each table holds.
        if let (None, Some(position)) = (&resume, p.position) {
            tracing::info!(table = %p.table, %position, "resuming after durable position");
        }
        committed.insert((*p.table).clone(), p.snapshot_chunk);
        if let Some(shape) = p.shape {
            known.insert((*p.table).clone(), shape);
        }
    }
    let history = sink.history();
    let SinkHandle {
        tx,
        durable,
        chunks,
        task: sink_task,
    } = spawn_sink(
        sink,
        pipeline.max_inflight_bytes,
        pipeline.hub.clone(),
        pipeline.health.freshness.clone(),
    );
    let (snapshots, link) = incremental::session(
        source.reader(&session),
        pipeline.sizes,
        pipeline.tables.to_vec(),
        store.clone(),
        committed,
        chunks,
    );
    let snapshots = if S::MAILBOX {
        snapshots.with_mailbox(pipeline.lake, pipeline.name)
    } else {
        snapshots
    };
    history.set_resnapshot(snapshots.resnapshots());
    let saver = resume
        .clone()
        .map(|resume| tokio::spawn(save_resume::<S>(resume, store.clone())));
    // The driver failing stops the source; the source ending stops the driver.
    let stop = cancel.child_token();
    let driver = snapshots.spawn(stop.clone());
    let stream = Stream {
        tx,
        durable,
        link,
        known,
        stop: stop.clone(),
    };
    crate::observe::streaming(true);
    let source_result = source.stream(session, stream).await;
    crate::observe::streaming(false);
    stop.cancel();
    let driver_result = driver.await.unwrap_or(Ok(()));
    // The source dropped its queue sender: the sink drains what is queued, then ends.
    let sink_result = join_sink(sink_task, pipeline.lake).await;
    if let Some(saver) = saver {
        saver.abort();
        let _ = saver.await;
    }
    if let Some(resume) = resume {
        // The last position, whatever the outcome: it is never past what is durable.
        let last = resume.borrow().clone();
        S::save_resume(&store, last)?;
    }
    // A sink failure is the root cause when both fail (the source sees "sink stopped").
    sink_result?;
    driver_result?;
    Ok(source_result?)
}

/// Write the resume position as it moves, at most every [`SAVE_EVERY`].
async fn save_resume<S: Source>(mut resume: watch::Receiver<S::Resume>, store: Arc<Store>) {
    while resume.changed().await.is_ok() {
        let position = resume.borrow_and_update().clone();
        if let Err(e) = S::save_resume(&store, position) {
            tracing::warn!(error = %e, "saving the {}", S::RESUME);
        }
        tokio::time::sleep(SAVE_EVERY).await;
    }
}
