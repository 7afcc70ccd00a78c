//! Command line: `sluice check | run | status | snapshot --config FILE`.
//!
//! Errors print as `error: <problem>: <fix>`, one line each, and exit non-zero; nothing is
//! created when a check fails. Secrets and row values never reach the output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use replication::change::TableName;
use replication::postgres::catalog;
use replication::source::SourceExit;
use replication::Lsn;
use sinks::delta::DeltaSink;
use sinks::hub::{HubPosition, Until as HubUntil};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MySettings, Validated};
use crate::engine::{PipelineError, Source};
use crate::state::SnapshotState;
use replication::mysql::position::BinlogPosition;

/// Change-data-capture from PostgreSQL into Delta Lake, exactly once.
#[derive(Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Until {
    /// Exit once every change committed before start is durable.
    CaughtUp,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and the source; report every problem with its fix.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Stream changes until Ctrl-C/SIGTERM (or --until caught-up).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum)]
        until: Option<Until>,
    },
    /// Show slot lag and each table's Delta version and position.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List or re-send the changes a hub sink parked (its dead letters).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Run one hub sink (a webhook or REST API) on its own against the lake, following the hub position
    /// the pipeline writes beside it; forever, or --until caught-up (everything up to the
    /// hub position at start delivered or parked).
    Deliver {
        #[arg(long, short)]
        config: PathBuf,
        /// The sink's `name`.
        #[arg(long)]
        sink: String,
        #[arg(long, value_enum)]
        until: Option<Until>,
    },
    /// Re-snapshot one table (or the rows matching --where) while streaming continues. The
    /// request travels through the WAL (PostgreSQL) or the lake's request mailbox
    /// (MySQL/MariaDB): the running pipeline (or the next run) takes it up.
    Snapshot {
        #[arg(long, short)]
        config: PathBuf,
        /// `schema.table`, one of the pipeline's tables.
        #[arg(long)]
        table: String,
        /// Only the rows matching this SQL predicate, e.g. "updated_at > '2026-01-01'".
        #[arg(long = "where")]
        filter: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Print every open parked change of the sink: position, table, key, op, status and the
    /// destination's answer.
    List {
        #[arg(long, short)]
        config: PathBuf,
        /// The sink's `name`.
        #[arg(long)]
        sink: String,
    },
    /// Send the open parked changes again, oldest first; those accepted (or, for a REST
    /// sink, superseded by a newer change of their key) are resolved.
    Retry {
        #[arg(long, short)]
        config: PathBuf,
        /// The sink's `name`.
        #[arg(long)]
        sink: String,
    },
}

/// Parse arguments, run the command, map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&[format!("cannot start the runtime: {e}")]),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check { config } => check(config).await,
            Command::Run { config, until } => run(config, until.is_some()).await,
            Command::Status { config } => status(config).await,
            Command::Deliver {
                config,
                sink,
                until,
            } => deliver(config, sink, until.is_some()).await,
            Command::Snapshot {
                config,
                table,
                filter,
            } => snapshot(config, table, filter).await,
            Command::DeadLetters { action } => dead_letters(action).await,
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,sluice=info,replication=info,sinks=info,buoyant_kernel::snapshot::builder=off,deltalake_core::writer::stats=error",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(problems: &[String]) -> ExitCode {
    for p in problems {
        eprintln!("error: {p}");
    }
    ExitCode::FAILURE
}

fn validated(path: PathBuf) -> Result<Validated, ExitCode> {
    Config::load(&path)
        .and_then(Config::validate)
        .map_err(|problems| fail(&problems))
}

fn error_lines(e: &PipelineError) -> Vec<String> {
    match e {
        PipelineError::Source(replication::Error::Preflight { problems }) => problems.clone(),
        other => vec![other.to_string()],
    }
}

async fn check(config: PathBuf) -> ExitCode {
    let settings = match validated(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let templates = template_problems(&settings).await;
    let (result, ready) = match &settings {
        Validated::Postgres(s) => (
            s.check().await,
            format!(
                "ok: {} table(s) ready to replicate through slot {}",
                s.tables.len(),
                s.slot
            ),
        ),
        Validated::Mysql(m) => (
            m.check().await,
            format!(
                "ok: {} table(s) ready to replicate from the binlog as replica server_id {}",
                m.tables.len(),
                m.server_id
            ),
        ),
    };
    // A source that cannot be reached is reported once, by its own check.
    let result = result.map(|mut p| {
        p.extend(templates.unwrap_or_default());
        p
    });
    match result {
        Ok(problems) if problems.is_empty() => {
            println!("{ready}");
            ExitCode::SUCCESS
        }
        Ok(problems) => fail(&problems),
        Err(e) => fail(&error_lines(&e)),
    }
}

/// Problems of the REST sinks' templates against the source tables' columns.
async fn template_problems(v: &Validated) -> Result<Vec<String>, PipelineError> {
    let sinks = match v {
        Validated::Postgres(s) => &s.hub_sinks,
        Validated::Mysql(m) => &m.hub_sinks,
    };
    let rest: Vec<&sinks::rest::RestSettings> = sinks
        .iter()
        .filter_map(|s| match s {
            crate::hub::HubSinkSettings::Rest(r) => Some(&**r),
            crate::hub::HubSinkSettings::Webhook(_) => None,
        })
        .collect();
    let mut tables: Vec<&replication::change::TableName> =
        rest.iter().flat_map(|r| r.shared.tables.iter()).collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns = std::collections::HashMap::new();
    match v {
        Validated::Postgres(s) => {
            let client = catalog::connect(&s.conninfo).await?;
            for t in tables {
                columns.insert(t.clone(), catalog::table_columns(&client, t).await?);
            }
        }
        Validated::Mysql(m) => {
            let mut conn = replication::mysql::catalog::connect(&m.info).await?;
            for t in tables {
                let cols = replication::mysql::catalog::table_columns(&mut conn, t).await?;
                columns.insert(t.clone(), cols);
            }
        }
    }
    let mut problems = Vec::new();
    for r in rest {
        for t in &r.shared.tables {
            match columns.get(t) {
                // A missing table is the source check's to report.
                Some(cols) if !cols.is_empty() => problems.extend(r.check_columns(t, cols)),
                _ => {}
            }
        }
    }
    Ok(problems)
}

async fn run(config: PathBuf, until_caught_up: bool) -> ExitCode {
    let mut settings = match validated(config.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Templates naming a column the table lacks would park every change: stop first. An
    // unreachable source is the pipeline's to retry.
    match template_problems(&settings).await {
        Ok(problems) if !problems.is_empty() => return fail(&problems),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the rest sinks' templates against the source's columns yet")
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let (lake, name, hub_sinks) = {
        let (lake, name, sinks, _) = hub_parts(&mut settings);
        (lake.to_path_buf(), name.to_string(), sinks.to_vec())
    };
    let hub = match HubPosition::resume(&lake, &name) {
        Ok(h) => h,
        Err(e) => return fail(&[e.to_string()]),
    };
    let health = replication::health::SourceHealth::default();
    let observe_stop = CancellationToken::new();
    let metrics = match &settings {
        Validated::Postgres(s) => s.metrics,
        Validated::Mysql(m) => m.metrics,
    };
    if let Some(m) = metrics {
        let handle = match crate::observe::install(&name) {
            Ok(h) => h,
            Err(e) => return fail(&[e]),
        };
        let listener = crate::observe::Listener {
            handle,
            hub: hub.clone(),
            ready_max_lag: m.ready_max_lag,
            health: health.clone(),
        };
        if let Err(e) = crate::observe::serve(m.listen, listener, observe_stop.clone()).await {
            return fail(&[e]);
        }
        crate::observe::spawn_probe(settings.clone(), observe_stop.clone());
    }
    let _observe_stop = observe_stop.drop_guard();
    let hub_stop = CancellationToken::new();
    let hub_file = tokio::spawn(hub.clone().write_file(
        lake.clone(),
        name.clone(),
        hub_stop.clone(),
    ));
    let sinks_stop = CancellationToken::new();
    let running = crate::hub::spawn(
        &lake,
        &name,
        &hub_sinks,
        &hub,
        HubUntil::Forever,
        &sinks_stop,
    );
    let result = loop {
        *hub_parts(&mut settings).3 = hub.clone();
        settings.share_health(&health);
        // SIGHUP re-reads the configuration and restarts the pipeline with it (a table added
        // is snapshotted while the others keep streaming from where they were).
        let session = shutdown.child_token();
        let reload = tokio::spawn(reload_on_hangup(config.clone(), session.clone()));
        let result = match &settings {
            Validated::Postgres(s) => crate::engine::run(s, until_caught_up, session).await,
            Validated::Mysql(m) => crate::engine::run(m, until_caught_up, session).await,
        };
        reload.abort();
        let reloaded = reload.await.ok().flatten();
        match (reloaded, &result) {
            (Some(new), Ok(SourceExit::Cancelled)) if !shutdown.is_cancelled() => {
                tracing::info!("configuration reloaded");
                settings = new;
            }
            _ => break result,
        }
    };
    sinks_stop.cancel();
    let mut hub_result = crate::hub::join(running).await;
    if until_caught_up && result.is_ok() && hub_result.is_ok() {
        let never = CancellationToken::new();
        let caught_up =
            crate::hub::spawn(&lake, &name, &hub_sinks, &hub, HubUntil::CaughtUp, &never);
        hub_result = crate::hub::join(caught_up).await;
    }
    hub_stop.cancel();
    let _ = hub_file.await;
    if let Err(e) = hub_result {
        return fail(&[e]);
    }
    match result {
        Ok(SourceExit::CaughtUp) => {
            tracing::info!(peak_rss_bytes = peak_rss_bytes(), "caught up");
            ExitCode::SUCCESS
        }
        Ok(SourceExit::Cancelled) => {
            tracing::info!(peak_rss_bytes = peak_rss_bytes(), "stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&error_lines(&e)),
    }
}

/// On SIGHUP, load and validate the configuration again; if it is good, stop the running
/// pipeline (cleanly) and return it. A bad one is reported and the pipeline keeps running.
async fn reload_on_hangup(path: PathBuf, session: CancellationToken) -> Option<Validated> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).ok()?;
        loop {
            hangup.recv().await?;
            match Config::load(&path).and_then(Config::validate) {
                Ok(settings) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    session.cancel();
                    return Some(settings);
                }
                Err(problems) => {
                    for problem in problems {
                        tracing::error!(%problem, "SIGHUP: configuration not reloaded");
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, session);
        std::future::pending().await
    }
}

async fn shutdown_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            cancel.cancel();
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing the commit in flight");
    cancel.cancel();
}

/// The lake, pipeline name, hub sinks and hub position of either source kind.
fn hub_parts(
    v: &mut Validated,
) -> (
    &std::path::Path,
    &str,
    &[crate::hub::HubSinkSettings],
    &mut HubPosition,
) {
    match v {
        Validated::Postgres(s) => (&s.lake, &s.name, &s.hub_sinks, &mut s.hub),
        Validated::Mysql(m) => (&m.lake, &m.name, &m.hub_sinks, &mut m.hub),
    }
}

/// The hub sink named `sink`, or the one-line error naming the ones there are.
fn find_sink<'a>(
    sinks: &'a [crate::hub::HubSinkSettings],
    sink: &str,
) -> Result<&'a crate::hub::HubSinkSettings, ExitCode> {
    sinks.iter().find(|s| s.name() == sink).ok_or_else(|| {
        let names: Vec<_> = sinks.iter().map(|s| s.name()).collect();
        fail(&[format!(
            "no hub sink named {sink:?} in the config: use one of {names:?}"
        )])
    })
}

async fn dead_letters(action: DeadLetterAction) -> ExitCode {
    let (DeadLetterAction::List { config, sink } | DeadLetterAction::Retry { config, sink }) =
        &action;
    let mut settings = match validated(config.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (lake, name, sinks, _) = hub_parts(&mut settings);
    let s = match find_sink(sinks, sink) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match action {
        DeadLetterAction::List { .. } => crate::hub::list_dead_letters(lake, name, s).await,
        DeadLetterAction::Retry { .. } => crate::hub::retry_dead_letters(lake, name, s).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // Some changes are still refused: the list says which.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(&[e.to_string()]),
    }
}

async fn deliver(config: PathBuf, sink: String, until_caught_up: bool) -> ExitCode {
    let mut settings = match validated(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (lake, name, sinks, _) = hub_parts(&mut settings);
    let s = match find_sink(sinks, &sink) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(cancel.clone()));
    let until = if until_caught_up {
        HubUntil::CaughtUp
    } else {
        HubUntil::Forever
    };
    match crate::hub::deliver(lake, name, s, until, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&[e.to_string()]),
    }
}

async fn status(config: PathBuf) -> ExitCode {
    let settings = match validated(config) {
        Ok(Validated::Postgres(s)) => s,
        Ok(Validated::Mysql(m)) => return mysql_status(&m).await,
        Err(code) => return code,
    };
    let result: Result<(), PipelineError> = async {
        let client = catalog::connect(&settings.conninfo).await?;
        match catalog::slot_status(&client, &settings.slot).await? {
            Some(s) => println!(
                "slot {}: confirmed_flush {} lag {} bytes{}",
                settings.slot,
                s.confirmed_flush.map_or("-".into(), |l| l.to_string()),
                s.lag_bytes.map_or("-".into(), |b| b.to_string()),
                if s.active { " (streaming)" } else { "" }
            ),
            None => println!("slot {}: not created yet", settings.slot),
        }
        let state = crate::state::State::load(&settings.lake, &settings.name);
        match &state {
            Ok(Some(state)) => println!(
                "initial snapshot: {}{}",
                match state.snapshot {
                    SnapshotState::Pending => "in progress or interrupted",
                    SnapshotState::Done => "done",
                    SnapshotState::Skipped => "none (snapshot = never)",
                },
                state
                    .consistent_point
                    .as_ref()
                    .map(|p| format!(" (consistent point {p})"))
                    .unwrap_or_default()
            ),
            Ok(None) => println!("initial snapshot: none"),
            Err(e) => println!("initial snapshot: state unreadable ({e})"),
        }
        let sink =
            DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
        if let Ok(Some(state)) = &state {
            print_incremental(state, &sink);
        }
        for p in sink.positions() {
            println!(
                "table {}: delta version {} position {} ({})",
                p.table,
                p.delta_version.map_or("-".into(), |v| v.to_string()),
                p.position.map_or("-".into(), |l| l.to_string()),
                p.path.display()
            );
        }
        print_schema_changes(&settings.lake, &settings.name, |l| l.to_string()).await?;
        crate::hub::print_status(&settings.lake, &settings.name, &settings.hub_sinks).await;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&error_lines(&e)),
    }
}

async fn snapshot(config: PathBuf, table: String, filter: Option<String>) -> ExitCode {
    let settings = match validated(config) {
        Ok(Validated::Postgres(s)) => s,
        Ok(Validated::Mysql(m)) => return mysql_snapshot(&m, table, filter).await,
        Err(code) => return code,
    };
    let Some(name) = TableName::parse(&table).filter(|t| settings.tables.contains(t)) else {
        return fail(&[format!(
            "table {table} is not one of the pipeline's [source] tables: add it there and restart (or send SIGHUP); a table added is snapshotted then"
        )]);
    };
    let result = settings.request_snapshot(&name, filter.as_deref()).await;
    match result {
        Ok(requested) => {
            println!(
                "ok: snapshot of {name}{} {requested}; see sluice status",
                if filter.is_some() {
                    " (rows matching --where)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&error_lines(&e)),
    }
}

/// `sluice snapshot` for MySQL/MariaDB: checked here, left in the lake's request mailbox.
async fn mysql_snapshot(settings: &MySettings, table: String, filter: Option<String>) -> ExitCode {
    let Some(name) = TableName::parse(&table).filter(|t| settings.tables.contains(t)) else {
        return fail(&[format!(
            "table {table} is not one of the pipeline's [source] tables: add it there and restart (or send SIGHUP); a table added is snapshotted then"
        )]);
    };
    match settings.request_snapshot(&name, filter.as_deref()).await {
        Ok(requested) => {
            println!(
                "ok: snapshot of {name}{} {requested}; see sluice status",
                if filter.is_some() {
                    " (rows matching --where)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&error_lines(&e)),
    }
}

/// The incremental snapshots a state file has queued or in progress.
fn print_incremental(state: &crate::state::State, sink: &DeltaSink) {
    for job in &state.incremental {
        let committed = sink
            .positions()
            .into_iter()
            .find(|p| p.table.to_string() == job.table)
            .and_then(|p| p.snapshot_chunk);
        let done = job
            .chunks
            .iter()
            .filter(|c| Some(c.chunk) <= committed)
            .count();
        println!(
            "incremental snapshot of {} ({}{}): {}",
            job.table,
            job.reason,
            if job.filter.is_some() {
                ", filtered"
            } else {
                ""
            },
            if done == 0 {
                "queued".to_string()
            } else {
                format!("in progress, chunk {} committed", committed.unwrap_or(0))
            }
        );
    }
}

async fn mysql_status(settings: &MySettings) -> ExitCode {
    let result: Result<(), PipelineError> = async {
        let mut conn = replication::mysql::catalog::connect(&settings.info).await?;
        let current = replication::mysql::catalog::current_position(&mut conn).await?;
        let state = crate::state::State::load(&settings.lake, &settings.name)
            .ok()
            .flatten();
        let resume = state.as_ref().and_then(|s| s.binlog.clone());
        let lag = match (resume.as_ref().and_then(|r| r.packed()), current.packed()) {
            (Some(r), Some(c)) if r.0 >> 32 == c.0 >> 32 => {
                format!(" lag {} bytes", c.0.saturating_sub(r.0))
            }
            _ => String::new(),
        };
        println!(
            "binlog: server at {current}, pipeline resumes at {}{lag}",
            resume.map_or("- (not started)".into(), |r| r.to_string())
        );
        let sink =
            DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
        if let Some(state) = &state {
            print_incremental(state, &sink);
        }
        let requested =
            crate::state::mailbox_requests(&settings.lake, &settings.name).map_or(0, |r| r.len());
        if requested > 0 {
            println!("snapshot requests waiting for the pipeline to take them: {requested}");
        }
        for p in sink.positions() {
            println!(
                "table {}: delta version {} position {} ({})",
                p.table,
                p.delta_version.map_or("-".into(), |v| v.to_string()),
                p.position
                    .map_or("-".into(), |l| BinlogPosition::unpack(l, &current.file)
                        .to_string()),
                p.path.display()
            );
        }
        print_schema_changes(&settings.lake, &settings.name, |l| {
            BinlogPosition::unpack(l, &current.file).to_string()
        })
        .await?;
        crate::hub::print_status(&settings.lake, &settings.name, &settings.hub_sinks).await;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&error_lines(&e)),
    }
}

/// The schema changes the pipeline's tables followed, oldest first (the schema history table).
async fn print_schema_changes(
    lake: &std::path::Path,
    pipeline: &str,
    position: impl Fn(Lsn) -> String,
) -> Result<(), PipelineError> {
    for r in sinks::delta::SchemaHistory::records(lake).await? {
        if r.pipeline == pipeline {
            println!(
                "schema change of {} at {}: {} ({})",
                r.table,
                position(r.position),
                r.changes,
                r.action
            );
        }
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), for the exit log line and benches.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
