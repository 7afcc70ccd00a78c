//! `sluice dead-letters retry`: the open parked changes of a sink, read again from the
//! changelog and sent one by one, in position order.
//!
//! ```text
//!   open parked changes (dead letters without a resolution)
//!     ─▶ one changelog scan from the oldest one up to W: the parked changes themselves, and
//!        the newest position of each parked key
//!     ─▶ per change: superseded (a newer change of its key exists; state sinks only)
//!                    or delivered again ─▶ resolution appended   /  still refused: stays open
//! ```
//!
//! A state sink (REST: one object per key) never re-sends a change older than its key's
//! newest: the newer one was delivered after the refusal, and the older would overwrite it.
//! An event sink (webhook) re-sends every parked change: its receiver sees events, not state.
//! A change no longer in the changelog (vacuumed) is reported, not resolved.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use replication::Lsn;

use super::batch::Batch;
use super::dead_letters::{DeadLetters, ParkedChange, ParkedId, Resolution};
use super::reader::{Change, ChangelogReader, KeyColumns};
use super::{Ack, HubSink, SinkIdentity};
use crate::{Error, Result};

/// What a retry did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedeliverReport {
    /// Open parked changes found.
    pub open: usize,
    /// Sent again and accepted.
    pub delivered: usize,
    /// Not sent: a newer change of the key was delivered since.
    pub superseded: usize,
    /// Refused again (still open), with the new refusal.
    pub refused: Vec<ParkedChange>,
    /// No longer in the changelog.
    pub missing: usize,
}

/// Re-sends `identity`'s open parked changes through `sink`; `state` skips superseded ones.
pub async fn redeliver<S: HubSink>(
    sink: &S,
    lake: &Path,
    identity: &SinkIdentity,
    keys: &KeyColumns,
    w: Lsn,
    state: bool,
) -> Result<RedeliverReport> {
    let open = DeadLetters::open_changes(lake, &identity.pipeline, &identity.sink).await?;
    let mut report = RedeliverReport {
        open: open.len(),
        ..RedeliverReport::default()
    };
    let Some(first) = open.first() else {
        return Ok(report);
    };
    let after = (first.change.lsn, first.change.seq - 1, String::new(), 0);
    let wanted: HashSet<ParkedId> = open.iter().map(|r| r.change.id()).collect();
    let parked_keys: HashSet<(String, String)> = open
        .iter()
        .map(|r| (r.change.table.clone(), r.change.key.clone()))
        .collect();
    let (lake_dir, pipeline, tables, keys) = (
        lake.to_path_buf(),
        identity.pipeline.clone(),
        identity.tables.clone(),
        keys.clone(),
    );
    let (found, newest) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut reader = ChangelogReader::open(&lake_dir, &pipeline, &tables, &keys, after);
        let mut found: Vec<Change> = Vec::new();
        let mut newest: HashMap<(String, String), (u64, i64)> = HashMap::new();
        while let Some(c) = reader.next(w)? {
            let table = c.table.to_string();
            let key = c.key_text().to_string();
            if !parked_keys.contains(&(table.clone(), key.clone())) {
                continue;
            }
            newest.insert((table.clone(), key.clone()), c.position());
            if wanted.contains(&(table, key, c.lsn, c.seq)) {
                found.push(c.detached());
            }
        }
        Ok((found, newest))
    })
    .await
    .map_err(|e| Error::Invalid {
        problems: vec![format!("changelog scan failed: {e}")],
    })??;
    report.missing = open.len().saturating_sub(found.len());
    let mut dead = DeadLetters::new(lake, &identity.pipeline, &identity.sink);
    let mut resolved = Vec::new();
    for c in found {
        let table = c.table.to_string();
        let key = c.key_text().to_string();
        let id = (table.clone(), key.clone(), c.lsn, c.seq);
        if state && newest.get(&(table, key)).is_some_and(|n| *n > c.position()) {
            report.superseded += 1;
            resolved.push((id, Resolution::Superseded));
            continue;
        }
        match sink.deliver(Arc::new(Batch::new(vec![c]))).await? {
            Ack::Delivered => {
                report.delivered += 1;
                resolved.push((id, Resolution::Delivered));
            }
            Ack::Parked(p) => report.refused.extend(p),
        }
    }
    dead.resolve(&resolved).await?;
    Ok(report)
}
