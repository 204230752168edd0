//! Watch streams against the KV history.
//!
//! # What it checks
//!
//! Per watcher (a [`WatchStart`] and its [`WatchResponse`]s, in the order
//! recorded):
//!
//! - order: mod_revisions strictly increase across responses and do not
//!   decrease within one (`out-of-order`); a (revision, key) comes once
//!   (`duplicate`); the events of one revision come in one response
//!   (`split-revision`); none before the start revision (`before-start`);
//!   no response after a cancel or compaction (`after-cancel`); a response's
//!   header revision is not below its events' (`header-behind`).
//! - range: every key in `[key, range_end)` (`range_end` empty: the key alone;
//!   `"\0"`: every key from `key` on) (`out-of-range`).
//! - content: an event at the revision of an Ok write (a Put, a Cas that
//!   succeeded, or a list-append Txn's appends, which put each appended key at
//!   the txn's revision) must be that write: its key (`wrong-key`) and, for a
//!   Put or Cas, its value (`wrong-value`; Txn values are lists the checker
//!   does not rebuild). An event at any other revision must be the Put of an
//!   Unknown write (same key and value: that write happened) or a key an
//!   Unknown txn appended to; else `phantom` (a write that never happened).
//!   An Unknown write seen at two revisions is a `duplicate-write`.
//! - completeness: the watcher *covered* revisions from its start (the start
//!   revision; for 0, the first event, or the first response's header + 1)
//!   up to the last event it delivered or the highest progress notification,
//!   whichever is higher. Every Ok write in range in that window, and every
//!   event another watcher delivered there for an in-range key, must have
//!   been delivered (`missed`).
//! - progress: a progress notification at header revision H says every
//!   event ≤ H was delivered: a later event ≤ H is a `progress-lie`.
//! - across watchers: events for one (revision, key) are the same in every
//!   stream (`cross-watcher`).
//!
//! # Bounds
//!
//! Time O(events × log + watchers × Ok writes in their windows): a million
//! events take about a second. The history has no delete calls: a delete
//! event is a phantom unless its key was attached to a lease by a LeasePut
//! (Ok or Unknown), whose revoke or expiry deletes it at a revision no op
//! names ([`crate::leases`] checks when and with what). LeasePut is checked
//! as a Put. A fragmented watch (etcd's `fragment` option) would
//! show as `split-revision`. Only progress notifications vouch for what came
//! before them; the header revision of a response with events does not.
//! Beyond [`MAX_PER_KIND`] violations of a kind for one watcher, they are
//! only counted.

use crate::history::{Call, Entry, Event, EventKind, Micro, Outcome, WatchResponse, WatchStart};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Violations of one kind listed per watcher at most; more are counted.
pub const MAX_PER_KIND: usize = 100;

/// One thing wrong with a watcher's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub watcher: u32,
    pub kind: String,
    /// The revision concerned (an event's, or a response's header).
    pub revision: i64,
    pub explanation: String,
}

/// The verdict over a history's watchers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub watchers: usize,
    pub responses: usize,
    pub events: usize,
    pub violations: Vec<Violation>,
    /// Violations beyond [`MAX_PER_KIND`] of their kind and watcher.
    pub suppressed: usize,
}

impl Report {
    /// Nothing wrong found.
    pub fn valid(&self) -> bool {
        self.violations.is_empty() && self.suppressed == 0
    }

    /// The distinct violation kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.violations.iter().map(|v| v.kind.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }
}

#[derive(Default)]
struct Sink {
    report: Report,
    counts: HashMap<(u32, &'static str), usize>,
}

impl Sink {
    fn push(&mut self, watcher: u32, kind: &'static str, revision: i64, explanation: String) {
        let n = self.counts.entry((watcher, kind)).or_insert(0);
        *n += 1;
        if *n > MAX_PER_KIND {
            self.report.suppressed += 1;
            return;
        }
        let kind = kind.to_string();
        let v = Violation {
            watcher,
            kind,
            revision,
            explanation,
        };
        self.report.violations.push(v);
    }
}

/// An Ok write: its op, key, and value (`None`: a txn's list, unchecked).
struct Write<'a> {
    op: u64,
    key: &'a str,
    value: Option<&'a str>,
}

/// What the KV history says was written.
#[derive(Default)]
struct Writes<'a> {
    /// Ok writes by revision (a txn puts several keys at one revision).
    ok: BTreeMap<i64, Vec<Write<'a>>>,
    /// Ok Put / Cas by (key, value): (op, revision), to explain phantoms.
    ok_values: HashMap<(&'a str, &'a str), (u64, i64)>,
    /// Unknown Put / Cas by (key, value): the op.
    maybe: HashMap<(&'a str, &'a str), u64>,
    /// Keys Unknown txns appended to: an op.
    maybe_txn: HashMap<&'a str, u64>,
    /// Failed Put / Cas by (key, value): the op.
    failed: HashMap<(&'a str, &'a str), u64>,
    /// Keys an Ok or Unknown LeasePut attached to a lease: the op. Their
    /// lease's revoke or expiry deletes them (no op names that revision).
    lease_keys: HashMap<&'a str, u64>,
}

impl<'a> Writes<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let mut w = Writes::default();
        for op in crate::history::ops(entries) {
            let id = op.id;
            let done = match &op.outcome {
                Outcome::Ok(d) => Some(d),
                _ => None,
            };
            let (key, value) = match &op.call {
                Call::Put { key, value }
                | Call::Cas { key, value, .. }
                | Call::LeasePut { key, value, .. } => (key, value),
                Call::Txn { ops } => {
                    let mut keys: Vec<&str> = ops.iter().filter_map(appended).collect();
                    keys.sort_unstable();
                    keys.dedup();
                    for key in keys {
                        match done.filter(|d| d.succeeded != Some(false)) {
                            Some(d) => w.ok.entry(d.revision).or_default().push(Write {
                                op: id,
                                key,
                                value: None,
                            }),
                            None if matches!(op.outcome, Outcome::Unknown { .. }) => {
                                w.maybe_txn.insert(key, id);
                            }
                            None => {}
                        }
                    }
                    continue;
                }
                Call::Get { .. }
                | Call::LeaseGrant { .. }
                | Call::LeaseKeepAlive { .. }
                | Call::LeaseRevoke { .. } => continue,
            };
            let (key, value) = (key.as_str(), value.as_str());
            let put = matches!(op.call, Call::Put { .. } | Call::LeasePut { .. });
            if matches!(op.call, Call::LeasePut { .. })
                && !matches!(op.outcome, Outcome::Failed { .. })
            {
                w.lease_keys.insert(key, id);
            }
            match done.map(|d| (d.revision, put || d.succeeded == Some(true), d.succeeded)) {
                Some((rev, true, _)) => {
                    w.ok.entry(rev).or_default().push(Write {
                        op: id,
                        key,
                        value: Some(value),
                    });
                    w.ok_values.insert((key, value), (id, rev));
                }
                // A Cas answered without saying whether it held: maybe.
                Some((_, false, None)) => {
                    w.maybe.insert((key, value), id);
                }
                Some(_) => {
                    w.failed.insert((key, value), id);
                }
                None if matches!(op.outcome, Outcome::Unknown { .. }) => {
                    w.maybe.insert((key, value), id);
                }
                None => {
                    w.failed.insert((key, value), id);
                }
            }
        }
        w
    }

    /// Whether `e` is a write that happened: `Ok(Some(op))` for an Unknown
    /// Put / Cas it shows happened; else the violation.
    fn check(&self, e: &Event) -> Result<Option<u64>, (&'static str, String)> {
        let (rev, key, value) = (e.mod_revision, e.key.as_str(), e.value.as_str());
        if let Some(ws) = self.ok.get(&rev) {
            let Some(w) = ws.iter().find(|w| w.key == key) else {
                let wrote: Vec<String> = ws
                    .iter()
                    .map(|w| format!("{} (op {})", w.key, w.op))
                    .collect();
                let why = format!(
                    "an event for {key} at revision {rev}, which wrote {}",
                    wrote.join(", ")
                );
                return Err(("wrong-key", why));
            };
            let op = w.op;
            if e.kind == EventKind::Delete {
                return Err((
                    "wrong-value",
                    format!("a delete of {key} at revision {rev}, op {op}'s put"),
                ));
            }
            return match w.value.filter(|v| *v != value) {
                Some(v) => Err((
                    "wrong-value",
                    format!("{key}={value:?} at revision {rev}, but op {op} wrote {v:?}"),
                )),
                None => Ok(None),
            };
        }
        if e.kind == EventKind::Delete && self.lease_keys.contains_key(key) {
            return Ok(None);
        }
        if e.kind == EventKind::Put {
            if let Some(&op) = self.maybe.get(&(key, value)) {
                return Ok(Some(op));
            }
            if self.maybe_txn.contains_key(key) {
                return Ok(None);
            }
        }
        let hint = match (
            self.ok_values.get(&(key, value)),
            self.failed.get(&(key, value)),
        ) {
            (Some((op, r)), _) => format!(" (op {op} wrote that value at revision {r})"),
            (None, Some(op)) => format!(" (op {op} wrote that value and failed)"),
            (None, None) => String::new(),
        };
        let what = format!("{:?} {key}={value:?} at revision {rev}", e.kind);
        Err((
            "phantom",
            format!("{what}: a write that never happened{hint}"),
        ))
    }
}

fn appended(m: &Micro) -> Option<&str> {
    match m {
        Micro::Append { key, .. } => Some(key),
        Micro::R { .. } => None,
    }
}

/// Whether a watch on `s` covers `key`.
fn in_range(s: &WatchStart, key: &str) -> bool {
    match s.range_end.as_str() {
        "" => key == s.key,
        "\0" => key >= s.key.as_str(),
        end => key >= s.key.as_str() && key < end,
    }
}

/// How explanations show a watch's range.
fn range(s: &WatchStart) -> String {
    match s.range_end.as_str() {
        "" => format!("key {:?}", s.key),
        "\0" => format!("keys from {:?} on", s.key),
        end => format!("range [{:?}, {end:?})", s.key),
    }
}

/// One watcher's stream.
#[derive(Default)]
struct Stream<'a> {
    start: Option<&'a WatchStart>,
    responses: Vec<&'a WatchResponse>,
}

/// What a watcher delivered: its window, and (revision, key)s.
struct Covered<'a> {
    watcher: u32,
    start: &'a WatchStart,
    from: i64,
    to: i64,
    delivered: HashSet<(i64, &'a str)>,
}

/// The first watcher that delivered a (revision, key), what, and whether it
/// matched a write.
type Seen<'a> = BTreeMap<(i64, &'a str), (EventKind, &'a str, u32, bool)>;

/// Checks every watcher of `entries` against the writes in it.
pub fn check(entries: &[Entry]) -> Report {
    let writes = Writes::new(entries);
    let mut sink = Sink::default();
    let mut streams: BTreeMap<u32, Stream> = BTreeMap::new();
    for e in entries {
        match e {
            Entry::WatchStart(s) => {
                let st = streams.entry(s.watcher).or_default();
                if st.start.is_some() {
                    let why = "started twice; the first start counts".to_string();
                    sink.push(s.watcher, "malformed", s.start_revision, why);
                }
                st.start = st.start.or(Some(s));
            }
            Entry::WatchResponse(r) => streams.entry(r.watcher).or_default().responses.push(r),
            _ => {}
        }
    }
    sink.report.watchers = streams.len();
    let (mut seen, mut unknown_at, mut covered) = (Seen::new(), HashMap::new(), Vec::new());
    for (&w, st) in &streams {
        sink.report.responses += st.responses.len();
        sink.report.events += st.responses.iter().map(|r| r.events.len()).sum::<usize>();
        let Some(start) = st.start else {
            let why = format!("{} responses and no watch_start", st.responses.len());
            sink.push(w, "malformed", 0, why);
            continue;
        };
        let c = stream(
            &mut sink,
            &writes,
            w,
            start,
            &st.responses,
            &mut seen,
            &mut unknown_at,
        );
        covered.push(c);
    }
    for c in &covered {
        missed(&mut sink, &writes, &seen, c);
    }
    sink.report
}

/// The checks on one watcher's responses, in order.
fn stream<'a>(
    sink: &mut Sink,
    writes: &Writes,
    w: u32,
    start: &'a WatchStart,
    responses: &[&'a WatchResponse],
    seen: &mut Seen<'a>,
    unknown_at: &mut HashMap<u64, i64>,
) -> Covered<'a> {
    let from = match (start.start_revision, responses.first()) {
        (r, _) if r > 0 => r,
        (_, Some(first)) => first
            .events
            .first()
            .map_or(first.header_revision.saturating_add(1), |e| e.mod_revision),
        (_, None) => i64::MAX,
    };
    let mut delivered: HashSet<(i64, &str)> = HashSet::new();
    // The response each revision came in.
    let mut came_in: HashMap<i64, usize> = HashMap::new();
    let (mut max_before, mut floor, mut canceled) = (0, 0, false);
    for (ri, r) in responses.iter().enumerate() {
        if canceled {
            let why = "a response after the watch was canceled".to_string();
            sink.push(w, "after-cancel", r.header_revision, why);
            continue;
        }
        let (mut last, mut max_here) = (None, max_before);
        for e in &r.events {
            let (rev, key) = (e.mod_revision, e.key.as_str());
            let ev = || format!("{:?} {key}={:?} at revision {rev}", e.kind, e.value);
            if !in_range(start, key) {
                let why = format!("{} outside the watch's {}", ev(), range(start));
                sink.push(w, "out-of-range", rev, why);
            }
            if rev < from {
                let why = format!("{} before the start, {from}", ev());
                sink.push(w, "before-start", rev, why);
            }
            let order = if !delivered.insert((rev, key)) {
                Some(("duplicate", "delivered again".to_string()))
            } else if came_in.get(&rev).is_some_and(|&i| i != ri) {
                Some((
                    "split-revision",
                    "after other events of that revision, in an earlier response".into(),
                ))
            } else if last.is_some_and(|l| rev < l) || rev < max_before {
                let after = last.unwrap_or(max_before).max(max_before);
                Some(("out-of-order", format!("after revision {after}")))
            } else if rev <= floor {
                Some((
                    "progress-lie",
                    format!("after a progress notification at {floor}"),
                ))
            } else {
                None
            };
            if let Some((kind, why)) = order {
                sink.push(w, kind, rev, format!("{} {why}", ev()));
            }
            came_in.entry(rev).or_insert(ri);
            (last, max_here) = (Some(rev), max_here.max(rev));
            if rev > r.header_revision {
                let why = format!(
                    "{} in a response with header revision {}",
                    ev(),
                    r.header_revision
                );
                sink.push(w, "header-behind", rev, why);
            }
            let checked = writes.check(e);
            match &checked {
                Err((kind, why)) => sink.push(w, kind, rev, why.clone()),
                &Ok(Some(op)) => {
                    if let Some(&r0) = unknown_at.get(&op).filter(|&&r0| r0 != rev) {
                        let why =
                            format!("{} is op {op}'s write, also seen at revision {r0}", ev());
                        sink.push(w, "duplicate-write", rev, why);
                    }
                    unknown_at.entry(op).or_insert(rev);
                }
                Ok(None) => {}
            }
            let first = (e.kind, e.value.as_str(), w, checked.is_ok());
            let &mut (kind, value, by, _) = seen.entry((rev, key)).or_insert(first);
            if (kind, value) != (e.kind, e.value.as_str()) {
                let why = format!("{}, but watcher {by} saw {kind:?} {value:?}", ev());
                sink.push(w, "cross-watcher", rev, why);
            }
        }
        max_before = max_here;
        if r.progress {
            floor = floor.max(r.header_revision);
        }
        canceled |= r.canceled || r.compact_revision > 0;
    }
    Covered {
        watcher: w,
        start,
        from,
        to: max_before.max(floor),
        delivered,
    }
}

/// Completeness: what the watcher should have delivered in its window.
fn missed(sink: &mut Sink, writes: &Writes, seen: &Seen, c: &Covered) {
    let (w, to) = (c.watcher, c.to);
    if c.from > to {
        return;
    }
    for (&rev, ws) in writes.ok.range(c.from..=to) {
        for x in ws.iter().filter(|x| in_range(c.start, x.key)) {
            if !c.delivered.contains(&(rev, x.key)) {
                let why = format!(
                    "missed revision {rev}: op {}'s write of {} (covered up to {to})",
                    x.op, x.key
                );
                sink.push(w, "missed", rev, why);
            }
        }
    }
    for (&(rev, key), &(kind, value, by, happened)) in seen.range((c.from, "")..) {
        if rev > to {
            break;
        }
        let known = writes.ok.contains_key(&rev);
        if happened && !known && in_range(c.start, key) && !c.delivered.contains(&(rev, key)) {
            let why = format!("missed revision {rev}: {kind:?} {key}={value:?}, which watcher {by} delivered (covered up to {to})");
            sink.push(w, "missed", rev, why);
        }
    }
}
