//! A member whose log fails stops, as etcd does on a WAL failure: writes get
//! etcd's error, `/health` says false with the reason while it stops, and the
//! process exits non-zero naming the failure, so a supervisor restarts it.
//! Everything acknowledged before the failure is there after the restart.
//! A full disk found while the WAL prepares its next segment ahead of need
//! is not a failure: writes are refused with a clear error until there is
//! room, then resume. The failures are injected with the WAL's failpoints
//! (the test build has the `failpoints` feature).

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::{free_port, rt, wait_serving};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A test's places: a temp dir (kept while the first value lives), the
/// member's data dir and stderr log in it, a client port and its URL.
fn scene() -> (tempfile::TempDir, PathBuf, PathBuf, u16, String) {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let (dir, log) = (base.path().join("member"), base.path().join("stderr"));
    let port = free_port();
    (base, dir, log, port, format!("http://127.0.0.1:{port}"))
}

/// SIGKILL by PID, and reap it.
fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// How many keys there are in [`from`, `to`).
async fn count_keys(kv: &mut KvClient<tonic::transport::Channel>, from: &[u8], to: &[u8]) -> i64 {
    kv.range(RangeRequest {
        key: from.to_vec(),
        range_end: to.to_vec(),
        count_only: true,
        ..Default::default()
    })
    .await
    .expect("range")
    .into_inner()
    .count
}

/// Starts a member whose stderr goes to `log`.
fn start(dir: &Path, port: u16, log: &Path, extra: &[&str]) -> Child {
    start_with_failpoints(dir, port, log, extra, "")
}

/// Starts a member with `failpoints` set from the start (FAILPOINTS syntax).
fn start_with_failpoints(
    dir: &Path,
    port: u16,
    log: &Path,
    extra: &[&str],
    failpoints: &str,
) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("FAILPOINTS", failpoints)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
        .args(["--shards", "2"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("starting cairn");
    wait_serving(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(60),
        || {
            if let Some(status) = child.try_wait().ok().flatten() {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                panic!("cairn exited while starting: {status}; it said:\n{said}");
            }
        },
    );
    child
}

/// An HTTP/1.1 request with a body; None if the member no longer answers.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the member did not exit within {limit:?} after its log failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts `n` keys `k{i}` one at a time; returns how many were acknowledged
/// before the first error.
async fn put_keys(kv: &mut KvClient<tonic::transport::Channel>, from: usize, n: usize) -> usize {
    for i in from..from + n {
        let put = kv.put(PutRequest {
            key: format!("k{i:04}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        });
        match tokio::time::timeout(Duration::from_secs(20), put).await {
            Ok(Ok(_)) => {}
            _ => return i - from,
        }
    }
    n
}

fn log_failure_stops_the_member(failpoint: &str, extra: &[&str]) {
    let (_base, dir, log, port, url) = scene();
    let mut child = start(&dir, port, &log, extra);
    let rt = rt();
    let mut kv = rt.block_on(async { KvClient::new(common::channel(&url).await) });
    assert_eq!(rt.block_on(put_keys(&mut kv, 0, 40)), 40);

    let (code, _) = http(port, "PUT", &format!("/failpoints/{failpoint}"), "return")
        .expect("the member answers");
    assert_eq!(code, 200, "setting {failpoint}");
    // Writes fail from now on: none of them may be acknowledged.
    let acked = rt.block_on(put_keys(&mut kv, 40, 20));
    assert_eq!(acked, 0, "a write was acknowledged after its log failed");
    // While it stops, health says so (or the member is gone already): the
    // latch may come a moment after the failed write's answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some((code, body)) = http(port, "GET", "/health", "") {
        if code == 503 && body.contains("\"health\":\"false\"") && body.contains("WAL") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health does not name the failed log: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(
        !status.success(),
        "exit status after a log failure: {status}"
    );
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(
        stderr.contains("stopping after a fatal error") && stderr.contains("Input/output error"),
        "the member says why it stopped:\n{stderr}"
    );

    // Restarted without the failpoint: every acknowledged write is there and
    // writes resume.
    let child = start(&dir, port, &log, extra);
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        let r = kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let keys: Vec<String> = r
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        for i in 0..40 {
            assert!(
                keys.contains(&format!("k{i:04}")),
                "acknowledged k{i:04} lost"
            );
        }
        assert_eq!(put_keys(&mut kv, 100, 5).await, 5, "writes resume");
    });
    kill(child);
}

#[test]
fn a_failed_wal_write_stops_the_member() {
    log_failure_stops_the_member("wal::write", &[]);
}

#[test]
fn a_failed_fsync_stops_the_member() {
    // With O_DSYNC (the default) the sync is part of the write; `ring`
    // syncs separately.
    log_failure_stops_the_member("wal::sync", &["--wal-io", "ring"]);
}

#[test]
fn no_room_for_the_next_segment_refuses_writes_until_there_is() {
    let (_base, dir, log, port, url) = scene();
    let mut child = start(&dir, port, &log, &["--wal-segment-bytes", "1048576"]);
    // Every new segment file now fails with ENOSPC.
    let (code, _) = http(port, "PUT", "/failpoints/wal::create", "return").expect("answers");
    assert_eq!(code, 200);
    let rt = rt();
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        let value = vec![b'x'; 1024];
        let mut acked = Vec::new();
        let refused = loop {
            let key = format!("k{:05}", acked.len());
            let put = kv.put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone(),
                ..Default::default()
            });
            match put.await {
                Ok(_) => acked.push(key),
                Err(status) => break status,
            }
            assert!(acked.len() < 20_000, "the WAL never needed a new segment");
        };
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(refused.message().contains("no space"), "{refused:?}");
        let (code, body) = http(port, "GET", "/health", "").expect("still serving");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("no space"), "{body}");
        // Reads go on.
        let got = kv
            .range(RangeRequest {
                key: acked[0].clone().into_bytes(),
                ..Default::default()
            })
            .await
            .expect("a read while the disk is full");
        assert_eq!(got.into_inner().kvs.len(), 1);
        // Room again: writes resume (after the next upkeep round).
        let (code, _) = http(port, "DELETE", "/failpoints/wal::create", "").expect("answers");
        assert_eq!(code, 204);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let put = kv.put(PutRequest {
                key: b"after".to_vec(),
                value: b"room".to_vec(),
                ..Default::default()
            });
            if put.await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "writes did not resume");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every shard's upkeep finds room again.
        loop {
            let (code, body) = http(port, "GET", "/health", "").expect("serving");
            if code == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "still unhealthy: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let count = count_keys(&mut kv, b"k", b"l").await;
        assert_eq!(count, acked.len() as i64, "every acknowledged key is there");
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the member kept running"
    );
    kill(child);
}

/// A member restarted after a SIGKILL with a committed index it never saved
/// (a failpoint skips saving it) and slow log writes and applies replays its
/// whole log before it stamps: the next write gets the revision after the
/// last one written, and every key is there.
#[test]
fn a_restart_replays_the_whole_log_before_stamping() {
    let (_base, dir, log, port, url) = scene();
    let mut child = start_with_failpoints(&dir, port, &log, &[], "raft::save_committed=return");
    let rt = rt();
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        assert_eq!(put_keys(&mut kv, 0, 60).await, 60);
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut child = start_with_failpoints(
        &dir,
        port,
        &log,
        &[],
        "raft::save_committed=return;wal::write=sleep(300);raft::apply=sleep(20)",
    );
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        let put = kv
            .put(PutRequest {
                key: b"after".to_vec(),
                value: b"restart".to_vec(),
                ..Default::default()
            })
            .await
            .expect("a write after the restart");
        let revision = put.into_inner().header.expect("header").revision;
        assert_eq!(
            revision, 62,
            "above the 60 puts replayed (revisions 2..=61)"
        );
        let count = count_keys(&mut kv, b"k", b"l").await;
        assert_eq!(count, 60);
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the member kept running"
    );
    kill(child);
}

/// Keys `prefix{i}` that live on `shard` of 2.
fn keys_on(shard: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| cairn::shard::route::shard_of(k.as_bytes(), 2) == shard)
        .take(n)
        .collect()
}

/// A cross-shard write whose part on shard 0 fails (shard 0's WAL write
/// fails) while shard 1 logs its part and then the writes queued behind it:
/// the member stops; after the restart shard 1 applies those writes only
/// once the incomplete part is dropped, so the member must stamp above them,
/// not above the part (found by the correctness harness: "revision N applied
/// after M" on the first write after such a restart).
#[test]
fn a_restart_stamps_above_writes_behind_an_incomplete_part() {
    let (_base, dir, log, port, url) = scene();
    let mut child = start(&dir, port, &log, &[]);
    let (on0, on1) = (keys_on(0, "x", 1), keys_on(1, "y", 64));
    let rt = rt();
    rt.block_on(async {
        let ch = common::channel(&url).await;
        let mut kv = KvClient::new(ch.clone());
        common::put(&mut kv, on0[0].clone(), "before").await;
        // Writers keep shard 1 busy, so that writes are queued behind the
        // txn's latch when its failed part lets go.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = on1
            .chunks(4)
            .map(|keys| {
                let (mut kv, keys, done) = (kv.clone(), keys.to_vec(), done.clone());
                tokio::spawn(async move {
                    for i in 0..2000 {
                        let put = kv.put(PutRequest {
                            key: keys[i % keys.len()].clone().into_bytes(),
                            value: b"behind".to_vec(),
                            ..Default::default()
                        });
                        match tokio::time::timeout(Duration::from_secs(30), put).await {
                            Ok(Ok(_)) => done.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            _ => return,
                        };
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.load(std::sync::atomic::Ordering::Relaxed) < 100 {
            assert!(Instant::now() < deadline, "the writers made no progress");
            tokio::task::yield_now().await;
        }
        let (code, _) =
            http(port, "PUT", "/failpoints/wal::write", "return(shard-0/)").expect("answers");
        assert_eq!(code, 200);
        // The cross-shard txn latches both shards; its part on shard 0 fails.
        use cairn_proto::etcdserverpb::request_op::Request;
        use cairn_proto::etcdserverpb::{RequestOp, TxnRequest};
        let put = |k: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.as_bytes().to_vec(),
                value: b"txn".to_vec(),
                ..Default::default()
            })),
        };
        let txn = kv.txn(TxnRequest {
            success: vec![put(&on0[0]), put(&on1[0])],
            ..Default::default()
        });
        assert!(txn.await.is_err(), "the txn cannot commit");
        for w in writers {
            let _ = w.await;
        }
    });
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(!status.success(), "{status}");

    let mut child = start(&dir, port, &log, &[]);
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        for k in on1.iter().take(8).chain(&on0) {
            let put = kv.put(PutRequest {
                key: k.clone().into_bytes(),
                value: b"after".to_vec(),
                ..Default::default()
            });
            tokio::time::timeout(Duration::from_secs(20), put)
                .await
                .expect("answered")
                .expect("a write after the restart");
        }
    });
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the member stopped after the restart:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    kill(child);
}

/// A snapshot that cannot be written (Defragment takes one on every shard)
/// stops the member the same way; nothing acknowledged is lost.
#[test]
fn a_failed_snapshot_write_stops_the_member() {
    use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use cairn_proto::etcdserverpb::DefragmentRequest;
    let (_base, dir, log, port, url) = scene();
    let mut child = start(&dir, port, &log, &[]);
    let rt = rt();
    rt.block_on(async {
        let ch = common::channel(&url).await;
        assert_eq!(put_keys(&mut KvClient::new(ch.clone()), 0, 40).await, 40);
        let (code, _) =
            http(port, "PUT", "/failpoints/snapshot::write", "return").expect("answers");
        assert_eq!(code, 200);
        let mut maintenance = MaintenanceClient::new(ch);
        let defrag = maintenance.defragment(DefragmentRequest {});
        let answer = tokio::time::timeout(Duration::from_secs(30), defrag).await;
        assert!(
            !matches!(answer, Ok(Ok(_))),
            "the snapshot cannot be written"
        );
    });
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(
        stderr.contains("stopping after a fatal error") && stderr.contains("Input/output error"),
        "the member says why it stopped:\n{stderr}"
    );
    let child = start(&dir, port, &log, &[]);
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        let count = count_keys(&mut kv, b"k", b"l").await;
        assert_eq!(count, 40, "every acknowledged key is there");
    });
    kill(child);
}

/// A member restarted on a full disk starts (it writes nothing new to start),
/// serves reads, refuses writes for want of room, and takes them once there
/// is room. Before, every start wrote a probe file and a full disk kept the
/// member from starting (found by the harness's soak: a disk-full spell whose
/// freed space a power cut took back). Needs root (a loop-mounted ext4).
#[test]
fn a_member_starts_on_a_full_disk() {
    use cairn_tools::harness::members::LoopDisk;
    let (base, _, log, port, url) = scene();
    let disk = LoopDisk::create(base.path(), 64).expect("a loop-mounted ext4 (run as root)");
    let dir = disk.mount.join("member");
    let extra = ["--wal-segment-bytes", "1048576"];
    let child = start(&dir, port, &log, &extra);
    let rt = rt();
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        assert_eq!(put_keys(&mut kv, 0, 40).await, 40);
    });
    kill(child);
    disk.fill(0).expect("fill the disk");
    let child = start(&dir, port, &log, &extra);
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        assert_eq!(
            count_keys(&mut kv, b"k", b"l").await,
            40,
            "reads on a full disk"
        );
        disk.unfill().expect("room again");
        let deadline = Instant::now() + Duration::from_secs(30);
        while put_keys(&mut kv, 100, 1).await != 1 {
            assert!(Instant::now() < deadline, "writes did not resume");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    kill(child);
}

/// A cross-shard write whose part is inside one shard's snapshot (that shard
/// snapshotted past it and purged its log) while the other shard still has
/// its part in its log must be applied whole after a restart. Found by the
/// 30-minute soak: acknowledged list appends (txns over keys of both
/// shards) were gone after a SIGKILL; the replay took the snapshotted shard
/// for one that went past the part without holding it, and dropped the
/// other half.
#[test]
fn a_part_inside_a_snapshot_is_kept_after_a_restart() {
    use cairn_proto::etcdserverpb::request_op::Request;
    use cairn_proto::etcdserverpb::{RequestOp, TxnRequest};
    let (_base, dir, log, port, url) = scene();
    let extra = ["--snapshot-count", "20"];
    let child = start(&dir, port, &log, &extra);
    let (on0, on1) = (keys_on(0, "p", 40), keys_on(1, "q", 1));
    let rt = rt();
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        let put = |k: &str| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.as_bytes().to_vec(),
                value: b"both".to_vec(),
                ..Default::default()
            })),
        };
        kv.txn(TxnRequest {
            success: vec![put(&on0[0]), put(&on1[0])],
            ..Default::default()
        })
        .await
        .expect("the cross-shard txn");
        // Shard 0 alone goes on writing: it snapshots (and purges) past the
        // txn's revision; shard 1 does not.
        for k in &on0[1..] {
            common::put(&mut kv, k.clone(), "later").await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir
        .join("shard-0/snapshots")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        assert!(Instant::now() < deadline, "shard 0 never snapshotted");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(child);
    let child = start(&dir, port, &log, &extra);
    rt.block_on(async {
        let mut kv = KvClient::new(common::channel(&url).await);
        for k in [&on0[0], &on1[0]] {
            let got = kv
                .range(RangeRequest {
                    key: k.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await
                .expect("range")
                .into_inner();
            assert_eq!(got.kvs.len(), 1, "{k} of the acknowledged txn is gone");
        }
    });
    kill(child);
}
