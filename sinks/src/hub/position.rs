//! The hub position W: the highest source commit position durable in *every* changelog table
//! of a pipeline. A hub sink reads only rows at or below it.
//!
//! - In process, the Delta sink task publishes it on a [`HubPosition`] (a watch) after each
//!   event is durable in every table; hub sinks wake on it, so there is no polling delay
//!   while they keep up.
//! - For standalone sinks (`sluice deliver`), the pipeline also writes it to
//!   `<lake>/_sluice_state/<pipeline>.hub.json` (`{"position": <u64>, "updated_at_ms": …}`),
//!   atomically (temp file, fsync, rename), at most every [`FILE_INTERVAL`]; a standalone sink
//!   reads that file every [`FILE_INTERVAL`]. The file may lag the truth; it is never ahead.
//!
//! W is a *commit* position (the `_sluice_lsn` of the last durable transaction), inclusive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use replication::Lsn;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cursor::write_atomically;
use crate::{Error, Result};

/// Directory of the pipeline state files beside the lake.
pub const STATE_DIR: &str = "_sluice_state";

/// How often the hub file is written (at most) and read by a standalone sink.
const FILE_INTERVAL: Duration = Duration::from_millis(200);

/// The hub file of `pipeline` under `lake`.
pub fn hub_file(lake: &Path, pipeline: &str) -> PathBuf {
    lake.join(STATE_DIR).join(format!("{pipeline}.hub.json"))
}

/// The content of the hub file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubState {
    /// W as a number (PostgreSQL LSN, or the MySQL position encoding).
    pub position: u64,
    /// When it was written (unix milliseconds).
    pub updated_at_ms: u64,
}

impl HubState {
    /// Reads the hub file; `None` if there is none yet.
    pub fn read(lake: &Path, pipeline: &str) -> Result<Option<HubState>> {
        let path = hub_file(lake, pipeline);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// The in-process hub position: the Delta sink publishes, hub sinks subscribe. Cheap to
/// clone; every clone is the same channel.
#[derive(Debug, Clone)]
pub struct HubPosition(Arc<watch::Sender<Lsn>>);

impl Default for HubPosition {
    fn default() -> Self {
        HubPosition(Arc::new(watch::channel(Lsn::ZERO).0))
    }
}

impl HubPosition {
    /// A position starting where the hub file of a previous run left it.
    pub fn resume(lake: &Path, pipeline: &str) -> Result<Self> {
        let hub = HubPosition::default();
        if let Some(state) = HubState::read(lake, pipeline)? {
            hub.publish(Lsn(state.position));
        }
        Ok(hub)
    }

    /// `position` is durable in every table (never moves backwards).
    pub fn publish(&self, position: Lsn) {
        self.0.send_if_modified(|w| {
            let moved = position > *w;
            if moved {
                *w = position;
            }
            moved
        });
    }

    /// The current W.
    pub fn get(&self) -> Lsn {
        *self.0.borrow()
    }

    /// A receiver that wakes when W moves.
    pub fn subscribe(&self) -> watch::Receiver<Lsn> {
        self.0.subscribe()
    }

    /// Writes the hub file whenever W moves, at most every [`FILE_INTERVAL`], until
    /// cancelled (and once more then).
    pub async fn write_file(self, lake: PathBuf, pipeline: String, cancel: CancellationToken) {
        let mut rx = self.subscribe();
        let mut written = None;
        loop {
            let w = *rx.borrow_and_update();
            if written != Some(w) && w > Lsn::ZERO {
                let state = HubState {
                    position: w.0,
                    updated_at_ms: now_ms(),
                };
                let path = hub_file(&lake, &pipeline);
                let bytes = serde_json::to_vec(&state).unwrap_or_default();
                // Two fsyncs: off the async workers, which the source and the sink share.
                match tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await {
                    Ok(Ok(())) => written = Some(w),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the hub position file"),
                    Err(e) => tracing::warn!(error = %e, "cannot write the hub position file"),
                }
            }
            if cancel.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FILE_INTERVAL) => {}
                _ = cancel.cancelled() => {}
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Follows the hub file of another process into this position until cancelled.
    pub async fn follow_file(self, lake: PathBuf, pipeline: String, cancel: CancellationToken) {
        loop {
            match HubState::read(&lake, &pipeline) {
                Ok(Some(state)) => self.publish(Lsn(state.position)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the hub position file"),
            }
            tokio::select! {
                _ = tokio::time::sleep(FILE_INTERVAL) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_never_moves_back_and_resume_reads_the_file() {
        let dir = tempfile_dir();
        let hub = HubPosition::default();
        hub.publish(Lsn(10));
        hub.publish(Lsn(5));
        assert_eq!(hub.get(), Lsn(10));
        let state = HubState {
            position: 42,
            updated_at_ms: 1,
        };
        write_atomically(&hub_file(&dir, "p"), &serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(HubPosition::resume(&dir, "p").unwrap().get(), Lsn(42));
        assert_eq!(HubPosition::resume(&dir, "q").unwrap().get(), Lsn::ZERO);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sluice-hub-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
