//! WAL append throughput (durable appends: append + wait for fdatasync) on
//! the glommio DMA backend, swept over record size and concurrent appenders.
//!
//! One glommio executor thread owns the WAL (as a shard core does); criterion's
//! thread sends it jobs over a channel and gets back the elapsed time.
//! Data goes under the cargo target dir (not /tmp, which may be tmpfs).

use cairn_benches::{JobThread, Jobs};
use cairn_wal::storage::DmaStorage;
use cairn_wal::{Config, Wal};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

struct Job {
    writers: u64,
    record_bytes: usize,
    appends: u64,
}

/// A glommio thread that owns one WAL and runs jobs.
fn wal_thread() -> JobThread<Job> {
    JobThread::start(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        1 << 20,
        |path, jobs: Jobs<Job>| async move {
            let (wal, _) = Wal::open(DmaStorage::new(&path).expect("dir"), Config::default())
                .await
                .expect("open");
            let wal = Rc::new(wal);
            let mut next_index = vec![1u64; 1024];
            while let Ok((job, done)) = jobs.recv() {
                let payload = Rc::new(vec![0x5Au8; job.record_bytes]);
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..job.writers {
                    let share =
                        job.appends / job.writers + u64::from(w < job.appends % job.writers);
                    let first = next_index[w as usize];
                    next_index[w as usize] += share;
                    let (wal, payload) = (wal.clone(), payload.clone());
                    tasks.push(glommio::spawn_local(async move {
                        for i in first..first + share {
                            let lsn = wal
                                .append(w, [(i, payload.as_slice())])
                                .await
                                .expect("append");
                            wal.sync(lsn).await.expect("sync");
                        }
                        // Keep the log short so segments recycle.
                        if first + share > 1 {
                            wal.purge(w, first + share - 1, b"").await.expect("purge");
                        }
                    }));
                }
                for t in tasks {
                    t.await;
                }
                let _ = done.send(start.elapsed());
                wal.maintain().await.expect("spare");
            }
        },
    )
}

fn wal_append(c: &mut Criterion) {
    let wal = wal_thread();

    let mut by_size = c.benchmark_group("wal_append/record_bytes (16 writers)");
    by_size
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for bytes in [64usize, 256, 1024, 4096, 16384, 65536] {
        by_size.throughput(Throughput::Bytes(bytes as u64));
        by_size.bench_with_input(BenchmarkId::from_parameter(bytes), &bytes, |b, &bytes| {
            b.iter_custom(|iters| {
                wal.run(Job {
                    writers: 16.min(iters),
                    record_bytes: bytes,
                    appends: iters,
                })
            })
        });
    }
    by_size.finish();

    let mut by_writers = c.benchmark_group("wal_append/writers (256 B)");
    by_writers
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    by_writers.throughput(Throughput::Elements(1));
    for writers in [1u64, 4, 16, 64, 256] {
        by_writers.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    wal.run(Job {
                        writers: writers.min(iters),
                        record_bytes: 256,
                        appends: iters,
                    })
                })
            },
        );
    }
    by_writers.finish();
}

criterion_group!(benches, wal_append);
criterion_main!(benches);
