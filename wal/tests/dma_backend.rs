//! The glommio DMA backend (O_DIRECT, through io_uring or blocking syscalls)
//! on a real directory: concurrent appenders, rotation, reclaim, reopen, read
//! back.
#![cfg(feature = "dma")]

mod common;

use cairn_wal::storage::{DmaStorage, WalIo};
use cairn_wal::{Config, Wal};
use common::payload;
use glommio::{LocalExecutorBuilder, Placement};
use std::rc::Rc;

#[test]
fn dma_wal_round_trips_with_concurrent_writers() {
    round_trip(WalIo::Ring);
}

#[test]
fn dma_wal_with_blocking_io_round_trips_with_concurrent_writers() {
    round_trip(WalIo::Blocking);
}

#[test]
fn dma_wal_with_dsync_io_round_trips_with_concurrent_writers() {
    round_trip(WalIo::Dsync);
}

/// In `dsync` mode `sync` does nothing, so every segment it opens must carry
/// O_DSYNC (else nothing would ever be durable); the other modes must not.
#[test]
fn dsync_mode_opens_segments_with_o_dsync() {
    use cairn_wal::storage::Storage;
    use std::os::fd::AsRawFd;
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().to_path_buf();
    let flags = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut flags = Vec::new();
            for io in [WalIo::Ring, WalIo::Dsync, WalIo::Blocking] {
                let s = DmaStorage::new(&path).unwrap().io(io);
                s.create_zeroed("seg", 64 * 1024).await.unwrap();
                let f = s.open("seg").await.unwrap();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
                    .unwrap();
                let octal = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .unwrap()
                    .trim()
                    .to_string();
                flags.push(i64::from_str_radix(&octal, 8).unwrap());
            }
            flags
        })
        .unwrap()
        .join()
        .unwrap();
    let dsync = libc::O_DSYNC as i64;
    assert_eq!(
        flags.iter().map(|f| f & dsync != 0).collect::<Vec<_>>(),
        [false, true, false]
    );
}

fn round_trip(io: WalIo) {
    // Under the target dir: /tmp may be tmpfs, which has no O_DIRECT.
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().to_path_buf();
    let cfg = Config {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        spare_segments_max: 1,
    };
    let writers = 16u64;
    let per_writer = 200u64;
    let (p1, c1) = (path.clone(), cfg.clone());
    let batches = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (wal, _) = Wal::open(DmaStorage::new(&p1).unwrap().io(io), c1)
                .await
                .unwrap();
            let wal = Rc::new(wal);
            let mut tasks = Vec::new();
            for w in 0..writers {
                let wal = wal.clone();
                tasks.push(glommio::spawn_local(async move {
                    for i in 1..=per_writer {
                        let p = payload(w, i, 1000 + (i as usize % 7) * 500, 0);
                        let lsn = wal.append(w, [(i, p.as_slice())]).await.unwrap();
                        wal.sync(lsn).await.unwrap();
                        if i % 50 == 0 {
                            wal.purge(w, i - 20, b"m").await.unwrap();
                        }
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            wal.sync_all().await.unwrap();
            wal.check_invariants();
            assert!(wal.stats().rotations > 2, "{:?}", wal.stats());
            assert!(wal.stats().segments_reclaimed > 0, "{:?}", wal.stats());
            wal.stats().batches
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        batches * 4 <= writers * per_writer,
        "group commit shares fsyncs ({batches} batches, {io:?})"
    );
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let (wal, _) = Wal::open(DmaStorage::new(&path).unwrap().io(io), cfg)
                .await
                .unwrap();
            for w in 0..writers {
                let got = wal.read(w, ..).await.unwrap();
                assert_eq!(
                    got.first().map(|e| e.0),
                    Some(per_writer - 20 + 1),
                    "writer {w}"
                );
                assert_eq!(got.len() as u64, 20);
                for (i, p) in got {
                    assert_eq!(p, payload(w, i, 1000 + (i as usize % 7) * 500, 0));
                }
                assert_eq!(wal.purged(w), Some((per_writer - 20, b"m".to_vec())));
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
