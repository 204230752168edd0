//! Checks of cairn's one global revision, across keys and shards — what the
//! per-key checks in [`crate::linear`] cannot see.
//!
//! Over the `Ok` ops of a whole history (every key, Txn ops included):
//!
//! - [`Rule::WriteOrder`]: a write acknowledged before another write was
//!   invoked has the lower revision. A write is an `Ok` Put, an `Ok` Cas that
//!   succeeded, or an `Ok` Txn that did not report a failed compare and has
//!   an Append, or an `Ok` LeasePut; its revision is its header revision.
//! - [`Rule::DuplicateRevision`]: no two writes share a revision.
//! - [`Rule::StaleHeader`]: any other `Ok` op (Get, Cas whose compare failed,
//!   read-only Txn) has a header revision at least that of every write
//!   acknowledged before it was invoked. Serializable Gets are exempt (they
//!   may be served by a lagging member).
//! - [`Rule::ModRevisionAboveHeader`]: an `Ok` Get's `mod_revision` is at most
//!   its header revision (serializable ones too).
//!
//! LeaseGrant, LeaseKeepAlive and LeaseRevoke are not used: a revoke (or an
//! expiry) deletes keys at a revision no op names, which the watch streams
//! show and [`crate::leases`] checks.
//!
//! Revision gaps are allowed. "Before" is real time: a completion strictly
//! earlier than an invocation (ties are concurrent). `Failed` and `Unknown`
//! ops are not used. Cost: O(n log n) (writes sorted by completion with a
//! prefix maximum of revisions, binary-searched per op). Each rule reports at
//! most [`MAX_PER_RULE`] violations; the rest are counted in
//! [`Report::omitted`].

use crate::history::{Call, Micro, Op, Outcome};
use serde::Serialize;

/// Violations reported per rule; further ones are only counted.
pub const MAX_PER_RULE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    WriteOrder,
    DuplicateRevision,
    StaleHeader,
    ModRevisionAboveHeader,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub rule: Rule,
    /// The ops involved: for the ordering rules, the earlier write first.
    pub ops: Vec<u64>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Violations beyond [`MAX_PER_RULE`] for their rule.
    pub omitted: usize,
    /// `Ok` writes seen.
    pub writes: usize,
    /// `Ok` ops seen.
    pub ops_checked: usize,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.omitted == 0
    }

    fn push(&mut self, counts: &mut [usize; 4], rule: Rule, ops: Vec<u64>, message: String) {
        let c = &mut counts[rule as usize];
        *c += 1;
        if *c > MAX_PER_RULE {
            self.omitted += 1;
        } else {
            self.violations.push(Violation { rule, ops, message });
        }
    }
}

/// Whether an `Ok` op wrote.
fn is_write(op: &Op, succeeded: Option<bool>) -> bool {
    match &op.call {
        Call::Put { .. } => true,
        Call::Cas { .. } => succeeded == Some(true),
        Call::Txn { ops } => {
            succeeded != Some(false) && ops.iter().any(|m| matches!(m, Micro::Append { .. }))
        }
        Call::LeasePut { .. } => true,
        Call::Get { .. } => false,
        // Not checked here (see the module docs).
        Call::LeaseGrant { .. } | Call::LeaseKeepAlive { .. } | Call::LeaseRevoke { .. } => false,
    }
}

/// A lease call other than a put: its header revision is not a write's
/// (a revoke's deletes may or may not have made one), and a keepalive's
/// header may come from a lagging member (etcd fills it locally).
fn is_lease_call(call: &Call) -> bool {
    matches!(
        call,
        Call::LeaseGrant { .. } | Call::LeaseKeepAlive { .. } | Call::LeaseRevoke { .. }
    )
}

struct Write {
    invoke: u64,
    complete: u64,
    rev: i64,
    id: u64,
}

/// The `Ok` writes sorted by completion, with a prefix maximum of revisions.
struct Acked {
    writes: Vec<Write>,
    /// `max[i]`: the highest (revision, op id) among `writes[..=i]`.
    max: Vec<(i64, u64)>,
}

impl Acked {
    fn new(mut writes: Vec<Write>) -> Self {
        writes.sort_by_key(|w| (w.complete, w.id));
        let mut max: Vec<(i64, u64)> = Vec::with_capacity(writes.len());
        for w in &writes {
            let m = match max.last() {
                Some(&(r, id)) if r >= w.rev => (r, id),
                _ => (w.rev, w.id),
            };
            max.push(m);
        }
        Acked { writes, max }
    }

    /// The highest-revision write acknowledged strictly before `t`.
    fn max_before(&self, t: u64) -> Option<(i64, u64)> {
        let k = self.writes.partition_point(|w| w.complete < t);
        k.checked_sub(1).and_then(|i| self.max.get(i).copied())
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// Checks the revision rules over `ops` (any order).
pub fn check(ops: &[&Op]) -> Report {
    let mut report = Report::default();
    let mut counts = [0usize; 4];
    let mut writes = Vec::new();
    let mut others = Vec::new();
    for &op in ops {
        let Outcome::Ok(d) = &op.outcome else {
            continue;
        };
        report.ops_checked += 1;
        if let Call::Get { .. } = op.call {
            if d.mod_revision > d.revision {
                report.push(
                    &mut counts,
                    Rule::ModRevisionAboveHeader,
                    vec![op.id],
                    format!(
                        "get #{} read mod_revision {} above its header revision {}",
                        op.id, d.mod_revision, d.revision
                    ),
                );
            }
        }
        if is_lease_call(&op.call) {
            continue;
        }
        if is_write(op, d.succeeded) {
            writes.push(Write {
                invoke: op.invoke_us,
                complete: op.complete_us,
                rev: d.revision,
                id: op.id,
            });
        } else if !matches!(
            op.call,
            Call::Get {
                serializable: true,
                ..
            }
        ) {
            others.push((op, d.revision));
        }
    }
    report.writes = writes.len();

    // Duplicates: sort by revision, then look at runs.
    let mut by_rev: Vec<(i64, u64)> = writes.iter().map(|w| (w.rev, w.id)).collect();
    by_rev.sort_unstable();
    for run in by_rev.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
        let ids: Vec<u64> = run.iter().map(|&(_, id)| id).collect();
        let list: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
        report.push(
            &mut counts,
            Rule::DuplicateRevision,
            ids,
            format!("writes {} all have revision {}", list.join(", "), run[0].0),
        );
    }

    let acked = Acked::new(writes);
    for w in &acked.writes {
        let t = w.invoke;
        if let Some((r, a)) = acked.max_before(t) {
            if r > w.rev {
                report.push(
                    &mut counts,
                    Rule::WriteOrder,
                    vec![a, w.id],
                    format!(
                        "write #{} (revision {}) was invoked at {}, after write #{a} \
                         (revision {r}) was acknowledged, yet has the lower revision",
                        w.id,
                        w.rev,
                        ms(t)
                    ),
                );
            }
        }
    }
    for (op, rev) in others {
        if let Some((r, a)) = acked.max_before(op.invoke_us) {
            if r > rev {
                report.push(
                    &mut counts,
                    Rule::StaleHeader,
                    vec![a, op.id],
                    format!(
                        "op #{} was invoked at {}, after write #{a} (revision {r}) was \
                         acknowledged, yet its header revision is {rev}",
                        op.id,
                        ms(op.invoke_us)
                    ),
                );
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Done, Expect};

    fn op(id: u64, t: (u64, u64), call: Call, d: Done) -> Op {
        Op {
            id,
            client: id as u32,
            invoke_us: t.0,
            complete_us: t.1,
            call,
            outcome: Outcome::Ok(d),
        }
    }
    fn put(id: u64, t: (u64, u64), key: &str, rev: i64) -> Op {
        let call = Call::Put {
            key: key.into(),
            value: format!("v{id}"),
        };
        op(
            id,
            t,
            call,
            Done {
                revision: rev,
                ..Done::default()
            },
        )
    }
    fn get(id: u64, t: (u64, u64), key: &str, rev: i64, mod_rev: i64, ser: bool) -> Op {
        let call = Call::Get {
            key: key.into(),
            serializable: ser,
        };
        let d = Done {
            revision: rev,
            value: (mod_rev > 0).then(|| "x".to_string()),
            mod_revision: mod_rev,
            ..Done::default()
        };
        op(id, t, call, d)
    }
    fn cas(id: u64, t: (u64, u64), rev: i64, ok: bool) -> Op {
        let call = Call::Cas {
            key: "c".into(),
            expect: Expect::ModRevision(1),
            value: format!("v{id}"),
        };
        op(
            id,
            t,
            call,
            Done {
                revision: rev,
                succeeded: Some(ok),
                ..Done::default()
            },
        )
    }
    fn txn(id: u64, t: (u64, u64), rev: i64, append: bool) -> Op {
        let mut ops = vec![Micro::R { key: "l".into() }];
        if append {
            ops.push(Micro::Append {
                key: "l".into(),
                element: id,
            });
        }
        op(
            id,
            t,
            Call::Txn { ops },
            Done {
                revision: rev,
                succeeded: Some(true),
                ..Done::default()
            },
        )
    }
    fn run(ops: &[Op]) -> Report {
        check(&ops.iter().collect::<Vec<_>>())
    }
    fn rules(r: &Report) -> Vec<(Rule, Vec<u64>)> {
        r.violations
            .iter()
            .map(|v| (v.rule, v.ops.clone()))
            .collect()
    }

    #[test]
    fn ordered_writes_across_keys_pass() {
        let h = [
            put(1, (0, 10), "a", 5),
            put(2, (20, 30), "b", 9),  // a gap is fine
            cas(3, (25, 40), 7, true), // concurrent with 2: any order
            txn(4, (50, 60), 10, true),
            get(5, (70, 80), "a", 10, 5, false),
            cas(6, (70, 80), 10, false),
            txn(7, (70, 80), 10, false),
            put(8, (200, 210), "z", 11),
        ];
        let r = run(&h);
        assert!(r.is_ok(), "{:?}", r.violations);
        assert_eq!(r.writes, 5);
        assert_eq!(r.ops_checked, 8);
    }

    #[test]
    fn write_after_acknowledged_write_with_lower_revision_fails() {
        let h = [put(1, (0, 10), "a", 5), put(2, (11, 20), "b", 4)];
        assert_eq!(rules(&run(&h)), vec![(Rule::WriteOrder, vec![1, 2])]);
        // Txn appends and successful cas count as writes too.
        let h = [txn(1, (0, 10), 5, true), cas(2, (11, 20), 4, true)];
        assert_eq!(rules(&run(&h)), vec![(Rule::WriteOrder, vec![1, 2])]);
        // Touching intervals are concurrent.
        let h = [put(1, (0, 10), "a", 5), put(2, (10, 20), "b", 4)];
        assert!(run(&h).is_ok());
    }

    #[test]
    fn two_writes_with_one_revision_fail() {
        let h = [
            put(1, (0, 10), "a", 5),
            put(2, (5, 20), "b", 5),
            put(3, (30, 40), "c", 6),
        ];
        assert_eq!(rules(&run(&h)), vec![(Rule::DuplicateRevision, vec![1, 2])]);
    }

    #[test]
    fn stale_header_fails() {
        let h = [put(1, (0, 10), "a", 5), get(2, (11, 20), "b", 4, 0, false)];
        assert_eq!(rules(&run(&h)), vec![(Rule::StaleHeader, vec![1, 2])]);
        let h = [put(1, (0, 10), "a", 5), cas(2, (11, 20), 4, false)];
        assert_eq!(rules(&run(&h)), vec![(Rule::StaleHeader, vec![1, 2])]);
        let h = [put(1, (0, 10), "a", 5), txn(2, (11, 20), 4, false)];
        assert_eq!(rules(&run(&h)), vec![(Rule::StaleHeader, vec![1, 2])]);
        // Serializable gets may lag; concurrent gets may too.
        let h = [
            put(1, (0, 10), "a", 5),
            get(2, (11, 20), "b", 4, 0, true),
            get(3, (5, 20), "b", 4, 0, false),
            get(4, (11, 20), "b", 5, 0, false),
        ];
        assert!(run(&h).is_ok());
    }

    #[test]
    fn mod_revision_above_header_fails() {
        let h = [
            get(1, (0, 10), "a", 4, 5, false),
            get(2, (0, 10), "a", 4, 6, true),
        ];
        assert_eq!(
            rules(&run(&h)),
            vec![
                (Rule::ModRevisionAboveHeader, vec![1]),
                (Rule::ModRevisionAboveHeader, vec![2])
            ]
        );
        assert!(run(&[get(1, (0, 10), "a", 5, 5, false)]).is_ok());
    }

    #[test]
    fn failed_and_unknown_ops_are_not_used() {
        let mut a = put(1, (0, 10), "a", 5);
        a.outcome = Outcome::Unknown {
            error: "timeout".into(),
        };
        let mut b = put(2, (0, 10), "a", 5);
        b.outcome = Outcome::Failed { error: "no".into() };
        let h = [
            a,
            b,
            put(3, (20, 30), "b", 1),
            get(4, (40, 50), "b", 1, 0, false),
        ];
        assert!(run(&h).is_ok());
    }

    #[test]
    fn a_lease_put_is_a_write_and_other_lease_calls_are_not_checked() {
        let lease_put = |id, t, rev| {
            let call = Call::LeasePut {
                key: format!("l/7/{id}"),
                value: format!("v{id}"),
                lease: 7,
            };
            let d = Done {
                revision: rev,
                ..Done::default()
            };
            op(id, t, call, d)
        };
        // A keepalive's header from a lagging member is not a violation.
        let keep = op(
            3,
            (40, 50),
            Call::LeaseKeepAlive { lease: 7 },
            Done {
                revision: 1,
                ttl: 5,
                ..Done::default()
            },
        );
        let fine = [put(1, (0, 10), "a", 5), lease_put(2, (20, 30), 6), keep];
        let r = run(&fine);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.writes, 2);
        let bad = [put(1, (0, 10), "a", 5), lease_put(2, (20, 30), 4)];
        assert_eq!(run(&bad).violations[0].rule, Rule::WriteOrder);
    }

    #[test]
    fn many_violations_are_capped() {
        let mut h = vec![put(0, (0, 10), "a", 1_000_000)];
        h.extend((1..=150).map(|i| put(i, (100 * i, 100 * i + 50), "a", i as i64)));
        let r = run(&h);
        assert_eq!(r.violations.len(), MAX_PER_RULE);
        assert_eq!(r.omitted, 50);
        assert!(!r.is_ok());
    }
}
