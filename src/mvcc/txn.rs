//! Evaluating etcd KV requests against a shard's [`Store`].
//!
//! Writes are evaluated against the newest state (on the write leader: applied
//! plus its own speculative writes); the result is a response and the list of
//! [`Change`]s to stamp with one new revision. Because the revision is taken
//! only if something changes, responses are built with
//! [`PENDING_REVISION`] where the new revision belongs, and
//! [`stamp`] fills it in once the sequencer has given one.
//!
//! Semantics follow etcd 3.4's applier (`etcdserver/apply.go`):
//! - Range: fetch, then the mod/create revision filters, then sort (ascending by
//!   default when the sort target is not the key), then `limit` sets `more`;
//!   `count` is the number of keys in the range before filters.
//! - Inside a Txn, ops run in order and later ops see earlier ops' writes.
//! - A Compare on a key range holds only if it holds for every key; a VALUE
//!   compare on a missing key is false; other targets compare a missing key as
//!   zeros.
//!
//! Request validation (empty key, duplicate keys in a txn, too many ops, ...)
//! happens at the API edge, before evaluation.

use super::store::{Change, KeyValue, MvccError, RangeEnd, Store};
use std::collections::BTreeMap;

/// Stands for the revision a write will get, until [`stamp`] replaces it.
pub const PENDING_REVISION: i64 = -1;

/// etcd's message when `ignore_value`/`ignore_lease` is set on a missing key.
pub const ERR_KEY_NOT_FOUND: &str = "etcdserver: key not found";
/// etcd's message when a Put names a lease that does not exist.
pub const ERR_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub limit: i64,
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    /// Per response: whether the request had written anything by the end of
    /// that op (etcd gives an op's header the revision as of that op: the one
    /// before the request until it writes, then the request's own).
    pub wrote: Vec<bool>,
}

/// A request error that aborts the whole request (nothing changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalError {
    Mvcc(MvccError),
    KeyNotFound,
    LeaseNotFound,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Mvcc(e) => e.fmt(f),
            EvalError::KeyNotFound => f.write_str(ERR_KEY_NOT_FOUND),
            EvalError::LeaseNotFound => f.write_str(ERR_LEASE_NOT_FOUND),
        }
    }
}

impl From<MvccError> for EvalError {
    fn from(e: MvccError) -> Self {
        EvalError::Mvcc(e)
    }
}

/// The `lease_exists` of [`Eval::new`] while leases are not built: no lease
/// is granted.
pub fn no_leases(_lease: i64) -> bool {
    false
}

/// Evaluates requests over a store plus the writes made so far in this request.
pub struct Eval<'a> {
    store: &'a Store,
    /// Keys written by this request: `Some` = new value, `None` = deleted.
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    changes: Vec<Change>,
    lease_exists: &'a dyn Fn(i64) -> bool,
    /// The member's newest revision: reads above it are in the future.
    current: i64,
    /// Whether this request has written anything yet.
    wrote: bool,
}

impl<'a> Eval<'a> {
    /// `lease_exists` answers whether a lease id is granted (0 is "no lease").
    pub fn new(store: &'a Store, lease_exists: &'a dyn Fn(i64) -> bool) -> Self {
        Self {
            store,
            overlay: BTreeMap::new(),
            changes: Vec::new(),
            lease_exists,
            current: store.revision(),
            wrote: false,
        }
    }

    /// The member's newest revision, when it is above this store's (a shard
    /// holds only its own keys' revisions). Reads above it are refused.
    pub fn current_revision(mut self, revision: i64) -> Self {
        self.current = self.current.max(revision);
        self
    }

    /// The changes to stamp with one revision (empty: consume no revision).
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// The newest value of `key` as this request sees it.
    fn current(&self, key: &[u8]) -> Option<KeyValue> {
        match self.overlay.get(key) {
            Some(v) => v.clone(),
            None => self.store.get(key),
        }
    }

    /// Live keys of a range at the newest state including this request's
    /// writes, in key order.
    fn live_range(&self, key: &[u8], end: &RangeEnd) -> Vec<KeyValue> {
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        self.store
            .for_each_live(key, end, self.store.revision(), |kv| {
                merged.insert(kv.key.clone(), kv);
            });
        for (k, v) in &self.overlay {
            if end.contains(key, k) {
                match v {
                    Some(kv) => merged.insert(k.clone(), kv.clone()),
                    None => merged.remove(k),
                };
            }
        }
        merged.into_values().collect()
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, EvalError> {
        let end = RangeEnd::from_request(&req.range_end);
        // etcd checks a txn's range revisions against the revision before the
        // txn (its own is never readable by revision).
        if req.revision > self.current {
            return Err(MvccError::FutureRevision.into());
        }
        let mut kvs = if req.revision > 0 && req.revision <= self.current {
            // An explicit revision up to the member's newest reads history,
            // never this request's writes. A shard sees only its own keys'
            // revisions: a read above its newest one sees the same state.
            let at = req.revision.min(self.store.revision());
            self.store.range(&req.key, &end, at, 0)?.kvs
        } else {
            self.store.resolve(0)?;
            self.live_range(&req.key, &end)
        };
        let count = kvs.len() as i64;
        filter_revisions(&mut kvs, req);
        Ok(finish_range(kvs, count, req))
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, EvalError> {
        let prev = self.current(&req.key);
        let (value, lease) = match (&prev, req.ignore_value, req.ignore_lease) {
            (None, true, _) | (None, _, true) => return Err(EvalError::KeyNotFound),
            (p, iv, il) => (
                if iv {
                    p.as_ref().expect("checked").value.clone()
                } else {
                    req.value.clone()
                },
                if il {
                    p.as_ref().expect("checked").lease
                } else {
                    req.lease
                },
            ),
        };
        if lease != 0 && !(self.lease_exists)(lease) {
            return Err(EvalError::LeaseNotFound);
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev
                .as_ref()
                .map_or(PENDING_REVISION, |p| p.create_revision),
            mod_revision: PENDING_REVISION,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: value.clone(),
            lease,
        };
        if self.overlay.insert(req.key.clone(), Some(kv)).is_some() {
            // This request wrote the key before: replace that change.
            self.changes.retain(|c| c.key() != Some(req.key.as_slice()));
        }
        self.wrote = true;
        self.changes.push(Change::Put {
            key: req.key.clone(),
            value,
            lease,
        });
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EvalError> {
        let end = RangeEnd::from_request(&req.range_end);
        let doomed = self.live_range(&req.key, &end);
        self.wrote |= !doomed.is_empty();
        for kv in &doomed {
            let earlier = self.overlay.get(&kv.key);
            let was_created_here =
                earlier.is_some_and(|v| v.is_some()) && self.store.get(&kv.key).is_none();
            // Only a key this request already wrote has a change to replace
            // (scanning the changes for every key would be quadratic).
            if earlier.is_some() {
                self.changes.retain(|c| c.key() != Some(kv.key.as_slice()));
            }
            self.overlay.insert(kv.key.clone(), None);
            if !was_created_here {
                self.changes.push(Change::Delete {
                    key: kv.key.clone(),
                });
            }
        }
        Ok(DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Compares see the state before the request, nested txns included
    /// (etcd picks every branch before it applies anything).
    fn compare(&self, c: &Compare) -> bool {
        let end = RangeEnd::from_request(&c.range_end);
        let mut kvs = Vec::new();
        self.store
            .for_each_live(&c.key, &end, self.store.revision(), |kv| kvs.push(kv));
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EvalError> {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        let mut wrote = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.op(op)?);
            wrote.push(self.wrote);
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            wrote,
        })
    }

    pub fn op(&mut self, op: &RequestOp) -> Result<ResponseOp, EvalError> {
        Ok(match op {
            RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
            RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
            RequestOp::Txn(t) => ResponseOp::Txn(self.txn(t)?),
        })
    }
}

impl RequestOp {
    /// The largest revision a range in this request asks for (0: none).
    pub fn max_revision(&self) -> i64 {
        match self {
            RequestOp::Range(r) => r.revision,
            RequestOp::Txn(t) => t
                .success
                .iter()
                .chain(&t.failure)
                .map(RequestOp::max_revision)
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// Drops keys outside the request's mod/create revision bounds (a pending
/// revision is newer than any bound).
pub fn filter_revisions(kvs: &mut Vec<KeyValue>, req: &RangeRequest) {
    kvs.retain(|kv| {
        (req.min_mod_revision == 0
            || kv.mod_revision >= req.min_mod_revision
            || kv.mod_revision == PENDING_REVISION)
            && (req.max_mod_revision == 0
                || (kv.mod_revision <= req.max_mod_revision && kv.mod_revision != PENDING_REVISION))
            && (req.min_create_revision == 0
                || kv.create_revision >= req.min_create_revision
                || kv.create_revision == PENDING_REVISION)
            && (req.max_create_revision == 0
                || (kv.create_revision <= req.max_create_revision
                    && kv.create_revision != PENDING_REVISION))
    });
}

/// Sort (ascending by default when the target is not the key), `limit` and
/// `more`, then `keys_only`/`count_only`, as etcd's applier does after the
/// fetch and the filters. `count` is the number of keys before the filters.
pub fn finish_range(mut kvs: Vec<KeyValue>, count: i64, req: &RangeRequest) -> RangeResponse {
    let limit = req.limit.max(0) as usize;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if limit > 0 && req.sort_order == SortOrder::None && !filtered {
        // etcd fetches `limit + 1` keys in key order and sorts only those
        // (it sorts by a non-key target even without a sort order).
        kvs.truncate(limit + 1);
    }
    let mut order = req.sort_order;
    if req.sort_target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        // A pending revision is the newest: sort it last.
        let rev = |r: i64| if r == PENDING_REVISION { i64::MAX } else { r };
        let by = |a: &KeyValue, b: &KeyValue| match req.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => rev(a.create_revision).cmp(&rev(b.create_revision)),
            SortTarget::Mod => rev(a.mod_revision).cmp(&rev(b.mod_revision)),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Stable both ways: ties stay in key order, as etcd returns them.
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if req.count_only {
        // etcd fetches no keys for a count, so there is never "more".
        kvs.clear();
        more = false;
    } else if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { kvs, more, count }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    // A pending revision (written earlier in this txn) is newer than any.
    let rev = |r: i64| if r == PENDING_REVISION { i64::MAX } else { r };
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => rev(kv.create_revision).cmp(v),
        CompareTarget::Mod(v) => rev(kv.mod_revision).cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Replaces [`PENDING_REVISION`] in a response with the revision its writes got.
pub fn stamp(resp: &mut ResponseOp, revision: i64) {
    let fix = |kv: &mut KeyValue| {
        if kv.mod_revision == PENDING_REVISION {
            kv.mod_revision = revision;
        }
        if kv.create_revision == PENDING_REVISION {
            kv.create_revision = revision;
        }
    };
    match resp {
        ResponseOp::Range(r) => r.kvs.iter_mut().for_each(fix),
        ResponseOp::Put(p) => p.prev_kv.iter_mut().for_each(fix),
        ResponseOp::DeleteRange(d) => d.prev_kvs.iter_mut().for_each(fix),
        ResponseOp::Txn(t) => t.responses.iter_mut().for_each(|r| stamp(r, revision)),
    }
}
