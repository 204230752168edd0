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
//! - [`recorder`]: the history writer; [`members`]: member processes and
//!   the loop disk; [`workload`]: the clients; [`nemesis`]: the faults;
//!   [`check`]: the verdict.

pub mod check;
pub mod members;
pub mod nemesis;
pub mod netns;
pub mod recorder;
pub mod relay;
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
    /// Members (1 until clusters exist).
    pub members: usize,
    pub shards: usize,
    /// How long the workloads and faults run.
    pub seconds: u64,
    pub seed: u64,
    pub register_clients: usize,
    pub register_keys: usize,
    pub append_clients: usize,
    pub append_keys: usize,
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
            watchers: true,
            faults: Kind::ALL.to_vec(),
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
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Summary {
    pub verdict: check::Verdict,
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
}

impl Summary {
    /// Nothing found: no violation, nothing lost, no nemesis error, every
    /// search finished.
    pub fn clean(&self) -> bool {
        self.verdict.violations() == 0
            && self.verdict.lost.is_empty()
            && self.nemesis_errors.is_empty()
            && self.stuck.is_empty()
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
            "watch_events": self.verdict.watch.events,
            "txns": self.verdict.append.txns,
        })
    }
}

/// Runs the harness: see the module docs.
pub fn run(cfg: &Config) -> Result<Summary> {
    if cfg.members != 1 {
        bail!(
            "--members {}: cairn runs one member until clusters exist",
            cfg.members
        );
    }
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("{}", cfg.dir.display()))?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let needs_disk = cfg.faults.iter().any(|k| k.needs_disk());
    let mut disk = match cfg.loop_disk_mib {
        Some(mib) => {
            members::loop_disks_available()
                .map_err(|why| anyhow::anyhow!("a loop disk is needed ({why})"))?;
            Some(LoopDisk::create(&cfg.dir, mib)?)
        }
        None if needs_disk => bail!("power-loss and disk-full need a loop disk"),
        None => None,
    };
    let data_root = disk.as_ref().map_or(cfg.dir.clone(), |d| d.mount.clone());
    let mut args = vec![
        "--shards".to_string(),
        cfg.shards.to_string(),
        // Small segments and frequent snapshots: rotation, reclaim and
        // snapshot installs happen within a short run.
        "--wal-segment-bytes".into(),
        "65536".into(),
        "--snapshot-count".into(),
        cfg.snapshot_count.to_string(),
    ];
    args.extend(cfg.member_args.iter().cloned());
    let port = crate::ports::free_port();
    let mut member = Member::new(
        &cfg.cairn,
        "m0",
        port,
        data_root.join("m0"),
        cfg.dir.join("member-m0.log"),
        args,
    );
    member.failpoints = cfg.failpoints.clone();
    member.start()?;

    let history = cfg.dir.join("history.jsonl");
    let (recorder, writer) = Recorder::create(&history)?;
    let recorder = Arc::new(recorder);
    let ctx = Arc::new(Ctx {
        recorder: recorder.clone(),
        endpoints: vec![member.url()],
        stop: AtomicBool::new(false),
        max_revision: AtomicI64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(cfg.seconds);
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
    let mut watchers = Vec::new();
    if cfg.watchers {
        let specs = [
            ("r", "s", 1),   // the registers, from the beginning
            ("\0", "\0", 0), // every key, from now
            ("a", "b", 0),   // the lists, from now
        ];
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

    // The nemesis runs here until the deadline.
    let mut schedule = nemesis::Schedule::new(cfg.faults.clone());
    let mut nemesis_errors = Vec::new();
    loop {
        let gap = Duration::from_millis(rng.random_range(cfg.fault_gap_ms.0..=cfg.fault_gap_ms.1));
        if Instant::now() + gap >= deadline {
            break;
        }
        std::thread::sleep(gap);
        let Some(kind) = schedule.next(&mut rng) else {
            break;
        };
        // A member may stop on its own after a fault (e.g. a snapshot that
        // could not be written once the disk was full): it must stop
        // non-zero, and is restarted before the next fault.
        if let Some(status) = member.try_exit() {
            let since = recorder.now_us();
            let found = "found before the next fault";
            if !nemesis::restart_stopped(
                &mut member,
                status,
                since,
                found,
                &recorder,
                &mut nemesis_errors,
            ) {
                break;
            }
        }
        match nemesis::inject(kind, &mut member, disk.as_mut(), &mut rng, &recorder) {
            Ok(nemesis::Injected::Done(detail)) => {
                eprintln!("cairn-harness: {}: {detail}", kind.name())
            }
            // Stopping on its own when the fault came: a recovery, not an
            // error; the next fault comes on the restarted member.
            Ok(nemesis::Injected::MemberStopped {
                status,
                since_us,
                why,
            }) => {
                let found = format!("{} not injected: {why}", kind.name());
                eprintln!("cairn-harness: {found}");
                if !nemesis::restart_stopped(
                    &mut member,
                    status,
                    since_us,
                    &found,
                    &recorder,
                    &mut nemesis_errors,
                ) {
                    break;
                }
            }
            Err(e) => {
                let e = format!("{}: {e:#}", kind.name());
                eprintln!("cairn-harness: nemesis error: {e}");
                nemesis_errors.push(e);
                // Heal what can be healed and go on.
                if let Some(d) = disk.as_mut() {
                    let _ = d.unfill();
                }
                if member.try_exit().is_some() || !member.running() {
                    if let Err(e) = member.start() {
                        nemesis_errors.push(format!("restart: {e:#}"));
                        break;
                    }
                }
            }
        }
    }
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    if !member.running() || member.try_exit().is_some() {
        // A member that does not come back (e.g. it refuses its data dir
        // after a power loss) is a finding; the history is still checked.
        if let Err(e) = member.start() {
            nemesis_errors.push(format!("start after the faults: {e:#}"));
        }
    }
    ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let up = member.running();
    let stuck = rt.block_on(async {
        for c in clients {
            let _ = c.await;
        }
        if !up {
            for w in watchers {
                w.abort();
            }
            return Ok(vec!["the member is down: no final reads".to_string()]);
        }
        // The final reads: every key, linearizable, after every fault.
        let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::new(
            tonic::transport::Endpoint::from_shared(member.url())?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy(),
        );
        let mut stuck = Vec::new();
        for key in &register_keys {
            if workload::get(&ctx, &mut kv, check::FINAL_CLIENT, key)
                .await
                .is_none()
            {
                stuck.push(format!("the final read of {key} got no answer"));
            }
        }
        for key in &append_keys {
            let read = vec![cairn_check::history::Micro::R { key: key.clone() }];
            if !workload::append_txn(&ctx, &mut kv, check::FINAL_CLIENT, read).await {
                stuck.push(format!("the final read of {key} got no answer"));
            }
        }
        for w in watchers {
            let _ = w.await;
        }
        Ok::<_, anyhow::Error>(stuck)
    })?;
    member.stop(Duration::from_secs(30));
    drop(ctx);
    drop(rt);
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| anyhow::anyhow!("a client still holds the recorder"))?;
    drop(recorder);
    writer.finish().context("writing the history")?;
    let mut exits = BTreeMap::new();
    exits.insert(member.name.clone(), member.exits.clone());
    drop(member);
    drop(disk.take());

    let entries =
        cairn_check::history::read(std::io::BufReader::new(std::fs::File::open(&history)?))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", history.display()))?;
    let verdict = check::check(&entries, &cfg.limits);
    let pictures = check::write_report(&cfg.dir, &entries, &verdict)?;
    Ok(Summary {
        verdict,
        nemesis_errors,
        history,
        pictures,
        exits,
        stuck,
    })
}
