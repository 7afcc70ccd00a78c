//! `sluice`: change-data-capture from PostgreSQL into Delta Lake, exactly once.

mod cli;
mod config;
mod engine;
mod hub;
mod observe;
mod progress;
mod source;
mod state;
mod status;

fn main() -> std::process::ExitCode {
    cli::main()
}
