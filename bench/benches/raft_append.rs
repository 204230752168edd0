//! The Raft append path in process: openraft `client_write` on a single-member
//! shard group (glommio runtime adapter, `WalLogStore` on the DMA WAL, the
//! shard state machine over an MVCC store), from proposal to applied, swept
//! over concurrent proposers. 8-byte keys, 256-byte values, as the load
//! generator's put scenarios.
//!
//! One glommio executor owns the group, as a shard core does; criterion's
//! thread sends it jobs and gets back the elapsed time. Data goes under the
//! cargo target dir (not /tmp, which may be tmpfs).

use cairn::mvcc::{Change, Store};
use cairn::raft::log_store::WalLogStore;
use cairn::raft::network::PeerNetwork;
use cairn::raft::state_machine::ShardStateMachine;
use cairn::raft::types::{ShardCommand, ShardRaft};
use cairn_benches::{JobThread, Jobs};
use cairn_wal::storage::DmaStorage;
use cairn_wal::{Config, Wal};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openraft::{BasicNode, Raft};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Job {
    proposers: u64,
    writes: u64,
}

/// A glommio thread that owns one Raft group and runs jobs.
fn raft_thread() -> JobThread<Job> {
    JobThread::start(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        cairn::raft::runtime::IO_MEMORY_BYTES,
        |path, jobs: Jobs<Job>| async move {
            let (wal, _) = Wal::open(DmaStorage::new(&path).expect("dir"), Config::default())
                .await
                .expect("open");
            let wal = Rc::new(wal);
            cairn::shard::spawn_wal_upkeep(wal.clone(), |upkeep| {
                assert!(
                    !matches!(upkeep, cairn::shard::Upkeep::Failed(_)),
                    "WAL failed: {upkeep:?}"
                )
            });
            let store = Rc::new(RefCell::new(Store::new()));
            let sm = ShardStateMachine::new(store);
            // The shard's own Raft settings (`--snapshot-count` default).
            let config =
                cairn::shard::raft_config(100_000, Default::default(), false).expect("config");
            let raft: Raft<ShardRaft, ShardStateMachine> = Raft::new(
                1,
                Arc::new(config),
                PeerNetwork::new(
                    0,
                    std::sync::Arc::new(cairn::transport::NoPeers),
                    std::time::Duration::from_secs(1),
                ),
                WalLogStore::new(wal.clone(), 0),
                sm,
            )
            .await
            .expect("raft");
            raft.initialize(BTreeMap::from([(1, BasicNode::new("local"))]))
                .await
                .expect("initialize");
            raft.wait(Some(Duration::from_secs(30)))
                .current_leader(1, "leader")
                .await
                .expect("leader");
            let raft = Rc::new(raft);
            let revision = Rc::new(Cell::new(1i64));
            let value = vec![0x5Au8; 256];
            while let Ok((job, done)) = jobs.recv() {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for p in 0..job.proposers {
                    let share =
                        job.writes / job.proposers + u64::from(p < job.writes % job.proposers);
                    let (raft, revision, value) = (raft.clone(), revision.clone(), value.clone());
                    tasks.push(glommio::spawn_local(async move {
                        for i in 0..share {
                            // Stamped and proposed with no await in
                            // between: the log is in revision order.
                            let r = revision.get() + 1;
                            revision.set(r);
                            let key = format!("{:08}", (p * 7919 + i) % 100_000).into_bytes();
                            let changes = vec![Change::Put {
                                key,
                                value: value.clone(),
                                lease: 0,
                            }];
                            raft.client_write(ShardCommand::Write {
                                revision: r,
                                changes,
                            })
                            .await
                            .expect("client_write");
                        }
                    }));
                }
                for t in tasks {
                    t.await;
                }
                let _ = done.send(start.elapsed());
            }
            let _ = raft.shutdown().await;
        },
    )
}

fn raft_append(c: &mut Criterion) {
    let raft = raft_thread();
    let mut group = c.benchmark_group("raft_append/proposers (8 B keys, 256 B values)");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    for proposers in [1u64, 16, 128] {
        group.bench_with_input(
            BenchmarkId::from_parameter(proposers),
            &proposers,
            |b, &p| {
                b.iter_custom(|iters| {
                    raft.run(Job {
                        proposers: p.min(iters),
                        writes: iters,
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, raft_append);
criterion_main!(benches);
