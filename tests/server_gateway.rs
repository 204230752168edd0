//! The HTTP/JSON gateway's unary paths: the same JSON requests sent to real
//! etcd 3.4 and to cairn (two shards) get the same HTTP status and the same
//! JSON (member specific header fields aside), errors included; unknown
//! paths and methods get Go's plain answers. The streams are in
//! `server_gateway_streams.rs`.

mod common;

use common::Cairn;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;

/// An HTTP/1.1 request: the status, the headers (names lowercased) and the
/// body (chunks joined).
fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        // Say which server and request, so a reset can be told apart.
        panic!(
            "{method} {path} to {endpoint}: {e} (read {} bytes)",
            out.len()
        );
    }
    let out = String::from_utf8(out).unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if chunked {
        let mut body = String::new();
        let mut rest = rest;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            body.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        body
    } else {
        rest.to_string()
    };
    (code, headers, body)
}

/// POSTs `body` to `path`; the status and the JSON answer.
fn post(endpoint: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, _, body) = http(endpoint, "POST", path, body);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
    (code, json)
}

/// Drops what differs between two members (ids, term) everywhere.
fn norm(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["cluster_id", "member_id", "raft_term"] {
                m.remove(k);
            }
            m.values_mut().for_each(norm);
        }
        Value::Array(a) => a.iter_mut().for_each(norm),
        _ => {}
    }
}

#[test]
fn the_kv_gateway_answers_like_etcds() {
    let etcd = common::etcd();
    let etcd_endpoint = etcd.url.trim_start_matches("http://").to_string();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 2);
    // foo = Zm9v, bar = YmFy, "\0" = AA==, a/ = YS8=, a0 = YTA=
    let requests: &[(&str, &str)] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"YS8x","value":"MQ==","prev_kv":true}"#,
        ),
        ("/v3/kv/put", r#"{"key":"YS8y","value":"Mg=="}"#),
        (
            "/v3/kv/put",
            r#"{"key":"YS8x","value":"Mw==","prevKv":true}"#,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        ("/v3/kv/range", r#"{"key":"AA==","range_end":"AA=="}"#),
        (
            "/v3/kv/range",
            r#"{"key":"YS8=","range_end":"YTA=","sort_order":"DESCEND","sort_target":"MOD","limit":"1"}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"YS8=","rangeEnd":"YTA=","limit":1,"keys_only":true}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"YS8=","range_end":"YTA=","count_only":true}"#,
        ),
        ("/v3/kv/range", r#"{"key":"YS8x","revision":"3"}"#),
        // etcd's documented txn example, camelCase as in its docs.
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmF6"}}],"failure":[{"requestRange":{"key":"Zm9v"}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"VALUE","key":"Zm9v","result":"EQUAL","value":"bm9wZQ=="}],"success":[],"failure":[{"request_range":{"key":"AA==","range_end":"AA=="}},{"request_delete_range":{"key":"YS8y","prev_kv":true}}]}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{"key":"YS8=","range_end":"YTA=","prev_kv":true}"#,
        ),
        ("/v3/kv/deleterange", r#"{"key":"bm9uZQ=="}"#),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#),
        // Errors.
        ("/v3/kv/put", r#"{"value":"YmFy"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
        ("/v3/kv/compaction", r#"{"revision":"2"}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","lease":"99"}"#),
        (
            "/v3/kv/txn",
            r#"{"success":[{"requestPut":{"key":"Zm9v"}},{"requestPut":{"key":"Zm9v"}}]}"#,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
    ];
    for (path, body) in requests {
        let (want_code, mut want) = post(&etcd_endpoint, path, body);
        let (code, mut got) = post(&c.endpoint(), path, body);
        norm(&mut want);
        norm(&mut got);
        if std::env::var_os("CAIRN_SHOW").is_some() {
            println!("{path} {body} -> {code} {got}");
        }
        assert_eq!(
            (code, &got),
            (want_code, &want),
            "{path} {body}: cairn and etcd differ"
        );
    }
    // Status and members answer (their figures are the member's own).
    let (code, st) = post(&c.endpoint(), "/v3/maintenance/status", "{}");
    assert_eq!(code, 200);
    assert_eq!(st["version"], "3.4.0");
    let (code, members) = post(&c.endpoint(), "/v3/cluster/member/list", "{}");
    assert_eq!(code, 200);
    assert_eq!(members["members"][0]["name"], "default");
    // Malformed JSON is a 400 with InvalidArgument.
    let (code, err) = post(&c.endpoint(), "/v3/kv/put", "{not json");
    assert_eq!((code, err["code"].as_i64()), (400, Some(3)));
}

/// Sends each request to etcd and to cairn and compares the answers whole
/// (after `norm`, and `also` for what is the member's own).
fn compare(
    etcd: &str,
    cairn: &str,
    path: &str,
    body: &str,
    also: impl Fn(&str, &mut Value),
) -> Value {
    let (want_code, mut want) = post(etcd, path, body);
    let (code, mut got) = post(cairn, path, body);
    for v in [&mut want, &mut got] {
        norm(v);
        also(path, v);
    }
    if std::env::var_os("CAIRN_SHOW").is_some() {
        println!("{path} {body} -> {code} {got}");
    }
    assert_eq!(
        (code, &got),
        (want_code, &want),
        "{path} {body}: cairn and etcd differ"
    );
    got
}

/// The remaining TTL of a lease depends on when it is asked; a hash is the
/// store's own.
fn timing_and_hashes(path: &str, v: &mut Value) {
    if let Value::Object(m) = v {
        if path.ends_with("/timetolive") {
            assert!(
                m.remove("TTL").is_some() || m.contains_key("error"),
                "{v:?}"
            );
        }
        if path == "/v3/maintenance/hash" {
            let hash = m.remove("hash").expect("a hash");
            assert!(hash.is_u64(), "{hash}");
        }
    }
}

#[test]
fn lease_lock_election_and_maintenance_paths_answer_like_etcds() {
    let etcd = common::etcd();
    let e = etcd.url.trim_start_matches("http://").to_string();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 2);
    let c = c.endpoint();
    // Lease 100 = 0x64: lock key l/64 = bC82NA==, election key e/64 = ZS82NA==.
    let requests: &[(&str, &str)] = &[
        ("/v3/lease/grant", r#"{"ID":100,"TTL":60}"#),
        ("/v3/lease/grant", r#"{"ID":"100","TTL":"60"}"#),
        ("/v3/lease/grant", r#"{"ID":101,"TTL":"9000000001"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":"100"}"#,
        ),
        ("/v3/lease/timetolive", r#"{"ID":100,"keys":true}"#),
        ("/v3/kv/lease/timetolive", r#"{"ID":"100"}"#),
        ("/v3/lease/timetolive", r#"{"ID":555}"#),
        ("/v3/lease/leases", "{}"),
        ("/v3/kv/lease/leases", ""),
        ("/v3/lock/lock", r#"{"name":"bA==","lease":"100"}"#),
        ("/v3/lock/lock", r#"{"name":"bA==","lease":"555"}"#),
        ("/v3/lock/unlock", r#"{"key":"bC82NA=="}"#),
        (
            "/v3/election/campaign",
            r#"{"name":"ZQ==","lease":"100","value":"djE="}"#,
        ),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"ZQ==","key":"ZS82NA==","rev":"5","lease":"100"},"value":"djI="}"#,
        ),
        ("/v3/election/leader", r#"{"name":"ZQ=="}"#),
        (
            "/v3/election/proclaim",
            r#"{"leader":{"name":"ZQ==","key":"ZS82NA==","rev":"4","lease":"100"},"value":"djM="}"#,
        ),
        ("/v3/election/proclaim", r#"{"value":"djM="}"#),
        (
            "/v3/election/resign",
            r#"{"leader":{"name":"ZQ==","key":"ZS82NA==","rev":"5","lease":"100"}}"#,
        ),
        ("/v3/election/leader", r#"{"name":"ZQ=="}"#),
        ("/v3/kv/lease/revoke", r#"{"ID":100}"#),
        ("/v3/lease/revoke", r#"{"ID":"100"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        // Unknown fields are skipped; what follows the first value too.
        ("/v3/kv/range", r#"{"key":"Zm9v","nope":1} garbage"#),
        ("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
        ("/v3/maintenance/defragment", "{}"),
        // Hash, not HashKV: no compact_revision, the revision is ignored.
        ("/v3/maintenance/hash", r#"{"revision":"100"}"#),
        ("/v3/maintenance/transfer-leadership", r#"{"targetID":5}"#),
    ];
    for (path, body) in requests {
        compare(&e, &c, path, body, timing_and_hashes);
    }
    // A body that is not JSON: 400, InvalidArgument (Go's message differs).
    for ep in [&e, &c] {
        let (code, err) = post(ep, "/v3/lease/grant", "{not json");
        assert_eq!((code, err["code"].as_i64()), (400, Some(3)), "{ep}");
    }
    // Unknown paths, other methods: Go's plain answers; etcd's CORS headers.
    for (method, path) in [
        ("POST", "/v3/nope"),
        ("POST", "/v3/kv/nope"),
        ("POST", "/v3/kv/lease/keepalive"),
        ("POST", "/v3/auth/status"),
        ("GET", "/v3/kv/range"),
        ("PUT", "/v3/lease/grant"),
        ("GET", "/v3/watch"),
        ("OPTIONS", "/v3/kv/range"),
    ] {
        let pick = |(code, headers, body): (u16, Vec<(String, String)>, String)| {
            let keep = |k: &str| {
                k.starts_with("access-control-")
                    || k == "content-type"
                    || k == "x-content-type-options"
            };
            let mut headers: Vec<_> = headers.into_iter().filter(|(k, _)| keep(k)).collect();
            headers.sort();
            (code, headers, body)
        };
        let want = pick(http(&e, method, path, "{}"));
        let got = pick(http(&c, method, path, "{}"));
        assert_eq!(got, want, "{method} {path}: cairn and etcd differ");
    }
    // An answer that needs no body still reads it (up to 256 KiB, as Go's
    // server does): closing with it unread would reset the connection and
    // the client could lose the answer.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200 << 10));
    for (method, path) in [
        ("POST", "/v3/nope"),
        ("GET", "/v3/kv/range"),
        ("POST", "/nope"),
    ] {
        let (code, _, _) = http(&c, method, path, &big);
        assert!(code == 404 || code == 405, "{method} {path}: {code}");
    }
    // A single member: membership changes are refused by the Cluster
    // service (etcd would look the member up): 501, in the error shape.
    let (code, err) = post(&c, "/v3/cluster/member/remove", r#"{"ID":5}"#);
    assert_eq!((code, err["code"].as_i64()), (501, Some(12)), "{err}");
}
