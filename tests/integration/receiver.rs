//! A test-owned webhook receiver: a real HTTP/1.1 server on 127.0.0.1 (an ephemeral port)
//! whose misbehaviour each test chooses, and which records every request it sees.
//!
//! ```text
//!   request ─▶ record arrival ─▶ stalled? wait for release ─▶ delay ─▶ over the rate or
//!   inside an announced Retry-After? 429 ─▶ reset fraction? close the socket ─▶ 5xx storm?
//!   ─▶ bad signature? 401 ─▶ rejected key? 400 + body ─▶ 200
//! ```
//!
//! Every request is recorded with its `Idempotency-Key`, `webhook-id`, JSON body, arrival
//! time and what the receiver answered. A request that arrives while a `Retry-After` the
//! receiver announced is still running (after a short grace for requests already on the wire
//! when the 429 left) is a protocol violation; tests assert there are none.
//!
//! A "reset" closes the connection without a response (hyper drops a connection whose
//! service fails); the client sees the connection closed before a response.
//!
//! The self-tests at the end run it against `sinks::http` (client, retry, limiter, signing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sinks::http::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A burst of server errors during a time window after the receiver started.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// The status answered (500, 502, 503, ...).
    pub status: u16,
    /// Start of the storm, from the receiver's start.
    pub from: Duration,
    /// End of the storm (exclusive).
    pub until: Duration,
}

/// What the receiver does; the default accepts everything at once.
#[derive(Debug, Clone, Default)]
pub struct ReceiverConfig {
    /// Verify Standard Webhooks signatures with this key (bad or missing: 401).
    pub secret: Option<SigningKey>,
    /// Accept at most this many requests in any 1 s sliding window; more get 429.
    pub rate_per_sec: Option<u32>,
    /// The `Retry-After` seconds announced with each 429 (default 1).
    pub retry_after_secs: Option<u64>,
    /// Requests arriving this long after a 429 was sent are not violations yet: they were
    /// already on the wire (default 50 ms).
    pub retry_after_grace: Option<Duration>,
    /// 5xx storms in time windows.
    pub storms: Vec<Storm>,
    /// Answer this fraction of requests with 500 (seeded, reproducible).
    pub error_fraction: f64,
    /// Close the connection without a response for this fraction of requests.
    pub reset_fraction: f64,
    /// Wait this long before answering each request.
    pub delay: Duration,
    /// Idempotency keys answered with 400 and the given body.
    pub reject_keys: HashMap<String, String>,
    /// Seed of the fractions' random choices.
    pub seed: u64,
}

/// What the receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200.
    Accepted,
    /// 429 with Retry-After.
    TooMany,
    /// A 5xx from a storm or the error fraction.
    ServerError(u16),
    /// Closed without a response.
    Reset,
    /// 401: the signature did not verify.
    BadSignature,
    /// 400 for a rejected key.
    Rejected,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival, from the receiver's start.
    pub at: Duration,
    pub idempotency_key: Option<String>,
    pub webhook_id: Option<String>,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: Value,
    pub answer: Answer,
    /// It arrived while an announced Retry-After was still running.
    pub violation: bool,
}

/// Counts for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: usize,
    pub accepted: usize,
    pub too_many: usize,
    pub server_errors: usize,
    pub resets: usize,
    pub bad_signatures: usize,
    pub rejected: usize,
    pub retry_after_violations: usize,
}

struct State {
    recorded: Vec<Recorded>,
    /// Arrivals accepted within the last second (for the rate).
    window: VecDeque<Instant>,
    /// The latest Retry-After announced: (sent at, runs until).
    announced: Option<(Instant, Instant)>,
    rng: StdRng,
}

struct Shared {
    config: ReceiverConfig,
    started: Instant,
    state: Mutex<State>,
    stalled: watch::Sender<bool>,
}

/// A running receiver; stops accepting connections when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Receiver {
    /// Binds 127.0.0.1 on an ephemeral port and serves until dropped.
    pub async fn start(config: ReceiverConfig) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver on 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let (stalled, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                recorded: Vec::new(),
                window: VecDeque::new(),
                announced: None,
                rng: StdRng::seed_from_u64(config.seed),
            }),
            config,
            started: Instant::now(),
            stalled,
        });
        let for_loop = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = for_loop.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    // An Err from the service (a reset) ends the connection without a response.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// From now on, requests are read but not answered until [`Receiver::release`].
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Answers the stalled requests and every later one.
    pub fn release(&self) {
        self.shared.stalled.send_replace(false);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().recorded.clone()
    }

    /// The accepted requests, one per idempotency key (the first acceptance), by key.
    pub fn deliveries(&self) -> BTreeMap<String, Recorded> {
        let mut out = BTreeMap::new();
        for r in self.shared.lock().recorded.iter() {
            if let (Answer::Accepted, Some(key)) = (r.answer, &r.idempotency_key) {
                out.entry(key.clone()).or_insert_with(|| r.clone());
            }
        }
        out
    }

    /// Accepted deliveries per idempotency key (more than 1: the key was delivered again,
    /// which an idempotent receiver absorbs but which the tests may want to bound).
    pub fn acceptances_per_key(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.shared.lock().recorded.iter() {
            if let (Answer::Accepted, Some(key)) = (r.answer, &r.idempotency_key) {
                *out.entry(key.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Checks that, for every group `order_of` finds in the accepted bodies, the first
    /// acceptances arrived in increasing ordinal order (e.g. group = row key, ordinal = lsn).
    pub fn check_order_per_key(
        &self,
        order_of: impl Fn(&Value) -> Option<(String, i64)>,
    ) -> Result<(), String> {
        let mut firsts: Vec<&Recorded> = Vec::new();
        let recorded = self.requests();
        let mut seen = std::collections::HashSet::new();
        for r in &recorded {
            if r.answer == Answer::Accepted {
                let key = r.idempotency_key.clone().unwrap_or_default();
                if seen.insert(key) {
                    firsts.push(r);
                }
            }
        }
        let mut last: HashMap<String, i64> = HashMap::new();
        for r in firsts {
            if let Some((group, ordinal)) = order_of(&r.body) {
                if let Some(prev) = last.get(&group) {
                    if *prev >= ordinal {
                        return Err(format!(
                            "group {group}: ordinal {ordinal} accepted after {prev} (at {:?})",
                            r.at
                        ));
                    }
                }
                last.insert(group, ordinal);
            }
        }
        Ok(())
    }

    /// Counts by answer, and the Retry-After violations.
    pub fn counts(&self) -> Counts {
        let state = self.shared.lock();
        let mut c = Counts {
            requests: state.recorded.len(),
            ..Counts::default()
        };
        for r in &state.recorded {
            match r.answer {
                Answer::Accepted => c.accepted += 1,
                Answer::TooMany => c.too_many += 1,
                Answer::ServerError(_) => c.server_errors += 1,
                Answer::Reset => c.resets += 1,
                Answer::BadSignature => c.bad_signatures += 1,
                Answer::Rejected => c.rejected += 1,
            }
            c.retry_after_violations += usize::from(r.violation);
        }
        c
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
        self.release();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn respond(status: u16, headers: &[(&str, String)], body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        r.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let key = header(&req, "idempotency-key");
    let webhook_id = header(&req, "webhook-id");
    let timestamp = header(&req, "webhook-timestamp");
    let signature = header(&req, "webhook-signature");
    let arrived = Instant::now();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let mut stalled = shared.stalled.subscribe();
    let _ = stalled.wait_for(|s| !*s).await;
    if !shared.config.delay.is_zero() {
        tokio::time::sleep(shared.config.delay).await;
    }
    let config = &shared.config;
    let now = Instant::now();
    let retry_after = config.retry_after_secs.unwrap_or(1);
    let grace = config
        .retry_after_grace
        .unwrap_or(Duration::from_millis(50));
    let answer = {
        let mut state = shared.lock();
        let violation = state
            .announced
            .is_some_and(|(sent, until)| arrived > sent + grace && arrived < until);
        let since_start = now - shared.started;
        while state
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            state.window.pop_front();
        }
        let paused = state.announced.is_some_and(|(_, until)| now < until);
        let over = config
            .rate_per_sec
            .is_some_and(|r| paused || state.window.len() >= r as usize);
        let answer = if over {
            state.announced = Some((now, now + Duration::from_secs(retry_after)));
            Answer::TooMany
        } else if state.rng.gen_bool(config.reset_fraction.clamp(0.0, 1.0)) {
            Answer::Reset
        } else if let Some(storm) = config
            .storms
            .iter()
            .find(|s| since_start >= s.from && since_start < s.until)
        {
            Answer::ServerError(storm.status)
        } else if state.rng.gen_bool(config.error_fraction.clamp(0.0, 1.0)) {
            Answer::ServerError(500)
        } else if config.secret.as_ref().is_some_and(|k| {
            let now_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            k.verify(
                webhook_id.as_deref().unwrap_or(""),
                timestamp.as_deref().unwrap_or(""),
                signature.as_deref().unwrap_or(""),
                &body,
                now_unix,
            )
            .is_err()
        }) {
            Answer::BadSignature
        } else if key
            .as_ref()
            .is_some_and(|k| config.reject_keys.contains_key(k))
        {
            Answer::Rejected
        } else {
            if config.rate_per_sec.is_some() {
                state.window.push_back(now);
            }
            Answer::Accepted
        };
        state.recorded.push(Recorded {
            at: arrived - shared.started,
            idempotency_key: key.clone(),
            webhook_id,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            answer,
            violation,
        });
        answer
    };
    Ok(match answer {
        Answer::Accepted => respond(200, &[], r#"{"ok":true}"#.into()),
        Answer::TooMany => respond(
            429,
            &[("retry-after", retry_after.to_string())],
            r#"{"error":"rate limited"}"#.into(),
        ),
        Answer::ServerError(status) => respond(status, &[], r#"{"error":"storm"}"#.into()),
        Answer::Reset => return Err(std::io::Error::other("reset by the test receiver")),
        Answer::BadSignature => respond(401, &[], r#"{"error":"bad signature"}"#.into()),
        Answer::Rejected => {
            let body = key
                .and_then(|k| config.reject_keys.get(&k).cloned())
                .unwrap_or_default();
            respond(400, &[], body)
        }
    })
}

// Self-tests: the receiver against sinks::http.

#[cfg(test)]
mod tests {
    use super::*;
    use sinks::http::{
        idempotency_key, Backoff, ClientConfig, Delivery, Destination, DestinationConfig,
        RateLimit, IDEMPOTENCY_KEY_HEADER,
    };

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn key(n: i64) -> String {
        idempotency_key(
            "receiver_test",
            "hook",
            "public.orders",
            (n as u64, 0),
            (n as u64, 0),
        )
    }

    fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn fast_config(max_concurrency: usize) -> DestinationConfig {
        DestinationConfig {
            backoff: Backoff {
                first: Duration::from_millis(5),
                max: Duration::from_millis(50),
            },
            client: ClientConfig {
                timeout: Duration::from_secs(5),
                ..ClientConfig::default()
            },
            ..DestinationConfig::with_max_concurrency(max_concurrency)
        }
    }

    /// Delivers `n` signed JSON bodies concurrently; returns each delivery.
    async fn deliver_all(
        dest: &Destination,
        url: &str,
        signing: Option<&SigningKey>,
        n: i64,
    ) -> Vec<Delivery> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let dest = dest.clone();
                let url = url.to_string();
                let signing = signing.cloned();
                tokio::spawn(async move {
                    let k = key(i);
                    let body =
                        serde_json::to_vec(&serde_json::json!({"row": "r", "lsn": i})).unwrap();
                    dest.deliver(|client| {
                        let mut req = client
                            .post(&url)
                            .header(IDEMPOTENCY_KEY_HEADER, &k)
                            .header("content-type", "application/json")
                            .body(body.clone());
                        if let Some(s) = &signing {
                            for (name, value) in s.headers(&k, unix_now(), &body) {
                                req = req.header(name, value);
                            }
                        }
                        req
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    fn attempts(d: &Delivery) -> u32 {
        match d {
            Delivery::Delivered { attempts, .. }
            | Delivery::Rejected { attempts, .. }
            | Delivery::GaveUp { attempts, .. } => *attempts,
        }
    }

    #[tokio::test]
    async fn receiver_429_storm_is_absorbed_by_limiter_and_retry_after() {
        // The server takes 10/s; the client was told 20/s: every second a 429 with
        // Retry-After: 1 pauses the whole destination.
        let rx = Receiver::start(ReceiverConfig {
            rate_per_sec: Some(10),
            ..ReceiverConfig::default()
        })
        .await;
        let dest = Destination::new(
            "receiver_429",
            &DestinationConfig {
                rate_limits: vec![RateLimit::new(20, Duration::from_secs(1))],
                ..fast_config(8)
            },
        )
        .unwrap();
        let n = 30;
        let out = deliver_all(&dest, &rx.url("/hook"), None, n).await;
        assert!(out.iter().all(|d| matches!(d, Delivery::Delivered { .. })));
        let c = rx.counts();
        let total: u32 = out.iter().map(attempts).sum();
        assert_eq!(c.requests, total as usize);
        assert_eq!(rx.deliveries().len(), n as usize);
        assert!(c.too_many >= 1, "{c:?}");
        assert_eq!(c.retry_after_violations, 0, "{c:?}");
        let per_accepted = total as f64 / n as f64;
        eprintln!("429 storm: {per_accepted:.2} attempts per accepted request, {c:?}");
        assert!(
            per_accepted <= 1.2,
            "{per_accepted} attempts per accepted request: {c:?}"
        );
    }

    #[tokio::test]
    async fn receiver_signature_round_trip() {
        let signing = SigningKey::from_secret(SECRET).unwrap();
        let rx = Receiver::start(ReceiverConfig {
            secret: Some(signing.clone()),
            ..ReceiverConfig::default()
        })
        .await;
        let dest = Destination::new("receiver_sig", &fast_config(4)).unwrap();
        let out = deliver_all(&dest, &rx.url("/hook"), Some(&signing), 5).await;
        assert!(out
            .iter()
            .all(|d| matches!(d, Delivery::Delivered { attempts: 1, .. })));
        let wrong = SigningKey::from_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let out = deliver_all(&dest, &rx.url("/hook"), Some(&wrong), 1).await;
        match &out[0] {
            Delivery::Rejected { response, .. } => assert_eq!(response.status, 401),
            other => panic!("{other:?}"),
        }
        let c = rx.counts();
        assert_eq!((c.accepted, c.bad_signatures), (5, 1), "{c:?}");
        let ids: Vec<_> = rx.requests().iter().map(|r| r.webhook_id.clone()).collect();
        assert!(ids.iter().all(Option::is_some));
        assert_eq!(
            rx.requests()[0].webhook_id,
            rx.requests()[0].idempotency_key
        );
    }

    #[tokio::test]
    async fn receiver_errors_and_resets_are_retried_to_one_delivery_each() {
        let rx = Receiver::start(ReceiverConfig {
            error_fraction: 0.2,
            reset_fraction: 0.2,
            storms: vec![Storm {
                status: 502,
                from: Duration::ZERO,
                until: Duration::from_millis(200),
            }],
            seed: 42,
            ..ReceiverConfig::default()
        })
        .await;
        let dest = Destination::new("receiver_faults", &fast_config(8)).unwrap();
        let n = 40;
        let out = deliver_all(&dest, &rx.url("/hook"), None, n).await;
        assert!(out.iter().all(|d| matches!(d, Delivery::Delivered { .. })));
        let c = rx.counts();
        eprintln!("faults: {c:?}");
        assert!(c.server_errors > 0 && c.resets > 0, "{c:?}");
        assert_eq!(rx.deliveries().len(), n as usize);
        assert!(rx.acceptances_per_key().values().all(|n| *n == 1));
        rx.check_order_per_key(|b| Some((b["lsn"].to_string(), b["lsn"].as_i64()?)))
            .unwrap();
    }

    #[tokio::test]
    async fn receiver_rejects_chosen_keys_with_a_body() {
        let rx = Receiver::start(ReceiverConfig {
            reject_keys: HashMap::from([(key(1), r#"{"error":"email is invalid"}"#.to_string())]),
            ..ReceiverConfig::default()
        })
        .await;
        let dest = Destination::new("receiver_reject", &fast_config(2)).unwrap();
        let out = deliver_all(&dest, &rx.url("/hook"), None, 3).await;
        match &out[1] {
            Delivery::Rejected { attempts, response } => {
                assert_eq!((*attempts, response.status), (1, 400));
                assert_eq!(response.excerpt, r#"{"error":"email is invalid"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.counts().rejected, 1);
        assert_eq!(rx.deliveries().len(), 2);
    }

    #[tokio::test]
    async fn receiver_stall_times_out_then_release_delivers() {
        let rx = Receiver::start(ReceiverConfig::default()).await;
        rx.stall();
        let dest = Destination::new(
            "receiver_stall",
            &DestinationConfig {
                max_attempts: Some(1),
                client: ClientConfig {
                    timeout: Duration::from_millis(300),
                    ..ClientConfig::default()
                },
                ..fast_config(2)
            },
        )
        .unwrap();
        let out = deliver_all(&dest, &rx.url("/hook"), None, 1).await;
        match &out[0] {
            Delivery::GaveUp { last, .. } => assert!(
                matches!(
                    last,
                    sinks::http::Attempt::Failed {
                        error: sinks::http::TransportError::Timeout,
                        ..
                    }
                ),
                "{last:?}"
            ),
            other => panic!("{other:?}"),
        }
        rx.release();
        let out = deliver_all(&dest, &rx.url("/hook"), None, 1).await;
        assert!(matches!(out[0], Delivery::Delivered { .. }), "{:?}", out[0]);
    }

    #[tokio::test]
    async fn receiver_slow_responses_keep_concurrency_bounded() {
        let rx = Receiver::start(ReceiverConfig {
            delay: Duration::from_millis(50),
            ..ReceiverConfig::default()
        })
        .await;
        let dest = Destination::new("receiver_slow", &fast_config(4)).unwrap();
        let d2 = dest.clone();
        let watcher = tokio::spawn(async move {
            let mut max = 0;
            for _ in 0..100 {
                max = max.max(d2.concurrency().in_flight());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        });
        let out = deliver_all(&dest, &rx.url("/hook"), None, 20).await;
        assert!(out
            .iter()
            .all(|d| matches!(d, Delivery::Delivered { attempts: 1, .. })));
        assert!(watcher.await.unwrap() <= 4);
        assert!(dest.concurrency().limit() <= 4);
    }
}
