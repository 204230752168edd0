//! Which shard owns a key: `crc32(key) % shards`, stable across restarts
//! (the shard count is fixed when the data dir is created).

use std::collections::{BTreeMap, BTreeSet};

use crate::mvcc::Change;

/// Which shard owns `key`.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    (crc32fast::hash(key) as usize) % shards
}

/// The shards that own any key in `touched` (key, range_end pairs): a range
/// touches every shard.
pub fn shards_touched<K: AsRef<[u8]>, E: AsRef<[u8]>>(
    touched: &[(K, E)],
    shards: usize,
) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for (key, range_end) in touched {
        if range_end.as_ref().is_empty() {
            out.insert(shard_of(key.as_ref(), shards));
        } else {
            return (0..shards).collect();
        }
    }
    out
}

/// Splits a request's changes by owning shard.
pub fn split(changes: Vec<Change>, shards: usize) -> BTreeMap<usize, Vec<Change>> {
    let mut parts: BTreeMap<usize, Vec<Change>> = BTreeMap::new();
    for c in changes {
        let key = c.key().expect("evaluation yields one change per key");
        parts.entry(shard_of(key, shards)).or_default().push(c);
    }
    parts
}
