//! The cluster's alarms as each member mirrors them from its meta group
//! (etcd replicates its alarms through Raft: a NOSPACE raised by any member
//! refuses puts on every member until it is disarmed).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A raised alarm: the member it names, and its type (etcd's `AlarmType`
/// number; any number is kept, as etcd keeps it).
pub type Alarm = (u64, i32);

/// etcd's `AlarmType::Nospace`.
pub const NOSPACE: i32 = 1;

/// The applied alarm set. Invariant: `nospace` is whether `set` holds a
/// NOSPACE alarm of any member; both change together under the lock.
#[derive(Default)]
pub struct AlarmView {
    set: Mutex<BTreeSet<Alarm>>,
    nospace: AtomicBool,
}

impl AlarmView {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<Alarm>> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, set: &BTreeSet<Alarm>) {
        let nospace = set.iter().any(|(_, a)| *a == NOSPACE);
        self.nospace.store(nospace, Ordering::Release);
    }

    /// Whether a NOSPACE alarm is raised (read on every put).
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }

    /// Every raised alarm, in (member, type) order.
    pub fn list(&self) -> Vec<Alarm> {
        self.lock().iter().copied().collect()
    }

    pub fn contains(&self, alarm: Alarm) -> bool {
        self.lock().contains(&alarm)
    }

    /// Replaces the set (a meta snapshot loaded).
    pub fn set_all(&self, alarms: impl IntoIterator<Item = Alarm>) {
        let mut set = self.lock();
        *set = alarms.into_iter().collect();
        self.publish(&set);
    }

    /// Asserts the invariant (under the lock, so a writer's change is seen
    /// whole).
    pub fn check_invariants(&self) {
        let set = self.lock();
        let has = set.iter().any(|(_, a)| *a == NOSPACE);
        assert_eq!(self.nospace(), has, "the NOSPACE flag matches the set");
    }

    /// An applied raise or clear.
    pub fn change(&self, alarm: Alarm, raise: bool) {
        let mut set = self.lock();
        if raise {
            set.insert(alarm);
        } else {
            set.remove(&alarm);
        }
        self.publish(&set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn nospace_follows_the_set() {
        let v = AlarmView::new();
        assert!(!v.nospace());
        v.change((7, 2), true);
        assert!(!v.nospace(), "CORRUPT is not NOSPACE");
        v.change((7, NOSPACE), true);
        v.change((9, NOSPACE), true);
        assert!(v.nospace());
        v.change((7, NOSPACE), false);
        assert!(v.nospace(), "member 9's is still raised");
        v.change((9, NOSPACE), false);
        assert!(!v.nospace());
        v.set_all([(1, NOSPACE)]);
        assert!(v.nospace());
        assert_eq!(v.list(), vec![(1, NOSPACE)]);
    }

    #[test]
    fn under_writers_on_other_threads_the_flag_always_matches_the_set() {
        let v = Arc::new(AlarmView::new());
        let writers: Vec<_> = (0..2u64)
            .map(|m| {
                let v = v.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        v.change((m, NOSPACE), i % 2 == 0);
                        v.change((m, 2), i % 3 == 0);
                    }
                })
            })
            .collect();
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || {
                for _ in 0..5000 {
                    v.check_invariants();
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        reader.join().unwrap();
        v.check_invariants();
        // Each writer ended on a clear of its NOSPACE (i = 4999 is odd).
        assert!(!v.nospace());
    }
}
