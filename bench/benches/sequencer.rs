//! The revision tracker: stamp + commit, in order and out of order, with
//! a given number of revisions in flight; and the shared (mutex) version.

use cairn::sequencer::{Sequencer, SharedSequencer};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::time::Duration;

fn sequencer(c: &mut Criterion) {
    let mut g = c.benchmark_group("sequencer_stamp_commit");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    for in_flight in [1usize, 64, 1024] {
        g.bench_with_input(BenchmarkId::new("fifo", in_flight), &in_flight, |b, &n| {
            let mut s = Sequencer::new(0);
            let mut q: VecDeque<i64> = (0..n).map(|_| s.stamp()).collect();
            b.iter(|| {
                q.push_back(s.stamp());
                s.commit(q.pop_front().expect("in flight"));
            })
        });
        g.bench_with_input(
            BenchmarkId::new("newest_first", in_flight),
            &in_flight,
            |b, &n| {
                // Commit the newest: C only moves when the oldest finally commits.
                let mut s = Sequencer::new(0);
                let mut q: VecDeque<i64> = (0..n).map(|_| s.stamp()).collect();
                b.iter(|| {
                    q.push_back(s.stamp());
                    let r = if q.len() > n {
                        q.pop_back()
                    } else {
                        q.pop_front()
                    };
                    s.commit(r.expect("in flight"));
                })
            },
        );
    }
    let shared = SharedSequencer::new(0);
    g.bench_function("shared_stamp_commit (uncontended)", |b| {
        b.iter(|| {
            let r = shared.stamp().expect("leading");
            shared.commit(r);
        })
    });
    g.finish();
}

criterion_group!(benches, sequencer);
criterion_main!(benches);
