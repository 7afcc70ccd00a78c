//! The streaming replication sub-protocol inside CopyBoth: XLogData and primary keepalive
//! messages from the server, standby status updates from us.
//! <https://www.postgresql.org/docs/current/protocol-replication.html>

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};

use super::value::PG_EPOCH_OFFSET_MICROS;
use crate::{Error, Lsn, Result};

/// A message from the walsender.
#[derive(Debug)]
pub enum ServerMessage {
    /// WAL data: one pgoutput message in `data`.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// Keepalive; `wal_end` is the position the server has sent up to.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// Parse a CopyData payload from the server.
pub fn parse(mut payload: Bytes) -> Result<ServerMessage> {
    let short = || Error::Protocol("short replication message".into());
    if payload.is_empty() {
        return Err(short());
    }
    match payload.get_u8() {
        b'w' => {
            if payload.remaining() < 24 {
                return Err(short());
            }
            let wal_start = Lsn(payload.get_u64());
            let wal_end = Lsn(payload.get_u64());
            let _send_time = payload.get_i64();
            Ok(ServerMessage::XLogData {
                wal_start,
                wal_end,
                data: payload,
            })
        }
        b'k' => {
            if payload.remaining() < 17 {
                return Err(short());
            }
            let wal_end = Lsn(payload.get_u64());
            let _send_time = payload.get_i64();
            Ok(ServerMessage::Keepalive {
                wal_end,
                reply_requested: payload.get_u8() == 1,
            })
        }
        other => Err(Error::Protocol(format!(
            "unknown replication message {:?}",
            char::from(other)
        ))),
    }
}

/// Encode a standby status update. `flush` is what the slot may be confirmed to: everything
/// before it is durable in every sink.
pub fn status_update(write: Lsn, flush: Lsn, reply_requested: bool) -> [u8; 34] {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
        - PG_EPOCH_OFFSET_MICROS;
    let mut out = [0u8; 34];
    out[0] = b'r';
    out[1..9].copy_from_slice(&write.0.to_be_bytes());
    out[9..17].copy_from_slice(&flush.0.to_be_bytes());
    out[17..25].copy_from_slice(&flush.0.to_be_bytes());
    out[25..33].copy_from_slice(&now.to_be_bytes());
    out[33] = u8::from(reply_requested);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keepalive_and_rejects_short_input() {
        let mut k = vec![b'k'];
        k.extend_from_slice(&0x20u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        match parse(Bytes::from(k.clone())).unwrap() {
            ServerMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                assert_eq!(wal_end, Lsn(0x20));
                assert!(reply_requested);
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..k.len() {
            assert!(parse(Bytes::copy_from_slice(&k[..cut])).is_err());
        }
        let s = status_update(Lsn(5), Lsn(3), false);
        assert_eq!(s[0], b'r');
        assert_eq!(u64::from_be_bytes(s[9..17].try_into().unwrap()), 3);
    }
}
