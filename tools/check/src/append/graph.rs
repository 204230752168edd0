//! Steps 3 and 4 of the model (see the module doc of [`super`]): the
//! dependency graph, its strongly connected components, and their cycles.

use super::{show, Cx, Status};
use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet, VecDeque};

/// Edge kinds, as bits; the lowest data bit explains an edge.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const DATA: u8 = WW | WR | RW;
const NONE: usize = usize::MAX;

/// The edges from one txn to another: their kinds, and a key for each.
#[derive(Clone, Copy, Default)]
pub(super) struct Edge {
    mask: u8,
    keys: [Option<usize>; 3],
}

pub(super) type Edges = HashMap<(usize, usize), Edge>;

/// Step 3: the dependency graph over committed txns.
pub(super) fn graph(cx: &mut Cx, order: &[Vec<u64>], bad: &HashSet<(usize, usize)>) -> Edges {
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
pub(super) fn cycles(cx: &mut Cx, edges: &Edges) {
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
