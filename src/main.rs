//! `sluice`: change-data-capture from PostgreSQL into Delta Lake, exactly once.

mod cli;
mod config;
mod hub;
mod mysql;
mod pipeline;
mod progress;
mod snapshots;
mod state;

fn main() -> std::process::ExitCode {
    cli::main()
}
