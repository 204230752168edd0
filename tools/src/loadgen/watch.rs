//! `cairn-bench watch-latency`: watchers on one key, spread over streams
//! and connections, and one client putting to it; the latency of each
//! event is its arrival minus its put's send time.

use super::auth::{self, Token};
use super::keys::key_bytes;
use super::report::Recorder;
use anyhow::{bail, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Bound on puts (send times are kept in memory).
const WATCH_PUTS_MAX: u64 = 10_000_000;

/// The run's shape.
pub struct Shape {
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub put_total: u64,
    /// Puts per second (0: as fast as they are answered).
    pub put_rate: f64,
    pub key_size: usize,
    pub val_size: usize,
}

/// Runs it over `conns` (watch stream `s` on `conns[s % len]`, with
/// `tokens[s % len]`); the latencies and the put phase's duration.
pub async fn watch_latency(
    conns: &[Channel],
    tokens: &[Token],
    shape: &Shape,
) -> Result<(Recorder, Duration)> {
    let Shape {
        streams,
        watchers_per_stream,
        put_total,
        put_rate,
        key_size,
        val_size,
    } = *shape;
    if put_total > WATCH_PUTS_MAX {
        bail!("--put-total is at most {WATCH_PUTS_MAX}");
    }
    let key = [b"watch-latency/".as_slice(), &key_bytes(0, key_size)].concat();
    let start = Instant::now();
    // Send time of put i, in ns since `start` (0 = not sent yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..put_total).map(|_| AtomicU64::new(0)).collect());
    let watchers_total = (streams * watchers_per_stream) as u64;
    let pb = super::report::progress_bar(put_total * watchers_total);
    let seen = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams.max(1));
    let mut watch_tasks = Vec::new();
    for s in 0..streams {
        let mut client = WatchClient::new(conns[s % conns.len()].clone());
        let creates: Vec<WatchRequest> = (0..watchers_per_stream)
            .map(|_| WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let (sent, seen, ready_tx, pb) = (sent.clone(), seen.clone(), ready_tx.clone(), pb.clone());
        let token = tokens[s % conns.len()].clone();
        watch_tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            // Keep the request stream open for the life of the watch.
            let requests = futures::stream::iter(creates).chain(futures::stream::pending());
            let mut stream = match client.watch(auth::request(requests, &token)).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    rec.error(format!("watch: {}", e.message()));
                    let _ = ready_tx.send(()).await;
                    return rec;
                }
            };
            let mut created = 0;
            let mut events = 0u64;
            let want = put_total * watchers_per_stream as u64;
            while events < want {
                let msg = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => {
                        rec.error(format!("watch: {}", e.message()));
                        break;
                    }
                    Ok(None) => {
                        rec.error("watch stream closed");
                        break;
                    }
                    Err(_) => {
                        rec.error("watch: no event for 30 s");
                        break;
                    }
                };
                if msg.created {
                    created += 1;
                    if created == watchers_per_stream {
                        let _ = ready_tx.send(()).await;
                    }
                }
                for ev in msg.events {
                    let Some(kv) = ev.kv else { continue };
                    let Some(i) = kv
                        .value
                        .get(..8)
                        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                    else {
                        continue;
                    };
                    if let Some(t) = sent.get(i as usize).map(|t| t.load(Ordering::Acquire)) {
                        let now = start.elapsed().as_nanos() as u64;
                        rec.ok(Duration::from_nanos(now.saturating_sub(t)));
                    }
                    events += 1;
                    pb.set_position(seen.fetch_add(1, Ordering::Relaxed) + 1);
                }
            }
            rec
        }));
    }
    drop(ready_tx);
    for _ in 0..streams {
        if tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("watch streams were not created within 30 s");
        }
    }
    let mut kv = KvClient::new(conns[0].clone());
    let mut rec = Recorder::default();
    let put_start = Instant::now();
    for i in 0..put_total {
        if put_rate > 0.0 {
            tokio::time::sleep_until(
                (put_start + Duration::from_secs_f64(i as f64 / put_rate)).into(),
            )
            .await;
        }
        let mut value = i.to_be_bytes().to_vec();
        value.resize(val_size.max(8), 0);
        sent[i as usize].store(start.elapsed().as_nanos() as u64, Ordering::Release);
        if let Err(e) = kv
            .put(auth::request(
                PutRequest {
                    key: key.clone(),
                    value,
                    ..Default::default()
                },
                &tokens[0],
            ))
            .await
        {
            rec.error(format!("put: {}", e.message()));
        }
    }
    for t in watch_tasks {
        rec.merge(&t.await?);
    }
    pb.finish_and_clear();
    Ok((rec, put_start.elapsed()))
}
