//! The webhook sink's delivery of one batch ([`HubSink`] for [`WebhookSink`]).
//!
//! A large batch is encoded on a blocking thread (`spawn_blocking`), not on the async
//! workers that drive the other requests in flight.

use std::sync::Arc;

use crate::http::{Delivery, Destination, Response, SigningKey};
use crate::hub::{Ack, Batch, Change, HubSink, ParkedChange};
use crate::{Error, Result};

use super::config::WebhookSettings;
use super::encoder::{encode, encode_batch, Encoded};
use super::request_builder::build_request;

/// Bytes of rows from which a batch is encoded off the async workers. Encoding copies the
/// rows and formats a few small fields per event; 256 KiB of rows (about 3,000 events of
/// the bench's 85-byte rows) is an estimate of where it nears the style's 1 ms, not a
/// measured point. Smaller batches (the default 500 rows) are encoded in place: a
/// `spawn_blocking` hand-off would cost more than it saves.
const ENCODE_BLOCKING_BYTES: usize = 256 << 10;

/// A webhook destination of one pipeline.
pub struct WebhookSink {
    pipeline: String,
    name: String,
    url: reqwest::Url,
    signing: Option<SigningKey>,
    destination: Destination,
}

impl WebhookSink {
    /// The sink of `settings` for `pipeline`.
    pub fn new(pipeline: &str, settings: &WebhookSettings) -> Result<Self> {
        Ok(WebhookSink {
            pipeline: pipeline.to_string(),
            name: settings.shared.name.clone(),
            url: settings.url.clone(),
            signing: settings.signing.clone(),
            destination: Destination::new(&settings.shared.name, &settings.shared.destination)?,
        })
    }

    /// The destination (limits, concurrency) for status and metrics.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// `batch` encoded, off the async workers if it is large.
    async fn encode_batch(&self, batch: &Arc<Batch>) -> Result<Encoded> {
        let bytes: usize = batch.changes.iter().map(Change::size).sum();
        if bytes < ENCODE_BLOCKING_BYTES {
            return Ok(encode_batch(&self.pipeline, &self.name, batch));
        }
        let (pipeline, name, batch) = (self.pipeline.clone(), self.name.clone(), batch.clone());
        tokio::task::spawn_blocking(move || encode_batch(&pipeline, &name, &batch))
            .await
            .map_err(|e| Error::Corrupt {
                path: format!("webhook sink {}", self.name),
                reason: format!("encoding a batch failed: {e}"),
            })
    }

    /// Sends `encoded` (of `changes` changes) in one request until accepted (`None`) or
    /// refused (the response).
    async fn send(&self, encoded: &Encoded, changes: usize) -> Result<Option<Response>> {
        let delivery = self
            .destination
            .deliver(|client| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                build_request(client, &self.url, encoded, self.signing.as_ref(), now)
            })
            .await?;
        match delivery {
            Delivery::Delivered { .. } => Ok(None),
            Delivery::Rejected { response, .. } => {
                tracing::warn!(sink = %self.name, status = response.status, changes, "webhook refused a request");
                Ok(Some(response))
            }
            Delivery::GaveUp { attempts, .. } => Err(Error::GaveUp {
                sink: self.name.clone(),
                attempts,
            }),
        }
    }
}

fn parked(c: &Change, r: &Response) -> ParkedChange {
    ParkedChange {
        table: c.table.to_string(),
        key: c.key_text().to_string(),
        lsn: c.lsn,
        seq: c.seq,
        op: c.op.to_string(),
        status: r.status,
        response: r.excerpt.clone(),
    }
}

impl HubSink for WebhookSink {
    /// The whole batch in one request; if refused, one request per change (in order), so
    /// only the refused changes are parked.
    async fn deliver(&self, batch: Arc<Batch>) -> Result<Ack> {
        let encoded = self.encode_batch(&batch).await?;
        let Some(refusal) = self.send(&encoded, batch.changes.len()).await? else {
            return Ok(Ack::Delivered);
        };
        if batch.changes.len() == 1 {
            return Ok(Ack::Parked(vec![parked(&batch.changes[0], &refusal)]));
        }
        let mut out = Vec::new();
        for c in &batch.changes {
            let encoded = encode(&self.pipeline, &self.name, std::slice::from_ref(c));
            if let Some(r) = self.send(&encoded, 1).await? {
                out.push(parked(c, &r));
            }
        }
        Ok(if out.is_empty() {
            Ack::Delivered
        } else {
            Ack::Parked(out)
        })
    }
}
