//! The correctness harness's workloads against three members in one process
//! (`common::cluster`, the in-memory channel transport): register,
//! list-append and lease clients and watchers spread over all three members while the
//! test thread injects a fixed, bounded schedule of cluster faults: the write
//! leader isolated, one link cut one way, a slow and lossy network, a
//! follower stopped and restarted, the leader stopped and restarted. Then
//! everything is healed, the final reads are made (client `FINAL_CLIENT`) and
//! every checker of the harness runs over the history: per-key
//! linearizability, the revision rules, list-append (Elle-style), the watch
//! streams, the leases (keys deleted together, no kept-alive lease
//! expired), and no acknowledged write lost.
//!
//! `CAIRN_CLUSTER_SEED` replays a seed (each run prints its own). When the
//! test fails, its directory (history.jsonl, report.json, timelines) is kept
//! and printed.
//!
//! `cairn_check` is not a dependency of this crate, so its types (`Entry`,
//! `Micro`, `Limits`) are never named here: they are built from their JSON
//! form (the history format) or taken from the harness, and inferred.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_tools::harness;
use cairn_tools::harness::check::{self, FINAL_CLIENT};
use cairn_tools::harness::recorder::Recorder;
use cairn_tools::harness::workload::{self, Ctx, WatchSpec};
use common::cluster::{Cluster, MEMBERS};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the clients run (the faults come within it).
const RUN: Duration = Duration::from_secs(40);
const REGISTER_CLIENTS: usize = 4;
const REGISTER_KEYS: usize = 5;
const APPEND_CLIENTS: usize = 2;
const APPEND_KEYS: usize = 4;
/// Lease clients (`harness::leases`), their keys on both shards.
const LEASE_CLIENTS: usize = 2;
const SHARDS: usize = 2;
/// How long a fault lasts, and the quiet time between two.
const FAULT: Duration = Duration::from_secs(3);
const GAP: Duration = Duration::from_secs(2);
/// Bound on every wait for a leader, for the clients to stop, for the final
/// reads, and for the watchers to catch up.
const WAIT: Duration = Duration::from_secs(20);

/// Keeps the test's directory (and says where) when the test panics.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl KeepOnFailure {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("the directory").path()
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                let kept = dir.keep();
                eprintln!(
                    "the history is kept: {}",
                    kept.join("history.jsonl").display()
                );
            }
        }
    }
}

/// The running member that stamps writes, once there is exactly one (among
/// those not in `except`), within `limit`.
fn leader_within(c: &Cluster, except: &[usize], limit: Duration) -> Option<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let leaders: Vec<usize> = (0..MEMBERS)
            .filter(|i| !except.contains(i))
            .filter(|i| {
                c.members[*i]
                    .as_ref()
                    .is_some_and(|m| m.member.seq.leading())
            })
            .collect();
        if let [one] = leaders[..] {
            return Some(one);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Records a fault that began at `at_us` and is healed now. The entry is
/// built from its JSON form (`cairn_check::history::Fault`).
fn record_fault(rec: &Recorder, at_us: u64, fault: &str, target: String, detail: String) {
    eprintln!("nemesis: {fault} {target}: {detail}");
    let entry = serde_json::json!({
        "kind": "fault",
        "at_us": at_us,
        "until_us": rec.now_us(),
        "fault": fault,
        "target": target,
        "detail": detail,
    });
    rec.record(serde_json::from_value(entry).expect("a fault entry"));
}

fn name(i: usize) -> String {
    format!("m{i}")
}

/// The fixed fault schedule; errors (no leader in time) are collected, the
/// schedule goes on after healing.
fn nemesis(c: &mut Cluster, rec: &Recorder, errors: &mut Vec<String>) {
    fn leader(c: &Cluster, what: &str, errors: &mut Vec<String>) -> Option<usize> {
        let l = leader_within(c, &[], WAIT);
        if l.is_none() {
            errors.push(format!("no single write leader within {WAIT:?} {what}"));
        }
        l
    }
    std::thread::sleep(GAP);

    // 1. The write leader cut off from both others.
    if let Some(l) = leader(c, "before isolating it", errors) {
        let at = rec.now_us();
        c.net.isolate(c.id(l));
        std::thread::sleep(FAULT);
        c.net.heal();
        let detail = format!("the write leader isolated for {FAULT:?}");
        record_fault(rec, at, "partition", name(l), detail);
    }
    std::thread::sleep(GAP);

    // 2. One link cut one way: the leader's frames to one follower are lost.
    if let Some(l) = leader(c, "before cutting a link", errors) {
        let f = (l + 1) % MEMBERS;
        let at = rec.now_us();
        c.net.cut(c.id(l), c.id(f));
        std::thread::sleep(FAULT);
        c.net.heal();
        let detail = format!("frames m{l} -> m{f} lost for {FAULT:?} (the other way works)");
        record_fault(rec, at, "partition-one-way", format!("m{l}->m{f}"), detail);
    }
    std::thread::sleep(GAP);

    // 3. A slow, reordering, lossy network between all members.
    let at = rec.now_us();
    c.net
        .degrade(Duration::from_millis(20), Duration::from_millis(10), 0.05);
    std::thread::sleep(Duration::from_secs(5));
    c.net.degrade(Duration::ZERO, Duration::ZERO, 0.0);
    let detail = "20 ms delay + 0..10 ms jitter, 5% loss, for 5 s".to_string();
    record_fault(rec, at, "delay", "all".into(), detail);
    std::thread::sleep(GAP);

    // 4. A follower stopped, then restarted.
    if let Some(l) = leader(c, "before stopping a follower", errors) {
        let f = (l + 2) % MEMBERS;
        let at = rec.now_us();
        c.stop(f);
        std::thread::sleep(FAULT);
        c.restart(f);
        let detail = format!("a follower stopped for {FAULT:?}, restarted");
        record_fault(rec, at, "stop", name(f), detail);
    }
    std::thread::sleep(GAP);

    // 5. The write leader stopped, then restarted.
    if let Some(l) = leader(c, "before stopping it", errors) {
        let at = rec.now_us();
        c.stop(l);
        std::thread::sleep(FAULT);
        c.restart(l);
        let detail = format!("the write leader stopped for {FAULT:?}, restarted");
        record_fault(rec, at, "stop", name(l), detail);
    }
}

#[test]
fn three_members_under_cluster_faults_are_linearizable_and_lose_nothing() {
    let began = Instant::now();
    let seed = common::seed("CAIRN_CLUSTER_SEED");
    let dir = KeepOnFailure(Some(
        tempfile::Builder::new()
            .prefix("cluster-correctness-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir"),
    ));
    let history = dir.path().join("history.jsonl");
    let mut c = Cluster::start(seed, &[]);
    let urls: Vec<String> = (0..MEMBERS).map(|i| c.url(i)).collect();

    let (recorder, writer) = Recorder::create(&history).expect("the history file");
    let recorder = Arc::new(recorder);
    let ctx = Arc::new(Ctx {
        recorder: recorder.clone(),
        endpoints: urls.clone(),
        stop: AtomicBool::new(false),
        max_revision: AtomicI64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the clients' runtime");
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + RUN;
    let register_keys = workload::register_keys(REGISTER_KEYS);
    let append_keys = workload::append_keys(APPEND_KEYS);
    let mut clients = Vec::new();
    for client in 0..REGISTER_CLIENTS {
        clients.push(rt.spawn(workload::register_client(
            ctx.clone(),
            client as u32,
            register_keys.clone(),
            StdRng::seed_from_u64(rng.random()),
            deadline,
        )));
    }
    for client in REGISTER_CLIENTS..REGISTER_CLIENTS + APPEND_CLIENTS {
        clients.push(rt.spawn(workload::append_client(
            ctx.clone(),
            client as u32,
            append_keys.clone(),
            StdRng::seed_from_u64(rng.random()),
            deadline,
        )));
    }
    let first_lease_client = REGISTER_CLIENTS + APPEND_CLIENTS;
    for client in first_lease_client..first_lease_client + LEASE_CLIENTS {
        clients.push(rt.spawn(harness::leases::lease_client(
            ctx.clone(),
            client as u32,
            SHARDS,
            StdRng::seed_from_u64(rng.random()),
            deadline,
        )));
    }
    let ids = Arc::new(AtomicU32::new(0));
    let specs = [
        ("r", "s", 1),   // the registers, from the beginning
        ("\0", "\0", 0), // every key, from now
        ("l/", "l0", 1), // the lease keys, from the beginning
    ];
    let watchers: Vec<_> = specs
        .into_iter()
        .enumerate()
        .map(|(i, (key, range_end, start_revision))| {
            let spec = WatchSpec {
                key: key.into(),
                range_end: range_end.into(),
                start_revision,
            };
            rt.spawn(workload::watcher(ctx.clone(), spec, ids.clone(), i, WAIT))
        })
        .collect();

    // The faults, from this thread, while the clients run.
    let mut nemesis_errors = Vec::new();
    nemesis(&mut c, &recorder, &mut nemesis_errors);
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    println!("faults done at {:?}", began.elapsed());

    // Heal everything and wait for a leader.
    c.net.heal();
    c.net.degrade(Duration::ZERO, Duration::ZERO, 0.0);
    for i in 0..MEMBERS {
        if c.members[i].is_none() {
            c.restart(i);
        }
    }
    let leader = leader_within(&c, &[], WAIT);
    if leader.is_none() {
        nemesis_errors.push(format!("no write leader within {WAIT:?} after healing"));
    }

    // Stop the clients, then the final reads (every key, linearizable,
    // through the leader first), then let the watchers catch up.
    ctx.stop.store(true, Ordering::Relaxed);
    let stuck = rt.block_on(async {
        let mut stuck = Vec::new();
        for client in clients {
            if tokio::time::timeout(WAIT, client).await.is_err() {
                stuck.push("a client did not stop".to_string());
            }
        }
        let first = leader.unwrap_or(0);
        let kv_of = |n: usize| {
            KvClient::new(
                tonic::transport::Endpoint::from_shared(urls[(first + n) % MEMBERS].clone())
                    .expect("url")
                    .connect_timeout(Duration::from_secs(2))
                    .connect_lazy(),
            )
        };
        let finals_until = Instant::now() + WAIT;
        let mut n = 0;
        let mut kv = kv_of(n);
        for key in &register_keys {
            while workload::get(&ctx, &mut kv, FINAL_CLIENT, key)
                .await
                .is_none()
            {
                if Instant::now() >= finals_until {
                    stuck.push(format!("the final read of {key} got no answer"));
                    break;
                }
                n += 1;
                kv = kv_of(n);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for key in &append_keys {
            // A read-only list-append txn (`Micro::R`), from its JSON form.
            let read = serde_json::json!({ "f": "r", "key": key });
            let read = vec![serde_json::from_value(read).expect("a read micro-op")];
            while !workload::append_txn(&ctx, &mut kv, FINAL_CLIENT, read.clone()).await {
                if Instant::now() >= finals_until {
                    stuck.push(format!("the final read of {key} got no answer"));
                    break;
                }
                n += 1;
                kv = kv_of(n);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for w in watchers {
            // The watchers bound their own catch-up by WAIT.
            if tokio::time::timeout(WAIT + Duration::from_secs(10), w)
                .await
                .is_err()
            {
                stuck.push("a watcher did not finish".to_string());
            }
        }
        stuck
    });
    println!("final reads done at {:?}", began.elapsed());
    drop(ctx);
    rt.shutdown_timeout(Duration::from_secs(5));
    let recorder = match Arc::try_unwrap(recorder) {
        Ok(r) => r,
        Err(_) => panic!("a client still holds the recorder"),
    };
    drop(recorder);
    let written = writer.finish().expect("writing the history");
    // The members stop before the check: it has the CPU to itself.
    drop(c);

    let file = std::fs::File::open(&history).expect("the history");
    let entries: Vec<_> = std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let line = line.expect("a history line");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("history line {}: {e}", n + 1))
        })
        .collect();
    // The harness's limits (`cairn_check::linear::Limits`), shorter here.
    let mut limits = cairn_tools::harness::Config::single(
        Default::default(),
        Default::default(),
        RUN.as_secs(),
        seed,
    )
    .limits;
    limits.per_key = Duration::from_secs(10);
    limits.shrink = Duration::from_secs(5);
    let verdict = check::check(entries.as_slice(), &limits);
    let mut pictures = check::write_report(dir.path(), &entries, &verdict).expect("the report");
    let (leases, more) = harness::check_leases(dir.path(), &entries).expect("the lease report");
    pictures.extend(more);

    let summary = serde_json::json!({
        "seed": seed,
        "entries": written,
        "ops": verdict.ops,
        "ok": verdict.ok,
        "failed": verdict.failed,
        "unknown": verdict.unknown,
        "faults": verdict.faults,
        "linearizability_violations": verdict.linear.violations().count(),
        "revision_violations": verdict.revisions.violations.len() + verdict.revisions.omitted,
        "append_anomalies": verdict.append.anomalies.len() + verdict.append.suppressed,
        "watch_violations": verdict.watch.violations.len() + verdict.watch.suppressed,
        "watch_events": verdict.watch.events,
        "txns": verdict.append.txns,
        "lost_acknowledged_writes": verdict.lost.len(),
        "search_timed_out_keys": verdict.timed_out(),
        "leases": harness::lease_summary(&leases),
        "nemesis_errors": nemesis_errors,
        "stuck": stuck,
        "seconds": began.elapsed().as_secs_f64(),
    });
    println!("verdict: {summary}");
    let mut findings = verdict.findings();
    findings.extend(harness::lease_findings(&leases));
    for f in &findings {
        eprintln!("finding: {f}");
    }
    for p in &pictures {
        eprintln!("timeline: {p}");
    }
    let clean = verdict.violations() == 0
        && leases.valid()
        && verdict.lost.is_empty()
        && verdict.timed_out().is_empty()
        && nemesis_errors.is_empty()
        && stuck.is_empty();
    assert!(
        clean,
        "history {}: {} violations, lost {:?}, unchecked keys {:?}, nemesis {:?}, stuck {:?}; {findings:#?}",
        history.display(),
        verdict.violations(),
        verdict.lost,
        verdict.timed_out(),
        nemesis_errors,
        stuck,
    );
    assert_eq!(
        verdict.faults.values().sum::<u64>(),
        5,
        "every fault was injected: {:?} (history {})",
        verdict.faults,
        history.display()
    );
    assert!(
        verdict.ok > 200,
        "too little work got done: {} ok ops (history {})",
        verdict.ok,
        history.display()
    );
}
