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
//! - Inside a Txn, ops run in order and later ops see earlier ops' writes;
//!   before any runs, every Put of the branches taken is checked (etcd's
//!   `checkRequests`), so a Put's error comes before a Range's.
//! - A Put checks the lease it names (`lease`), never the key's lease that
//!   `ignore_lease` keeps. A Put on its own checks the lease first, then
//!   that a key exists for `ignore_value`/`ignore_lease`; inside a Txn the
//!   key comes first (apply.go `Put` with `txn == nil`, `checkRequestPut`).
//! - [`RequestOp::LeaseDeletes`] is internal (a lease's revoke, never built
//!   from a client request): it deletes the keys that carry the lease.
//! - A Compare on a key range holds only if it holds for every key; a VALUE
//!   compare on a missing key is false; other targets compare a missing key as
//!   zeros.
//!
//! Request validation (empty key, duplicate keys in a txn, too many ops, ...)
//! happens at the API edge, before evaluation.

use super::store::{Change, KeyValue, MvccError, RangeEnd, Store};
use std::collections::{BTreeMap, BTreeSet};

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

/// One request. Sent between members (postcard, `member::peers::Forward`):
/// new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Internal, never from a client: deletes every live key that carries
    /// `lease` (as this shard sees it when evaluated), in key order, at one
    /// revision; none: nothing changes. Answered as a DeleteRange (`deleted`
    /// counts the keys; no `prev_kvs`). See [`Eval::lease_deletes`].
    LeaseDeletes {
        lease: i64,
    },
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

    /// A Put as a Txn runs it: the key must exist for
    /// `ignore_value`/`ignore_lease`, then the lease it names must exist.
    /// (A Put on its own checks the lease first: see [`Eval::op`].)
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
        // The lease named, not the one `ignore_lease` keeps (etcd does not
        // check that one).
        self.check_lease(req)?;
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
        for kv in &doomed {
            self.delete_live(&kv.key);
        }
        Ok(DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Deletes `key`, live as this request sees it.
    fn delete_live(&mut self, key: &[u8]) {
        self.wrote = true;
        let earlier = self.overlay.get(key);
        let was_created_here =
            earlier.is_some_and(|v| v.is_some()) && self.store.get(key).is_none();
        // Only a key this request already wrote has a change to replace
        // (scanning the changes for every key would be quadratic).
        if earlier.is_some() {
            self.changes.retain(|c| c.key() != Some(key));
        }
        self.overlay.insert(key.to_vec(), None);
        if !was_created_here {
            self.changes.push(Change::Delete { key: key.to_vec() });
        }
    }

    /// Deletes every key whose newest value (as this request sees it: the
    /// store, then the request's own writes) carries `lease`, in key order
    /// (etcd's revoke sorts the keys and deletes them in one write txn, so
    /// one revision). Lease 0 or a lease no key carries: nothing changes.
    /// The keys come from the store's lease index, read now: evaluate this
    /// after every write that may have attached a key to `lease`.
    pub fn lease_deletes(&mut self, lease: i64) -> DeleteRangeResponse {
        if lease == 0 {
            return DeleteRangeResponse::default();
        }
        let mut doomed: BTreeSet<Vec<u8>> = self
            .store
            .lease_keys(lease)
            .into_iter()
            .filter(|k| !self.overlay.contains_key(k))
            .collect();
        for (k, v) in &self.overlay {
            if v.as_ref().is_some_and(|kv| kv.lease == lease) {
                doomed.insert(k.clone());
            }
        }
        for key in &doomed {
            self.delete_live(key);
        }
        DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: Vec::new(),
        }
    }

    /// Fails if `req` names a lease that does not exist.
    fn check_lease(&self, req: &PutRequest) -> Result<(), EvalError> {
        if req.lease != 0 && !(self.lease_exists)(req.lease) {
            return Err(EvalError::LeaseNotFound);
        }
        Ok(())
    }

    /// etcd's `checkRequestPut` of every Put in the branches `ops` takes
    /// (nested txns included), in order, before any op runs: the key for
    /// `ignore_value`/`ignore_lease`, then the lease. Sees the state as the
    /// txn starts (the API edge refuses a txn that writes a key twice, so
    /// no Put needs a key an earlier op of the txn wrote).
    fn check_puts(&self, ops: &[RequestOp]) -> Result<(), EvalError> {
        for op in ops {
            match op {
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease) && self.current(&p.key).is_none() {
                        return Err(EvalError::KeyNotFound);
                    }
                    self.check_lease(p)?;
                }
                RequestOp::Txn(t) => self.check_puts(self.branch(t))?,
                RequestOp::Range(_)
                | RequestOp::DeleteRange(_)
                | RequestOp::LeaseDeletes { .. } => {}
            }
        }
        Ok(())
    }

    /// The ops of the branch `t` takes.
    fn branch<'t>(&self, t: &'t TxnRequest) -> &'t [RequestOp] {
        if t.compare.iter().all(|c| self.compare(c)) {
            &t.success
        } else {
            &t.failure
        }
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

    /// A Txn (on its own or nested: the Puts of a nested one are checked
    /// with the outermost one's).
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EvalError> {
        self.check_puts(self.branch(req))?;
        self.run_txn(req)
    }

    fn run_txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, EvalError> {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        let mut wrote = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.txn_op(op)?);
            wrote.push(self.wrote);
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            wrote,
        })
    }

    /// Evaluates a whole request (not an op inside a Txn): the entry point
    /// of the write paths. A Put checks the lease it names *before* the key
    /// that `ignore_value`/`ignore_lease` needs (etcd's `Put` with no txn),
    /// unlike the same Put inside a Txn.
    pub fn op(&mut self, op: &RequestOp) -> Result<ResponseOp, EvalError> {
        match op {
            RequestOp::Put(p) => {
                self.check_lease(p)?;
                Ok(ResponseOp::Put(self.put(p)?))
            }
            RequestOp::Txn(t) => Ok(ResponseOp::Txn(self.txn(t)?)),
            op => self.txn_op(op),
        }
    }

    /// An op inside a Txn (its Puts already checked, see [`Eval::txn`]).
    fn txn_op(&mut self, op: &RequestOp) -> Result<ResponseOp, EvalError> {
        Ok(match op {
            RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
            RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
            RequestOp::Txn(t) => ResponseOp::Txn(self.run_txn(t)?),
            RequestOp::LeaseDeletes { lease } => {
                ResponseOp::DeleteRange(self.lease_deletes(*lease))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Leases 5 and 6 exist; 7 does not (any more).
    fn exists(lease: i64) -> bool {
        lease == 5 || lease == 6
    }

    fn put_change(k: &str, lease: i64) -> Change {
        Change::Put {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
        }
    }

    fn put(k: &str, lease: i64) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: b"new".to_vec(),
            lease,
            ..Default::default()
        }
    }

    fn in_txn(ops: Vec<RequestOp>) -> RequestOp {
        RequestOp::Txn(TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        })
    }

    #[test]
    fn a_put_on_its_own_checks_the_lease_before_the_key() {
        let store = Store::new();
        let missing = PutRequest {
            ignore_value: true,
            value: Vec::new(),
            ..put("k", 7)
        };
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&RequestOp::Put(missing.clone())),
            Err(EvalError::LeaseNotFound)
        );
        assert!(e.into_changes().is_empty());
        // Inside a Txn the key comes first.
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&in_txn(vec![RequestOp::Put(missing.clone())])),
            Err(EvalError::KeyNotFound)
        );
        assert!(e.into_changes().is_empty());
        // A lease that exists: both say the key is missing.
        let known = PutRequest {
            lease: 5,
            ..missing
        };
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&RequestOp::Put(known.clone())),
            Err(EvalError::KeyNotFound)
        );
        assert_eq!(
            e.op(&in_txn(vec![RequestOp::Put(known)])),
            Err(EvalError::KeyNotFound)
        );
    }

    #[test]
    fn a_put_checks_the_lease_it_names() {
        let store = Store::new();
        for op in [
            RequestOp::Put(put("k", 7)),
            in_txn(vec![RequestOp::Put(put("k", 7))]),
        ] {
            let mut e = Eval::new(&store, &exists);
            assert_eq!(e.op(&op), Err(EvalError::LeaseNotFound), "{op:?}");
        }
        let mut e = Eval::new(&store, &exists);
        e.op(&RequestOp::Put(put("k", 6))).unwrap();
        e.op(&RequestOp::Put(put("j", 0))).unwrap();
        assert_eq!(
            e.into_changes(),
            [put_change_new("k", 6), put_change_new("j", 0)]
        );
    }

    fn put_change_new(k: &str, lease: i64) -> Change {
        Change::Put {
            key: k.into(),
            value: b"new".to_vec(),
            lease,
        }
    }

    #[test]
    fn ignore_lease_keeps_the_keys_lease_without_checking_it() {
        let mut store = Store::new();
        // Lease 7 is gone, but k still carries it (until the sweep).
        store.apply(2, &[put_change("k", 7)]);
        let keep = PutRequest {
            ignore_lease: true,
            ..put("k", 0)
        };
        for op in [
            RequestOp::Put(keep.clone()),
            in_txn(vec![RequestOp::Put(keep.clone())]),
        ] {
            let mut e = Eval::new(&store, &exists);
            e.op(&op).unwrap();
            assert_eq!(e.into_changes(), [put_change_new("k", 7)], "{op:?}");
        }
        // On a missing key it is the key error, alone or in a Txn.
        let missing = PutRequest {
            key: b"nope".to_vec(),
            ..keep
        };
        for op in [
            RequestOp::Put(missing.clone()),
            in_txn(vec![RequestOp::Put(missing)]),
        ] {
            let mut e = Eval::new(&store, &exists);
            assert_eq!(e.op(&op), Err(EvalError::KeyNotFound), "{op:?}");
        }
    }

    #[test]
    fn a_txn_checks_the_puts_of_its_taken_branches_before_anything_runs() {
        let mut store = Store::new();
        store.apply(2, &[put_change("a", 0)]);
        let future = RequestOp::Range(RangeRequest {
            key: b"a".to_vec(),
            revision: 9,
            ..Default::default()
        });
        // The put after the bad range is checked first (etcd's checkRequests).
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&in_txn(vec![future.clone(), RequestOp::Put(put("k", 7))])),
            Err(EvalError::LeaseNotFound)
        );
        // Also a put of a nested txn's taken branch.
        let nested = in_txn(vec![RequestOp::Put(put("k", 7))]);
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&in_txn(vec![future.clone(), nested])),
            Err(EvalError::LeaseNotFound)
        );
        // Without the bad put, the range's error.
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&in_txn(vec![future, RequestOp::Put(put("k", 5))])),
            Err(EvalError::Mvcc(MvccError::FutureRevision))
        );
        // A put in the branch not taken is not checked.
        let t = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(1),
                key: b"a".to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp::Put(put("k", 5))],
            failure: vec![RequestOp::Put(put("k", 7))],
        };
        let mut e = Eval::new(&store, &exists);
        let ResponseOp::Txn(r) = e.op(&RequestOp::Txn(t)).unwrap() else {
            panic!("a txn response")
        };
        assert!(r.succeeded);
        assert_eq!(e.into_changes(), [put_change_new("k", 5)]);
    }

    /// a, b, d and e carry lease 5 (inserted out of order), c lease 6; then
    /// d moves to lease 6, e is deleted, f is put without a lease.
    fn leased_store() -> Store {
        let mut store = Store::new();
        store.apply(
            2,
            &[
                put_change("e", 5),
                put_change("b", 5),
                put_change("d", 5),
                put_change("a", 5),
                put_change("c", 6),
                put_change("f", 5),
            ],
        );
        store.apply(
            3,
            &[
                put_change("d", 6),
                Change::Delete { key: "e".into() },
                put_change("f", 0),
            ],
        );
        store
    }

    #[test]
    fn lease_deletes_removes_the_leases_live_keys_in_key_order_at_one_revision() {
        let mut store = leased_store();
        let mut e = Eval::new(&store, &exists);
        let resp = e.op(&RequestOp::LeaseDeletes { lease: 5 }).unwrap();
        assert_eq!(
            resp,
            ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 2,
                prev_kvs: Vec::new(),
            })
        );
        let changes = e.into_changes();
        let del = |k: &str| Change::Delete { key: k.into() };
        assert_eq!(changes, [del("a"), del("b")], "d moved to 6: not deleted");
        store.apply(4, &changes);
        let events = store.events_at(4, &changes);
        let shape: Vec<_> = events
            .iter()
            .map(|ev| {
                (
                    ev.delete,
                    ev.kv.key.clone(),
                    ev.kv.mod_revision,
                    ev.prev.as_ref().map(|p| p.lease),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (true, b"a".to_vec(), 4, Some(5)),
                (true, b"b".to_vec(), 4, Some(5)),
            ]
        );
        assert!(store.lease_keys(5).is_empty());
        assert_eq!(store.lease_keys(6), [b"c".to_vec(), b"d".to_vec()]);
        store.check_invariants();
        // Nothing left on lease 5: no change, so no revision.
        let mut e = Eval::new(&store, &exists);
        assert_eq!(
            e.op(&RequestOp::LeaseDeletes { lease: 5 }).unwrap(),
            ResponseOp::DeleteRange(DeleteRangeResponse::default())
        );
        assert!(e.into_changes().is_empty());
    }

    #[test]
    fn lease_deletes_of_lease_zero_deletes_nothing() {
        let store = leased_store();
        let mut e = Eval::new(&store, &exists);
        e.put(&put("z", 0)).unwrap();
        assert_eq!(e.lease_deletes(0), DeleteRangeResponse::default());
        assert_eq!(e.into_changes(), [put_change_new("z", 0)], "f and z stay");
    }

    #[test]
    fn lease_deletes_sees_the_writes_of_its_own_request() {
        let store = leased_store();
        let mut e = Eval::new(&store, &exists);
        e.put(&put("a", 6)).unwrap(); // a leaves lease 5
        e.put(&put("aa", 5)).unwrap(); // created here with lease 5
        e.put(&put("f", 5)).unwrap(); // f joins lease 5
        let resp = e.lease_deletes(5);
        assert_eq!(resp.deleted, 3, "aa, b, f");
        let del = |k: &str| Change::Delete { key: k.into() };
        // aa was created by this request: no change is left for it.
        assert_eq!(
            e.into_changes(),
            [put_change_new("a", 6), del("b"), del("f")]
        );
    }
}
