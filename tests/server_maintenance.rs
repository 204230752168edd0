//! Maintenance with the real etcdctl: the space quota and the NOSPACE alarm
//! (refused puts, working reads and deletes, kept across a restart, disarmed
//! after compaction), `endpoint status` db size, `snapshot save` (read back
//! and checked against the keys), `defrag` (a fresh snapshot per shard), and
//! shard placement under a CPU mask (`taskset`).

mod common;

use common::{etcdctl, ok, Cairn};

fn status(e: &str) -> serde_json::Value {
    let st: serde_json::Value =
        serde_json::from_str(&ok(e, &["endpoint", "status", "-w", "json"])).unwrap();
    st[0]["Status"].clone()
}

#[test]
fn the_quota_raises_nospace_which_refuses_puts_until_disarmed() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start_with(base.path(), 2, &["--quota-backend-bytes", "40000"]);
    let e = c.endpoint();
    let value = "v".repeat(1000);
    let mut refused = None;
    for i in 0..100 {
        let out = etcdctl(&e, &["put", &format!("k{i:03}"), &value], None);
        if !out.status.success() {
            refused = Some((i, String::from_utf8_lossy(&out.stderr).to_string()));
            break;
        }
    }
    let (n, err) = refused.expect("the quota never refused a put");
    assert!(n > 10, "refused too early: after {n} puts");
    assert!(
        err.contains("etcdserver: mvcc: database space exceeded"),
        "{err}"
    );
    // Reads and deletes still work; puts and txns with puts do not.
    assert_eq!(
        ok(&e, &["get", "k000", "--print-value-only"]),
        format!("{value}\n")
    );
    assert_eq!(ok(&e, &["del", "k001"]), "1\n");
    let out = etcdctl(&e, &["put", "small", "x"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("database space exceeded"));
    let txn = etcdctl(&e, &["txn"], Some("\nput small x\n\n\n"));
    assert!(String::from_utf8_lossy(&txn.stderr).contains("database space exceeded"));
    // As etcd: a txn without puts is refused too while the store is at the quota.
    let txn = etcdctl(&e, &["txn"], Some("\ndel k002\n\n\n"));
    assert!(String::from_utf8_lossy(&txn.stderr).contains("database space exceeded"));
    assert_eq!(
        ok(&e, &["get", "k002", "--print-value-only"]),
        format!("{value}\n")
    );
    // As etcd's: the quota is checked before a grant's TTL.
    let grant = etcdctl(&e, &["lease", "grant", "9000000001"], None);
    assert!(
        String::from_utf8_lossy(&grant.stderr).contains("database space exceeded"),
        "{}",
        String::from_utf8_lossy(&grant.stderr)
    );
    assert!(ok(&e, &["alarm", "list"]).contains("alarm:NOSPACE"));
    let st = status(&e);
    assert!(st["dbSize"].as_i64().unwrap() > 30_000, "{st}");
    assert!(
        st["errors"][0].as_str().unwrap().contains("alarm:NOSPACE"),
        "{st}"
    );
    // The alarm is kept across a restart.
    c.stop();
    c.restart();
    let e = c.endpoint();
    assert!(ok(&e, &["alarm", "list"]).contains("alarm:NOSPACE"));
    // Free space: delete, compact, disarm; puts work again.
    ok(&e, &["del", "k", "--prefix"]);
    let rev = status(&e)["header"]["revision"].as_i64().unwrap();
    ok(&e, &["compaction", &rev.to_string()]);
    assert!(
        status(&e)["dbSize"].as_i64().unwrap_or(0) < 5_000,
        "compaction frees the space"
    );
    let out = etcdctl(&e, &["put", "small", "x"], None);
    assert!(
        !out.status.success(),
        "still refused while the alarm is raised"
    );
    assert!(ok(&e, &["alarm", "disarm"]).contains("alarm:NOSPACE"));
    assert_eq!(ok(&e, &["alarm", "list"]), "");
    assert_eq!(ok(&e, &["put", "small", "x"]), "OK\n");
}

#[test]
fn snapshot_save_streams_every_key_at_one_revision() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 3);
    let e = c.endpoint();
    for i in 0..300 {
        ok(&e, &["put", &format!("key/{i:03}"), &format!("value-{i}")]);
    }
    ok(&e, &["put", "key/000", "changed"]);
    let file = base.path().join("snap.db");
    let out = ok(&e, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved"), "{out}");
    // etcd 3.4's file: every version of every key by revision.
    use cairn_snapshot::{Item, ReadOptions, Snapshot};
    let snap = Snapshot::open_file(&file, &ReadOptions::default()).unwrap();
    assert_eq!(
        snap.status().unwrap().revision,
        302,
        "301 puts after revision 1"
    );
    let mut latest = std::collections::BTreeMap::new();
    let mut revisions = Vec::new();
    for item in snap.items().unwrap() {
        if let Item::Put { revision, kv } = item.unwrap() {
            revisions.push(revision.main);
            latest.insert(kv.key.clone(), kv);
        }
    }
    assert_eq!(revisions.len(), 301, "every version");
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "by revision");
    assert_eq!(latest.len(), 300);
    let first = &latest[&b"key/000".to_vec()];
    assert_eq!(
        (first.value.as_slice(), first.version),
        (&b"changed"[..], 2)
    );
    assert_eq!(latest[&b"key/299".to_vec()].value, b"value-299");
    // A damaged copy is refused.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 1;
    let bad = base.path().join("bad.db");
    std::fs::write(&bad, &bytes).unwrap();
    let err = Snapshot::open_file(&bad, &ReadOptions::default())
        .err()
        .expect("a damaged copy is refused");
    assert!(err.to_string().contains("hash mismatch"), "{err}");
}

#[test]
fn defrag_writes_a_fresh_snapshot_on_every_shard() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    let e = c.endpoint();
    for i in 0..50 {
        ok(&e, &["put", &format!("d{i}"), "x"]);
    }
    for shard in 0..2 {
        assert!(!c
            .dir
            .join(format!("shard-{shard}/snapshots/current.snap"))
            .exists());
    }
    let out = ok(&e, &["defrag"]);
    assert!(out.contains("Finished defragmenting"), "{out}");
    for shard in 0..2 {
        assert!(
            c.dir
                .join(format!("shard-{shard}/snapshots/current.snap"))
                .exists(),
            "shard {shard} kept a snapshot"
        );
    }
    c.crash();
    c.restart();
    let got: serde_json::Value =
        serde_json::from_str(&ok(&c.endpoint(), &["get", "d", "--prefix", "-w", "json"])).unwrap();
    assert_eq!(got["count"], 50, "the data survives from the snapshots");
}

#[test]
fn periodic_auto_compaction_compacts_what_is_older_than_the_retention() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start_with(
        base.path(),
        2,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    let e = c.endpoint();
    for i in 0..10 {
        ok(&e, &["put", &format!("a{i}"), "x"]);
    }
    // Compaction runs every second at the revision of a second ago; wait
    // (bounded) until revision 2 is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = etcdctl(&e, &["get", "a0", "--rev", "2"], None);
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("required revision has been compacted") {
            break;
        }
        assert!(out.status.success(), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "no auto-compaction within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The newest revision is never compacted away.
    assert_eq!(ok(&e, &["get", "a9", "--print-value-only"]), "x\n");
}

#[test]
fn bad_auto_compaction_flags_are_refused() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let err = common::cairn_refuses(
        &base.path().join("m"),
        &[
            "--auto-compaction-mode",
            "hourly",
            "--auto-compaction-retention",
            "1",
        ],
    );
    assert!(err.contains("--auto-compaction-mode"), "{err}");
    let err = common::cairn_refuses(
        &base.path().join("m"),
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ],
    );
    assert!(err.contains("--auto-compaction-retention"), "{err}");
}

#[test]
fn shards_default_to_and_stay_on_the_cpus_cairn_may_use() {
    use std::os::unix::process::CommandExt;
    // As `taskset -c <cpu> cairn`: one CPU allowed, no --shards flag.
    let cpu = *cairn::server::allowed_cpus().last().expect("some CPU");
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = base.path().join("m");
    let port = common::free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.arg("--data-dir")
        .arg(&dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null());
    // SAFETY: pre_exec runs in the forked child before exec; it only calls
    // sched_setaffinity on a set built beforehand.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    common::wait_serving(
        &format!("http://127.0.0.1:{port}"),
        std::time::Duration::from_secs(60),
        || assert!(child.try_wait().unwrap().is_none(), "cairn exited"),
    );
    let meta = std::fs::read_to_string(dir.join("cairn.meta")).unwrap();
    let mut shard_threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.starts_with("shard-") {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_string();
            shard_threads.push((comm.trim().to_string(), allowed));
        }
    }
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(meta.contains("shards=1\n"), "{meta}");
    // glommio's helper threads carry the executor's name too.
    assert!(!shard_threads.is_empty());
    assert!(
        shard_threads.iter().all(|(_, on)| *on == cpu.to_string()),
        "{shard_threads:?} not all on CPU {cpu}"
    );
}

/// Defragment answers as etcd 3.4's does: an empty response, no header
/// (client libraries check `header` is absent).
#[test]
fn defragment_answers_without_a_header_as_etcd() {
    use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use cairn_proto::etcdserverpb::DefragmentRequest;
    let tmp = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(tmp.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    for url in [cairn.url(), etcd.url.clone()] {
        let r = rt.block_on(async {
            MaintenanceClient::new(common::channel(&url).await)
                .defragment(DefragmentRequest {})
                .await
                .expect("defragment")
                .into_inner()
        });
        assert_eq!(r.header, None, "{url}");
    }
}
