//! Snapshots: with `--snapshot-count`, a shard writes a checksummed snapshot,
//! the log behind it is purged and the WAL reclaims its segments; a restart
//! recovers from snapshot + log; a damaged snapshot refuses the start.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
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
            let put = PutRequest {
                key: format!("k{i:05}").into_bytes(),
                value: vec![b'v'; 1000],
                ..Default::default()
            };
            rev = kv
                .put(put)
                .await
                .unwrap()
                .into_inner()
                .header
                .unwrap()
                .revision;
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
    c.crash();
    c.restart();
    rt.block_on(async {
        let mut kv = KvClient::connect(c.url()).await.unwrap();
        let all = kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
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
