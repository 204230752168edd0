//! Every member's view of the lease table, for write evaluation on any thread.
//!
//! [`LeaseView`] mirrors the lease table *as applied* by the meta group (id → granted TTL),
//! plus the write leader's *fences*: leases a revoke job is revoking right now. It is shared
//! in an `Arc`: the meta group's state machine (core 0) calls [`LeaseView::set_table`],
//! [`LeaseView::granted`] and [`LeaseView::revoked`]; the revoke job fences and unfences;
//! evaluation on every shard asks [`LeaseView::exists`] for a put's lease.
//!
//! A fence makes a lease invisible to evaluation before its revocation is written, so a
//! put evaluated after the fence cannot attach a key to a lease whose keys are being
//! gathered (notes/lease-design.md §3.3). All reads and writes take one
//! `std::sync::RwLock`, so a fence is seen by every evaluation that starts after
//! [`LeaseView::fence`] returns.

use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The applied lease table and the fences. See the module doc.
///
/// Invariant, checked after every change in debug builds ([`LeaseView::check_invariants`]):
/// every fenced id is in the table (`fenced ⊆ table`). A fenced id stays in the table;
/// revoking an id also unfences it. Lease id 0 (no lease) never [`exists`](LeaseView::exists).
#[derive(Debug, Default)]
pub struct LeaseView {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Applied leases: id → granted TTL (s).
    table: HashMap<i64, i64>,
    /// Leases being revoked by the write leader: not to be used by new writes.
    fenced: HashSet<i64>,
}

impl Inner {
    fn invariants_hold(&self) -> bool {
        self.fenced.iter().all(|id| self.table.contains_key(id))
    }
}

impl LeaseView {
    /// An empty view: no lease, no fence.
    pub fn new() -> LeaseView {
        LeaseView::default()
    }

    /// Replaces the table by `leases` (`(id, ttl)`; a repeated id counts once, the last TTL
    /// wins), as when a meta snapshot loads. Fences of ids still in the table stay, the
    /// others go (an id no longer in the table does not exist anyway).
    pub fn set_table(&self, leases: impl IntoIterator<Item = (i64, i64)>) {
        let table: HashMap<i64, i64> = leases.into_iter().collect();
        let mut inner = self.write();
        inner.fenced.retain(|id| table.contains_key(id));
        inner.table = table;
        debug_assert!(inner.invariants_hold());
    }

    /// A grant of `id` with `ttl` was applied (replaces the TTL if `id` is already there).
    pub fn granted(&self, id: i64, ttl: i64) {
        let mut inner = self.write();
        inner.table.insert(id, ttl);
        debug_assert!(inner.invariants_hold());
    }

    /// A revoke of `ids` was applied: they leave the table, and their fences go with them.
    /// Unknown ids are ignored.
    pub fn revoked(&self, ids: &[i64]) {
        let mut inner = self.write();
        for id in ids {
            inner.table.remove(id);
            inner.fenced.remove(id);
        }
        debug_assert!(inner.invariants_hold());
    }

    /// Whether a write may use lease `id`: it is in the table and not fenced. `false` for
    /// id 0.
    pub fn exists(&self, id: i64) -> bool {
        if id == 0 {
            return false;
        }
        let inner = self.read();
        inner.table.contains_key(&id) && !inner.fenced.contains(&id)
    }

    /// Whether `id` is in the applied table, fenced or not.
    pub fn in_table(&self, id: i64) -> bool {
        self.read().table.contains_key(&id)
    }

    /// Whether `id` is fenced.
    pub fn is_fenced(&self, id: i64) -> bool {
        self.read().fenced.contains(&id)
    }

    /// The granted TTL of `id`, fenced or not; `None` if not in the table.
    pub fn ttl(&self, id: i64) -> Option<i64> {
        self.read().table.get(&id).copied()
    }

    /// Fences `ids`, all or none: if one is not in the table, nothing changes and the first
    /// such id (in `ids` order) is returned. Fencing an id already fenced is allowed and
    /// changes nothing: fences are a set, not counted, so one [`LeaseView::unfence`] lifts
    /// any number of fences of an id — the caller runs at most one revoke per id at a time.
    /// Once this returns, [`LeaseView::exists`] is `false` for these ids on every thread
    /// until they are unfenced.
    pub fn fence(&self, ids: &[i64]) -> Result<(), i64> {
        let mut inner = self.write();
        if let Some(&unknown) = ids.iter().find(|id| !inner.table.contains_key(id)) {
            return Err(unknown);
        }
        inner.fenced.extend(ids.iter().copied());
        debug_assert!(inner.invariants_hold());
        Ok(())
    }

    /// Lifts the fences of `ids`; ids not fenced are ignored.
    pub fn unfence(&self, ids: &[i64]) {
        let mut inner = self.write();
        for id in ids {
            inner.fenced.remove(id);
        }
        debug_assert!(inner.invariants_hold());
    }

    /// Lifts every fence (leadership starts or ends: fences belong to the leader's jobs).
    pub fn clear_fences(&self) {
        let mut inner = self.write();
        inner.fenced.clear();
        debug_assert!(inner.invariants_hold());
    }

    /// Every id in the table, fenced or not, in increasing order.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.read().table.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Every `(id, ttl)` in the table, fenced or not, by increasing id (the input of
    /// [`super::Lessor::promote`]; LeaseLeases on a member that does not lead).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        let mut leases: Vec<(i64, i64)> = self
            .read()
            .table
            .iter()
            .map(|(&id, &ttl)| (id, ttl))
            .collect();
        leases.sort_unstable();
        leases
    }

    /// Number of leases in the table.
    pub fn len(&self) -> usize {
        self.read().table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.read().table.is_empty()
    }

    /// Checks the invariant of the struct doc (`fenced ⊆ table`); O(fences).
    ///
    /// # Panics
    /// If it does not hold.
    pub fn check_invariants(&self) {
        assert!(
            self.read().invariants_hold(),
            "a fenced lease is not in the table"
        );
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("lease view lock")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("lease view lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn exists_is_in_table_and_not_fenced() {
        let v = LeaseView::new();
        assert!(v.is_empty());
        v.granted(1, 10);
        v.granted(2, 20);
        v.granted(3, 30);
        assert!(v.exists(1) && v.exists(2) && v.exists(3));
        assert!(!v.exists(4) && !v.in_table(4));
        assert_eq!(v.ttl(2), Some(20));
        assert_eq!(v.ttl(4), None);

        v.fence(&[2]).expect("2 is known");
        assert!(!v.exists(2));
        assert!(v.in_table(2) && v.is_fenced(2));
        assert_eq!(v.ttl(2), Some(20), "a fenced lease keeps its TTL");
        assert_eq!(v.ids(), vec![1, 2, 3], "a fenced lease stays in the table");
        v.unfence(&[2]);
        assert!(v.exists(2) && !v.is_fenced(2));
        v.check_invariants();
    }

    #[test]
    fn lease_zero_never_exists() {
        let v = LeaseView::new();
        assert!(!v.exists(0));
        assert_eq!(v.fence(&[0]), Err(0));
        v.granted(0, 5);
        assert!(v.in_table(0));
        assert!(!v.exists(0));
    }

    #[test]
    fn fence_is_all_or_nothing() {
        let v = LeaseView::new();
        v.set_table([(1, 10), (2, 10), (3, 10)]);
        assert_eq!(v.fence(&[1, 7, 2, 8]), Err(7));
        assert!(
            v.exists(1) && v.exists(2),
            "nothing fenced after a refused fence"
        );
        v.fence(&[1, 2]).expect("known");
        // Already fenced is fine; one unfence lifts it.
        v.fence(&[2, 3]).expect("known");
        assert!(!v.exists(1) && !v.exists(2) && !v.exists(3));
        v.unfence(&[2, 9]);
        assert!(v.exists(2) && !v.exists(1) && !v.exists(3));
        v.clear_fences();
        assert!(v.exists(1) && v.exists(2) && v.exists(3));
        v.check_invariants();
    }

    #[test]
    fn revoke_and_set_table_keep_fences_inside_the_table() {
        let v = LeaseView::new();
        v.set_table([(1, 10), (2, 20), (3, 30), (4, 40)]);
        v.fence(&[1, 2, 3]).expect("known");
        v.revoked(&[1, 99]);
        assert!(!v.in_table(1) && !v.is_fenced(1));
        v.check_invariants();
        // A re-grant after the revoke is not fenced.
        v.granted(1, 5);
        assert!(v.exists(1));
        // A snapshot without 2: its fence goes; 3 stays fenced; 4 unchanged; 5 new.
        v.set_table([(3, 33), (4, 40), (5, 50), (5, 55)]);
        v.check_invariants();
        assert!(!v.is_fenced(2) && !v.in_table(2));
        assert!(v.is_fenced(3) && !v.exists(3));
        assert_eq!(v.leases(), vec![(3, 33), (4, 40), (5, 55)]);
        assert_eq!(v.len(), 3);
        // Re-granting 2 later does not resurrect its old fence.
        v.granted(2, 20);
        assert!(v.exists(2));
    }

    /// Phases of the writer, published in `state` as `round << 8 | phase`. A reader that
    /// sees the same stable phase of the same round before and after its `exists` call
    /// knows that call ran entirely inside that phase.
    const CHANGING: u64 = 0;
    /// Granted, not fenced: `exists` must be true.
    const LIVE: u64 = 1;
    /// Between `fence` returning and `unfence` starting (a revoke may run inside):
    /// `exists` must be false.
    const FENCED: u64 = 2;
    /// Revoked: `exists` must be false.
    const GONE: u64 = 3;
    /// Revoked while fenced, not yet unfenced (the revoke job's order): `exists` must be
    /// false, for the revoked lease and for the other lease of the same fence.
    const FENCED_REVOKED: u64 = 4;
    /// Live again after an unfence, in the same round: a phase of its own, so that a
    /// reader that saw "live" before and after its calls cannot have slept through the
    /// fenced phase between the two live phases of one round (the same state value
    /// twice let such a reader blame a correct view).
    const LIVE_AGAIN: u64 = 5;

    #[test]
    fn fenced_lease_never_exists_between_fence_and_unfence_across_threads() {
        const LEASE: i64 = 42;
        const OTHER: i64 = 43; // fenced with LEASE, never revoked
        const ROUNDS: u64 = 500;
        let view = Arc::new(LeaseView::new());
        view.granted(OTHER, 60);
        let state = Arc::new(AtomicU64::new(CHANGING));
        let done = Arc::new(AtomicBool::new(false));
        // The last stable state some reader saw around a whole pair of `exists` calls.
        let observed = Arc::new(AtomicU64::new(CHANGING));
        // Readers still running: a reader that failed an assertion stops the lingering.
        let alive = Arc::new(AtomicUsize::new(3));
        struct Alive(Arc<AtomicUsize>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }

        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (view, state, done, observed) =
                    (view.clone(), state.clone(), done.clone(), observed.clone());
                let alive = Alive(alive.clone());
                std::thread::spawn(move || {
                    let _alive = alive;
                    // Calls seen entirely inside each stable phase.
                    let mut seen = [0u64; 6];
                    while !done.load(Ordering::SeqCst) {
                        let before = state.load(Ordering::SeqCst);
                        let lease = view.exists(LEASE);
                        let other = view.exists(OTHER);
                        let after = state.load(Ordering::SeqCst);
                        if before != after {
                            continue;
                        }
                        let (round, phase) = (before >> 8, before & 0xff);
                        match phase {
                            LIVE | LIVE_AGAIN => {
                                assert!(lease && other, "round {round}: live lease missing")
                            }
                            FENCED | FENCED_REVOKED => assert!(
                                !lease && !other,
                                "round {round}: fenced lease reported existing \
                                 (lease {lease}, other {other})"
                            ),
                            GONE => assert!(!lease && other, "round {round}: revoked lease exists"),
                            _ => {}
                        }
                        seen[phase as usize] += 1;
                        observed.store(before, Ordering::SeqCst);
                    }
                    seen
                })
            })
            .collect();

        let publish = |round: u64, phase: u64| state.store(round << 8 | phase, Ordering::SeqCst);
        // Stays in the phase just published until a reader has checked inside it (bounded,
        // so a starved reader slows the test down but cannot hang it).
        let linger = || {
            let current = state.load(Ordering::SeqCst);
            for _ in 0..10_000 {
                if observed.load(Ordering::SeqCst) == current || alive.load(Ordering::SeqCst) == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        };
        for round in 1..=ROUNDS {
            publish(round, CHANGING);
            view.granted(LEASE, 10);
            publish(round, LIVE);
            linger();
            publish(round, CHANGING);
            view.fence(&[LEASE, OTHER]).expect("both granted");
            publish(round, FENCED);
            linger();
            if round % 2 == 1 {
                // Revoke applied while fenced (the revoke job's order): still not existing.
                publish(round, CHANGING);
                view.revoked(&[LEASE]);
                publish(round, FENCED_REVOKED);
                linger();
                publish(round, CHANGING);
                view.unfence(&[LEASE, OTHER]);
            } else {
                publish(round, CHANGING);
                view.unfence(&[LEASE, OTHER]);
                publish(round, LIVE_AGAIN);
                linger();
                publish(round, CHANGING);
                view.revoked(&[LEASE]);
            }
            publish(round, GONE);
            linger();
            view.check_invariants();
        }
        done.store(true, Ordering::SeqCst);

        let mut seen = [0u64; 6];
        for r in readers {
            let s = r.join().expect("a reader saw a wrong answer");
            for (total, n) in seen.iter_mut().zip(s) {
                *total += n;
            }
        }
        // The test means something only if readers did run inside each phase.
        assert!(
            seen[LIVE as usize] > 0,
            "no call observed in a live phase: {seen:?}"
        );
        assert!(
            seen[FENCED as usize] > 0,
            "no call observed in a fenced phase: {seen:?}"
        );
        assert!(
            seen[GONE as usize] > 0,
            "no call observed in a gone phase: {seen:?}"
        );
        assert!(
            seen[FENCED_REVOKED as usize] > 0,
            "no call observed after a revoke inside a fence: {seen:?}"
        );
    }
}
