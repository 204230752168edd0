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

/// The sequencer shared by a member's shard cores, publishing C.
pub struct SharedSequencer {
    inner: Mutex<Sequencer>,
    committed_tx: tokio::sync::watch::Sender<i64>,
}

impl SharedSequencer {
    pub fn new(last: i64) -> Self {
        let (committed_tx, _) = tokio::sync::watch::channel(last);
        Self {
            inner: Mutex::new(Sequencer::new(last)),
            committed_tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sequencer> {
        // A panic while holding the lock already stops the member.
        self.inner.lock().expect("sequencer lock")
    }

    pub fn stamp(&self) -> i64 {
        self.lock().stamp()
    }

    pub fn commit(&self, rev: i64) {
        let mut inner = self.lock();
        let c = inner.commit(rev);
        self.publish(c);
        drop(inner);
    }

    pub fn abandon(&self, rev: i64) {
        let mut inner = self.lock();
        let c = inner.abandon(rev);
        self.publish(c);
        drop(inner);
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

    /// The last revision handed out.
    pub fn last_stamped(&self) -> i64 {
        self.lock().last_stamped()
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
        let (a, b) = (s.stamp(), s.stamp());
        let mut wait = std::pin::pin!(s.wait_committed(b));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "nothing committed"
        );
        s.commit(b);
        assert_eq!(s.committed(), 10, "{a} is still pending");
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "{b} committed but C is below it"
        );
        s.commit(a);
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
                        let r = s.stamp();
                        s.commit(r);
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
}
