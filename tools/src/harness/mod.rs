//! The correctness harness behind `cairn-harness`: workloads that record
//! histories against real `cairn` members while a nemesis injects faults,
//! then the checkers of `cairn_check` over the history.
//!
//! A run: start the members (optionally with their data dirs on a loop
//! disk), start the clients and watchers, inject faults on a seeded schedule
//! until the deadline, heal everything, make the final reads (every key, as
//! client [`check::FINAL_CLIENT`]), let the watchers catch up, stop the
//! members, check. Everything it writes is in the run's directory:
//! `history.jsonl`, `report.json`, `timeline-*.svg` for violations,
//! `member-*.log`.
//!
//! A cluster run (`--members 3`) is the same with N members planned by
//! `crate::cluster::LocalCluster` (`--shards 2`, small WAL segments,
//! `--heartbeat-interval 50 --election-timeout 500` by default), each
//! member's peer port behind a UDP relay ([`peernet`]) so that the nemesis
//! can partition the members and slow their links; the clients get every
//! member's URL (and move to the next one on an error); the cluster faults
//! aim at the write leader half the time; the final reads wait until the
//! members agree on a leader. Data dirs are on the local disk.
//!
//! - [`recorder`]: the history writer; [`members`]: member processes and
//!   the loop disk; [`cluster`]: the members of a cluster run;
//!   [`peernet`] and [`relay`]: the links between them; [`workload`]: the
//!   clients; [`leases`]: the lease clients; [`nemesis`]: the faults; [`check`]: the verdict; `single`
//!   and `clustered`: the two kinds of run.

pub mod check;
pub mod cluster;
mod clustered;
pub mod leases;
pub mod members;
pub mod nemesis;
pub mod netns;
pub mod peernet;
pub mod recorder;
pub mod relay;
mod single;
pub mod workload;

use anyhow::{bail, Context, Result};
use members::{LoopDisk, Member};
use nemesis::Kind;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use recorder::Recorder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Ctx, WatchSpec};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `cairn` binary (a build with the `failpoints` feature for the
    /// disk faults).
    pub cairn: PathBuf,
    /// The run's directory (created; histories, reports, data dirs).
    pub dir: PathBuf,
    /// Members: 1, or a cluster of an odd number from 3.
    pub members: usize,
    pub shards: usize,
    /// How long the workloads and faults run.
    pub seconds: u64,
    pub seed: u64,
    pub register_clients: usize,
    pub register_keys: usize,
    pub append_clients: usize,
    pub append_keys: usize,
    /// Lease clients (grant, attach keys, keep alive, revoke or let expire);
    /// 0: none.
    pub lease_clients: usize,
    pub watchers: bool,
    pub faults: Vec<Kind>,
    /// Time between faults, ms (uniform in the range).
    pub fault_gap_ms: (u64, u64),
    /// Put the data dirs on a loop-mounted ext4 of this many MiB (root).
    pub loop_disk_mib: Option<u64>,
    /// Limits of the linearizability search.
    pub limits: cairn_check::linear::Limits,
    /// More flags for every member.
    pub member_args: Vec<String>,
    /// Failpoints (name, action) set on every member after every start.
    pub failpoints: Vec<(String, String)>,
    /// The members' `--snapshot-count` (small: snapshots and log purges
    /// happen within a short run).
    pub snapshot_count: u64,
    /// A cluster's `--heartbeat-interval` and `--election-timeout` (ms);
    /// a single member keeps cairn's defaults.
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// A cluster's members reach each other through relays (false: directly,
    /// and the network faults cannot run).
    pub relays: bool,
}

impl Config {
    /// A bounded single-member run with every single-member fault.
    pub fn single(cairn: PathBuf, dir: PathBuf, seconds: u64, seed: u64) -> Self {
        Config {
            cairn,
            dir,
            members: 1,
            shards: 2,
            seconds,
            seed,
            register_clients: 6,
            register_keys: 6,
            append_clients: 3,
            append_keys: 6,
            lease_clients: 2,
            watchers: true,
            faults: Kind::SINGLE.to_vec(),
            fault_gap_ms: (1000, 3000),
            loop_disk_mib: Some(192),
            limits: cairn_check::linear::Limits {
                per_key: Duration::from_secs(20),
                max_steps: 20_000_000,
                shrink: Duration::from_secs(10),
            },
            member_args: Vec::new(),
            failpoints: Vec::new(),
            snapshot_count: 2000,
            heartbeat_ms: 50,
            election_ms: 500,
            relays: true,
        }
    }

    /// A bounded run of a cluster of `members` (3, 5...) under every
    /// cluster fault; data dirs on the local disk.
    pub fn cluster(cairn: PathBuf, dir: PathBuf, members: usize, seconds: u64, seed: u64) -> Self {
        Config {
            members,
            // Fewer clients than one member gets: the members share this
            // machine's cores with them.
            register_clients: 4,
            register_keys: 5,
            append_clients: 2,
            append_keys: 6,
            faults: Kind::CLUSTER.to_vec(),
            loop_disk_mib: None,
            ..Config::single(cairn, dir, seconds, seed)
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Summary {
    pub verdict: check::Verdict,
    /// The lease checker's verdict (beside `verdict`, which predates it).
    pub leases: cairn_check::leases::Report,
    /// Faults that could not be injected or healed (e.g. a member that did
    /// not come back): each is a finding too. A fault not injected because
    /// the member was stopping on its own is not one: the member is
    /// restarted and the history has a `recovery` instead.
    pub nemesis_errors: Vec<String>,
    pub history: PathBuf,
    pub pictures: Vec<String>,
    /// How each member's incarnations ended (exit statuses).
    pub exits: BTreeMap<String, Vec<String>>,
    /// Requests after the faults were healed that got no answer (a member
    /// that stopped making progress).
    pub stuck: Vec<String>,
    /// Panics in the members' logs (cluster runs), one line each with the
    /// member and the panic's message.
    pub panics: Vec<String>,
}

impl Summary {
    /// Nothing found: no violation, nothing lost, no nemesis error, every
    /// search finished.
    pub fn clean(&self) -> bool {
        self.verdict.violations() == 0
            && self.leases.valid()
            && self.verdict.lost.is_empty()
            && self.nemesis_errors.is_empty()
            && self.stuck.is_empty()
            && self.panics.is_empty()
            && self.verdict.timed_out().is_empty()
    }

    /// One JSON line for the record (bench/RESULTS.md).
    pub fn json(&self, cfg: &Config) -> serde_json::Value {
        serde_json::json!({
            "members": cfg.members,
            "shards": cfg.shards,
            "seconds": cfg.seconds,
            "seed": cfg.seed,
            "ops": self.verdict.ops,
            "ok": self.verdict.ok,
            "failed": self.verdict.failed,
            "unknown": self.verdict.unknown,
            "faults": self.verdict.faults,
            "violations": self.verdict.violations(),
            "lost_acknowledged_writes": self.verdict.lost.len(),
            "search_timed_out_keys": self.verdict.timed_out(),
            "nemesis_errors": self.nemesis_errors,
            "stuck": self.stuck,
            "panics": self.panics,
            "watch_events": self.verdict.watch.events,
            "txns": self.verdict.append.txns,
            "leases": lease_summary(&self.leases),
        })
    }
}

/// The lease checker's counts, for the JSON summaries.
pub fn lease_summary(r: &cairn_check::leases::Report) -> serde_json::Value {
    serde_json::json!({
        "leases": r.leases,
        "revoked": r.revoked,
        "expired": r.expired,
        "never_deleted": r.never_deleted,
        "revoked_not_deleted": r.revoked_not_deleted,
        "renewals": r.renewals,
        "violations": r.violations.len() + r.suppressed,
    })
}

/// One line per lease violation, for people.
pub fn lease_findings(r: &cairn_check::leases::Report) -> Vec<String> {
    r.violations
        .iter()
        .map(|v| {
            format!(
                "leases, {}: {} (ops {:?}; events {})",
                v.rule,
                v.message,
                v.ops,
                v.events.join(", ")
            )
        })
        .collect()
}

/// Runs the lease checker over `entries`, adds its report to `dir`'s
/// `report.json` (under `leases`; [`check::write_report`] wrote the rest)
/// and draws a timeline per violation (the first 5); the report and the
/// pictures' paths.
pub fn check_leases(
    dir: &std::path::Path,
    entries: &[cairn_check::history::Entry],
) -> Result<(cairn_check::leases::Report, Vec<String>)> {
    let report = cairn_check::leases::check(entries);
    let path = dir.join("report.json");
    let mut json: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).context("report.json")?,
        Err(_) => serde_json::json!({}),
    };
    if let Some(o) = json.as_object_mut() {
        o.insert("leases".into(), serde_json::to_value(&report)?);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    let mut pictures = Vec::new();
    for (i, v) in report.violations.iter().enumerate().take(5) {
        let (from, to) = cairn_check::timeline::window_bounds(entries, &v.ops);
        let path = dir.join(format!("timeline-leases-{i}-{}.svg", v.rule));
        std::fs::write(&path, cairn_check::timeline::svg(entries, &v.ops, from, to))?;
        pictures.push(path.display().to_string());
    }
    Ok((report, pictures))
}

/// Runs the harness: see the module docs.
pub fn run(cfg: &Config) -> Result<Summary> {
    match cfg.members {
        1 => single::run_single(cfg),
        n if n >= 3 && n % 2 == 1 => clustered::run_cluster(cfg),
        n => bail!("--members {n}: 1, or an odd number from 3 (a majority must survive a fault)"),
    }
}

/// The clients and watchers of a run, started by [`start_workload`].
struct Workload {
    clients: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    register_keys: Vec<String>,
    append_keys: Vec<String>,
}

/// Starts the register and list-append clients and the watchers on `rt`,
/// until `deadline` (each client's seed drawn from `rng`).
fn start_workload(
    cfg: &Config,
    rng: &mut StdRng,
    ctx: &Arc<Ctx>,
    rt: &tokio::runtime::Runtime,
    deadline: Instant,
) -> Workload {
    let register_keys = workload::register_keys(cfg.register_keys);
    let append_keys = workload::append_keys(cfg.append_keys);
    let mut clients = Vec::new();
    for c in 0..cfg.register_clients {
        let seed = rng.random();
        clients.push(rt.spawn(workload::register_client(
            ctx.clone(),
            c as u32,
            register_keys.clone(),
            StdRng::seed_from_u64(seed),
            deadline,
        )));
    }
    for c in 0..cfg.append_clients {
        let seed = rng.random();
        clients.push(rt.spawn(workload::append_client(
            ctx.clone(),
            (cfg.register_clients + c) as u32,
            append_keys.clone(),
            StdRng::seed_from_u64(seed),
            deadline,
        )));
    }
    let catch_up = Duration::from_secs(30);
    let ids = Arc::new(AtomicU32::new(0));
    for c in 0..cfg.lease_clients {
        let seed = rng.random();
        clients.push(rt.spawn(leases::lease_client(
            ctx.clone(),
            (cfg.register_clients + cfg.append_clients + c) as u32,
            cfg.shards,
            StdRng::seed_from_u64(seed),
            deadline,
        )));
    }
    let mut watchers = Vec::new();
    if cfg.watchers {
        let mut specs = vec![
            ("r", "s", 1),   // the registers, from the beginning
            ("\0", "\0", 0), // every key, from now
            ("a", "b", 0),   // the lists, from now
        ];
        if cfg.lease_clients > 0 {
            specs.push(("l/", "l0", 1)); // the lease keys, from the beginning
        }
        for (i, (key, end, from)) in specs.into_iter().enumerate() {
            let spec = WatchSpec {
                key: key.into(),
                range_end: end.into(),
                start_revision: from,
            };
            watchers.push(rt.spawn(workload::watcher(
                ctx.clone(),
                spec,
                ids.clone(),
                i,
                catch_up,
            )));
        }
        // One more, half way, from a revision in the past.
        let (ctx2, ids2) = (ctx.clone(), ids.clone());
        let half = Duration::from_secs(cfg.seconds) / 2;
        watchers.push(rt.spawn(async move {
            tokio::time::sleep(half).await;
            let from = (ctx2.max_revision.load(std::sync::atomic::Ordering::Relaxed) / 2).max(1);
            let spec = WatchSpec {
                key: "\0".into(),
                range_end: "\0".into(),
                start_revision: from,
            };
            workload::watcher(ctx2, spec, ids2, 3, catch_up).await;
        }));
    }
    Workload {
        clients,
        watchers,
        register_keys,
        append_keys,
    }
}

/// The history, the recorder and its writer, and the clients' context.
fn record(cfg: &Config, endpoints: Vec<String>) -> Result<(PathBuf, Arc<Ctx>, recorder::Writer)> {
    let history = cfg.dir.join("history.jsonl");
    let (recorder, writer) = Recorder::create(&history)?;
    let ctx = Arc::new(Ctx {
        recorder: Arc::new(recorder),
        endpoints,
        stop: AtomicBool::new(false),
        max_revision: AtomicI64::new(0),
    });
    Ok((history, ctx, writer))
}

/// The clients' runtime: two threads (this machine may have two cores,
/// and the members need them).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// What a run found besides the history's verdict (see [`Summary`]).
struct Found {
    nemesis_errors: Vec<String>,
    exits: BTreeMap<String, Vec<String>>,
    stuck: Vec<String>,
    panics: Vec<String>,
}

/// After the run: the history written out and checked.
fn finish(
    cfg: &Config,
    history: PathBuf,
    ctx: Arc<Ctx>,
    writer: recorder::Writer,
    found: Found,
) -> Result<Summary> {
    let Found {
        nemesis_errors,
        exits,
        stuck,
        panics,
    } = found;
    let recorder = Arc::try_unwrap(ctx)
        .map_err(|_| anyhow::anyhow!("a client still holds the context"))?
        .recorder;
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("a client still holds the recorder"))?;
    drop(recorder);
    writer.finish().context("writing the history")?;
    let entries =
        cairn_check::history::read(std::io::BufReader::new(std::fs::File::open(&history)?))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", history.display()))?;
    let verdict = check::check(&entries, &cfg.limits);
    let mut pictures = check::write_report(&cfg.dir, &entries, &verdict)?;
    let (leases, more) = check_leases(&cfg.dir, &entries)?;
    pictures.extend(more);
    Ok(Summary {
        verdict,
        leases,
        nemesis_errors,
        history,
        pictures,
        exits,
        stuck,
        panics,
    })
}

/// Waits a random gap (`cfg.fault_gap_ms`) and draws the next fault; None
/// once the deadline would pass first (or the schedule has none left).
fn next_fault(
    cfg: &Config,
    rng: &mut StdRng,
    schedule: &mut nemesis::Schedule,
    deadline: Instant,
) -> Option<Kind> {
    let gap = Duration::from_millis(rng.random_range(cfg.fault_gap_ms.0..=cfg.fault_gap_ms.1));
    if Instant::now() + gap >= deadline {
        return None;
    }
    std::thread::sleep(gap);
    schedule.next(rng)
}

/// The panics in the members' logs (`dir/member-NAME.log`): the member,
/// the thread and place, and the message.
fn panics_in_logs(dir: &std::path::Path, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let Ok(log) = std::fs::read_to_string(dir.join(format!("member-{name}.log"))) else {
            continue;
        };
        let mut lines = log.lines();
        while let Some(line) = lines.next() {
            if line.starts_with("thread '") && line.contains("panicked at") {
                let message = lines.next().unwrap_or_default();
                out.push(format!("{name}: {line} {message}"));
            }
        }
    }
    out
}

/// How long the final reads wait for a member to say it is healthy after
/// the last fault.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// How often a final read of a cluster run is tried.
const FINAL_TRIES: usize = 4;
