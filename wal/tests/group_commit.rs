//! Group commit: concurrent appenders share fsyncs; appended entries are
//! readable before they are durable; the queue stays bounded.

mod common;

use cairn_wal::storage::{CrashMode, MemStorage, StdStorage};
use cairn_wal::{Config, Wal};
use common::{assert_matches, payload, small_config, Model, Op};
use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use std::rc::Rc;

#[test]
fn concurrent_appenders_share_fsyncs() {
    concurrent_appenders_share_fsyncs_when(true);
}

/// A backend whose write and sync complete without suspending (the DMA
/// backend's blocking IO): the appenders woken by a flush must still form
/// the next batch, not flush one record each.
#[test]
fn concurrent_appenders_share_fsyncs_when_io_never_suspends() {
    concurrent_appenders_share_fsyncs_when(false);
}

fn concurrent_appenders_share_fsyncs_when(sync_suspends: bool) {
    let storage = MemStorage::new();
    storage.set_yield_on_sync(sync_suspends);
    let (wal, _) = block_on(Wal::open(storage.clone(), Config::default())).unwrap();
    let wal = Rc::new(wal);
    let writers = 64u64;
    let per_writer = 20u64;
    let mut pool = LocalPool::new();
    for w in 0..writers {
        let wal = wal.clone();
        pool.spawner()
            .spawn_local(async move {
                for i in 1..=per_writer {
                    let lsn = wal
                        .append(w, [(i, payload(w, i, 256, 0).as_slice())])
                        .await
                        .unwrap();
                    wal.sync(lsn).await.unwrap();
                    assert!(wal.durable_lsn() >= lsn);
                    wal.check_invariants();
                }
            })
            .unwrap();
    }
    pool.run();
    let total = writers * per_writer;
    let batches = wal.stats().batches;
    assert_eq!(wal.stats().records, total);
    // Each sync round carries every writer that was waiting: about one batch
    // per round of appends, not one per append.
    assert!(
        batches * 8 <= total,
        "{batches} batches for {total} appends"
    );
    assert_eq!(wal.durable_lsn(), total);
}

#[test]
fn each_waiting_appender_alone_gets_one_fsync_each() {
    // The naive baseline, for contrast: one writer, sync after every append.
    let storage = MemStorage::new();
    let (wal, _) = block_on(Wal::open(storage.clone(), Config::default())).unwrap();
    block_on(async {
        for i in 1..=50 {
            let lsn = wal.append(1, [(i, b"x".as_slice())]).await.unwrap();
            wal.sync(lsn).await.unwrap();
        }
    });
    assert_eq!(wal.stats().batches, 50);
}

#[test]
fn appended_is_readable_before_durable() {
    let storage = MemStorage::new();
    let (wal, _) = block_on(Wal::open(storage.clone(), small_config())).unwrap();
    block_on(async {
        let lsn = wal
            .append(5, [(1, b"a".as_slice()), (2, b"bb".as_slice())])
            .await
            .unwrap();
        assert!(wal.durable_lsn() < lsn);
        assert_eq!(
            wal.read(5, ..).await.unwrap(),
            vec![(1, b"a".to_vec()), (2, b"bb".to_vec())]
        );
        assert_eq!(wal.read(5, 2..=2).await.unwrap(), vec![(2, b"bb".to_vec())]);
        wal.sync(lsn).await.unwrap();
        assert_eq!(wal.read(5, 1..2).await.unwrap(), vec![(1, b"a".to_vec())]);
    });
    // Not synced → gone after a power loss; synced → there.
    block_on(wal.append(5, [(3, b"c".as_slice())])).unwrap();
    drop(wal);
    let (wal, _) = block_on(Wal::open(
        storage.crash(CrashMode::DropUnsynced),
        small_config(),
    ))
    .unwrap();
    assert_eq!(wal.entry_range(5), Some((1, 2)));
}

#[test]
fn queue_is_bounded_by_batch_bytes_max() {
    let storage = MemStorage::new();
    let cfg = small_config();
    let (wal, _) = block_on(Wal::open(storage.clone(), cfg.clone())).unwrap();
    // Nobody syncs: appends alone must drive flushes once the queue is full.
    block_on(async {
        for i in 1..=500u64 {
            wal.append(1, [(i, payload(1, i, 700, 0).as_slice())])
                .await
                .unwrap();
            assert!(
                wal.queued_bytes() <= cfg.batch_bytes_max,
                "queued {}",
                wal.queued_bytes()
            );
            wal.check_invariants();
        }
    });
    assert!(wal.stats().batches > 0);
    assert!(wal.durable_lsn() > 0);
}

#[test]
fn errors_for_out_of_order_and_oversized_records_change_nothing() {
    let storage = MemStorage::new();
    let cfg = small_config();
    let (wal, _) = block_on(Wal::open(storage, cfg.clone())).unwrap();
    block_on(async {
        wal.append(1, [(10, b"x".as_slice())]).await.unwrap();
        let e = wal.append(1, [(12, b"y".as_slice())]).await.unwrap_err();
        assert!(
            matches!(
                e,
                cairn_wal::WalError::OutOfOrder {
                    expected: 11,
                    got: 12,
                    ..
                }
            ),
            "{e}"
        );
        let big = vec![0u8; cfg.record_bytes_max() + 1];
        let e = wal.append(1, [(11, big.as_slice())]).await.unwrap_err();
        assert!(
            matches!(e, cairn_wal::WalError::RecordTooLarge { .. }),
            "{e}"
        );
        wal.purge(1, 10, b"p").await.unwrap();
        let e = wal.truncate(1, 10).await.unwrap_err();
        assert!(matches!(e, cairn_wal::WalError::Compacted { .. }), "{e}");
        assert_eq!(wal.last_lsn(), 2, "rejected calls wrote nothing");
        assert!(wal.fatal_error().is_none());
        wal.append(1, [(11, b"z".as_slice())]).await.unwrap();
    });
}

#[test]
fn std_backend_round_trips_through_rotation_and_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let mut history = Vec::new();
    block_on(async {
        let (wal, _) = Wal::open(StdStorage::new(dir.path()).unwrap(), cfg.clone())
            .await
            .unwrap();
        for i in 1..=300u64 {
            let p = payload(9, i, 300, 0);
            let lsn = wal.append(9, [(i, p.as_slice())]).await.unwrap();
            history.push((
                lsn,
                Op::Entry {
                    group: 9,
                    index: i,
                    payload: p,
                },
            ));
            if i % 50 == 0 {
                let lsn = wal.purge(9, i - 10, b"snap").await.unwrap();
                history.push((
                    lsn,
                    Op::Purge {
                        group: 9,
                        index: i - 10,
                        meta: b"snap".to_vec(),
                    },
                ));
            }
        }
        let lsn = wal
            .set_meta(9, cairn_wal::META_VOTE, b"term=3")
            .await
            .unwrap();
        history.push((
            lsn,
            Op::Meta {
                group: 9,
                key: 0,
                value: b"term=3".to_vec(),
            },
        ));
        wal.sync_all().await.unwrap();
        assert!(wal.stats().rotations >= 3);
        assert!(wal.stats().segments_reclaimed >= 2, "{:?}", wal.stats());
    });
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(
        files <= 6,
        "reclaimed segments are recycled or removed ({files} files)"
    );
    block_on(async {
        let (wal, report) = Wal::open(StdStorage::new(dir.path()).unwrap(), cfg.clone())
            .await
            .unwrap();
        assert!(report.records > 0);
        assert_matches(&wal, &Model::replay(&history, u64::MAX), "std reopen").await;
    });
}
