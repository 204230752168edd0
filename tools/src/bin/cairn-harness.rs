//! `cairn-harness`: cairn's correctness harness. Runs workloads against real
//! members while injecting faults, records the history and checks it
//! (linearizability per key, one global revision order, strict
//! serializability of list-append txns, watch streams, leases, lost writes).
//!
//! ```text
//! cairn-harness run --seconds 60 --seed 7 --dir /tmp/h1          # one member, every fault
//! cairn-harness run --seconds 1800 --dir /tmp/soak --faults kill,pause
//! cairn-harness run --members 3 --seconds 60 --dir /tmp/h3       # 3 members, every cluster fault
//! cairn-harness check /tmp/h1/history.jsonl                       # check a recorded history again
//! ```
//!
//! The report (`report.json`), the history and, for every violation, a
//! timeline picture (`timeline-*.svg`, one lane per client) are in `--dir`.
//! The last line of stdout is one JSON summary; the exit code is 1 when
//! anything was found.

use anyhow::{Context, Result};
use cairn_tools::harness::{self, nemesis::Kind, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "cairn-harness", about = "cairn's correctness harness")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run workloads and faults against real members, then check.
    Run {
        /// The cairn binary, built with `--features failpoints` (default:
        /// `cairn` beside this program).
        #[arg(long)]
        cairn: Option<PathBuf>,
        /// Where the run writes everything (created).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed of the schedule and the clients (default: from the clock;
        /// printed, so a run can be repeated).
        #[arg(long)]
        seed: Option<u64>,
        /// 1, or a cluster of 3 (5, ...) members, each peer link through a
        /// relay the nemesis can cut and slow.
        #[arg(long, default_value_t = 1)]
        members: usize,
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Comma-separated faults; `none` for none. One member: kill,
        /// pause, disk-error, slow-disk, power-loss, disk-full (default:
        /// all of them). A cluster: kill, pause, partition, one-way,
        /// slow-net, disk-error, slow-disk (default: all of them).
        #[arg(long)]
        faults: Option<String>,
        /// Milliseconds between faults, as MIN-MAX.
        #[arg(long, default_value = "1000-3000")]
        fault_gap: String,
        /// Data dirs on the local disk instead of a loop-mounted ext4
        /// (then power-loss and disk-full cannot run). A cluster's always
        /// are.
        #[arg(long)]
        no_loop_disk: bool,
        /// A cluster's --heartbeat-interval (ms).
        #[arg(long, default_value_t = 50)]
        heartbeat_interval: u64,
        /// A cluster's --election-timeout (ms).
        #[arg(long, default_value_t = 500)]
        election_timeout: u64,
        /// A cluster's members reach each other directly, not through the
        /// relays (then partition, one-way and slow-net cannot run).
        #[arg(long)]
        direct_peers: bool,
        /// No watchers (registers and list-append only).
        #[arg(long)]
        no_watchers: bool,
        /// Lease clients: each grants leases, attaches keys on every shard
        /// and keeps them alive, revokes them or lets them expire (0: none).
        #[arg(long, default_value_t = 2)]
        lease_clients: usize,
        /// Seconds the linearizability search may spend per key.
        #[arg(long, default_value_t = 20)]
        check_seconds: u64,
        /// A failpoint set on every member after every start, as
        /// NAME=ACTION (the fail crate's syntax); repeatable.
        #[arg(long)]
        failpoint: Vec<String>,
        /// One more flag for every member (repeatable), e.g.
        /// `--member-arg=--unsafe-no-fsync`.
        #[arg(long, allow_hyphen_values = true)]
        member_arg: Vec<String>,
        /// The members' --snapshot-count.
        #[arg(long, default_value_t = 2000)]
        snapshot_count: u64,
    },
    /// Check a recorded history again.
    Check {
        history: PathBuf,
        #[arg(long, default_value_t = 20)]
        check_seconds: u64,
    },
}

fn limits(seconds: u64) -> cairn_check::linear::Limits {
    cairn_check::linear::Limits {
        per_key: Duration::from_secs(seconds),
        max_steps: seconds.saturating_mul(1_000_000),
        shrink: Duration::from_secs(seconds.min(30)),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    match Args::parse().cmd {
        Cmd::Run {
            cairn,
            dir,
            seconds,
            seed,
            members,
            shards,
            faults,
            fault_gap,
            no_loop_disk,
            heartbeat_interval,
            election_timeout,
            direct_peers,
            no_watchers,
            lease_clients,
            check_seconds,
            failpoint,
            member_arg,
            snapshot_count,
        } => {
            let cairn = match cairn {
                Some(c) => c,
                None => std::env::current_exe()?
                    .parent()
                    .context("this program's directory")?
                    .join("cairn"),
            };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
            eprintln!("cairn-harness: seed {seed}");
            let mut cfg = if members == 1 {
                Config::single(cairn, dir, seconds, seed)
            } else {
                Config::cluster(cairn, dir, members, seconds, seed)
            };
            cfg.shards = shards;
            cfg.heartbeat_ms = heartbeat_interval;
            cfg.election_ms = election_timeout;
            cfg.relays = !direct_peers;
            cfg.watchers = !no_watchers;
            cfg.lease_clients = lease_clients;
            cfg.limits = limits(check_seconds);
            if let Some(f) = faults {
                cfg.faults = if f == "none" {
                    Vec::new()
                } else {
                    f.split(',').map(Kind::parse).collect::<Result<_>>()?
                };
            }
            let (lo, hi) = fault_gap.split_once('-').context("--fault-gap MIN-MAX")?;
            cfg.fault_gap_ms = (lo.parse()?, hi.parse()?);
            if no_loop_disk {
                cfg.loop_disk_mib = None;
            }
            cfg.member_args = member_arg;
            cfg.snapshot_count = snapshot_count;
            for f in failpoint {
                let (name, action) = f.split_once('=').context("--failpoint NAME=ACTION")?;
                cfg.failpoints.push((name.into(), action.into()));
            }
            let summary = harness::run(&cfg)?;
            for f in summary.verdict.findings() {
                println!("{f}");
            }
            for f in harness::lease_findings(&summary.leases) {
                println!("{f}");
            }
            for e in &summary.nemesis_errors {
                println!("nemesis: {e}");
            }
            for s in &summary.stuck {
                println!("stuck: {s}");
            }
            for p in &summary.panics {
                println!("panic: {p}");
            }
            for p in &summary.pictures {
                println!("timeline: {p}");
            }
            println!("history: {}", summary.history.display());
            println!("{}", summary.json(&cfg));
            Ok(summary.clean())
        }
        Cmd::Check {
            history,
            check_seconds,
        } => {
            let file =
                std::fs::File::open(&history).with_context(|| format!("{}", history.display()))?;
            let entries = cairn_check::history::read(std::io::BufReader::new(file))
                .map_err(|e| anyhow::anyhow!("{}: {e}", history.display()))?;
            let verdict = harness::check::check(&entries, &limits(check_seconds));
            let dir = history.parent().unwrap_or(std::path::Path::new("."));
            let mut pictures = harness::check::write_report(dir, &entries, &verdict)?;
            let (leases, more) = harness::check_leases(dir, &entries)?;
            pictures.extend(more);
            for f in verdict.findings() {
                println!("{f}");
            }
            for f in harness::lease_findings(&leases) {
                println!("{f}");
            }
            for p in &pictures {
                println!("timeline: {p}");
            }
            println!(
                "{}",
                serde_json::json!({
                    "ops": verdict.ops, "violations": verdict.violations(),
                    "lost_acknowledged_writes": verdict.lost.len(),
                    "search_timed_out_keys": verdict.timed_out(),
                    "leases": harness::lease_summary(&leases),
                })
            );
            Ok(verdict.violations() == 0
                && leases.valid()
                && verdict.lost.is_empty()
                && verdict.timed_out().is_empty())
        }
    }
}
