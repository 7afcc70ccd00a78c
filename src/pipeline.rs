//! The pipeline core: wires the source to the sink through a byte-bounded queue, carries the
//! durable position back to the source, and retries transient failures.
//!
//! ```text
//!  source task ──queue (max_inflight_bytes)──▶ sink task
//!       ▲                                          │ end position of each durable event
//!       └──────────── watch<Lsn> (durable) ◀───────┘
//! ```
//!
//! Batching happens in the source (rows are decoded straight into per-table Arrow builders,
//! which are the batch); the core decides the limits. With one sink the durable position is
//! the sink's; with several it will be the minimum over them.
//!
//! Restart safety: every session starts from the Delta tables' own positions, so a retried
//! session (or a restarted process) re-reads from the slot's confirmed position and skips what
//! is already durable.

use std::time::Duration;

use replication::change::Event;
use replication::postgres::source::{self, SourceExit, SourceOptions};
use replication::postgres::{catalog, BatchLimits};
use replication::{queue, ErrorClass, Lsn};
use sinks::delta::DeltaSink;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

/// First and longest wait between retries of a transient failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] replication::Error),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] sinks::Error),
}

impl PipelineError {
    /// Retry, stop, or bug.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Source(e) => e.class(),
            PipelineError::Sink(e) => e.class(),
        }
    }
}

/// Prepare the source (publication and slot), then stream until cancelled, caught up, or a
/// definite error. Transient errors are retried with backoff.
pub async fn run(
    settings: &Settings,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let client = catalog::connect(&settings.conninfo).await?;
    let problems = catalog::preflight(
        &client,
        &catalog::Requirements {
            slot: &settings.slot,
            publication: &settings.publication,
            tables: &settings.tables,
        },
    )
    .await?;
    if !problems.is_empty() {
        return Err(replication::Error::Preflight { problems }.into());
    }
    catalog::ensure_publication(&client, &settings.publication, &settings.tables).await?;
    if catalog::ensure_slot(&client, &settings.slot).await? {
        tracing::info!(slot = %settings.slot, "created replication slot");
    }
    let until = if until_caught_up {
        Some(catalog::current_wal_lsn(&client).await?)
    } else {
        None
    };
    drop(client);
    let mut backoff = BACKOFF.0;
    loop {
        match session(settings, until, cancel.clone()).await {
            Ok(exit) => return Ok(exit),
            Err(e) if e.class() == ErrorClass::Transient && !cancel.is_cancelled() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "transient failure, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return Ok(SourceExit::Cancelled),
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One connection's worth of streaming.
async fn session(
    settings: &Settings,
    until: Option<Lsn>,
    cancel: CancellationToken,
) -> Result<SourceExit, PipelineError> {
    let client = catalog::connect(&settings.conninfo).await?;
    let types = catalog::type_support(&client, &settings.tables).await?;
    if !types.binary {
        tracing::info!(columns = ?types.text_columns, "streaming in text mode for types without a binary decoder");
    }
    let wal_sender_timeout = catalog::wal_sender_timeout(&client).await?;
    drop(client);

    let mut sink = DeltaSink::open(&settings.lake, &settings.name, &settings.tables).await?;
    for p in sink.positions() {
        if let Some(position) = p.position {
            tracing::info!(table = %p.table, %position, "resuming after durable position");
        }
    }
    let (tx, mut rx) = queue::channel::<Event>(settings.max_inflight_bytes);
    let (durable_tx, durable_rx) = watch::channel(Lsn::ZERO);
    let sink_task = tokio::spawn(async move {
        while let Some((event, permit)) = rx.recv().await {
            let rows = event.rows();
            if let Some(end) = sink.apply(event).await? {
                tracing::debug!(rows, %end, "durable");
                durable_tx.send_replace(end);
            }
            drop(permit);
        }
        Ok::<_, sinks::Error>(())
    });
    let options = SourceOptions {
        conninfo: settings.conninfo.clone(),
        slot: settings.slot.clone(),
        publication: settings.publication.clone(),
        limits: BatchLimits {
            max_rows: settings.max_batch_rows,
            max_bytes: settings.max_batch_bytes,
        },
        max_latency: settings.max_batch_latency,
        types,
        wal_sender_timeout,
        until,
    };
    let source_result = source::run(options, tx, durable_rx, cancel).await;
    // The source dropped its queue sender: the sink drains what is queued, then ends.
    let sink_result = match sink_task.await {
        Ok(r) => r,
        Err(join) => Err(sinks::Error::Io {
            path: settings.lake.display().to_string(),
            source: std::io::Error::other(join.to_string()),
        }),
    };
    // A sink failure is the root cause when both fail (the source sees "sink stopped").
    sink_result?;
    Ok(source_result?)
}
