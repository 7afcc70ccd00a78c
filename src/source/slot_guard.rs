//! Beside a PostgreSQL stream, on an ordinary (non-replication) connection of its own: the
//! heartbeat writer and the WAL guard.
//!
//! ```text
//!  every [source] heartbeat ── SELECT pg_logical_emit_message(false, 'sluice_heartbeat', t)
//!        └─▶ WAL ─▶ walsender ─▶ source: confirms past it once all before is durable,
//!                                        records t as the newest durable commit time
//!  every 10 s (and at session start) ── pg_replication_slots (wal_status, safe_wal_size,
//!        current - restart_lsn) + max_slot_wal_keep_size ─▶ SourceHealth::wal
//!        ├─ retained ≥ wal_warn_share × max_slot_wal_keep_size ─▶ warning
//!        └─ wal_status = lost ─▶ SlotLost (definite): the stream stops, the run ends
//! ```
//!
//! A failure of this connection is not the stream's: it is logged and retried at the next
//! tick (a server that is really gone ends the stream anyway). Only a lost slot stops it.

use std::time::Duration;

use replication::health::{SourceHealth, WalReport};
use replication::postgres::catalog;
use replication::postgres::conninfo::ConnInfo;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How often the slot's WAL retention is read while streaming.
const WAL_CHECK_EVERY: Duration = Duration::from_secs(10);
/// While the retained WAL stays above the warning share, the warning is repeated this often.
const WARN_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// What the guard of one session needs.
pub(crate) struct SlotGuard {
    pub conninfo: ConnInfo,
    pub slot: String,
    /// How often to write a heartbeat; `None`: never.
    pub heartbeat: Option<Duration>,
    /// Warn above this share of `max_slot_wal_keep_size`.
    pub warn_share: f64,
    pub health: SourceHealth,
    /// The pipeline's state file, named in the recovery advice of a lost slot.
    pub state: String,
}

impl SlotGuard {
    /// Read the slot's WAL retention once, keep it in [`SourceHealth::wal`], warn when it
    /// passes the share (`warned`: when the last warning was, for repeats), and refuse a lost
    /// slot.
    pub(crate) async fn check(
        &self,
        client: &tokio_postgres::Client,
        warned: &mut Option<Instant>,
    ) -> Result<(), replication::Error> {
        let Some(report) = catalog::slot_wal(client, &self.slot).await? else {
            return Ok(());
        };
        self.health.wal.set(report.clone());
        tracing::debug!(
            slot = %self.slot,
            wal_status = report.wal_status.as_deref().unwrap_or("unknown"),
            retained_bytes = report.retained_bytes,
            safe_wal_size_bytes = report.safe_wal_size,
            lag_ms = self.health.freshness.lag().map(|d| d.as_millis() as u64),
            "slot health"
        );
        if report.lost() {
            return Err(self.lost(&report));
        }
        match report.retained_share() {
            Some(share) if share >= self.warn_share => {
                if warned.is_none_or(|at| at.elapsed() >= WARN_AGAIN_AFTER) {
                    *warned = Some(Instant::now());
                    tracing::warn!(
                        slot = %self.slot,
                        retained_bytes = report.retained_bytes,
                        max_slot_wal_keep_size_bytes = report.max_slot_wal_keep_size,
                        safe_wal_size_bytes = report.safe_wal_size,
                        wal_status = report.wal_status.as_deref().unwrap_or("unknown"),
                        "replication slot retains {:.0}% of max_slot_wal_keep_size (warning at {:.0}%): past 100% the server removes WAL the slot needs and the pipeline must re-snapshot; find what holds it back (a long-running transaction, a stalled sink) or raise max_slot_wal_keep_size",
                        share * 100.0,
                        self.warn_share * 100.0,
                    );
                }
            }
            _ => {
                if warned.take().is_some() {
                    tracing::info!(slot = %self.slot, retained_bytes = report.retained_bytes, "replication slot's retained wal is back under the warning share");
                }
            }
        }
        Ok(())
    }

    /// The definite error of a lost slot, with how to recover.
    pub(crate) fn lost(&self, report: &WalReport) -> replication::Error {
        replication::Error::SlotLost {
            slot: self.slot.clone(),
            keep: report
                .max_slot_wal_keep_size
                .map(|b| format!(" = {}MB", b / (1024 * 1024)))
                .unwrap_or_default(),
            state: self.state.clone(),
        }
    }

    /// Write heartbeats and watch the slot until `stop` is cancelled; on a lost slot, cancel
    /// `stream` (the replication stream) and return the error.
    pub(crate) async fn run(
        self,
        stop: CancellationToken,
        stream: CancellationToken,
    ) -> Result<(), replication::Error> {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut warned = None;
        let mut wal_check = interval_at(Instant::now() + WAL_CHECK_EVERY, WAL_CHECK_EVERY);
        wal_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Without heartbeats this ticks once a day and does nothing.
        let every = self.heartbeat.unwrap_or(Duration::from_secs(86_400));
        let mut heartbeat = interval_at(Instant::now(), every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let beat = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = wal_check.tick() => false,
                _ = heartbeat.tick() => true,
            };
            if beat && self.heartbeat.is_none() {
                continue;
            }
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match catalog::connect(&self.conninfo).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(slot = %self.slot, error = %e, "slot guard: cannot connect; trying again at the next tick");
                        None
                    }
                };
            }
            let Some(c) = &client else { continue };
            let outcome = if beat {
                catalog::emit_heartbeat(c).await.map(|lsn| {
                    tracing::debug!(%lsn, "heartbeat written");
                })
            } else {
                self.check(c, &mut warned).await
            };
            match outcome {
                Err(e @ replication::Error::SlotLost { .. }) => {
                    stream.cancel();
                    return Err(e);
                }
                Err(e) if beat => {
                    tracing::warn!(slot = %self.slot, error = %e, "writing a heartbeat failed")
                }
                Err(e) => {
                    tracing::warn!(slot = %self.slot, error = %e, "reading the slot's wal retention failed")
                }
                Ok(()) => {}
            }
        }
    }
}
