//! `linear`: hand-made histories that must pass and must fail, and random
//! histories from a simulated register (linearizable ones must pass; with one
//! read corrupted they must fail, with a small window).

use cairn_check::history::{Call, Done, Expect, Micro, Op, Outcome};
use cairn_check::linear::{check, Limits, Report, Verdict};
use std::time::{Duration, Instant};

fn op(id: u64, client: u32, t: (u64, u64), call: Call, outcome: Outcome) -> Op {
    let (invoke_us, complete_us) = t;
    Op {
        id,
        client,
        invoke_us,
        complete_us,
        call,
        outcome,
    }
}
fn ok(revision: i64) -> Outcome {
    Outcome::Ok(Done {
        revision,
        ..Done::default()
    })
}
fn unknown() -> Outcome {
    Outcome::Unknown {
        error: "timed out".into(),
    }
}
fn failed() -> Outcome {
    Outcome::Failed {
        error: "refused".into(),
    }
}
fn put(id: u64, t: (u64, u64), key: &str, value: &str, outcome: Outcome) -> Op {
    let call = Call::Put {
        key: key.into(),
        value: value.into(),
    };
    op(id, id as u32, t, call, outcome)
}
/// An ok linearizable get of `value` (`None`: absent) at `mod_revision`.
fn get(id: u64, t: (u64, u64), key: &str, value: Option<&str>, mod_revision: i64) -> Op {
    let call = Call::Get {
        key: key.into(),
        serializable: false,
    };
    let value = value.map(String::from);
    let d = Done {
        revision: mod_revision.max(100),
        value,
        mod_revision,
        ..Done::default()
    };
    op(id, id as u32, t, call, Outcome::Ok(d))
}
fn cas(id: u64, t: (u64, u64), expect: Expect, value: &str, outcome: Outcome) -> Op {
    let call = Call::Cas {
        key: "k".into(),
        expect,
        value: value.into(),
    };
    op(id, id as u32, t, call, outcome)
}
fn cas_ok(revision: i64, succeeded: bool) -> Outcome {
    Outcome::Ok(Done {
        revision,
        succeeded: Some(succeeded),
        ..Done::default()
    })
}
fn on(v: &str) -> Expect {
    Expect::Value(Some(v.into()))
}
fn run_with(h: &[Op], limits: &Limits) -> Report {
    check(&h.iter().collect::<Vec<_>>(), limits)
}
fn run(h: &[Op]) -> Report {
    run_with(h, &Limits::default())
}
fn assert_ok(h: &[Op]) {
    let r = run(h);
    assert!(r.is_linearizable(), "{:#?}", r.verdicts);
}
/// The one violation's window.
fn violation(h: &[Op]) -> Vec<u64> {
    let r = run(h);
    let v: Vec<&Verdict> = r.violations().collect();
    assert_eq!(v.len(), 1, "{:#?}", r.verdicts);
    let Verdict::Violation {
        window,
        explanation,
        ..
    } = v[0]
    else {
        unreachable!()
    };
    assert!(explanation.contains("no linearization"), "{explanation}");
    window.clone()
}

#[test]
fn sequential_puts_and_gets() {
    assert_ok(&[
        get(1, (0, 10), "k", None, 0),
        put(2, (20, 30), "k", "a", ok(1)),
        get(3, (40, 50), "k", Some("a"), 1),
        put(4, (60, 70), "k", "b", ok(2)),
        get(5, (80, 90), "k", Some("b"), 2),
    ]);
}

#[test]
fn a_get_concurrent_with_a_put_sees_either_value() {
    for (seen, rev) in [("a", 1), ("b", 2)] {
        assert_ok(&[
            put(1, (0, 10), "k", "a", ok(1)),
            put(2, (20, 60), "k", "b", ok(2)),
            get(3, (30, 50), "k", Some(seen), rev),
            get(4, (70, 80), "k", Some("b"), 2),
        ]);
    }
    // Touching intervals count as concurrent.
    assert_ok(&[
        put(1, (0, 10), "k", "a", ok(1)),
        get(2, (10, 20), "k", None, 0),
    ]);
}

#[test]
fn a_stale_read_after_an_acknowledged_put_is_a_violation_with_a_small_window() {
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        get(2, (11, 15), "k", Some("a"), 1),
        put(3, (20, 30), "k", "b", ok(2)),
        put(6, (22, 26), "other", "z", ok(3)),
        get(7, (31, 45), "other", Some("z"), 3),
        get(4, (40, 50), "k", Some("a"), 1),
        get(5, (60, 70), "k", Some("b"), 2),
    ];
    // The stale get, the put it read, and the acknowledged put it missed.
    assert_eq!(violation(&h), vec![1, 3, 4]);
    let r = run(&h);
    let v = r.violations().next().unwrap();
    assert_eq!(v.key(), "k");
    let Verdict::Violation { explanation, .. } = v else {
        unreachable!()
    };
    assert!(
        explanation.contains("#4") && explanation.contains("#3"),
        "{explanation}"
    );
    assert!(r.verdicts.iter().any(|v| v.key() == "other"));
}

#[test]
fn a_get_must_see_the_write_s_revision() {
    let h = [
        put(1, (0, 10), "k", "a", ok(5)),
        get(2, (20, 30), "k", Some("a"), 6),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
    // Absent means mod_revision 0.
    assert_eq!(violation(&[get(1, (0, 10), "k", None, 3)]), vec![1]);
}

#[test]
fn writes_take_effect_in_revision_order() {
    // Concurrent puts: whichever got the higher revision is the one read.
    let puts = [
        put(1, (0, 10), "k", "a", ok(6)),
        put(2, (0, 10), "k", "b", ok(5)),
    ];
    assert_ok(&[
        puts[0].clone(),
        puts[1].clone(),
        get(3, (20, 30), "k", Some("a"), 6),
    ]);
    let h = [
        puts[0].clone(),
        puts[1].clone(),
        get(3, (20, 30), "k", Some("b"), 5),
    ];
    assert_eq!(violation(&h), vec![1, 2, 3]);
    // A put acknowledged before another was invoked has the lower revision.
    let h = [
        put(1, (0, 10), "k", "a", ok(6)),
        put(2, (20, 30), "k", "b", ok(5)),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
}

#[test]
fn an_unknown_put_may_take_effect_or_not() {
    // Read later: it took effect (its revision learned from the read).
    assert_ok(&[
        put(1, (0, 10), "k", "a", ok(1)),
        put(2, (20, 30), "k", "b", unknown()),
        get(3, (40, 50), "k", Some("a"), 1),
        get(4, (1000, 1010), "k", Some("b"), 2),
        get(5, (1020, 1030), "k", Some("b"), 2),
    ]);
    // Never read: it did not (or was overwritten).
    assert_ok(&[
        put(1, (0, 10), "k", "a", ok(1)),
        put(2, (20, 30), "k", "b", unknown()),
        get(3, (40, 50), "k", Some("a"), 1),
        get(4, (60, 70), "k", Some("a"), 1),
        put(5, (80, 90), "k", "c", ok(3)),
        get(6, (100, 110), "k", Some("c"), 3),
    ]);
    // But once it is seen, the older value cannot come back.
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        put(2, (20, 30), "k", "b", unknown()),
        get(3, (40, 50), "k", Some("b"), 2),
        get(4, (60, 70), "k", Some("a"), 1),
    ];
    assert_eq!(violation(&h), vec![1, 2, 3, 4]);
    // An unknown get says nothing.
    let mut g = get(2, (20, 30), "k", Some("zzz"), 9);
    g.outcome = unknown();
    assert_ok(&[put(1, (0, 10), "k", "a", ok(1)), g]);
}

#[test]
fn a_read_of_a_value_never_written_is_a_violation() {
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        get(2, (20, 30), "k", Some("ghost"), 7),
        get(3, (40, 50), "k", Some("a"), 1),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
}

#[test]
fn cas_by_value() {
    assert_ok(&[
        cas(1, (0, 10), Expect::Value(None), "a", cas_ok(1, true)),
        cas(2, (20, 30), Expect::Value(None), "x", cas_ok(1, false)),
        cas(3, (40, 50), on("a"), "b", cas_ok(2, true)),
        cas(4, (60, 70), on("a"), "c", cas_ok(2, false)),
        get(5, (80, 90), "k", Some("b"), 2),
    ]);
    // Claimed success while the value differed.
    let h = [
        put(1, (0, 10), "k", "z", ok(1)),
        cas(2, (20, 30), on("a"), "b", cas_ok(2, true)),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
    // Claimed failure while the value matched.
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        cas(2, (20, 30), on("a"), "b", cas_ok(1, false)),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
    // A failed compare leaves the value alone.
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        cas(2, (20, 30), Expect::Value(None), "b", cas_ok(1, false)),
        get(3, (40, 50), "k", Some("b"), 2),
    ];
    assert_eq!(violation(&h), vec![1, 3]);
    // Two concurrent cas on one value: only one may win.
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        cas(2, (20, 50), on("a"), "b", cas_ok(2, true)),
        cas(3, (25, 55), on("a"), "c", cas_ok(3, true)),
    ];
    assert_eq!(violation(&h), vec![1, 2, 3]);
}

#[test]
fn cas_by_mod_revision() {
    use Expect::ModRevision as Rev;
    assert_ok(&[
        cas(1, (0, 10), Rev(0), "a", cas_ok(4, true)),
        cas(2, (20, 30), Rev(0), "x", cas_ok(4, false)),
        cas(3, (40, 50), Rev(4), "b", cas_ok(7, true)),
        cas(4, (60, 70), Rev(4), "c", cas_ok(7, false)),
        get(5, (80, 90), "k", Some("b"), 7),
    ]);
    let h = [
        put(1, (0, 10), "k", "a", ok(4)),
        cas(2, (20, 30), Rev(3), "b", cas_ok(5, true)),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
    let h = [
        put(1, (0, 10), "k", "a", ok(4)),
        cas(2, (20, 30), Rev(4), "b", cas_ok(4, false)),
    ];
    assert_eq!(violation(&h), vec![1, 2]);
    // The revision of an unknown put nobody read is unknown: either outcome.
    for succeeded in [true, false] {
        assert_ok(&[
            put(1, (0, 10), "k", "a", unknown()),
            cas(2, (20, 30), Rev(4), "b", cas_ok(5, succeeded)),
        ]);
    }
    // An unknown cas that is later read took effect, and only if it could.
    assert_ok(&[
        put(1, (0, 10), "k", "a", ok(4)),
        cas(2, (20, 30), Rev(4), "b", unknown()),
        get(3, (40, 50), "k", Some("b"), 5),
    ]);
    let h = [
        put(1, (0, 10), "k", "a", ok(4)),
        cas(2, (20, 30), Rev(3), "b", unknown()),
        get(3, (40, 50), "k", Some("b"), 5),
    ];
    assert_eq!(violation(&h), vec![1, 2, 3]);
}

#[test]
fn failed_txn_and_serializable_ops_are_ignored() {
    let mut stale = get(3, (40, 50), "k", None, 0);
    stale.call = Call::Get {
        key: "k".into(),
        serializable: true,
    };
    let append = Micro::Append {
        key: "k".into(),
        element: 1,
    };
    let txn = op(4, 4, (40, 50), Call::Txn { ops: vec![append] }, ok(9));
    let h = [
        put(1, (0, 10), "k", "a", ok(1)),
        put(2, (20, 30), "k", "b", failed()),
        stale,
        txn,
        cas(5, (60, 70), Expect::Value(None), "c", failed()),
        get(6, (80, 90), "k", Some("a"), 1),
    ];
    let r = run(&h);
    assert!(r.is_linearizable(), "{:#?}", r.verdicts);
    assert_eq!(r.ops_checked, 2);
    // The value of a failed put cannot be read.
    let h = [
        put(1, (0, 10), "k", "b", failed()),
        get(2, (20, 30), "k", Some("b"), 2),
    ];
    assert_eq!(violation(&h), vec![2]);
}

#[test]
fn only_the_violating_key_is_reported() {
    let h = [
        put(1, (0, 10), "good", "a", ok(1)),
        put(2, (0, 10), "bad", "x", ok(2)),
        get(3, (20, 30), "good", Some("a"), 1),
        get(4, (20, 30), "bad", None, 0),
    ];
    let r = run(&h);
    let keys: Vec<(&str, bool)> = r
        .verdicts
        .iter()
        .map(|v| (v.key(), matches!(v, Verdict::Linearizable { .. })))
        .collect();
    assert_eq!(keys, [("bad", false), ("good", true)]);
    assert_eq!(violation(&h), vec![2, 4]);
}

#[test]
fn malformed_records_do_not_panic() {
    let mut no_flag = cas(2, (20, 30), Expect::Value(None), "b", ok(2));
    no_flag.outcome = ok(2); // no `succeeded`
    let h = [
        put(1, (50, 10), "k", "a", ok(1)), // completes before it starts
        no_flag,
        get(3, (60, 70), "k", Some("a"), 1),
        get(4, (80, 90), "", None, -5),
        put(5, (0, 1), "dup", "v", ok(1)),
        put(6, (0, 1), "dup", "v", ok(1)),
        get(7, (90, 99), "dup", Some("v"), 1),
    ];
    let r = run(&h);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    // The get of mod_revision -5, and two writes with one revision.
    assert_eq!(r.violations().count(), 2, "{:#?}", r.verdicts);
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A linearizable history of one key: `clients` clients each running `each`
/// ops with random overlapping intervals, applied to a register at random
/// points within them; some outcomes unknown (applied or not, maybe after
/// the client gave up), some failed.
fn random_history(seed: u64, clients: u32, each: u64) -> Vec<Op> {
    random_history_with(seed, clients, each, 3)
}

/// As [`random_history`], with `unknown_pct` percent of outcomes unknown.
fn random_history_with(seed: u64, clients: u32, each: u64, unknown_pct: u64) -> Vec<Op> {
    let mut rng = Rng(seed.max(1));
    // (linearization point, op, kind, fate): the op's call and outcome are
    // filled in when it is applied. Fate < unknown_pct: unknown, then 2%
    // failed.
    let mut planned: Vec<(u64, Op, u64, u64)> = Vec::new();
    for c in 0..clients {
        let mut t = rng.below(50);
        for n in 0..each {
            let invoke = t + rng.below(30);
            let dur = 1 + rng.below(200);
            let fate = rng.below(100);
            let late = if fate < unknown_pct { 1000 } else { 0 };
            let at = invoke + rng.below(dur + 1 + late);
            let id = u64::from(c) * 1_000_000 + n;
            let (call, kind) = (Call::Txn { ops: vec![] }, rng.below(100));
            let o = op(id, c, (invoke, invoke + dur), call, ok(0));
            planned.push((at, o, kind, fate));
            t = invoke + dur + 1 + rng.below(20);
        }
    }
    planned.sort_by_key(|(at, o, _, _)| (*at, o.id));
    let mut past: Vec<(String, i64)> = Vec::new();
    let (mut value, mut mod_rev, mut rev): (Option<String>, i64, i64) = (None, 0, 0);
    let mut history = Vec::new();
    for (_, mut o, kind, fate) in planned {
        let applies = fate >= unknown_pct + 2 || (fate < unknown_pct && rng.below(2) == 0);
        let new = format!("c{}-{}", o.client, o.id % 1_000_000);
        let key = "k".to_string();
        if kind < 40 {
            o.call = Call::Get {
                key,
                serializable: false,
            };
            let (value, mod_revision) = (value.clone(), mod_rev);
            o.outcome = Outcome::Ok(Done {
                revision: rev,
                value,
                mod_revision,
                ..Done::default()
            });
        } else if kind < 75 {
            o.call = Call::Put {
                key,
                value: new.clone(),
            };
            if applies {
                rev += 1;
                past.push((new.clone(), rev));
                (value, mod_rev) = (Some(new), rev);
            }
            o.outcome = ok(rev);
        } else {
            // A miss expects an earlier value or revision (or one never
            // written).
            let hit = rng.below(2) == 0;
            let old =
                (past.len() > 1).then(|| past[rng.below(past.len() as u64 - 1) as usize].clone());
            let old = old.unwrap_or_else(|| (format!("old-{}", rng.below(5)), mod_rev + 1000));
            let expect = match (rng.below(2), hit) {
                (0, true) => Expect::Value(value.clone()),
                (0, false) => Expect::Value(Some(old.0)),
                (_, true) => Expect::ModRevision(mod_rev),
                (_, false) => Expect::ModRevision(old.1),
            };
            o.call = Call::Cas {
                key,
                expect,
                value: new.clone(),
            };
            if applies && hit {
                rev += 1;
                past.push((new.clone(), rev));
                (value, mod_rev) = (Some(new), rev);
            }
            o.outcome = cas_ok(rev, hit);
        }
        if fate < unknown_pct {
            o.outcome = unknown();
        } else if fate < unknown_pct + 2 {
            o.outcome = failed();
        }
        history.push(o);
    }
    history.sort_by_key(|o| (o.complete_us, o.id));
    history
}

#[test]
fn random_linearizable_histories_pass() {
    let start = Instant::now();
    for seed in 1..=5 {
        let h = random_history(seed, 5, 200);
        assert_eq!(h.len(), 1000);
        let r = run(&h);
        assert!(r.is_linearizable(), "seed {seed}: {:#?}", r.verdicts);
    }
    // More clients and many unknown outcomes (some taking effect late).
    for seed in 1..=3 {
        let h = random_history_with(seed, 20, 100, 20);
        let r = run(&h);
        assert!(r.is_linearizable(), "seed {seed}: {:#?}", r.verdicts);
    }
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_corrupted_random_history_fails_with_a_small_window() {
    for (seed, clients, unknown_pct) in [(1, 5, 3), (2, 5, 3), (3, 20, 3), (4, 20, 20), (5, 50, 3)]
    {
        let mut h = random_history_with(seed, clients, 1000 / u64::from(clients), unknown_pct);
        // Make an ok get in the second half read the value of an ok put from
        // the first quarter.
        let old = h[..h.len() / 4]
            .iter()
            .find_map(|o| match (&o.call, &o.outcome) {
                (Call::Put { value, .. }, Outcome::Ok(d)) => Some((value.clone(), d.revision)),
                _ => None,
            })
            .expect("a put");
        let half = h.len() / 2;
        let target = h[half..]
            .iter_mut()
            .find(|o| matches!((&o.call, &o.outcome), (Call::Get { .. }, Outcome::Ok(_))))
            .expect("a get");
        let (value, mod_revision) = (Some(old.0), old.1);
        target.outcome = Outcome::Ok(Done {
            revision: old.1,
            value,
            mod_revision,
            ..Done::default()
        });
        let id = target.id;
        let window = violation(&h);
        assert!(window.contains(&id), "seed {seed}: {window:?}");
        assert!(window.len() <= 4, "seed {seed}: {window:?}");
    }
}

#[test]
fn running_out_of_steps_or_time_is_timed_out_not_ok() {
    let h = random_history(7, 5, 200);
    let few_steps = Limits {
        max_steps: 10,
        ..Limits::default()
    };
    let no_time = Limits {
        per_key: Duration::ZERO,
        max_steps: u64::MAX,
        ..Limits::default()
    };
    for limits in [few_steps, no_time] {
        let r = run_with(&h, &limits);
        assert!(!r.is_linearizable());
        assert_eq!(r.violations().count(), 0);
        assert_eq!(r.timed_out().collect::<Vec<_>>(), ["k"]);
    }
}

#[test]
#[ignore = "a stress run: cargo test --release -p cairn-check -- --ignored"]
fn large_histories_are_checked_quickly() {
    for (clients, each, unknown_pct) in [(20, 5000, 3), (50, 1000, 20), (100, 500, 3)] {
        let h = random_history_with(11, clients, each, unknown_pct);
        let start = Instant::now();
        let r = run(&h);
        eprintln!("{} ops, {clients} clients: {:?}", h.len(), start.elapsed());
        assert!(r.is_linearizable(), "{:#?}", r.verdicts);
    }
}
