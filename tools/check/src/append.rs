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

use crate::history::{Call, Entry, Micro, Op, Outcome};
use serde::Serialize;
use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet, VecDeque};

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

/// Edge kinds, as bits; the lowest data bit explains an edge.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const DATA: u8 = WW | WR | RW;
const NONE: usize = usize::MAX;

/// The edges from one txn to another: their kinds, and a key for each.
#[derive(Clone, Copy, Default)]
struct Edge {
    mask: u8,
    keys: [Option<usize>; 3],
}

type Edges = HashMap<(usize, usize), Edge>;

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

/// Per key, the version order (step 1) and the elements read (step 2);
/// also the (txn, key) pairs whose reads disagree with the order.
fn version_orders(cx: &mut Cx) -> (Vec<Vec<u64>>, HashSet<(usize, usize)>) {
    let mut longest: Vec<Option<usize>> = vec![None; cx.names.len()];
    for (i, rd) in cx.reads.iter().enumerate() {
        match longest[rd.key] {
            Some(j) if cx.reads[j].list.len() >= rd.list.len() => {}
            _ => longest[rd.key] = Some(i),
        }
    }
    let list = |l: &Option<usize>| l.map_or_else(Vec::new, |j| cx.reads[j].list.to_vec());
    let mut order: Vec<Vec<u64>> = longest.iter().map(list).collect();
    // Compatible reads by length, to name the first reader of each element.
    let mut by_len: Vec<Vec<(usize, usize)>> = vec![Vec::new(); cx.names.len()];
    let mut bad = HashSet::new();
    for i in 0..cx.reads.len() {
        let (rd, l) = (cx.reads[i], cx.reads[longest[cx.reads[i].key].unwrap_or(i)]);
        if order[rd.key].starts_with(rd.list) {
            by_len[rd.key].push((rd.list.len(), i));
            continue;
        }
        bad.insert((rd.txn, rd.key));
        let (k, lt, rt) = (cx.names[rd.key], cx.t(l.txn), cx.t(rd.txn));
        let (ll, rl) = (show(l.list), show(rd.list));
        let why = format!("{lt} read {k}={ll} and {rt} read {k}={rl}: neither is a prefix");
        let ids = vec![cx.id(l.txn), cx.id(rd.txn)];
        cx.sink.push("incompatible-order", ids, why);
        let mut seen = HashSet::new();
        for &e in rd.list {
            cx.element(rd.key, e, !seen.insert(e), rd.txn, rd.list);
        }
    }
    for (k, rs) in by_len.iter_mut().enumerate() {
        rs.sort_unstable();
        let mut seen = HashSet::new();
        for (j, &e) in order[k].iter().enumerate() {
            let Some(&(_, i)) = rs.get(rs.partition_point(|r| r.0 <= j)) else {
                break;
            };
            cx.element(k, e, !seen.insert(e), cx.reads[i].txn, cx.reads[i].list);
        }
    }
    // The versions Ok txns made: what they read, and their appends.
    let mut derived: Vec<(usize, usize, usize)> = Vec::new();
    for (t, txn) in cx.ok() {
        for (i, u) in txn.keys.iter().enumerate() {
            let fresh = !u.appends.is_empty() && !bad.contains(&(t, u.key));
            if let Some(pre) = u.pre.filter(|_| fresh) {
                derived.push((pre.len() + u.appends.len(), t, i));
            }
        }
    }
    derived.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, t, i) in derived {
        let u = &cx.txns[t].keys[i];
        let (o, p, app) = (&mut order[u.key], u.pre.map_or(0, <[u64]>::len), &u.appends);
        // `o` starts with what it read: compare its appends with what follows.
        let after = o.get(p..).unwrap_or_default();
        let c = p + after.iter().zip(app).take_while(|(a, b)| a == b).count();
        if c == p + app.len() || o.len() < p {
            continue;
        }
        if c == o.len() {
            o.extend_from_slice(&app[c - p..]);
            continue;
        }
        let (e, x) = (app[c - p], o[c]);
        if o.contains(&e) {
            continue; // placed elsewhere: the graph sees the cycle
        }
        let kind = ["incompatible-order", "lost-update"][usize::from(c == p)];
        let other = cx.appended_by(u.key, x);
        let by = other.map_or_else(|| "nobody".to_string(), |w| cx.t(w));
        let (k, tt, read) = (cx.names[u.key], cx.t(t), show(&o[..p]));
        let (app, before) = (show(app), show(&o[..c]));
        let why = format!("{tt} read {k}={read} and appended {app}, but {k}'s order has {x} (appended by {by}) after {before}, and {e} is never read");
        let mut ids = vec![cx.id(t)];
        ids.extend(other.map(|w| cx.id(w)));
        cx.sink.push(kind, ids, why);
    }
    (order, bad)
}

/// G1b: a read ending in an append that is not its txn's last to that key.
fn intermediate_reads(cx: &mut Cx) {
    for t in 0..cx.txns.len() {
        for u in 0..cx.txns[t].keys.len() {
            let (k, pre) = (cx.txns[t].keys[u].key, cx.txns[t].keys[u].pre);
            let Some(&last) = pre.and_then(<[u64]>::last) else {
                continue;
            };
            let Some(w) = cx.appended_by(k, last).filter(|&w| w != t) else {
                continue;
            };
            let final_append = cx.txns[w].keys.iter().find(|x| x.key == k);
            if final_append.and_then(|x| x.appends.last()) != Some(&last) {
                let (tt, k, wt) = (cx.t(t), cx.names[k], cx.t(w));
                let why = format!("{tt} read {k} ending in {last}, but {wt} appended more to it");
                cx.sink.push("G1b", vec![cx.id(w), cx.id(t)], why);
            }
        }
    }
}

/// Step 3: the dependency graph over committed txns.
fn graph(cx: &mut Cx, order: &[Vec<u64>], bad: &HashSet<(usize, usize)>) -> Edges {
    let n = cx.txns.len();
    let mut committed: Vec<bool> = cx.txns.iter().map(|t| t.status == Status::Ok).collect();
    let mut observed: HashSet<(usize, u64)> = HashSet::new();
    for (k, o) in order.iter().enumerate() {
        for &e in o {
            observed.insert((k, e));
            match cx.appended_by(k, e) {
                Some(w) if cx.txns[w].status == Status::Unknown && !committed[w] => {
                    committed[w] = true;
                    cx.sink.report.unknown_committed += 1;
                }
                _ => {}
            }
        }
    }
    let mut edges = Edges::new();
    let mut add = |a: usize, b: usize, bit: u8, key: usize| {
        if a != b && committed[a] && committed[b] {
            let e = edges.entry((a, b)).or_default();
            e.mask |= bit;
            if let Some(slot) = e.keys.get_mut(bit.trailing_zeros() as usize) {
                slot.get_or_insert(key);
            }
        }
    };
    for (k, o) in order.iter().enumerate() {
        for pair in o.windows(2) {
            if let (Some(a), Some(b)) = (cx.appended_by(k, pair[0]), cx.appended_by(k, pair[1])) {
                add(a, b, WW, k);
            }
        }
    }
    let mut readers: Vec<Vec<(u64, usize)>> = vec![Vec::new(); cx.names.len()];
    for (t, txn) in cx.ok() {
        for u in txn.keys.iter().filter(|u| !bad.contains(&(t, u.key))) {
            let Some(pre) = u.pre else { continue };
            readers[u.key].push((txn.op.invoke_us, t));
            if let Some(w) = pre.last().and_then(|&e| cx.appended_by(u.key, e)) {
                add(w, t, WR, u.key);
            }
            let next = order[u.key].get(pre.len());
            if let Some(w) = next.and_then(|&e| cx.appended_by(u.key, e)) {
                add(t, w, RW, u.key);
            }
        }
    }
    // Real time: link each invocation to the frontier of completed txns; a
    // completion takes its predecessors off the frontier (transitivity).
    let mut sweep: Vec<(u64, u8, usize)> = Vec::new();
    for (t, txn) in cx.txns.iter().enumerate().filter(|(t, _)| committed[*t]) {
        sweep.push((txn.op.invoke_us, 0, t));
        if txn.status == Status::Ok {
            sweep.push((txn.op.complete_us, 1, t));
        }
    }
    sweep.sort_unstable();
    let (mut frontier, mut preds, mut stamp) = (Vec::new(), vec![Vec::new(); n], vec![NONE; n]);
    for (_, what, t) in sweep {
        if what == 0 {
            for &f in &frontier {
                add(f, t, RT, NONE);
            }
            preds[t] = frontier.clone();
        } else {
            for p in std::mem::take(&mut preds[t]) {
                stamp[p] = t;
            }
            frontier.retain(|f| stamp[*f] != t);
            frontier.push(t);
        }
    }
    // An Ok append nobody read, missing from a read invoked after it completed.
    for rs in &mut readers {
        rs.sort_unstable();
    }
    let mut lost = Vec::new();
    for (t, txn) in cx.ok() {
        for u in &txn.keys {
            let Some(&e) = u.appends.iter().find(|&&e| !observed.contains(&(u.key, e))) else {
                continue;
            };
            let rs = &readers[u.key];
            let i = rs.partition_point(|(inv, _)| *inv <= txn.op.complete_us);
            lost.extend(
                rs.get(i)
                    .filter(|(_, r)| *r != t)
                    .map(|&(_, r)| (t, u.key, e, r)),
            );
        }
    }
    for (t, k, e, r) in lost {
        let (tt, rt, k, read) = (cx.t(t), cx.t(r), cx.names[k], cx.pre(r, k));
        let read = show(read.unwrap_or_default());
        let why = format!("{tt} appended {e} to {k} and completed before {rt} was invoked, which read {k}={read} (nobody ever read {e}): {rt} -rw({k})-> … -> {tt} -rt-> {rt}");
        let ids = vec![cx.id(t), cx.id(r)];
        cx.sink.push("G-single-realtime", ids, why);
    }
    edges
}

/// Step 4: one shortest cycle per strongly connected component, first
/// without real-time edges, then with.
fn cycles(cx: &mut Cx, edges: &Edges) {
    let n = cx.txns.len();
    let mut adj: Vec<Vec<(usize, u8)>> = vec![Vec::new(); n];
    for (&(a, b), e) in edges {
        adj[a].push((b, e.mask));
    }
    for a in &mut adj {
        a.sort_unstable();
    }
    let comps = |mask: u8| {
        let comps = sccs(&adj, mask);
        let mut of = vec![NONE; n];
        for (c, comp) in comps.iter().enumerate() {
            for &v in comp {
                of[v] = c;
            }
        }
        (comps, of)
    };
    let (data, data_of) = comps(DATA);
    let mut found: Vec<Vec<usize>> = Vec::new();
    for (c, comp) in data.iter().enumerate() {
        let tries = comp
            .iter()
            .take(8)
            .map(|&s| bfs(&adj, s, s, DATA, &data_of, c));
        found.extend(tries.flatten().min_by_key(Vec::len));
    }
    let (full, full_of) = comps(DATA | RT);
    for (c, comp) in full.iter().enumerate() {
        let d = data_of[comp[0]];
        if d != NONE && data[d].len() == comp.len() && comp.iter().all(|&v| data_of[v] == d) {
            continue; // the same cycles as without rt edges
        }
        // Some edge inside is rt only: the shortest cycles through a few.
        let out = |&u: &usize| adj[u].iter().map(move |&(v, m)| (u, v, m));
        let rt_only = comp
            .iter()
            .flat_map(out)
            .filter(|&(_, v, m)| m & DATA == 0 && full_of[v] == c);
        let tries = rt_only.take(8).filter_map(|(u, v, _)| {
            let path = bfs(&adj, v, u, DATA | RT, &full_of, c)?;
            Some([&[u][..], &path[..path.len() - 1]].concat())
        });
        found.extend(tries.min_by_key(Vec::len));
    }
    for cycle in found {
        let (mut rw, mut wr, mut rt) = (0, false, false);
        let mut text = cx.t(cycle[0]);
        for (i, &a) in cycle.iter().enumerate() {
            let b = cycle[(i + 1) % cycle.len()];
            let e = edges.get(&(a, b)).copied().unwrap_or_default();
            let slot = ((e.mask & DATA).trailing_zeros() as usize).min(3);
            rw += usize::from(slot == 2);
            (wr, rt) = (wr || slot == 1, rt || slot == 3);
            let key = e.keys.get(slot).copied().flatten();
            let key = key
                .map(|k| format!("({})", cx.names[k]))
                .unwrap_or_default();
            let label = ["ww", "wr", "rw", "rt"][slot];
            text.push_str(&format!(" -{label}{key}-> {}", cx.t(b)));
        }
        let base = match rw {
            0 if wr => "G1c",
            0 => "G0",
            1 => "G-single",
            _ => "G2",
        };
        let kind = format!("{base}{}", if rt { "-realtime" } else { "" });
        let ids = cycle.iter().map(|&t| cx.id(t)).collect();
        cx.sink.push(&kind, ids, text);
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

/// Tarjan's strongly connected components (more than one node) of the
/// graph of the edges with a bit in `mask`; iterative.
fn sccs(adj: &[Vec<(usize, u8)>], mask: u8) -> Vec<Vec<usize>> {
    let n = adj.len();
    let (mut index, mut low, mut on) = (vec![NONE; n], vec![0; n], vec![false; n]);
    let (mut stack, mut call, mut out, mut next) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for s in 0..n {
        if index[s] != NONE {
            continue;
        }
        (index[s], low[s], on[s]) = (next, next, true);
        next += 1;
        stack.push(s);
        call.push((s, 0));
        while let Some(&mut (v, ref mut i)) = call.last_mut() {
            if let Some(&(w, m)) = adj[v].get(*i) {
                *i += 1;
                if m & mask == 0 {
                    continue;
                }
                if index[w] == NONE {
                    (index[w], low[w], on[w]) = (next, next, true);
                    next += 1;
                    stack.push(w);
                    call.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(u, _)) = call.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.reverse();
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// A shortest path `from` → … → `to` over edges with a bit in `mask`, within
/// component `c`. With `from == to`, a shortest cycle through it, without
/// repeating it at the end.
fn bfs(
    adj: &[Vec<(usize, u8)>],
    from: usize,
    to: usize,
    mask: u8,
    comp: &[usize],
    c: usize,
) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::from([(from, from)]);
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        for &(w, m) in &adj[v] {
            if m & mask == 0 || comp[w] != c {
                continue;
            }
            if w == to {
                let mut path = vec![v];
                let mut x = v;
                while x != from {
                    x = *parent.get(&x)?;
                    path.push(x);
                }
                path.reverse();
                if from != to {
                    path.push(to);
                }
                return Some(path);
            }
            if let Slot::Vacant(s) = parent.entry(w) {
                s.insert(v);
                queue.push_back(w);
            }
        }
    }
    None
}
