//! [`Histogram`]: a latency histogram with fixed exponential buckets and
//! atomic counters, readable from any thread while one thread records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts of observations per bucket (upper bounds in seconds, plus +Inf),
/// their number and their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// One per bound, plus the +Inf bucket; not cumulative.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `count` buckets with upper bounds `start`, `start·factor`, ... seconds.
    pub fn exponential(start: f64, factor: f64, count: usize) -> Self {
        let bounds: Vec<f64> = (0..count).map(|i| start * factor.powi(i as i32)).collect();
        let counts = (0..=count).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// etcd's `wal_fsync_duration_seconds` buckets: 1 ms … 8.192 s.
    pub fn fsync() -> Self {
        Self::exponential(0.001, 2.0, 14)
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) per bucket, the +Inf one last with
    /// `f64::INFINITY`; then the sum in seconds.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, f64) {
        let mut total = 0;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(b, c)| {
                total += c.load(Ordering::Relaxed);
                (b, total)
            })
            .collect();
        (buckets, self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::exponential(0.001, 2.0, 3); // 1, 2, 4 ms, +Inf
        for ms in [0, 1, 2, 3, 100] {
            h.observe(Duration::from_millis(ms));
        }
        let (buckets, sum) = h.cumulative();
        let counts: Vec<u64> = buckets.iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, vec![2, 3, 4, 5]);
        assert!((sum - 0.106).abs() < 1e-9);
        assert!(buckets[3].0.is_infinite());
    }
}
