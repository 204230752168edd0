//! Wire (prost) types ↔ MVCC request/response types. Unknown enum values are
//! refused here, before anything is routed.

use crate::mvcc::txn as m;
use crate::mvcc::KeyValue;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::mvccpb;
use tonic::Status;

fn bad_enum(what: &str, v: i32) -> Status {
    Status::invalid_argument(format!("etcdserver: invalid {what} {v}"))
}

pub fn range_request(r: &pb::RangeRequest) -> Result<m::RangeRequest, Status> {
    let sort_order = match SortOrder::try_from(r.sort_order)
        .map_err(|_| bad_enum("sort order", r.sort_order))?
    {
        SortOrder::None => m::SortOrder::None,
        SortOrder::Ascend => m::SortOrder::Ascend,
        SortOrder::Descend => m::SortOrder::Descend,
    };
    let sort_target = match SortTarget::try_from(r.sort_target)
        .map_err(|_| bad_enum("sort target", r.sort_target))?
    {
        SortTarget::Key => m::SortTarget::Key,
        SortTarget::Version => m::SortTarget::Version,
        SortTarget::Create => m::SortTarget::Create,
        SortTarget::Mod => m::SortTarget::Mod,
        SortTarget::Value => m::SortTarget::Value,
    };
    Ok(m::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(r: &pb::PutRequest) -> m::PutRequest {
    m::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request(r: &pb::DeleteRangeRequest) -> m::DeleteRangeRequest {
    m::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &pb::Compare) -> Result<m::Compare, Status> {
    let result = match CompareResult::try_from(c.result)
        .map_err(|_| bad_enum("compare result", c.result))?
    {
        CompareResult::Equal => m::CompareResult::Equal,
        CompareResult::Greater => m::CompareResult::Greater,
        CompareResult::Less => m::CompareResult::Less,
        CompareResult::NotEqual => m::CompareResult::NotEqual,
    };
    let kind =
        CompareTarget::try_from(c.target).map_err(|_| bad_enum("compare target", c.target))?;
    // The oneof may be absent for a zero value; etcd reads the field of the target.
    let n = |u: &Option<TargetUnion>| match u {
        Some(
            TargetUnion::Version(v)
            | TargetUnion::CreateRevision(v)
            | TargetUnion::ModRevision(v)
            | TargetUnion::Lease(v),
        ) => *v,
        _ => 0,
    };
    let target = match kind {
        CompareTarget::Version => m::CompareTarget::Version(n(&c.target_union)),
        CompareTarget::Create => m::CompareTarget::Create(n(&c.target_union)),
        CompareTarget::Mod => m::CompareTarget::Mod(n(&c.target_union)),
        CompareTarget::Lease => m::CompareTarget::Lease(n(&c.target_union)),
        CompareTarget::Value => m::CompareTarget::Value(match &c.target_union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
    };
    Ok(m::Compare {
        result,
        target,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
    })
}

pub fn request_op(op: &pb::RequestOp) -> Result<m::RequestOp, Status> {
    use pb::request_op::Request;
    Ok(match &op.request {
        Some(Request::RequestRange(r)) => m::RequestOp::Range(range_request(r)?),
        Some(Request::RequestPut(p)) => m::RequestOp::Put(put_request(p)),
        Some(Request::RequestDeleteRange(d)) => m::RequestOp::DeleteRange(delete_request(d)),
        Some(Request::RequestTxn(t)) => m::RequestOp::Txn(txn_request(t)?),
        None => return Err(crate::api::EtcdError::KeyNotFound.status()),
    })
}

pub fn txn_request(t: &pb::TxnRequest) -> Result<m::TxnRequest, Status> {
    Ok(m::TxnRequest {
        compare: t.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.iter().map(request_op).collect::<Result<_, _>>()?,
        failure: t.failure.iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

pub fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(r: m::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A response inside a txn: etcd gives it a header with only a revision.
fn response_op(r: m::ResponseOp, revision: i64, after: i64, before: i64) -> pb::ResponseOp {
    use pb::response_op::Response;
    let header = pb::ResponseHeader {
        revision,
        ..Default::default()
    };
    let h = Some(header);
    pb::ResponseOp {
        response: Some(match r {
            m::ResponseOp::Range(r) => Response::ResponseRange(range_response(r, header)),
            m::ResponseOp::Put(p) => Response::ResponsePut(pb::PutResponse {
                header: h,
                prev_kv: p.prev_kv.map(kv),
            }),
            m::ResponseOp::DeleteRange(d) => {
                Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: h,
                    deleted: d.deleted,
                    prev_kvs: d.prev_kvs.into_iter().map(kv).collect(),
                })
            }
            m::ResponseOp::Txn(t) => {
                // etcd leaves a nested txn's own header empty.
                Response::ResponseTxn(nested_txn(t, Default::default(), after, before))
            }
        }),
    }
}

/// `after` is the revision of the request's writes, `before` the one below
/// it (both the same for a request that wrote nothing).
fn nested_txn(
    t: m::TxnResponse,
    header: pb::ResponseHeader,
    after: i64,
    before: i64,
) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(header),
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .zip(t.wrote)
            .map(|(r, wrote)| response_op(r, if wrote { after } else { before }, after, before))
            .collect(),
    }
}

/// A txn's response. `header` carries the txn's revision; `changed` says
/// whether the txn wrote at that revision.
pub fn txn_response(
    t: m::TxnResponse,
    header: &pb::ResponseHeader,
    changed: bool,
) -> pb::TxnResponse {
    let after = header.revision;
    let before = if changed { after - 1 } else { after };
    nested_txn(t, *header, after, before)
}
