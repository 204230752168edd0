//! `cairn`: an etcd-v3-compatible member. Flags are etcd's (`cairn --help`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Logs to stderr; `CAIRN_LOG` filters (default: warnings and errors).
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = cairn::config::Config::parse();
    match cairn::server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
