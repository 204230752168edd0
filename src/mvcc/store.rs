//! [`Store`]: every key of one shard with its revision history.
//!
//! A key's history is a list of versions in revision order; a delete is a
//! tombstone version. Reading at revision R finds, per key, the newest version
//! at or below R. Compaction at C drops what no read at C or later can see.

use super::lease_index::LeaseIndex;
use std::collections::BTreeMap;
use std::ops::Bound;

/// etcd's message for a read or compaction below the compaction point.
pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a read or compaction above the current revision.
pub const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";

/// A key as a client sees it (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// One change to apply at a revision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Delete every key of the range that is live when it is applied: a
    /// shard logs this instead of one `Delete` per key when a plain
    /// DeleteRange deletes more than one log entry holds (on each shard it
    /// deletes that shard's keys; evaluation and apply see the same state).
    DeleteRange {
        key: Vec<u8>,
        end: RangeEnd,
    },
}

impl Change {
    /// The key a Put or Delete changes (None for a DeleteRange).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => Some(key),
            Change::DeleteRange { .. } => None,
        }
    }
}

/// One change as a watcher sees it (etcd's `mvccpb.Event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// A delete: `kv` then holds the key and the delete's revision as
    /// `mod_revision`, everything else zero (as etcd sends it).
    pub delete: bool,
    pub kv: KeyValue,
    /// The key's live value before this change, if it had one.
    pub prev: Option<KeyValue>,
}

/// Errors of reads and compaction, with etcd's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MvccError {
    Compacted,
    FutureRevision,
}

impl std::fmt::Display for MvccError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MvccError::Compacted => ERR_COMPACTED,
            MvccError::FutureRevision => ERR_FUTURE_REV,
        })
    }
}

impl std::error::Error for MvccError {}

/// Which keys a request covers (etcd's `key` + `range_end`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RangeEnd {
    /// Only `key` (empty `range_end`).
    Single,
    /// Every key `>= key` (`range_end` = `"\0"`).
    ToEnd,
    /// Keys in `[key, end)`.
    Until(Vec<u8>),
}

impl RangeEnd {
    /// etcd's reading of a `range_end` field.
    pub fn from_request(range_end: &[u8]) -> Self {
        match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::ToEnd,
            end => RangeEnd::Until(end.to_vec()),
        }
    }

    /// True if `k` is in the range that starts at `key`.
    pub fn contains(&self, key: &[u8], k: &[u8]) -> bool {
        match self {
            RangeEnd::Single => k == key,
            RangeEnd::ToEnd => k >= key,
            RangeEnd::Until(end) => k >= key && k < end.as_slice(),
        }
    }

    fn bounds<'a>(&'a self, key: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match self {
            RangeEnd::Single => (Bound::Included(key), Bound::Included(key)),
            RangeEnd::ToEnd => (Bound::Included(key), Bound::Unbounded),
            RangeEnd::Until(end) => (Bound::Included(key), Bound::Excluded(end.as_slice())),
        }
    }

    /// False for an empty interval (`end <= key`), which covers no key.
    fn non_empty(&self, key: &[u8]) -> bool {
        match self {
            RangeEnd::Until(end) => end.as_slice() > key,
            _ => true,
        }
    }
}

/// A serializable copy of a store (snapshots).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreImage {
    pub revision: i64,
    pub compacted: i64,
    pub keys: Vec<(Vec<u8>, Vec<VersionImage>)>,
}

/// One version in a [`StoreImage`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionImage {
    pub mod_revision: i64,
    pub create_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// One version of a key; `version == 0` marks a tombstone (a delete).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    value: Box<[u8]>,
    lease: i64,
}

impl Version {
    fn is_tombstone(&self) -> bool {
        self.version == 0
    }
}

fn version_image(v: &Version) -> VersionImage {
    VersionImage {
        mod_revision: v.mod_revision,
        create_revision: v.create_revision,
        version: v.version,
        value: v.value.to_vec(),
        lease: v.lease,
    }
}

impl StoreImage {
    /// One image from the images of disjoint key sets (different shards)
    /// taken at the same revision: keys in order, the newest compaction point.
    pub fn merge(images: Vec<StoreImage>) -> StoreImage {
        let revision = images.iter().map(|i| i.revision).max().unwrap_or(0);
        let compacted = images.iter().map(|i| i.compacted).max().unwrap_or(0);
        let mut keys: Vec<_> = images.into_iter().flat_map(|i| i.keys).collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        StoreImage {
            revision,
            compacted,
            keys,
        }
    }
}

/// Result of [`Store::range`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Live keys in key order, at most `limit` of them (all if `limit` is 0).
    pub kvs: Vec<KeyValue>,
    /// Number of live keys in the range (ignoring `limit`).
    pub count: usize,
}

/// A key, inline when short (most are: no allocation of its own).
type Key = smallvec::SmallVec<[u8; 24]>;
/// A key's versions, the first inline (most keys have one or few).
type History = smallvec::SmallVec<[Version; 1]>;

/// One shard's keys. See the module docs.
#[derive(Debug)]
pub struct Store {
    keys: BTreeMap<Key, History>,
    /// Newest revision applied.
    revision: i64,
    /// Reads below this revision fail with [`MvccError::Compacted`]; -1
    /// until the first compaction (as etcd: compacting at 0 works once).
    compacted: i64,
    /// Bytes the histories hold, as [`Store::bytes`] counts them.
    bytes: u64,
    /// The live keys (newest version not a tombstone) by their lease.
    leases: LeaseIndex,
}

/// What one version costs beyond its key and value in [`Store::bytes`]: an
/// estimate of what etcd's backend stores per revision (revision key, the
/// encoded revisions, version and lease).
pub const VERSION_OVERHEAD_BYTES: u64 = 48;

fn version_bytes(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + VERSION_OVERHEAD_BYTES
}

impl Default for Store {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            revision: 0,
            compacted: -1,
            bytes: 0,
            leases: LeaseIndex::new(),
        }
    }
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest revision applied to this shard.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compaction point: the oldest revision still readable.
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The size of everything kept, every version not compacted away (key +
    /// value + [`VERSION_OVERHEAD_BYTES`] each): what `Status.dbSize` reports
    /// and `--quota-backend-bytes` limits.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of keys with any history (live or not yet compacted away).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Applies `changes`, all stamped with `revision` (greater than any applied
    /// before; a shard need not see every revision). Each key changes at most
    /// once per revision. A delete of a key that is not live changes nothing.
    ///
    /// # Panics
    /// If `revision` does not increase, or a key appears twice: the caller's
    /// sequencing is broken and the shard must stop.
    pub fn apply(&mut self, revision: i64, changes: &[Change]) {
        assert!(
            revision > self.revision,
            "revision {revision} applied after {}",
            self.revision
        );
        self.apply_changes(revision, changes);
        self.revision = revision;
    }

    fn apply_changes(&mut self, revision: i64, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Put { key, value, lease } => {
                    self.apply_key(revision, key, Some((value, *lease)))
                }
                Change::Delete { key } => self.apply_key(revision, key, None),
                Change::DeleteRange { key, end } => {
                    let mut doomed = Vec::new();
                    self.for_each_live(key, end, self.revision, |kv| doomed.push(kv.key));
                    for key in doomed {
                        self.apply_key(revision, &key, None);
                    }
                }
            }
        }
    }

    /// A new version of `key` at `revision`: `put` = (value, lease), or None
    /// for a delete (which changes nothing if the key is not live).
    fn apply_key(&mut self, revision: i64, key: &[u8], put: Option<(&[u8], i64)>) {
        let history = self.keys.get(key);
        let latest = history.and_then(|h| h.last());
        assert!(
            latest.is_none_or(|v| v.mod_revision < revision),
            "key changed twice at revision {revision}"
        );
        let live = latest.filter(|v| !v.is_tombstone());
        let old_lease = live.map_or(0, |v| v.lease);
        let next = match put {
            Some((value, lease)) => Version {
                mod_revision: revision,
                create_revision: live.map_or(revision, |v| v.create_revision),
                version: live.map_or(1, |v| v.version + 1),
                value: value.into(),
                lease,
            },
            None if live.is_none() => return,
            None => Version {
                mod_revision: revision,
                create_revision: 0,
                version: 0,
                value: Box::new([]),
                lease: 0,
            },
        };
        self.bytes += version_bytes(key, &next.value);
        self.leases.moved(key, old_lease, next.lease);
        self.keys.entry(key.into()).or_default().push(next);
    }

    /// The live keys whose newest version carries `lease`, in key order
    /// (none for lease 0).
    pub fn lease_keys(&self, lease: i64) -> Vec<Vec<u8>> {
        self.leases.keys(lease)
    }

    /// Every lease that some live key carries, ascending.
    pub fn leases_in_use(&self) -> Vec<i64> {
        self.leases.leases()
    }

    /// The events of `changes` just applied at `revision` (see [`Store::apply`]),
    /// in the order of `changes`; a delete that changed nothing has none.
    pub fn events_at(&self, revision: i64, changes: &[Change]) -> Vec<Event> {
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put { key, .. } | Change::Delete { key } => {
                    if let Some(history) = self.keys.get(key.as_slice()) {
                        let last = history.len() - 1;
                        if history[last].mod_revision == revision {
                            out.push(event(key, history, last, &history[last]));
                        }
                    }
                }
                Change::DeleteRange { key, end } => out.extend(
                    self.events_between(key, end, revision, revision, usize::MAX)
                        .0
                        .into_iter()
                        .filter(|e| e.delete),
                ),
            }
        }
        out
    }

    /// The events on keys of the range with a revision in `from..=to`, in
    /// revision order (key order within a revision), and the revision they
    /// reach: all of them up to it. With more than `limit` events, the list
    /// stops after a whole revision (at least one), so the rest can be asked
    /// for next. The caller checks that `from` is not below the compaction
    /// point: below it, history is gone.
    pub fn events_between(
        &self,
        key: &[u8],
        end: &RangeEnd,
        from: i64,
        to: i64,
        limit: usize,
    ) -> (Vec<Event>, i64) {
        let mut out = Vec::new();
        if !end.non_empty(key) || from > to {
            return (out, to);
        }
        for (k, history) in self.keys.range::<[u8], _>(end.bounds(key)) {
            let first = history.partition_point(|v| v.mod_revision < from);
            for (i, v) in history.iter().enumerate().skip(first) {
                if v.mod_revision > to {
                    break;
                }
                out.push(event(k, history, i, v));
            }
        }
        out.sort_by_key(|e| e.kv.mod_revision); // stable: key order within a revision
        if out.len() <= limit.max(1) {
            return (out, to);
        }
        // Cut before the revision of the first event past the limit, or after
        // the first revision if that one alone is past it.
        let first = out[0].kv.mod_revision;
        let over = out[limit.max(1)].kv.mod_revision;
        let reached = if over == first { first } else { over - 1 };
        out.truncate(out.partition_point(|e| e.kv.mod_revision <= reached));
        (out, reached)
    }

    /// Checks that revision `at` can be read (0 or less means the newest).
    pub fn resolve(&self, at: i64) -> Result<i64, MvccError> {
        let at = if at <= 0 { self.revision } else { at };
        if at > self.revision {
            Err(MvccError::FutureRevision)
        } else if at < self.compacted {
            Err(MvccError::Compacted)
        } else {
            Ok(at)
        }
    }

    /// Live keys of the range at revision `at` (see [`Store::resolve`]), in key
    /// order; `limit` > 0 caps `kvs`, never `count`.
    pub fn range(
        &self,
        key: &[u8],
        end: &RangeEnd,
        at: i64,
        limit: usize,
    ) -> Result<RangeResult, MvccError> {
        let at = self.resolve(at)?;
        let mut result = RangeResult::default();
        self.for_each_live(key, end, at, |kv| {
            result.count += 1;
            if limit == 0 || result.kvs.len() < limit {
                result.kvs.push(kv);
            }
        });
        Ok(result)
    }

    /// The live value of `key` at the newest revision.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        let history = self.keys.get(key)?;
        visible(history, self.revision).map(|v| to_kv(key, v))
    }

    /// Calls `f` for every live key of the range at revision `at` (already
    /// resolved), in key order.
    pub fn for_each_live(&self, key: &[u8], end: &RangeEnd, at: i64, mut f: impl FnMut(KeyValue)) {
        if !end.non_empty(key) {
            return;
        }
        for (k, history) in self.keys.range::<[u8], _>(end.bounds(key)) {
            if let Some(v) = visible(history, at) {
                f(to_kv(k, v));
            }
        }
    }

    /// Compacts at `revision`: reads below it fail from now on, and versions
    /// no read at `revision` or later can see are dropped.
    ///
    /// `revision` may be above this shard's newest revision: compaction is
    /// member-wide, and revisions that went to other shards left this one
    /// unchanged, so its newest revision moves up to `revision`. The caller
    /// checks that `revision` is not in the member's future (at most C).
    pub fn compact(&mut self, revision: i64) -> Result<(), MvccError> {
        if revision <= self.compacted {
            return Err(MvccError::Compacted);
        }
        self.revision = self.revision.max(revision);
        let mut freed = 0;
        self.keys.retain(|key, history| {
            // Index of the newest version at or below `revision`.
            let keep_from = history.partition_point(|v| v.mod_revision <= revision);
            if keep_from == 0 {
                return true; // every version is newer
            }
            let newest_old = keep_from - 1;
            let drop_to = if history[newest_old].is_tombstone() {
                keep_from
            } else {
                newest_old
            };
            for v in history.drain(..drop_to) {
                freed += version_bytes(key, &v.value);
            }
            !history.is_empty()
        });
        self.bytes -= freed;
        self.compacted = revision;
        Ok(())
    }

    /// Drops every version above `revision` (speculative writes that never
    /// committed, after a leader change).
    ///
    /// # Panics
    /// If `revision` is below the compaction point.
    pub fn rollback_to(&mut self, revision: i64) {
        assert!(
            revision >= self.compacted,
            "rollback below the compaction point"
        );
        if revision >= self.revision {
            return;
        }
        let mut freed = 0;
        let leases = &mut self.leases;
        self.keys.retain(|key, history| {
            let keep = history.partition_point(|v| v.mod_revision <= revision);
            if keep == history.len() {
                return true;
            }
            let newest_lease = |h: &[Version]| h.last().map_or(0, live_lease);
            let dropped_lease = newest_lease(history);
            for v in history.drain(keep..) {
                freed += version_bytes(key, &v.value);
            }
            leases.moved(key, dropped_lease, newest_lease(history));
            !history.is_empty()
        });
        self.bytes -= freed;
        self.revision = revision;
    }

    /// A CRC-32 of every live key at revision `at` (key, create/mod revision,
    /// version, lease, value, in key order): equal states hash equally.
    pub fn hash_kv(&self, at: i64) -> Result<u32, MvccError> {
        if at < self.compacted {
            return Err(MvccError::Compacted);
        }
        let mut h = crc32fast::Hasher::new();
        self.for_each_live(&[], &RangeEnd::ToEnd, at, |kv| {
            h.update(&(kv.key.len() as u64).to_le_bytes());
            h.update(&kv.key);
            for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
                h.update(&n.to_le_bytes());
            }
            h.update(&(kv.value.len() as u64).to_le_bytes());
            h.update(&kv.value);
        });
        Ok(h.finalize())
    }

    /// The state as of `revision` (versions above it left out), for a snapshot.
    pub fn export_at(&self, revision: i64) -> StoreImage {
        let keys = self
            .keys
            .iter()
            .filter_map(|(k, history)| {
                let upto: Vec<VersionImage> = history
                    .iter()
                    .take_while(|v| v.mod_revision <= revision)
                    .map(version_image)
                    .collect();
                (!upto.is_empty()).then(|| (k.to_vec(), upto))
            })
            .collect();
        StoreImage {
            revision: revision.min(self.revision),
            compacted: self.compacted,
            keys,
        }
    }

    /// The histories (versions at or below `upto`) of the keys in `ranges`,
    /// as an image at `upto`: what a cross-shard request needs from this shard
    /// to be evaluated elsewhere (see [`StoreImage::merge`]).
    pub fn export_ranges(&self, ranges: &[(Vec<u8>, RangeEnd)], upto: i64) -> StoreImage {
        let mut keys: BTreeMap<&[u8], &History> = BTreeMap::new();
        for (key, end) in ranges {
            if !end.non_empty(key) {
                continue;
            }
            for (k, history) in self.keys.range::<[u8], _>(end.bounds(key)) {
                keys.insert(k, history);
            }
        }
        let keys = keys
            .into_iter()
            .filter_map(|(k, history)| {
                let upto: Vec<VersionImage> = history
                    .iter()
                    .take_while(|v| v.mod_revision <= upto)
                    .map(version_image)
                    .collect();
                (!upto.is_empty()).then(|| (k.to_vec(), upto))
            })
            .collect();
        StoreImage {
            revision: upto,
            compacted: self.compacted,
            keys,
        }
    }

    /// [`Store::export_at`] as a serde value that borrows the store: encodes
    /// the same bytes as the [`StoreImage`] would, without copying it first.
    pub fn image_at(&self, revision: i64) -> StoreImageRef<'_> {
        StoreImageRef {
            store: self,
            upto: revision,
        }
    }

    /// A store holding exactly `image`.
    pub fn import(image: StoreImage) -> Self {
        let keys: BTreeMap<Key, History> = image
            .keys
            .into_iter()
            .map(|(k, versions)| {
                let history = versions
                    .into_iter()
                    .map(|v| Version {
                        mod_revision: v.mod_revision,
                        create_revision: v.create_revision,
                        version: v.version,
                        value: v.value.into_boxed_slice(),
                        lease: v.lease,
                    })
                    .collect();
                (Key::from_slice(&k), history)
            })
            .collect();
        let bytes = keys
            .iter()
            .map(|(k, history)| {
                history
                    .iter()
                    .map(|v| version_bytes(k, &v.value))
                    .sum::<u64>()
            })
            .sum();
        let leases = lease_index_of(&keys);
        Store {
            keys,
            revision: image.revision,
            compacted: image.compacted,
            bytes,
            leases,
        }
    }

    /// Panics if an invariant does not hold. Tests call it after every step.
    pub fn check_invariants(&self) {
        let bytes: u64 = self
            .keys
            .iter()
            .map(|(k, h)| h.iter().map(|v| version_bytes(k, &v.value)).sum::<u64>())
            .sum();
        assert_eq!(self.bytes, bytes, "byte count matches the histories");
        assert_eq!(
            self.leases,
            lease_index_of(&self.keys),
            "lease index matches the live keys"
        );
        assert!(
            self.compacted <= self.revision.max(self.compacted),
            "compacted <= revision"
        );
        for (k, history) in &self.keys {
            assert!(!history.is_empty(), "key {k:?} with an empty history");
            let mut prev: Option<&Version> = None;
            for v in history {
                assert!(
                    v.mod_revision <= self.revision,
                    "version above the store revision"
                );
                if let Some(p) = prev {
                    assert!(
                        v.mod_revision > p.mod_revision,
                        "versions in revision order"
                    );
                    if !v.is_tombstone() {
                        if p.is_tombstone() {
                            assert_eq!(v.version, 1, "a key recreated starts at version 1");
                        } else {
                            assert_eq!(v.version, p.version + 1, "versions count up");
                            assert_eq!(
                                v.create_revision, p.create_revision,
                                "create revision is kept"
                            );
                        }
                    }
                }
                prev = Some(v);
            }
        }
    }
}

/// The newest version at or below `at`, if it is live.
/// See [`Store::image_at`]. Serializes exactly as [`StoreImage`].
pub struct StoreImageRef<'a> {
    store: &'a Store,
    upto: i64,
}

/// A key's versions, serialized as `Vec<VersionImage>`.
struct VersionsRef<'v>(&'v [Version]);

impl serde::Serialize for VersionsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&VersionRef(v))?;
        }
        seq.end()
    }
}

/// One version, serialized as a [`VersionImage`].
struct VersionRef<'v>(&'v Version);

impl serde::Serialize for VersionRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let v = self.0;
        let mut st = s.serialize_struct("VersionImage", 5)?;
        st.serialize_field("mod_revision", &v.mod_revision)?;
        st.serialize_field("create_revision", &v.create_revision)?;
        st.serialize_field("version", &v.version)?;
        st.serialize_field("value", &BytesRef(&v.value))?;
        st.serialize_field("lease", &v.lease)?;
        st.end()
    }
}

/// Bytes, serialized as a `Vec<u8>` is (a sequence of u8).
struct BytesRef<'b>(&'b [u8]);

impl serde::Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
}

/// Every key with a version at or below `upto`, as the image's `keys` field.
struct KeysRef<'k> {
    store: &'k Store,
    upto: i64,
    count: usize,
}

impl serde::Serialize for KeysRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.count))?;
        for (k, h) in &self.store.keys {
            let n = h.partition_point(|v| v.mod_revision <= self.upto);
            if n > 0 {
                // A pair serializes as its two elements, as the image's does.
                seq.serialize_element(&(BytesRef(k), VersionsRef(&h[..n])))?;
            }
        }
        seq.end()
    }
}

impl serde::Serialize for StoreImageRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let upto = self.upto;
        let count = self
            .store
            .keys
            .values()
            .filter(|h| h.first().is_some_and(|v| v.mod_revision <= upto))
            .count();
        let mut st = s.serialize_struct("StoreImage", 3)?;
        st.serialize_field("revision", &upto.min(self.store.revision))?;
        st.serialize_field("compacted", &self.store.compacted)?;
        st.serialize_field(
            "keys",
            &KeysRef {
                store: self.store,
                upto,
                count,
            },
        )?;
        st.end()
    }
}

/// Chunked images (snapshot data format 2), encoded a few thousand keys at a
/// time so the shard core can serve requests in between:
///
/// ```text
/// "CSI2" | revision i64 LE
/// chunks: bytes u32 LE | keys u32 LE | keys × postcard((key, Vec<VersionImage>))
/// end: 0u32 | 0u32
/// compacted i64 LE (as of the last chunk: versions a compaction dropped while
///                   chunks were taken are not needed at or above it)
/// ```
pub mod chunked {
    use super::*;

    pub const MAGIC: &[u8; 4] = b"CSI2";

    /// Starts an image of the state at `revision`.
    pub fn begin(out: &mut Vec<u8>, revision: i64) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&revision.to_le_bytes());
    }

    /// Appends a chunk of up to `max_keys` keys after `after`, with their
    /// versions at or below `upto`. Returns the last key taken, or None when
    /// no key is left (nothing appended).
    pub fn chunk(
        store: &Store,
        after: Option<&[u8]>,
        upto: i64,
        max_keys: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, postcard::Error> {
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let header_at = out.len();
        out.extend_from_slice(&[0u8; 8]);
        let (mut taken, mut last) = (0u32, None);
        for (k, h) in store
            .keys
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take(max_keys)
        {
            last = Some(k);
            let n = h.partition_point(|v| v.mod_revision <= upto);
            if n > 0 {
                let entry = postcard::to_stdvec(&(BytesRef(k), VersionsRef(&h[..n])))?;
                out.extend_from_slice(&entry);
                taken += 1;
            }
        }
        let Some(last) = last else {
            out.truncate(header_at);
            return Ok(None);
        };
        if taken == 0 {
            // Only keys newer than `upto` here: no chunk (an empty one would
            // read as the end), but the scan goes on after `last`.
            out.truncate(header_at);
            return Ok(Some(last.to_vec()));
        }
        let bytes = (out.len() - header_at - 8) as u32;
        out[header_at..header_at + 4].copy_from_slice(&bytes.to_le_bytes());
        out[header_at + 4..header_at + 8].copy_from_slice(&taken.to_le_bytes());
        Ok(Some(last.to_vec()))
    }

    /// Ends the image with the store's compaction point now.
    pub fn end(store: &Store, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; 8]);
        out.extend_from_slice(&store.compacted.to_le_bytes());
    }

    /// True if `data` is a chunked image.
    pub fn is_chunked(data: &[u8]) -> bool {
        data.starts_with(MAGIC)
    }

    /// Reads a chunked image back.
    pub fn decode(data: &[u8]) -> Result<StoreImage, String> {
        let bad = |why: &str| format!("chunked store image: {why}");
        let take = |at: usize, n: usize| data.get(at..at + n).ok_or_else(|| bad("truncated"));
        if !is_chunked(data) {
            return Err(bad("bad magic"));
        }
        let revision = i64::from_le_bytes(take(4, 8)?.try_into().expect("8 bytes"));
        let mut at = 12;
        let mut keys = Vec::new();
        loop {
            let bytes = u32::from_le_bytes(take(at, 4)?.try_into().expect("4")) as usize;
            let count = u32::from_le_bytes(take(at + 4, 4)?.try_into().expect("4"));
            at += 8;
            if bytes == 0 && count == 0 {
                break;
            }
            let mut rest = take(at, bytes)?;
            for _ in 0..count {
                let (entry, tail): ((Vec<u8>, Vec<VersionImage>), &[u8]) =
                    postcard::take_from_bytes(rest).map_err(|e| bad(&e.to_string()))?;
                keys.push(entry);
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(bad("chunk longer than its keys"));
            }
            at += bytes;
        }
        let compacted = i64::from_le_bytes(take(at, 8)?.try_into().expect("8 bytes"));
        if at + 8 != data.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(StoreImage {
            revision,
            compacted,
            keys,
        })
    }
}

/// The lease of a key's newest version `v`: 0 if it is a tombstone.
fn live_lease(v: &Version) -> i64 {
    if v.is_tombstone() {
        0
    } else {
        v.lease
    }
}

/// The lease index of `keys`, from each key's newest version.
fn lease_index_of(keys: &BTreeMap<Key, History>) -> LeaseIndex {
    let mut index = LeaseIndex::new();
    for (k, history) in keys {
        if let Some(v) = history.last() {
            index.attach(live_lease(v), k);
        }
    }
    index
}

fn visible(history: &[Version], at: i64) -> Option<&Version> {
    let i = history.partition_point(|v| v.mod_revision <= at);
    history[..i].last().filter(|v| !v.is_tombstone())
}

/// The event of version `i` (`v`) of `key`'s history.
fn event(key: &[u8], history: &[Version], i: usize, v: &Version) -> Event {
    let prev = i
        .checked_sub(1)
        .map(|p| &history[p])
        .filter(|p| !p.is_tombstone())
        .map(|p| to_kv(key, p));
    Event {
        delete: v.is_tombstone(),
        kv: to_kv(key, v),
        prev,
    }
}

fn to_kv(key: &[u8], v: &Version) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: v.create_revision,
        mod_revision: v.mod_revision,
        version: v.version,
        value: v.value.to_vec(),
        lease: v.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_new_and_previous_values_and_replay_from_history() {
        let mut s = Store::new();
        let mut live = Vec::new();
        let mut apply = |s: &mut Store, rev: i64, changes: &[Change]| {
            s.apply(rev, changes);
            live.extend(s.events_at(rev, changes));
        };
        apply(&mut s, 2, &[put("a", "1"), put("b", "1")]);
        apply(&mut s, 3, &[put("a", "2")]);
        // Deleting a key that is not live changes nothing: no event.
        apply(&mut s, 4, &[del("b"), del("zz")]);
        apply(&mut s, 5, &[put("b", "3")]);
        let shape: Vec<_> = live
            .iter()
            .map(|e| {
                (
                    e.delete,
                    String::from_utf8(e.kv.key.clone()).unwrap(),
                    e.kv.mod_revision,
                    e.kv.version,
                    e.prev.as_ref().map(|p| p.mod_revision),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (false, "a".into(), 2, 1, None),
                (false, "b".into(), 2, 1, None),
                (false, "a".into(), 3, 2, Some(2)),
                (true, "b".into(), 4, 0, Some(2)),
                (false, "b".into(), 5, 1, None),
            ]
        );
        assert_eq!(live[3].kv.create_revision, 0, "a delete event is bare");
        assert!(live[3].kv.value.is_empty());
        // The same events, read back from the histories.
        let all = |s: &Store, key: &[u8], end: RangeEnd, from, to| {
            s.events_between(key, &end, from, to, usize::MAX)
        };
        assert_eq!(all(&s, b"", RangeEnd::ToEnd, 1, 5), (live.clone(), 5));
        assert_eq!(all(&s, b"", RangeEnd::ToEnd, 3, 4).0, live[2..4]);
        assert_eq!(all(&s, b"b", RangeEnd::Single, 0, 9).0.len(), 3);
        assert!(all(&s, b"b", RangeEnd::Until(b"a".to_vec()), 0, 9)
            .0
            .is_empty());
        // A limit cuts at a revision boundary, never inside a revision.
        assert_eq!(
            s.events_between(b"", &RangeEnd::ToEnd, 1, 5, 1),
            (live[..2].to_vec(), 2)
        );
        assert_eq!(
            s.events_between(b"", &RangeEnd::ToEnd, 1, 5, 3),
            (live[..3].to_vec(), 3)
        );
        assert_eq!(
            s.events_between(b"", &RangeEnd::ToEnd, 4, 5, 1),
            (live[3..4].to_vec(), 4)
        );
        // After compaction at 3 the history from 3 on is whole, but a
        // previous value below 3 is gone (etcd: "if the previous KV is
        // already compacted, nothing will be returned").
        s.compact(3).unwrap();
        let mut want = live[2..].to_vec();
        want[0].prev = None;
        assert_eq!(all(&s, b"", RangeEnd::ToEnd, 3, 5).0, want);
    }

    #[test]
    fn a_logged_range_delete_is_the_same_as_its_deletes() {
        let fill = || {
            let mut s = Store::new();
            s.apply(2, &[put("a", "1"), put("b", "1"), put("c", "1")]);
            s.apply(3, &[del("b")]);
            s
        };
        let (mut by_key, mut by_range) = (fill(), fill());
        by_key.apply(4, &[del("a"), del("c")]);
        let range = Change::DeleteRange {
            key: b"a".to_vec(),
            end: RangeEnd::Until(b"c\0".to_vec()),
        };
        by_range.apply(4, std::slice::from_ref(&range));
        assert_eq!(by_range.export_at(4), by_key.export_at(4));
        assert_eq!(by_range.bytes(), by_key.bytes());
        let want = by_key.events_at(4, &[del("a"), del("c")]);
        let got = by_range.events_at(4, &[range]);
        assert_eq!(got, want);
        assert_eq!(got.len(), 2, "b was not live: no event");
        assert!(got.iter().all(|e| e.delete && e.prev.is_some()));
    }

    #[test]
    fn the_borrowed_image_encodes_exactly_as_the_copied_one() {
        let mut s = Store::new();
        let put = |k: &str, v: &str| Change::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        };
        s.apply(2, &[put("a", "1"), put("b", "2")]);
        s.apply(3, &[put("a", "3")]);
        s.apply(4, &[Change::Delete { key: "b".into() }]);
        s.apply(6, &[put("c", "4"), put("a", "5")]);
        s.compact(3).unwrap();
        for upto in [3, 4, 5, 6, 9] {
            let copied = postcard::to_stdvec(&s.export_at(upto)).unwrap();
            let borrowed = postcard::to_stdvec(&s.image_at(upto)).unwrap();
            assert_eq!(borrowed, copied, "at {upto}");
        }
    }

    fn put(k: &str, v: &str) -> Change {
        Change::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        }
    }

    fn del(k: &str) -> Change {
        Change::Delete { key: k.into() }
    }

    #[test]
    fn versions_and_create_revisions_follow_etcd() {
        let mut s = Store::new();
        s.apply(2, &[put("a", "1")]);
        s.apply(3, &[put("a", "2")]);
        s.apply(4, &[del("a")]);
        s.apply(5, &[put("a", "3")]);
        let kv = s.get(b"a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        let old = s.range(b"a", &RangeEnd::Single, 3, 0).unwrap().kvs;
        assert_eq!(
            (old[0].create_revision, old[0].mod_revision, old[0].version),
            (2, 3, 2)
        );
        assert_eq!(s.range(b"a", &RangeEnd::Single, 4, 0).unwrap().count, 0);
        s.check_invariants();
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_see() {
        let mut s = Store::new();
        s.apply(2, &[put("a", "1"), put("b", "1")]);
        s.apply(3, &[put("a", "2"), del("b")]);
        s.apply(4, &[put("c", "1")]);
        s.compact(3).unwrap();
        assert_eq!(
            s.range(b"a", &RangeEnd::Single, 2, 0),
            Err(MvccError::Compacted)
        );
        assert_eq!(s.range(b"a", &RangeEnd::ToEnd, 3, 0).unwrap().kvs.len(), 1);
        assert_eq!(
            s.key_count(),
            2,
            "b's tombstone at the compaction point is gone"
        );
        assert_eq!(s.compact(3), Err(MvccError::Compacted));
        // Above the shard's newest revision: the shard moves up with it.
        assert_eq!(s.compact(9), Ok(()));
        assert_eq!((s.revision(), s.compacted()), (9, 9));
        assert_eq!(
            s.range(b"a", &RangeEnd::Single, 9, 0).unwrap().kvs[0].value,
            b"2"
        );
        s.check_invariants();
    }

    #[test]
    fn rollback_drops_speculative_revisions() {
        let mut s = Store::new();
        s.apply(2, &[put("a", "1")]);
        s.apply(3, &[put("a", "2"), put("b", "1")]);
        s.rollback_to(2);
        assert_eq!(s.revision(), 2);
        assert_eq!(s.get(b"a").unwrap().value, b"1");
        assert_eq!(s.get(b"b"), None);
        s.apply(3, &[put("b", "x")]);
        s.check_invariants();
    }

    #[test]
    fn range_end_forms() {
        assert_eq!(RangeEnd::from_request(b""), RangeEnd::Single);
        assert_eq!(RangeEnd::from_request(b"\0"), RangeEnd::ToEnd);
        let mut s = Store::new();
        s.apply(2, &[put("a", "1"), put("b", "1"), put("c", "1")]);
        let r = s
            .range(b"a", &RangeEnd::Until(b"c".to_vec()), 0, 1)
            .unwrap();
        assert_eq!((r.kvs.len(), r.count), (1, 2));
        assert_eq!(s.range(b"b", &RangeEnd::ToEnd, 0, 0).unwrap().count, 2);
        assert_eq!(
            s.range(b"c", &RangeEnd::Until(b"a".to_vec()), 0, 0)
                .unwrap()
                .count,
            0
        );
    }

    #[test]
    fn hash_kv_depends_on_the_state_at_the_revision() {
        let mut a = Store::new();
        let mut b = Store::new();
        a.apply(2, &[put("x", "1")]);
        b.apply(2, &[put("x", "1")]);
        assert_eq!(a.hash_kv(2), b.hash_kv(2));
        a.apply(3, &[put("x", "2")]);
        b.apply(3, &[put("x", "3")]);
        assert_ne!(a.hash_kv(3), b.hash_kv(3));
        assert_eq!(a.hash_kv(2), b.hash_kv(2), "history is the same at 2");
        a.compact(3).unwrap();
        assert_eq!(a.hash_kv(2), Err(MvccError::Compacted));
    }

    #[test]
    fn export_at_a_revision_round_trips() {
        let mut s = Store::new();
        s.apply(2, &[put("a", "1")]);
        s.apply(3, &[put("a", "2"), put("b", "1")]);
        s.apply(4, &[del("b")]);
        let back = Store::import(s.export_at(3));
        assert_eq!(back.revision(), 3);
        assert_eq!(back.get(b"a").unwrap().value, b"2");
        assert_eq!(
            back.get(b"b").unwrap().value,
            b"1",
            "the delete at 4 is not in the image at 3"
        );
        assert_eq!(
            back.range(b"a", &RangeEnd::Single, 2, 0).unwrap().kvs[0].value,
            b"1"
        );
        back.check_invariants();
    }

    fn put_in(k: &str, v: &str, lease: i64) -> Change {
        Change::Put {
            key: k.into(),
            value: v.into(),
            lease,
        }
    }

    #[test]
    fn the_lease_index_follows_puts_deletes_rollbacks_and_imports() {
        let keys = |s: &Store, lease| -> Vec<String> {
            s.lease_keys(lease)
                .into_iter()
                .map(|k| String::from_utf8(k).unwrap())
                .collect()
        };
        let mut s = Store::new();
        s.apply(
            2,
            &[put_in("b", "1", 5), put_in("a", "1", 5), put("z", "1")],
        );
        assert_eq!(keys(&s, 5), ["a", "b"], "in key order");
        assert_eq!(s.leases_in_use(), [5]);
        assert!(s.lease_keys(0).is_empty(), "lease 0 is no lease");
        s.apply(3, &[put_in("a", "2", 6), put_in("c", "1", 5)]);
        assert_eq!(
            (keys(&s, 5), keys(&s, 6)),
            (vec!["b".into(), "c".into()], vec!["a".into()])
        );
        s.apply(4, &[put("b", "2"), del("c")]);
        assert!(
            keys(&s, 5).is_empty(),
            "a put without a lease and a delete detach"
        );
        assert_eq!(s.leases_in_use(), [6]);
        s.apply(
            5,
            &[Change::DeleteRange {
                key: b"a".to_vec(),
                end: RangeEnd::ToEnd,
            }],
        );
        assert!(
            s.leases_in_use().is_empty(),
            "a logged range delete detaches"
        );
        s.check_invariants();
        // Compaction changes no live key.
        s.compact(3).unwrap();
        s.check_invariants();
        // Rolled back to 3: a at lease 6, b and c at lease 5 again.
        s.rollback_to(3);
        assert_eq!(
            (keys(&s, 5), keys(&s, 6)),
            (vec!["b".into(), "c".into()], vec!["a".into()])
        );
        s.check_invariants();
        // An image taken at 2 brings back the index of revision 2.
        let mut t = Store::new();
        t.apply(2, &[put_in("b", "1", 5), put_in("a", "1", 5)]);
        t.apply(3, &[put_in("a", "2", 7), del("b")]);
        let back = Store::import(t.export_at(2));
        assert_eq!(keys(&back, 5), ["a", "b"]);
        assert!(back.lease_keys(7).is_empty());
        back.check_invariants();
        let back = Store::import(t.export_at(3));
        assert_eq!(
            (back.leases_in_use(), keys(&back, 7)),
            (vec![7], vec!["a".into()])
        );
        back.check_invariants();
    }

    #[test]
    #[should_panic(expected = "lease index matches the live keys")]
    fn check_invariants_sees_a_stale_lease_index() {
        let mut s = Store::new();
        s.apply(2, &[put_in("a", "1", 5)]);
        s.leases.detach(5, b"a");
        s.check_invariants();
    }

    #[test]
    #[should_panic(expected = "applied after")]
    fn revisions_must_increase() {
        let mut s = Store::new();
        s.apply(2, &[put("a", "1")]);
        s.apply(2, &[put("b", "1")]);
    }
}
