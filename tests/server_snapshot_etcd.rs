//! `etcdctl snapshot save` from cairn writes etcd 3.4's own file: `etcdctl
//! snapshot status` reads it, and `etcdctl snapshot restore` turns it into a
//! data dir a real etcd 3.4 starts on, serving the same keys with the same
//! revision fields, the retained history (and the compaction point), the
//! leases with their keys, and the users and roles cairn had.

mod common;

use cairn_tools::etcd::Etcd;
use common::{ok, Cairn};

/// `get` as JSON, the key-values as (key, value, create, mod, version,
/// lease), and the answer's revision.
fn kvs(endpoint: &str, args: &[&str]) -> Vec<(String, String, i64, i64, i64, i64)> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(endpoint, &all)).expect("json");
    let text = |v: &serde_json::Value| {
        String::from_utf8(common::base64_decode(v.as_str().unwrap_or(""))).expect("utf-8")
    };
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    json["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        text(&kv["key"]),
                        text(&kv["value"]),
                        int(&kv["create_revision"]),
                        int(&kv["mod_revision"]),
                        int(&kv["version"]),
                        int(&kv["lease"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The revision a put answered with.
fn put(endpoint: &str, args: &[&str]) -> i64 {
    let mut all = vec!["put"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(endpoint, &all)).expect("json");
    json["header"]["revision"].as_i64().expect("revision")
}

fn saved_by_cairn_started_by_etcd(shards: usize) {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), shards);
    let e = c.endpoint();
    // History, a compaction in its middle, deletes, a txn over several
    // keys at one revision, a lease holding keys, users and a role.
    put(&e, &["a/1", "v1"]);
    put(&e, &["b/1", "v1"]);
    let kept = put(&e, &["a/1", "v2"]);
    put(&e, &["c/1", "gone"]);
    ok(&e, &["compact", &kept.to_string()]);
    let history = put(&e, &["a/1", "v3"]);
    ok(&e, &["del", "b/1"]);
    ok(&e, &["del", "c/1"]);
    // No compares, three puts, no else branch.
    let txn = "\nput t/1 one\nput t/2 two\nput t/3 three\n\n\n";
    let out = common::etcdctl(&e, &["txn"], Some(txn));
    assert!(out.status.success(), "{:?}", out);
    let granted = ok(&e, &["lease", "grant", "600"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    put(&e, &["l/1", "held", "--lease", &lease]);
    put(&e, &["l/2", "held", "--lease", &lease]);
    ok(&e, &["user", "add", "alice:pw", "--interactive=false"]);
    ok(&e, &["role", "add", "reader"]);
    ok(
        &e,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "a/",
            "--prefix=true",
        ],
    );
    ok(&e, &["user", "grant-role", "alice", "reader"]);
    let last = put(&e, &["z", "last"]);

    let file = base.path().join("cairn.db");
    let out = ok(&e, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved"), "{out}");
    let status: serde_json::Value = serde_json::from_str(&ok(
        &e,
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    ))
    .expect("status json");
    assert_eq!(status["revision"].as_i64(), Some(last), "{status}");
    assert!(status["totalKey"].as_i64().unwrap_or(0) > 10, "{status}");

    let etcd = Etcd::restore_in(base.path(), &file);
    let u = &etcd.url;
    // Every key with its revision fields, as cairn serves them.
    let want = kvs(&e, &["", "--prefix"]);
    assert_eq!(want.len(), 7, "{want:?}");
    assert_eq!(kvs(u, &["", "--prefix"]), want);
    // The history cairn kept: the compaction point and after.
    for rev in [kept, history, last] {
        let r = rev.to_string();
        assert_eq!(
            kvs(u, &["", "--prefix", "--rev", &r]),
            kvs(&e, &["", "--prefix", "--rev", &r]),
            "at revision {rev}"
        );
    }
    let before = (kept - 1).to_string();
    let out = common::etcdctl(u, &["get", "a/1", "--rev", &before], None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"),
        "{out:?}"
    );
    // The lease, holding its keys.
    let ttl = ok(u, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("l/1") && ttl.contains("l/2"), "{ttl}");
    assert!(ok(u, &["lease", "list"]).contains(&lease));
    // Users and roles.
    assert!(ok(u, &["user", "list"]).contains("alice"));
    let role = ok(u, &["role", "get", "reader"]);
    assert!(role.contains("[a/, a0)"), "{role}");
    // etcd goes on from there: its next revision is past cairn's last.
    assert!(put(u, &["after", "restore"]) > last);
}

#[test]
fn a_snapshot_of_one_shard_restores_into_etcd() {
    saved_by_cairn_started_by_etcd(1);
}

#[test]
fn a_snapshot_of_two_shards_restores_into_etcd() {
    saved_by_cairn_started_by_etcd(2);
}

/// A damaged copy is refused by etcd's own restore.
#[test]
fn a_damaged_snapshot_is_refused_by_etcdctl() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 2);
    let e = c.endpoint();
    for i in 0..50 {
        put(&e, &[&format!("k{i}"), "v"]);
    }
    let file = base.path().join("cairn.db");
    ok(&e, &["snapshot", "save", file.to_str().unwrap()]);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5000] ^= 1;
    let bad = base.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(base.path().join("restored"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256"),
        "{out:?}"
    );
}
