//! Bad requests get etcd's error code and exact message, and change nothing.
//! Each request is sent to cairn and to a real etcd 3.4 started here; both
//! must answer the same.

mod common;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::*;
use common::Cairn;
use tonic::transport::Channel;
use tonic::Code;

fn put_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

/// (name, the request, etcd's code and message)
async fn cases(kv: &mut KvClient<Channel>) -> Vec<(&'static str, tonic::Status)> {
    let mut out = Vec::new();
    let put = |r: PutRequest| r;
    macro_rules! err {
        ($name:expr, $call:expr) => {
            out.push(($name, $call.await.expect_err($name)));
        };
    }
    err!("put empty key", kv.put(put(PutRequest::default())));
    err!("range empty key", kv.range(RangeRequest::default()));
    err!(
        "delete empty key",
        kv.delete_range(DeleteRangeRequest::default())
    );
    err!(
        "put ignore_value with a value",
        kv.put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        })
    );
    err!(
        "put ignore_lease with a lease",
        kv.put(PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        })
    );
    err!(
        "put ignore_value on a missing key",
        kv.put(PutRequest {
            key: b"missing".to_vec(),
            ignore_value: true,
            ..Default::default()
        })
    );
    err!(
        "put with an unknown lease",
        kv.put(PutRequest {
            key: b"k".to_vec(),
            lease: 123456,
            ..Default::default()
        })
    );
    err!(
        "txn with 129 ops",
        kv.txn(TxnRequest {
            success: (0..129).map(|i| put_op(&format!("t{i}"))).collect(),
            ..Default::default()
        })
    );
    err!(
        "txn putting a key twice",
        kv.txn(TxnRequest {
            success: vec![put_op("dup"), put_op("dup")],
            ..Default::default()
        })
    );
    err!(
        "txn compare without a key",
        kv.txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                target_union: Some(TargetUnion::Version(0)),
                ..Default::default()
            }],
            ..Default::default()
        })
    );
    err!(
        "txn with an empty op",
        kv.txn(TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        })
    );
    err!(
        "range at a future revision",
        kv.range(RangeRequest {
            key: b"a".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
    );
    err!(
        "range at a compacted revision",
        kv.range(RangeRequest {
            key: b"a".to_vec(),
            revision: 1,
            ..Default::default()
        })
    );
    err!(
        "compact at a future revision",
        kv.compact(CompactionRequest {
            revision: 1_000_000,
            physical: false
        })
    );
    err!(
        "compact at the compacted revision",
        kv.compact(CompactionRequest {
            revision: 2,
            physical: false
        })
    );
    err!(
        "request over --max-request-bytes",
        kv.put(PutRequest {
            key: b"big".to_vec(),
            value: vec![0u8; 1_600_000],
            ..Default::default()
        })
    );
    out
}

/// Keys in `[key, end)`.
async fn count(kv: &mut KvClient<Channel>, key: &[u8], end: &[u8]) -> i64 {
    kv.range(RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        count_only: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .count
}

async fn revision(kv: &mut KvClient<Channel>) -> i64 {
    kv.range(RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .header
    .unwrap()
    .revision
}

/// Writes a little so that revision 2 can be compacted, then runs the cases.
async fn run(url: String) -> (Vec<(&'static str, tonic::Status)>, i64, i64) {
    let mut kv = KvClient::connect(url)
        .await
        .unwrap()
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    for k in ["a", "b", "c"] {
        kv.put(PutRequest {
            key: k.into(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    kv.compact(CompactionRequest {
        revision: 2,
        physical: true,
    })
    .await
    .unwrap();
    let before = revision(&mut kv).await;
    let errors = cases(&mut kv).await;
    let after = revision(&mut kv).await;
    (errors, before, after)
}

#[test]
fn bad_requests_get_etcds_errors_and_change_nothing() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Cairn::start(base.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    let (ours, before, after) = rt.block_on(run(cairn.url()));
    assert_eq!(before, after, "no bad request consumed a revision");
    let (theirs, e_before, e_after) = rt.block_on(run(etcd.url.clone()));
    assert_eq!(e_before, e_after);
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        assert_eq!(
            (a.code(), a.message()),
            (b.code(), b.message()),
            "{name}: cairn vs etcd"
        );
    }
    // The table's own expectations, so a change in either side shows.
    let by_name: std::collections::HashMap<_, _> = ours.iter().map(|(n, s)| (*n, s)).collect();
    assert_eq!(
        by_name["put empty key"].message(),
        "etcdserver: key is not provided"
    );
    assert_eq!(by_name["put with an unknown lease"].code(), Code::NotFound);
    assert_eq!(
        by_name["txn with 129 ops"].message(),
        "etcdserver: too many operations in txn request"
    );
    assert_eq!(
        by_name["request over --max-request-bytes"].message(),
        "etcdserver: request is too large"
    );
}

#[test]
fn every_service_answers_and_move_leader_refuses_a_stranger() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Cairn::start(base.path(), 1);
    common::rt().block_on(async {
        let ch = cairn.channel().await;
        // Auth is served (tests/server_auth/ compares it with etcd's):
        // no users yet, and no enabling without root.
        let mut auth = auth_client::AuthClient::new(ch.clone());
        let users = auth.user_list(AuthUserListRequest {}).await.unwrap();
        assert!(users.into_inner().users.is_empty());
        // MoveLeader is built (etcd's answer for a target that is not a
        // member: tests/server_shapes.rs compares it with etcd's).
        let mut m = maintenance_client::MaintenanceClient::new(ch.clone());
        let e = m
            .move_leader(MoveLeaderRequest { target_id: 1 })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee"
            )
        );
        let e = auth.auth_enable(AuthEnableRequest {}).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::FailedPrecondition,
                "etcdserver: root user does not exist"
            )
        );
    });
}

/// A shard logs a write's changes, and one log entry must fit one WAL record
/// (here, with 64 KiB segments, about 12 KB of changes). Writes queued
/// together are split over several entries when they do not fit one, and
/// survive a crash. A plain delete of 1,500 keys (on one shard or across two)
/// is logged as its range and survives a crash; the same delete inside a txn
/// cannot be, and is refused with etcd's "request is too large", changing
/// nothing, while the member keeps serving.
#[test]
fn writes_too_large_for_one_log_entry_are_split_or_refused() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let small = [
        "--wal-segment-bytes",
        "65536",
        "--max-request-bytes",
        "8192",
    ];
    for shards in [1, 2] {
        let mut cairn = Cairn::start_with(base.path(), shards, &small);
        let url = cairn.url();
        let ch = || common::channel(&url);
        common::rt().block_on(async {
            let ch = ch().await;
            // 8 clients, 6 KiB values: any two queued together overflow one entry.
            let mut tasks = Vec::new();
            for t in 0..8 {
                let mut kv = KvClient::new(ch.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..20 {
                        kv.put(PutRequest {
                            key: format!("wide/{t}/{i}").into_bytes(),
                            value: vec![b'x'; 6 << 10],
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let mut kv = KvClient::new(ch);
            for i in 0..1500 {
                kv.put(PutRequest {
                    key: format!("many/{i:04}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
            let before = revision(&mut kv).await;
            let delete = DeleteRangeRequest {
                key: b"many/".to_vec(),
                range_end: b"many0".to_vec(),
                ..Default::default()
            };
            let e = kv
                .txn(TxnRequest {
                    success: vec![RequestOp {
                        request: Some(Request::RequestDeleteRange(delete.clone())),
                    }],
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{shards} shards: {e:?}");
            assert_eq!(e.message(), "etcdserver: request is too large");
            assert_eq!(revision(&mut kv).await, before, "nothing changed");
            let deleted = kv.delete_range(delete).await.unwrap().into_inner();
            assert_eq!(deleted.deleted, 1500, "{shards} shards");
            assert_eq!(deleted.header.unwrap().revision, before + 1);
        });
        cairn.crash();
        cairn.restart();
        common::rt().block_on(async {
            let mut kv = KvClient::new(ch().await);
            assert_eq!(
                count(&mut kv, b"wide/", b"wide0").await,
                160,
                "{shards} shards: every split write survived"
            );
            assert_eq!(
                count(&mut kv, b"many/", b"many0").await,
                0,
                "{shards} shards: the range delete was replayed"
            );
            kv.put(PutRequest {
                key: b"after".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        });
    }
}
