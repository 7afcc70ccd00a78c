//! Wiring of the hub sinks: beside the pipeline in `sluice run` (separate tasks woken by the
//! in-process hub position), alone in `sluice deliver` (following the hub file), and their
//! lines in `sluice status`. No delivery logic lives here (see `sinks::hub`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replication::Lsn;
use std::time::Duration;

use sinks::http::{DestinationStats, SharedSettings};
use sinks::hub::{
    cursor_path, redeliver, run, ChangelogReader, Cursor, DeadLetters, HubPosition, HubState,
    RunOptions, SinkIdentity, Until, STATE_DIR,
};
use sinks::rest::{RestSettings, RestSink};
use sinks::webhook::{WebhookSettings, WebhookSink};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A validated hub sink of any kind.
#[derive(Debug, Clone)]
pub enum HubSinkSettings {
    /// Batches of change events POSTed to one URL.
    Webhook(Box<WebhookSettings>),
    /// One object per source row in a REST API.
    Rest(Box<RestSettings>),
}

impl HubSinkSettings {
    /// What every kind shares: name, tables, keys, limits, traffic shaping.
    pub fn shared(&self) -> &SharedSettings {
        match self {
            HubSinkSettings::Webhook(w) => &w.shared,
            HubSinkSettings::Rest(r) => &r.shared,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.shared().name
    }
}

/// The runner options of one hub sink of `pipeline`.
fn options(lake: &Path, pipeline: &str, s: &SharedSettings, until: Until) -> RunOptions {
    RunOptions {
        identity: SinkIdentity {
            pipeline: pipeline.to_string(),
            sink: s.name.clone(),
            tables: s.tables.clone(),
        },
        lake: lake.to_path_buf(),
        keys: s.keys.clone(),
        limits: s.limits,
        window: s.destination.concurrency.max,
        until,
    }
}

/// Runs one sink to its end; a definite failure is logged (it never stops the pipeline).
async fn run_one(
    lake: PathBuf,
    pipeline: String,
    settings: HubSinkSettings,
    hub: HubPosition,
    until: Until,
    cancel: CancellationToken,
) -> Result<(), sinks::Error> {
    let options = options(&lake, &pipeline, settings.shared(), until);
    let stats = stats_file(&lake, &pipeline, settings.name());
    let result = match &settings {
        HubSinkSettings::Webhook(w) => {
            let sink = Arc::new(WebhookSink::new(&pipeline, w)?);
            let d = sink.destination().clone();
            let _writer = StatsWriter::spawn(settings.name().to_string(), stats, move || d.stats());
            run(sink, options, hub.subscribe(), cancel).await
        }
        HubSinkSettings::Rest(r) => {
            let sink = Arc::new(RestSink::new(&pipeline, r)?);
            let d = sink.destination().clone();
            let _writer = StatsWriter::spawn(settings.name().to_string(), stats, move || d.stats());
            run(sink, options, hub.subscribe(), cancel).await
        }
    };
    if let Err(e) = &result {
        tracing::error!(sink = %settings.name(), error = %e, "hub sink stopped: fix the problem and restart; the lake and the source continue");
    }
    result
}

/// How often a running hub sink writes its traffic for `sluice status`.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// `<lake>/_sluice_state/<pipeline>.<sink>.stats.json`: a running sink's in-flight requests,
/// concurrency limit, retries, 429s and refusals, rewritten every second.
fn stats_file(lake: &Path, pipeline: &str, sink: &str) -> PathBuf {
    lake.join(STATE_DIR)
        .join(format!("{pipeline}.{sink}.stats.json"))
}

/// What the stats file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct SinkStats {
    #[serde(flatten)]
    destination: DestinationStats,
    updated_at_ms: u64,
}

/// Writes a sink's stats file until dropped (then removes it: the sink is not running).
struct StatsWriter(tokio::task::JoinHandle<()>, PathBuf);

impl StatsWriter {
    fn spawn(
        sink: String,
        path: PathBuf,
        stats: impl Fn() -> DestinationStats + Send + 'static,
    ) -> Self {
        let file = path.clone();
        StatsWriter(
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATS_EVERY);
                loop {
                    tick.tick().await;
                    let s = SinkStats {
                        destination: stats(),
                        updated_at_ms: now_ms(),
                    };
                    export(&sink, &s.destination);
                    let tmp = path.with_extension("json.tmp");
                    let written = serde_json::to_vec(&s)
                        .map_err(std::io::Error::other)
                        .and_then(|b| std::fs::write(&tmp, b))
                        .and_then(|()| std::fs::rename(&tmp, &path));
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "cannot write the hub sink's stats file");
                    }
                }
            }),
            file,
        )
    }
}

impl Drop for StatsWriter {
    fn drop(&mut self) {
        self.0.abort();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// A sink's traffic as metrics.
fn export(sink: &str, d: &DestinationStats) {
    use sinks::metrics as m;
    let l = || [("sink", sink.to_string())];
    metrics::gauge!(m::SINK_IN_FLIGHT, &l()).set(d.in_flight as f64);
    metrics::gauge!(m::SINK_CONCURRENCY_LIMIT, &l()).set(d.limit as f64);
    metrics::counter!(m::SINK_RETRIES, &l()).absolute(d.retries);
    metrics::counter!(m::SINK_THROTTLED, &l()).absolute(d.throttled);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The live part of a status line: from the stats file if the sink wrote it lately.
/// A running sink's traffic from its stats file; `None` if it is not running (no file, or
/// one not rewritten for five periods).
fn live_stats(lake: &Path, pipeline: &str, sink: &str) -> Option<DestinationStats> {
    let read = std::fs::read(stats_file(lake, pipeline, sink))
        .ok()
        .and_then(|b| serde_json::from_slice::<SinkStats>(&b).ok())?;
    let fresh = now_ms().saturating_sub(read.updated_at_ms) <= 5 * STATS_EVERY.as_millis() as u64;
    fresh.then_some(read.destination)
}

/// Starts every hub sink on its own task.
pub fn spawn(
    lake: &Path,
    pipeline: &str,
    sinks: &[HubSinkSettings],
    hub: &HubPosition,
    until: Until,
    cancel: &CancellationToken,
) -> JoinSet<Result<(), sinks::Error>> {
    let mut set = JoinSet::new();
    for s in sinks {
        set.spawn(run_one(
            lake.to_path_buf(),
            pipeline.to_string(),
            s.clone(),
            hub.clone(),
            until,
            cancel.clone(),
        ));
    }
    set
}

/// Waits for every task; the first failure, if any.
pub async fn join(mut set: JoinSet<Result<(), sinks::Error>>) -> Result<(), String> {
    let mut first = Ok(());
    while let Some(r) = set.join_next().await {
        let r = match r {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// `sluice deliver`: one sink alone, following the hub file the pipeline writes.
pub async fn deliver(
    lake: &Path,
    pipeline: &str,
    settings: &HubSinkSettings,
    until: Until,
    cancel: CancellationToken,
) -> Result<(), sinks::Error> {
    let hub = HubPosition::resume(lake, pipeline)?;
    let follow = tokio::spawn(hub.clone().follow_file(
        lake.to_path_buf(),
        pipeline.to_string(),
        cancel.clone(),
    ));
    // On a worker, as in `sluice run`, not on the thread blocked in `block_on`: its
    // deliveries and their completions then wake no thread outside the runtime's workers.
    let task = tokio::spawn(run_one(
        lake.to_path_buf(),
        pipeline.to_string(),
        settings.clone(),
        hub,
        until,
        cancel.clone(),
    ));
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(sinks::Error::Corrupt {
            path: "hub sink task".into(),
            reason: e.to_string(),
        }),
    };
    cancel.cancel();
    let _ = follow.await;
    result
}

/// `sluice dead-letters list`: one line per open parked change; `true` if there is none.
pub async fn list_dead_letters(
    lake: &Path,
    pipeline: &str,
    settings: &HubSinkSettings,
) -> Result<bool, sinks::Error> {
    let open = DeadLetters::open_changes(lake, pipeline, settings.name()).await?;
    for r in &open {
        let c = &r.change;
        let at =
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(r.parked_at.max(0) as u64);
        println!(
            "{} {} key {} position {}/{} op {} status {}: {}",
            humantime::format_rfc3339_seconds(at),
            c.table,
            c.key,
            c.lsn,
            c.seq,
            c.op,
            c.status,
            c.response.replace('\n', " ")
        );
    }
    println!(
        "{} open parked change(s) for sink {}",
        open.len(),
        settings.name()
    );
    Ok(open.is_empty())
}

/// `sluice dead-letters retry`: re-sends the open parked changes; `true` if none is left.
pub async fn retry_dead_letters(
    lake: &Path,
    pipeline: &str,
    settings: &HubSinkSettings,
) -> Result<bool, sinks::Error> {
    let shared = settings.shared();
    let identity = SinkIdentity {
        pipeline: pipeline.to_string(),
        sink: shared.name.clone(),
        tables: shared.tables.clone(),
    };
    let w = Lsn(HubState::read(lake, pipeline)?.map_or(0, |h| h.position));
    let report = match settings {
        HubSinkSettings::Webhook(s) => {
            let sink = WebhookSink::new(pipeline, s)?;
            redeliver(&sink, lake, &identity, &shared.keys, w, false).await?
        }
        HubSinkSettings::Rest(s) => {
            let sink = RestSink::new(pipeline, s)?;
            redeliver(&sink, lake, &identity, &shared.keys, w, true).await?
        }
    };
    for p in &report.refused {
        println!(
            "still refused: {} key {} position {}/{} status {}: {}",
            p.table,
            p.key,
            p.lsn,
            p.seq,
            p.status,
            p.response.replace('\n', " ")
        );
    }
    println!(
        "sink {}: {} open, {} delivered, {} superseded by a newer change of their key, {} still refused, {} no longer in the changelog",
        shared.name,
        report.open,
        report.delivered,
        report.superseded,
        report.refused.len(),
        report.missing
    );
    Ok(report.refused.is_empty() && report.missing == 0)
}

/// Each hub sink's cursor, lag (changes and seconds behind the hub position), counts and
/// live traffic, for `sluice status`.
pub async fn sink_statuses(
    lake: &Path,
    pipeline: &str,
    sinks: &[HubSinkSettings],
) -> Vec<crate::status::SinkStatus> {
    use crate::status::{CursorPosition, SinkStatus};
    let hub = HubState::read(lake, pipeline).ok().flatten();
    let w = Lsn(hub.map_or(0, |h| h.position));
    let mut out = Vec::new();
    for s in sinks.iter().map(HubSinkSettings::shared) {
        let mut status = SinkStatus {
            name: s.name.clone(),
            error: None,
            cursor: CursorPosition::default(),
            lag_changes: 0,
            lag_seconds: 0.0,
            delivered: 0,
            parked: 0,
            hub_position: w.0,
            running: false,
            traffic: None,
        };
        let cursor = match Cursor::load(&cursor_path(lake, pipeline, &s.name)) {
            Ok(c) => c,
            Err(e) => {
                status.error = Some(format!("cursor unreadable: {e}"));
                out.push(status);
                continue;
            }
        };
        let (lake2, p2, tables, keys) = (
            lake.to_path_buf(),
            pipeline.to_string(),
            s.tables.clone(),
            s.keys.clone(),
        );
        let after = cursor.after();
        let lag = tokio::task::spawn_blocking(move || {
            let mut reader = ChangelogReader::open(&lake2, &p2, &tables, &keys, after);
            let mut n = 0u64;
            let mut oldest = None;
            while let Ok(Some(c)) = reader.next(w) {
                oldest.get_or_insert(c.commit_ts);
                n += 1;
            }
            (n, oldest)
        })
        .await
        .unwrap_or((0, None));
        status.lag_changes = lag.0;
        status.lag_seconds = lag.1.map_or(0.0, |ts| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            (now - ts).max(0) as f64 / 1e6
        });
        status.cursor = CursorPosition {
            lsn: cursor.lsn,
            seq: cursor.seq,
        };
        (status.delivered, status.parked) = (cursor.delivered, cursor.parked);
        status.traffic = live_stats(lake, pipeline, &s.name);
        status.running = status.traffic.is_some();
        out.push(status);
    }
    out
}
