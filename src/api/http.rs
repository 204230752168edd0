//! HTTP/1.1 on the client port, beside gRPC: `GET /health`, `GET /version`,
//! `GET /metrics` (Prometheus text), and the JSON gateway ([`super::gateway`]).

use crate::member::{Member, ETCD_API_VERSION};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_wal::Histogram;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

pub use super::rpc_metrics::{RpcMetrics, Timed, RPCS};

/// The routes, for the member's router.
pub fn routes(member: Arc<Member>) -> axum::Router {
    let (m1, m2) = (member.clone(), member.clone());
    axum::Router::new()
        .route("/health", axum::routing::get(move || health(m1.clone())))
        .route("/version", axum::routing::get(version))
        .route("/metrics", axum::routing::get(move || metrics(m2.clone())))
        .merge(super::gateway::routes(member))
        .merge(failpoints())
}

/// `GET /failpoints` lists them (`name=action` lines), `PUT
/// /failpoints/NAME` with the action as body sets one (the fail crate's
/// syntax, e.g. `return`, `50%sleep(100)`, `off`), `DELETE` removes it. Only
/// in builds with the `failpoints` feature (tests); elsewhere a 404.
fn failpoints() -> axum::Router {
    #[cfg(feature = "failpoints")]
    {
        use axum::extract::Path;
        use axum::routing::{get, put};
        axum::Router::new()
            .route(
                "/failpoints",
                get(|| async {
                    fail::list()
                        .into_iter()
                        .map(|(name, action)| format!("{name}={action}\n"))
                        .collect::<String>()
                }),
            )
            .route(
                "/failpoints/{name}",
                put(|Path(name): Path<String>, body: String| async move {
                    match fail::cfg(name, body.trim()) {
                        Ok(()) => (StatusCode::OK, String::new()),
                        Err(e) => (StatusCode::BAD_REQUEST, e),
                    }
                })
                .delete(|Path(name): Path<String>| async move {
                    fail::remove(name);
                    StatusCode::NO_CONTENT
                }),
            )
    }
    #[cfg(not(feature = "failpoints"))]
    axum::Router::new()
}

/// What an answer that needs no body reads of it before answering.
const DRAIN_MAX: usize = 256 << 10;

/// Reads and drops up to [`DRAIN_MAX`] of a request body that the answer
/// does not need (as Go's server does): an HTTP/1.1 connection closed with
/// unread request bytes is reset, and the client may lose the answer.
pub async fn drain(body: axum::body::Body) {
    let _ = axum::body::to_bytes(body, DRAIN_MAX).await;
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
        drain(req.into_body()).await;
        StatusCode::NOT_FOUND.into_response()
    }
}

/// Healthy when nothing fatal is latched and a shard core answers within a
/// second (etcd 3.4's shape, `{"health":"true"}`); unhealthy answers 503 and
/// say why in `reason` (as later etcd versions do).
async fn health(member: Arc<Member>) -> impl IntoResponse {
    let full = member.shards.iter().position(|s| s.wal_no_space());
    let reason = match (member.fatal.reason(), full) {
        (Some(reason), _) => Some(reason),
        (None, Some(shard)) => Some(format!(
            "shard {shard}: no space left on the data dir's device for the log"
        )),
        // etcd: a member that knows no leader, or has an alarm raised, is
        // not healthy.
        (None, None) if member.leader().is_none() => Some("etcdserver: no leader".into()),
        (None, None) if !member.alarms.list().is_empty() => {
            Some(format!("alarms raised: {:?}", member.alarms.list()))
        }
        (None, None) => {
            match tokio::time::timeout(Duration::from_secs(1), member.status_of(0)).await {
                Ok(Ok(_)) => None,
                Ok(Err(status)) => Some(status.message().to_string()),
                Err(_) => Some("shard 0 did not answer within 1 s".into()),
            }
        }
    };
    let (code, body) = match reason {
        None => (StatusCode::OK, "{\"health\":\"true\"}".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": reason}).to_string(),
        ),
    };
    (code, [("content-type", "application/json")], body)
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

/// Writes `h` as Prometheus histogram lines of `name` with `labels`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (buckets, sum) = h.cumulative();
    let sep = if labels.is_empty() { "" } else { "," };
    let mut count = 0;
    for (bound, c) in buckets {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{bound}")
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
        count = c;
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {count}");
}

/// Prometheus text: etcd's names where etcd has the figure (so its
/// dashboards work), `cairn_` ones for the rest.
async fn metrics(member: Arc<Member>) -> impl IntoResponse {
    let mut s = String::new();
    let gauge = |s: &mut String, name: &str, help: &str, lines: &[(String, String)]| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in lines {
            let _ = writeln!(s, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    gauge(
        &mut s,
        "etcd_server_has_leader",
        "Whether a leader exists (1) or not (0).",
        &one(u8::from(member.leader().is_some()).to_string()),
    );
    let counter = |s: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        &mut s,
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        member.peers.board.leader_changes(),
    );
    counter(
        &mut s,
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        member
            .proposals_failed
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    gauge(
        &mut s,
        "cairn_committed_revision",
        "The committed prefix C: every revision up to it is committed.",
        &one(member.seq.committed().to_string()),
    );
    gauge(
        &mut s,
        "etcd_mvcc_db_total_size_in_bytes",
        "Size of every version kept (what --quota-backend-bytes limits).",
        &one(member.db_size().to_string()),
    );
    gauge(
        &mut s,
        "etcd_debugging_mvcc_watcher_total",
        "Watchers open on this member, over all watch streams.",
        &one(member.hub.watchers().to_string()),
    );
    gauge(
        &mut s,
        "etcd_server_quota_backend_bytes",
        "The space quota in bytes.",
        &one(member.quota_bytes.to_string()),
    );
    let _ = writeln!(
        s,
        "# HELP cairn_grpc_requests_total KV requests answered, by RPC.\n# TYPE cairn_grpc_requests_total counter"
    );
    for (i, rpc) in RPCS.iter().enumerate() {
        let (buckets, _) = member.metrics.of(i).cumulative();
        let n = buckets.last().map_or(0, |(_, c)| *c);
        let _ = writeln!(s, "cairn_grpc_requests_total{{rpc=\"{rpc}\"}} {n}");
    }
    let _ = writeln!(
        s,
        "# HELP cairn_grpc_request_duration_seconds Time to answer KV requests, by RPC.\n# TYPE cairn_grpc_request_duration_seconds histogram"
    );
    for (i, rpc) in RPCS.iter().enumerate() {
        histogram(
            &mut s,
            "cairn_grpc_request_duration_seconds",
            &format!("rpc=\"{rpc}\""),
            member.metrics.of(i),
        );
    }
    let _ = writeln!(
        s,
        "# HELP etcd_disk_wal_fsync_duration_seconds The latency of making a WAL batch durable (its write and fdatasync, or its O_DSYNC write), by shard.\n# TYPE etcd_disk_wal_fsync_duration_seconds histogram"
    );
    for h in &member.shards {
        if let Some(fsync) = h.gauges.wal_fsync.get() {
            histogram(
                &mut s,
                "etcd_disk_wal_fsync_duration_seconds",
                &format!("shard=\"{}\"", h.id),
                fsync,
            );
        }
    }
    let _ = writeln!(
        s,
        "# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers (QUIC's smoothed RTT of the connection, sampled every 4 s).\n# TYPE etcd_network_peer_round_trip_time_seconds histogram"
    );
    for (id, h) in member.peer_rtts.histograms() {
        histogram(
            &mut s,
            "etcd_network_peer_round_trip_time_seconds",
            &format!("To=\"{id:x}\""),
            &h,
        );
    }
    let queued: Vec<_> = member
        .shards
        .iter()
        .map(|h| (format!("{{shard=\"{}\"}}", h.id), h.queued().to_string()))
        .collect();
    gauge(
        &mut s,
        "cairn_shard_queue_depth",
        "Requests queued for a shard core.",
        &queued,
    );
    let (mut applied, mut committed, mut revision, mut keys) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for h in &member.shards {
        if let Ok(Ok(st)) =
            tokio::time::timeout(Duration::from_secs(1), member.status_of(h.id)).await
        {
            let l = format!("{{shard=\"{}\"}}", h.id);
            applied.push((l.clone(), st.raft_applied_index.to_string()));
            committed.push((l.clone(), st.raft_committed_index.to_string()));
            revision.push((l.clone(), st.revision.to_string()));
            keys.push((l, st.keys.to_string()));
        }
    }
    gauge(
        &mut s,
        "cairn_shard_applied_index",
        "Raft entries applied by a shard.",
        &applied,
    );
    gauge(
        &mut s,
        "cairn_shard_committed_index",
        "Raft entries committed in a shard's group.",
        &committed,
    );
    gauge(
        &mut s,
        "cairn_shard_revision",
        "The newest revision a shard's store holds.",
        &revision,
    );
    gauge(
        &mut s,
        "cairn_shard_keys",
        "Keys with history on a shard.",
        &keys,
    );
    ([("content-type", "text/plain; version=0.0.4")], s)
}
