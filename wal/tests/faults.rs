//! Fault injection: a failed fsync, a failed write and a full disk latch a
//! fatal error; nothing that was not synced is reported durable; what was
//! synced before survives.

mod common;

use cairn_wal::storage::{CrashMode, Faults, MemStorage};
use cairn_wal::{Wal, WalError};
use common::{payload, small_config};
use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use std::cell::RefCell;
use std::rc::Rc;

fn append(wal: &Wal<MemStorage>, group: u64, index: u64) -> Result<u64, WalError> {
    block_on(wal.append(group, [(index, payload(group, index, 100, 0).as_slice())]))
}

fn opened() -> (MemStorage, Wal<MemStorage>) {
    let storage = MemStorage::new();
    let (wal, _) = block_on(Wal::open(storage.clone(), small_config())).unwrap();
    (storage, wal)
}

fn assert_io(e: &WalError, op: &str) {
    match e {
        WalError::Io { op: o, .. } => assert_eq!(*o, op, "{e}"),
        other => panic!("expected an {op} io error, got {other}"),
    }
}

#[test]
fn fsync_error_is_latched_and_nothing_unsynced_is_reported_durable() {
    let (storage, wal) = opened();
    for i in 1..=3 {
        append(&wal, 7, i).unwrap();
    }
    block_on(wal.sync_all()).unwrap();
    let durable = wal.durable_lsn();
    storage.set_faults(Faults {
        fail_sync_nth: Some(1),
        ..Faults::default()
    });
    let lsn = append(&wal, 7, 4).unwrap();
    let err = block_on(wal.sync(lsn)).unwrap_err();
    assert_io(&err, "fsync");
    assert!(err.is_fatal());
    assert_eq!(
        wal.durable_lsn(),
        durable,
        "the failed batch is not durable"
    );
    // Every later call returns the same error; nothing is retried.
    let syncs = storage.sync_count();
    assert_eq!(block_on(wal.sync(lsn)).unwrap_err(), err);
    assert_eq!(append(&wal, 7, 5).unwrap_err(), err);
    assert_eq!(block_on(wal.read(7, ..)).unwrap_err(), err);
    assert_eq!(block_on(wal.set_meta(7, 0, b"v")).unwrap_err(), err);
    assert_eq!(block_on(wal.purge(7, 1, b"")).unwrap_err(), err);
    assert_eq!(storage.sync_count(), syncs, "no fsync retried");
    assert_eq!(wal.fatal_error(), Some(err));
    // After a power loss the synced entries are there, the failed one is not.
    drop(wal);
    let (wal, _) = block_on(Wal::open(
        storage.crash(CrashMode::DropUnsynced),
        small_config(),
    ))
    .unwrap();
    let got: Vec<u64> = block_on(wal.read(7, ..))
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn write_error_is_latched() {
    let (storage, wal) = opened();
    append(&wal, 1, 1).unwrap();
    block_on(wal.sync_all()).unwrap();
    storage.set_faults(Faults {
        fail_write_nth: Some(1),
        ..Faults::default()
    });
    append(&wal, 1, 2).unwrap();
    let err = block_on(wal.sync_all()).unwrap_err();
    assert_io(&err, "write");
    assert_eq!(append(&wal, 1, 3).unwrap_err(), err);
    assert_eq!(wal.durable_lsn(), 1);
}

#[test]
fn full_disk_at_rotation_stops_writes_and_keeps_what_was_synced() {
    let (storage, wal) = opened();
    // Room for no further spare segment.
    let used: usize = storage
        .names()
        .iter()
        .map(|n| storage.file_bytes(n).unwrap().len())
        .sum();
    storage.set_faults(Faults {
        space_bytes: Some(used as u64),
        ..Faults::default()
    });
    let mut synced = 0;
    let err = loop {
        let i = synced + 1;
        if let Err(e) = append(&wal, 3, i) {
            break e;
        }
        match block_on(wal.sync_all()) {
            Ok(()) => synced = i,
            Err(e) => break e,
        }
        assert!(i < 10_000, "the disk never filled");
    };
    assert!(wal.segment_count() >= 1);
    assert!(
        err.to_string().contains("No space left") || err.to_string().contains("os error 28"),
        "{err}"
    );
    assert_eq!(append(&wal, 3, synced + 2).unwrap_err(), err);
    drop(wal);
    let (wal, _) = block_on(Wal::open(
        storage.crash(CrashMode::DropUnsynced),
        small_config(),
    ))
    .unwrap();
    assert_eq!(wal.entry_range(3), Some((1, synced)));
}

#[test]
fn all_waiters_of_a_failed_batch_get_the_error() {
    let (storage, wal) = opened();
    storage.set_yield_on_sync(true);
    storage.set_faults(Faults {
        fail_sync_nth: Some(1),
        ..Faults::default()
    });
    let wal = Rc::new(wal);
    let results = Rc::new(RefCell::new(Vec::new()));
    let mut pool = LocalPool::new();
    for t in 0..8u64 {
        let (wal, results) = (wal.clone(), results.clone());
        pool.spawner()
            .spawn_local(async move {
                let r = async {
                    let lsn = wal
                        .append(t, [(1, payload(t, 1, 50, 0).as_slice())])
                        .await?;
                    wal.sync(lsn).await
                }
                .await;
                results.borrow_mut().push(r);
            })
            .unwrap();
    }
    pool.run();
    let results = results.borrow();
    assert_eq!(results.len(), 8);
    for r in results.iter() {
        assert_io(r.as_ref().unwrap_err(), "fsync");
    }
    assert_eq!(wal.durable_lsn(), 0);
}

/// No room for the next segment while preparing it ahead of need: nothing
/// is latched, writes into the current segment go on, and once there is room
/// again the next `maintain` prepares it and rotation works.
#[test]
fn full_disk_while_preparing_ahead_is_not_fatal_and_recovers() {
    let (storage, wal) = opened();
    // Rotate once so that no segment is prepared ahead.
    let first = wal.segment_count();
    let mut i = 0;
    while wal.segment_count() == first {
        i += 1;
        append(&wal, 4, i).unwrap();
        block_on(wal.sync_all()).unwrap();
        assert!(i < 100_000, "never rotated");
    }
    let used: u64 = storage
        .names()
        .iter()
        .map(|n| storage.file_bytes(n).unwrap().len() as u64)
        .sum();
    storage.set_faults(Faults {
        space_bytes: Some(used),
        ..Faults::default()
    });
    let err = block_on(wal.maintain()).unwrap_err();
    assert!(
        matches!(err, WalError::NoSpace { .. }) && !err.is_fatal(),
        "{err}"
    );
    assert_eq!(wal.fatal_error(), None);
    assert!(
        storage.names().iter().all(|n| !n.ends_with(".tmp")),
        "the attempt's file is removed: {:?}",
        storage.names()
    );
    // The current segment still takes writes.
    i += 1;
    append(&wal, 4, i).unwrap();
    block_on(wal.sync_all()).unwrap();
    assert!(matches!(
        block_on(wal.maintain()),
        Err(WalError::NoSpace { .. })
    ));
    // Room again: prepared, and writes go on through rotations.
    storage.set_faults(Faults::default());
    block_on(wal.maintain()).unwrap();
    let before = wal.segment_count();
    while wal.segment_count() < before + 2 {
        i += 1;
        append(&wal, 4, i).unwrap();
        block_on(wal.sync_all()).unwrap();
        block_on(wal.maintain()).unwrap();
        assert!(i < 200_000, "never rotated");
    }
    assert_eq!(wal.entry_range(4), Some((1, i)));
}
