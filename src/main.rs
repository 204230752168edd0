//! `cairn`: an etcd-v3-compatible member. Flags are etcd's (`cairn --help`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = cairn::config::Config::parse();
    match cairn::server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
