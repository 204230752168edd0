//! A key's history, and windows of it: each as a search problem, shrinking
//! a failing one, and explaining it (see the module doc of [`super`]).

use super::search::{
    search, Act, Best, Budget, Cond, Found, Item, Kind, Problem, State, ABSENT, INITIAL,
    UNKNOWN_REV, UNREAD,
};
use super::{Limits, Verdict};
use crate::history::{Call, Expect, Op, Outcome};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

/// One op of a key's history.
pub(super) struct Kop<'a> {
    op: &'a Op,
    /// `None`: unknown outcome (returns at +infinity, need not take effect).
    ret: Option<u64>,
    act: Act,
}

/// A key's ops, sorted by invocation, with its values interned.
pub(super) struct KeyHistory<'a> {
    pub(super) ops: Vec<Kop<'a>>,
    /// Value id → value (`names[0]`: absent).
    names: Vec<&'a str>,
}

impl<'a> KeyHistory<'a> {
    pub(super) fn build(ops: &[&'a Op], errors: &mut Vec<String>) -> Self {
        let mut ids: HashMap<&'a str, u32> = HashMap::new();
        let mut names: Vec<&'a str> = vec!["(absent)"];
        let mut intern = |v: &'a str| {
            *ids.entry(v).or_insert_with(|| {
                names.push(v);
                (names.len() - 1) as u32
            })
        };
        // Each value's revision: its write's own, else what a Get saw.
        let mut value_rev: HashMap<u32, i64> = HashMap::new();
        for op in ops {
            let Outcome::Ok(d) = &op.outcome else {
                continue;
            };
            match &op.call {
                Call::Cas { value, .. } if d.succeeded == Some(true) => {
                    value_rev.entry(intern(value)).or_insert(d.revision);
                }
                Call::Put { value, .. } => {
                    value_rev.entry(intern(value)).or_insert(d.revision);
                }
                _ => {}
            }
        }
        for op in ops {
            if let (Call::Get { .. }, Outcome::Ok(d)) = (&op.call, &op.outcome) {
                if let Some(v) = &d.value {
                    value_rev.entry(intern(v)).or_insert(d.mod_revision);
                }
            }
        }
        let mut kops = Vec::new();
        for &op in ops {
            if op.complete_us < op.invoke_us {
                errors.push(format!("op {}: completes before it is invoked", op.id));
            }
            let done = Some(op.complete_us.max(op.invoke_us));
            let ok = match &op.outcome {
                Outcome::Ok(d) => Some(d),
                Outcome::Failed { .. } => continue,
                Outcome::Unknown { .. } => None,
            };
            let (kind, val, rev, ret) = match (&op.call, ok) {
                (Call::Get { serializable, .. }, Some(d)) if !serializable => {
                    let val = d.value.as_deref().map_or(ABSENT, &mut intern);
                    (Kind::Read, val, d.mod_revision, done)
                }
                (Call::Put { value, .. }, ok) => {
                    let val = intern(value);
                    let learned = *value_rev.get(&val).unwrap_or(&UNKNOWN_REV);
                    let rev = ok.map_or(learned, |d| d.revision);
                    (Kind::Write, val, rev, ok.and(done))
                }
                (Call::Cas { expect, value, .. }, ok) => {
                    let cond = match expect {
                        Expect::Value(None) => Cond::Value(ABSENT),
                        Expect::Value(Some(v)) => Cond::Value(intern(v)),
                        Expect::ModRevision(r) => Cond::ModRev(*r),
                    };
                    let val = intern(value);
                    let learned = *value_rev.get(&val).unwrap_or(&UNKNOWN_REV);
                    let (wrote, rev, ret) = match ok.map(|d| (d.succeeded, d.revision)) {
                        Some((Some(true), rev)) => (true, rev, done),
                        Some((Some(false), _)) => (false, learned, done),
                        Some((None, _)) => {
                            let e = "an ok cas without `succeeded`, checked as unknown";
                            errors.push(format!("op {}: {e}", op.id));
                            (true, learned, None)
                        }
                        None => (true, learned, None),
                    };
                    (Kind::Cas { cond, wrote }, val, rev, ret)
                }
                _ => continue, // unknown or serializable gets, txns
            };
            let act = Act { kind, val, rev };
            kops.push(Kop { op, ret, act });
        }
        kops.sort_by_key(|k| (k.op.invoke_us, k.ret.unwrap_or(u64::MAX), k.op.id));
        KeyHistory { ops: kops, names }
    }

    pub(super) fn check(&self, key: &str, limits: &Limits) -> Verdict {
        let key = key.to_string();
        let n = self.ops.len();
        let all = vec![true; n];
        let full = self.problem(&all);
        let mut budget = Budget::new(limits, Instant::now() + limits.per_key);
        let (found, best) = search(&full, &mut budget);
        if found == Found::Linearizable {
            return Verdict::Linearizable { key };
        }
        let deadline = Instant::now() + limits.shrink;
        let fails = |set: &[bool]| {
            let now = Instant::now();
            let mut budget = Budget::new(limits, deadline.min(now + limits.per_key));
            now < deadline && search(&self.problem(set), &mut budget).0 == Found::Not
        };
        let range = |a: usize, b: usize| (0..n).map(|i| a <= i && i < b).collect::<Vec<_>>();
        // The search got stuck at some op's return: look for a failing window
        // among the ops invoked by then, longer and longer. (This can also
        // turn a search out of budget into a violation.)
        let stuck = best.blocked.and_then(|b| self.ops[full.items[b].kop].ret);
        let hi = stuck.map_or(0, |t| self.ops.partition_point(|k| k.op.invoke_us <= t));
        let mut lo = (1..).map(|e| hi.saturating_sub(4usize.saturating_pow(e + 1)));
        let failing = lo
            .find(|&lo| lo == 0 || fails(&range(lo, hi)))
            .filter(|&lo| lo > 0);
        let window = match (failing, found) {
            (Some(lo), _) => self.shrink(lo, hi, &fails),
            (None, Found::Not) => self.shrink(0, n, &fails),
            (None, _) => return Verdict::TimedOut { key },
        };
        let problem = self.problem(&window);
        let mut budget = Budget::new(limits, Instant::now() + limits.per_key);
        // The window failed within budget once; should a rerun not fail,
        // explain the whole history instead.
        let (window, problem, best) = match search(&problem, &mut budget) {
            (Found::Not, best) => (window, problem, best),
            _ if found == Found::Not => (all, full, best),
            _ => return Verdict::TimedOut { key },
        };
        let explanation = self.explain(&key, &window, &problem, &best);
        // The window, the write that bounds its initial revision, the writes
        // of the values its reads saw, and (if only a few) the writes from
        // outside it whose revisions put them in between.
        let mut ids: Vec<usize> = (0..n).filter(|&i| window[i]).collect();
        let shown = |a: &Act| a.writes() || matches!(a.kind, Kind::Read);
        let top = ids
            .iter()
            .map(|&i| self.ops[i].act)
            .filter(shown)
            .map(|a| a.rev)
            .max();
        let top = top.unwrap_or(UNKNOWN_REV);
        let floor = problem.floor.unwrap_or(0);
        let between = |it: &&Item| it.act.writes() && it.act.rev > floor && it.act.rev <= top;
        let between: Vec<usize> = problem
            .items
            .iter()
            .filter(between)
            .map(|it| it.kop)
            .collect();
        let read = |k: &Kop| matches!(k.act.kind, Kind::Read).then_some(k.act.val);
        let seen: HashSet<u32> = ids.iter().filter_map(|&i| read(&self.ops[i])).collect();
        let writers =
            (0..n).filter(|&i| self.ops[i].act.writes() && seen.contains(&self.ops[i].act.val));
        ids.extend(writers);
        ids.extend(problem.floor_op);
        if between.len() <= 4 {
            ids.extend(between);
        }
        ids.sort_unstable();
        ids.dedup();
        let window = ids.iter().map(|&i| self.ops[i].op.id).collect();
        Verdict::Violation {
            key,
            window,
            explanation,
        }
    }

    fn inside<'s>(&'s self, set: &'s [bool]) -> impl Iterator<Item = &'s Kop<'a>> + 's {
        self.ops.iter().zip(set).filter(|w| *w.1).map(|w| w.0)
    }

    /// The search problem for the window `set` (indices into `ops`) as a
    /// part of the whole history (see the module doc).
    fn problem(&self, set: &[bool]) -> Problem {
        let start = self.inside(set).map(|k| k.op.invoke_us).min().unwrap_or(0);
        let end = self
            .inside(set)
            .map(|k| k.ret.unwrap_or(k.op.invoke_us))
            .max();
        let end = end.unwrap_or(0);
        // Outside writes acknowledged before the window: the initial state
        // is written by the last of them or a later write (in revision order).
        let before = |k: &Kop| k.act.writes() && k.ret.is_some_and(|r| r < start);
        let floor_op = (self.ops.iter().enumerate().zip(set))
            .filter(|w| !w.1 && before(w.0 .1))
            .map(|w| (w.0 .1.act.rev, w.0 .0))
            .max();
        let floor = floor_op.map(|f| f.0);
        let mut items = Vec::new();
        let mut inits = Vec::from_iter(floor.is_none().then_some(INITIAL));
        for (i, (k, &inside)) in self.ops.iter().zip(set).enumerate() {
            let (ret, act) = (k.ret.unwrap_or(u64::MAX), k.act);
            if !inside {
                if !act.writes() || k.op.invoke_us > end {
                    continue;
                }
                if act.rev == UNKNOWN_REV || floor.is_none_or(|f| act.rev >= f) {
                    inits.push((act.val, act.rev));
                }
                if ret < start {
                    continue;
                }
            }
            let optional = !inside || k.ret.is_none();
            let (kop, invoke, class) = (i, k.op.invoke_us, None);
            items.push(Item {
                kop,
                invoke,
                ret,
                optional,
                act,
                class,
            });
        }
        // The values some op needs to find: required reads' and successful
        // compares', and the compares of optional writes whose values are
        // needed. An unknown write whose value is not needed can only leave a
        // value nobody reads (a failed compare on it is not checked against
        // it: a slight leniency); such writes are interchangeable within a
        // class (same kind and compare).
        let mut needed: HashSet<u32> = HashSet::new();
        let mut grew = true;
        while grew {
            grew = false;
            for it in &items {
                let v = match it.act.kind {
                    Kind::Read => it.act.val,
                    Kind::Cas {
                        cond: Cond::Value(v),
                        wrote: true,
                    } if !it.optional
                        || it.act.rev != UNKNOWN_REV
                        || needed.contains(&it.act.val) =>
                    {
                        v
                    }
                    _ => continue,
                };
                grew |= needed.insert(v);
            }
        }
        let (mut classes, mut members, mut modrev) = (HashMap::new(), Vec::new(), Vec::new());
        for (i, it) in items.iter_mut().enumerate() {
            if it.ret == u64::MAX && it.act.rev == UNKNOWN_REV && !needed.contains(&it.act.val) {
                (it.act.val, it.act.rev) = (UNREAD, UNKNOWN_REV);
                let c = *classes.entry(it.act.kind).or_insert_with(|| {
                    if let Kind::Cas {
                        cond: Cond::ModRev(r),
                        ..
                    } = it.act.kind
                    {
                        modrev.extend((r != 0).then_some(members.len()));
                    }
                    members.push(Vec::new());
                    members.len() - 1
                });
                members[c].push(i);
                it.class = Some(c);
            }
        }
        // Initial values nobody needs are all alike.
        for (val, rev) in inits.iter_mut() {
            if *rev == UNKNOWN_REV && !needed.contains(val) {
                // The last write before the window: after the floor.
                (*val, *rev) = (UNREAD, floor.unwrap_or(0));
            }
        }
        let mut seen = HashSet::new();
        inits.retain(|&st| seen.insert(st));
        Problem {
            items,
            inits,
            floor,
            floor_op: floor_op.map(|f| f.1),
            classes,
            members,
            modrev,
        }
    }

    /// A small failing window (a set of indices into `ops`) within the
    /// failing range `lo..hi`.
    fn shrink(&self, lo: usize, hi: usize, fails: &dyn Fn(&[bool]) -> bool) -> Vec<bool> {
        let n = self.ops.len();
        let range = |a: usize, b: usize| (0..n).map(|i| a <= i && i < b).collect::<Vec<_>>();
        // The shortest failing prefix: [lo, b) fails, [lo, a) is not known to.
        let (mut a, mut b) = (lo, hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            let fail = fails(&range(lo, mid));
            *(if fail { &mut b } else { &mut a }) = mid;
        }
        let end = b;
        // The latest start: [a, end) fails, [b, end) is not known to.
        let (mut a, mut b) = (lo, end);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            let fail = fails(&range(mid, end));
            *(if fail { &mut a } else { &mut b }) = mid;
        }
        let mut set = range(a, end);
        // Drop single ops while it still fails (small windows only).
        if end - a <= 200 {
            for i in a..end {
                set[i] = false;
                if !set.contains(&true) || !fails(&set) {
                    set[i] = true;
                }
            }
        }
        set
    }

    fn explain(&self, key: &str, set: &[bool], p: &Problem, best: &Best) -> String {
        let (n, total) = (self.inside(set).count(), self.ops.len());
        let mut s = format!("key {key:?}: no linearization of these {n} of its {total} ops:\n");
        for k in self.inside(set) {
            let _ = writeln!(s, "  {}", describe(k.op));
        }
        let start = self.inside(set).map(|k| k.op.invoke_us).min().unwrap_or(0);
        match p.floor_op.map(|k| self.ops[k].op) {
            Some(op) => {
                let rev = p.floor.unwrap_or(0);
                s += "after this write was acknowledged (so, writes taking effect in revision ";
                let _ = writeln!(
                    s,
                    "order, from revision {rev} or later on):\n  {}",
                    describe(op)
                );
            }
            None => s += "(no write was acknowledged before them: the key may start absent)\n",
        }
        // Writes from outside that may take effect in the window.
        let floor = p.floor.unwrap_or(i64::MIN);
        let mut outside: Vec<&Item> = (p.items.iter())
            .filter(|it| !set[it.kop] && it.class.is_none() && it.ret >= start)
            .filter(|it| it.act.rev == UNKNOWN_REV || it.act.rev > floor)
            .collect();
        outside.sort_by_key(|it| it.invoke.abs_diff(start));
        if !outside.is_empty() {
            s += "with these writes from outside them, which may take effect in between:\n";
            for it in outside.iter().take(8) {
                let _ = writeln!(s, "  {}", describe(self.ops[it.kop].op));
            }
            if outside.len() > 8 {
                let _ = writeln!(s, "  and {} more", outside.len() - 8);
            }
        }
        let unread = p.items.iter().filter(|it| it.class.is_some()).count();
        if unread > 0 {
            let _ = writeln!(
                s,
                "(and {unread} unknown write(s) whose values nobody reads)"
            );
        }
        let order: Vec<String> = best
            .order
            .iter()
            .map(|&i| format!("#{}", self.ops[p.items[i].kop].op.id))
            .collect();
        let init = self.state(p.inits.get(best.init).copied().unwrap_or(INITIAL));
        let (order, now) = (order.join(", "), self.state(best.state));
        s += &format!("The longest partial linearization (from {init}): [{order}], leaving {now}");
        if let Some(it) = best.blocked.and_then(|b| p.items.get(b)) {
            let op = self.ops[it.kop].op;
            let (rev, in_order) = (best.state.1, it.act.rev);
            let in_order = rev == UNKNOWN_REV || in_order == UNKNOWN_REV || rev < in_order;
            let why = match (it.act.kind, it.act.step(best.state)) {
                (_, Some(_)) => "every way on from there fails".to_string(),
                (Kind::Read, None) => format!("it read {}", self.state((it.act.val, it.act.rev))),
                (Kind::Cas { wrote: false, .. }, None) => "its compare holds there".to_string(),
                (Kind::Cas { .. }, None) if in_order => "its compare fails there".to_string(),
                _ => "writes take effect in revision order".to_string(),
            };
            let done = ms(op.complete_us);
            s += &format!(
                "; then #{} (done at {done}) must take effect, but {why}.",
                op.id
            );
        }
        s
    }

    fn state(&self, (val, rev): State) -> String {
        let rev = (rev != UNKNOWN_REV).then(|| rev.to_string());
        let rev = rev.unwrap_or_else(|| "?".into());
        match val {
            ABSENT => "the key absent".to_string(),
            UNREAD => "a value nobody read (an unknown write's)".to_string(),
            v => format!("{:?} @{rev}", self.names.get(v as usize).unwrap_or(&"?")),
        }
    }
}

fn describe(op: &Op) -> String {
    let (a, b, what) = (
        ms(op.invoke_us),
        ms(op.complete_us),
        crate::timeline::label(op),
    );
    format!("#{} client {} [{a} – {b}] {what}", op.id, op.client)
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}
