//! A hub sink's durable cursor: the changelog position `(lsn, seq)` it has passed, every
//! change at or before it acknowledged or parked.
//!
//! Stored at `<lake>/_sluice_cursors/<pipeline>/<sink>.json` as
//! `{"lsn": …, "seq": …, "delivered": …, "parked": …, "updated_at_ms": …}`, written by
//! [`write_atomically`] (temp file, fsync, rename, fsync of the directory), so a crash leaves
//! the old or the new cursor, never a torn one. Only the runner of the sink writes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::position::now_ms;
use super::reader::Mark;
use crate::{Error, Result};

/// Directory of the cursors beside the lake.
pub const CURSORS_DIR: &str = "_sluice_cursors";

/// The cursor file of `sink` of `pipeline`.
pub fn cursor_path(lake: &Path, pipeline: &str, sink: &str) -> PathBuf {
    lake.join(CURSORS_DIR)
        .join(pipeline)
        .join(format!("{sink}.json"))
}

/// Where a sink stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Commit position of the last change passed (0: nothing yet).
    pub lsn: u64,
    /// Its ordinal in the transaction.
    pub seq: i64,
    /// Its table (`schema.table`) and ordinal among that table's rows with the same
    /// `(lsn, seq)` (snapshot rows); with `lsn` and `seq` the exclusive bound.
    #[serde(default)]
    pub table: String,
    /// See `table`.
    #[serde(default)]
    pub dup: u64,
    /// Changes acknowledged so far.
    pub delivered: u64,
    /// Changes parked so far.
    pub parked: u64,
    /// When it was written (unix milliseconds).
    pub updated_at_ms: u64,
}

impl Cursor {
    /// The position changes are read after.
    pub fn after(&self) -> Mark {
        (self.lsn, self.seq, self.table.clone(), self.dup)
    }

    /// Reads the cursor; a sink that never ran starts at the beginning of the changelog.
    pub fn load(path: &Path) -> Result<Cursor> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.display().to_string(),
                reason: format!(
                    "unreadable cursor ({e}): restore it or delete it to redeliver everything"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursor::default()),
            Err(source) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Stores the cursor durably.
    pub fn store(&mut self, path: &Path) -> Result<()> {
        self.updated_at_ms = now_ms();
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_atomically(path, &bytes)
    }
}

/// Replaces `path` with `bytes`: temp file beside it, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_at_zero() {
        let dir = std::env::temp_dir().join(format!("sluice-cursor-{}", std::process::id()));
        let path = cursor_path(&dir, "p", "s");
        assert_eq!(Cursor::load(&path).unwrap(), Cursor::default());
        let mut c = Cursor {
            lsn: 7,
            seq: 3,
            table: "public.t".into(),
            dup: 2,
            delivered: 10,
            parked: 1,
            updated_at_ms: 0,
        };
        c.store(&path).unwrap();
        assert_eq!(Cursor::load(&path).unwrap(), c);
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(Cursor::load(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
