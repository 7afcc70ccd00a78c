//! MySQL's executed GTID set (`uuid:1-5:7-9,uuid2:1-3`): what a MySQL replica sends with
//! COM_BINLOG_DUMP_GTID so the server starts right after it, wherever that is in its binlog.
//!
//! Sluice keeps the set only when it is complete: read together with a position under the
//! snapshot's read lock, or carried from a complete set through every GTID event since. A
//! set missing history would make the server resend (or, once purged, refuse) everything not
//! in it, so without one the dump resumes by file and offset.

use std::collections::BTreeMap;
use std::fmt;

use mysql_common::packets::{GnoInterval, Sid};

/// Executed GTIDs per source (`uuid`, or `uuid:tag`), as inclusive ranges in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<String, Vec<(u64, u64)>>);

impl GtidSet {
    /// Parse MySQL's text form (whitespace and newlines, as `@@gtid_executed` prints them, are
    /// ignored); `None` if it is not one.
    pub fn parse(text: &str) -> Option<GtidSet> {
        let mut set = GtidSet::default();
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for sid in text.split(',').filter(|s| !s.is_empty()) {
            let mut parts = sid.split(':');
            let uuid = parts.next()?.to_ascii_lowercase();
            if uuid.len() != 36 {
                return None;
            }
            let mut source = uuid;
            for part in parts {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                        set.insert_range(&source, a, b);
                    }
                    None => match part.parse::<u64>() {
                        Ok(n) => set.insert_range(&source, n, n),
                        // A tag (MySQL 8.4+): the intervals after it belong to `uuid:tag`.
                        Err(_) => source = format!("{}:{part}", &source[..36]),
                    },
                }
            }
        }
        Some(set)
    }

    /// Add one transaction.
    pub fn add(&mut self, source: &str, gno: u64) {
        self.insert_range(source, gno, gno);
    }

    fn insert_range(&mut self, source: &str, start: u64, end: u64) {
        let ranges = self.0.entry(source.to_string()).or_default();
        ranges.push((start, end));
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }

    /// The set as COM_BINLOG_DUMP_GTID's SID block (intervals there end exclusively).
    pub fn sids(&self) -> Option<Vec<Sid<'static>>> {
        let mut out = Vec::with_capacity(self.0.len());
        for (source, ranges) in &self.0 {
            let uuid = source.get(..36)?;
            let hex: String = uuid.chars().filter(|c| *c != '-').collect();
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
            }
            let mut sid = Sid::new(bytes);
            if let Some(tag) = source.get(37..) {
                sid = sid.with_tag(mysql_common::packets::Tag::new(tag.to_string()).ok()?);
            }
            let intervals = ranges
                .iter()
                .map(|&(a, b)| GnoInterval::new(a, b + 1))
                .collect();
            out.push(sid.with_intervals(intervals));
        }
        Some(out)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (source, ranges)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(source)?;
            for &(a, b) in ranges {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "8ee2f650-eabf-11f1-bdda-02fc00000001";

    #[test]
    fn parses_merges_and_prints_as_mysql() {
        let mut set = GtidSet::parse(&format!("{U}:1-5:7,\n{}:3", &U.replace('8', "9"))).unwrap();
        set.add(U, 6);
        set.add(U, 8);
        assert_eq!(
            set.to_string(),
            format!("{U}:1-8,{}:3", U.replace('8', "9"))
        );
        assert_eq!(GtidSet::parse("").unwrap().to_string(), "");
        assert!(GtidSet::parse("not-a-uuid:1-2").is_none());
        assert_eq!(set.sids().unwrap().len(), 2);
    }
}
