//! MVCC apply and range on one shard's store, swept over the number of keys
//! (1k .. 1M; 8-byte keys, 256-byte values, as in etcd's performance doc).

use cairn::mvcc::{Change, RangeEnd, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn key(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn loaded(keys: u64) -> Store {
    let mut s = Store::new();
    let value = vec![0xABu8; 256];
    let mut rev = 1;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
        rev += 1;
        let changes: Vec<Change> = chunk
            .iter()
            .map(|&i| Change::Put {
                key: key(i),
                value: value.clone(),
                lease: 0,
            })
            .collect();
        s.apply(rev, &changes);
    }
    s
}

fn mvcc(c: &mut Criterion) {
    let sizes = [1_000u64, 10_000, 100_000, 1_000_000];
    let value = vec![0xCDu8; 256];

    let mut apply = c.benchmark_group("mvcc_apply_put (one key per revision)");
    apply
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    apply.throughput(Throughput::Elements(1));
    for &n in &sizes {
        let mut s = loaded(n);
        let mut i = 0u64;
        apply.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                i += 1;
                let rev = s.revision() + 1;
                s.apply(
                    rev,
                    &[Change::Put {
                        key: key(i % n),
                        value: value.clone(),
                        lease: 0,
                    }],
                );
            })
        });
    }
    apply.finish();

    let mut get = c.benchmark_group("mvcc_range_single_key");
    get.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    get.throughput(Throughput::Elements(1));
    for &n in &sizes {
        let s = loaded(n);
        let mut i = 0u64;
        get.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(s.range(&key(i), &RangeEnd::Single, 0, 0).expect("range"))
            })
        });
    }
    get.finish();

    let mut scan = c.benchmark_group("mvcc_range_100_keys");
    scan.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    scan.throughput(Throughput::Elements(100));
    for &n in &sizes {
        let s = loaded(n);
        let mut i = 0u64;
        scan.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % (n - 100);
                black_box(
                    s.range(&key(i), &RangeEnd::Until(key(i + 100)), 0, 0)
                        .expect("range"),
                )
            })
        });
    }
    scan.finish();
}

criterion_group!(benches, mvcc);
criterion_main!(benches);
