//! The register model and the search: Wing & Gong's, with porcupine's
//! linked list and memo (see the module doc of [`super`]).

use super::Limits;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// Value id 0: the key is absent.
pub(super) const ABSENT: u32 = 0;
/// The value of an unknown write nobody observes (see [`Problem`]).
pub(super) const UNREAD: u32 = u32::MAX;
/// The revision of a value whose write's revision nobody saw.
pub(super) const UNKNOWN_REV: i64 = i64::MIN;

/// The register: (value id, revision).
pub(super) type State = (u32, i64);
pub(super) const INITIAL: State = (ABSENT, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Cond {
    Value(u32),
    ModRev(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
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
pub(super) struct Act {
    pub(super) kind: Kind,
    pub(super) val: u32,
    pub(super) rev: i64,
}

impl Act {
    pub(super) fn writes(&self) -> bool {
        matches!(self.kind, Kind::Write | Kind::Cas { wrote: true, .. })
    }

    /// The register's state after this op, if it can take effect in `s`.
    /// (An unread value's revision is unknown, but above the one in `s`.)
    pub(super) fn step(&self, s: State) -> Option<State> {
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

/// A search problem: ops, some of them optional, and initial states.
pub(super) struct Problem {
    pub(super) items: Vec<Item>,
    pub(super) inits: Vec<State>,
    /// The highest revision acknowledged before the window, and that write.
    pub(super) floor: Option<i64>,
    pub(super) floor_op: Option<usize>,
    /// Classes of interchangeable unread writes, by kind (and compare).
    pub(super) classes: HashMap<Kind, usize>,
    /// Each class's items, in invocation order.
    pub(super) members: Vec<Vec<usize>>,
    /// The classes comparing against a revision other than 0.
    pub(super) modrev: Vec<usize>,
}

pub(super) struct Item {
    /// Index into the key's ops.
    pub(super) kop: usize,
    pub(super) invoke: u64,
    /// `u64::MAX`: never returns.
    pub(super) ret: u64,
    /// Need not take effect (unknown outcome, or outside the window).
    pub(super) optional: bool,
    pub(super) act: Act,
    /// An unread write's class of interchangeable ones.
    pub(super) class: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    Linearizable,
    Not,
    OutOfBudget,
}

/// The deepest point a search reached where it had to turn back.
#[derive(Default)]
pub(super) struct Best {
    pub(super) init: usize,
    /// Items in the order they were linearized.
    pub(super) order: Vec<usize>,
    pub(super) state: State,
    /// The required item whose return could not be passed.
    pub(super) blocked: Option<usize>,
}

pub(super) struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Instant,
}

impl Budget {
    pub(super) fn new(limits: &Limits, deadline: Instant) -> Self {
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
pub(super) fn search(p: &Problem, budget: &mut Budget) -> (Found, Best) {
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
