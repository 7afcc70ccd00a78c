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
use sinks::hub::{HubPosition, Until as HubUntil};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MySettings, Validated};
use crate::engine::{PipelineError, Source};
use crate::state::State;
use crate::status::{Report, SourceStatus};
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
    /// Show slot lag, snapshots, each table's Delta version and position, and each hub sink.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print one JSON document instead of text lines (fields: README, "sluice status --json").
        #[arg(long)]
        json: bool,
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
            Command::Status { config, json } => status(config, json).await,
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

async fn status(config: PathBuf, json: bool) -> ExitCode {
    let settings = match validated(config) {
        Ok(Validated::Postgres(s)) => s,
        Ok(Validated::Mysql(m)) => return print_report(mysql_status(&m).await, json),
        Err(code) => return code,
    };
    let report: Result<Report, PipelineError> = async {
        let client = catalog::connect(&settings.conninfo).await?;
        let slot = catalog::slot_status(&client, &settings.slot).await?;
        let source = SourceStatus::Postgres {
            slot: settings.slot.clone(),
            created: slot.is_some(),
            confirmed_flush: slot
                .as_ref()
                .and_then(|s| s.confirmed_flush)
                .map(|l| l.to_string()),
            lag_bytes: slot.as_ref().and_then(|s| s.lag_bytes),
            streaming: slot.as_ref().is_some_and(|s| s.active),
        };
        let state = State::load(&settings.lake, &settings.name).map_err(|e| e.to_string());
        let mut report = Report::gather(
            &settings.lake,
            &settings.name,
            &settings.tables,
            source,
            &state,
            &settings.hub_sinks,
            |l| l.to_string(),
        )
        .await?;
        report.initial_snapshot = Some(Report::initial_snapshot(&state));
        Ok(report)
    }
    .await;
    print_report(report, json)
}

/// Prints a status report (or the error that prevented it).
fn print_report(report: Result<Report, PipelineError>, json: bool) -> ExitCode {
    match report {
        Ok(r) if json => match serde_json::to_string_pretty(&r) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&[format!("cannot write the status as JSON: {e}")]),
        },
        Ok(r) => {
            r.print_text();
            ExitCode::SUCCESS
        }
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
/// The status of a MySQL/MariaDB pipeline.
async fn mysql_status(settings: &MySettings) -> Result<Report, PipelineError> {
    let mut conn = replication::mysql::catalog::connect(&settings.info).await?;
    let current = replication::mysql::catalog::current_position(&mut conn).await?;
    let state = State::load(&settings.lake, &settings.name).map_err(|e| e.to_string());
    let resume = state
        .as_ref()
        .ok()
        .and_then(|s| s.as_ref())
        .and_then(|s| s.binlog.clone());
    let lag_bytes = match &resume {
        Some(r) => replication::mysql::catalog::bytes_behind(&mut conn, r).await?,
        None => None,
    };
    let source = SourceStatus::Mysql {
        server_position: current.to_string(),
        resume_position: resume.map(|r| r.to_string()),
        lag_bytes,
    };
    Report::gather(
        &settings.lake,
        &settings.name,
        &settings.tables,
        source,
        &state,
        &settings.hub_sinks,
        |l| BinlogPosition::unpack(l, &current.file).to_string(),
    )
    .await
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
