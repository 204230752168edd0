//! `cairn-bench lease-keepalive`: grants a set of leases (not measured),
//! then every client keeps them alive over its own LeaseKeepAlive stream,
//! one request in flight, round-robin over the leases. A keepalive that
//! answers TTL ≤ 0 (the lease is gone) counts as an error.

use super::auth::{self, Token};
use super::report::{ClientRecorder, Recorder};
use anyhow::{bail, Result};
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How many keepalives are sent, or for how long.
pub struct Bound {
    pub total: Option<u64>,
    pub deadline: Option<Instant>,
}

/// Grants `leases` leases of `ttl` seconds over `conns`, `clients` at a
/// time (with `tokens[conn]`, one per connection); their ids.
pub async fn grant(
    conns: &[Channel],
    tokens: &[Token],
    clients: usize,
    leases: u64,
    ttl: i64,
) -> Result<Vec<i64>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let mut lease = LeaseClient::new(conns[c % conns.len()].clone());
        let next = next.clone();
        let token = tokens[c % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < leases {
                let r = lease
                    .lease_grant(auth::request(LeaseGrantRequest { ttl, id: 0 }, &token))
                    .await?;
                ids.push(r.into_inner().id);
            }
            Ok::<_, tonic::Status>(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    if ids.is_empty() {
        bail!("no lease granted");
    }
    Ok(ids)
}

/// Keeps `ids` alive from `clients` streams until `bound`; the latencies
/// and how long it took.
pub async fn keep_alive(
    conns: &[Channel],
    tokens: &[Token],
    clients: usize,
    ids: Arc<Vec<i64>>,
    bound: Bound,
) -> Result<(Recorder, Duration)> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let bound = Arc::new(bound);
    let shared = Arc::new(Mutex::new(Recorder::default()));
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let mut lease = LeaseClient::new(conns[c % conns.len()].clone());
        let (next, bound, ids) = (next.clone(), bound.clone(), ids.clone());
        let token = tokens[c % conns.len()].clone();
        let mut rec = ClientRecorder::new(shared.clone());
        tasks.push(tokio::spawn(async move {
            let take = || {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let done = bound.total.is_some_and(|t| i >= t)
                    || bound.deadline.is_some_and(|d| Instant::now() >= d);
                (!done).then(|| ids[(i % ids.len() as u64) as usize])
            };
            let Some(mut id) = take() else {
                return;
            };
            // The first request is queued before the stream opens: a Go
            // server (etcd) sends the response headers only with its first
            // answer, so opening an empty stream would wait for ever.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut t0 = Instant::now();
            let _ = tx.send(LeaseKeepAliveRequest { id }).await;
            let mut answers = match lease
                .lease_keep_alive(auth::request(ReceiverStream::new(rx), &token))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    rec.error(format!("{:?}: {}", e.code(), e.message()));
                    return;
                }
            };
            loop {
                match answers.message().await {
                    Ok(Some(r)) if r.ttl > 0 => rec.ok(t0.elapsed()),
                    Ok(Some(r)) => rec.error(format!("lease {:x}: TTL {}", r.id, r.ttl)),
                    Ok(None) => {
                        rec.error("the keepalive stream ended");
                        return;
                    }
                    Err(e) => {
                        rec.error(format!("{:?}: {}", e.code(), e.message()));
                        return;
                    }
                }
                let Some(next_id) = take() else {
                    return;
                };
                id = next_id;
                t0 = Instant::now();
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    rec.error("the keepalive stream closed");
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let rec = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((rec, elapsed))
}
