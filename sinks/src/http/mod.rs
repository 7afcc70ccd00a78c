//! Generic HTTP delivery for the HTTP sinks (webhooks, REST/SaaS APIs): rate windows, adaptive
//! concurrency, the retry policy, Standard Webhooks signing, secrets and idempotency keys.
//! The sinks (`webhook/`, `rest/`) build requests; [`Destination::deliver`] gets them
//! accepted or rejected.

mod client;
mod concurrency;
mod destination;
mod idempotency;
mod limit;
mod retry;
mod secret;
mod sign;
mod sink_config;

pub use client::{
    build_client, excerpt, send, Attempt, ClientConfig, Response, TransportError, EXCERPT_BYTES,
    USER_AGENT,
};
pub use concurrency::{Concurrency, ConcurrencyConfig, Controller, Outcome, Permit, Ticket};
pub use destination::{Delivery, Destination, DestinationConfig, DestinationStats};
pub use idempotency::{idempotency_key, ChangePosition, IDEMPOTENCY_KEY_HEADER};
pub use limit::{Limiter, RateLimit, Windows};
pub use retry::{
    classify, classify_status, concurrency_outcome, parse_retry_after, Backoff, Verdict,
    MAX_RETRY_AFTER,
};
pub use secret::{Secret, SecretSource};
pub use sign::{
    SigningKey, VerifyError, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, TIMESTAMP_TOLERANCE,
};
pub use sink_config::{check_url, ByteSize, SharedFields, SharedSettings};
