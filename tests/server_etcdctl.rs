//! The real `cairn` binary driven by the real `etcdctl` (Debian's
//! etcd-client 3.4): the quick start of every etcd tutorial, on one shard and
//! on two, and data surviving SIGTERM and SIGKILL restarts.

mod common;

use common::{ok, Cairn};

fn quick_start(shards: usize) {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), shards);
    let e = c.endpoint();
    assert_eq!(ok(&e, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&e, &["get", "foo"]), "foo\nbar\n");
    for (k, v) in [("/a", "1"), ("/b", "2"), ("/c", "3")] {
        assert_eq!(ok(&e, &["put", k, v]), "OK\n");
    }
    assert_eq!(
        ok(&e, &["get", "/", "--prefix", "--keys-only"]),
        "/a\n\n/b\n\n/c\n\n"
    );
    assert_eq!(
        ok(&e, &["get", "/", "--prefix", "--limit", "2"]),
        "/a\n1\n/b\n2\n"
    );
    // A txn on one key: compare, then put.
    let out = common::etcdctl(
        &e,
        &["txn"],
        Some("value(\"foo\") = \"bar\"\n\nput foo baz\n\nput foo nope\n\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(ok(&e, &["get", "foo", "--print-value-only"]), "baz\n");
    assert_eq!(ok(&e, &["del", "foo"]), "1\n");
    assert_eq!(ok(&e, &["get", "foo"]), "");
    assert_eq!(ok(&e, &["del", "foo"]), "0\n", "deleting nothing");
    // Revisions: foo(2), /a(3), /b(4), /c(5), txn(6), del(7); the empty delete took none.
    let status: serde_json::Value =
        serde_json::from_str(&ok(&e, &["get", "/a", "-w", "json"])).unwrap();
    assert_eq!(status["header"]["revision"], 7);
    assert_eq!(status["kvs"][0]["mod_revision"], 3);
    // History and compaction.
    assert_eq!(
        ok(&e, &["get", "foo", "--rev", "2", "--print-value-only"]),
        "bar\n"
    );
    assert_eq!(ok(&e, &["compaction", "5"]), "compacted revision 5\n");
    let out = common::etcdctl(&e, &["get", "foo", "--rev", "2"], None);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision has been compacted"));
    let out = common::etcdctl(&e, &["get", "foo", "--rev", "99"], None);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision is a future revision"));
    // Status and members.
    let st: serde_json::Value =
        serde_json::from_str(&ok(&e, &["endpoint", "status", "-w", "json"])).unwrap();
    let s = &st[0]["Status"];
    assert_eq!(s["leader"], s["header"]["member_id"], "the member leads");
    assert_eq!(s["version"], "3.4.0");
    let members = ok(&e, &["member", "list"]);
    assert!(members.contains("started, default"), "{members}");
}

#[test]
fn etcdctl_quick_start_on_one_shard() {
    quick_start(1);
}

#[test]
fn etcdctl_quick_start_on_two_shards() {
    quick_start(2);
}

#[test]
fn data_survives_sigterm_and_sigkill() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    let e = c.endpoint();
    for i in 0..20 {
        ok(&e, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    c.stop();
    c.restart();
    let e = c.endpoint();
    let all: serde_json::Value =
        serde_json::from_str(&ok(&e, &["get", "k", "--prefix", "-w", "json"])).unwrap();
    assert_eq!(all["count"], 20);
    assert_eq!(all["header"]["revision"], 21);
    ok(&e, &["put", "after", "kill"]);
    c.crash();
    c.restart();
    let e = c.endpoint();
    assert_eq!(ok(&e, &["get", "after", "--print-value-only"]), "kill\n");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&e, &["put", "next", "x", "-w", "json"])).unwrap();
    assert_eq!(
        j["header"]["revision"], 23,
        "revisions continue after a crash"
    );
}

#[test]
fn a_data_dir_keeps_its_shard_count() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    c.stop();
    let err = common::cairn_refuses(&c.dir, &["--shards", "3"]);
    assert!(
        err.contains("--shards") && err.contains("created with 2 shards"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_the_member_even_with_an_idle_client_connected() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 1);
    // A client that made a request and then went quiet: its runtime is never
    // driven again, so it never answers the server's goodbye.
    let rt = common::rt();
    let _idle = rt.block_on(async {
        let mut kv = cairn_proto::etcdserverpb::kv_client::KvClient::connect(c.url())
            .await
            .unwrap();
        kv.put(cairn_proto::etcdserverpb::PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
        kv
    });
    // Drain is bounded at 5 s; give it generous room on a loaded machine.
    assert!(
        c.stop_within(std::time::Duration::from_secs(30)),
        "the member did not stop"
    );
}

#[test]
fn unsafe_no_fsync_serves_and_warns_loudly() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(base.path().join("nofsync"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--unsafe-no-fsync",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_serving(
        &format!("http://127.0.0.1:{port}"),
        std::time::Duration::from_secs(60),
        || {},
    );
    let e = format!("127.0.0.1:{port}");
    assert_eq!(ok(&e, &["put", "k", "v"]), "OK\n");
    assert_eq!(ok(&e, &["get", "k", "--print-value-only"]), "v\n");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARNING: --unsafe-no-fsync") && err.contains("WILL BE LOST"),
        "{err}"
    );
}

#[test]
fn hashkv_follows_the_state_at_a_revision() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    let e = c.endpoint();
    let hash = |e: &str, rev: &str| -> u64 {
        let j: serde_json::Value =
            serde_json::from_str(&ok(e, &["endpoint", "hashkv", "--rev", rev, "-w", "json"]))
                .unwrap();
        j[0]["HashKV"]["hash"].as_u64().unwrap()
    };
    for k in ["a", "b", "c"] {
        ok(&e, &["put", k, "1"]);
    }
    let at4 = hash(&e, "4");
    assert_eq!(hash(&e, "0"), at4, "revision 0 means the current one");
    ok(&e, &["put", "a", "2"]);
    assert_ne!(hash(&e, "0"), at4, "a put changes the current hash");
    assert_eq!(
        hash(&e, "4"),
        at4,
        "the hash at an old revision does not change"
    );
    c.crash();
    c.restart();
    let e = c.endpoint();
    assert_eq!(hash(&e, "4"), at4, "recovered to the same state");
}

/// The membership lives in the meta group on shard 0: a restart with another
/// advertised client URL records it there, and `member list` shows it.
#[test]
fn member_list_comes_from_the_meta_group_and_follows_restarts() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start_with(
        base.path(),
        2,
        &[
            "--name",
            "m1",
            "--advertise-client-urls",
            "http://127.0.0.1:1111",
        ],
    );
    let list = ok(&c.endpoint(), &["member", "list"]);
    assert!(
        list.contains("started, m1,") && list.contains("http://127.0.0.1:1111"),
        "{list}"
    );
    c.stop();
    c.extra = [
        "--name",
        "m1",
        "--advertise-client-urls",
        "http://127.0.0.1:2222",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.restart();
    let list = ok(&c.endpoint(), &["member", "list"]);
    assert!(list.contains("http://127.0.0.1:2222"), "{list}");
    assert!(
        !list.contains("1111"),
        "the old record was replaced: {list}"
    );
    assert_eq!(list.lines().count(), 1, "one member: {list}");
    assert!(
        !c.dir.join("shard-1/meta").exists(),
        "the meta group lives on shard 0 only"
    );
    // It snapshots whenever shard 0's data group does (here: a defrag
    // snapshots every shard), so its log never pins shard 0's WAL segments
    // (see server_snapshot.rs for the reclaim).
    ok(&c.endpoint(), &["defrag"]);
    let snap = c.dir.join("shard-0/meta/current.snap");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !snap.exists() {
        assert!(std::time::Instant::now() < deadline, "no meta snapshot");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
