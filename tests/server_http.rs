//! HTTP/1.1 on the client port, next to gRPC: /health, /version, /metrics,
//! and an explicit "not implemented" for the parts of the JSON gateway not
//! built (the KV gateway is in server_gateway.rs).

mod common;

use common::Cairn;

#[test]
fn http_endpoints_answer_beside_grpc() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 1);
    assert_eq!(
        common::ok(&c.endpoint(), &["put", "a", "1"]),
        "OK\n",
        "gRPC on the same port"
    );
    assert_eq!(
        c.http("GET", "/health"),
        (200, "{\"health\":\"true\"}".to_string())
    );
    let (code, version) = c.http("GET", "/version");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["etcdserver"], "3.4.0");
    let (code, metrics) = c.http("GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cairn_grpc_requests_total{rpc=\"Put\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_committed_revision 2"), "{metrics}");
    assert!(metrics.contains("etcd_server_has_leader 1"));
    let fsyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count{shard=\"0\"} "))
        .expect("a WAL fsync histogram")
        .parse()
        .unwrap();
    assert!(fsyncs >= 1, "the put was fsynced: {metrics}");
    assert!(
        metrics.contains("cairn_grpc_request_duration_seconds_bucket{rpc=\"Put\",le=\"+Inf\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("etcd_mvcc_db_total_size_in_bytes "));
    assert!(metrics.contains("cairn_shard_committed_index{shard=\"0\"}"));
    assert!(metrics.contains("etcd_server_leader_changes_seen_total "));
    assert!(metrics.contains("etcd_server_proposals_failed_total 0"));
    // An alarm makes the member unhealthy, as etcd's (etcdctl raises one).
    let raised = common::etcdctl(&c.url(), &["alarm", "disarm"], None);
    assert!(raised.status.success());
    let rt = common::rt();
    rt.block_on(async {
        use cairn_proto::etcdserverpb::{alarm_request, maintenance_client::MaintenanceClient};
        let mut m = MaintenanceClient::new(common::channel(&c.url()).await);
        m.alarm(cairn_proto::etcdserverpb::AlarmRequest {
            action: alarm_request::AlarmAction::Activate as i32,
            member_id: 0,
            alarm: cairn_proto::etcdserverpb::AlarmType::Nospace as i32,
        })
        .await
        .expect("alarm");
    });
    let (code, body) = c.http("GET", "/health");
    assert_eq!(code, 503, "{body}");
    assert!(common::etcdctl(&c.url(), &["alarm", "disarm"], None)
        .status
        .success());
    assert_eq!(c.http("GET", "/health").0, 200);
    // Auth's gateway paths answer (no users yet, auth off).
    let (code, body) = c.http("POST", "/v3/auth/user/list");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"header\""), "{body}");
    assert_eq!(c.http("GET", "/nothing-here").0, 404);
}
