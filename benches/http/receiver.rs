//! The webhook benchmark's receiver (`scripts/bench-http.sh`): a real HTTP/1.1 server on
//! 127.0.0.1 that answers as fast as it can and whose behaviour the script switches at run
//! time, and that counts what a user of the webhook would check.
//!
//! ```text
//!   POST /<anything> ─▶ arrival time ─▶ mode?
//!      ok     ─▶ 200, the body parsed (events' positions and commit_ts) and counted
//!      storm  ─▶ at most CAP requests per 1 s window (windows counted from the storm's
//!                start); the rest 429 + `Retry-After: SECS`, body not parsed
//!      stall  ─▶ the request is read and held unanswered until the mode changes, then 503
//!      503    ─▶ 503 at once
//!   POST /_mode  body "ok" | "stall" | "503" | "storm CAP SECS"   switch (logged in stats)
//!   POST /_reset                                                  forget every count
//!   GET  /_stats                                                  the counts as JSON
//!   GET  /_events                 "<lsn> <commit_ts µs> <arrival µs>" per first-accepted event
//!   GET  /_count                  "<distinct positions> <accepted requests>" (cheap, for polling)
//! ```
//!
//! Counted per accepted request: its `Idempotency-Key`, whether the key was accepted before
//! (a resend, harmless for an idempotent receiver), and, on a key's first acceptance, every
//! event's `(lsn, seq)` (a position under a second key is "doubled": the sink cut a batch
//! differently or sent a change twice) and `arrival - commit_ts` (latency). A per-second
//! timeline (seconds since the last reset) holds accepted requests, new events, 429s and
//! other answers. A request arriving before the `Retry-After` of the last 429 elapsed (with
//! a 50 ms grace for requests already on the wire) counts as `early`.
//!
//! Speed: bodies are parsed with a borrowed serde struct that skips the rows, outside the
//! lock; the lock only updates counters. One tokio runtime with two workers (`--threads`).
//!
//! Usage: `receiver --port 0 --port-file F` (prints the bound port into F).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Requests already on the wire when a 429 left are not "early" for this long.
const EARLY_GRACE: Duration = Duration::from_millis(50);

/// What the receiver answers now.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Ok,
    Stall,
    Fail503,
    Storm {
        cap: u64,
        retry_after: u64,
        since: Instant,
    },
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["ok"] => Some(Mode::Ok),
            ["stall"] => Some(Mode::Stall),
            ["503"] => Some(Mode::Fail503),
            ["storm", cap, secs] => Some(Mode::Storm {
                cap: cap.parse().ok()?,
                retry_after: secs.parse().ok()?,
                since: Instant::now(),
            }),
            _ => None,
        }
    }

    fn name(&self) -> String {
        match self {
            Mode::Ok => "ok".into(),
            Mode::Stall => "stall".into(),
            Mode::Fail503 => "503".into(),
            Mode::Storm {
                cap, retry_after, ..
            } => format!("storm {cap} {retry_after}"),
        }
    }
}

/// The part of a webhook body the receiver reads.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    events: Vec<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    position: Position,
    #[serde(borrow)]
    commit_ts: &'a str,
}

#[derive(Deserialize)]
struct Position {
    lsn: u64,
    seq: i64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    accepted: u64,
    events: u64,
    limited: u64,
    other: u64,
}

/// Every count since the last reset.
struct Stats {
    since: Instant,
    requests: u64,
    accepted: u64,
    resent: u64,
    limited: u64,
    stalled: u64,
    failed: u64,
    early: u64,
    bad_bodies: u64,
    keys: HashSet<String>,
    positions: HashSet<(u64, i64)>,
    doubled: u64,
    events: u64,
    latencies_us: Vec<i64>,
    /// `(lsn, commit_ts, arrival)` of every first-accepted event (µs), for `/_events`.
    arrivals: Vec<(u64, i64, i64)>,
    first_accept: Option<f64>,
    last_accept: Option<f64>,
    timeline: Vec<Second>,
    modes: Vec<(f64, String)>,
    /// Storm window index and its count.
    window: (u64, u64),
    /// Until when the last 429's Retry-After runs.
    retry_until: Option<Instant>,
}

impl Stats {
    fn new(mode: &Mode) -> Self {
        Stats {
            since: Instant::now(),
            requests: 0,
            accepted: 0,
            resent: 0,
            limited: 0,
            stalled: 0,
            failed: 0,
            early: 0,
            bad_bodies: 0,
            keys: HashSet::new(),
            positions: HashSet::new(),
            doubled: 0,
            events: 0,
            latencies_us: Vec::new(),
            arrivals: Vec::new(),
            first_accept: None,
            last_accept: None,
            timeline: Vec::new(),
            modes: vec![(0.0, mode.name())],
            window: (0, 0),
            retry_until: None,
        }
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let i = at.saturating_duration_since(self.since).as_secs() as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, Second::default());
        }
        &mut self.timeline[i]
    }

    fn to_json(&self) -> serde_json::Value {
        let mut lat = self.latencies_us.clone();
        lat.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            if lat.is_empty() {
                return None;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            Some(lat[i] as f64 / 1e3)
        };
        json!({
            "elapsed": self.since.elapsed().as_secs_f64(),
            "requests": self.requests,
            "accepted": self.accepted,
            "accepted_distinct_keys": self.keys.len(),
            "resent": self.resent,
            "limited": self.limited,
            "stalled": self.stalled,
            "failed": self.failed,
            "early": self.early,
            "bad_bodies": self.bad_bodies,
            "events": self.events,
            "positions": self.positions.len(),
            "doubled": self.doubled,
            "first_accept": self.first_accept,
            "last_accept": self.last_accept,
            "latency_ms": {
                "n": lat.len(),
                "p50": pct(0.50),
                "p90": pct(0.90),
                "p99": pct(0.99),
                "max": lat.last().map(|v| *v as f64 / 1e3),
            },
            "timeline": self.timeline.iter()
                .map(|s| [s.accepted, s.events, s.limited, s.other])
                .collect::<Vec<_>>(),
            "modes": self.modes,
        })
    }
}

struct Shared {
    stats: Mutex<Stats>,
    mode: watch::Sender<Mode>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Records an accepted request: counts, and on a key's first acceptance its events.
fn accept(shared: &Shared, key: Option<String>, body: &[u8], at: Instant, wall: SystemTime) {
    let parsed: Option<Vec<((u64, i64), i64)>> =
        serde_json::from_slice::<Body>(body).ok().map(|b| {
            b.events
                .iter()
                .map(|e| {
                    let ts = humantime::parse_rfc3339(e.commit_ts).map_or(0, unix_micros);
                    ((e.position.lsn, e.position.seq), ts)
                })
                .collect()
        });
    let arrival = unix_micros(wall);
    let mut s = shared.stats();
    s.accepted += 1;
    let t = at.saturating_duration_since(s.since).as_secs_f64();
    s.first_accept.get_or_insert(t);
    s.last_accept = Some(t);
    let Some(events) = parsed else {
        s.bad_bodies += 1;
        s.second(at).accepted += 1;
        return;
    };
    let first = key.is_none_or(|k| s.keys.insert(k));
    if !first {
        s.resent += 1;
        s.second(at).accepted += 1;
        return;
    }
    let mut new = 0;
    for (pos, ts) in events {
        if s.positions.insert(pos) {
            new += 1;
        } else {
            s.doubled += 1;
        }
        s.latencies_us.push(arrival - ts);
        s.arrivals.push((pos.0, ts, arrival));
    }
    s.events += new;
    let sec = s.second(at);
    sec.accepted += 1;
    sec.events += new;
}

async fn control(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method, path.as_str()) {
        (Method::GET, "/_stats") => answer(StatusCode::OK, shared.stats().to_json().to_string()),
        (Method::GET, "/_events") => {
            let s = shared.stats();
            let mut out = String::with_capacity(s.arrivals.len() * 40);
            for (lsn, ts, at) in &s.arrivals {
                out.push_str(&format!("{lsn} {ts} {at}\n"));
            }
            answer(StatusCode::OK, out)
        }
        (Method::GET, "/_count") => {
            let s = shared.stats();
            answer(
                StatusCode::OK,
                format!("{} {}\n", s.positions.len(), s.accepted),
            )
        }
        (Method::POST, "/_reset") => {
            let mode = shared.mode.borrow().clone();
            *shared.stats() = Stats::new(&mode);
            answer(StatusCode::OK, "reset\n")
        }
        (Method::POST, "/_mode") => match Mode::parse(&String::from_utf8_lossy(&body)) {
            Some(mode) => {
                {
                    let mut s = shared.stats();
                    let t = s.since.elapsed().as_secs_f64();
                    s.modes.push((t, mode.name()));
                    s.window = (0, 0);
                }
                shared.mode.send_replace(mode);
                answer(StatusCode::OK, "mode set\n")
            }
            None => answer(
                StatusCode::BAD_REQUEST,
                "mode: ok | stall | 503 | storm CAP SECS\n",
            ),
        },
        _ => answer(StatusCode::NOT_FOUND, "unknown control path\n"),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path().starts_with("/_") {
        return Ok(control(&shared, req).await);
    }
    let at = Instant::now();
    let wall = SystemTime::now();
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut mode_rx = shared.mode.subscribe();
    let mode = mode_rx.borrow_and_update().clone();
    {
        let mut s = shared.stats();
        s.requests += 1;
        if s.retry_until.is_some_and(|u| at + EARLY_GRACE < u) {
            s.early += 1;
        }
    }
    let response = match mode {
        Mode::Ok => {
            accept(&shared, key, &body, at, wall);
            answer(StatusCode::OK, "{\"ok\":true}")
        }
        Mode::Fail503 => {
            let mut s = shared.stats();
            s.failed += 1;
            s.second(at).other += 1;
            answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Mode::Stall => {
            // Held until the mode changes; the client has usually timed out by then.
            let _ = mode_rx.changed().await;
            let mut s = shared.stats();
            s.stalled += 1;
            s.second(Instant::now()).other += 1;
            answer(StatusCode::SERVICE_UNAVAILABLE, "stalled")
        }
        Mode::Storm {
            cap,
            retry_after,
            since,
        } => {
            let admitted = {
                let mut s = shared.stats();
                let w = at.saturating_duration_since(since).as_secs();
                if s.window.0 != w {
                    s.window = (w, 0);
                }
                if s.window.1 < cap {
                    s.window.1 += 1;
                    true
                } else {
                    s.limited += 1;
                    s.second(at).limited += 1;
                    s.retry_until = Some(Instant::now() + Duration::from_secs(retry_after));
                    false
                }
            };
            if admitted {
                accept(&shared, key, &body, at, wall);
                answer(StatusCode::OK, "{\"ok\":true}")
            } else {
                let mut r = answer(StatusCode::TOO_MANY_REQUESTS, "slow down");
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from(retry_after),
                );
                r
            }
        }
    };
    Ok(response)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let threads: usize = arg(&args, "--threads")
        .and_then(|p| p.parse().ok())
        .unwrap_or(2);
    let port_file = arg(&args, "--port-file");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let port = listener.local_addr()?.port();
            if let Some(f) = port_file {
                std::fs::write(f, format!("{port}\n"))?;
            }
            eprintln!("receiver listening on 127.0.0.1:{port}");
            let (mode, _) = watch::channel(Mode::Ok);
            let shared = Arc::new(Shared {
                stats: Mutex::new(Stats::new(&Mode::Ok)),
                mode,
            });
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
