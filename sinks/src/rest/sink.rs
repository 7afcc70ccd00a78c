//! The REST sink's delivery of one batch ([`HubSink`] for [`RestSink`]).
//!
//! ```text
//!   batch ─▶ fold per key ─▶ render templates ─┬─ no batch endpoint: one request per object
//!                                              ├─ requests: chunks of max_items sub-requests
//!                                              └─ rows: chunks of max_items whole-row upserts
//!                                                 + one request per delete / partial update
//!   all requests of the batch in flight at once (the destination's concurrency bounds them)
//! ```
//!
//! A refused batch request is split into one request per item, so only the refused items are
//! parked. Items of a `requests` batch answered with a retryable status (429, 5xx) are sent
//! again, alone of the others, after a backoff; a batch is never larger than `max_items`.

use std::sync::Arc;

use serde_json::Value;

use crate::http::{classify_status, excerpt, Backoff, Delivery, Destination, Response, Verdict};
use crate::hub::{Ack, Batch, Change, HubSink, ParkedChange};
use crate::webhook::key;
use crate::{Error, Result};

use super::config::{BatchFormat, RestSettings};
use super::encoder::{fold, render, Item, Op};
use super::request_builder::{build, requests, rows, single, Prepared};

/// Most bytes of a batch response read (its per-item statuses).
const KEEP_BODY: usize = 16 << 20;

/// A REST destination of one pipeline.
pub struct RestSink {
    pipeline: String,
    settings: RestSettings,
    destination: Destination,
    backoff: Backoff,
}

/// What became of one item.
#[derive(Debug, Clone)]
enum Outcome {
    Done,
    Refused { status: u16, excerpt: String },
}

/// An operation and its rendered request.
type Entry<'a> = (&'a Op<'a>, &'a Item);

impl RestSink {
    /// The sink of `settings` for `pipeline`.
    pub fn new(pipeline: &str, settings: &RestSettings) -> Result<Self> {
        Ok(RestSink {
            pipeline: pipeline.to_string(),
            settings: settings.clone(),
            destination: Destination::new(&settings.shared.name, &settings.shared.destination)?,
            backoff: settings.shared.destination.backoff,
        })
    }

    /// The destination (limits, concurrency) for status and metrics.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The idempotency key of a request covering `entries`.
    fn key(&self, entries: &[Entry<'_>]) -> String {
        let mut changes: Vec<&Change> = entries
            .iter()
            .flat_map(|(op, _)| op.changes.iter().copied())
            .collect();
        changes.sort_by_key(|c| c.mark());
        key(&self.pipeline, &self.settings.shared.name, &changes)
    }

    /// Sends one request until accepted (`Ok`) or refused (`Err` with the response).
    async fn send(
        &self,
        prepared: &Prepared,
        key: &str,
        keep: usize,
    ) -> Result<std::result::Result<Response, Response>> {
        let delivery = self
            .destination
            .deliver_keeping(|client| build(client, &self.settings, prepared, key), keep)
            .await?;
        match delivery {
            Delivery::Delivered { response, .. } => Ok(Ok(response)),
            Delivery::Rejected { response, .. } => Ok(Err(response)),
            Delivery::GaveUp { attempts, .. } => Err(Error::GaveUp {
                sink: self.settings.shared.name.clone(),
                attempts,
            }),
        }
    }

    /// One item alone.
    async fn one(&self, entry: Entry<'_>) -> Result<Outcome> {
        let Some(prepared) = single(entry.1, self.settings.batch.as_ref()) else {
            return Ok(Outcome::Refused {
                status: 0,
                excerpt: "no url to send this change to: add url to the sink's upsert".into(),
            });
        };
        let key = self.key(&[entry]);
        Ok(match self.send(&prepared, &key, 0).await? {
            Ok(_) => Outcome::Done,
            Err(r) => refusal(entry.1, r.status, r.excerpt),
        })
    }

    /// A chunk of items in one batch request; refused whole, it is split into items sent
    /// alone (in the batch format, so a rows-only endpoint still gets rows).
    async fn chunk(&self, entries: &[Entry<'_>], format: BatchFormat) -> Result<Vec<Outcome>> {
        let Some(batch) = self.settings.batch.as_ref() else {
            return Err(Error::Invalid {
                problems: vec!["batch request without a batch endpoint".into()],
            });
        };
        let mut out: Vec<Option<Outcome>> = vec![None; entries.len()];
        let mut todo: Vec<Vec<usize>> = vec![(0..entries.len()).collect()];
        let mut attempt = 0;
        while let Some(part) = todo.pop() {
            let sub: Vec<Entry<'_>> = part.iter().map(|&i| entries[i]).collect();
            let items: Vec<&Item> = sub.iter().map(|e| e.1).collect();
            let prepared = match format {
                BatchFormat::Requests => requests(batch, &items),
                BatchFormat::Rows => rows(batch, &items),
            };
            let key = self.key(&sub);
            let keep = if format == BatchFormat::Requests {
                KEEP_BODY
            } else {
                0
            };
            match self.send(&prepared, &key, keep).await? {
                Err(r) if part.len() == 1 => {
                    out[part[0]] = Some(refusal(entries[part[0]].1, r.status, r.excerpt))
                }
                Err(r) => {
                    tracing::warn!(sink = %self.settings.shared.name, status = r.status, items = part.len(), "batch request refused, sending its items one by one");
                    todo.extend(part.iter().map(|&i| vec![i]));
                }
                Ok(_) if format == BatchFormat::Rows => {
                    for i in part {
                        out[i] = Some(Outcome::Done);
                    }
                }
                Ok(r) => {
                    let statuses = item_statuses(&r.body, part.len()).ok_or_else(|| Error::Corrupt {
                        path: batch.url.path().to_string(),
                        reason: format!("the batch endpoint of sink {} answered {} without a \"responses\" list of {} items: check batch.url and batch.format", self.settings.shared.name, r.status, part.len()),
                    })?;
                    let mut again = Vec::new();
                    for (i, (status, text)) in part.into_iter().zip(statuses) {
                        match classify_status(status) {
                            Verdict::Delivered => out[i] = Some(Outcome::Done),
                            Verdict::Retry { .. } => again.push(i),
                            Verdict::Rejected => out[i] = Some(refusal(entries[i].1, status, text)),
                        }
                    }
                    if !again.is_empty() {
                        let wait = self.backoff.delay(attempt, &mut rand::thread_rng());
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                        todo.push(again);
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Done))
            .collect())
    }
}

/// A refusal, unless it is a delete of an object already gone.
fn refusal(item: &Item, status: u16, excerpt: String) -> Outcome {
    if item.delete && matches!(status, 404 | 410) {
        Outcome::Done
    } else {
        Outcome::Refused { status, excerpt }
    }
}

/// The per-item statuses and body excerpts of a `{"responses": [...]}` batch answer.
fn item_statuses(body: &[u8], n: usize) -> Option<Vec<(u16, String)>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = v.get("responses")?.as_array()?;
    if list.len() != n {
        return None;
    }
    list.iter()
        .map(|r| {
            let status = u16::try_from(r.get("status")?.as_u64()?).ok()?;
            let text = r.get("body").map(|b| b.to_string()).unwrap_or_default();
            Some((status, excerpt(text.as_bytes())))
        })
        .collect()
}

fn parked(c: &Change, status: u16, response: &str) -> ParkedChange {
    ParkedChange {
        table: c.table.to_string(),
        key: c.key_text().to_string(),
        lsn: c.lsn,
        seq: c.seq,
        op: c.op.to_string(),
        status,
        response: response.to_string(),
    }
}

impl HubSink for RestSink {
    /// Folds the batch per key and sends every object's request at once (in batch requests
    /// where configured); refused objects are parked with every change folded into them.
    async fn deliver(&self, batch: Arc<Batch>) -> Result<Ack> {
        let folded = fold(&batch.changes)?;
        let mut out: Vec<ParkedChange> = folded
            .truncates
            .iter()
            .map(|c| parked(c, 0, "a truncate cannot be sent to an object API: empty the destination by hand if it should follow"))
            .collect();
        let mut ops = Vec::new();
        let mut items = Vec::new();
        for op in &folded.ops {
            match render(&self.settings, op) {
                Ok(item) => {
                    ops.push(op);
                    items.push(item);
                }
                Err(reason) => out.extend(op.changes.iter().map(|c| parked(c, 0, &reason))),
            }
        }
        let entries: Vec<Entry<'_>> = ops.iter().copied().zip(items.iter()).collect();
        let (chunked, alone): (Vec<Entry<'_>>, Vec<Entry<'_>>) = match &self.settings.batch {
            None => (Vec::new(), entries),
            Some(b) if b.format == BatchFormat::Requests => (entries, Vec::new()),
            Some(_) => entries.into_iter().partition(|(_, item)| item.upsert),
        };
        let format = self
            .settings
            .batch
            .as_ref()
            .map(|b| (b.format, b.max_items));
        let chunks: Vec<&[Entry<'_>]> = match format {
            Some((_, max)) => chunked.chunks(max).collect(),
            None => Vec::new(),
        };
        let (chunk_results, alone_results) = futures::future::join(
            futures::future::try_join_all(
                chunks
                    .iter()
                    .map(|c| self.chunk(c, format.map_or(BatchFormat::Rows, |f| f.0))),
            ),
            futures::future::try_join_all(alone.iter().map(|e| self.one(*e))),
        )
        .await;
        let results = chunks
            .iter()
            .flat_map(|c| c.iter())
            .zip(chunk_results?.into_iter().flatten())
            .chain(alone.iter().zip(alone_results?));
        for ((op, _), outcome) in results {
            if let Outcome::Refused { status, excerpt } = outcome {
                tracing::warn!(sink = %self.settings.shared.name, status, changes = op.changes.len(), "rest destination refused a change");
                out.extend(op.changes.iter().map(|c| parked(c, status, &excerpt)));
            }
        }
        Ok(if out.is_empty() {
            Ack::Delivered
        } else {
            out.sort_by_key(|p| (p.lsn, p.seq));
            Ack::Parked(out)
        })
    }
}
