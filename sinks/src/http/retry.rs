//! The retry policy of HTTP deliveries: which outcome is delivered, retried or rejected (one
//! `match`, [`classify`]), how long to back off (exponential, full jitter), and what a
//! `Retry-After` header means (RFC 9110 §10.2.3: delta-seconds or an HTTP-date).
//!
//! Invariants:
//! - A change is never silently dropped: [`Verdict::Rejected`] means the sink parks the
//!   change (dead letter, with the status and a response excerpt), never skips it.
//! - A `Retry-After` pauses the whole destination (via [`super::Limiter::pause_until`]), not
//!   only the request that got it: every request would meet the same overload.
//! - A connection that broke after the request was sent may have been applied: retrying it
//!   is safe only because every request carries its deterministic idempotency key
//!   ([`super::idempotency_key`]), so the receiver applies it once.
//! - The backoff wait is uniform in `[0, min(max, first · 2^n)]` (AWS's "full jitter"): the
//!   retries of many requests that failed together spread out instead of arriving together.

use std::time::{Duration, SystemTime};

use rand::Rng;

use super::client::{Attempt, TransportError};
use super::concurrency::Outcome;

/// The longest pause a `Retry-After` may impose; a longer (or garbled far-future) value is
/// clamped so that one bad header cannot stall a destination for days. Servers asking for
/// more get asked again after an hour, and will answer with a new `Retry-After`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the destination accepted the request.
    Delivered,
    /// Try again later; `backpressure` when the destination said it is overloaded (408, 429,
    /// 503, a timeout): the concurrency halves.
    Retry { backpressure: bool },
    /// Other 4xx, 501, 1xx/3xx that reqwest did not resolve: retrying will not help; the
    /// sink parks the change.
    Rejected,
}

/// The one retry decision for HTTP attempts.
pub fn classify(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Response(r) => classify_status(r.status),
        Attempt::Failed { error, .. } => match error {
            TransportError::Timeout => Verdict::Retry { backpressure: true },
            TransportError::Connect | TransportError::Closed => Verdict::Retry {
                backpressure: false,
            },
        },
    }
}

/// What the adaptive concurrency learns from an attempt.
pub fn concurrency_outcome(attempt: &Attempt) -> Outcome {
    match (classify(attempt), attempt) {
        (Verdict::Delivered, Attempt::Response(r)) => Outcome::Success { rtt: r.latency },
        (Verdict::Retry { backpressure: true }, _) => Outcome::Backpressure,
        _ => Outcome::Other,
    }
}

/// The decision on a status: a whole response's, or one item's of a batch response.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 503 => Verdict::Retry { backpressure: true },
        501 => Verdict::Rejected,
        500..=599 => Verdict::Retry {
            backpressure: false,
        },
        _ => Verdict::Rejected,
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first wait.
    pub first: Duration,
    /// Upper bound of every wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 30 s.
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the wait before retry number `retry` (0 = the first retry):
    /// `min(max, first · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// A wait drawn uniformly from `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }
}

/// Parses a `Retry-After` value into the wait from `now`: delta-seconds (`"120"`) or an
/// HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, also the obsolete RFC 850 and asctime forms).
/// A date in the past is a zero wait; garbage is `None` (the caller falls back to backoff).
/// Clamped to [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is "very long": clamp rather than ignore.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::Response;
    use rand::SeedableRng;

    fn status(status: u16) -> Attempt {
        Attempt::Response(Response {
            status,
            retry_after: None,
            latency: Duration::from_millis(5),
            excerpt: String::new(),
            body: bytes::Bytes::new(),
        })
    }

    #[test]
    fn classification_of_every_status_class() {
        use Verdict::*;
        let bp = Retry { backpressure: true };
        let retry = Retry {
            backpressure: false,
        };
        let cases = [
            (200, Delivered),
            (201, Delivered),
            (204, Delivered),
            (299, Delivered),
            (100, Rejected),
            (301, Rejected),
            (304, Rejected),
            (400, Rejected),
            (401, Rejected),
            (403, Rejected),
            (404, Rejected),
            (408, bp),
            (409, Rejected),
            (413, Rejected),
            (422, Rejected),
            (429, bp),
            (500, retry),
            (501, Rejected),
            (502, retry),
            (503, bp),
            (504, retry),
            (599, retry),
        ];
        for (code, verdict) in cases {
            assert_eq!(classify(&status(code)), verdict, "{code}");
        }
        for (error, verdict) in [
            (TransportError::Timeout, bp),
            (TransportError::Connect, retry),
            (TransportError::Closed, retry),
        ] {
            let a = Attempt::Failed {
                error,
                latency: Duration::ZERO,
            };
            assert_eq!(classify(&a), verdict, "{error:?}");
        }
    }

    #[test]
    fn concurrency_learns_success_rtt_and_backpressure() {
        assert_eq!(
            concurrency_outcome(&status(200)),
            Outcome::Success {
                rtt: Duration::from_millis(5)
            }
        );
        assert_eq!(concurrency_outcome(&status(429)), Outcome::Backpressure);
        assert_eq!(concurrency_outcome(&status(500)), Outcome::Other);
        assert_eq!(concurrency_outcome(&status(400)), Outcome::Other);
    }

    #[test]
    fn backoff_ceilings_double_to_the_max_and_jitter_stays_below() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (0..12).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sum = Duration::ZERO;
        for _ in 0..1000 {
            let d = b.delay(3, &mut rng);
            assert!(d <= Duration::from_millis(800));
            sum += d;
        }
        // Full jitter: the mean is half the ceiling (400 ms), not the ceiling.
        let mean = sum / 1000;
        assert!(
            mean > Duration::from_millis(340) && mean < Duration::from_millis(460),
            "{mean:?}"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let secs = Duration::from_secs;
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(secs(0)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(secs(30))
        );
        // RFC 850 and asctime forms, which RFC 9110 requires recipients to accept.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(secs(5))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(secs(0))
        );
        // Clamped.
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", "soon", "-5", "1.5", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
