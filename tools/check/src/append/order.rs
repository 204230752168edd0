//! Steps 1 and 2 of the model (see the module doc of [`super`]): version
//! orders, and what is wrong with single reads.

use super::{show, Cx};
use std::collections::HashSet;

/// Per key, the version order (step 1) and the elements read (step 2);
/// also the (txn, key) pairs whose reads disagree with the order.
pub(super) fn version_orders(cx: &mut Cx) -> (Vec<Vec<u64>>, HashSet<(usize, usize)>) {
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
pub(super) fn intermediate_reads(cx: &mut Cx) {
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
