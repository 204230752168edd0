//! `cairn`: an etcd-v3-compatible member. Flags are etcd's (`cairn --help`).

use clap::Parser;
use std::process::ExitCode;

// glibc's malloc showed as ~16% of the server's CPU under load (arena locks
// between the front threads and the shard cores, consolidation); mimalloc's
// per-thread heaps avoid both. Measured in bench/RESULTS.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `cairn check-host [--data-dir DIR]`: checks this host (LINUX_REQUIREMENTS.md).
fn check_host(args: &[String]) -> ExitCode {
    let dir = match args {
        [] => std::path::PathBuf::from("default.cairn"),
        [flag, dir] if flag == "--data-dir" => std::path::PathBuf::from(dir),
        _ => {
            eprintln!("usage: cairn check-host [--data-dir DIR]");
            return ExitCode::from(2);
        }
    };
    let checks = cairn::check_host::run(&dir);
    for c in &checks {
        println!(
            "{} {}: {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    // Logs to stderr; `CAIRN_LOG` filters (default: warnings and errors,
    // but only errors from openraft, whose warnings repeat for every message
    // to an unreachable peer; the transport logs a peer going up and down
    // once).
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // A panic on any thread stops the member (as etcd's do): a shard
    // whose task died would leave a member that answers for the cluster
    // and never writes or applies again.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("cairn: stopping after a panic");
        std::process::exit(101);
    }));
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("check-host") {
        return check_host(&args[2..]);
    }
    // Test builds only (cargo feature `failpoints`): failpoints set by the
    // FAILPOINTS variable (`name=action;...`, the fail crate's syntax) and
    // through `/failpoints` on the client port while running.
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        eprintln!("cairn: WARNING: built with failpoints (a test build)");
        fail::FailScenario::setup()
    };
    let mut cfg = cairn::config::Config::parse();
    for warning in cfg.apply_deprecated_env(|k| std::env::var(k).ok()) {
        eprintln!("cairn: warning: {warning}");
    }
    match cairn::server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}
