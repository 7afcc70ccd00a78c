//! From a hub batch to the REST sink's items: the batch's changes folded to one operation per
//! object (key), each rendered from its template.
//!
//! Folding, per key, in commit order:
//!
//! | earlier   | change                     | result                                   |
//! |-----------|----------------------------|------------------------------------------|
//! | —         | insert, snapshot, update   | upsert of the row                        |
//! | —         | update with unchanged cols | update of the columns sent               |
//! | upsert    | update with unchanged cols | upsert: the earlier values fill the gaps |
//! | any       | delete                     | delete                                   |
//! | any       | insert, update (whole row) | upsert of the new row                    |
//!
//! A key change is a delete of the old key and an upsert of the new one (the changelog
//! writes it as `d` + `u`), so it moves the object. The fold is deterministic (operations in
//! the order their key first appears), so a batch resent after a crash makes the same
//! requests with the same idempotency keys. A truncate cannot be expressed per object: it is
//! parked, never dropped.

use std::collections::HashMap;

use serde_json::{Map, Value};

use replication::change::TableName;

use crate::hub::Change;
use crate::Result;

use super::config::RestSettings;

/// What an operation does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Create or replace with the whole row.
    Upsert,
    /// Change the columns sent, keep the others (the row had unchanged TOAST columns).
    Update,
    /// Remove.
    Delete,
}

/// One object's folded operation.
#[derive(Debug, Clone)]
pub struct Op<'a> {
    /// What to do.
    pub kind: OpKind,
    /// The row as folded (for a delete: the key, or the old row under REPLICA IDENTITY FULL).
    pub row: Map<String, Value>,
    /// Columns whose value is still unknown (unchanged TOAST not filled by the fold).
    pub unchanged: Vec<String>,
    /// The changes folded into it, in commit order (parked together if it is refused).
    pub changes: Vec<&'a Change>,
}

/// A batch folded: operations, and the changes that cannot be sent at all (truncates).
#[derive(Debug, Default)]
pub struct Folded<'a> {
    /// One per key, in the order keys first appear.
    pub ops: Vec<Op<'a>>,
    /// Truncates.
    pub truncates: Vec<&'a Change>,
}

/// Folds `changes` per key (each row parsed into its columns here, once).
pub fn fold(changes: &[Change]) -> Result<Folded<'_>> {
    let mut out = Folded::default();
    let mut index: HashMap<(&TableName, &[u8]), usize> = HashMap::new();
    for c in changes {
        if c.op == "t" {
            out.truncates.push(c);
            continue;
        }
        let kind = match (c.op, c.unchanged.is_empty()) {
            ("d", _) => OpKind::Delete,
            (_, true) => OpKind::Upsert,
            (_, false) => OpKind::Update,
        };
        let Some(&i) = index.get(&(&*c.table, &c.key[..])) else {
            index.insert((&c.table, &c.key), out.ops.len());
            out.ops.push(Op {
                kind,
                row: c.row_map()?,
                unchanged: c.unchanged.clone(),
                changes: vec![c],
            });
            continue;
        };
        let op = &mut out.ops[i];
        op.changes.push(c);
        if kind != OpKind::Update || op.kind == OpKind::Delete {
            op.kind = kind;
            op.row = c.row_map()?;
            op.unchanged = c.unchanged.clone();
            continue;
        }
        // A partial row over an earlier upsert or update: its values win, the earlier ones
        // fill what it did not send.
        for (k, v) in c.row_map()? {
            op.row.insert(k, v);
        }
        let row = &op.row;
        let mut unchanged: Vec<String> = op
            .unchanged
            .iter()
            .chain(c.unchanged.iter())
            .filter(|u| !row.contains_key(*u))
            .cloned()
            .collect();
        unchanged.sort();
        unchanged.dedup();
        op.unchanged = unchanged;
        if op.unchanged.is_empty() {
            op.kind = OpKind::Upsert;
        }
    }
    Ok(out)
}

/// One request's worth of an operation, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The method of its template.
    pub method: reqwest::Method,
    /// The rendered URL (`None`: the upsert goes only through a rows batch).
    pub url: Option<String>,
    /// The rendered body.
    pub body: Option<Value>,
    /// Whether it is a whole-row upsert (may go in a rows batch).
    pub upsert: bool,
    /// Whether it is a delete (404 and 410 count as done).
    pub delete: bool,
}

/// Renders `op` with `settings`' templates; the error is why it cannot be sent.
pub fn render(settings: &RestSettings, op: &Op<'_>) -> Result<Item, String> {
    let (template, upsert, delete) = match op.kind {
        OpKind::Delete => (&settings.delete, false, true),
        OpKind::Upsert => (&settings.upsert, true, false),
        OpKind::Update => {
            // Unchanged columns the upsert body does not name make no difference.
            let partial = match &settings.upsert.body {
                Some(b) => b.render(&op.row, &op.unchanged).partial,
                None => true,
            };
            if partial {
                (&settings.update, false, false)
            } else {
                (&settings.upsert, true, false)
            }
        }
    };
    let url = match &template.url {
        Some(t) => Some(t.render_url(&op.row).map_err(|e| e.0)?),
        None => None,
    };
    let body = match (&template.body, delete) {
        (Some(b), _) => Some(b.render(&op.row, &op.unchanged).value),
        (None, true) => None,
        (None, false) => Some(Value::Object(op.row.clone())),
    };
    Ok(Item {
        method: template.method.clone(),
        url,
        body,
        upsert,
        delete,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use replication::change::TableName;
    use serde_json::json;

    use super::*;

    fn change(seq: i64, op: &'static str, id: i64, row: Value, unchanged: &[&str]) -> Change {
        let key = bytes::Bytes::from(json!({"id": id}).to_string());
        Change {
            table: Arc::new(TableName::parse("public.customers").unwrap()),
            lsn: 100,
            seq,
            dup: 0,
            op,
            commit_ts: 0,
            unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
            key_hash: crate::hub::key_hash("public.customers", &key),
            key,
            row: bytes::Bytes::from(row.to_string()),
        }
    }

    #[test]
    fn folds_per_key_in_order() {
        let changes = vec![
            change(0, "c", 1, json!({"id": 1, "n": 1, "notes": "x"}), &[]),
            change(1, "u", 2, json!({"id": 2, "n": 5}), &["notes"]),
            change(2, "u", 1, json!({"id": 1, "n": 2}), &["notes"]),
            change(3, "d", 3, json!({"id": 3}), &[]),
            change(4, "t", 0, json!({}), &[]),
            change(5, "u", 2, json!({"id": 2, "n": 6}), &["notes", "bio"]),
            change(6, "c", 3, json!({"id": 3, "n": 9, "notes": "y"}), &[]),
        ];
        let f = fold(&changes).unwrap();
        assert_eq!(f.truncates.len(), 1);
        let summary: Vec<_> = f
            .ops
            .iter()
            .map(|o| {
                (
                    o.kind,
                    Value::Object(o.row.clone()),
                    o.unchanged.clone(),
                    o.changes.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    OpKind::Upsert,
                    json!({"id": 1, "n": 2, "notes": "x"}),
                    vec![],
                    2
                ),
                (
                    OpKind::Update,
                    json!({"id": 2, "n": 6}),
                    vec!["bio".to_string(), "notes".to_string()],
                    2
                ),
                (
                    OpKind::Upsert,
                    json!({"id": 3, "n": 9, "notes": "y"}),
                    vec![],
                    2
                ),
            ]
        );
    }
}
