//! Leases against the watch streams: the keys of an expired or revoked
//! lease disappear together at one revision, and no kept-alive lease
//! expires.
//!
//! A lease's keys are the keys its LeasePut ops named (the workload gives
//! each lease keys of its own, `l/<lease hex>/<i>`). What happened to them
//! is what the watchers delivered: put and delete events with their
//! revisions, and when each first arrived (`at_us` of the earliest response
//! that carried it, over every watcher).
//!
//! # Rules
//!
//! - `split-deletion`: every delete event of a lease's keys carries one and
//!   the same mod_revision.
//! - `not-deleted`: a key attached before that revision R (an Ok LeasePut
//!   with a lower revision, or a put event below R) is deleted at R too, if a
//!   watcher whose range holds the key covered R (from its start up to its
//!   last event or highest progress notification) — it would have shown it.
//! - `put-after-deletion`: nothing attaches a key to a dead lease: no Ok
//!   LeasePut of the lease with a revision above R, no put event of its keys
//!   above R.
//! - `early-expiry`: with `w` the first arrival of a delete of the lease's
//!   keys, no grant or keepalive that answered TTL > 0 and was invoked before
//!   `w` promised past it (`invoke_us + ttl * 10^6 > w`), unless a revoke of
//!   the lease was invoked (any outcome) before `w`. The server renews at or
//!   after the invoke, so a deletion that arrived before invoke + TTL
//!   happened before the promise ran out. etcd's semantics keep this across a
//!   leader change: a new leader extends every remaining TTL (full TTL plus
//!   an election timeout), it never shortens one.
//! - `revoked-not-deleted`: a revoke answered Ok at header revision h
//!   deleted every key attached before h (an Ok LeasePut below h) at a
//!   revision ≤ h: a delete event above h, or none though a watcher whose
//!   range holds the key covered h, breaks it (etcd answers a revoke after
//!   applying it; cairn's header is the deletion's revision).
//! - `renewed-after-deletion`: a keepalive invoked after `w` does not answer
//!   TTL > 0: the lease is dead, a client told otherwise would think it still
//!   holds what its keys stood for.
//!
//! Not a violation (liveness is out of scope): a lease never revoked whose
//! keys were never seen deleted; [`Report::never_deleted`] counts them, and
//! [`Report::revoked_not_deleted`] the ones whose revoke was invoked.
//!
//! Cost: O(ops + events × log). Each rule lists at most [`MAX_PER_RULE`]
//! violations; the rest are counted in [`Report::suppressed`].

use crate::history::{Call, Entry, EventKind, Op, Outcome, WatchResponse, WatchStart};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Violations listed per rule; more are only counted.
pub const MAX_PER_RULE: usize = 100;

/// One broken lease promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub lease: i64,
    pub rule: &'static str,
    /// The ops involved (grant, puts, the promise or revoke concerned), for
    /// the timeline picture.
    pub ops: Vec<u64>,
    /// The watch events involved, as text (`delete l/1f/0 @57 (watcher 4 at
    /// 1200.000 ms)`).
    pub events: Vec<String>,
    pub message: String,
}

/// The verdict over a history's leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Leases granted (Ok) or named by a put.
    pub leases: usize,
    /// Leases whose keys were seen deleted after a revoke was invoked.
    pub revoked: usize,
    /// Leases whose keys were seen deleted with no revoke invoked: expired.
    pub expired: usize,
    /// Leases with keys, never revoked, whose keys were never seen deleted.
    pub never_deleted: usize,
    /// Leases with keys, a revoke invoked, whose keys were never seen deleted.
    pub revoked_not_deleted: usize,
    /// Keepalives that answered TTL > 0.
    pub renewals: usize,
    pub violations: Vec<Violation>,
    /// Violations beyond [`MAX_PER_RULE`] for their rule.
    pub suppressed: usize,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.violations.is_empty() && self.suppressed == 0
    }

    /// The distinct rules broken, sorted.
    pub fn rules(&self) -> Vec<&'static str> {
        let mut r: Vec<&'static str> = self.violations.iter().map(|v| v.rule).collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    fn push(&mut self, counts: &mut HashMap<&'static str, usize>, v: Violation) {
        let n = counts.entry(v.rule).or_insert(0);
        *n += 1;
        if *n > MAX_PER_RULE {
            self.suppressed += 1;
        } else {
            self.violations.push(v);
        }
    }
}

/// What the ops say about one lease.
#[derive(Default)]
struct Lease<'a> {
    grant: Option<&'a Op>,
    puts: Vec<&'a Op>,
    /// Ok grant / keepalives with TTL > 0: (op, invoke_us, ttl seconds).
    promises: Vec<(&'a Op, u64, i64)>,
    revokes: Vec<&'a Op>,
}

/// An event of a lease key, where it first arrived.
#[derive(Clone, Copy)]
struct Seen {
    at_us: u64,
    watcher: u32,
}

/// A watcher's range and the revisions it covered.
struct Coverage<'a> {
    start: &'a WatchStart,
    from: i64,
    to: i64,
}

fn in_range(s: &WatchStart, key: &str) -> bool {
    match s.range_end.as_str() {
        "" => key == s.key,
        "\0" => key >= s.key.as_str(),
        end => key >= s.key.as_str() && key < end,
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

fn coverage<'a>(start: &'a WatchStart, responses: &[&WatchResponse]) -> Coverage<'a> {
    let from = match (start.start_revision, responses.first()) {
        (r, _) if r > 0 => r,
        (_, Some(first)) => first
            .events
            .first()
            .map_or(first.header_revision.saturating_add(1), |e| e.mod_revision),
        (_, None) => i64::MAX,
    };
    let mut to = 0;
    for r in responses {
        to = r.events.iter().map(|e| e.mod_revision).fold(to, i64::max);
        if r.progress {
            to = to.max(r.header_revision);
        }
        if r.canceled || r.compact_revision > 0 {
            break;
        }
    }
    Coverage { start, from, to }
}

/// Checks every lease of `entries` against the watch streams in it.
pub fn check(entries: &[Entry]) -> Report {
    let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
    let mut key_lease: HashMap<&str, i64> = HashMap::new();
    let mut renewals = 0;
    for op in crate::history::ops(entries) {
        let done = match &op.outcome {
            Outcome::Ok(d) => Some(d),
            _ => None,
        };
        match &op.call {
            Call::LeaseGrant { .. } => {
                if let Some(d) = done.filter(|d| d.lease != 0) {
                    let l = leases.entry(d.lease).or_default();
                    l.grant = Some(op);
                    if d.ttl > 0 {
                        l.promises.push((op, op.invoke_us, d.ttl));
                    }
                }
            }
            Call::LeasePut { key, lease, .. } => {
                leases.entry(*lease).or_default().puts.push(op);
                key_lease.insert(key, *lease);
            }
            Call::LeaseKeepAlive { lease } => {
                if let Some(d) = done.filter(|d| d.ttl > 0) {
                    renewals += 1;
                    let l = leases.entry(*lease).or_default();
                    l.promises.push((op, op.invoke_us, d.ttl));
                }
            }
            Call::LeaseRevoke { lease } => leases.entry(*lease).or_default().revokes.push(op),
            _ => {}
        }
    }

    // The watch streams: events of lease keys, where each first arrived.
    let mut starts: BTreeMap<u32, &WatchStart> = BTreeMap::new();
    let mut responses: BTreeMap<u32, Vec<&WatchResponse>> = BTreeMap::new();
    for e in entries {
        match e {
            Entry::WatchStart(s) => {
                starts.entry(s.watcher).or_insert(s);
            }
            Entry::WatchResponse(r) => responses.entry(r.watcher).or_default().push(r),
            _ => {}
        }
    }
    let mut covered = Vec::new();
    // lease -> (key, revision, kind) -> first arrival.
    let mut events: HashMap<i64, BTreeMap<(&str, i64, bool), Seen>> = HashMap::new();
    for (w, start) in &starts {
        let rs = responses.get(w).map_or(&[][..], |v| &v[..]);
        covered.push(coverage(start, rs));
        for r in rs {
            for e in &r.events {
                let Some(&lease) = key_lease.get(e.key.as_str()) else {
                    continue;
                };
                let delete = e.kind == EventKind::Delete;
                let seen = Seen {
                    at_us: r.at_us,
                    watcher: *w,
                };
                let slot = events
                    .entry(lease)
                    .or_default()
                    .entry((e.key.as_str(), e.mod_revision, delete))
                    .or_insert(seen);
                if seen.at_us < slot.at_us {
                    *slot = seen;
                }
            }
        }
    }

    let mut report = Report {
        leases: leases.len(),
        renewals,
        ..Report::default()
    };
    let mut counts = HashMap::new();
    let empty = BTreeMap::new();
    for (&id, lease) in &leases {
        let evs = events.get(&id).unwrap_or(&empty);
        let show = |key: &str, rev: i64, delete: bool, s: &Seen| {
            let what = if delete { "delete" } else { "put" };
            format!(
                "{what} {key} @{rev} (watcher {} at {})",
                s.watcher,
                ms(s.at_us)
            )
        };
        let deletes: Vec<(&str, i64, &Seen)> = evs
            .iter()
            .filter(|((_, _, d), _)| *d)
            .map(|(&(k, r, _), s)| (k, r, s))
            .collect();
        let base_ops = || {
            let mut ops: Vec<u64> = lease.grant.iter().map(|g| g.id).collect();
            ops.extend(lease.puts.iter().map(|p| p.id));
            ops
        };
        // An acknowledged revoke: every key attached before its header
        // revision h was deleted at or below h.
        for rv in &lease.revokes {
            let Outcome::Ok(d) = &rv.outcome else {
                continue;
            };
            let h = d.revision;
            let mut wrong = Vec::new();
            for p in &lease.puts {
                let (Call::LeasePut { key, .. }, Outcome::Ok(pd)) = (&p.call, &p.outcome) else {
                    continue;
                };
                if pd.revision >= h {
                    continue;
                }
                match deletes.iter().find(|d| d.0 == key) {
                    Some(&(_, r, s)) if r > h => wrong.push(show(key, r, true, s)),
                    Some(_) => {}
                    None => {
                        if let Some(c) = covered
                            .iter()
                            .find(|c| c.from <= h && h <= c.to && in_range(c.start, key))
                        {
                            wrong.push(format!(
                                "{key} (put at revision {}) never deleted, though watcher {} \
                                 covered revisions {}..={}",
                                pd.revision, c.start.watcher, c.from, c.to
                            ));
                        }
                    }
                }
            }
            if !wrong.is_empty() {
                let mut ops = base_ops();
                ops.push(rv.id);
                report.push(
                    &mut counts,
                    Violation {
                        lease: id,
                        rule: "revoked-not-deleted",
                        ops,
                        message: format!(
                            "lease {id:x}: revoke op {} was acknowledged at revision {h}, but \
                             keys attached before it were not deleted by then",
                            rv.id
                        ),
                        events: wrong,
                    },
                );
            }
        }
        let Some(first) = deletes.iter().min_by_key(|(_, _, s)| (s.at_us, s.watcher)) else {
            if !lease.puts.is_empty() {
                if lease.revokes.is_empty() {
                    report.never_deleted += 1;
                } else {
                    report.revoked_not_deleted += 1;
                }
            }
            continue;
        };
        let w = first.2.at_us;
        let revoked_before: Option<&Op> = lease.revokes.iter().copied().find(|r| r.invoke_us < w);
        if lease.revokes.is_empty() {
            report.expired += 1;
        } else {
            report.revoked += 1;
        }

        // (a) one revision.
        let revisions: BTreeSet<i64> = deletes.iter().map(|d| d.1).collect();
        let r = *revisions.first().expect("a delete");
        if revisions.len() > 1 {
            report.push(
                &mut counts,
                Violation {
                    lease: id,
                    rule: "split-deletion",
                    ops: base_ops(),
                    events: deletes.iter().map(|d| show(d.0, d.1, true, d.2)).collect(),
                    message: format!(
                        "lease {id:x}: its keys were deleted at revisions {revisions:?}, not at one"
                    ),
                },
            );
        }
        // (a) every attached key deleted at r, where a watcher would show it.
        let mut attached: BTreeMap<&str, (i64, Option<u64>)> = BTreeMap::new();
        for p in &lease.puts {
            if let (Call::LeasePut { key, .. }, Outcome::Ok(d)) = (&p.call, &p.outcome) {
                if d.revision < r {
                    attached.insert(key, (d.revision, Some(p.id)));
                }
            }
        }
        for &(key, rev, delete) in evs.keys() {
            if !delete && rev < r {
                attached.entry(key).or_insert((rev, None));
            }
        }
        for (key, (put_rev, op)) in attached {
            if deletes.iter().any(|d| d.0 == key) {
                continue;
            }
            let Some(c) = covered
                .iter()
                .find(|c| c.from <= r && r <= c.to && in_range(c.start, key))
            else {
                continue;
            };
            let mut ops = base_ops();
            ops.extend(op);
            ops.extend(lease.revokes.iter().map(|r| r.id));
            report.push(
                &mut counts,
                Violation {
                    lease: id,
                    rule: "not-deleted",
                    ops,
                    events: vec![show(first.0, first.1, true, first.2)],
                    message: format!(
                        "lease {id:x}: {key} (put at revision {put_rev}) was not deleted with \
                         the lease's other keys at revision {r}, though watcher {} covered \
                         revisions {}..={}",
                        c.start.watcher, c.from, c.to
                    ),
                },
            );
        }
        // (a) nothing attached after the lease died.
        for p in &lease.puts {
            if let (Call::LeasePut { key, .. }, Outcome::Ok(d)) = (&p.call, &p.outcome) {
                if d.revision > r {
                    let mut ops = base_ops();
                    ops.retain(|o| *o != p.id);
                    ops.push(p.id);
                    report.push(
                        &mut counts,
                        Violation {
                            lease: id,
                            rule: "put-after-deletion",
                            ops,
                            events: vec![show(first.0, first.1, true, first.2)],
                            message: format!(
                                "lease {id:x}: put of {key} (op {}) acknowledged at revision {}, \
                                 after the lease's keys were deleted at revision {r}",
                                p.id, d.revision
                            ),
                        },
                    );
                }
            }
        }
        for (&(key, rev, delete), s) in evs {
            if !delete && rev > r {
                report.push(
                    &mut counts,
                    Violation {
                        lease: id,
                        rule: "put-after-deletion",
                        ops: base_ops(),
                        events: vec![
                            show(first.0, first.1, true, first.2),
                            show(key, rev, false, s),
                        ],
                        message: format!(
                            "lease {id:x}: {key} put at revision {rev}, after the lease's keys \
                             were deleted at revision {r}"
                        ),
                    },
                );
            }
        }
        // (b) no deletion before a promise ran out.
        if revoked_before.is_none() {
            let broken = lease
                .promises
                .iter()
                .filter(|(_, invoke, _)| *invoke < w)
                .map(|&(op, invoke, ttl)| (op, invoke, ttl, invoke + (ttl as u64) * 1_000_000))
                .filter(|p| p.3 > w)
                .max_by_key(|p| p.3);
            if let Some((op, invoke, ttl, until)) = broken {
                let mut ops = base_ops();
                ops.retain(|o| *o != op.id);
                ops.push(op.id);
                report.push(
                    &mut counts,
                    Violation {
                        lease: id,
                        rule: "early-expiry",
                        ops,
                        events: vec![show(first.0, first.1, true, first.2)],
                        message: format!(
                            "lease {id:x}: its keys were seen deleted (revision {}) at {}, but op \
                             {} invoked at {} answered TTL {ttl} s: alive until at least {}, \
                             {} early; no revoke invoked before",
                            first.1,
                            ms(w),
                            op.id,
                            ms(invoke),
                            ms(until),
                            ms(until - w)
                        ),
                    },
                );
            }
        }
        // No renewal of a dead lease.
        for &(op, invoke, ttl) in &lease.promises {
            if invoke > w && matches!(op.call, Call::LeaseKeepAlive { .. }) {
                let mut ops = base_ops();
                ops.push(op.id);
                report.push(
                    &mut counts,
                    Violation {
                        lease: id,
                        rule: "renewed-after-deletion",
                        ops,
                        events: vec![show(first.0, first.1, true, first.2)],
                        message: format!(
                            "lease {id:x}: keepalive op {} invoked at {} answered TTL {ttl} s, \
                             after the lease's keys were seen deleted (revision {}) at {}",
                            op.id,
                            ms(invoke),
                            first.1,
                            ms(w)
                        ),
                    },
                );
            }
        }
    }
    report
}

#[cfg(test)]
mod tests;
