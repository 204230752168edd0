//! HTTP/1.1 on the client port, beside gRPC: `GET /health`, `GET /version`,
//! `GET /metrics` (Prometheus text), and the JSON gateway ([`super::gateway`]).

use super::kv::{Member, ETCD_API_VERSION};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-RPC request counters and latency sums.
#[derive(Default)]
pub struct RpcMetrics {
    rpcs: [(AtomicU64, AtomicU64); RPCS.len()],
}

/// The RPCs counted, in `RpcMetrics` order.
pub const RPCS: [&str; 5] = ["Range", "Put", "DeleteRange", "Txn", "Compact"];

impl RpcMetrics {
    /// Counts one call of `rpc` that took `elapsed`.
    pub fn record(&self, rpc: &str, elapsed: Duration) {
        if let Some(i) = RPCS.iter().position(|r| *r == rpc) {
            self.rpcs[i].0.fetch_add(1, Ordering::Relaxed);
            self.rpcs[i]
                .1
                .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
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

/// The routes, for the member's router.
pub fn routes(member: Arc<Member>) -> axum::Router {
    let (m1, m2) = (member.clone(), member.clone());
    axum::Router::new()
        .route("/health", axum::routing::get(move || health(m1.clone())))
        .route("/version", axum::routing::get(version))
        .route("/metrics", axum::routing::get(move || metrics(m2.clone())))
        .merge(super::gateway::routes(member))
}

/// Requests no route takes: gRPC calls to services or methods that are not
/// built get gRPC's Unimplemented; anything else is a plain 404.
pub async fn fallback(req: axum::extract::Request) -> axum::response::Response {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let path = req.uri().path().to_string();
        tonic::Status::unimplemented(format!("cairn: {path} is not implemented")).into_http()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// Healthy when a shard core answers within a second (etcd 3.4's shape).
async fn health(member: Arc<Member>) -> impl IntoResponse {
    let answered = tokio::time::timeout(Duration::from_secs(1), member.status_of(0)).await;
    let ok = answered.is_ok_and(|r| r.is_ok());
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [("content-type", "application/json")],
        format!("{{\"health\":\"{ok}\"}}"),
    )
}

async fn version() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        format!(
            "{{\"etcdserver\":\"{ETCD_API_VERSION}\",\"etcdcluster\":\"{ETCD_API_VERSION}\",\"cairn\":\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

async fn metrics(member: Arc<Member>) -> impl IntoResponse {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP etcd_server_has_leader Whether a leader exists (1) or not (0)."
    );
    let _ = writeln!(
        s,
        "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1"
    );
    let _ = writeln!(s, "# HELP cairn_committed_revision The committed prefix C: every revision up to it is committed.");
    let _ = writeln!(
        s,
        "# TYPE cairn_committed_revision gauge\ncairn_committed_revision {}",
        member.seq.committed()
    );
    let _ = writeln!(
        s,
        "# HELP cairn_grpc_requests_total KV requests answered, by RPC."
    );
    let _ = writeln!(s, "# TYPE cairn_grpc_requests_total counter");
    for (i, rpc) in RPCS.iter().enumerate() {
        let _ = writeln!(
            s,
            "cairn_grpc_requests_total{{rpc=\"{rpc}\"}} {}",
            member.metrics.rpcs[i].0.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "# HELP cairn_grpc_request_duration_seconds Time to answer KV requests, by RPC."
    );
    let _ = writeln!(s, "# TYPE cairn_grpc_request_duration_seconds summary");
    for (i, rpc) in RPCS.iter().enumerate() {
        let (count, sum_us) = (&member.metrics.rpcs[i].0, &member.metrics.rpcs[i].1);
        let _ = writeln!(
            s,
            "cairn_grpc_request_duration_seconds_sum{{rpc=\"{rpc}\"}} {}\ncairn_grpc_request_duration_seconds_count{{rpc=\"{rpc}\"}} {}",
            sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "# HELP cairn_shard_queue_depth Requests queued for a shard core."
    );
    let _ = writeln!(s, "# TYPE cairn_shard_queue_depth gauge");
    for h in &member.shards {
        let _ = writeln!(
            s,
            "cairn_shard_queue_depth{{shard=\"{}\"}} {}",
            h.id,
            h.queued()
        );
    }
    let _ = writeln!(
        s,
        "# HELP cairn_shard_applied_index Raft entries applied by a shard."
    );
    let _ = writeln!(s, "# TYPE cairn_shard_applied_index gauge");
    let mut keys = String::new();
    for h in &member.shards {
        if let Ok(Ok(st)) =
            tokio::time::timeout(Duration::from_secs(1), member.status_of(h.id)).await
        {
            let _ = writeln!(
                s,
                "cairn_shard_applied_index{{shard=\"{}\"}} {}",
                h.id, st.raft_applied_index
            );
            let _ = writeln!(keys, "cairn_shard_keys{{shard=\"{}\"}} {}", h.id, st.keys);
        }
    }
    let _ = writeln!(
        s,
        "# HELP cairn_shard_keys Keys with history on a shard.\n# TYPE cairn_shard_keys gauge"
    );
    s.push_str(&keys);
    ([("content-type", "text/plain; version=0.0.4")], s)
}
