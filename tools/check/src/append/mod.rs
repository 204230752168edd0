//! Strict serializability of list-append histories, checked as Elle does.
//!
//! # What it checks
//!
//! Only [`Call::Txn`] operations: `R` (read a key's list) and `Append`
//! micro-ops. The harness reads a txn's keys, then sends one etcd Txn whose
//! compare holds every touched key at the mod_revision it read: an `Ok` txn
//! took effect atomically at one revision (an `Ok` with `succeeded: false` is
//! taken as failed), a `Failed` one not at all, an `Unknown` one maybe.
//! Elements are unique per key, so a list read names the appends it saw, in
//! order, and all lists of one key must be prefixes of one *version order*.
//!
//! # The model
//!
//! 1. Version order per key: the longest list read; every other read must be
//!    a prefix of it (`incompatible-order`). An Ok txn that read a key before
//!    appending to it produced the version *its read + its appends* (the
//!    compare makes the read its pre-state), which extends the order; one
//!    that diverges from it means its append was lost (`lost-update`: never
//!    read, another element took its place) or split (`incompatible-order`).
//! 2. Per read: `duplicate-elements`, `garbage-read` (nobody appended it),
//!    `G1a` (the append's txn failed), `G1b` (a list ending in an append that
//!    is not its txn's last to that key), `internal` (a txn reading a key a
//!    second time must see its earlier read plus its own appends since, and
//!    none of its appends before it makes them).
//! 3. A graph over committed txns (Ok ones, and Unknown ones whose elements
//!    some read saw: those happened, with no known completion): `ww` (appended
//!    the next element), `wr` (read a list ending in its element), `rw` (read
//!    a list whose next element the other appended), `rt` (completed before
//!    the other was invoked; a sweep over invocations and completions keeps a
//!    transitive reduction, about n × concurrency edges).
//! 4. Tarjan SCCs of the ww/wr/rw graph, then of the graph with `rt` edges;
//!    per component one shortest cycle (BFS within it from a few nodes),
//!    classified as Elle does: `G0` (ww only), `G1c` (ww, wr), `G-single` (one
//!    rw), `G2` (more), with `-realtime` when it needs an rt edge. An Ok append
//!    nobody ever read, while a txn invoked after it completed read that key,
//!    is such a cycle too (`G-single-realtime`), reported without the graph.
//!
//! # Bounds
//!
//! Time about O(n log n + edges + total length of the lists read): 20k txns
//! reading lists of thousands take about 0.2 s (release), 1 s (debug). Appends nobody read have no place in the order,
//! so cycles through them are not seen (but for the real-time case above).
//! One cycle per component: a large component may hold more anomalies.
//! Beyond [`MAX_PER_KIND`] anomalies of a kind, they are only counted.

mod graph;
mod order;

use crate::history::{Call, Entry, Micro, Op, Outcome};
use graph::{cycles, graph};
use order::{intermediate_reads, version_orders};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Anomalies of one kind listed at most; more are counted in `suppressed`.
pub const MAX_PER_KIND: usize = 100;

/// One anomaly: what, which ops (a cycle in order, or the ops involved) and
/// why, e.g. `T12 -ww(x)-> T15 -rw(y)-> T12` (T + op id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: String,
    pub ops: Vec<u64>,
    pub explanation: String,
}

/// The verdict over a history's txns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Txn ops checked, by outcome (`failed` includes Ok with succeeded false).
    pub txns: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown txns some read proved to have happened.
    pub unknown_committed: usize,
    pub anomalies: Vec<Anomaly>,
    /// Anomalies found beyond [`MAX_PER_KIND`] of their kind.
    pub suppressed: usize,
}

impl Report {
    /// No anomaly found.
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty() && self.suppressed == 0
    }

    /// The distinct anomaly kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.anomalies.iter().map(|a| a.kind.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }
}

/// [`check`] over the ops of a history.
pub fn check_entries(entries: &[Entry]) -> Report {
    check(&crate::history::ops(entries))
}

#[derive(Default)]
struct Sink {
    report: Report,
    counts: HashMap<String, usize>,
}

impl Sink {
    fn push(&mut self, kind: &str, ops: Vec<u64>, explanation: String) {
        let n = self.counts.entry(kind.to_string()).or_insert(0);
        *n += 1;
        if *n > MAX_PER_KIND {
            self.report.suppressed += 1;
        } else {
            let kind = kind.to_string();
            self.report.anomalies.push(Anomaly {
                kind,
                ops,
                explanation,
            });
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Failed,
    Unknown,
}

/// What a txn did to one key.
struct KeyUse<'a> {
    key: usize,
    /// The list it read before its own appends, if it read the key.
    pre: Option<&'a [u64]>,
    appends: Vec<u64>,
}

struct Txn<'a> {
    op: &'a Op,
    status: Status,
    keys: Vec<KeyUse<'a>>,
}

/// One list an Ok txn read.
#[derive(Clone, Copy)]
struct Read<'a> {
    txn: usize,
    key: usize,
    list: &'a [u64],
}

/// What a txn knows of a key's list while it runs.
enum Seen<'a> {
    /// Its appends so far, the list before them unknown.
    Suffix(Vec<u64>),
    /// The list it read last, and its appends since.
    Known(&'a [u64], Vec<u64>),
}

fn show(list: &[u64]) -> String {
    match list.len() {
        n if n > 6 => format!("…{:?} ({n} elements)", &list[n - 5..]),
        _ => format!("{list:?}"),
    }
}

/// Checks the txns among `ops` for strict serializability.
pub fn check(ops: &[&Op]) -> Report {
    let mut cx = parse(ops);
    let r = &mut cx.sink.report;
    r.txns = cx.txns.len();
    for t in &cx.txns {
        match t.status {
            Status::Ok => r.ok += 1,
            Status::Failed => r.failed += 1,
            Status::Unknown => r.unknown += 1,
        }
    }
    let (order, bad) = version_orders(&mut cx);
    intermediate_reads(&mut cx);
    let edges = graph(&mut cx, &order, &bad);
    cycles(&mut cx, &edges);
    cx.sink.report
}

/// The history's txns, as the checks go.
struct Cx<'a> {
    names: Vec<&'a str>,
    txns: Vec<Txn<'a>>,
    reads: Vec<Read<'a>>,
    /// (key, element) → the txn that appended it.
    appender: HashMap<(usize, u64), usize>,
    /// The (key, element)s whose reads were reported.
    reported: HashSet<(usize, u64)>,
    sink: Sink,
}

impl<'a> Cx<'a> {
    fn id(&self, t: usize) -> u64 {
        self.txns[t].op.id
    }

    /// How explanations name a txn.
    fn t(&self, t: usize) -> String {
        format!("T{}", self.txns[t].op.id)
    }

    fn appended_by(&self, k: usize, e: u64) -> Option<usize> {
        self.appender.get(&(k, e)).copied()
    }

    /// The Ok txns.
    fn ok(&self) -> impl Iterator<Item = (usize, &Txn<'a>)> {
        let ok = |(_, x): &(usize, &Txn)| x.status == Status::Ok;
        self.txns.iter().enumerate().filter(ok)
    }

    /// What `t` read of key `k` before its appends.
    fn pre(&self, t: usize, k: usize) -> Option<&'a [u64]> {
        self.txns[t]
            .keys
            .iter()
            .find(|u| u.key == k)
            .and_then(|u| u.pre)
    }

    /// Reports what is wrong with element `e` of `list`, read by `t`, once.
    fn element(&mut self, k: usize, e: u64, dup: bool, t: usize, list: &[u64]) {
        let w = self.appended_by(k, e);
        let failed = w.is_some_and(|w| self.txns[w].status == Status::Failed);
        if !(dup || w.is_none() || failed) || !self.reported.insert((k, e)) {
            return;
        }
        let read = format!("{} read {}={}", self.t(t), self.names[k], show(list));
        let (kind, ids, why) = match w {
            _ if dup => (
                "duplicate-elements",
                vec![],
                format!("{read} with {e} twice"),
            ),
            None => (
                "garbage-read",
                vec![],
                format!("{read}, but nobody appended {e}"),
            ),
            Some(w) => {
                let why = format!("{read} with {e}, appended by {} which failed", self.t(w));
                ("G1a", vec![self.id(w)], why)
            }
        };
        let ids = [ids, vec![self.id(t)]].concat();
        self.sink.push(kind, ids, why);
    }
}

/// The txns among `ops`: what each did to each key, and the lists read.
fn parse<'a>(ops: &[&'a Op]) -> Cx<'a> {
    let (mut ids, mut appender) = (HashMap::<&str, usize>::new(), HashMap::new());
    let (mut names, mut txns, mut reads, mut sink) = (vec![], vec![], vec![], Sink::default());
    for &op in ops {
        let Call::Txn { ops: micros } = &op.call else {
            continue;
        };
        let (status, got): (Status, &'a [Vec<u64>]) = match &op.outcome {
            Outcome::Ok(d) if d.succeeded == Some(false) => (Status::Failed, &[]),
            Outcome::Ok(d) => (Status::Ok, &d.reads),
            Outcome::Failed { .. } => (Status::Failed, &[]),
            Outcome::Unknown { .. } => (Status::Unknown, &[]),
        };
        let wanted = micros.iter().filter(|m| matches!(m, Micro::R { .. }));
        let wanted = wanted.count();
        let reads_ok = status == Status::Ok && got.len() == wanted;
        let (id, n) = (op.id, got.len());
        if status == Status::Ok && !reads_ok {
            let why = format!("T{id} has {wanted} R micro-ops but {n} lists read: reads ignored");
            sink.push("malformed", vec![id], why);
        }
        if status == Status::Ok && op.complete_us < op.invoke_us {
            let why = format!("T{id} completed before it was invoked");
            sink.push("malformed", vec![id], why);
        }
        let t = txns.len();
        let (mut keys, mut seen, mut next) = (Vec::<KeyUse>::new(), Vec::new(), 0);
        for m in micros {
            let (key, append) = match m {
                Micro::R { key } => (key.as_str(), None),
                Micro::Append { key, element } => (key.as_str(), Some(*element)),
            };
            let k = *ids.entry(key).or_insert_with(|| {
                names.push(key);
                names.len() - 1
            });
            let i = keys.iter().position(|u| u.key == k).unwrap_or_else(|| {
                keys.push(KeyUse {
                    key: k,
                    pre: None,
                    appends: Vec::new(),
                });
                seen.push(None);
                keys.len() - 1
            });
            if let Some(e) = append {
                if let Some(w) = appender.insert((k, e), t) {
                    appender.insert((k, e), w);
                    let other = txns.get(w).map_or(id, |x: &Txn| x.op.id);
                    let why = format!("{e} appended to {key} by T{other} and T{id}");
                    sink.push("malformed", vec![other, id], why);
                }
                keys[i].appends.push(e);
                match &mut seen[i] {
                    Some(Seen::Suffix(s) | Seen::Known(_, s)) => s.push(e),
                    None => seen[i] = Some(Seen::Suffix(vec![e])),
                }
                continue;
            }
            let Some(list) = got.get(next).filter(|_| reads_ok) else {
                continue;
            };
            next += 1;
            reads.push(Read {
                txn: t,
                key: k,
                list,
            });
            let wrong = match &seen[i] {
                None => {
                    keys[i].pre = Some(list);
                    None
                }
                Some(Seen::Known(b, x)) => {
                    let n = list.len();
                    let same = n == b.len() + x.len() && list.starts_with(b) && list.ends_with(x);
                    let (b, x) = (show(b), show(x));
                    (!same).then(|| format!("expected its earlier read {b} and its appends {x}"))
                }
                Some(Seen::Suffix(s)) if list.ends_with(s) => {
                    keys[i].pre = Some(&list[..list.len() - s.len()]);
                    None
                }
                Some(Seen::Suffix(s)) => Some(format!("expected its appends {} last", show(s))),
            };
            if let Some(why) = wrong.map(|why| format!("T{id} read {key}={}, {why}", show(list))) {
                sink.push("internal", vec![id], why);
            }
            seen[i] = Some(Seen::Known(list, Vec::new()));
        }
        for u in &keys {
            let Some(pre) = u.pre else { continue };
            if let Some(e) = u.appends.iter().find(|e| pre.contains(e)) {
                let k = names[u.key];
                let why = format!("T{id} read {k}={} before appending {e} to it", show(pre));
                sink.push("internal", vec![id], why);
            }
        }
        txns.push(Txn { op, status, keys });
    }
    let reported = HashSet::new();
    Cx {
        names,
        txns,
        reads,
        appender,
        reported,
        sink,
    }
}
