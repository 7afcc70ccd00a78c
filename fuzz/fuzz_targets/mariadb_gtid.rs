//! MariaDB GTID event bodies (what follows the 19-byte event header, checksum removed), and
//! the event type classification the binlog reader starts with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::mysql::events::{self, Kind};

fuzz_target!(|data: &[u8]| {
    if let Some(&code) = data.first() {
        if let Kind::Refused(why) = events::classify(code) {
            assert!(!why.is_empty());
        }
    }
    if let Some(gtid) = events::mariadb_gtid(data) {
        assert!(data.len() >= 13);
        assert_eq!(gtid.seq.to_le_bytes(), data[..8]);
        assert_eq!(gtid.domain.to_le_bytes(), data[8..12]);
        assert_eq!(gtid.standalone, data[12] & 1 == 1);
    }
});
