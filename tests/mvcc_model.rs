//! Model-based property test of the MVCC: random puts (with and without
//! leases, `ignore_lease`), deletes, delete-ranges, txns, lease deletes,
//! compactions, rollbacks and imports (image, borrowed image, chunked
//! snapshot), checked against a reference that keeps the full revision
//! history of every key and derives etcd's fields from it; reads at every
//! revision (old, current, future, compacted) must agree, errors included,
//! and the store's lease index must equal the live keys' leases.

use cairn::mvcc::store::chunked;
use cairn::mvcc::txn::{
    no_leases, stamp, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Eval, EvalError, PutRequest, RangeRequest, RequestOp, ResponseOp,
    TxnRequest,
};
use cairn::mvcc::{KeyValue, MvccError, RangeEnd, Store, StoreImage};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// One key's history: (revision, Some((value, lease)) | None for a delete).
type History = Vec<(i64, Option<(Vec<u8>, i64)>)>;

/// The lease ids the test uses: 0 (none), three granted (one negative: etcd
/// takes any non-zero id) and one that is not.
const LEASES: [i64; 5] = [0, 1, 2, -3, 99];

fn lease_exists(lease: i64) -> bool {
    matches!(lease, 1 | 2 | -3)
}

fn lease_of(l: u8) -> i64 {
    LEASES[l as usize % LEASES.len()]
}

/// Reference: every key's full history, never compacted.
#[derive(Default, Clone, Debug)]
struct Reference {
    history: BTreeMap<Vec<u8>, History>,
    revision: i64,
    compacted: i64,
}

impl Reference {
    fn kv_at(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let h = self.history.get(key)?;
        let upto: Vec<_> = h.iter().filter(|(r, _)| *r <= at).collect();
        let (mod_rev, value) = upto.last()?;
        let (value, lease) = value.clone()?;
        // The current generation: puts after the last delete.
        let gen_start = upto
            .iter()
            .rposition(|(_, v)| v.is_none())
            .map_or(0, |i| i + 1);
        let generation = &upto[gen_start..];
        Some(KeyValue {
            key: key.to_vec(),
            create_revision: generation[0].0,
            mod_revision: *mod_rev,
            version: generation.len() as i64,
            value,
            lease,
        })
    }

    /// Live keys by lease (not 0) at the newest revision, in key order.
    fn lease_index(&self) -> BTreeMap<i64, Vec<Vec<u8>>> {
        let mut index: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
        for k in self.history.keys() {
            if let Some(kv) = self.kv_at(k, self.revision).filter(|kv| kv.lease != 0) {
                index.entry(kv.lease).or_default().push(k.clone());
            }
        }
        index
    }

    /// Drops every revision above `to`.
    fn rollback_to(&mut self, to: i64) {
        for h in self.history.values_mut() {
            h.retain(|(r, _)| *r <= to);
        }
        self.history.retain(|_, h| !h.is_empty());
        self.revision = self.revision.min(to);
    }

    fn range(&self, key: &[u8], end: &RangeEnd, at: i64) -> Result<Vec<KeyValue>, MvccError> {
        let at = if at <= 0 { self.revision } else { at };
        if at > self.revision {
            return Err(MvccError::FutureRevision);
        }
        if at < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(self
            .history
            .keys()
            .filter(|k| end.contains(key, k))
            .filter_map(|k| self.kv_at(k, at))
            .collect())
    }

    fn apply(&mut self, revision: i64, puts: &[(Vec<u8>, Vec<u8>, i64)], deletes: &[Vec<u8>]) {
        for (k, v, lease) in puts {
            self.history
                .entry(k.clone())
                .or_default()
                .push((revision, Some((v.clone(), *lease))));
        }
        for k in deletes {
            if self.kv_at(k, self.revision).is_some() {
                self.history
                    .entry(k.clone())
                    .or_default()
                    .push((revision, None));
            }
        }
        self.revision = revision;
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// key, value, lease (see [`lease_of`]), ignore_lease
    Put(u8, u8, u8, bool),
    Delete(u8),
    DeleteRange(u8, u8),
    /// if version(k) == v then put(a) else delete(b)
    Txn {
        k: u8,
        v: i64,
        a: u8,
        b: u8,
    },
    /// The deletes of a lease's revoke, after a put in the same request
    /// (key, lease) when `put` is set.
    LeaseDeletes {
        lease: u8,
        put: Option<(u8, u8)>,
    },
    Compact(u8),
    Rollback(u8),
    /// A store loaded from an image of itself at a revision (like
    /// Rollback), taken three ways.
    Import(u8, u8),
    Range {
        key: u8,
        end: Option<u8>,
        back: u8,
        limit: u8,
    },
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k % 8]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..8u8, any::<u8>(), any::<u8>(), prop::bool::weighted(0.15))
            .prop_map(|(k, v, l, il)| Op::Put(k, v, l, il)),
        2 => (any::<u8>(), prop::option::of((0..8u8, any::<u8>())))
            .prop_map(|(lease, put)| Op::LeaseDeletes { lease, put }),
        2 => (0..8u8).prop_map(Op::Delete),
        1 => (0..8u8, 0..9u8).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        2 => (0..8u8, 0..3i64, 0..8u8, 0..8u8).prop_map(|(k, v, a, b)| Op::Txn { k, v, a, b }),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => any::<u8>().prop_map(Op::Rollback),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(x, how)| Op::Import(x, how)),
        4 => (0..8u8, prop::option::of(0..10u8), any::<u8>(), 0..4u8)
            .prop_map(|(key, end, back, limit)| Op::Range { key, end, back, limit }),
    ]
}

fn end_of(key_byte: u8, end: Option<u8>) -> (Vec<u8>, RangeEnd) {
    match end {
        None => (Vec::new(), RangeEnd::Single),
        Some(9) => (vec![0], RangeEnd::ToEnd),
        Some(e) => {
            let _ = key_byte;
            (key(e), RangeEnd::Until(key(e)))
        }
    }
}

/// Applies an evaluated request to both sides; returns the revision used.
fn commit(
    store: &mut Store,
    reference: &mut Reference,
    changes: Vec<cairn::mvcc::Change>,
) -> Option<i64> {
    if changes.is_empty() {
        return None;
    }
    let rev = store.revision() + 1;
    let puts: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            cairn::mvcc::Change::Put { key, value, lease } => {
                Some((key.clone(), value.clone(), *lease))
            }
            _ => None,
        })
        .collect();
    let dels: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            cairn::mvcc::Change::Delete { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    store.apply(rev, &changes);
    reference.apply(rev, &puts, &dels);
    Some(rev)
}

fn run(ops: Vec<Op>) {
    let mut store = Store::new();
    let mut reference = Reference {
        revision: 1,
        compacted: -1, // never compacted: compacting at 0 works once, as in etcd
        ..Default::default()
    };
    store.apply(1, &[]); // etcd starts at revision 1
    for op in ops {
        match op {
            Op::Put(k, v, l, ignore_lease) => {
                let mut e = Eval::new(&store, &lease_exists);
                let lease = if ignore_lease { 0 } else { lease_of(l) };
                let req = PutRequest {
                    key: key(k),
                    value: vec![v],
                    lease,
                    prev_kv: true,
                    ignore_lease,
                    ..Default::default()
                };
                let prev = reference.kv_at(&key(k), reference.revision);
                let want = if !lease_exists(lease) && lease != 0 {
                    Err(EvalError::LeaseNotFound)
                } else if ignore_lease && prev.is_none() {
                    Err(EvalError::KeyNotFound)
                } else {
                    Ok(ResponseOp::Put(cairn::mvcc::txn::PutResponse {
                        prev_kv: prev.clone(),
                    }))
                };
                assert_eq!(e.op(&RequestOp::Put(req)), want, "put");
                let changes = e.into_changes();
                let rev = commit(&mut store, &mut reference, changes);
                assert_eq!(rev.is_some(), want.is_ok(), "a put writes unless refused");
                if let (Some(_), Some(prev)) = (rev, prev.filter(|_| ignore_lease)) {
                    let kv = store.get(&key(k)).expect("just put");
                    assert_eq!(kv.lease, prev.lease, "ignore_lease keeps the lease");
                }
            }
            Op::Delete(k) | Op::DeleteRange(k, _) if matches!(op, Op::Delete(_)) => {
                let mut e = Eval::new(&store, &no_leases);
                let resp = e
                    .delete_range(&DeleteRangeRequest {
                        key: key(k),
                        prev_kv: true,
                        ..Default::default()
                    })
                    .unwrap();
                let expected: Vec<_> = reference
                    .kv_at(&key(k), reference.revision)
                    .into_iter()
                    .collect();
                assert_eq!(resp.prev_kvs, expected);
                let before = store.revision();
                let changes = e.into_changes();
                let used = commit(&mut store, &mut reference, changes);
                assert_eq!(
                    used.is_none(),
                    expected.is_empty(),
                    "deleting nothing consumes no revision"
                );
                if used.is_none() {
                    assert_eq!(store.revision(), before);
                }
            }
            Op::DeleteRange(a, b) => {
                let (raw_end, end) = end_of(a, Some(b));
                let mut e = Eval::new(&store, &no_leases);
                let resp = e
                    .delete_range(&DeleteRangeRequest {
                        key: key(a),
                        range_end: raw_end,
                        prev_kv: true,
                    })
                    .unwrap();
                let expected = reference.range(&key(a), &end, 0).unwrap();
                assert_eq!(resp.deleted as usize, expected.len());
                assert_eq!(resp.prev_kvs, expected);
                let changes = e.into_changes();
                commit(&mut store, &mut reference, changes);
            }
            Op::Delete(_) => unreachable!(),
            Op::Txn { k, v, a, b } => {
                let req = TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal,
                        target: CompareTarget::Version(v),
                        key: key(k),
                        range_end: Vec::new(),
                    }],
                    success: vec![
                        RequestOp::Put(PutRequest {
                            key: key(a),
                            value: b"txn".to_vec(),
                            // a granted lease, or none
                            lease: lease_of(b % 4),
                            ..Default::default()
                        }),
                        RequestOp::Range(RangeRequest {
                            key: key(a),
                            ..Default::default()
                        }),
                    ],
                    failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                        key: key(b),
                        ..Default::default()
                    })],
                };
                let holds = reference
                    .kv_at(&key(k), reference.revision)
                    .map_or(0, |kv| kv.version)
                    == v;
                let mut e = Eval::new(&store, &lease_exists);
                let mut resp = ResponseOp::Txn(e.txn(&req).unwrap());
                let changes = e.into_changes();
                let rev = commit(&mut store, &mut reference, changes);
                if let Some(rev) = rev {
                    stamp(&mut resp, rev);
                }
                let ResponseOp::Txn(t) = resp else {
                    unreachable!()
                };
                assert_eq!(t.succeeded, holds, "compare");
                if holds {
                    // The range after the put in the same txn sees the put, stamped.
                    let ResponseOp::Range(r) = &t.responses[1] else {
                        panic!("range response")
                    };
                    assert_eq!(
                        r.kvs,
                        reference
                            .kv_at(&key(a), reference.revision)
                            .into_iter()
                            .collect::<Vec<_>>()
                    );
                }
            }
            Op::Compact(x) => {
                // Up to one past the newest revision: a revision that went to
                // another shard leaves this one unchanged, and it moves up.
                let target = (x as i64) % (reference.revision + 2);
                let want = if target <= reference.compacted {
                    Err(MvccError::Compacted)
                } else {
                    Ok(())
                };
                assert_eq!(store.compact(target), want, "compact {target}");
                if want.is_ok() {
                    reference.compacted = target;
                    reference.revision = reference.revision.max(target);
                }
            }
            Op::LeaseDeletes { lease, put } => {
                use cairn::mvcc::Change;
                let lease = lease_of(lease);
                let mut e = Eval::new(&store, &lease_exists);
                let mut expected = reference.clone();
                // The put, its change and whether it created the key.
                let mut put_change = None;
                if let Some((k, l)) = put {
                    // A granted lease or none: the put is taken.
                    let l = lease_of(l % 4);
                    let value = b"before".to_vec();
                    e.op(&RequestOp::Put(PutRequest {
                        key: key(k),
                        value: value.clone(),
                        lease: l,
                        ..Default::default()
                    }))
                    .unwrap();
                    let created = expected.kv_at(&key(k), expected.revision).is_none();
                    let rev = expected.revision + 1;
                    expected.apply(rev, &[(key(k), value.clone(), l)], &[]);
                    let change = Change::Put {
                        key: key(k),
                        value,
                        lease: l,
                    };
                    put_change = Some((change, created));
                }
                let doomed = if lease == 0 {
                    Vec::new()
                } else {
                    expected.lease_index().remove(&lease).unwrap_or_default()
                };
                let resp = e.lease_deletes(lease);
                assert_eq!(
                    resp,
                    DeleteRangeResponse {
                        deleted: doomed.len() as i64,
                        prev_kvs: Vec::new(),
                    }
                );
                // The put unless deleted after it, then the deletes in key
                // order (none for a key the put created: it never was).
                let mut want = Vec::new();
                let mut created_here = None;
                if let Some((change, created)) = put_change {
                    let k = change.key().expect("a put").to_vec();
                    if !doomed.contains(&k) {
                        want.push(change);
                    } else if created {
                        created_here = Some(k);
                    }
                }
                want.extend(
                    doomed
                        .iter()
                        .filter(|k| Some(*k) != created_here.as_ref())
                        .map(|k| Change::Delete { key: k.clone() }),
                );
                let changes = e.into_changes();
                assert_eq!(changes, want, "the lease's keys, in key order");
                let rev = commit(&mut store, &mut reference, changes);
                assert_eq!(rev.is_some(), !want.is_empty(), "no change: no revision");
                assert!(
                    lease == 0 || store.lease_keys(lease).is_empty(),
                    "no key carries the lease any more"
                );
            }
            Op::Rollback(x) => {
                let floor = reference.compacted.max(1);
                let span = reference.revision - floor + 1;
                let to = floor + (x as i64) % span;
                store.rollback_to(to);
                reference.rollback_to(to);
            }
            Op::Import(x, how) => {
                let floor = reference.compacted.max(1);
                let span = reference.revision - floor + 1;
                let to = floor + (x as i64) % span;
                let image = match how % 3 {
                    0 => store.export_at(to),
                    1 => postcard::from_bytes::<StoreImage>(
                        &postcard::to_stdvec(&store.image_at(to)).unwrap(),
                    )
                    .unwrap(),
                    _ => {
                        let mut out = Vec::new();
                        chunked::begin(&mut out, to);
                        let mut after = None;
                        while let Some(last) =
                            chunked::chunk(&store, after.as_deref(), to, 3, &mut out).unwrap()
                        {
                            after = Some(last);
                        }
                        chunked::end(&store, &mut out);
                        chunked::decode(&out).unwrap()
                    }
                };
                store = Store::import(image);
                reference.rollback_to(to);
                assert_eq!(store.revision(), reference.revision);
            }
            Op::Range {
                key: k,
                end,
                back,
                limit,
            } => {
                let (raw_end, end) = end_of(k, end);
                let at = reference.revision + 1 - (back as i64 % (reference.revision + 3));
                let want = reference.range(&key(k), &end, at);
                let got = store.range(&key(k), &end, at, limit as usize);
                match (got, want) {
                    (Ok(g), Ok(w)) => {
                        assert_eq!(g.count, w.len(), "count at {at}");
                        let expect: Vec<_> = w
                            .into_iter()
                            .take(if limit == 0 {
                                usize::MAX
                            } else {
                                limit as usize
                            })
                            .collect();
                        assert_eq!(g.kvs, expect, "kvs at {at}");
                    }
                    (g, w) => assert_eq!(g.map(|_| ()), w.map(|_| ()), "range error at {at}"),
                }
                // The same through the evaluator's Range (limit/more/count).
                let e = Eval::new(&store, &no_leases);
                let req = RangeRequest {
                    key: key(k),
                    range_end: raw_end,
                    revision: at,
                    limit: limit as i64,
                    ..Default::default()
                };
                if let (Ok(r), Ok(w)) = (e.range(&req), reference.range(&key(k), &end, at)) {
                    assert_eq!(r.count as usize, w.len());
                    assert_eq!(r.more, limit > 0 && w.len() > limit as usize);
                }
            }
        }
        store.check_invariants();
        let index = reference.lease_index();
        assert_eq!(
            store.leases_in_use(),
            index.keys().copied().collect::<Vec<_>>(),
            "leases in use"
        );
        for lease in LEASES {
            assert_eq!(
                store.lease_keys(lease),
                index.get(&lease).cloned().unwrap_or_default(),
                "keys of lease {lease}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mvcc_matches_reference_histories(ops in prop::collection::vec(op(), 1..150)) {
        run(ops);
    }
}
