//! One HTTP destination: the client, its rate windows, its adaptive concurrency and the retry
//! loop that delivers one request until it is accepted or rejected.
//!
//! ```text
//!   deliver(build) ─▶ concurrency.acquire() ─▶ limiter.ready() ─▶ send ─▶ classify
//!        ▲                                                                   │
//!        │   Retry + Retry-After: limiter.pause_until(now + wait)  ◀─────────┤
//!        └── Retry without it:    sleep(full-jitter backoff)       ◀─────────┤
//!            Delivered / Rejected: returned to the sink            ◀─────────┘
//! ```
//!
//! Invariants:
//! - The concurrency permit is taken before the rate slot, and the request is sent right
//!   after the rate slot: a request never holds a rate slot while waiting for concurrency,
//!   so the instants the limiter admits are the instants requests leave, and every window
//!   holds at the server too.
//! - A `Retry-After` pauses every request of the destination, not just this one.
//! - A request waiting for its rate slot holds a concurrency permit, so while the rate is
//!   the binding limit the concurrency reads as saturated and may grow towards the cap; that
//!   is harmless (the windows still space the starts) and keeps permits ready for when the
//!   destination, not the rate, becomes the bottleneck.
//! - Transient failures are retried until delivered (or `max_attempts`, if set); a
//!   rejection is returned, never swallowed: the sink parks the change.
//! - `build` is called once per attempt, so per-attempt headers (`webhook-timestamp` and
//!   its signature) are fresh; the idempotency key it sets must be the same every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;

use super::client::{build_client, send, Attempt, ClientConfig, Response};
use super::concurrency::{Concurrency, ConcurrencyConfig};
use super::limit::{Limiter, RateLimit};
use super::retry::{classify, concurrency_outcome, Backoff, Verdict};
use crate::{Error, Result};

/// Everything that shapes the traffic to one destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Every window is respected at all times.
    pub rate_limits: Vec<RateLimit>,
    /// Adaptive concurrency below the cap.
    pub concurrency: ConcurrencyConfig,
    /// Waits between retries without `Retry-After`.
    pub backoff: Backoff,
    /// Give up after this many attempts (`None`: retry transient failures forever, the
    /// sink's cursor waits; the right default for exactly-once delivery).
    pub max_attempts: Option<u32>,
    /// Timeouts and pool.
    pub client: ClientConfig,
}

impl DestinationConfig {
    /// No rate limit, concurrency up to `max_concurrency`, default backoff and client.
    pub fn with_max_concurrency(max_concurrency: usize) -> Self {
        DestinationConfig {
            rate_limits: Vec::new(),
            concurrency: ConcurrencyConfig::with_max(max_concurrency),
            backoff: Backoff::default(),
            max_attempts: None,
            client: ClientConfig::default(),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx after `attempts` attempts.
    Delivered { attempts: u32, response: Response },
    /// The destination refused the request (4xx other than 408/429, 501): park the change
    /// with `response.status` and `response.excerpt`.
    Rejected { attempts: u32, response: Response },
    /// `max_attempts` transient failures in a row; `last` is the final one.
    GaveUp { attempts: u32, last: Attempt },
}

/// Counters of one destination since its start, for `sluice status` and metrics.
#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    rejected: AtomicU64,
}

/// A destination's traffic as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DestinationStats {
    /// Requests in flight.
    pub in_flight: usize,
    /// The adaptive concurrency limit.
    pub limit: usize,
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts that will be retried (429, 5xx, timeouts, connection errors).
    pub retries: u64,
    /// Of those, 429 answers.
    pub throttled: u64,
    /// Requests refused for good.
    pub rejected: u64,
}

/// One destination, shared by all delivery tasks of a sink (cheap to clone).
#[derive(Debug, Clone)]
pub struct Destination {
    counters: Arc<Counters>,
    name: Arc<str>,
    client: reqwest::Client,
    limiter: Arc<Limiter>,
    concurrency: Concurrency,
    backoff: Backoff,
    max_attempts: Option<u32>,
}

impl Destination {
    /// A destination named `name` (the sink's name, for logs).
    pub fn new(name: &str, config: &DestinationConfig) -> Result<Self> {
        Ok(Destination {
            counters: Arc::default(),
            name: name.into(),
            client: build_client(&config.client)?,
            limiter: Arc::new(Limiter::new(config.rate_limits.clone())),
            concurrency: Concurrency::new(config.concurrency),
            backoff: config.backoff,
            max_attempts: config.max_attempts,
        })
    }

    /// Delivers one request: `build` makes each attempt's request on the destination's
    /// client. Fails only if the request cannot be built (an invalid URL or header).
    pub async fn deliver<F>(&self, build: F) -> Result<Delivery>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.deliver_keeping(build, 0).await
    }

    /// [`Destination::deliver`], keeping at most `keep` bytes of the accepted or refused
    /// response's body (a longer body is not kept: [`Response::body`] is then empty).
    pub async fn deliver_keeping<F>(&self, build: F, keep: usize) -> Result<Delivery>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut attempts = 0u32;
        loop {
            let permit = self.concurrency.acquire().await;
            self.limiter.ready().await;
            let request = build(&self.client)
                .build()
                .map_err(|e| Error::InvalidRequest {
                    source: e.without_url(),
                })?;
            let attempt = send(&self.client, request, keep).await;
            permit.finish(concurrency_outcome(&attempt));
            attempts += 1;
            let verdict = classify(&attempt);
            self.count(&attempt, verdict);
            debug!(
                destination = %self.name,
                status = attempt.status(),
                attempts,
                ?verdict,
                "http attempt"
            );
            match (verdict, attempt) {
                (Verdict::Delivered, Attempt::Response(response)) => {
                    return Ok(Delivery::Delivered { attempts, response })
                }
                (Verdict::Rejected, Attempt::Response(response)) => {
                    return Ok(Delivery::Rejected { attempts, response })
                }
                (_, last) => {
                    if self.max_attempts.is_some_and(|max| attempts >= max) {
                        return Ok(Delivery::GaveUp { attempts, last });
                    }
                    match last.retry_after() {
                        Some(wait) => self.limiter.pause_until(Instant::now() + wait),
                        None => {
                            let delay = self.backoff.delay(attempts - 1, &mut rand::thread_rng());
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
        }
    }

    fn count(&self, attempt: &super::Attempt, verdict: Verdict) {
        let c = &self.counters;
        c.attempts.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Verdict::Retry { .. } => {
                c.retries.fetch_add(1, Ordering::Relaxed);
                if attempt.status() == Some(429) {
                    c.throttled.fetch_add(1, Ordering::Relaxed);
                }
            }
            Verdict::Rejected => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Delivered => {}
        }
    }

    /// Its traffic so far and its concurrency now.
    pub fn stats(&self) -> DestinationStats {
        let c = &self.counters;
        DestinationStats {
            in_flight: self.concurrency.in_flight(),
            limit: self.concurrency.limit(),
            attempts: c.attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// The destination's rate windows and pause.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The destination's adaptive concurrency (limit and in-flight count for metrics).
    pub fn concurrency(&self) -> &Concurrency {
        &self.concurrency
    }

    /// The client, for requests outside [`Destination::deliver`] (health checks).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}
