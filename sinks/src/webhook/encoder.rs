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

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use replication::change::TableName;

use crate::http::idempotency_key;
use crate::hub::{Batch, Change};

/// Bytes of one event besides its row and key (field names, position, time, op, table):
/// what the body is pre-sized with, so it is written without growing.
const EVENT_OVERHEAD: usize = 160;

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
    // Tables are shared `Arc`s: named once each, not once per change.
    let mut named: Vec<&Arc<TableName>> = Vec::new();
    for c in changes {
        if !named.iter().any(|t| Arc::ptr_eq(t, &c.table)) {
            named.push(&c.table);
        }
    }
    let mut tables: Vec<String> = named.iter().map(|t| t.to_string()).collect();
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
///
/// The body is written straight into one buffer sized up front: fields in the order a
/// `serde_json::Map` sorts them, each row copied as the reader encoded it, nothing cloned.
pub fn encode(pipeline: &str, sink: &str, changes: &[Change]) -> Encoded {
    let key = key(pipeline, sink, &changes.iter().collect::<Vec<_>>());
    let capacity = changes
        .iter()
        .map(|c| c.row.len() + c.key.len() + EVENT_OVERHEAD)
        .sum::<usize>()
        + 2 * key.len()
        + pipeline.len()
        + sink.len()
        + 128;
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"{\"events\":[");
    let mut table: Option<(&Arc<TableName>, Vec<u8>)> = None;
    let mut time = CommitTime::default();
    let mut lsn = LsnText::default();
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if !table
            .as_ref()
            .is_some_and(|(t, _)| Arc::ptr_eq(t, &c.table))
        {
            table = Some((&c.table, json_str(&c.table.to_string())));
        }
        event(
            &mut out,
            c,
            table.as_ref().map_or(&[][..], |(_, name)| name),
            &mut time,
            &mut lsn,
        );
    }
    out.extend_from_slice(b"],\"first\":");
    LsnText::default().write(&mut out, changes.first().map_or((0, 0), Change::position));
    out.extend_from_slice(b",\"id\":");
    str_into(&mut out, &key);
    out.extend_from_slice(b",\"last\":");
    LsnText::default().write(&mut out, changes.last().map_or((0, 0), Change::position));
    out.extend_from_slice(b",\"pipeline\":");
    str_into(&mut out, pipeline);
    out.extend_from_slice(b",\"sink\":");
    str_into(&mut out, sink);
    out.push(b'}');
    Encoded {
        key,
        body: bytes::Bytes::from(out),
    }
}

/// Encodes a whole batch.
pub fn encode_batch(pipeline: &str, sink: &str, batch: &Batch) -> Encoded {
    encode(pipeline, sink, &batch.changes)
}

/// The last commit time formatted: the changes of one transaction share it.
#[derive(Default)]
struct CommitTime {
    micros: Option<i64>,
    text: Vec<u8>,
}

impl CommitTime {
    /// `micros` as RFC 3339 text (UTC, microseconds).
    fn text(&mut self, micros: i64) -> &[u8] {
        if self.micros != Some(micros) {
            let ts = UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64);
            self.text.clear();
            // Writing into a Vec cannot fail.
            let _ = write!(self.text, "{}", humantime::format_rfc3339_micros(ts));
            self.micros = Some(micros);
        }
        &self.text
    }
}

/// The last position's `{"lsn":N,"seq":` text: the changes of a batch share one lsn.
#[derive(Default)]
struct LsnText {
    lsn: Option<u64>,
    text: Vec<u8>,
}

impl LsnText {
    /// Writes `{"lsn":lsn,"seq":seq}`.
    fn write(&mut self, out: &mut Vec<u8>, (lsn, seq): (u64, i64)) {
        if self.lsn != Some(lsn) {
            self.text.clear();
            self.text.extend_from_slice(b"{\"lsn\":");
            self.text
                .extend_from_slice(itoa::Buffer::new().format(lsn).as_bytes());
            self.text.extend_from_slice(b",\"seq\":");
            self.lsn = Some(lsn);
        }
        out.extend_from_slice(&self.text);
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.push(b'}');
    }
}

/// One event, `table` already as a JSON string.
fn event(out: &mut Vec<u8>, c: &Change, table: &[u8], time: &mut CommitTime, lsn: &mut LsnText) {
    out.extend_from_slice(b"{\"commit_ts\":\"");
    // RFC 3339 text needs no escaping.
    out.extend_from_slice(time.text(c.commit_ts));
    out.extend_from_slice(b"\",\"key\":");
    out.extend_from_slice(&c.key);
    if c.op.bytes().all(|b| b.is_ascii_alphabetic()) {
        // The five ops are letters: nothing to escape, and no serializer to go through.
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(c.op.as_bytes());
        out.extend_from_slice(b"\",\"position\":");
    } else {
        out.extend_from_slice(b",\"op\":");
        str_into(out, c.op);
        out.extend_from_slice(b",\"position\":");
    }
    lsn.write(out, c.position());
    out.extend_from_slice(b",\"row\":");
    out.extend_from_slice(&c.row);
    out.extend_from_slice(b",\"table\":");
    out.extend_from_slice(table);
    if c.unchanged.is_empty() {
        out.extend_from_slice(b",\"unchanged\":[]}");
        return;
    }
    out.extend_from_slice(b",\"unchanged\":[");
    for (i, u) in c.unchanged.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        str_into(out, u);
    }
    out.extend_from_slice(b"]}");
}

/// `s` as a JSON string (serde_json's escaping).
fn str_into(out: &mut Vec<u8>, s: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

fn json_str(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    str_into(&mut v, s);
    v
}

#[cfg(test)]
mod tests {
    use replication::change::TableName;
    use serde_json::{json, Map, Value};

    use super::*;

    fn change(seq: i64, unchanged: &[&str]) -> Change {
        let mut key = Map::new();
        key.insert("id".into(), json!(seq));
        Change {
            table: Arc::new(TableName::parse("public.orders").unwrap()),
            lsn: 100,
            seq,
            dup: 0,
            op: "u",
            commit_ts: 1_700_000_000_000_000,
            unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
            key_hash: seq as u64,
            key: bytes::Bytes::from(Value::Object(key).to_string()),
            row: bytes::Bytes::from(format!(
                r#"{{"id":{seq},"note":"a \"q\" é\n","price":12.30,"gone":null}}"#
            )),
        }
    }

    /// The body as the encoder wrote it before it copied raw rows: `json!` of every field.
    fn reference(pipeline: &str, sink: &str, changes: &[Change]) -> Value {
        let pos = |p: (u64, i64)| json!({"lsn": p.0, "seq": p.1});
        let events: Vec<Value> = changes
            .iter()
            .map(|c| {
                let ts = UNIX_EPOCH + Duration::from_micros(c.commit_ts.max(0) as u64);
                json!({
                    "table": c.table.to_string(),
                    "op": c.op,
                    "position": {"lsn": c.lsn, "seq": c.seq},
                    "commit_ts": humantime::format_rfc3339_micros(ts).to_string(),
                    "key": c.key_map().unwrap(),
                    "unchanged": c.unchanged,
                    "row": c.row_map().unwrap(),
                })
            })
            .collect();
        json!({
            "pipeline": pipeline,
            "sink": sink,
            "id": key(pipeline, sink, &changes.iter().collect::<Vec<_>>()),
            "first": pos(changes.first().map_or((0, 0), Change::position)),
            "last": pos(changes.last().map_or((0, 0), Change::position)),
            "events": events,
        })
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

    #[test]
    fn same_json_as_the_value_built_body() {
        let mut changes = [change(0, &["notes", "bio"]), change(1, &[]), change(2, &[])];
        changes[2].table = Arc::new(TableName::parse("public.o\"dd").unwrap());
        for n in 1..=changes.len() {
            let body = encode("sh\"op", "hook", &changes[..n]).body;
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v, reference("sh\"op", "hook", &changes[..n]), "{n} events");
        }
    }
}
