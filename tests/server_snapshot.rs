//! Snapshots: with `--snapshot-count`, a shard writes a checksummed snapshot,
//! the log behind it is purged and the WAL reclaims its segments; a restart
//! recovers from snapshot + log; a damaged snapshot refuses the start;
//! `--snapshot-count` counts writes, not log entries.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use common::Cairn;
use std::time::{Duration, Instant};

const PUTS: usize = 3000;

fn wal_segments(c: &Cairn) -> usize {
    std::fs::read_dir(c.dir.join("shard-0/wal"))
        .unwrap()
        .filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .to_string();
            n.ends_with(".wal") && !n.starts_with("spare")
        })
        .count()
}

/// SIGKILL, restart, and read `[key, end)` back.
fn crash_restart_and_read(
    c: &mut Cairn,
    rt: &tokio::runtime::Runtime,
    key: &[u8],
    end: &[u8],
) -> RangeResponse {
    c.crash();
    c.restart();
    rt.block_on(async {
        let mut kv = KvClient::connect(c.url()).await.unwrap();
        kv.range(RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    })
}

#[test]
fn snapshots_purge_the_log_and_restarts_recover_from_them() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // 256 KiB segments: ~3 MB of puts span a dozen segments unless reclaimed.
    let flags = ["--snapshot-count", "100", "--wal-segment-bytes", "262144"];
    let mut c = Cairn::start_with(base.path(), 1, &flags);
    let rt = common::rt();
    let last_rev = rt.block_on(async {
        let mut kv = KvClient::connect(c.url()).await.unwrap();
        let mut rev = 0;
        for i in 0..PUTS {
            rev = common::put(&mut kv, format!("k{i:05}"), vec![b'v'; 1000]).await;
        }
        rev
    });
    assert_eq!(last_rev, PUTS as i64 + 1);
    assert!(
        c.dir.join("shard-0/snapshots/current.snap").exists(),
        "a snapshot was written"
    );
    // Reclaim runs in the background after the purge is durable.
    let deadline = Instant::now() + Duration::from_secs(30);
    while wal_segments(&c) > 6 {
        assert!(
            Instant::now() < deadline,
            "WAL still has {} segments",
            wal_segments(&c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = crash_restart_and_read(&mut c, &rt, b"k", b"l");
    rt.block_on(async {
        let mut kv = KvClient::connect(c.url()).await.unwrap();
        assert_eq!(all.count, PUTS as i64, "every key is back");
        assert_eq!(all.kvs[42].mod_revision, 44);
        assert_eq!(all.kvs[PUTS - 1].value, vec![b'v'; 1000]);
        let next = kv
            .put(PutRequest {
                key: b"after".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(next.into_inner().header.unwrap().revision, last_rev + 1);
    });
    // A damaged snapshot: the member refuses to start and names the file.
    c.stop();
    let snap = c.dir.join("shard-0/snapshots/current.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snap, bytes).unwrap();
    let mut args = vec!["--shards", "1"];
    args.extend(flags);
    let err = common::cairn_refuses(&c.dir, &args);
    assert!(
        err.contains("current.snap") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[test]
fn snapshot_count_counts_writes_even_when_entries_carry_several() {
    // 32 clients at once: the shard puts the writes that queue together into
    // one log entry, so there are fewer entries than writes. etcd's
    // --snapshot-count counts writes; so does cairn's.
    const CLIENTS: usize = 32;
    const EACH: usize = 60;
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start_with(base.path(), 1, &["--snapshot-count", "500"]);
    let rt = common::rt();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..CLIENTS {
            let url = c.url();
            tasks.push(tokio::spawn(async move {
                let mut kv = KvClient::connect(url).await.unwrap();
                for i in 0..EACH {
                    kv.put(PutRequest {
                        key: format!("c{t:02}/{i:03}").into_bytes(),
                        value: vec![b'v'; 100],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let snap = c.dir.join("shard-0/snapshots/current.snap");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !snap.exists() {
        assert!(
            Instant::now() < deadline,
            "no snapshot after {} writes with --snapshot-count 500",
            CLIENTS * EACH
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Snapshot + the batched entries after it give back every write.
    let all = crash_restart_and_read(&mut c, &rt, b"c", b"d");
    assert_eq!(all.count, (CLIENTS * EACH) as i64);
    let mut revs: Vec<i64> = all.kvs.iter().map(|kv| kv.mod_revision).collect();
    revs.sort_unstable();
    let want: Vec<i64> = (2..2 + (CLIENTS * EACH) as i64).collect();
    assert_eq!(revs, want, "one revision per write, none lost or repeated");
}
