//! Per-key linearizability of register histories.
//!
//! **What it checks.** The Put / Get / Cas ops of a history, key by key
//! (P-compositionality: a history is linearizable iff each key's sub-history
//! is). Txn ops belong to [`crate::append`]; serializable Gets need not be
//! linearizable and are ignored; `Failed` ops never happened and are dropped.
//! What only shows across keys (one global revision) is [`crate::revisions`]'.
//!
//! **The model.** A key is a register holding a value (absent at first) and
//! the revision of the write that produced it, where known. Values are unique
//! per history, so a write's revision is its own `Ok` outcome's, or else (an
//! unknown write) the `mod_revision` some Get saw next to its value. A Put
//! sets the value; an `Ok` Get reads the current value and, where known, its
//! revision as `mod_revision`; a Cas compares the value (`Expect::Value`,
//! `None`: absent) or the revision (`Expect::ModRevision`, 0: absent; against
//! an unknown revision either outcome goes) and an `Ok` one wrote iff it
//! `succeeded`. As in etcd, writes take effect in revision order: this is
//! stricter than a bare register (two concurrent puts read back in the wrong
//! order fail here). An `Unknown` Put or Cas may take effect at any point
//! after its invocation, or never (porcupine's return at +infinity); one
//! whose value some Get read did take effect, at that revision. An `Unknown`
//! Get says nothing.
//!
//! **The search.** Wing & Gong's, as porcupine does it: call and return
//! events in a doubly linked list by time (ties count as concurrent), an op
//! linearizable once its call precedes every remaining return, a stack to
//! backtrack, a memo of visited (linearized set, state) pairs (as 128-bit
//! Zobrist fingerprints: a collision, odds about n²/2¹²⁸, could only hide a
//! linearization, never invent one). Then it need not branch much: a read
//! that fits is taken at once; writes of known revision go in revision order;
//! unknown writes whose values nobody needs are alike (the earliest unused
//! one stands for them all) and are tried only right before a compare that
//! cannot do without them.
//!
//! **Bounds.** Each key's search stops after [`Limits::max_steps`] steps or
//! [`Limits::per_key`] of wall time; its verdict is then
//! [`Verdict::TimedOut`], neither a pass nor a violation.
//!
//! **Windows.** A window of a key's ops (by invocation) is checked as part of
//! the whole history: reads outside it are dropped; writes outside it may
//! have set its initial state (the latest acknowledged before it bounds that
//! state's revision) or, if they overlap it, take effect inside it. So a
//! window that fails proves the history is not linearizable. When the search
//! fails (or runs out of budget) it looks for a failing window among the ops
//! just before where it got stuck, growing it 4× at a time, then shrinks that
//! (within [`Limits::shrink`]): binary search for the shortest failing prefix
//! and the latest failing start, then dropping single ops while it fails. The
//! reported window adds the write acknowledged last before it, the writes of
//! the values its reads saw and (if at most 4) the outside writes whose
//! revisions fall inside it.
//!
//! One leniency: an unknown write whose value no op needs is taken to leave
//! "some value nobody reads", so a failed compare against that very value is
//! not held against it.

use crate::history::{Call, Expect, Op, Outcome};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// How much search to spend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall time for one key's search.
    pub per_key: Duration,
    /// Search steps for one key's search (and for each trial while
    /// shrinking). Also bounds the memo: at most one entry (~40 bytes) a step.
    pub max_steps: u64,
    /// Wall time for shrinking one violation's window.
    pub shrink: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_key: Duration::from_secs(10),
            max_steps: 10_000_000,
            shrink: Duration::from_secs(10),
        }
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable {
        key: String,
    },
    /// `window`: op ids (in invocation order) that admit no linearization.
    Violation {
        key: String,
        window: Vec<u64>,
        explanation: String,
    },
    /// The search ran out of [`Limits`]: no verdict.
    TimedOut {
        key: String,
    },
}

impl Verdict {
    pub fn key(&self) -> &str {
        match self {
            Verdict::Linearizable { key }
            | Verdict::Violation { key, .. }
            | Verdict::TimedOut { key } => key,
        }
    }
}

/// Verdicts for every key with register ops, in key order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Records that were used leniently (e.g. an `Ok` Cas without
    /// `succeeded`, checked as if its outcome were unknown).
    pub errors: Vec<String>,
    /// Register ops that took part (after dropping failed ones etc.).
    pub ops_checked: usize,
}

impl Report {
    /// Every key linearizable (none violating, none timed out).
    pub fn is_linearizable(&self) -> bool {
        self.verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Linearizable { .. }))
    }
    pub fn violations(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Violation { .. }))
    }
    pub fn timed_out(&self) -> impl Iterator<Item = &str> {
        self.verdicts.iter().filter_map(|v| match v {
            Verdict::TimedOut { key } => Some(key.as_str()),
            _ => None,
        })
    }
}

/// Checks every key's Put / Get / Cas ops of `ops` (other ops are ignored).
pub fn check(ops: &[&Op], limits: &Limits) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Put { key, .. } | Call::Get { key, .. } | Call::Cas { key, .. } => {
                by_key.entry(key.as_str()).or_default().push(op)
            }
            Call::Txn { .. } => {}
        }
    }
    let mut report = Report::default();
    for (key, ops) in by_key {
        let h = KeyHistory::build(&ops, &mut report.errors);
        report.ops_checked += h.ops.len();
        report.verdicts.push(h.check(key, limits));
    }
    report
}

/// Value id 0: the key is absent.
const ABSENT: u32 = 0;
/// The value of an unknown write nobody observes (see [`Problem`]).
const UNREAD: u32 = u32::MAX;
/// The revision of a value whose write's revision nobody saw.
const UNKNOWN_REV: i64 = i64::MIN;

/// The register: (value id, revision).
type State = (u32, i64);
const INITIAL: State = (ABSENT, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cond {
    Value(u32),
    ModRev(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Write,
    Read,
    /// `wrote`: the compare held and it wrote.
    Cas {
        cond: Cond,
        wrote: bool,
    },
}

/// What an op does to, or requires of, the register: a write (or a Cas that
/// wrote) writes `val`@`rev`; a read saw it.
#[derive(Debug, Clone, Copy)]
struct Act {
    kind: Kind,
    val: u32,
    rev: i64,
}

impl Act {
    fn writes(&self) -> bool {
        matches!(self.kind, Kind::Write | Kind::Cas { wrote: true, .. })
    }

    /// The register's state after this op, if it can take effect in `s`.
    /// (An unread value's revision is unknown, but above the one in `s`.)
    fn step(&self, s: State) -> Option<State> {
        let (val, rev) = s;
        // Writes take effect in revision order (where both are known).
        let in_order = self.rev == UNKNOWN_REV || rev == UNKNOWN_REV || rev < self.rev;
        let written = match self.val {
            UNREAD => (UNREAD, rev.max(0)),
            _ => (self.val, self.rev),
        };
        let written = in_order.then_some(written);
        match self.kind {
            Kind::Write => written,
            Kind::Read => (val == self.val && (rev == UNKNOWN_REV || rev == self.rev)).then_some(s),
            Kind::Cas { cond, wrote } => {
                let holds = match cond {
                    Cond::Value(v) => Some(val == v),
                    Cond::ModRev(0) => Some(val == ABSENT),
                    // A write's compare is on an earlier revision.
                    Cond::ModRev(r) if wrote && self.rev != UNKNOWN_REV && r >= self.rev => {
                        Some(false)
                    }
                    Cond::ModRev(r) if val == UNREAD => (r <= rev).then_some(false),
                    Cond::ModRev(_) if rev == UNKNOWN_REV => None,
                    Cond::ModRev(r) => Some(rev == r),
                };
                match wrote {
                    true => written.filter(|_| holds != Some(false)),
                    false => (holds != Some(true)).then_some(s),
                }
            }
        }
    }
}

/// One op of a key's history.
struct Kop<'a> {
    op: &'a Op,
    /// `None`: unknown outcome (returns at +infinity, need not take effect).
    ret: Option<u64>,
    act: Act,
}

/// A key's ops, sorted by invocation, with its values interned.
struct KeyHistory<'a> {
    ops: Vec<Kop<'a>>,
    /// Value id → value (`names[0]`: absent).
    names: Vec<&'a str>,
}

impl<'a> KeyHistory<'a> {
    fn build(ops: &[&'a Op], errors: &mut Vec<String>) -> Self {
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

    fn check(&self, key: &str, limits: &Limits) -> Verdict {
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

/// A search problem: ops, some of them optional, and initial states.
struct Problem {
    items: Vec<Item>,
    inits: Vec<State>,
    /// The highest revision acknowledged before the window, and that write.
    floor: Option<i64>,
    floor_op: Option<usize>,
    /// Classes of interchangeable unread writes, by kind (and compare).
    classes: HashMap<Kind, usize>,
    /// Each class's items, in invocation order.
    members: Vec<Vec<usize>>,
    /// The classes comparing against a revision other than 0.
    modrev: Vec<usize>,
}

struct Item {
    /// Index into the key's ops.
    kop: usize,
    invoke: u64,
    /// `u64::MAX`: never returns.
    ret: u64,
    /// Need not take effect (unknown outcome, or outside the window).
    optional: bool,
    act: Act,
    /// An unread write's class of interchangeable ones.
    class: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Linearizable,
    Not,
    OutOfBudget,
}

/// The deepest point a search reached where it had to turn back.
#[derive(Default)]
struct Best {
    init: usize,
    /// Items in the order they were linearized.
    order: Vec<usize>,
    state: State,
    /// The required item whose return could not be passed.
    blocked: Option<usize>,
}

struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Instant,
}

impl Budget {
    fn new(limits: &Limits, deadline: Instant) -> Self {
        let (steps, max_steps) = (0, limits.max_steps);
        Budget {
            steps,
            max_steps,
            deadline,
        }
    }

    fn spend(&mut self) -> bool {
        self.steps += 1;
        self.steps <= self.max_steps && (self.steps & 1023 != 0 || Instant::now() < self.deadline)
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn wide(a: u64, b: u64) -> u128 {
    (u128::from(splitmix(a)) << 64) | u128::from(splitmix(b))
}

/// The memo's hasher: its keys are already random fingerprints.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// A doubly linked list of nodes `1..=n` between a head `0` and a tail `n+1`.
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    fn new(n: usize) -> Self {
        let prev = (0..n + 2).map(|j| j.saturating_sub(1)).collect();
        List {
            next: (1..=n + 2).collect(),
            prev,
        }
    }
    fn remove(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        (self.next[p], self.prev[n]) = (n, p);
    }
    /// Undoes the latest `remove(x)` (removals are undone in reverse order).
    fn restore(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        (self.next[p], self.prev[n]) = (x, x);
    }
}

/// Where the scan for the next op to linearize stands. Each step looks at
/// the candidates (ops invoked by the first remaining return, node `r`) in
/// passes: `Keep`, a read or failed compare that fits (taken without
/// branching), along the required ops' event list; `Req`, the next write of
/// known revision (the `k`th in revision order); `Opt`, an optional write of
/// unknown revision, along their call list; `Junk`, an unread write (the
/// earliest unused of the `k`th class that can take effect). `Done`: no more.
#[derive(Clone, Copy, PartialEq)]
enum Pos {
    Keep(usize),
    Req(usize, usize),
    Opt(usize, usize),
    Junk(usize, usize),
    Done,
}

/// What the search restores when it backtracks over an op.
struct Frame {
    item: usize,
    pos: Pos,
    state: State,
    max_invoke: u64,
    next: Option<usize>,
}

/// Wing & Gong's search with porcupine's linked list and memo, and some
/// reductions that keep it from branching where it need not:
/// - A read that fits is taken at once: if any linearization exists, one
///   with the read moved up to here does too.
/// - Writes of known revision (acknowledged ones, and unknown ones whose
///   value was read) all take effect, in revision order, so there is one
///   next such write. Before it may take effect, or any op invoked after a
///   pending one's return, is checked.
/// - Of a class of unread writes only the earliest unused one is tried, and
///   only right before a compare, and only if it changes the state.
fn search(p: &Problem, budget: &mut Budget) -> (Found, Best) {
    let (mut req, mut opt) = (Vec::new(), Vec::new());
    let mut by_rev: Vec<(i64, usize)> = Vec::new();
    for (i, it) in p.items.iter().enumerate() {
        if !it.optional {
            req.extend([(it.invoke, false, i), (it.ret, true, i)]);
        }
        if it.act.writes() && it.act.rev != UNKNOWN_REV {
            by_rev.push((it.act.rev, i));
        } else if it.optional && it.class.is_none() {
            opt.push((it.invoke, i));
        }
    }
    req.sort_unstable();
    opt.sort_unstable();
    by_rev.sort_unstable();
    let (rtail, otail, nrev) = (req.len() + 1, opt.len() + 1, by_rev.len());
    let (mut rl, mut ol) = (List::new(req.len()), List::new(opt.len()));
    // Item → its nodes: (call, return) in `rl`, or (call, _) in `ol`.
    let mut nodes = vec![(0, 0); p.items.len()];
    for (j, &(_, is_ret, i)) in req.iter().enumerate() {
        match is_ret {
            true => nodes[i].1 = j + 1,
            false => nodes[i].0 = j + 1,
        }
    }
    for (j, &(_, i)) in opt.iter().enumerate() {
        nodes[i].0 = j + 1;
    }
    // The first required write by revision, and the earliest return among
    // the optional writes from each rank on.
    let first_req = by_rev.iter().position(|&(_, i)| !p.items[i].optional);
    let first_req = first_req.unwrap_or(nrev);
    let mut due = vec![u64::MAX; nrev + 1];
    for k in (0..nrev).rev() {
        let it = &p.items[by_rev[k].1];
        due[k] = due[k + 1].min(if it.optional { it.ret } else { u64::MAX });
    }
    let mut class_used = vec![0usize; p.members.len()];
    // The `k`th class of unread writes that may take effect in a state:
    // `None` past the last; `Some(None)` if there is no such class.
    let junk = |k: usize, (val, rev): State| {
        let cas = |cond| Kind::Cas { cond, wrote: true };
        let c = match k {
            0 => p.classes.get(&Kind::Write),
            1 => p.classes.get(&cas(Cond::Value(val))),
            2 if rev != UNKNOWN_REV => p.classes.get(&cas(Cond::ModRev(rev))),
            k if rev == UNKNOWN_REV => return p.modrev.get(k - 2).map(Some),
            _ => return None,
        };
        Some(c)
    };
    let zobrist: Vec<u128> = (0..p.items.len() as u64)
        .map(|i| wide(2 * i, 2 * i + 1))
        .collect();
    let fingerprint = |set: u128, (val, rev): State, next: Option<usize>| {
        let next = next.map_or(0, |n| n as u64 + 1) << 32;
        set ^ wide(!(u64::from(val) | next), !(rev as u64))
    };
    let mut memo: HashSet<u128, BuildHasherDefault<Fingerprint>> = HashSet::default();
    let mut best = Best::default();
    let mut best_depth = None;
    for (init, &first) in p.inits.iter().enumerate() {
        let (mut state, mut set, mut max_invoke) = (first, 0u128, 0u64);
        // The rank of the next write of known revision; `None` while the
        // initial state's revision is unknown (none has taken effect yet):
        // then any from `lo` up to the first required one.
        let exact = first.0 != UNREAD && first.1 != UNKNOWN_REV;
        let known = if exact {
            first.1
        } else {
            first.1.max(p.floor.unwrap_or(i64::MIN))
        };
        let lo = by_rev.partition_point(|&(rev, _)| rev <= known);
        let mut next = exact.then_some(lo);
        let mut left = req.len() / 2;
        let mut stack: Vec<Frame> = Vec::new();
        // `best.order[..common]` is the items of `stack[..common]`.
        let mut common = 0;
        let mut pos = Pos::Keep(rl.next[0]);
        loop {
            if left == 0 {
                return (Found::Linearizable, best);
            }
            if !budget.spend() {
                return (Found::OutOfBudget, best);
            }
            let within = |t: u64, r: usize| r == rtail || t <= req[r - 1].0;
            let candidate = match pos {
                Pos::Keep(x) if x != rtail && !req[x - 1].1 => Some(req[x - 1].2),
                Pos::Keep(x) => {
                    pos = Pos::Req(next.unwrap_or(lo), x);
                    continue;
                }
                Pos::Req(k, r) if k < nrev && k <= next.unwrap_or(first_req) => {
                    Some(by_rev[k].1).filter(|&i| within(p.items[i].invoke, r))
                }
                Pos::Req(_, r) => {
                    pos = Pos::Junk(0, r);
                    continue;
                }
                Pos::Junk(k, r) => match junk(k, state) {
                    None => {
                        pos = Pos::Opt(ol.next[0], r);
                        continue;
                    }
                    Some(c) => match c.and_then(|&c| p.members[c].get(class_used[c])) {
                        Some(&i) if within(p.items[i].invoke, r) => Some(i),
                        _ => {
                            pos = Pos::Junk(k + 1, r);
                            continue;
                        }
                    },
                },
                Pos::Opt(x, r) if x != otail && within(opt[x - 1].0, r) => Some(opt[x - 1].1),
                Pos::Opt(..) | Pos::Done => None,
            };
            let Some(i) = candidate else {
                if let Pos::Req(..) = pos {
                    pos = advance(pos, &rl, &ol);
                    continue;
                }
                // Nothing left to try before the first remaining return: back.
                if best_depth.is_none_or(|d| stack.len() > d) {
                    best_depth = Some(stack.len());
                    common = if best.init == init { common } else { 0 };
                    best.order.truncate(common);
                    best.order.extend(stack[common..].iter().map(|f| f.item));
                    common = stack.len();
                    (best.init, best.state) = (init, state);
                    best.blocked = match pos {
                        Pos::Opt(_, r) if r != rtail => Some(req[r - 1].2),
                        _ => None,
                    };
                }
                let Some(f) = stack.pop() else { break };
                common = common.min(stack.len());
                let (i, it) = (f.item, &p.items[f.item]);
                if let Some(c) = it.class {
                    class_used[c] -= 1;
                } else if !it.optional {
                    left += 1;
                    rl.restore(nodes[i].1);
                    rl.restore(nodes[i].0);
                } else if nodes[i].0 != 0 {
                    ol.restore(nodes[i].0);
                }
                (state, set, max_invoke, next) = (f.state, set ^ zobrist[i], f.max_invoke, f.next);
                pos = match f.pos {
                    // A read taken without branching: nothing else to try here.
                    Pos::Keep(_) => Pos::Done,
                    at => advance(at, &rl, &ol),
                };
                continue;
            };
            let it = &p.items[i];
            let ranked = matches!(pos, Pos::Req(..));
            // No op may take effect after one invoked after its return; nor
            // before a pending write of known revision that returned before
            // it was invoked.
            let pending = if ranked { next.map(|n| n + 1) } else { next };
            let in_time = it.ret >= max_invoke && pending.is_none_or(|n| it.invoke <= due[n]);
            // A read that fits is taken at once; an unread value is of use
            // only to a compare right after it that could not do without.
            let forced = !it.act.writes();
            let compare = matches!(it.act.kind, Kind::Cas { .. }) && it.class.is_none();
            let needs = |f: &Frame| {
                let prev = &p.items[f.item];
                let free = prev.optional && (prev.class.is_some() || prev.act.rev == UNKNOWN_REV);
                !free || compare && it.act.step(f.state).is_none()
            };
            let allowed = in_time
                && stack.last().is_none_or(needs)
                && match pos {
                    Pos::Keep(_) => forced,
                    _ => !forced,
                };
            let after = allowed.then(|| it.act.step(state)).flatten();
            // An optional op that changes nothing is no use.
            let after = after.filter(|&a| !it.optional || ranked || a != state);
            let next_after = match pos {
                Pos::Req(k, _) => Some(k + 1),
                _ => next,
            };
            let new = after.filter(|&a| memo.insert(fingerprint(set ^ zobrist[i], a, next_after)));
            if after.is_some() && new.is_none() && forced {
                // A read that fits leads only to where we have been.
                pos = Pos::Done;
                continue;
            }
            let Some(after) = new else {
                pos = advance(pos, &rl, &ol);
                continue;
            };
            stack.push(Frame {
                item: i,
                pos,
                state,
                max_invoke,
                next,
            });
            (state, set, max_invoke) = (after, set ^ zobrist[i], max_invoke.max(it.invoke));
            next = next_after;
            if let Some(c) = it.class {
                class_used[c] += 1;
            } else if !it.optional {
                left -= 1;
                rl.remove(nodes[i].0);
                rl.remove(nodes[i].1);
            } else if nodes[i].0 != 0 {
                ol.remove(nodes[i].0);
            }
            pos = Pos::Keep(rl.next[0]);
        }
    }
    (Found::Not, best)
}

/// The next place to look after `pos` in the same pass.
fn advance(pos: Pos, rl: &List, ol: &List) -> Pos {
    match pos {
        Pos::Keep(x) => Pos::Keep(rl.next[x]),
        Pos::Req(k, r) => Pos::Req(k + 1, r),
        Pos::Opt(x, r) => Pos::Opt(ol.next[x], r),
        Pos::Junk(k, r) => Pos::Junk(k + 1, r),
        Pos::Done => Pos::Done,
    }
}
