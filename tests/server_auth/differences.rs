//! Where cairn deliberately answers unlike etcd 3.4.23: the scripts and
//! `deliberately_unlike_etcd`, which checks both sides' expected answers.

use crate::auth::*;
use crate::setup_users;
use authpb::permission::Type::{Read, Write};

/// A lease on `k` (u may read it) and on `secret` (u may not), another on
/// `k` alone; their TimeToLive with and without keys, as u and with no
/// token.
pub(super) async fn lease_keys_script(mut r: Run) -> Run {
    let a = &Cred::Anon;
    setup_users(&mut r).await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    let u = &r.cred("u logs in", "u", "upw").await;
    for (id, keys) in [(7, &["k", "secret"][..]), (8, &["k/2"][..])] {
        let grant = pb::LeaseGrantRequest { ttl: 600, id };
        r.lease_grant(&format!("grant {id}"), root, grant).await;
        for key in keys {
            let p = pb::PutRequest {
                lease: id,
                ..put_req(key, "v")
            };
            r.put(&format!("root puts {key} with {id}"), root, p).await;
        }
    }
    r.grant_perm("rk: READ k/2", root, "rk", Read, "k/2", "")
        .await;
    let ttl = |id, keys| pb::LeaseTimeToLiveRequest { id, keys };
    r.lease_ttl("u: lease on k and secret, no keys", u, ttl(7, false))
        .await;
    r.lease_ttl("u: lease on k and secret, keys", u, ttl(7, true))
        .await;
    r.lease_ttl("u: lease on k/2, keys", u, ttl(8, true)).await;
    r.lease_ttl("no token: lease on k and secret, no keys", a, ttl(7, false))
        .await;
    r.lease_ttl("no token: lease on k and secret, keys", a, ttl(7, true))
        .await;
    r.lease_ttl("root: keys", root, ttl(7, true)).await;
    r
}

/// Runs `script` on etcd 3.4.23 and on cairn: each step of `expected`
/// (label, etcd's answer, cairn's) must be answered so, every other step
/// alike on both.
pub(super) fn deliberately_unlike_etcd<F, Fut>(script: F, expected: &[(&str, &str, &str)])
where
    F: Fn(Run) -> Fut + Copy,
    Fut: std::future::Future<Output = Run>,
{
    let etcd = run_on(Kind::Etcd, &CHEAP, script);
    let answer = |steps: &[Step], label: &str| {
        let found = steps.iter().find(|(l, _)| l == label);
        found
            .unwrap_or_else(|| panic!("no step {label:?}"))
            .1
            .clone()
    };
    for (label, want_etcd, _) in expected {
        assert_eq!(answer(&etcd, label), *want_etcd, "etcd 3.4.23: {label}");
    }
    if std::env::var_os("CAIRN_AUTH_ETCD_ONLY").is_some() {
        for (i, (label, got)) in etcd.iter().enumerate() {
            println!("{i:3} {label}: {got}");
        }
        return;
    }
    if std::env::var_os("CAIRN_AUTH_ETCD_TWICE").is_some() {
        // The script's own check: a second etcd answers as the first.
        assert_eq!(run_on(Kind::Etcd, &CHEAP, script), etcd);
        return;
    }
    let cairn = run_on(Kind::Cairn, &CHEAP, script);
    let mut wrong = Vec::new();
    for (label, _, want_cairn) in expected {
        let got = answer(&cairn, label);
        if got != *want_cairn {
            wrong.push(format!("{label:?}:\n    want {want_cairn}\n    got  {got}"));
        }
    }
    let rest = |steps: &[Step]| -> Vec<Step> {
        let listed = |l: &String| expected.iter().any(|(e, _, _)| e == l);
        steps.iter().filter(|(l, _)| !listed(l)).cloned().collect()
    };
    for (w, g) in rest(&etcd).iter().zip(rest(&cairn).iter()) {
        if w != g {
            wrong.push(format!(
                "{:?}:\n    etcd 3.4: {}\n    cairn:    {}",
                w.0, w.1, g.1
            ));
        }
    }
    assert!(wrong.is_empty(), "cairn:\n{}", wrong.join("\n"));
}

pub(super) const DENIED: &str = "ERR PermissionDenied: etcdserver: permission denied";

/// Logins that carry a token that is not valid (a client's expired one).
pub(super) async fn login_with_bad_token_script(mut r: Run) -> Run {
    setup_users(&mut r).await;
    for (what, bad) in [
        ("no dot", "garbage"),
        ("never issued", "abcdefghijklmnop.1"),
    ] {
        let c = &Cred::Token(bad.to_string());
        let label = format!("malformed token ({what}): authenticate");
        r.login_as(&label, c, "u", "upw").await;
    }
    r
}

/// A user `wu` who may write `w` but read nothing, and a key `secret` on
/// a lease of root's; what a Txn lets wu do.
pub(super) async fn txn_bypass_script(mut r: Run) -> Run {
    setup_users(&mut r).await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    r.user_add("add wu", root, "wu", "pw").await;
    r.role_add("add rw", root, "rw").await;
    r.grant_perm("rw: WRITE w", root, "rw", Write, "w", "")
        .await;
    r.grant_role("rw to wu", root, "wu", "rw").await;
    r.put("root puts w", root, put_req("w", "old")).await;
    let grant = pb::LeaseGrantRequest { ttl: 600, id: 9 };
    r.lease_grant("root grants 9", root, grant).await;
    let p = pb::PutRequest {
        lease: 9,
        ..put_req("secret", "s")
    };
    r.put("root puts secret with 9", root, p).await;
    let wu = &r.cred("wu logs in", "wu", "pw").await;
    let prev = pb::PutRequest {
        prev_kv: true,
        ..put_req("w", "new")
    };
    let leased = pb::PutRequest {
        lease: 9,
        ..put_req("w", "leased")
    };
    let op = |p: &pb::PutRequest| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(p.clone())),
    };
    let nested = |ops: Vec<pb::RequestOp>| pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        })),
    };
    let txn = |ops: Vec<pb::RequestOp>| pb::TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    r.put("wu: put w, prev_kv", wu, prev.clone()).await;
    r.txn("wu: txn put w, prev_kv", wu, txn(vec![op(&prev)]))
        .await;
    r.put("wu: put w on lease 9", wu, leased.clone()).await;
    r.txn("wu: txn put w on lease 9", wu, txn(vec![op(&leased)]))
        .await;
    r.txn(
        "wu: txn range secret",
        wu,
        txn(vec![op_range("secret", "")]),
    )
    .await;
    let write = vec![nested(vec![op_put("secret", "pwned")])];
    r.txn("wu: txn in a txn, put secret", wu, txn(write)).await;
    let read = vec![op_put("w", "x"), nested(vec![op_range("secret", "")])];
    r.txn("wu: txn in a txn, range secret", wu, txn(read)).await;
    r.range("root reads secret and w", root, range_req("secret", "x"))
        .await;
    r
}

/// u, who may read and write `k` alone, watches "from `k` on" (range end
/// `\0`), and `k` itself.
pub(super) async fn watch_from_key_script(mut r: Run) -> Run {
    setup_users(&mut r).await;
    let u = &r.cred("u logs in", "u", "upw").await;
    r.watch("u: watch from k on", u, watch_req("k", "\0")).await;
    r.watch("u: watch k", u, watch_req("k", "")).await;
    r
}
