//! Per-RPC latency histograms of the front (`/metrics`:
//! `cairn_grpc_request_duration_seconds`). A leaf module: the
//! member holds one, the services and `/metrics` use it.

use cairn_wal::Histogram;
use std::time::{Duration, Instant};

/// Per-RPC latency histograms (their counts are the request counts).
pub struct RpcMetrics {
    rpcs: Vec<Histogram>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self {
            // 100 µs … 13 s.
            rpcs: RPCS
                .iter()
                .map(|_| Histogram::exponential(0.0001, 2.0, 18))
                .collect(),
        }
    }
}

/// The RPCs counted, in `RpcMetrics` order.
pub const RPCS: [&str; 5] = ["Range", "Put", "DeleteRange", "Txn", "Compact"];

impl RpcMetrics {
    /// The histogram of `RPCS[i]`.
    pub fn of(&self, i: usize) -> &Histogram {
        &self.rpcs[i]
    }

    /// Counts one call of `rpc` that took `elapsed`.
    pub fn record(&self, rpc: &str, elapsed: Duration) {
        if let Some(i) = RPCS.iter().position(|r| *r == rpc) {
            self.rpcs[i].observe(elapsed);
        }
    }
}

/// Times a request and records it when dropped.
pub struct Timed<'a> {
    metrics: &'a RpcMetrics,
    rpc: &'static str,
    start: Instant,
}

impl<'a> Timed<'a> {
    pub fn new(metrics: &'a RpcMetrics, rpc: &'static str) -> Self {
        Self {
            metrics,
            rpc,
            start: Instant::now(),
        }
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.metrics.record(self.rpc, self.start.elapsed());
    }
}
