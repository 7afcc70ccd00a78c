//! What a running source shares about its health, for `sluice status`, metrics and the core:
//! how fresh the durable changelog is ([`Freshness`]) and, for a PostgreSQL slot, how much WAL
//! it retains ([`SlotWal`]). Written by the source and the core, read by anyone holding a
//! clone; reading never blocks a writer for longer than a copy.
//!
//! ```text
//!  sink task ── commit time of each event once durable ──┐
//!  PG source ── heartbeat time once confirmable ─────────┼─▶ Freshness (newest durable commit)
//!  MySQL source ── boundary/heartbeat time when idle ────┘
//!  WAL guard (every 10 s) ── pg_replication_slots ───────────▶ SlotWal (latest WalReport)
//! ```
//!
//! Invariant: [`Freshness`] only moves forward, and only to the commit time of something the
//! changelog holds or that needs nothing written (a heartbeat, a transaction without rows of
//! the pipeline's tables) with everything before it durable. `now - newest durable commit` is
//! therefore an upper bound of how far the lake is behind the source, and stays meaningful on
//! an idle database as long as heartbeats flow.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one source shares: clone it freely, every clone sees the same values.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    /// The commit time of the newest change or heartbeat seen and made durable.
    pub freshness: Freshness,
    /// The PostgreSQL slot's WAL retention (never set for MySQL/MariaDB).
    pub wal: SlotWal,
}

/// The commit time (source clock, UTC) of the newest change or heartbeat that the changelog
/// holds or that needs nothing written, with everything before it durable.
#[derive(Debug, Clone, Default)]
pub struct Freshness(Arc<AtomicI64>);

impl Freshness {
    /// Record that everything up to a commit at `commit_ts` (microseconds since the Unix
    /// epoch) is durable. Earlier times than the newest recorded are ignored.
    pub fn record(&self, commit_ts: i64) {
        if commit_ts > 0 {
            self.0.fetch_max(commit_ts, Ordering::Relaxed);
        }
    }

    /// The newest durable commit time in microseconds since the Unix epoch; `None` before the
    /// first one.
    pub fn newest_micros(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// The newest durable commit time; `None` before the first one.
    pub fn newest(&self) -> Option<SystemTime> {
        self.newest_micros()
            .map(|t| UNIX_EPOCH + Duration::from_micros(t.unsigned_abs()))
    }

    /// How long ago the newest durable commit was (zero when the source's clock is ahead of
    /// ours); `None` before the first one. This is the lag in seconds `sluice status` and the
    /// metrics show.
    pub fn lag(&self) -> Option<Duration> {
        self.newest()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }
}

/// The latest reading of the PostgreSQL slot's WAL retention; `None` until the first check
/// (and always for MySQL/MariaDB).
#[derive(Debug, Clone, Default)]
pub struct SlotWal(Arc<Mutex<Option<WalReport>>>);

impl SlotWal {
    /// The latest reading.
    pub fn get(&self) -> Option<WalReport> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Replace the reading.
    pub fn set(&self, report: WalReport) {
        if let Ok(mut r) = self.0.lock() {
            *r = Some(report);
        }
    }
}

/// One reading of `pg_replication_slots` and `max_slot_wal_keep_size` for the pipeline's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReport {
    /// The slot's name.
    pub slot: String,
    /// `wal_status` (PostgreSQL 13+): `reserved`, `extended`, `unreserved` or `lost`; `None`
    /// on older servers.
    pub wal_status: Option<String>,
    /// `safe_wal_size` (PostgreSQL 13+): bytes of WAL that can still be written before the
    /// slot is in danger of being lost; `None` when unlimited or on older servers.
    pub safe_wal_size: Option<i64>,
    /// `pg_current_wal_lsn() - restart_lsn`: the WAL the slot retains, in bytes; `None` when
    /// the slot has no restart position (lost).
    pub retained_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes; `None` when unlimited (-1) or on servers older than 13.
    pub max_slot_wal_keep_size: Option<i64>,
    /// When this reading was taken.
    pub checked_at: SystemTime,
}

impl WalReport {
    /// The retained WAL as a share of `max_slot_wal_keep_size`; `None` when unlimited.
    pub fn retained_share(&self) -> Option<f64> {
        match (self.retained_bytes, self.max_slot_wal_keep_size) {
            (Some(r), Some(max)) if max > 0 => Some(r as f64 / max as f64),
            _ => None,
        }
    }

    /// The server removed WAL the slot needed: it can never stream again.
    pub fn lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_only_moves_forward() {
        let f = Freshness::default();
        assert_eq!(f.newest(), None);
        assert_eq!(f.lag(), None);
        f.record(2_000_000);
        f.record(1_000_000);
        f.record(0);
        assert_eq!(f.newest_micros(), Some(2_000_000));
        assert!(f.lag().unwrap() > Duration::from_secs(3600));
        let clone = f.clone();
        clone.record(3_000_000);
        assert_eq!(f.newest_micros(), Some(3_000_000));
    }

    #[test]
    fn share_and_lost() {
        let mut r = WalReport {
            slot: "s".into(),
            wal_status: Some("reserved".into()),
            safe_wal_size: Some(10),
            retained_bytes: Some(80),
            max_slot_wal_keep_size: Some(100),
            checked_at: SystemTime::now(),
        };
        assert_eq!(r.retained_share(), Some(0.8));
        assert!(!r.lost());
        r.max_slot_wal_keep_size = None;
        assert_eq!(r.retained_share(), None);
        r.wal_status = Some("lost".into());
        assert!(r.lost());
        let wal = SlotWal::default();
        assert_eq!(wal.get(), None);
        wal.set(r.clone());
        assert_eq!(wal.get(), Some(r));
    }
}
