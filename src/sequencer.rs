//! The write leader's revision sequencer and committed prefix C (DESIGN §2.1,
//! points 2 and 3).
//!
//! [`Sequencer`] is the sans-IO core: it hands out revisions in order and
//! tracks which are committed. C is the largest revision such that every
//! revision at or below it is committed (or abandoned: known never to commit,
//! a gap). A write is acknowledged only once C reaches its revision; reads are
//! served at C. [`SharedSequencer`] wraps it for the shard cores (a short
//! mutex) and publishes C on a watch channel the front threads wait on.

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
        let c = self.lock().commit(rev);
        self.committed_tx
            .send_if_modified(|old| std::mem::replace(old, c) != c);
    }

    pub fn abandon(&self, rev: i64) {
        let c = self.lock().abandon(rev);
        self.committed_tx
            .send_if_modified(|old| std::mem::replace(old, c) != c);
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

    #[test]
    fn shared_sequencer_publishes_c() {
        let s = std::sync::Arc::new(SharedSequencer::new(10));
        let r = s.stamp();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(s2.wait_committed(r));
        });
        rt.block_on(async { tokio::task::yield_now().await });
        assert_eq!(s.committed(), 10);
        s.commit(r);
        waiter.join().unwrap();
        assert_eq!(s.committed(), 11);
    }
}
