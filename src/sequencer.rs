//! The write leader's revision sequencer and committed prefix C (DESIGN §2.1,
//! points 2 and 3).
//!
//! [`Sequencer`] is the sans-IO core: it hands out revisions in order and
//! tracks which are committed. C is the largest revision such that every
//! revision at or below it is committed (or abandoned: known never to commit,
//! a gap). A write is acknowledged only once C reaches its revision; reads are
//! served at C. [`SharedSequencer`] wraps it for the shard cores (a short
//! mutex) and publishes C on a watch channel the front threads wait on.
//!
//! Invariant (checked by `SharedSequencer::publish`): the published C only
//! moves forward, and it moves while the lock that computed it is held, so
//! publications happen in the order the values were computed. A write is
//! acknowledged once the published C covers it, and a read taken after that
//! reads at a C at least as high: publishing a C computed earlier after a
//! later one (as this code once did, after releasing the lock) made C go
//! back for a moment, and a read then missed an acknowledged write.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// See the module docs.
#[derive(Debug)]
pub struct Sequencer {
    /// Next revision to hand out.
    next: i64,
    /// Handed out, neither committed nor abandoned yet.
    pending: BTreeSet<i64>,
    /// The committed prefix C.
    committed: i64,
}

impl Sequencer {
    /// Starts after `last` (every revision up to it is committed).
    pub fn new(last: i64) -> Self {
        Self {
            next: last + 1,
            pending: BTreeSet::new(),
            committed: last,
        }
    }

    /// The next revision, now pending.
    pub fn stamp(&mut self) -> i64 {
        let rev = self.next;
        self.next += 1;
        self.pending.insert(rev);
        rev
    }

    /// Marks `rev` committed; returns C.
    ///
    /// # Panics
    /// If `rev` is not pending: committing twice or a revision never handed out
    /// means the caller's bookkeeping is broken.
    pub fn commit(&mut self, rev: i64) -> i64 {
        assert!(
            self.pending.remove(&rev),
            "revision {rev} committed but not pending"
        );
        self.advance()
    }

    /// Marks `rev` as never going to commit (its proposal was refused before it
    /// reached any log); it becomes a gap. Returns C.
    ///
    /// # Panics
    /// If `rev` is not pending.
    pub fn abandon(&mut self, rev: i64) -> i64 {
        assert!(
            self.pending.remove(&rev),
            "revision {rev} abandoned but not pending"
        );
        self.advance()
    }

    fn advance(&mut self) -> i64 {
        let c = self
            .pending
            .first()
            .map_or(self.next - 1, |first| first - 1);
        assert!(c >= self.committed, "C never goes back");
        self.committed = c;
        c
    }

    /// C: every revision at or below it is committed (or a gap).
    pub fn committed(&self) -> i64 {
        self.committed
    }

    /// The last revision handed out.
    pub fn last_stamped(&self) -> i64 {
        self.next - 1
    }

    pub fn check_invariants(&self) {
        assert!(self.committed < self.next);
        if let Some(first) = self.pending.first() {
            assert_eq!(
                self.committed,
                first - 1,
                "C stops right below the oldest pending revision"
            );
        } else {
            assert_eq!(
                self.committed,
                self.next - 1,
                "nothing pending: C is the last revision"
            );
        }
        assert!(self.pending.iter().all(|r| *r < self.next));
    }
}

/// A revision handed out in one write leadership (see [`SharedSequencer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The leadership it was stamped in.
    pub epoch: u64,
    pub revision: i64,
}

struct State {
    seq: Sequencer,
    /// Bumped each time this member starts leading.
    epoch: u64,
    /// This member is the write leader and may stamp.
    leading: bool,
    /// A stamp of this epoch whose entry Raft refused to append (see
    /// [`refused`](SharedSequencer::refused)): the lowest such revision.
    refused: Option<(u64, i64)>,
}

/// The sequencer shared by a member's shard cores, publishing C.
///
/// A member stamps only while it is the write leader (DESIGN §2.1.1). Each
/// leadership is an *epoch*: [`lead`](Self::lead) starts one above what the
/// logs hold, [`follow`](Self::follow) ends it. A stamp of an ended epoch
/// never commits here (the new leader's failover decides what became of
/// it): commits and abandons of old stamps are ignored. While following, C
/// is the member's visible revision, raised by [`observe`](Self::observe).
///
/// Invariant (checked in `publish`): the published C only moves forward,
/// over every epoch and both modes.
pub struct SharedSequencer {
    inner: Mutex<State>,
    committed_tx: tokio::sync::watch::Sender<i64>,
    /// While following: the newest revision any shard applied (see
    /// [`last_stamped`](Self::last_stamped)).
    applied: std::sync::atomic::AtomicI64,
}

impl SharedSequencer {
    /// A write leader's sequencer (epoch 1) stamping above `last`.
    pub fn new(last: i64) -> Self {
        let (committed_tx, _) = tokio::sync::watch::channel(last);
        Self {
            inner: Mutex::new(State {
                seq: Sequencer::new(last),
                epoch: 1,
                leading: true,
                refused: None,
            }),
            committed_tx,
            applied: std::sync::atomic::AtomicI64::new(last),
        }
    }

    /// A follower's sequencer whose visible revision is `visible`.
    pub fn following(visible: i64) -> Self {
        let s = Self::new(visible);
        s.lock().leading = false;
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock already stops the member.
        self.inner.lock().expect("sequencer lock")
    }

    /// The next revision, if this member leads.
    pub fn stamp(&self) -> Option<Stamp> {
        let mut inner = self.lock();
        inner.leading.then(|| Stamp {
            epoch: inner.epoch,
            revision: inner.seq.stamp(),
        })
    }

    /// The next revision, if this member still leads in `epoch`.
    pub fn stamp_in(&self, epoch: u64) -> Option<Stamp> {
        let mut inner = self.lock();
        (inner.leading && inner.epoch == epoch).then(|| Stamp {
            epoch,
            revision: inner.seq.stamp(),
        })
    }

    /// The epoch this member leads in, if it leads.
    pub fn leading_epoch(&self) -> Option<u64> {
        let inner = self.lock();
        inner.leading.then_some(inner.epoch)
    }

    /// Raft refused to append `stamp`'s entry although this member still
    /// leads its group (openraft refuses writes while the leader's quorum
    /// lease has lapsed, or while it hands the group over): the revision will
    /// never commit, and the writes stamped after it on its shard may have
    /// read its effects. The epoch ends here (no more stamps; the next
    /// failover drops what the logs lack and closes every group above it),
    /// and no write of the epoch above it is acknowledged
    /// ([`acknowledgeable`](Self::acknowledgeable)), even if it commits.
    pub fn refused(&self, stamp: Stamp) {
        let mut inner = self.lock();
        if inner.epoch != stamp.epoch {
            return;
        }
        let lowest = inner
            .refused
            .filter(|(e, _)| *e == stamp.epoch)
            .map_or(stamp.revision, |(_, r)| r.min(stamp.revision));
        inner.refused = Some((stamp.epoch, lowest));
        if inner.leading {
            inner.leading = false;
            let c = self.committed();
            self.applied
                .fetch_max(c, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether a committed `stamp` may be acknowledged: not if a revision
    /// below it in its epoch was refused (see [`refused`](Self::refused)).
    pub fn acknowledgeable(&self, stamp: Stamp) -> bool {
        let inner = self.lock();
        !matches!(inner.refused, Some((e, r)) if e == stamp.epoch && stamp.revision > r)
    }

    /// Marks `stamp` committed (ignored if its leadership ended).
    pub fn commit(&self, stamp: Stamp) {
        let mut inner = self.lock();
        if inner.leading && inner.epoch == stamp.epoch {
            let c = inner.seq.commit(stamp.revision);
            self.publish(c);
        }
        drop(inner);
    }

    /// Marks `stamp` as never going to commit (ignored if its leadership ended).
    pub fn abandon(&self, stamp: Stamp) {
        let mut inner = self.lock();
        if inner.leading && inner.epoch == stamp.epoch {
            let c = inner.seq.abandon(stamp.revision);
            self.publish(c);
        }
        drop(inner);
    }

    /// Starts a write leadership: every revision up to `last` is committed
    /// (the failover saw to it), stamps continue above it. Returns the epoch.
    ///
    /// # Panics
    /// If `last` is below C: a leader never stamps a revision already visible.
    pub fn lead(&self, last: i64) -> u64 {
        let mut inner = self.lock();
        assert!(
            last >= self.committed(),
            "leading above {last}, below C {}",
            self.committed()
        );
        inner.seq = Sequencer::new(last);
        inner.epoch += 1;
        inner.leading = true;
        self.publish(last);
        inner.epoch
    }

    /// Ends the write leadership: nothing more is stamped, and C stays where
    /// it is until [`observe`](Self::observe) raises it.
    pub fn follow(&self) {
        let mut inner = self.lock();
        inner.leading = false;
        let c = self.committed();
        self.applied
            .fetch_max(c, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this member stamps.
    pub fn leading(&self) -> bool {
        self.lock().leading
    }

    /// While following: the member's visible revision reached `visible`.
    pub fn observe(&self, visible: i64) {
        let inner = self.lock();
        if !inner.leading && visible > self.committed() {
            self.publish(visible);
        }
        drop(inner);
    }

    /// While following: a shard applied `revision` (before it asks the watch
    /// hub whether to publish its events; see `last_stamped`).
    pub fn note_applied(&self, revision: i64) {
        self.applied
            .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
    }

    /// Publishes `c`, computed under the lock the caller still holds (see
    /// the module docs): in lock order, so never below what is published.
    fn publish(&self, c: i64) {
        // Widens the window between computing C and publishing it (the
        // correctness harness and the racing-commits test set it).
        fail::fail_point!("sequencer::publish");
        self.committed_tx.send_if_modified(|published| {
            assert!(
                c >= *published,
                "C goes back: publishing {c} after {published}"
            );
            std::mem::replace(published, c) != c
        });
    }

    pub fn committed(&self) -> i64 {
        *self.committed_tx.borrow()
    }

    /// The last revision handed out (a leader), or the newest a shard
    /// applied (a follower): a revision above it is stamped, or applied,
    /// after this call, by a shard that then sees the watch hub recording.
    pub fn last_stamped(&self) -> i64 {
        let inner = self.lock();
        if inner.leading {
            inner.seq.last_stamped()
        } else {
            self.applied.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// C as it moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.committed_tx.subscribe()
    }

    /// Resolves once C is at least `rev`.
    pub async fn wait_committed(&self, rev: i64) {
        let mut rx = self.committed_tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|c| *c >= rev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_waits_for_the_oldest_pending_revision() {
        let mut s = Sequencer::new(1);
        let (a, b, c) = (s.stamp(), s.stamp(), s.stamp());
        assert_eq!((a, b, c), (2, 3, 4));
        assert_eq!(s.commit(c), 1, "4 committed but 2 and 3 are not");
        assert_eq!(s.commit(a), 2);
        assert_eq!(s.abandon(b), 4, "3 is a gap; 4 was already committed");
        s.check_invariants();
    }

    #[test]
    #[should_panic(expected = "not pending")]
    fn committing_twice_panics() {
        let mut s = Sequencer::new(0);
        let r = s.stamp();
        s.commit(r);
        s.commit(r);
    }

    /// `wait_committed` is pending until C reaches the revision, not only
    /// once something commits: polled by hand, no sleeps.
    #[test]
    fn wait_committed_waits_until_c_covers_the_revision() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let s = SharedSequencer::new(10);
        let (sa, sb) = (s.stamp().unwrap(), s.stamp().unwrap());
        let (a, b) = (sa.revision, sb.revision);
        let mut wait = std::pin::pin!(s.wait_committed(b));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "nothing committed"
        );
        s.commit(sb);
        assert_eq!(s.committed(), 10, "{a} is still pending");
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "{b} committed but C is below it"
        );
        s.commit(sa);
        assert_eq!(s.committed(), 12);
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
        // Already covered: ready at once.
        assert!(std::pin::pin!(s.wait_committed(a)).poll(&mut cx).is_ready());
    }

    /// Shard cores commit on their own threads at once. A write is
    /// acknowledged when the published C covers it; a read that starts after
    /// an acknowledgement must see C at least that high, and C as any
    /// observer sees it never goes back. With the failpoint set (the test
    /// build has the feature), a publication is delayed after C was
    /// computed, which is what once let an older C overwrite a newer one.
    #[test]
    fn racing_commits_never_publish_c_backwards() {
        use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let scenario = fail::FailScenario::setup();
        fail::cfg("sequencer::publish", "20%sleep(1)").expect("failpoint");
        let threads = 4;
        let per_thread = 300;
        let s = Arc::new(SharedSequencer::new(0));
        let acked = Arc::new(AtomicI64::new(0));
        let violations = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let observer = {
            let (mut rx, done, violations) = (s.subscribe(), done.clone(), violations.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !done.load(SeqCst) {
                    let c = *rx.borrow_and_update();
                    if c < last {
                        violations.fetch_add(1, SeqCst);
                    }
                    last = last.max(c);
                    std::thread::yield_now();
                }
            })
        };
        let writers: Vec<_> = (0..threads)
            .map(|_| {
                let (s, acked, violations) = (s.clone(), acked.clone(), violations.clone());
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        // A read after an acknowledgement sees it.
                        let before = acked.load(SeqCst);
                        if s.committed() < before {
                            violations.fetch_add(1, SeqCst);
                        }
                        let stamp = s.stamp().expect("leading");
                        let r = stamp.revision;
                        s.commit(stamp);
                        // Acknowledged once C covers it (as Member::write waits).
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while s.committed() < r {
                            assert!(Instant::now() < deadline, "C never reached {r}");
                            std::thread::yield_now();
                        }
                        acked.fetch_max(r, SeqCst);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, SeqCst);
        observer.join().expect("observer");
        scenario.teardown();
        let total = (threads * per_thread) as i64;
        assert_eq!(s.committed(), total);
        assert_eq!(acked.load(SeqCst), total);
        assert_eq!(
            violations.load(SeqCst),
            0,
            "a read saw C below an acknowledged write, or C went back"
        );
    }

    #[test]
    fn stamps_of_an_ended_leadership_never_move_c() {
        let s = SharedSequencer::new(5);
        let old = s.stamp().unwrap();
        assert_eq!(old.revision, 6);
        s.follow();
        assert_eq!(s.stamp(), None, "a follower stamps nothing");
        s.observe(4);
        assert_eq!(s.committed(), 5, "C never goes back");
        s.observe(9);
        assert_eq!(s.committed(), 9, "a follower's C is its visible revision");
        let epoch = s.lead(12);
        assert_eq!(s.committed(), 12);
        s.commit(old);
        s.abandon(old);
        assert_eq!(s.committed(), 12, "the old stamp is ignored");
        let new = s.stamp().unwrap();
        assert_eq!((new.epoch, new.revision), (epoch, 13));
        s.commit(new);
        assert_eq!(s.committed(), 13);
        s.observe(20);
        assert_eq!(s.committed(), 13, "a leader's C moves by commits only");
    }

    #[test]
    fn a_stamp_in_an_ended_epoch_is_refused() {
        let s = SharedSequencer::new(5);
        let first = s.leading_epoch().expect("a new sequencer leads");
        assert_eq!(s.stamp_in(first).map(|st| st.revision), Some(6));
        s.follow();
        assert_eq!(s.leading_epoch(), None);
        assert_eq!(s.stamp_in(first), None, "a follower stamps nothing");
        let second = s.lead(8);
        assert_ne!(first, second);
        assert_eq!(
            s.stamp_in(first),
            None,
            "the epoch a coordinator read in ended"
        );
        assert_eq!(s.stamp_in(second).map(|st| st.revision), Some(9));
    }

    #[test]
    fn a_refused_stamp_ends_its_epoch_and_taints_the_stamps_above_it() {
        let s = SharedSequencer::new(5);
        let (a, b, c) = (s.stamp().unwrap(), s.stamp().unwrap(), s.stamp().unwrap());
        s.commit(a);
        s.refused(b);
        assert_eq!(s.leading_epoch(), None, "the epoch ended");
        assert_eq!(s.stamp(), None);
        assert!(s.acknowledgeable(a));
        assert!(!s.acknowledgeable(c), "c may have read b's effects");
        s.commit(c);
        assert_eq!(s.committed(), 6, "C stays below the refused stamp");
        // The next epoch is clean.
        let epoch = s.lead(8);
        let d = s.stamp_in(epoch).unwrap();
        assert!(s.acknowledgeable(d));
    }

    #[test]
    #[should_panic(expected = "below C")]
    fn leading_below_c_panics() {
        let s = SharedSequencer::following(0);
        s.observe(10);
        s.lead(9);
    }
}
