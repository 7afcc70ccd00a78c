//! Binlog positions as one monotonically increasing number.
//!
//! `(file index << 32) | offset`: the index is the numeric suffix of the binlog file name
//! (`binlog.000042` → 42), the offset the byte position in that file (below 4 GiB: the
//! server's `max_binlog_size` is at most 1 GiB). Later files sort after earlier ones, so the
//! number orders transactions like the binlog does, across rotations and restarts.

use std::fmt;

use crate::Lsn;

/// A place in the binlog: file name and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct BinlogPosition {
    /// File name, e.g. `binlog.000042`.
    pub file: String,
    /// Byte offset in the file.
    pub pos: u64,
}

impl BinlogPosition {
    /// The packed form; `None` if the file name has no numeric suffix or the offset is out of
    /// range.
    pub fn packed(&self) -> Option<Lsn> {
        let index: u64 = self.file.rsplit_once('.')?.1.parse().ok()?;
        (self.pos < 1 << 32 && index < 1 << 31).then_some(Lsn((index << 32) | self.pos))
    }

    /// The position `packed` names, in a file with the same base name as `like`.
    pub fn unpack(packed: Lsn, like: &str) -> BinlogPosition {
        let base = like.rsplit_once('.').map_or(like, |(b, _)| b);
        BinlogPosition {
            file: format!("{base}.{:06}", packed.0 >> 32),
            pos: packed.0 & 0xffff_ffff,
        }
    }
}

/// Binlog bytes from `from` to the end of the last of `files` (name and size, as `SHOW
/// BINARY LOGS` lists them, oldest first): the rest of `from`'s file and every later file
/// whole. `None` if `from`'s file is not listed (purged, or another server's).
pub fn bytes_behind(files: &[(String, u64)], from: &BinlogPosition) -> Option<u64> {
    let at = files.iter().position(|(name, _)| *name == from.file)?;
    let rest = files[at].1.saturating_sub(from.pos);
    Some(rest + files[at + 1..].iter().map(|(_, size)| size).sum::<u64>())
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_spans_rotations() {
        let files = vec![
            ("binlog.000007".to_string(), 1_000),
            ("binlog.000008".to_string(), 600),
            ("binlog.000009".to_string(), 250),
        ];
        let at = |file: &str, pos| BinlogPosition {
            file: file.into(),
            pos,
        };
        assert_eq!(bytes_behind(&files, &at("binlog.000009", 250)), Some(0));
        assert_eq!(bytes_behind(&files, &at("binlog.000009", 100)), Some(150));
        assert_eq!(bytes_behind(&files, &at("binlog.000007", 900)), Some(950));
        assert_eq!(bytes_behind(&files, &at("binlog.000006", 4)), None);
    }

    #[test]
    fn packs_in_binlog_order_and_back() {
        let a = BinlogPosition {
            file: "binlog.000009".into(),
            pos: 4_000_000_000,
        };
        let b = BinlogPosition {
            file: "binlog.000010".into(),
            pos: 4,
        };
        assert!(a.packed().unwrap() < b.packed().unwrap());
        assert_eq!(BinlogPosition::unpack(b.packed().unwrap(), &a.file), b);
        let long = BinlogPosition {
            file: "mysql-bin.1234567".into(),
            pos: 120,
        };
        assert_eq!(
            BinlogPosition::unpack(long.packed().unwrap(), &long.file),
            long
        );
        assert!(BinlogPosition {
            file: "nosuffix".into(),
            pos: 4
        }
        .packed()
        .is_none());
    }
}
