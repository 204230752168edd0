//! The real etcdctl's auth commands and the JSON gateway's auth path:
//! the scripts, each run on etcd and on cairn by its test.

use crate::auth::*;
use crate::common;
use serde_json::Value;

/// What the real etcdctl prints, normalized: the exit status, stdout, and
/// stderr without the client's JSON log lines (they carry the time).
fn ctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = common::etcdctl(endpoint, args, stdin);
    let stderr: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with('{'))
        .map(String::from)
        .collect();
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        stderr.join("\n")
    )
}

/// etcdctl's auth commands, in the order a tutorial runs them, then what
/// users can and cannot do with `--user`.
pub(super) fn etcdctl_script(e: &str) -> Vec<(String, String)> {
    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:apw"];
    let mut steps: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["user", "add", "root:rootpw"], None),
        (vec!["user", "add", "alice:apw"], None),
        (vec!["user", "add", "alice:other"], None),
        (vec!["role", "add", "reader"], None),
        (
            vec![
                "role",
                "grant-permission",
                "reader",
                "read",
                "/app/",
                "--prefix",
            ],
            None,
        ),
        (
            vec!["role", "grant-permission", "reader", "readwrite", "k1"],
            None,
        ),
        (
            vec!["role", "grant-permission", "reader", "write", "a", "c"],
            None,
        ),
        (
            vec![
                "role",
                "grant-permission",
                "reader",
                "read",
                "z",
                "--from-key",
            ],
            None,
        ),
        (vec!["role", "get", "reader"], None),
        (vec!["role", "get", "nope"], None),
        (vec!["role", "list"], None),
        (vec!["user", "grant-role", "alice", "reader"], None),
        (vec!["user", "grant-role", "alice", "nope"], None),
        (vec!["user", "get", "alice"], None),
        (vec!["user", "get", "alice", "--detail"], None),
        (vec!["user", "list"], None),
        (vec!["put", "/app/x", "1"], None),
        // The root role is added and granted by etcdctl itself.
        (vec!["auth", "enable"], None),
        (vec!["role", "list"], None),
        (vec!["get", "k1"], None),
    ];
    let with = |who: [&'static str; 2], rest: &[&'static str]| -> Vec<&'static str> {
        let mut v = who.to_vec();
        v.extend_from_slice(rest);
        v
    };
    for cmd in [
        with(root, &["role", "list"]),
        with(root, &["role", "get", "root"]),
        with(root, &["user", "get", "root"]),
        with(root, &["put", "/app/y", "2"]),
        with(alice, &["get", "/app/x"]),
        with(alice, &["get", "/app/", "--prefix"]),
        with(alice, &["get", "/app/", "--prefix", "--keys-only"]),
        with(alice, &["get", "", "--prefix"]),
        with(alice, &["put", "/app/x", "3"]),
        with(alice, &["put", "k1", "v"]),
        with(alice, &["get", "k1"]),
        with(alice, &["put", "b", "v"]),
        with(alice, &["get", "b"]),
        with(alice, &["del", "b"]),
        with(alice, &["del", "k1", "--prev-kv"]),
        with(alice, &["put", "k1", "v2"]),
        with(["--user", "alice:wrong"], &["get", "k1"]),
        with(["--user", "nobody:x"], &["get", "k1"]),
        with(alice, &["role", "list"]),
        with(alice, &["user", "get", "alice"]),
        with(alice, &["role", "get", "reader"]),
        with(alice, &["user", "get", "root"]),
        with(alice, &["endpoint", "hashkv"]),
        with(alice, &["compaction", "2"]),
        with(alice, &["auth", "disable"]),
        with(root, &["user", "list"]),
        with(
            root,
            &["role", "revoke-permission", "reader", "/app/", "--prefix"],
        ),
        with(
            root,
            &["role", "revoke-permission", "reader", "/app/", "--prefix"],
        ),
        with(alice, &["get", "/app/x"]),
        with(root, &["user", "revoke-role", "alice", "reader"]),
        with(root, &["user", "revoke-role", "alice", "reader"]),
        with(root, &["role", "delete", "reader"]),
        with(root, &["user", "delete", "alice"]),
        with(root, &["user", "delete", "root"]),
        with(root, &["user", "revoke-role", "root", "root"]),
        with(root, &["auth", "disable"]),
    ] {
        steps.push((cmd, None));
    }
    steps.push((
        vec!["user", "passwd", "root", "--interactive=false"],
        Some("newpw\n"),
    ));
    steps.push((vec!["auth", "enable"], None));
    steps.push((vec!["--user", "root:newpw", "get", "/app/x"], None));
    steps.push((
        vec!["--user", "root", "--password", "newpw", "user", "list"],
        None,
    ));
    steps.push((vec!["--user", "root:newpw", "auth", "disable"], None));
    steps.push((vec!["user", "delete", "root"], None));
    steps.push((vec!["get", "/app/x"], None));
    steps
        .into_iter()
        .map(|(args, stdin)| {
            let out = ctl(e, &args, stdin).replace(e, "<endpoint>");
            (args.join(" "), out)
        })
        .collect()
}

/// A POST to the JSON gateway with extra headers: the status and the JSON
/// answer, `cluster_id`, `member_id` and `raft_term` dropped, a token
/// replaced by `<token>` (given back as the second value).
fn post(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let (mut body, mut rest) = (String::new(), rest);
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break body;
            }
            body.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
    } else {
        rest.to_string()
    };
    let mut json: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
    fn norm(v: &mut Value, token: &mut String) {
        match v {
            Value::Object(m) => {
                for k in ["cluster_id", "member_id", "raft_term"] {
                    m.remove(k);
                }
                if let Some(Value::String(t)) = m.get_mut("token") {
                    *token = std::mem::replace(t, "<token>".into());
                }
                m.values_mut().for_each(|v| norm(v, token));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| norm(v, token)),
            _ => {}
        }
    }
    let mut token = String::new();
    norm(&mut json, &mut token);
    (code, json, token)
}

/// The gateway's auth path, as a browser or curl uses it: the auth
/// endpoints, /v3/auth/authenticate, then `Authorization: <token>` (what
/// etcd's docs show; grpc-gateway passes it on as gRPC metadata
/// `authorization`) or `Grpc-Metadata-Token`; missing, bad and
/// `Bearer`-prefixed tokens.
pub(super) fn gateway_script(e: &str) -> Vec<(String, u16, Value)> {
    let mut steps = Vec::new();
    let mut tokens: std::collections::HashMap<&str, String> = Default::default();
    // a = YQ==, b = Yg==, k = aw==
    let requests: &[(&str, &str, &str, &str)] = &[
        (
            "",
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"pw"}"#,
            "",
        ),
        (
            "",
            "/v3/auth/user/add",
            r#"{"name":"root","password":"pw"}"#,
            "",
        ),
        (
            "",
            "/v3/auth/user/add",
            r#"{"name":"","password":"pw"}"#,
            "",
        ),
        ("", "/v3/auth/enable", "{}", ""),
        (
            "",
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#,
            "",
        ),
        ("", "/v3/auth/role/add", r#"{"name":"ra"}"#, ""),
        (
            "",
            "/v3/auth/role/grant",
            r#"{"name":"ra","perm":{"permType":"READ","key":"YQ=="}}"#,
            "",
        ),
        (
            "",
            "/v3/auth/role/grant",
            r#"{"name":"ra","perm":{"permType":"READWRITE","key":"Yg==","range_end":"Yw=="}}"#,
            "",
        ),
        ("", "/v3/auth/role/get", r#"{"role":"ra"}"#, ""),
        (
            "",
            "/v3/auth/user/add",
            r#"{"name":"alice","password":"apw"}"#,
            "",
        ),
        (
            "",
            "/v3/auth/user/add",
            r#"{"name":"np","options":{"no_password":true}}"#,
            "",
        ),
        (
            "",
            "/v3/auth/user/grant",
            r#"{"user":"alice","role":"ra"}"#,
            "",
        ),
        ("", "/v3/auth/user/get", r#"{"name":"alice"}"#, ""),
        ("", "/v3/auth/user/list", "{}", ""),
        ("", "/v3/auth/role/list", "{}", ""),
        ("", "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#, ""),
        ("", "/v3/auth/enable", "{}", ""),
        (
            "",
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"pw"}"#,
            "root",
        ),
        (
            "",
            "/v3/auth/authenticate",
            r#"{"name":"alice","password":"apw"}"#,
            "alice",
        ),
        (
            "",
            "/v3/auth/authenticate",
            r#"{"name":"alice","password":"no"}"#,
            "",
        ),
        (
            "",
            "/v3/auth/authenticate",
            r#"{"name":"nobody","password":"no"}"#,
            "",
        ),
        ("", "/v3/auth/authenticate", r#"{"name":"np"}"#, ""),
        ("", "/v3/auth/authenticate", "{}", ""),
        ("", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("", "/v3/auth/user/list", "{}", ""),
        ("root", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("root", "/v3/auth/user/list", "{}", ""),
        ("alice", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        (
            "alice",
            "/v3/kv/put",
            r#"{"key":"YQ==","value":"Mg=="}"#,
            "",
        ),
        (
            "alice",
            "/v3/kv/put",
            r#"{"key":"Yg==","value":"Mg==","prev_kv":true}"#,
            "",
        ),
        (
            "alice",
            "/v3/kv/range",
            r#"{"key":"YQ==","range_end":"Yw=="}"#,
            "",
        ),
        (
            "alice",
            "/v3/kv/deleterange",
            r#"{"key":"Yg==","prev_kv":true}"#,
            "",
        ),
        (
            "alice",
            "/v3/kv/txn",
            r#"{"compare":[{"target":"VERSION","key":"YQ==","version":"1"}],"success":[{"requestRange":{"key":"YQ=="}}],"failure":[{"requestPut":{"key":"YQ==","value":"Mw=="}}]}"#,
            "",
        ),
        ("alice", "/v3/auth/user/list", "{}", ""),
        ("alice", "/v3/auth/user/get", r#"{"name":"alice"}"#, ""),
        ("alice", "/v3/auth/user/get", r#"{"name":"root"}"#, ""),
        ("alice", "/v3/auth/role/get", r#"{"role":"ra"}"#, ""),
        ("alice", "/v3/auth/disable", "{}", ""),
        ("alice", "/v3/maintenance/alarm", r#"{"action":"GET"}"#, ""),
        ("alice", "/v3/maintenance/hash", "{}", ""),
        ("alice", "/v3/kv/compaction", r#"{"revision":"2"}"#, ""),
        ("alice", "/v3/lease/grant", r#"{"ID":7,"TTL":60}"#, ""),
        ("bearer", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("garbage", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("garbage", "/v3/auth/user/list", "{}", ""),
        ("grpc-metadata", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("token-header", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        (
            "root",
            "/v3/auth/user/changepw",
            r#"{"name":"alice","password":"apw2"}"#,
            "",
        ),
        ("alice", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        (
            "root",
            "/v3/auth/user/revoke",
            r#"{"name":"alice","role":"ra"}"#,
            "",
        ),
        (
            "root",
            "/v3/auth/role/revoke",
            r#"{"role":"ra","key":"YQ=="}"#,
            "",
        ),
        (
            "root",
            "/v3/auth/role/revoke",
            r#"{"role":"ra","key":"YQ=="}"#,
            "",
        ),
        ("root", "/v3/auth/role/delete", r#"{"role":"ra"}"#, ""),
        ("root", "/v3/auth/user/delete", r#"{"name":"alice"}"#, ""),
        ("root", "/v3/auth/user/delete", r#"{"name":"root"}"#, ""),
        ("root", "/v3/auth/disable", "{}", ""),
        ("root", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
        ("", "/v3/kv/range", r#"{"key":"YQ=="}"#, ""),
    ];
    for (who, path, body, keep) in requests {
        let token = tokens.get(who).cloned();
        let alice = tokens.get("alice").cloned().unwrap_or_default();
        let headers: Vec<(&str, String)> = match *who {
            "" => vec![],
            "bearer" => vec![("Authorization", format!("Bearer {alice}"))],
            "garbage" => vec![("Authorization", "garbage".into())],
            "grpc-metadata" => vec![("Grpc-Metadata-Token", alice)],
            "token-header" => vec![("Token", alice)],
            _ => vec![("Authorization", token.unwrap_or_default())],
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, json, token) = post(e, path, &headers, body);
        if !keep.is_empty() {
            tokens.insert(keep, token);
        }
        steps.push((format!("{who:>8} {path} {body}"), code, json));
    }
    steps
}
