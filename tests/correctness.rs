//! The correctness harness's bounded run (issue 11): one member with 2
//! shards under every single-member fault — kill -9, SIGSTOP pauses, WAL
//! write errors, slow WAL writes, power loss on a loop-mounted ext4, a full
//! disk — while register, list-append and watch workloads record a history;
//! then every checker: per-key linearizability, the global revision order,
//! strict serializability of the txns, the watch streams, and no
//! acknowledged write lost.
//!
//! Needs root (loop devices). `CAIRN_HARNESS_SEED` replays a seed (each run
//! prints its own); the history, report and any timeline pictures stay in
//! the printed directory when the run finds something.
//! Longer runs: `cairn-harness run --seconds 1800` (README).

mod common;

use cairn_tools::harness::{self, nemesis::Kind, Config};

#[test]
fn one_member_under_every_fault_is_linearizable_and_loses_nothing() {
    let seed = common::seed("CAIRN_HARNESS_SEED");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let cfg = Config::single(
        env!("CARGO_BIN_EXE_cairn").into(),
        tmp.path().join("run"),
        60,
        seed,
    );
    let summary = harness::run(&cfg).expect("the harness ran");
    println!("{}", summary.json(&cfg));
    let faults = &summary.verdict.faults;
    let clean = summary.clean();
    if !clean {
        // Keep what shows the failure.
        let kept = tmp.keep();
        eprintln!("the run's files are in {}", kept.display());
        for f in summary.verdict.findings() {
            eprintln!("{f}");
        }
    }
    assert!(
        clean,
        "findings: nemesis {:?}, stuck {:?}, violations {}, lost {:?}, unchecked keys {:?}",
        summary.nemesis_errors,
        summary.stuck,
        summary.verdict.violations(),
        summary.verdict.lost,
        summary.verdict.timed_out()
    );
    for kind in Kind::ALL {
        assert!(
            faults.get(kind.name()).copied().unwrap_or(0) >= 1,
            "{} was never injected: {faults:?}",
            kind.name()
        );
    }
    assert!(
        summary.verdict.ok > 1000,
        "too little work got done: {}",
        summary.verdict.ok
    );
    assert!(
        summary.verdict.append.ok > 100,
        "too few txns: {:?}",
        summary.verdict.append.ok
    );
    assert!(summary.verdict.watch.events > 1000, "too few watch events");
}

/// The power-loss fault can fail a run: with the fsyncs of small files left
/// out (failpoint `fs::no_sync`), a power cut loses a snapshot whose log was
/// already purged, and the run must report it (the member refuses its data
/// dir, or acknowledged writes are gone). This is the fault's own test: a
/// SIGKILL alone keeps the page cache and would find nothing.
#[test]
fn power_loss_catches_a_missing_fsync() {
    let seed = common::seed("CAIRN_HARNESS_SEED");
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let mut cfg = Config::single(
        env!("CARGO_BIN_EXE_cairn").into(),
        tmp.path().join("run"),
        30,
        seed,
    );
    cfg.faults = vec![Kind::PowerLoss];
    cfg.fault_gap_ms = (500, 1500);
    cfg.snapshot_count = 100;
    cfg.failpoints = vec![("fs::no_sync".into(), "return".into())];
    let summary = harness::run(&cfg).expect("the harness ran");
    println!("{}", summary.json(&cfg));
    assert!(
        !summary.nemesis_errors.is_empty()
            || !summary.verdict.lost.is_empty()
            || summary.verdict.violations() > 0,
        "a power cut without fsyncs went unnoticed: {}",
        summary.json(&cfg)
    );
}
