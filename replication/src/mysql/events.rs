//! Which binlog events Sluice acts on, which it passes over on purpose (a named list), and the
//! MariaDB events mysql_common does not decode, parsed here by hand. Any other event type is an
//! error: nothing is skipped silently.

/// What to do with an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rotate,
    FormatDescription,
    Query,
    Xid,
    TableMap,
    Rows,
    Heartbeat,
    /// MariaDB GTID (starts a transaction unless standalone).
    MariadbGtid,
    /// MySQL GTID (the transaction follows, with BEGIN).
    MysqlGtid,
    /// Known and irrelevant to row changes.
    Pass,
    /// Known and impossible to decode: the reason and the fix.
    Refused(&'static str),
    /// Not known at all.
    Unknown,
}

/// Classify a raw event type code.
pub fn classify(code: u8) -> Kind {
    match code {
        4 => Kind::Rotate,
        15 => Kind::FormatDescription,
        2 => Kind::Query,
        16 => Kind::Xid,
        19 => Kind::TableMap,
        23..=25 | 30..=32 => Kind::Rows,
        27 | 41 => Kind::Heartbeat,
        162 => Kind::MariadbGtid,
        33 | 42 => Kind::MysqlGtid,
        // STOP, INTVAR, RAND, USER_VAR (statement context), IGNORABLE, ROWS_QUERY, anonymous
        // GTID, previous GTIDs, transaction context, view change; MariaDB annotate rows,
        // binlog checkpoint, GTID list, start encryption (events arrive decrypted).
        3 | 5 | 13 | 14 | 28 | 29 | 34 | 35 | 36 | 37 | 160 | 161 | 163 | 164 => Kind::Pass,
        26 => Kind::Refused("an INCIDENT event: the server's binlog has a gap (changes were lost on the server); re-snapshot the tables"),
        39 => Kind::Refused("a partial JSON update event: SET GLOBAL binlog_row_value_options = ''"),
        40 | 165..=171 => Kind::Refused("a compressed event: turn binlog compression off (log_bin_compress / binlog_transaction_compression)"),
        38 => Kind::Refused("an XA PREPARE event: XA transactions are not supported"),
        _ => Kind::Unknown,
    }
}

/// A MariaDB GTID event: `domain-server-seq`, and whether it is a standalone statement (DDL,
/// no transaction follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariadbGtid {
    pub domain: u32,
    pub seq: u64,
    pub standalone: bool,
}

/// Parse a MariaDB GTID event body: seq_no u64 LE, domain_id u32 LE, flags u8 (bit 0:
/// standalone), then optional fields this reader does not need.
pub fn mariadb_gtid(data: &[u8]) -> Option<MariadbGtid> {
    let seq = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let flags = *data.get(12)?;
    Some(MariadbGtid {
        domain,
        seq,
        standalone: flags & 1 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_events_parse_and_unknown_types_are_not_passed() {
        let mut body = 77u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(1);
        assert_eq!(
            mariadb_gtid(&body),
            Some(MariadbGtid {
                domain: 3,
                seq: 77,
                standalone: true
            })
        );
        assert_eq!(mariadb_gtid(&body[..10]), None);
        assert_eq!(classify(200), Kind::Unknown);
        assert!(matches!(classify(166), Kind::Refused(_)));
        assert_eq!(classify(161), Kind::Pass);
    }

    #[test]
    fn captured_gtid_bodies_at_every_truncation() {
        // MariaDB 10.11's GTID event bodies (checksum removed; scripts/fuzz-seeds.sh): a
        // transaction's (flags 0x0c) and a DDL statement's (0x29: standalone, DDL). Every
        // prefix shorter than the 13 bytes read is refused, every longer one reads the same.
        for (body, seq, standalone) in [
            (
                [
                    0xbb, 0x75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0,
                ],
                0x75bb,
                false,
            ),
            (
                [
                    0xb9, 0x75, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0, 0,
                ],
                0x75b9,
                true,
            ),
        ] {
            let whole = MariadbGtid {
                domain: 0,
                seq,
                standalone,
            };
            for cut in 0..=body.len() {
                let expected = (cut >= 13).then_some(whole);
                assert_eq!(mariadb_gtid(&body[..cut]), expected, "cut at {cut}");
            }
        }
    }
}
