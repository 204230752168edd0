//! The member's recent events, in revision order, for watchers (etcd's
//! watchable store).
//!
//! A shard publishes the events of each write when it stamps and applies it,
//! before the write can commit; cross-shard parts publish the same way. The
//! hub holds them as *pending* until the committed prefix C passes their
//! revision, then *releases* them, in revision order, into a bounded log. So
//! at the moment C reaches a revision, every event at or below it is in the
//! hub, whichever shard wrote it, and a watcher that reads up to C sees them
//! in order with none missing. Revisions that never commit are never released.
//!
//! Nothing is recorded while the member has no watcher (etcd's cost too):
//! shards ask [`WatchHub::recording`] before they build events. When the
//! first watcher arrives, recording starts with the next revision stamped;
//! anything older is read from the histories (see [`WatchHub::add_watcher`]).
//!
//! The log keeps the newest events up to a byte bound. A watcher whose next
//! revision has left the log (it started in the past, or fell behind) reads
//! that stretch from the shards' MVCC histories instead (see
//! `crate::api::watch`), as etcd's unsynced watchers do; so the hub's memory is
//! bounded however slow a watcher is.

use crate::mvcc::Event;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The events of one revision.
pub type Batch = Arc<(i64, Vec<Event>)>;

/// Default bound on the bytes of released events kept.
pub const WATCH_LOG_BYTES_DEFAULT: usize = 8 << 20;

/// See the module docs.
pub struct WatchHub {
    inner: Mutex<Inner>,
    max_bytes: usize,
    /// Some watcher exists: shards publish events.
    recording: AtomicBool,
}

struct Inner {
    /// Published, not yet released (above C when published).
    pending: BTreeMap<i64, Vec<Event>>,
    /// Released, in revision order.
    log: VecDeque<Batch>,
    log_bytes: usize,
    /// Every event with a revision in `start..=released` is in `log`.
    start: i64,
    /// The C the hub last released up to.
    released: i64,
    /// Watchers of the member, over all streams.
    watchers: usize,
}

/// What a watcher gets from [`WatchHub::read`].
#[derive(Debug)]
pub enum Read {
    /// The released revisions from the asked one on (possibly none), and the
    /// revision they reach: every event up to it was in the log.
    Events(Vec<Batch>, i64),
    /// The asked revision has left the log (or predates the hub): read it from
    /// the histories, up to the returned revision, then ask again after it.
    Behind(i64),
}

fn event_bytes(e: &Event) -> usize {
    let kv = |k: &crate::mvcc::KeyValue| k.key.len() + k.value.len() + 48;
    kv(&e.kv) + e.prev.as_ref().map_or(0, kv)
}

impl WatchHub {
    /// A hub whose history starts after `last` (events up to it are only in
    /// the shards' histories), keeping up to `max_bytes` of released events.
    pub fn new(last: i64, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pending: BTreeMap::new(),
                log: VecDeque::new(),
                log_bytes: 0,
                start: last + 1,
                released: last,
                watchers: 0,
            }),
            max_bytes,
            recording: AtomicBool::new(false),
        }
    }

    /// True while some watcher exists: a shard that stamps a revision asks
    /// this after stamping it, and publishes its events if so.
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::SeqCst)
    }

    /// Counts a new watcher. The first one starts recording: every revision
    /// stamped from now on (above `last_stamped()`, read after recording is
    /// switched on) will be published; older ones are read from the histories.
    pub fn add_watcher(&self, last_stamped: impl FnOnce() -> i64) {
        let mut inner = self.lock();
        inner.watchers += 1;
        if inner.watchers == 1 {
            self.recording.store(true, Ordering::SeqCst);
            // A shard that stamps above this value stamped after the store
            // above (the sequencer's lock orders them) and sees it.
            inner.start = last_stamped() + 1;
        }
    }

    /// Counts a watcher gone; the last one stops recording and frees the log.
    pub fn remove_watcher(&self) {
        let mut inner = self.lock();
        inner.watchers = inner.watchers.saturating_sub(1);
        if inner.watchers == 0 {
            self.recording.store(false, Ordering::SeqCst);
            inner.log.clear();
            inner.log_bytes = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the events of revisions not yet committed (a shard's stamped
    /// writes: `(revision, events)`), and releases what `committed` (the
    /// current C) covers.
    pub fn publish(&self, revisions: impl IntoIterator<Item = (i64, Vec<Event>)>, committed: i64) {
        let mut inner = self.lock();
        for (rev, events) in revisions {
            debug_assert!(
                rev > inner.released,
                "revision {rev} published after C passed it"
            );
            if !events.is_empty() {
                inner.pending.entry(rev).or_default().extend(events);
            }
        }
        self.release(&mut inner, committed);
    }

    fn release(&self, inner: &mut Inner, committed: i64) {
        if committed <= inner.released {
            return;
        }
        while let Some(entry) = inner.pending.first_entry() {
            if *entry.key() > committed {
                break;
            }
            let (rev, mut events) = entry.remove_entry();
            if inner.watchers == 0 {
                continue; // published before the last watcher left
            }
            // Shards publish a cross-shard revision's parts in any order;
            // watchers get a revision's events in key order, however read.
            events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
            inner.log_bytes += events.iter().map(event_bytes).sum::<usize>();
            inner.log.push_back(Arc::new((rev, events)));
        }
        inner.released = committed;
        while inner.log_bytes > self.max_bytes {
            let Some(old) = inner.log.pop_front() else {
                break;
            };
            inner.log_bytes -= old.1.iter().map(event_bytes).sum::<usize>();
            inner.start = old.0 + 1;
        }
    }

    /// Drops the pending events above `revision` of the keys `owns` names:
    /// a shard rolled back writes that will never commit (its revisions
    /// may be reused by another leader for other writes).
    pub fn retract_above(&self, revision: i64, owns: &dyn Fn(&[u8]) -> bool) {
        let mut inner = self.lock();
        // C may be past `revision` (it is member-wide: other shards' writes
        // committed), but none of this shard's released events is: a write
        // of the ended leadership that committed was in this shard's log
        // before the new leader's entry, so it is applied (≤ `revision`).
        debug_assert!(
            inner
                .log
                .iter()
                .filter(|b| b.0 > revision)
                .all(|b| b.1.iter().all(|e| !owns(&e.kv.key))),
            "retracting released events"
        );
        for (_, events) in inner.pending.range_mut(revision + 1..) {
            events.retain(|e| !owns(&e.kv.key));
        }
        inner.pending.retain(|_, events| !events.is_empty());
    }

    /// The revisions up to `revision` reached this member without passing
    /// the hub (a snapshot was installed): watchers read them from the
    /// histories.
    pub fn skip_through(&self, revision: i64) {
        let mut inner = self.lock();
        if revision >= inner.start {
            inner.log.clear();
            inner.log_bytes = 0;
            inner.start = revision + 1;
        }
        inner.pending.retain(|r, _| *r > revision);
    }

    /// The released events from revision `from` on, after releasing what
    /// `committed` (the current C) covers.
    pub fn read(&self, from: i64, committed: i64) -> Read {
        let mut inner = self.lock();
        self.release(&mut inner, committed);
        if from < inner.start || inner.watchers == 0 {
            return Read::Behind(inner.released);
        }
        let i = inner.log.partition_point(|b| b.0 < from);
        Read::Events(inner.log.range(i..).cloned().collect(), inner.released)
    }

    /// Watchers of the member, over all streams (metrics).
    pub fn watchers(&self) -> usize {
        self.lock().watchers
    }

    /// Bytes of released events kept (for tests and metrics).
    pub fn log_bytes(&self) -> usize {
        self.lock().log_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::KeyValue;

    fn ev(key: &str, rev: i64) -> Event {
        Event {
            delete: false,
            kv: KeyValue {
                key: key.into(),
                mod_revision: rev,
                create_revision: rev,
                version: 1,
                value: vec![0; 100],
                lease: 0,
            },
            prev: None,
        }
    }

    fn revs(r: &Read) -> Vec<i64> {
        match r {
            Read::Events(b, _) => b.iter().map(|b| b.0).collect(),
            Read::Behind(_) => panic!("behind"),
        }
    }

    #[test]
    fn a_shard_retracts_its_uncommitted_events_below_a_member_wide_c() {
        let hub = WatchHub::new(1, 1 << 20);
        hub.add_watcher(|| 1);
        // Shard A's 2 and 5 committed (C = 5 once B's 3 and 4 did too);
        // B stamped 6 and 7, which its new leader's entry rolls back.
        hub.publish([(2, vec![ev("a", 2)]), (5, vec![ev("a", 5)])], 1);
        hub.publish([(3, vec![ev("b", 3)]), (4, vec![ev("b", 4)])], 1);
        hub.publish([(6, vec![ev("b", 6)]), (7, vec![ev("b", 7)])], 5);
        // B applied up to 4: C (5) is past it, none of B's released events.
        hub.retract_above(4, &|k: &[u8]| k == b"b");
        assert_eq!(revs(&hub.read(2, 7)), vec![2, 3, 4, 5]);
    }

    #[test]
    fn events_are_released_in_revision_order_only_below_c() {
        let hub = WatchHub::new(1, 1 << 20);
        hub.add_watcher(|| 1);
        // Shard B stamps 3, shard A stamps 2 and 4; C is still 1.
        hub.publish([(3, vec![ev("b", 3)])], 1);
        hub.publish([(2, vec![ev("a", 2)]), (4, vec![ev("a", 4)])], 1);
        assert_eq!(revs(&hub.read(2, 1)), Vec::<i64>::new());
        // 3 commits first, but C stays at 1 until 2 does: nothing released.
        assert_eq!(revs(&hub.read(2, 1)), Vec::<i64>::new());
        assert_eq!(revs(&hub.read(2, 3)), vec![2, 3]);
        match hub.read(4, 4) {
            Read::Events(b, upto) => {
                assert_eq!(upto, 4);
                assert_eq!(b[0].1[0].kv.key, b"a");
            }
            r => panic!("{r:?}"),
        }
        // A revision with no events (a gap) is simply absent.
        hub.publish([(6, vec![ev("c", 6)])], 4);
        assert_eq!(revs(&hub.read(2, 6)), vec![2, 3, 4, 6]);
        // Before the hub's start: from the histories.
        assert!(matches!(hub.read(1, 6), Read::Behind(6)));
    }

    #[test]
    fn the_log_is_bounded_and_readers_behind_it_are_told_so() {
        let hub = WatchHub::new(1, 2_000);
        hub.add_watcher(|| 1);
        for rev in 2..200 {
            hub.publish([(rev, vec![ev("k", rev)])], rev);
            assert!(hub.log_bytes() <= 2_000);
        }
        assert!(matches!(hub.read(2, 199), Read::Behind(199)));
        let recent = revs(&hub.read(190, 199));
        assert_eq!(recent, (190..200).collect::<Vec<_>>());
    }

    #[test]
    fn recording_runs_only_while_watchers_exist_and_starts_after_the_stamped() {
        let hub = WatchHub::new(1, 1 << 20);
        assert!(!hub.recording());
        hub.add_watcher(|| 5); // 2..=5 stamped before the first watcher
        assert!(hub.recording());
        hub.publish([(6, vec![ev("a", 6)])], 4);
        // 2..=5 may lack events here: read from the histories.
        assert!(matches!(hub.read(3, 6), Read::Behind(6)));
        assert_eq!(revs(&hub.read(6, 6)), vec![6]);
        hub.add_watcher(|| 99); // a second watcher changes nothing
        assert_eq!(revs(&hub.read(6, 6)), vec![6]);
        hub.remove_watcher();
        hub.remove_watcher();
        assert!(!hub.recording());
        assert_eq!(hub.log_bytes(), 0, "the log is freed");
        assert!(matches!(hub.read(6, 6), Read::Behind(6)));
    }
}
