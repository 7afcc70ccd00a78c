//! The replication source task: owns the replication connection, decodes pgoutput into Arrow,
//! and hands whole-transaction events to the pipeline through a byte-bounded queue.
//!
//! ```text
//!   walsender ──CopyData──▶ recv ─▶ pgoutput::Decoder ─▶ Assembler ─▶ queue (bytes) ─▶ sinks
//!        ▲                                                                │
//!        └──── status update (write, flush = durable) ◀── timer ◀── durable LSN (watch)
//! ```
//!
//! Backpressure: when the queue is full the task stops reading the socket (the walsender then
//! blocks and the backlog stays in PostgreSQL's WAL), but keeps sending status updates on the
//! timer, so `wal_sender_timeout` never fires while the sinks are slow.
//!
//! Flush position: the slot is confirmed only up to what every sink made durable. When nothing
//! is in flight (between transactions, nothing pending, everything forwarded durable), the
//! position the server reported in its last keepalive is confirmed too, so a slot whose
//! tables are idle does not pin WAL.
//!
//! Heartbeats: a non-transactional message with prefix [`HEARTBEAT_PREFIX`] (written by the
//! pipeline's heartbeat task, see `sluice::source::postgres`) reaches us even when no table
//! of the publication changes, while other databases of the cluster keep the WAL growing. It
//! lands in no table: between transactions it counts as a keepalive at its own position (so
//! the slot is confirmed past it once everything before it is durable), and once it is
//! confirmable its write time (its content) is recorded in [`Freshness`].

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use super::catalog::{TypeSupport, HEARTBEAT_PREFIX};
use super::client::Client;
use super::conninfo::ConnInfo;
use super::pgoutput::Decoder;
use super::pgoutput::Message;
use super::stream::{self, ServerMessage};
use super::Assembler;
use crate::change::{quote_ident, quote_literal, Event, TableName};
use crate::health::Freshness;
use crate::queue;
use crate::source::{BatchLimits, SourceExit};
use crate::window::{RequestSender, SnapshotLink, SnapshotRequest, Step, Windows};
use crate::{Error, ErrorClass, Lsn, Result};

/// Status updates are sent at least this often, and more often if `wal_sender_timeout`
/// is short (half of it), so the server never times the connection out.
const MAX_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// How long to wait for the server to acknowledge the end of replication at shutdown.
const END_COPY_TIMEOUT: Duration = Duration::from_secs(30);
/// With `--until caught-up`, how often to ask the server where it stands while idle.
const CATCH_UP_PROBE: Duration = Duration::from_millis(100);

/// What the source needs to stream.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Server to connect to.
    pub conninfo: ConnInfo,
    /// Replication slot (exists already).
    pub slot: String,
    /// Publication (exists already).
    pub publication: String,
    /// Batch closing limits.
    pub limits: BatchLimits,
    /// Close a batch this long after its first row, at the next transaction boundary.
    pub max_latency: Duration,
    /// Binary or text mode, and the enum types.
    pub types: TypeSupport,
    /// The server's `wal_sender_timeout` (zero when disabled).
    pub wal_sender_timeout: Duration,
    /// Stop once everything committed before this position is durable.
    pub until: Option<Lsn>,
    /// Pipeline name: the watermarks and requests addressed to it are the ones acted on.
    pub pipeline: String,
    /// What a change of a table's columns does.
    pub policies: crate::evolution::SchemaPolicies,
    /// Each table's columns as the lake last recorded them.
    pub known: std::collections::HashMap<TableName, crate::evolution::Columns>,
    /// Where the write time of a heartbeat is recorded once everything before it is durable
    /// (the core records the commit times of changes).
    pub freshness: Freshness,
}

struct Source {
    client: Client,
    tx: queue::Sender<Event>,
    durable: watch::Receiver<Lsn>,
    assembler: Assembler,
    status: Interval,
    /// Highest WAL position received.
    received: Lsn,
    /// Position of the last keepalive received between transactions.
    idle_end: Lsn,
    /// End of the last committed transaction forwarded to the sinks.
    forwarded_end: Lsn,
    windows: Windows,
    requests: Option<RequestSender>,
    snapshots_idle: Option<watch::Receiver<bool>>,
    /// The newest heartbeat seen between transactions and not yet confirmable: its position
    /// and write time (microseconds since the Unix epoch; 0 when its content is not one).
    heartbeat: Option<(Lsn, i64)>,
    freshness: Freshness,
}

/// Stream changes until cancelled, caught up, or an error.
pub async fn run(
    options: SourceOptions,
    tx: queue::Sender<Event>,
    durable: watch::Receiver<Lsn>,
    link: Option<SnapshotLink>,
    cancel: CancellationToken,
) -> Result<SourceExit> {
    let mut client = Client::connect(&options.conninfo, Some("database")).await?;
    let version = client.server_major_version();
    let publications = quote_literal(&quote_ident(&options.publication));
    let plugin_options = if version >= 14 {
        format!(
            "proto_version '2', publication_names {publications}, streaming 'on', messages 'on', binary '{}'",
            options.types.binary
        )
    } else {
        format!("proto_version '1', publication_names {publications}")
    };
    let binary = options.types.binary && version >= 14;
    client
        .start_copy_both(&format!(
            "START_REPLICATION SLOT {} LOGICAL 0/0 ({plugin_options})",
            quote_ident(&options.slot)
        ))
        .await?;
    tracing::info!(slot = %options.slot, binary, server_version = version, "replication started");
    let status_every = match options.wal_sender_timeout {
        t if t.is_zero() => MAX_STATUS_INTERVAL,
        t => (t / 2).min(MAX_STATUS_INTERVAL),
    };
    let status_every = if options.until.is_some() {
        status_every.min(CATCH_UP_PROBE)
    } else {
        status_every
    };
    let (chunks, requests, snapshots_idle) = match link {
        Some(l) => (Some(l.chunks), Some(l.requests), Some(l.idle)),
        None => (None, None, None),
    };
    let mut source = Source {
        client,
        tx,
        durable,
        assembler: Assembler::new(
            options.limits,
            binary,
            options.types.enums.clone(),
            options.types.primary_keys.clone(),
        )
        .with_schema_policies(options.policies.clone(), options.known.clone()),
        status: tokio::time::interval(status_every),
        received: Lsn::ZERO,
        idle_end: Lsn::ZERO,
        forwarded_end: Lsn::ZERO,
        windows: Windows::new(options.pipeline.clone(), chunks),
        requests,
        snapshots_idle,
        heartbeat: None,
        freshness: options.freshness.clone(),
    };
    let outcome = source.stream(&options, &cancel).await;
    match outcome {
        Ok(exit) => {
            source.finish().await?;
            Ok(exit)
        }
        Err(e) if e.class() == ErrorClass::Definite => {
            // Stop at the change that cannot be applied, with everything before it durable.
            if source.assembler.flush_before_error()? {
                source.forward(&cancel).await?;
                source.finish().await?;
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl Source {
    async fn stream(
        &mut self,
        options: &SourceOptions,
        cancel: &CancellationToken,
    ) -> Result<SourceExit> {
        let mut decoder = Decoder::new();
        let mut deadline: Option<Instant> = None;
        loop {
            if self.assembler.at_boundary() && deadline.is_some_and(|d| d <= Instant::now()) {
                self.assembler.flush()?;
            }
            if !self.forward(cancel).await? {
                return Ok(SourceExit::Cancelled);
            }
            deadline = match (self.assembler.has_pending(), deadline) {
                (false, _) => None,
                (true, None) => Some(Instant::now() + options.max_latency),
                (true, Some(d)) => Some(d),
            };
            if let Some(target) = options.until {
                if self.idle() && self.snapshots_idle() && self.flush_position() >= target {
                    return Ok(SourceExit::CaughtUp);
                }
            }
            let flush_due = deadline.filter(|_| self.assembler.at_boundary());
            let until_mode = options.until.is_some();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    if self.assembler.at_boundary() {
                        self.assembler.flush()?;
                        self.forward(cancel).await?;
                    }
                    return Ok(SourceExit::Cancelled);
                }
                _ = self.status.tick() => {
                    let probe = until_mode && self.idle();
                    self.send_status(probe).await?;
                    self.heartbeat_settle();
                }
                _ = sleep_until(flush_due), if flush_due.is_some() => {
                    self.assembler.flush()?;
                }
                _ = self.durable.changed(), if until_mode => {}
                _ = snapshots_changed(&mut self.snapshots_idle), if until_mode => {}
                payload = self.client.recv_copy_data() => {
                    let Some(payload) = payload? else {
                        return Err(Error::StreamEnded);
                    };
                    match stream::parse(payload)? {
                        ServerMessage::XLogData { wal_start, wal_end, data } => {
                            self.received = self.received.max(wal_end);
                            let message = decoder
                                .decode(&data)
                                .map_err(|source| Error::Decode { lsn: wal_start, source })?;
                            if let Message::Relation(r) = &message {
                                self.windows.schema_changed(&TableName {
                                    schema: r.namespace.clone(),
                                    name: r.name.clone(),
                                });
                            }
                            if let Message::Message {
                                transactional: false,
                                prefix: HEARTBEAT_PREFIX,
                                lsn,
                                content,
                                ..
                            } = &message
                            {
                                self.heartbeat_seen(lsn.max(&wal_end), content);
                            }
                            self.assembler.apply(message, wal_start, data.len())?;
                        }
                        ServerMessage::Keepalive { wal_end, reply_requested } => {
                            self.received = self.received.max(wal_end);
                            if self.assembler.at_boundary() {
                                self.idle_end = self.idle_end.max(wal_end);
                            }
                            if reply_requested {
                                self.send_status(false).await?;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A heartbeat at `lsn`: between transactions it stands for everything before it (like a
    /// keepalive), so the slot may be confirmed past it once all forwarded is durable.
    fn heartbeat_seen(&mut self, lsn: &Lsn, content: &[u8]) {
        if !self.assembler.at_boundary() {
            return;
        }
        let written = std::str::from_utf8(content)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0);
        tracing::trace!(%lsn, "heartbeat");
        self.idle_end = self.idle_end.max(*lsn);
        self.heartbeat = Some((*lsn, written));
        self.heartbeat_settle();
    }

    /// Record the last heartbeat's write time once the slot may be confirmed past it.
    fn heartbeat_settle(&mut self) {
        if let Some((lsn, written)) = self.heartbeat {
            if self.flush_position() >= lsn {
                self.freshness.record(written);
                self.heartbeat = None;
            }
        }
    }

    /// Nothing in flight: between transactions, nothing pending, all forwarded is durable.
    fn idle(&self) -> bool {
        self.assembler.at_boundary()
            && !self.assembler.has_pending()
            && *self.durable.borrow() >= self.forwarded_end
    }

    /// No incremental snapshot is pending or in flight.
    fn snapshots_idle(&mut self) -> bool {
        !self.windows.busy()
            && self
                .snapshots_idle
                .as_ref()
                .is_none_or(|idle| *idle.borrow())
    }

    /// Pass the assembled events through the snapshot windows to the sinks. Returns false
    /// when cancelled before all were queued.
    async fn forward(&mut self, cancel: &CancellationToken) -> Result<bool> {
        for event in self.assembler.take_events() {
            let event = match self.windows.observe(event)? {
                Step::Deliver(event) => event,
                Step::Request(request, event) => {
                    if let Event::Marker { commit_lsn, .. } = &event {
                        self.persist(request, *commit_lsn).await?;
                    }
                    event
                }
            };
            if !self.deliver(event, cancel).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Hand a snapshot request over and wait until it is stored, before the slot can move
    /// past the message that carried it.
    async fn persist(&mut self, request: SnapshotRequest, lsn: Lsn) -> Result<()> {
        let Some(requests) = &self.requests else {
            tracing::warn!(table = %request.table, "snapshot request ignored: this run does not take snapshots");
            return Ok(());
        };
        let (ack, stored) = tokio::sync::oneshot::channel();
        requests
            .send((request, lsn, ack))
            .map_err(|_| Error::Protocol("the snapshot driver stopped".into()))?;
        stored
            .await
            .map_err(|_| Error::Protocol("the snapshot request was not stored".into()))
    }

    /// What the slot may be confirmed to now.
    fn flush_position(&self) -> Lsn {
        let durable = *self.durable.borrow();
        if self.idle() {
            durable.max(self.idle_end)
        } else {
            durable
        }
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<()> {
        let flush = self.flush_position();
        let write = self.received.max(flush);
        tracing::trace!(%write, %flush, "status update");
        self.client
            .send_copy_data(&stream::status_update(write, flush, reply_requested))
            .await
    }

    /// Queue an event, answering the server while the queue is full. Returns false when
    /// cancelled before the event could be queued.
    async fn deliver(&mut self, event: Event, cancel: &CancellationToken) -> Result<bool> {
        let end = match &event {
            Event::Committed { end_lsn, .. }
            | Event::StreamCommit { end_lsn, .. }
            | Event::SnapshotChunk { end_lsn, .. }
            | Event::Marker { end_lsn, .. } => Some(*end_lsn),
            _ => None,
        };
        let bytes = event.memory_size();
        let permit = loop {
            tokio::select! {
                biased;
                permit = self.tx.reserve(bytes) => break permit.map_err(|_| Error::SinkStopped)?,
                _ = cancel.cancelled() => return Ok(false),
                _ = self.status.tick() => self.send_status(false).await?,
            }
        };
        self.tx
            .send(event, permit)
            .map_err(|_| Error::SinkStopped)?;
        if let Some(end) = end {
            self.forwarded_end = end;
        }
        Ok(true)
    }

    /// Wait for the sinks to make everything forwarded durable, then confirm it.
    async fn finish(mut self) -> Result<()> {
        let (tx, _) = queue::channel::<Event>(1);
        drop(std::mem::replace(&mut self.tx, tx));
        while *self.durable.borrow() < self.forwarded_end {
            if self.durable.changed().await.is_err() {
                break;
            }
        }
        self.send_status(false).await?;
        // Wait until the server has processed the final status update.
        match tokio::time::timeout(END_COPY_TIMEOUT, self.client.end_copy()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "ending replication"),
            Err(_) => tracing::warn!("the server did not end replication in time"),
        }
        tracing::info!(flush = %self.flush_position(), "replication stopped");
        self.client.terminate().await;
        Ok(())
    }
}

async fn snapshots_changed(idle: &mut Option<watch::Receiver<bool>>) {
    match idle {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
