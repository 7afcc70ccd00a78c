//! Snapshot progress per table (rows, rows/s, ETA): bars when stderr is a terminal, a log
//! line every few seconds otherwise. Counters are plain atomics the copy loops bump; the
//! reporter reads them on its own timer, so progress costs the hot path one relaxed add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often progress is logged when no terminal is attached.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often bars are redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(200);

struct Entry {
    table: String,
    estimate: u64,
    rows: Arc<AtomicU64>,
    started: Instant,
    bar: Option<ProgressBar>,
    done: bool,
}

/// The tables of one kind of snapshot (`what`: "snapshot", "incremental snapshot").
pub struct Progress {
    what: &'static str,
    bars: Option<MultiProgress>,
    entries: Mutex<Vec<Entry>>,
}

impl Progress {
    /// Bars if stderr is a terminal, logs otherwise.
    pub fn new(what: &'static str) -> Arc<Progress> {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Arc::new(Progress {
            what,
            bars: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            entries: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start tracking `table` (about `estimate` rows); returns the counter to bump.
    pub fn add(&self, table: &str, estimate: u64) -> Arc<AtomicU64> {
        let rows = Arc::new(AtomicU64::new(0));
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(estimate.max(1)));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>24} [{bar:30}] {human_pos}/~{human_len} rows  {per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(table.to_string());
            bar
        });
        self.lock().push(Entry {
            table: table.to_string(),
            estimate,
            rows: rows.clone(),
            started: Instant::now(),
            bar,
            done: false,
        });
        rows
    }

    /// `table` is complete.
    pub fn finish(&self, table: &str) {
        for e in self
            .lock()
            .iter_mut()
            .filter(|e| e.table == table && !e.done)
        {
            e.done = true;
            if let Some(bar) = &e.bar {
                let rows = e.rows.load(Ordering::Relaxed);
                bar.set_length(rows.max(1));
                bar.finish_with_message("done");
            }
        }
    }

    /// Report until `stop` is cancelled, then once more.
    pub async fn report(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every = if self.bars.is_some() {
            DRAW_EVERY
        } else {
            LOG_EVERY
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.show(),
                () = stop.cancelled() => break,
            }
        }
        self.show();
    }

    fn show(&self) {
        for e in self.lock().iter() {
            let rows = e.rows.load(Ordering::Relaxed);
            let table = e.table.clone();
            metrics::gauge!(sinks::metrics::SNAPSHOT_ROWS, "table" => table.clone())
                .set(rows as f64);
            metrics::gauge!(sinks::metrics::SNAPSHOT_ROWS_ESTIMATED, "table" => table)
                .set(e.estimate.max(rows) as f64);
            if e.done {
                continue;
            }
            match &e.bar {
                Some(bar) => {
                    // The estimate (reltuples) may be stale: never let the bar overflow.
                    if rows > bar.length().unwrap_or(0) {
                        bar.set_length(rows);
                    }
                    bar.set_position(rows);
                }
                None => {
                    let rate = rows as f64 / e.started.elapsed().as_secs_f64().max(0.001);
                    let eta = if rate > 0.0 && e.estimate > rows {
                        ((e.estimate - rows) as f64 / rate).round() as u64
                    } else {
                        0
                    };
                    tracing::info!(
                        table = %e.table,
                        rows,
                        estimated_rows = e.estimate,
                        rows_per_s = rate.round() as u64,
                        eta_s = eta,
                        "{} progress",
                        self.what
                    );
                }
            }
        }
    }
}
