//! The list-append checker on hand-made histories, and on large random ones.

use cairn_check::append::{check, Report};
use cairn_check::history::{Call, Done, Micro, Op, Outcome};
use std::collections::HashSet;

fn r(key: &str) -> Micro {
    Micro::R { key: key.into() }
}

fn a(key: &str, element: u64) -> Micro {
    Micro::Append {
        key: key.into(),
        element,
    }
}

fn ok(reads: &[&[u64]]) -> Outcome {
    let reads = reads.iter().map(|l| l.to_vec()).collect();
    Outcome::Ok(Done {
        revision: 1,
        succeeded: Some(true),
        reads,
        ..Done::default()
    })
}

fn failed() -> Outcome {
    Outcome::Failed {
        error: "compare failed".into(),
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        error: "request timed out".into(),
    }
}

fn txn(id: u64, invoke_us: u64, complete_us: u64, micros: Vec<Micro>, outcome: Outcome) -> Op {
    let call = Call::Txn { ops: micros };
    Op {
        id,
        client: id as u32,
        invoke_us,
        complete_us,
        call,
        outcome,
    }
}

fn run(ops: &[Op]) -> Report {
    let refs: Vec<&Op> = ops.iter().collect();
    check(&refs)
}

fn assert_valid(ops: &[Op]) -> Report {
    let report = run(ops);
    assert!(report.valid(), "{:#?}", report.anomalies);
    report
}

fn assert_kind(ops: &[Op], kind: &str) -> Report {
    let report = run(ops);
    assert!(
        report.kinds().contains(&kind),
        "wanted {kind}: {:#?}",
        report.anomalies
    );
    report
}

#[test]
fn serial_history_is_fine() {
    let ops = [
        txn(1, 0, 10, vec![a("x", 1)], ok(&[])),
        txn(2, 20, 30, vec![r("x"), a("x", 2), a("y", 1)], ok(&[&[1]])),
        txn(
            3,
            40,
            50,
            vec![r("x"), r("y"), a("y", 2), r("y")],
            ok(&[&[1, 2], &[1], &[1, 2]]),
        ),
        txn(4, 60, 70, vec![r("y")], ok(&[&[1, 2]])),
    ];
    let report = assert_valid(&ops);
    assert_eq!(
        (report.txns, report.ok, report.failed, report.unknown),
        (4, 4, 0, 0)
    );
}

#[test]
fn concurrent_non_conflicting_txns_are_fine() {
    let ops = [
        txn(1, 0, 100, vec![r("x"), a("x", 1)], ok(&[&[]])),
        txn(2, 5, 90, vec![r("y"), a("y", 1), r("y")], ok(&[&[], &[1]])),
        txn(3, 10, 80, vec![r("z")], ok(&[&[]])),
        txn(
            4,
            120,
            130,
            vec![r("x"), r("y"), r("z")],
            ok(&[&[1], &[1], &[]]),
        ),
    ];
    assert_valid(&ops);
}

#[test]
fn lost_update_is_detected() {
    // Both read x=[1] and appended; both Ok; only 2 is ever seen.
    let ops = [
        txn(1, 0, 5, vec![a("x", 1)], ok(&[])),
        txn(2, 10, 20, vec![r("x"), a("x", 2)], ok(&[&[1]])),
        txn(3, 10, 20, vec![r("x"), a("x", 3)], ok(&[&[1]])),
        txn(4, 30, 40, vec![r("x")], ok(&[&[1, 2]])),
    ];
    let report = assert_kind(&ops, "lost-update");
    assert_eq!(
        report.anomalies[0].ops,
        vec![3, 2],
        "{:#?}",
        report.anomalies
    );
    // Without a later read: the two versions [1,2] and [1,3] still clash.
    assert_kind(&ops[..3], "lost-update");
}

#[test]
fn stale_read_then_write_is_g_single() {
    // T3 read [1] and appended 3, but 2 came in between: T2 -ww-> T3 -rw-> T2.
    let ops = [
        txn(1, 0, 5, vec![a("x", 1)], ok(&[])),
        txn(2, 10, 20, vec![r("x"), a("x", 2)], ok(&[&[1]])),
        txn(3, 10, 20, vec![r("x"), a("x", 3)], ok(&[&[1]])),
        txn(4, 30, 40, vec![r("x")], ok(&[&[1, 2, 3]])),
    ];
    let report = assert_kind(&ops, "G-single");
    assert_eq!(report.anomalies.len(), 1, "{:#?}", report.anomalies);
    assert_eq!(
        report.anomalies[0].explanation,
        "T2 -ww(x)-> T3 -rw(x)-> T2"
    );
}

#[test]
fn write_skew_is_g2() {
    let ops = [
        txn(1, 0, 10, vec![r("x"), r("y"), a("x", 1)], ok(&[&[], &[]])),
        txn(2, 0, 10, vec![r("x"), r("y"), a("y", 2)], ok(&[&[], &[]])),
        txn(3, 20, 30, vec![r("x"), r("y")], ok(&[&[1], &[2]])),
    ];
    let report = assert_kind(&ops, "G2");
    assert_eq!(report.kinds(), ["G2"]);
}

#[test]
fn write_cycle_is_g0() {
    let ops = [
        txn(1, 0, 10, vec![a("x", 1), a("y", 2)], ok(&[])),
        txn(2, 0, 10, vec![a("x", 3), a("y", 4)], ok(&[])),
        txn(3, 20, 30, vec![r("x"), r("y")], ok(&[&[1, 3], &[4, 2]])),
    ];
    assert_eq!(run(&ops).kinds(), ["G0"]);
}

#[test]
fn aborted_read_is_g1a() {
    let ops = [
        txn(
            1,
            0,
            10,
            vec![r("x"), a("x", 1)],
            Outcome::Failed {
                error: "compare failed".into(),
            },
        ),
        txn(2, 20, 30, vec![r("x")], ok(&[&[1]])),
    ];
    let report = assert_kind(&ops, "G1a");
    assert_eq!(report.anomalies[0].ops, vec![1, 2]);
    // An Ok whose compare did not hold did not happen either.
    let mut ops = ops;
    ops[0].outcome = Outcome::Ok(Done {
        revision: 3,
        succeeded: Some(false),
        ..Done::default()
    });
    assert_kind(&ops, "G1a");
}

#[test]
fn intermediate_read_is_g1b() {
    let ops = [
        txn(1, 0, 10, vec![a("x", 1), a("x", 2)], ok(&[])),
        txn(2, 20, 30, vec![r("x")], ok(&[&[1]])),
    ];
    assert_kind(&ops, "G1b");
}

#[test]
fn incompatible_orders_are_detected() {
    let ops = [
        txn(1, 0, 10, vec![a("x", 1)], ok(&[])),
        txn(2, 0, 10, vec![a("x", 2)], ok(&[])),
        txn(3, 20, 30, vec![r("x")], ok(&[&[1, 2]])),
        txn(4, 20, 30, vec![r("x")], ok(&[&[2, 1]])),
    ];
    let report = assert_kind(&ops, "incompatible-order");
    assert_eq!(report.anomalies[0].ops, vec![3, 4]);
}

#[test]
fn garbage_duplicates_and_internal_are_detected() {
    let ops = [
        txn(1, 0, 10, vec![a("x", 1)], ok(&[])),
        txn(2, 20, 30, vec![r("x")], ok(&[&[1, 1]])),
        txn(3, 20, 30, vec![r("y")], ok(&[&[7]])),
        txn(4, 40, 50, vec![a("z", 1), r("z")], ok(&[&[]])),
        txn(5, 40, 50, vec![r("w"), r("w")], ok(&[&[], &[5]])),
        txn(6, 40, 50, vec![r("v"), a("v", 9)], ok(&[&[9]])),
        txn(7, 40, 50, vec![a("u", 1), a("u", 1)], ok(&[])),
    ];
    let report = run(&ops);
    let kinds = [
        "duplicate-elements",
        "garbage-read",
        "internal",
        "malformed",
    ];
    assert_eq!(report.kinds(), kinds, "{:#?}", report.anomalies);
    let internal = report.anomalies.iter().filter(|a| a.kind == "internal");
    assert_eq!(internal.count(), 3, "{:#?}", report.anomalies);
}

#[test]
fn malformed_reads_are_reported_not_panicked_on() {
    let ops = [txn(1, 10, 0, vec![r("x"), r("y")], ok(&[&[1]]))];
    assert_eq!(run(&ops).kinds(), ["malformed"]);
}

#[test]
fn realtime_violation_is_detected() {
    // T1 appended blindly and completed; T2, invoked later, misses it.
    let ops = [
        txn(1, 0, 10, vec![a("x", 1)], ok(&[])),
        txn(2, 20, 30, vec![r("x")], ok(&[&[]])),
    ];
    let report = assert_kind(&ops, "G-single-realtime");
    assert_eq!(report.anomalies[0].ops, vec![1, 2]);
    // T1 read first: its version [1] is in the order; the cycle is in the graph.
    let ops = [
        txn(1, 0, 10, vec![r("x"), a("x", 1)], ok(&[&[]])),
        txn(2, 20, 30, vec![r("x")], ok(&[&[]])),
    ];
    let report = assert_kind(&ops, "G-single-realtime");
    assert_eq!(report.anomalies[0].explanation, "T1 -rt-> T2 -rw(x)-> T1");
    // Concurrent: fine.
    let ops = [
        txn(1, 0, 10, vec![r("x"), a("x", 1)], ok(&[&[]])),
        txn(2, 5, 30, vec![r("x")], ok(&[&[]])),
    ];
    assert_valid(&ops);
}

#[test]
fn a_read_unknown_append_committed() {
    let ops = [
        txn(1, 0, 10, vec![r("x"), a("x", 1)], unknown()),
        txn(2, 0, 10, vec![a("x", 2)], unknown()),
        txn(3, 20, 30, vec![r("x")], ok(&[&[1]])),
        txn(4, 5, 8, vec![a("y", 9)], failed()),
    ];
    let report = assert_valid(&ops);
    assert_eq!(
        (report.unknown, report.unknown_committed, report.failed),
        (2, 1, 1)
    );
    // Read before the unknown txn was even invoked: a future read.
    let ops = [
        txn(1, 40, 50, vec![a("x", 1)], unknown()),
        txn(3, 20, 30, vec![r("x")], ok(&[&[1]])),
    ];
    assert_kind(&ops, "G1c-realtime");
}

/// xorshift64*: enough randomness for test histories.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A serial execution of `n` random txns over 8 keys, each recorded with an
/// interval around its serialization point (so they overlap): some fail, some
/// time out (and happen or not). Returns the ops, the final lists and the
/// elements Ok txns appended.
fn random_history(n: u64, seed: u64, spread: u64) -> (Vec<Op>, Vec<Vec<u64>>, HashSet<u64>) {
    let mut rng = Rng(seed);
    let keys: Vec<String> = (0..8).map(|k| format!("k{k}")).collect();
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); keys.len()];
    let (mut ops, mut ok_elements, mut next) = (Vec::new(), HashSet::new(), 1);
    for i in 0..n {
        let at = 100_000 + i * 100;
        let mut micros = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let k = rng.below(keys.len() as u64) as usize;
            if rng.below(2) == 0 {
                micros.push((k, None));
            } else {
                micros.push((k, Some(next)));
                next += 1;
            }
        }
        let roll = rng.below(100);
        let applies = roll < 88 || (roll >= 94 && rng.below(2) == 0);
        let mut reads = Vec::new();
        for &(k, e) in &micros {
            match e {
                Some(e) if applies => lists[k].push(e),
                Some(_) => {}
                None => reads.push(lists[k].clone()),
            }
        }
        let outcome = match roll {
            0..88 => {
                ok_elements.extend(micros.iter().filter_map(|m| m.1));
                Outcome::Ok(Done {
                    revision: i as i64 + 1,
                    succeeded: Some(true),
                    reads,
                    ..Done::default()
                })
            }
            88..94 => failed(),
            _ => unknown(),
        };
        let micros = micros
            .iter()
            .map(|&(k, e)| e.map_or_else(|| r(&keys[k]), |e| a(&keys[k], e)))
            .collect();
        ops.push(txn(
            i,
            at - rng.below(spread),
            at + rng.below(spread),
            micros,
            outcome,
        ));
    }
    (ops, lists, ok_elements)
}

#[test]
fn large_random_serial_history_passes() {
    let started = std::time::Instant::now();
    let (ops, _, _) = random_history(5_000, 0x9e37_79b9_7f4a_7c15, 400);
    let report = assert_valid(&ops);
    assert_eq!(report.txns, 5_000);
    assert!(report.unknown_committed > 0 && report.failed > 0);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn random_serial_histories_pass_at_any_concurrency() {
    for seed in 1..=24 {
        let (ops, _, _) = random_history(600, seed, [1, 150, 1_000, 10_000][seed as usize % 4]);
        assert_valid(&ops);
    }
}

#[test]
fn large_random_history_with_one_stale_read_fails() {
    let (mut ops, lists, ok_elements) = random_history(3_000, 42, 400);
    // A read of k0 after everything, missing its last Ok append and what follows.
    let list = &lists[0];
    let Some(cut) = list.iter().rposition(|e| ok_elements.contains(e)) else {
        panic!("no Ok append to k0")
    };
    let end = ops.iter().map(|o| o.complete_us).max().unwrap_or(0);
    ops.push(txn(
        99_999,
        end + 10,
        end + 20,
        vec![r("k0")],
        ok(&[&list[..cut]]),
    ));
    let report = run(&ops);
    assert!(
        report.kinds().contains(&"G-single-realtime"),
        "{:#?}",
        report.anomalies
    );
    assert!(
        report.anomalies.iter().all(|a| a.ops.contains(&99_999)),
        "{:#?}",
        report.anomalies
    );
}

#[test]
fn a_recorded_history_checks() {
    let text = r#"{"kind":"op","id":1,"client":1,"invoke_us":0,"complete_us":10,"call":{"type":"txn","ops":[{"f":"r","key":"x"},{"f":"append","key":"x","element":1}]},"outcome":{"status":"ok","revision":5,"succeeded":true,"reads":[[]]}}
{"kind":"op","id":2,"client":2,"invoke_us":20,"complete_us":30,"call":{"type":"txn","ops":[{"f":"r","key":"x"}]},"outcome":{"status":"ok","revision":5,"succeeded":true,"reads":[[]]}}
{"kind":"op","id":3,"client":3,"invoke_us":0,"complete_us":1,"call":{"type":"put","key":"y","value":"v"},"outcome":{"status":"ok","revision":4}}
"#;
    let entries = cairn_check::history::read(text.as_bytes()).expect("a history");
    let report = cairn_check::append::check_entries(&entries);
    assert_eq!(report.txns, 2);
    assert_eq!(
        report.kinds(),
        ["G-single-realtime"],
        "{:#?}",
        report.anomalies
    );
}
