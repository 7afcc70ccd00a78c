//! A batch as the webhook's JSON body.
//!
//! ```json
//! {"pipeline": "shop", "sink": "orders-events", "id": "<idempotency key>",
//!  "first": {"lsn": 23876432, "seq": 0}, "last": {"lsn": 23876432, "seq": 4},
//!  "events": [{"table": "public.orders", "op": "u",
//!              "position": {"lsn": 23876432, "seq": 0},
//!              "commit_ts": "2026-12-01T22:40:00.123456Z",
//!              "key": {"id": 7}, "unchanged": ["notes"], "row": {"id": 7, "total": 12}}]}
//! ```
//!
//! `op` is `c` insert, `u` update, `d` delete, `r` snapshot read, `t` truncate. Columns the
//! source did not send (unchanged TOAST) are listed in `unchanged` and absent from `row`,
//! never sent as null. The body is a pure function of the batch, so a resend is byte-equal.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::http::idempotency_key;
use crate::hub::{Batch, Change};

/// A batch ready to send.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `Idempotency-Key` and `webhook-id`.
    pub key: String,
    /// The JSON body.
    pub body: bytes::Bytes,
}

/// The key: pipeline, sink, the batch's tables (joined by `,`) and its position range. Rows
/// sharing a position (snapshot rows) are told apart by their ordinals, appended to the
/// tables as `@first-last` when not both 0.
pub fn key(pipeline: &str, sink: &str, changes: &[&Change]) -> String {
    let mut tables: Vec<String> = changes.iter().map(|c| c.table.to_string()).collect();
    tables.sort();
    tables.dedup();
    let mut tables = tables.join(",");
    let first = changes.first().map_or((0, 0), |c| c.position());
    let last = changes.last().map_or((0, 0), |c| c.position());
    let dups = (
        changes.first().map_or(0, |c| c.dup),
        changes.last().map_or(0, |c| c.dup),
    );
    if dups != (0, 0) {
        tables.push_str(&format!("@{}-{}", dups.0, dups.1));
    }
    idempotency_key(pipeline, sink, &tables, first, last)
}

/// Encodes `changes` (a batch or one change of it).
pub fn encode(pipeline: &str, sink: &str, changes: &[Change]) -> Encoded {
    let key = key(pipeline, sink, &changes.iter().collect::<Vec<_>>());
    let pos = |p: (u64, i64)| json!({"lsn": p.0, "seq": p.1});
    let events: Vec<Value> = changes.iter().map(event).collect();
    let body = json!({
        "pipeline": pipeline,
        "sink": sink,
        "id": key,
        "first": pos(changes.first().map_or((0, 0), Change::position)),
        "last": pos(changes.last().map_or((0, 0), Change::position)),
        "events": events,
    });
    Encoded {
        key,
        body: bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    }
}

/// Encodes a whole batch.
pub fn encode_batch(pipeline: &str, sink: &str, batch: &Batch) -> Encoded {
    encode(pipeline, sink, &batch.changes)
}

fn event(c: &Change) -> Value {
    let ts = UNIX_EPOCH + Duration::from_micros(c.commit_ts.max(0) as u64);
    json!({
        "table": c.table.to_string(),
        "op": c.op,
        "position": {"lsn": c.lsn, "seq": c.seq},
        "commit_ts": humantime::format_rfc3339_micros(ts).to_string(),
        "key": c.key,
        "unchanged": c.unchanged,
        "row": c.row,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use replication::change::TableName;
    use serde_json::Map;

    use super::*;

    fn change(seq: i64, unchanged: &[&str]) -> Change {
        let mut row = Map::new();
        row.insert("id".into(), json!(seq));
        Change {
            table: Arc::new(TableName::parse("public.orders").unwrap()),
            lsn: 100,
            seq,
            dup: 0,
            op: "u".into(),
            commit_ts: 1_700_000_000_000_000,
            unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
            key: row.clone(),
            key_id: format!("k{seq}"),
            row,
            size: 8,
        }
    }

    #[test]
    fn deterministic_and_lists_unchanged_columns() {
        let changes = vec![change(0, &["notes"]), change(1, &[])];
        let a = encode("shop", "hook", &changes);
        let b = encode("shop", "hook", &changes);
        assert_eq!((a.key.clone(), a.body.clone()), (b.key, b.body));
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["events"][0]["unchanged"], json!(["notes"]));
        assert!(v["events"][0]["row"].get("notes").is_none());
        assert_eq!(v["events"][1]["position"], json!({"lsn": 100, "seq": 1}));
        assert_eq!(
            v["events"][0]["commit_ts"],
            json!("2023-11-14T22:13:20.000000Z")
        );
        assert_ne!(a.key, encode("shop", "hook", &changes[..1]).key);
    }
}
