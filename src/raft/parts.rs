//! [`PartBook`]: deciding whether a cross-shard part takes effect
//! (DESIGN §2.1 point 4), the same way on every member and in every replay.
//!
//! A request that changed keys on several shards is appended to each
//! participant's log as a [`Part`](super::types::ShardCommand::Part) with the
//! same revision r. It committed iff every participant's log holds its part.
//! A shard whose log reaches a part holds it (and everything after it in that
//! log) until each participant is decided for r:
//! - it holds its own part of r → fine;
//! - it has already reached an entry with revision (or `closed`) ≥ r without
//!   holding a part of r → its log never will (each log is in revision order):
//!   the part is dropped everywhere.
//!
//! Once all participants hold their part, it is applied everywhere.
//!
//! The book is shared by a member's shard cores; it holds only what the
//! replay or a follower is waiting for (a write leader applies its parts when
//! it stamps them and never asks the book). Entries are forgotten once every
//! participant is past their revision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// What happens to a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every participant holds its part: apply it.
    Apply,
    /// Some participant went past the revision without its part: drop it.
    Drop,
}

/// Where a shard's replay is, at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    Running,
    /// Waiting on the part of `revision`; the store was at `store`.
    Holding {
        revision: i64,
        store: i64,
    },
    /// Every committed entry applied; the store is at `revision`.
    Done {
        revision: i64,
    },
}

#[derive(Debug, Default)]
struct Book {
    /// Per revision: its participants, which of them hold their part, and
    /// how many holders still wait for the decision.
    holds: BTreeMap<i64, (Vec<u32>, BTreeSet<u32>, usize)>,
    /// Per shard: the highest revision or `closed` its log has reached
    /// (parts count once decided).
    progress: Vec<i64>,
    /// Per shard, while the member starts.
    replay: Vec<Replay>,
    /// Per shard: the newest revision in its log at start, applied or not
    /// (entries behind a held part are applied only once it is decided).
    newest: Vec<i64>,
    /// Per shard: the revision of its newest durable snapshot. A part at or
    /// below every shard's is replayed by none of them.
    snapshotted: Vec<i64>,
}

impl Book {
    fn decide(&self, revision: i64, participants: &[u32]) -> Option<Decision> {
        let held = self.holds.get(&revision).map(|(_, h, _)| h);
        let mut all = true;
        for p in participants {
            if held.is_some_and(|h| h.contains(p)) {
                continue;
            }
            if self.progress[*p as usize] >= revision {
                return Some(Decision::Drop);
            }
            all = false;
        }
        all.then_some(Decision::Apply)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct PartBook {
    book: Mutex<Book>,
    /// Bumped on every change; waiters re-check.
    changed: tokio::sync::watch::Sender<u64>,
}

impl PartBook {
    pub fn new(shards: usize) -> Self {
        Self {
            book: Mutex::new(Book {
                holds: BTreeMap::new(),
                progress: vec![0; shards],
                replay: vec![Replay::Running; shards],
                newest: vec![0; shards],
                snapshotted: vec![0; shards],
            }),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Book)) {
        f(&mut self.book.lock().expect("part book lock"));
        self.changed.send_modify(|n| *n += 1);
    }

    /// `shard`'s log has reached an entry at `revision` (or with `closed` =
    /// `revision`) that is not an undecided part.
    pub fn reached(&self, shard: u32, revision: i64) {
        self.update(|b| {
            let p = &mut b.progress[shard as usize];
            *p = (*p).max(revision);
        });
    }

    /// Every shard is past `revision` unless it already holds a part of it:
    /// what a write leader knows when it starts (it stamps only above
    /// `revision`, and every log was replayed up to its undecided part).
    pub fn close_all(&self, revision: i64) {
        self.update(|b| {
            for p in &mut b.progress {
                *p = (*p).max(revision);
            }
        });
    }

    /// The decision for `shard`'s part of `revision`, if already known.
    pub fn decide(&self, revision: i64, participants: &[u32]) -> Option<Decision> {
        self.book
            .lock()
            .expect("part book lock")
            .decide(revision, participants)
    }

    /// Records that `shard` holds its part of `revision` (its store being at
    /// `store`) and waits until the part is decided. The caller marks the
    /// shard past it ([`PartBook::reached`]) once it applied the part and
    /// published its events: a follower's visible revision must not pass
    /// the part before then (its watchers would get the revision without
    /// this shard's events).
    pub async fn hold(
        &self,
        shard: u32,
        revision: i64,
        participants: &[u32],
        store: i64,
    ) -> Decision {
        let mut rx = self.changed.subscribe();
        self.update(|b| {
            let entry = b
                .holds
                .entry(revision)
                .or_insert_with(|| (participants.to_vec(), BTreeSet::new(), 0));
            // Registered by a snapshot, which does not know the participants.
            if entry.0.is_empty() {
                entry.0 = participants.to_vec();
            }
            entry.1.insert(shard);
            entry.2 += 1;
            let r = &mut b.replay[shard as usize];
            if *r == Replay::Running {
                *r = Replay::Holding { revision, store };
            }
        });
        let decision = loop {
            if let Some(d) = self.decide(revision, participants) {
                break d;
            }
            // The sender lives in `self`: this cannot fail.
            let _ = rx.changed().await;
        };
        self.update(|b| {
            let r = &mut b.replay[shard as usize];
            if matches!(r, Replay::Holding { .. }) {
                *r = Replay::Running;
            }
            // Forgotten once every holder has its decision: a participant
            // that reaches its part later decides the same from `progress`
            // (every holder of an applied part has seen it).
            if let Some(entry) = b.holds.get_mut(&revision) {
                entry.2 -= 1;
                if entry.2 == 0 {
                    b.holds.remove(&revision);
                }
            }
        });
        decision
    }

    /// `shard` has applied every committed entry of its log; its store is at
    /// `revision`.
    /// `shard`'s log holds nothing newer than `revision` (at start, before
    /// its replay): the member must stamp above it even if the entries are
    /// applied after it starts stamping (they follow a part held until
    /// [`PartBook::close_all`]).
    pub fn newest_in_log(&self, shard: u32, revision: i64) {
        self.update(|b| b.newest[shard as usize] = revision);
    }

    /// `shard`'s newest durable snapshot is at `revision`.
    pub fn snapshotted(&self, shard: u32, revision: i64) {
        self.update(|b| {
            let s = &mut b.snapshotted[shard as usize];
            *s = (*s).max(revision);
        });
    }

    /// The lowest of every shard's newest snapshot revision: no shard
    /// replays a part at or below it.
    pub fn min_snapshotted(&self) -> i64 {
        let b = self.book.lock().expect("part book lock");
        b.snapshotted.iter().copied().min().unwrap_or(0)
    }

    /// `shard`'s snapshot holds its parts of `revisions` (they are not in
    /// its log any more): it holds them as if it had replayed them.
    pub fn held_in_snapshot(&self, shard: u32, revisions: impl IntoIterator<Item = i64>) {
        self.update(|b| {
            for r in revisions {
                b.holds
                    .entry(r)
                    .or_insert_with(|| (Vec::new(), BTreeSet::new(), 0))
                    .1
                    .insert(shard);
            }
        });
    }

    pub fn replayed(&self, shard: u32, revision: i64) {
        self.update(|b| b.replay[shard as usize] = Replay::Done { revision });
    }

    /// While the member starts: once no shard's replay can move any more
    /// (each is done, or holds a part no log can complete), the newest
    /// revision in any log (applied or not: see [`PartBook::newest_in_log`]).
    /// Parts still undecided then were left incomplete by a crash:
    /// [`PartBook::close_all`] at that revision drops them.
    pub fn replay_settled(&self) -> Option<i64> {
        let b = self.book.lock().expect("part book lock");
        let mut last = b.newest.iter().copied().max().unwrap_or(0);
        for r in &b.replay {
            match r {
                Replay::Running => return None,
                Replay::Done { revision } => last = last.max(*revision),
                Replay::Holding { revision, store } => {
                    let participants = &b.holds.get(revision)?.0;
                    if b.decide(*revision, participants).is_some() {
                        return None; // about to move on
                    }
                    last = last.max(*revision).max(*store);
                }
            }
        }
        Some(last)
    }

    /// The member's visible revision while it follows (DESIGN §2.1 point 3):
    /// every shard has applied each of its entries up to it.
    pub fn visible(&self) -> i64 {
        let b = self.book.lock().expect("part book lock");
        b.progress
            .iter()
            .zip(&b.snapshotted)
            .map(|(p, s)| *p.max(s))
            .min()
            .unwrap_or(0)
    }

    /// Changes to the book as they happen (see [`PartBook::visible`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Revisions with a held part not yet forgotten (tests).
    pub fn held(&self) -> Vec<i64> {
        let b = self.book.lock().expect("part book lock");
        b.holds.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn applied_once_every_participant_holds_its_part() {
        let book = PartBook::new(3);
        let mut a = Box::pin(book.hold(0, 5, &[0, 2], 0));
        assert!(a.as_mut().now_or_never().is_none(), "shard 2 is undecided");
        book.reached(1, 9); // not a participant: changes nothing
        assert!(a.as_mut().now_or_never().is_none());
        let c = book.hold(2, 5, &[0, 2], 0).now_or_never();
        assert_eq!(c, Some(Decision::Apply));
        assert_eq!(a.now_or_never(), Some(Decision::Apply));
        assert!(
            book.held().is_empty(),
            "forgotten once every holder decided"
        );
    }

    #[test]
    fn the_visible_revision_passes_a_part_once_every_shard_applied_it() {
        let book = PartBook::new(2);
        book.reached(0, 4);
        book.reached(1, 4);
        let mut a = Box::pin(book.hold(0, 5, &[0, 1], 4));
        assert!(a.as_mut().now_or_never().is_none());
        assert_eq!(
            book.hold(1, 5, &[0, 1], 4).now_or_never(),
            Some(Decision::Apply)
        );
        assert_eq!(a.now_or_never(), Some(Decision::Apply));
        // Decided, not yet applied and published by either shard.
        assert_eq!(book.visible(), 4);
        book.reached(0, 5);
        assert_eq!(book.visible(), 4, "shard 1 has not applied its part");
        book.reached(1, 5);
        assert_eq!(book.visible(), 5);
    }

    #[test]
    fn dropped_when_a_participant_went_past_without_its_part() {
        let book = PartBook::new(2);
        book.reached(1, 4);
        let mut a = Box::pin(book.hold(0, 5, &[0, 1], 0));
        assert!(a.as_mut().now_or_never().is_none(), "shard 1 is at 4 < 5");
        book.reached(1, 6);
        assert_eq!(a.now_or_never(), Some(Decision::Drop));
    }

    #[test]
    fn replay_settles_when_no_shard_can_move() {
        let book = PartBook::new(2);
        assert_eq!(book.replay_settled(), None, "both still replaying");
        let mut a = Box::pin(book.hold(0, 7, &[0, 1], 6));
        assert!(a.as_mut().now_or_never().is_none());
        assert_eq!(book.replay_settled(), None, "shard 1 may still reach 7");
        book.replayed(1, 5);
        assert_eq!(book.replay_settled(), Some(7), "shard 1 ended below 7");
        book.close_all(7);
        assert_eq!(a.now_or_never(), Some(Decision::Drop));
    }

    #[test]
    fn settled_counts_entries_behind_a_held_part() {
        let book = PartBook::new(2);
        // Shard 1 holds the part of 10 (shard 0 never got its part); its
        // log goes on to 25 behind it. Shard 0 is done at 9.
        book.newest_in_log(0, 9);
        book.newest_in_log(1, 25);
        book.replayed(0, 9);
        let mut held = Box::pin(book.hold(1, 10, &[0, 1], 9));
        assert!(held.as_mut().now_or_never().is_none());
        // Shard 0's progress (9) does not decide 10, so the hold stays until
        // close_all; the newest revision is 25, not 10.
        assert_eq!(book.replay_settled(), Some(25));
        book.close_all(25);
        assert_eq!(held.now_or_never(), Some(Decision::Drop));
    }

    #[test]
    fn a_part_inside_a_snapshot_counts_as_held() {
        let book = PartBook::new(2);
        // Shard 0's snapshot holds its part of 10 and went on to 30; shard 1
        // replays its part of 10 from its log.
        book.held_in_snapshot(0, [10]);
        book.reached(0, 30);
        let held = Box::pin(book.hold(1, 10, &[0, 1], 9));
        assert_eq!(held.now_or_never(), Some(Decision::Apply));
        // Without the snapshot's word, shard 0 went past 10 without it.
        let book = PartBook::new(2);
        book.reached(0, 30);
        let held = Box::pin(book.hold(1, 10, &[0, 1], 9));
        assert_eq!(held.now_or_never(), Some(Decision::Drop));
    }

    #[test]
    fn close_all_decides_parts_left_by_a_crash() {
        let book = PartBook::new(2);
        let mut a = Box::pin(book.hold(0, 7, &[0, 1], 0));
        assert!(a.as_mut().now_or_never().is_none());
        book.close_all(7);
        assert_eq!(a.now_or_never(), Some(Decision::Drop));
        // A part both hold survives close_all.
        let book = PartBook::new(2);
        let mut a = Box::pin(book.hold(0, 8, &[0, 1], 0));
        assert!(a.as_mut().now_or_never().is_none());
        let mut b = Box::pin(book.hold(1, 8, &[0, 1], 0));
        book.close_all(8);
        assert_eq!(b.as_mut().now_or_never(), Some(Decision::Apply));
        assert_eq!(a.now_or_never(), Some(Decision::Apply));
    }
}
