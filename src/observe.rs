//! The metrics listener (`[metrics] listen`): Prometheus text exposition on `/metrics`,
//! Kubernetes probes on `/healthz` (alive) and `/readyz` (streaming, lag under the bound), and
//! a status page on `/` (`status.html`: self-contained, it reads `/metrics` every 2 s and
//! keeps ten minutes of samples in the browser).
//!
//! ```text
//!   Delta sink, hub runner, core ──metrics facade──▶ recorder ──render──▶ GET /metrics
//!   probe task (every 5 s): lag in bytes from the source      ─┘   ▲
//!   scrape time: lag in seconds, hub position, RSS  ───────────────┘
//! ```
//!
//! Every name is in [`sinks::metrics`]. Values are recorded where they arise, at most once per
//! commit or request (never per row), so the metrics cost the pipeline nothing measurable;
//! the gauges that are derived (lag in seconds, RSS) are computed when scraped. Off unless
//! configured; the listener binds where it is told (loopback by default in the examples).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use replication::health::SourceHealth;
use sinks::hub::HubPosition;
use sinks::metrics as m;
use tokio_util::sync::CancellationToken;

use crate::config::Validated;

/// Newest durable position.
static LAST_DURABLE: AtomicU64 = AtomicU64::new(0);

/// The status page (`GET /`): one self-contained HTML file that reads `/metrics`.
const STATUS_PAGE: &str = include_str!("status.html");

/// How often the source is asked how far ahead it is.
const PROBE_EVERY: Duration = Duration::from_secs(5);

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The core made `position`, committed at the source at `commit_ts` (unix µs), durable.
/// (The lag in seconds is the source's `Freshness`, which heartbeats move too.)
pub fn durable(position: u64, commit_ts: Option<i64>) {
    LAST_DURABLE.store(position, Ordering::Relaxed);
    if let Some(ts) = commit_ts {
        let latency = (now_us() - ts).max(0) as f64 / 1e6;
        metrics::histogram!(m::COMMIT_LATENCY).record(latency);
    }
}

/// Installs the recorder (once per process), with `pipeline` as a label on every series.
pub fn install(pipeline: &str) -> Result<PrometheusHandle, String> {
    let latency = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let rows = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];
    let bytes = [
        1024.0,
        16384.0,
        262_144.0,
        1_048_576.0,
        16_777_216.0,
        268_435_456.0,
    ];
    let full = |name: &str| metrics_exporter_prometheus::Matcher::Full(name.to_string());
    PrometheusBuilder::new()
        .add_global_label("pipeline", pipeline)
        .set_buckets_for_metric(full(m::COMMIT_LATENCY), &latency)
        .and_then(|b| b.set_buckets_for_metric(full(m::BATCH_ROWS), &rows))
        .and_then(|b| b.set_buckets_for_metric(full(m::BATCH_BYTES), &bytes))
        .and_then(|b| b.install_recorder())
        .inspect(|_| m::describe())
        .map_err(|e| format!("cannot start the metrics recorder: {e}"))
}

/// What the listener needs besides the recorder.
#[derive(Clone)]
pub struct Listener {
    /// Renders the recorder's state.
    pub handle: PrometheusHandle,
    /// The hub position, exported at scrape time.
    pub hub: HubPosition,
    /// `/readyz` is unready while the lag in seconds is above this.
    pub ready_max_lag: Duration,
    /// The source's freshness (lag in seconds) and slot WAL retention.
    pub health: SourceHealth,
}

/// Binds `addr` now (so a taken port is a startup error) and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    listener: Listener,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let socket = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("[metrics] listen = \"{addr}\": cannot listen there ({e}): choose a free address and port")
    })?;
    tracing::info!(%addr, "metrics listener on /metrics, /healthz, /readyz");
    let listener = Arc::new(listener);
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            let listener = listener.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let listener = listener.clone();
                    async move { Ok::<_, Infallible>(answer(&listener, &req)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    }))
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn answer<B>(listener: &Listener, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            refresh(listener);
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                listener.handle.render(),
            )
        }
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            STATUS_PAGE.to_string(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match unready(listener) {
            None => text(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why + "\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// The gauges computed at scrape time.
fn refresh(listener: &Listener) {
    if let Some(lag) = listener.health.freshness.lag() {
        metrics::gauge!(m::LAG_SECONDS).set(lag.as_secs_f64());
    }
    if let Some(w) = listener.health.wal.get() {
        let set = |name: &'static str, v: Option<i64>| {
            if let Some(v) = v {
                metrics::gauge!(name).set(v as f64);
            }
        };
        set(m::SLOT_RETAINED_WAL, w.retained_bytes);
        set(m::SLOT_SAFE_WAL_SIZE, w.safe_wal_size);
        set(m::SLOT_MAX_WAL_KEEP, w.max_slot_wal_keep_size);
        for status in ["reserved", "extended", "unreserved", "lost"] {
            let on = w.wal_status.as_deref() == Some(status);
            metrics::gauge!(m::SLOT_WAL_STATUS, "status" => status).set(if on { 1.0 } else { 0.0 });
        }
    }
    metrics::gauge!(m::HUB_POSITION).set(listener.hub.get().0 as f64);
    if let Some(rss) = rss_bytes() {
        metrics::gauge!(m::RSS).set(rss as f64);
    }
}

/// Why the pipeline is not ready, if it is not.
fn unready(listener: &Listener) -> Option<String> {
    if !STREAMING.load(Ordering::Relaxed) {
        return Some("not streaming: the source is not connected (see the log)".into());
    }
    match listener.health.freshness.lag() {
        Some(lag) if lag > listener.ready_max_lag => Some(format!(
            "lag {:.1} s is above ready_max_lag {:?}",
            lag.as_secs_f64(),
            listener.ready_max_lag
        )),
        _ => None,
    }
}

/// Whether a source session is streaming (for `/readyz`).
static STREAMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The core's session started (`true`) or ended streaming.
pub fn streaming(on: bool) {
    STREAMING.store(on, Ordering::Relaxed);
    metrics::gauge!(m::STREAMING).set(if on { 1.0 } else { 0.0 });
}

/// The process's resident set size, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Asks the source every few seconds how far ahead of the durable position it is
/// (`sluice_lag_bytes`), on a connection of its own kept between probes; a failure is logged
/// at debug and the next probe reconnects.
pub fn spawn_probe(settings: Validated, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        let mut conn = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            match lag_bytes(&settings, &mut conn).await {
                Ok(Some(lag)) => metrics::gauge!(m::LAG_BYTES).set(lag as f64),
                Ok(None) => {}
                Err(e) => {
                    conn = None;
                    tracing::debug!(error = %e, "metrics: cannot read the source's lag");
                }
            }
        }
    })
}

/// The probe's connection.
enum ProbeConn {
    Pg(tokio_postgres::Client),
    My(Box<mysql_async::Conn>),
}

async fn lag_bytes(
    settings: &Validated,
    conn: &mut Option<ProbeConn>,
) -> Result<Option<u64>, replication::Error> {
    if conn.is_none() {
        *conn = Some(match settings {
            Validated::Postgres(s) => {
                ProbeConn::Pg(replication::postgres::catalog::connect(&s.conninfo).await?)
            }
            Validated::Mysql(m) => ProbeConn::My(Box::new(
                replication::mysql::catalog::connect(&m.info).await?,
            )),
        });
    }
    match (settings, conn.as_mut()) {
        (Validated::Postgres(s), Some(ProbeConn::Pg(client))) => {
            Ok(replication::postgres::catalog::slot_status(client, &s.slot)
                .await?
                .and_then(|st| st.lag_bytes)
                .map(|b| b.max(0) as u64))
        }
        (Validated::Mysql(_), Some(ProbeConn::My(c))) => {
            let durable = LAST_DURABLE.load(Ordering::Relaxed);
            if durable == 0 {
                return Ok(None);
            }
            let current = replication::mysql::catalog::current_position(c).await?;
            // The packed position names the file by its number; the base name is the server's.
            let from = replication::mysql::position::BinlogPosition::unpack(
                replication::Lsn(durable),
                &current.file,
            );
            replication::mysql::catalog::bytes_behind(c, &from).await
        }
        _ => Ok(None),
    }
}
