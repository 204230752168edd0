//! [`LeaseIndex`]: which live keys of one shard carry which lease.
//!
//! Derived state, owned by the shard's [`super::Store`] (one core, no IO): for
//! every lease id other than 0, the keys whose newest version is live and
//! carries that lease. etcd keeps the same map in its lessor (`keyToLease`,
//! rebuilt from the KV at start); a revoke deletes these keys. The store keeps
//! it up to date as it applies changes and rebuilds it when it is loaded or
//! rolled back; nothing else writes it, and it is never persisted.

use smallvec::SmallVec;
use std::collections::{BTreeMap, BTreeSet};

/// A key, inline when short (as the store keeps them).
type Key = SmallVec<[u8; 24]>;

/// Live keys by lease id (never 0). See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseIndex {
    /// No empty set is kept: a lease is here iff some key carries it.
    by_lease: BTreeMap<i64, BTreeSet<Key>>,
}

impl LeaseIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` carries `lease` (lease 0 is no lease: nothing).
    /// Returns false if it was already recorded.
    pub fn attach(&mut self, lease: i64, key: &[u8]) -> bool {
        if lease == 0 {
            return true;
        }
        self.by_lease
            .entry(lease)
            .or_default()
            .insert(Key::from_slice(key))
    }

    /// Forgets that `key` carries `lease` (lease 0: nothing). Returns false
    /// if it was not recorded.
    pub fn detach(&mut self, lease: i64, key: &[u8]) -> bool {
        if lease == 0 {
            return true;
        }
        let Some(keys) = self.by_lease.get_mut(&lease) else {
            return false;
        };
        let removed = keys.remove(key);
        if keys.is_empty() {
            self.by_lease.remove(&lease);
        }
        removed
    }

    /// `key`'s live version changed from lease `from` to lease `to` (0 for
    /// none: a key created, deleted, or put without a lease).
    ///
    /// # Panics
    /// If `key` was not recorded under `from`, or already under `to`: the
    /// index no longer matches the store, which must stop.
    pub fn moved(&mut self, key: &[u8], from: i64, to: i64) {
        if from == to {
            return;
        }
        assert!(
            self.detach(from, key),
            "lease index: key {key:?} was not under lease {from}"
        );
        assert!(
            self.attach(to, key),
            "lease index: key {key:?} was already under lease {to}"
        );
    }

    /// The keys carrying `lease`, in key order (none for 0 or an unused id).
    pub fn keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.by_lease
            .get(&lease)
            .map(|keys| keys.iter().map(|k| k.to_vec()).collect())
            .unwrap_or_default()
    }

    /// Every lease some key carries, ascending.
    pub fn leases(&self) -> Vec<i64> {
        self.by_lease.keys().copied().collect()
    }

    /// Number of (lease, key) pairs.
    pub fn len(&self) -> usize {
        self.by_lease.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_lease.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_and_detach_keep_keys_in_order_and_drop_unused_leases() {
        let mut ix = LeaseIndex::new();
        assert!(ix.attach(7, b"b"));
        assert!(ix.attach(7, b"a"));
        assert!(ix.attach(-3, b"c"));
        assert!(!ix.attach(7, b"a"), "already there");
        assert_eq!(ix.keys(7), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(ix.leases(), vec![-3, 7]);
        assert_eq!(ix.len(), 3);
        assert!(ix.detach(-3, b"c"));
        assert!(!ix.detach(-3, b"c"), "not there any more");
        assert_eq!(ix.leases(), vec![7], "an emptied lease is gone");
        assert!(ix.keys(-3).is_empty());
        assert!(!ix.detach(9, b"a"), "unknown lease");
    }

    #[test]
    fn lease_zero_is_no_lease() {
        let mut ix = LeaseIndex::new();
        assert!(ix.attach(0, b"a"));
        assert!(ix.detach(0, b"a"));
        assert!(ix.is_empty());
        assert!(ix.keys(0).is_empty());
        assert!(ix.leases().is_empty());
    }

    #[test]
    fn moved_goes_from_one_lease_to_another() {
        let mut ix = LeaseIndex::new();
        ix.moved(b"k", 0, 5); // created with lease 5
        ix.moved(b"k", 5, 5); // put again with the same lease
        assert_eq!(ix.keys(5), vec![b"k".to_vec()]);
        ix.moved(b"k", 5, 6); // put with another lease
        assert_eq!((ix.keys(5).len(), ix.keys(6).len()), (0, 1));
        ix.moved(b"k", 6, 0); // put without a lease, or deleted
        assert!(ix.is_empty());
    }

    #[test]
    #[should_panic(expected = "was not under lease 5")]
    fn moving_a_key_from_a_lease_it_lacks_panics() {
        LeaseIndex::new().moved(b"k", 5, 0);
    }
}
