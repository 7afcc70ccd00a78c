//! Command line: `sluice check | run | status --config FILE`.
//!
//! Errors print as `error: <problem>: <fix>`, one line each, and exit non-zero; nothing is
//! created when a check fails. Secrets and row values never reach the output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use replication::postgres::catalog;
use replication::postgres::source::SourceExit;
use sinks::delta::DeltaSink;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings};
use crate::pipeline;

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
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,sluice=info,replication=info,sinks=info")
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

fn settings(path: PathBuf) -> Result<Settings, ExitCode> {
    Config::load(&path)
        .and_then(Config::validate)
        .map_err(|problems| fail(&problems))
}

fn error_lines(e: &pipeline::PipelineError) -> Vec<String> {
    match e {
        pipeline::PipelineError::Source(replication::Error::Preflight { problems }) => {
            problems.clone()
        }
        other => vec![other.to_string()],
    }
}

async fn check(config: PathBuf) -> ExitCode {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = async {
        let client = catalog::connect(&settings.conninfo).await?;
        catalog::preflight(
            &client,
            &catalog::Requirements {
                slot: &settings.slot,
                tables: &settings.tables,
            },
        )
        .await
    }
    .await;
    match result {
        Ok(problems) if problems.is_empty() => {
            println!(
                "ok: {} table(s) ready to replicate through slot {}",
                settings.tables.len(),
                settings.slot
            );
            ExitCode::SUCCESS
        }
        Ok(problems) => fail(&problems),
        Err(e) => fail(&error_lines(&e.into())),
    }
}

async fn run(config: PathBuf, until_caught_up: bool) -> ExitCode {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(cancel.clone()));
    match pipeline::run(&settings, until_caught_up, cancel).await {
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

async fn status(config: PathBuf) -> ExitCode {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result: Result<(), pipeline::PipelineError> = async {
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
        match crate::state::State::load(&settings.lake, &settings.name) {
            Ok(Some(state)) => println!(
                "initial snapshot: {}{}",
                match state.snapshot {
                    crate::state::SnapshotState::Pending => "in progress or interrupted",
                    crate::state::SnapshotState::Done => "done",
                },
                state
                    .consistent_point
                    .map(|p| format!(" (consistent point {p})"))
                    .unwrap_or_default()
            ),
            Ok(None) => println!("initial snapshot: none"),
            Err(e) => println!("initial snapshot: state unreadable ({e})"),
        }
        let sink =
            DeltaSink::open_read_only(&settings.lake, &settings.name, &settings.tables).await?;
        for p in sink.positions() {
            println!(
                "table {}: delta version {} position {} ({})",
                p.table,
                p.delta_version.map_or("-".into(), |v| v.to_string()),
                p.position.map_or("-".into(), |l| l.to_string()),
                p.path.display()
            );
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&error_lines(&e)),
    }
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
