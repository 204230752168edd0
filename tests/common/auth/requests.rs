//! Who a request is sent as (`Cred`: no token, `token` or `authorization`
//! metadata) and the request builders the scenarios share.

use super::{pb, PATIENCE};

/// Who a request is sent as.
#[derive(Clone, Debug)]
pub enum Cred {
    /// No token.
    Anon,
    /// The token in gRPC metadata `token` (what etcd's clientv3 sends).
    Token(String),
    /// The token in gRPC metadata `authorization` (the gateway's header,
    /// forwarded; the token itself, no `Bearer`).
    Authorization(String),
    /// Both: `token` first, then `authorization`.
    Both(String, String),
}

impl Cred {
    pub fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.set_timeout(PATIENCE);
        self.add_to(r.metadata_mut());
        r
    }

    pub(super) fn add_to(&self, md: &mut tonic::metadata::MetadataMap) {
        let mut add = |key: &'static str, token: &str| {
            md.insert(key, token.parse().expect("a token fit for gRPC metadata"));
        };
        match self {
            Cred::Anon => {}
            Cred::Token(t) => add("token", t),
            Cred::Authorization(t) => add("authorization", t),
            Cred::Both(t, a) => {
                add("token", t);
                add("authorization", a);
            }
        }
    }
}

pub fn watch_req(key: &str, end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn range_req(key: &str, end: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn put_req(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn delete_req(key: &str, end: &str, prev_kv: bool) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        prev_kv,
    }
}

pub fn op_range(key: &str, end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range_req(key, end))),
    }
}

pub fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put_req(key, value))),
    }
}

pub fn op_delete(key: &str, end: &str, prev_kv: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(delete_req(
            key, end, prev_kv,
        ))),
    }
}

/// A txn whose compare (`key`'s version > 0) holds if `key` exists.
pub fn txn_req(
    key: &str,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            key: key.into(),
            range_end: vec![],
            target_union: Some(TargetUnion::Version(0)),
        }],
        success,
        failure,
    }
}
