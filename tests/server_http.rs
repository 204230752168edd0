//! HTTP/1.1 on the client port, next to gRPC: /health, /version, /metrics,
//! and an explicit "not implemented" for the parts of the JSON gateway not
//! built (the KV gateway is in server_gateway.rs).

mod common;

use common::Cairn;
use std::io::{Read, Write};
use std::net::TcpStream;

fn get(c: &Cairn, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(c.endpoint()).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

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
        get(&c, "GET", "/health"),
        (200, "{\"health\":\"true\"}".to_string())
    );
    let (code, version) = get(&c, "GET", "/version");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["etcdserver"], "3.4.0");
    let (code, metrics) = get(&c, "GET", "/metrics");
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
    let (code, body) = get(&c, "POST", "/v3/watch");
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("not implemented"));
    assert_eq!(get(&c, "GET", "/nothing-here").0, 404);
}
