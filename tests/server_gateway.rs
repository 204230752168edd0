//! The HTTP/JSON gateway: the same JSON requests sent to real etcd 3.4 and to
//! cairn (two shards) get the same HTTP status and the same JSON (member
//! specific header fields aside), errors included.

mod common;

use common::Cairn;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;

/// POSTs `body` to `path`; the status and the JSON answer.
fn post(endpoint: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
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
