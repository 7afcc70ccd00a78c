//! The pipeline's small durable state beside the lake: whether the initial snapshot finished,
//! which tables the pipeline covers, and the incremental snapshots still to do.
//!
//! Everything else Sluice needs to resume lives in the Delta tables themselves (the `txn`
//! versions: the source position, and the number of the last incremental-snapshot chunk
//! committed with its rows). What they cannot hold is kept in
//! `<lake>/_sluice_state/<pipeline>.json`, written atomically (temporary file, fsync, rename):
//! "the initial snapshot of every table completed" (an empty table produces no commit), the
//! queue of incremental snapshots, and each one's last two chunk bounds. A chunk's bound is
//! stored before the chunk can commit, so the chunk number the table holds always has its
//! bound here: the snapshot resumes right after it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use replication::change::TableName;

use serde::{Deserialize, Serialize};

use crate::engine::PipelineError;

/// Progress of the initial snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// The slot was (or is about to be) created and the copy has not finished.
    Pending,
    /// Every table was copied; streaming continues from the consistent point.
    Done,
    /// No initial snapshot (`snapshot = "never"`).
    Skipped,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Initial snapshot progress.
    pub snapshot: SnapshotState,
    /// The slot's consistent point, once known.
    pub consistent_point: Option<String>,
    /// Tables the pipeline covers (`None` in files written before this was kept: the
    /// configured tables are taken as covered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Incremental snapshots to do, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incremental: Vec<Incremental>,
    /// Commit position of the last `sluice snapshot` request taken (requests seen again when
    /// the stream is replayed after a crash are not taken twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_seen: Option<String>,
    /// MySQL/MariaDB: the binlog position a restart resumes from (a transaction boundary at or
    /// before everything durable in the lake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<replication::mysql::position::BinlogPosition>,
    /// MySQL/MariaDB: the GTID set as of `binlog` (MariaDB resumes from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_gtid: Option<String>,
    /// MySQL: the complete executed GTID set as of `binlog`, when known (the dump resumes from
    /// it with COM_BINLOG_DUMP_GTID; without it, by file and offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_gtid_executed: Option<String>,
}

/// One table's incremental snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    /// `schema.table`.
    pub table: String,
    /// Only the rows matching this SQL predicate.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Why: `added` (a table new to the configuration), `resume` (an interrupted initial
    /// load), `requested` (`sluice snapshot`).
    pub reason: String,
    /// The last chunks handed out, oldest first (at most two).
    #[serde(default)]
    pub chunks: Vec<ChunkBound>,
}

/// A chunk's number and its last key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkBound {
    /// Chunk number (committed to the Delta table with the chunk's rows).
    pub chunk: u64,
    /// Last key, as text per key column; `None`: the last chunk.
    pub upper: Option<Vec<String>>,
}

impl Incremental {
    /// Where to resume given the last chunk number the table committed: `Some(after)` to
    /// continue after key `after` (`None`: from the start), `None` when already complete.
    pub fn resume_after(&self, committed: Option<u64>) -> Option<Option<Vec<String>>> {
        match self.chunks.iter().find(|c| Some(c.chunk) == committed) {
            Some(ChunkBound { upper: None, .. }) => None,
            Some(ChunkBound { upper, .. }) => Some(upper.clone()),
            None => Some(None),
        }
    }

    /// Record chunk `chunk` ending at `upper`, keeping only the previous one beside it.
    pub fn hand_out(&mut self, chunk: u64, upper: Option<Vec<String>>) {
        self.chunks.retain(|c| c.chunk < chunk);
        self.chunks.push(ChunkBound { chunk, upper });
        let excess = self.chunks.len().saturating_sub(2);
        self.chunks.drain(..excess);
    }
}

/// Where the state file of `pipeline` lives.
pub fn path(lake: &Path, pipeline: &str) -> PathBuf {
    lake.join("_sluice_state").join(format!("{pipeline}.json"))
}

impl State {
    /// The state a pipeline over `tables` starts from when it has none.
    pub fn fresh(tables: &[TableName], snapshot: SnapshotState) -> State {
        State {
            snapshot,
            consistent_point: None,
            tables: Some(tables.iter().map(ToString::to_string).collect()),
            incremental: Vec::new(),
            requests_seen: None,
            binlog: None,
            binlog_gtid: None,
            binlog_gtid_executed: None,
        }
    }

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

/// Where `sluice snapshot` leaves requests for a pipeline whose source has no channel of its
/// own for them (MySQL/MariaDB: the binlog carries no messages Sluice could write without
/// writing to the source): `<lake>/_sluice_state/<pipeline>.requests/`, one file per request,
/// named so that names sort in the order they were made.
pub fn mailbox(lake: &Path, pipeline: &str) -> PathBuf {
    lake.join("_sluice_state")
        .join(format!("{pipeline}.requests"))
}

/// Leave `request` in the pipeline's mailbox (written atomically). Returns its name.
pub fn post_request(
    lake: &Path,
    pipeline: &str,
    request: &replication::window::SnapshotRequest,
) -> std::io::Result<String> {
    use std::io::Write;
    let dir = mailbox(lake, pipeline);
    std::fs::create_dir_all(&dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{nanos:020}-{}.json", std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(request).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(&name))?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(name)
}

/// The requests in the pipeline's mailbox, oldest first (a file that does not parse is
/// returned as an error line with its name, to be reported and removed).
pub fn mailbox_requests(
    lake: &Path,
    pipeline: &str,
) -> std::io::Result<Vec<(String, Result<replication::window::SnapshotRequest, String>)>> {
    let dir = mailbox(lake, pipeline);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let parsed = std::fs::read(dir.join(&name))
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
        out.push((name, parsed));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The state file shared by the tasks of a running pipeline: every change is written
/// atomically before it counts.
pub struct Store {
    lake: PathBuf,
    pipeline: String,
    state: Mutex<State>,
}

impl Store {
    /// Load the pipeline's state, or start from `default` (written on the first update).
    pub fn load(lake: &Path, pipeline: &str, default: State) -> Result<Store, PipelineError> {
        let state = State::load(lake, pipeline)
            .map_err(|e| PipelineError::state(lake, e))?
            .unwrap_or(default);
        Ok(Store::new(lake, pipeline, state))
    }

    /// A store holding `state` (written on the first update).
    pub fn new(lake: &Path, pipeline: &str, state: State) -> Store {
        Store {
            lake: lake.to_path_buf(),
            pipeline: pipeline.to_string(),
            state: Mutex::new(state),
        }
    }

    /// A copy of the current state.
    pub fn get(&self) -> State {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the state and write it atomically; on error the change is undone.
    pub fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> Result<R, PipelineError> {
        let mut state = self.lock();
        let before = state.clone();
        let out = change(&mut state);
        if let Err(e) = state.save(&self.lake, &self.pipeline) {
            *state = before;
            return Err(PipelineError::state(&self.lake, e));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_last_committed_chunk() {
        let mut s = Incremental {
            table: "public.t".into(),
            filter: None,
            reason: "added".into(),
            chunks: vec![],
        };
        assert_eq!(s.resume_after(None), Some(None));
        assert_eq!(
            s.resume_after(Some(7)),
            Some(None),
            "an earlier snapshot's chunk"
        );
        s.hand_out(8, Some(vec!["10".into()]));
        // Chunk 8 handed out but not committed: start over.
        assert_eq!(s.resume_after(Some(7)), Some(None));
        assert_eq!(s.resume_after(Some(8)), Some(Some(vec!["10".into()])));
        s.hand_out(9, Some(vec!["20".into()]));
        s.hand_out(10, None);
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(s.resume_after(Some(9)), Some(Some(vec!["20".into()])));
        assert_eq!(s.resume_after(Some(10)), None, "complete");
        // A retried chunk number replaces the one handed out before.
        s.hand_out(10, Some(vec!["25".into()]));
        assert_eq!(s.chunks.last().unwrap().upper, Some(vec!["25".into()]));
    }
}
