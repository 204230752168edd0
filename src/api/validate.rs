//! Request checks done before anything is routed or proposed, with etcd
//! 3.4's rules (`v3rpc/key.go`):
//!
//! - Range/Put/DeleteRange: the key is not empty; a Put with `ignore_value`
//!   carries no value and with `ignore_lease` no lease.
//! - Txn: at most `max_txn_ops` compares, success ops and failure ops each; a
//!   nested txn gets the budget left by its parent (`max - parent's largest
//!   list`); every compare has a key; an empty `RequestOp` is "key not found".
//! - Txn, per branch: no key is put twice and no put falls in a deleted range,
//!   nested branches included; the success and failure branches of one nested
//!   txn may put the same key (only one runs). A delete whose `range_end` is
//!   `"\0"` covers nothing here, exactly as etcd's interval check sees it.

use super::EtcdError;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use std::collections::HashSet;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS_DEFAULT: usize = 128;

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// All checks of a Txn request: sizes and keys, then overlapping writes.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_txn_ops as i64)?;
    check_writes(&r.success)?;
    check_writes(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: i64) -> Result<(), EtcdError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(p)) => check_put(p),
        Some(Request::RequestDeleteRange(d)) => check_delete(d),
        Some(Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A deleted key or range: `[begin, end)`, or the single key `begin`.
struct Deleted {
    begin: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn covers(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.begin.as_slice(),
            Some(end) => key >= self.begin.as_slice() && key < end.as_slice(),
        }
    }
}

/// The keys put and the ranges deleted by a list of ops (nested txns
/// included), or `DuplicateKey` if two writes of the list collide.
fn check_writes(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), EtcdError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                begin: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Deleted], k: &[u8]| dels.iter().any(|d| d.covers(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_writes(&t.success)?;
        let (puts_else, dels_else) = check_writes(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // The same key in both branches of one txn is fine: one runs.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(t)),
        }
    }
    fn check(t: &TxnRequest) -> Result<(), EtcdError> {
        check_txn(t, MAX_TXN_OPS_DEFAULT)
    }

    #[test]
    fn empty_keys_are_refused() {
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        assert_eq!(check_put(&PutRequest::default()), Err(EtcdError::EmptyKey));
        assert_eq!(
            check_delete(&DeleteRangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        let mut t = txn(vec![], vec![]);
        t.compare.push(Compare::default());
        assert_eq!(check(&t), Err(EtcdError::EmptyKey), "compare without a key");
        assert_eq!(check(&txn(vec![get("")], vec![])), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn put_ignore_flags_refuse_values() {
        let p = PutRequest {
            key: "k".into(),
            value: "v".into(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        let p = PutRequest {
            key: "k".into(),
            lease: 7,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
        let p = PutRequest {
            key: "k".into(),
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Ok(()));
    }

    #[test]
    fn too_many_ops_counts_the_largest_list_and_nested_budgets() {
        let ops = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
        assert_eq!(check_txn(&txn(ops(3), vec![]), 3), Ok(()));
        assert_eq!(
            check_txn(&txn(ops(4), vec![]), 3),
            Err(EtcdError::TooManyOps)
        );
        assert_eq!(
            check_txn(&txn(vec![], ops(4)), 3),
            Err(EtcdError::TooManyOps)
        );
        // Parent uses 2 of 5: a nested txn may have at most 3.
        let inner = |n| nested(txn(ops(n).into_iter().map(|_| get("x")).collect(), vec![]));
        assert_eq!(check_txn(&txn(vec![inner(3), get("a")], vec![]), 5), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![inner(4), get("a")], vec![]), 5),
            Err(EtcdError::TooManyOps)
        );
    }

    #[test]
    fn an_empty_op_is_key_not_found() {
        assert_eq!(
            check(&txn(vec![RequestOp { request: None }], vec![])),
            Err(EtcdError::KeyNotFound)
        );
    }

    #[test]
    fn duplicate_writes_in_a_branch_are_refused() {
        assert_eq!(
            check(&txn(vec![put("a"), put("a")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(&txn(vec![put("b"), del("a", "c")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(
            check(&txn(vec![del("a", ""), put("a")], vec![])),
            Err(EtcdError::DuplicateKey)
        );
        // Different branches, or deletes overlapping deletes: fine.
        assert_eq!(check(&txn(vec![put("a")], vec![put("a")])), Ok(()));
        assert_eq!(
            check(&txn(vec![del("a", "z"), del("b", "c")], vec![])),
            Ok(())
        );
        // A delete to the end ("\0") is an empty interval in etcd's check.
        assert_eq!(check(&txn(vec![put("b"), del("a", "\0")], vec![])), Ok(()));
    }

    #[test]
    fn nested_txns_share_the_branch_rules() {
        // Then and else of one nested txn may put the same key...
        let t = txn(vec![nested(txn(vec![put("a")], vec![put("a")]))], vec![]);
        assert_eq!(check(&t), Ok(()));
        // ...but a key put in a nested txn and again at the parent is a duplicate,
        let t = txn(vec![nested(txn(vec![put("a")], vec![])), put("a")], vec![]);
        assert_eq!(check(&t), Err(EtcdError::DuplicateKey));
        // as is a nested put inside a range the parent deletes,
        let t = txn(
            vec![del("a", "c"), nested(txn(vec![put("b")], vec![]))],
            vec![],
        );
        assert_eq!(check(&t), Err(EtcdError::DuplicateKey));
        // and a parent put inside a range a nested txn deletes.
        let t = txn(
            vec![nested(txn(vec![], vec![del("a", "c")])), put("b")],
            vec![],
        );
        assert_eq!(check(&t), Err(EtcdError::DuplicateKey));
        // Two nested txns putting the same key in their else branches collide.
        let t = txn(
            vec![
                nested(txn(vec![], vec![put("a")])),
                nested(txn(vec![], vec![put("a")])),
            ],
            vec![],
        );
        assert_eq!(check(&t), Err(EtcdError::DuplicateKey));
    }
}
