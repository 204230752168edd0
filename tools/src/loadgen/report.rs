//! Latency recording (HDR histogram: bounded memory, 3 significant digits)
//! and the summary: etcd `benchmark`-style text, then one JSON line.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Latencies are recorded in microseconds, 1 µs .. 10 minutes.
const LATENCY_MAX_US: u64 = 600_000_000;

/// What one client (or the whole run, merged) measured.
#[derive(Clone)]
pub struct Recorder {
    pub latencies: Histogram<u64>,
    /// Error message → count (bounded: at most `ERROR_KINDS_MAX` kinds).
    pub errors: BTreeMap<String, u64>,
    /// Extra counters, e.g. txn-put conflicts.
    pub counters: BTreeMap<&'static str, u64>,
}

const ERROR_KINDS_MAX: usize = 32;

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latencies: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("histogram bounds"),
            errors: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn ok(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        self.latencies.record(us).expect("clamped into bounds");
    }

    pub fn error(&mut self, message: impl Into<String>) {
        let m = message.into();
        if self.errors.len() < ERROR_KINDS_MAX || self.errors.contains_key(&m) {
            *self.errors.entry(m).or_default() += 1;
        } else {
            *self.errors.entry("(other errors)".into()).or_default() += 1;
        }
    }

    pub fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latencies.add(&other.latencies).expect("same bounds");
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.counters {
            *self.counters.entry(k).or_default() += v;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Samples a client keeps before adding them to the shared histogram.
const CLIENT_SAMPLES_MAX: usize = 256;

/// One client's handle on the run's [`Recorder`]: latencies are buffered (at
/// most [`CLIENT_SAMPLES_MAX`]) and added to the one shared histogram in bulk.
/// A histogram per client (~300 KiB each) made a 1,000-client run touch
/// ~300 MB of fresh memory, a cost the load generator paid inside the
/// measured interval.
pub struct ClientRecorder {
    shared: Arc<Mutex<Recorder>>,
    samples: Vec<Duration>,
}

impl ClientRecorder {
    pub fn new(shared: Arc<Mutex<Recorder>>) -> Self {
        Self {
            shared,
            samples: Vec::with_capacity(CLIENT_SAMPLES_MAX),
        }
    }

    pub fn ok(&mut self, latency: Duration) {
        self.samples.push(latency);
        if self.samples.len() == CLIENT_SAMPLES_MAX {
            self.flush();
        }
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.lock().error(message);
    }

    pub fn count(&mut self, name: &'static str) {
        self.lock().count(name);
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut shared = self.lock();
        for &latency in &self.samples {
            shared.ok(latency);
        }
        drop(shared);
        self.samples.clear();
    }
}

impl Drop for ClientRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The whole run's figures.
pub struct Summary {
    pub op: String,
    pub total: Duration,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub avg_ms: f64,
    pub stddev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Summary {
    pub fn new(op: &str, rec: &Recorder, total: Duration) -> Self {
        let h = &rec.latencies;
        let requests = h.len();
        let secs = total.as_secs_f64().max(1e-9);
        Summary {
            op: op.to_string(),
            total,
            requests,
            errors: rec.error_count(),
            rps: requests as f64 / secs,
            min_ms: if requests == 0 { 0.0 } else { ms(h.min()) },
            max_ms: ms(h.max()),
            avg_ms: h.mean() / 1000.0,
            stddev_ms: h.stdev() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
        }
    }

    /// etcd `benchmark`-style text: summary, histogram, percentiles, errors.
    pub fn text(&self, rec: &Recorder) -> String {
        let h = &rec.latencies;
        let mut s = String::new();
        let secs = |ms: f64| ms / 1000.0;
        let _ = writeln!(s, "\nSummary:");
        let _ = writeln!(s, "  Total:\t{:.4} secs.", self.total.as_secs_f64());
        let _ = writeln!(s, "  Slowest:\t{:.4} secs.", secs(self.max_ms));
        let _ = writeln!(s, "  Fastest:\t{:.4} secs.", secs(self.min_ms));
        let _ = writeln!(s, "  Average:\t{:.4} secs.", secs(self.avg_ms));
        let _ = writeln!(s, "  Stddev:\t{:.4} secs.", secs(self.stddev_ms));
        let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.rps);
        if self.requests > 0 {
            let _ = writeln!(s, "\nResponse time histogram:");
            let (lo, hi) = (h.min() as f64, h.max() as f64);
            let buckets = 10usize;
            let step = ((hi - lo) / buckets as f64).max(1.0);
            let mut counts = vec![0u64; buckets + 1];
            for v in h.iter_recorded() {
                let b = (((v.value_iterated_to() as f64 - lo) / step) as usize).min(buckets);
                counts[b] += v.count_at_value();
            }
            let most = counts.iter().copied().max().unwrap_or(1).max(1);
            for (i, c) in counts.iter().enumerate() {
                let bar = "∎".repeat((c * 40 / most) as usize);
                let _ = writeln!(s, "  {:.4} [{c}]\t|{bar}", (lo + step * i as f64) / 1e6);
            }
            let _ = writeln!(s, "\nLatency distribution:");
            for q in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
                let _ = writeln!(
                    s,
                    "  {q}% in {:.4} secs.",
                    h.value_at_quantile(q / 100.0) as f64 / 1e6
                );
            }
        }
        for (k, v) in &rec.counters {
            let _ = writeln!(s, "  {k}: {v}");
        }
        if !rec.errors.is_empty() {
            let _ = writeln!(s, "\nErrors:");
            for (m, n) in &rec.errors {
                let _ = writeln!(s, "  [{n}] {m}");
            }
        }
        s
    }

    /// One JSON object with the same figures (the last line of the output).
    pub fn json(&self, rec: &Recorder, extra: serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "op": self.op,
            "total_s": self.total.as_secs_f64(),
            "requests": self.requests,
            "errors": self.errors,
            "rps": self.rps,
            "min_ms": self.min_ms,
            "avg_ms": self.avg_ms,
            "stddev_ms": self.stddev_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
        });
        let obj = v.as_object_mut().expect("object");
        for (k, c) in &rec.counters {
            obj.insert((*k).to_string(), (*c).into());
        }
        if let serde_json::Value::Object(extra) = extra {
            obj.extend(extra);
        }
        v.to_string()
    }
}

/// A progress bar on stderr.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_figures_come_from_the_recorded_latencies() {
        let mut r = Recorder::default();
        for ms in 1..=100u64 {
            r.ok(Duration::from_millis(ms));
        }
        r.error("boom");
        let s = Summary::new("put", &r, Duration::from_secs(2));
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 1);
        assert!((s.rps - 50.0).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1);
        let json: serde_json::Value =
            serde_json::from_str(&s.json(&r, serde_json::json!({"clients": 3}))).unwrap();
        assert_eq!(json["requests"], 100);
        assert_eq!(json["clients"], 3);
        assert!(s.text(&r).contains("Requests/sec"));
    }

    #[test]
    fn client_recorders_add_every_sample_to_the_shared_histogram() {
        let shared = Arc::new(Mutex::new(Recorder::default()));
        let mut a = ClientRecorder::new(shared.clone());
        let mut b = ClientRecorder::new(shared.clone());
        for i in 0..1000u64 {
            a.ok(Duration::from_micros(100 + i));
        }
        b.ok(Duration::from_millis(7));
        b.error("boom");
        b.count("txn_conflicts");
        // Full buffers went in already; the rest goes in when a client ends.
        assert_eq!(
            shared.lock().unwrap().latencies.len(),
            3 * CLIENT_SAMPLES_MAX as u64
        );
        drop((a, b));
        let rec = shared.lock().unwrap();
        assert_eq!(rec.latencies.len(), 1001);
        assert_eq!(rec.latencies.max(), rec.latencies.highest_equivalent(7000));
        assert_eq!(rec.latencies.min(), 100);
        assert_eq!(rec.error_count(), 1);
        assert_eq!(rec.counters["txn_conflicts"], 1);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut r = Recorder::default();
        for i in 0..100 {
            r.error(format!("e{i}"));
        }
        assert!(r.errors.len() <= ERROR_KINDS_MAX + 1);
        assert_eq!(r.error_count(), 100);
    }
}
