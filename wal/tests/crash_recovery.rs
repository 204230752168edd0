//! Model-based property test: random appends, truncates, purges and metadata
//! across groups, crashes at random points (dropping, keeping, tearing or
//! reordering unsynced writes), reopen. What comes back must be exactly the
//! state after a prefix of the operations, and that prefix must include every
//! operation that was reported durable.

mod common;

use cairn_wal::storage::{CrashMode, MemStorage};
use cairn_wal::Wal;
use common::{assert_matches, payload, small_config, Model, Op};
use futures::executor::block_on;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Append {
        group: u64,
        count: usize,
        len: usize,
    },
    Truncate {
        group: u64,
        back: u64,
    },
    Purge {
        group: u64,
        forward: u64,
    },
    Meta {
        group: u64,
        value: u8,
    },
    Sync,
    /// The owner's background upkeep: reclaim and prepare the next segment.
    Maintain,
    Crash(CrashKind),
}

#[derive(Clone, Copy, Debug)]
enum CrashKind {
    Drop,
    Keep,
    Tear(u64),
    Sectors(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3u64, 1..6usize, prop_oneof![0..64usize, 64..1500usize, 2000..5000usize])
            .prop_map(|(group, count, len)| Step::Append { group, count, len }),
        1 => (0..3u64, 0..4u64).prop_map(|(group, back)| Step::Truncate { group, back }),
        2 => (0..3u64, 0..8u64).prop_map(|(group, forward)| Step::Purge { group, forward }),
        1 => (0..3u64, any::<u8>()).prop_map(|(group, value)| Step::Meta { group, value }),
        3 => Just(Step::Sync),
        1 => Just(Step::Maintain),
        1 => prop_oneof![
            Just(CrashKind::Drop),
            Just(CrashKind::Keep),
            (0..20_000u64).prop_map(CrashKind::Tear),
            any::<u64>().prop_map(CrashKind::Sectors),
        ]
        .prop_map(Step::Crash),
    ]
}

fn run(steps: Vec<Step>) {
    block_on(async {
        let mut storage = MemStorage::new();
        let (mut wal, _) = Wal::open(storage.clone(), small_config())
            .await
            .expect("open");
        // Every logical op with its LSN, in LSN order; `current` = all applied.
        let mut history: Vec<(u64, Op)> = Vec::new();
        let mut current = Model::default();
        let mut salt = 0u64;
        for (n, step) in steps.into_iter().enumerate() {
            salt += 1;
            match step {
                Step::Append { group, count, len } => {
                    let g = current.groups.get(&group).cloned().unwrap_or_default();
                    let first = g.next_index.unwrap_or(1);
                    for index in first..first + count as u64 {
                        let p = payload(group, index, len, salt);
                        let lsn = wal
                            .append(group, [(index, p.as_slice())])
                            .await
                            .expect("append");
                        let op = Op::Entry {
                            group,
                            index,
                            payload: p,
                        };
                        current.apply(&op);
                        history.push((lsn, op));
                    }
                }
                Step::Truncate { group, back } => {
                    let g = current.groups.get(&group).cloned().unwrap_or_default();
                    let Some(next) = g.next_index else { continue };
                    let floor = g.purged.as_ref().map_or(0, |(p, _)| p + 1);
                    let index = next.saturating_sub(back).max(floor);
                    if index >= next || g.entries.is_empty() {
                        continue;
                    }
                    let lsn = wal.truncate(group, index).await.expect("truncate");
                    let op = Op::Truncate { group, index };
                    current.apply(&op);
                    history.push((lsn, op));
                }
                Step::Purge { group, forward } => {
                    let g = current.groups.get(&group).cloned().unwrap_or_default();
                    let Some(&first) = g.entries.keys().next() else {
                        continue;
                    };
                    let index = first + forward;
                    let meta = format!("purge {group}/{index}").into_bytes();
                    let lsn = wal.purge(group, index, &meta).await.expect("purge");
                    let op = Op::Purge { group, index, meta };
                    current.apply(&op);
                    history.push((lsn, op));
                }
                Step::Meta { group, value } => {
                    let v = vec![value; 1 + value as usize % 40];
                    let lsn = wal.set_meta(group, 0, &v).await.expect("meta");
                    let op = Op::Meta {
                        group,
                        key: 0,
                        value: v,
                    };
                    current.apply(&op);
                    history.push((lsn, op));
                }
                Step::Sync => wal.sync_all().await.expect("sync"),
                Step::Maintain => wal.maintain().await.expect("maintain"),
                Step::Crash(kind) => {
                    let durable = wal.durable_lsn();
                    let last = wal.last_lsn();
                    drop(wal);
                    let mode = match kind {
                        CrashKind::Drop => CrashMode::DropUnsynced,
                        CrashKind::Keep => CrashMode::KeepUnsynced,
                        CrashKind::Tear(n) => CrashMode::TearAt(n),
                        CrashKind::Sectors(seed) => CrashMode::Sectors { seed },
                    };
                    storage = storage.crash(mode);
                    let (w, _) = Wal::open(storage.clone(), small_config())
                        .await
                        .unwrap_or_else(|e| panic!("step {n}: reopen after {kind:?} failed: {e}"));
                    wal = w;
                    let recovered = wal.last_lsn();
                    assert!(
                        recovered >= durable,
                        "step {n}: recovered lsn {recovered} < durable {durable} ({kind:?})"
                    );
                    assert!(
                        recovered <= last,
                        "step {n}: recovered lsn {recovered} > last appended {last}"
                    );
                    history.retain(|(l, _)| *l <= recovered);
                    current = Model::replay(&history, recovered);
                    assert_matches(&wal, &current, &format!("step {n} after {kind:?}")).await;
                }
            }
            wal.check_invariants();
        }
        // Finally: everything synced survives a power loss.
        wal.sync_all().await.expect("final sync");
        drop(wal);
        let storage = storage.crash(CrashMode::DropUnsynced);
        let (wal, _) = Wal::open(storage, small_config())
            .await
            .expect("final reopen");
        assert_matches(&wal, &current, "final").await;
    });
}

proptest! {
    // 200 cases by default; PROPTEST_CASES=N for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        ..ProptestConfig::default()
    })]

    #[test]
    fn recovered_state_is_a_prefix_holding_everything_durable(steps in prop::collection::vec(step(), 1..120)) {
        run(steps);
    }
}
