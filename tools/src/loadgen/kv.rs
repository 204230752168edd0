//! The key-value operations of `cairn-bench`: one request each (a txn-put
//! is a read and a compare-and-set, retried on conflict).

use super::auth::{self, Token};
use super::report::ClientRecorder;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;

/// Bound on attempts of one txn-put before it counts as an error.
const TXN_RETRIES_MAX: u32 = 100;

pub async fn put(
    kv: &mut KvClient<Channel>,
    token: &Token,
    key: Vec<u8>,
    value: &[u8],
) -> Result<(), tonic::Status> {
    kv.put(auth::request(
        PutRequest {
            key,
            value: value.to_vec(),
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|_| ())
}

pub async fn range(
    kv: &mut KvClient<Channel>,
    token: &Token,
    key: Vec<u8>,
    range_end: Vec<u8>,
    serializable: bool,
    limit: i64,
) -> Result<(), tonic::Status> {
    kv.range(auth::request(
        RangeRequest {
            key,
            range_end,
            serializable,
            limit,
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|_| ())
}

pub async fn txn_put(
    kv: &mut KvClient<Channel>,
    token: &Token,
    key: Vec<u8>,
    value: &[u8],
    rec: &mut ClientRecorder,
) -> Result<(), tonic::Status> {
    for _ in 0..TXN_RETRIES_MAX {
        let got = kv
            .range(auth::request(
                RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        let mod_revision = got.kvs.first().map_or(0, |kv| kv.mod_revision);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::ModRevision(mod_revision)),
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value.to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        if kv
            .txn(auth::request(txn, token))
            .await?
            .into_inner()
            .succeeded
        {
            return Ok(());
        }
        rec.count("txn_conflicts");
    }
    Err(tonic::Status::aborted(format!(
        "txn-put: still conflicting after {TXN_RETRIES_MAX} attempts"
    )))
}
