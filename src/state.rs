//! The pipeline's small durable state beside the lake: whether the initial snapshot finished.
//!
//! Everything else Sluice needs to resume lives in the Delta tables themselves (the `txn`
//! versions). The one fact they cannot hold is "the snapshot of every table completed" (an empty
//! table produces no commit), so it is kept in `<lake>/_sluice_state/<pipeline>.json`, written
//! atomically (temporary file, fsync, rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Progress of the initial snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// The slot was (or is about to be) created and the copy has not finished.
    Pending,
    /// Every table was copied; streaming continues from the consistent point.
    Done,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Initial snapshot progress.
    pub snapshot: SnapshotState,
    /// The slot's consistent point, once known.
    pub consistent_point: Option<String>,
}

fn path(lake: &Path, pipeline: &str) -> PathBuf {
    lake.join("_sluice_state").join(format!("{pipeline}.json"))
}

impl State {
    /// The stored state, if any.
    pub fn load(lake: &Path, pipeline: &str) -> std::io::Result<Option<State>> {
        match std::fs::read(path(lake, pipeline)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace the stored state atomically.
    pub fn save(&self, lake: &Path, pipeline: &str) -> std::io::Result<()> {
        use std::io::Write;
        let target = path(lake, pipeline);
        let dir = target.parent().unwrap_or(lake);
        std::fs::create_dir_all(dir)?;
        let tmp = target.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    }
}
