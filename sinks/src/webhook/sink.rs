//! The webhook sink's delivery of one batch ([`HubSink`] for [`WebhookSink`]).

use std::sync::Arc;

use crate::http::{Delivery, Destination, Response, SigningKey};
use crate::hub::{Ack, Batch, Change, HubSink, ParkedChange};
use crate::{Error, Result};

use super::config::WebhookSettings;
use super::encoder::encode;
use super::request_builder::build_request;

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

    /// Sends `changes` in one request until accepted (`None`) or refused (the response).
    async fn send(&self, changes: &[Change]) -> Result<Option<Response>> {
        let encoded = encode(&self.pipeline, &self.name, changes);
        let delivery = self
            .destination
            .deliver(|client| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                build_request(client, &self.url, &encoded, self.signing.as_ref(), now)
            })
            .await?;
        match delivery {
            Delivery::Delivered { .. } => Ok(None),
            Delivery::Rejected { response, .. } => {
                tracing::warn!(sink = %self.name, status = response.status, changes = changes.len(), "webhook refused a request");
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
        key: serde_json::Value::Object(c.key.clone()).to_string(),
        lsn: c.lsn,
        seq: c.seq,
        op: c.op.clone(),
        status: r.status,
        response: r.excerpt.clone(),
    }
}

impl HubSink for WebhookSink {
    /// The whole batch in one request; if refused, one request per change (in order), so
    /// only the refused changes are parked.
    async fn deliver(&self, batch: Arc<Batch>) -> Result<Ack> {
        let Some(refusal) = self.send(&batch.changes).await? else {
            return Ok(Ack::Delivered);
        };
        if batch.changes.len() == 1 {
            return Ok(Ack::Parked(vec![parked(&batch.changes[0], &refusal)]));
        }
        let mut out = Vec::new();
        for c in &batch.changes {
            if let Some(r) = self.send(std::slice::from_ref(c)).await? {
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
