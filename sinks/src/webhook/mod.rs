//! The webhook sink: POSTs batches of change events as JSON to one URL, signed with Standard
//! Webhooks headers, with a deterministic `Idempotency-Key` / `webhook-id` per batch, under
//! the destination's rate windows and adaptive concurrency (see [`crate::http`]).
//!
//! A batch the endpoint refuses (a non-retryable 4xx) is retried one change per request, so
//! only the refused changes are parked (dead-letter table) and the rest are delivered. Later
//! changes of a parked key are delivered as usual: the endpoint sees the key's newer state,
//! and the refused change stays in the dead-letter table for an operator to inspect.

pub mod config;
mod encoder;
mod request_builder;
mod sink;

pub use config::{WebhookConfig, WebhookSettings};
pub use encoder::{encode, encode_batch, key, Encoded};
pub use request_builder::build_request;
pub use sink::WebhookSink;
