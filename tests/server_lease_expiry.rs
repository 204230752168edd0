//! Lease expiry and restarts, side by side with a real etcd 3.4.23 (the
//! scheme of `server_lease.rs`: every cairn step checked against etcd's,
//! server-chosen IDs as labels, remaining TTLs as there), on a two-shard
//! member. Expiry times are checked against bounds, not compared: etcd
//! revokes an expired lease from a 500 ms loop through a Raft entry, which
//! can take seconds on a loaded machine.
//!
//! `CAIRN_LEASE_ETCD_ONLY=1` runs etcd's side alone and prints its steps.

mod common;
#[allow(dead_code)]
mod lease_harness;

use lease_harness::*;
use pb::lease_client::LeaseClient;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const TTL: i64 = 2;
/// How late after its TTL a lease may be revoked (etcd can take seconds).
const SLACK: Duration = Duration::from_secs(10);

fn secs(s: i64) -> Duration {
    Duration::from_secs(s as u64)
}

/// Keeps `id` alive every 500 ms, until `stop` is set and `until` has
/// passed; the TTLs answered.
async fn keep_alive_every(
    mut lease: LeaseClient<Channel>,
    id: i64,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<i64> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = pb::LeaseKeepAliveRequest { id };
    tx.send(req).await.unwrap();
    let mut s = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keep-alive")
        .into_inner();
    let mut ttls = Vec::new();
    loop {
        let m = tokio::time::timeout(PATIENCE, s.message()).await;
        ttls.push(
            m.expect("an answer in time")
                .expect("keep-alive")
                .expect("open")
                .ttl,
        );
        if stop.load(Ordering::SeqCst) && Instant::now() >= until {
            return ttls;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(req).await.unwrap();
    }
}

/// Three TTL-2 leases (keys on both shards; one key on shard 0; one on
/// shard 1) expire: each lease's keys go at one revision, in key order,
/// no sooner than the TTL and within TTL + 10 s; TimeToLive -1 and
/// keep-alive 0 afterwards. A fourth, kept alive every 0.5 s, outlives
/// 3×TTL, then expires once left alone.
async fn expiry_script(mut r: Run) -> Run {
    assert_eq!((shard_of("d"), shard_of("k")), (0, 1));
    common::put(&mut r.kv, "z", "no lease").await;
    let mut w = r.watch(0).await;
    let t0 = Instant::now();
    let l = r.grant("TTL 2: keys on both shards", TTL, 0).await;
    let ld = r.grant("TTL 2: d", TTL, 0).await;
    let lk = r.grant("TTL 2: k", TTL, 0).await;
    let kept = r.grant("TTL 2: kept alive", TTL, 0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let until = t0 + 3 * secs(TTL) + Duration::from_millis(500);
    let alive = tokio::spawn(keep_alive_every(r.lease.clone(), kept, until, stop.clone()));
    for (k, lease) in [
        ("a", l),
        ("a/x", l),
        ("b", l),
        ("c", l),
        ("d", ld),
        ("k", lk),
        ("kept", kept),
    ] {
        r.put(&format!("put {k}"), put_req(k, "v", lease)).await;
    }
    let puts = r.events(&mut w, 7, deadline()).await;
    r.fact("watch: the puts", puts);
    let deletes = w.events(6, t0 + secs(TTL) + SLACK).await;
    let took = t0.elapsed();
    println!(
        "{}: the TTL {TTL} leases' keys went after {took:?}",
        r.server.name()
    );
    r.fact(
        "not before the TTL, within TTL + 10 s",
        took >= secs(TTL) && took <= secs(TTL) + SLACK,
    );
    let mut by_rev: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in &deletes {
        let (kv, prev) = (
            e.kv.clone().unwrap_or_default(),
            e.prev_kv.clone().unwrap_or_default(),
        );
        let text = format!(
            "{} {} lease {}",
            e.r#type,
            String::from_utf8_lossy(&kv.key),
            r.id(prev.lease)
        );
        by_rev.entry(kv.mod_revision).or_default().push(text);
    }
    r.fact(
        "revisions of the deletes",
        by_rev.keys().collect::<Vec<_>>(),
    );
    let mut groups: Vec<_> = by_rev.into_values().collect();
    groups.sort();
    r.fact("each lease's keys at one revision, in key order", groups);
    for (label, id) in [("L1", l), ("L2", ld), ("L3", lk)] {
        r.ttl(&format!("TimeToLive of {label} after expiry"), id, true)
            .await;
    }
    let mut ka = r.keep_alive("keep-alive of L1 after expiry", l).await;
    r.ka(&mut ka, "keep-alive of L3 after expiry", lk).await;
    r.range("left: z and kept", 0).await;
    tokio::time::sleep_until(until.into()).await;
    stop.store(true, Ordering::SeqCst);
    let ttls = alive.await.unwrap();
    r.fact(
        "every keep-alive answered TTL 2",
        ttls.iter().all(|&t| t == TTL) && ttls.len() >= 12,
    );
    r.ka(&mut ka, "kept, renewed past 3×TTL", kept).await;
    r.ttl("kept", kept, true).await;
    r.range("kept is still there", 0).await;
    let gone = r
        .events(&mut w, 1, Instant::now() + secs(TTL) + SLACK)
        .await;
    r.fact("left alone, it expires", gone);
    r.ttl("TimeToLive after", kept, true).await;
    r
}

/// Leases survive a SIGTERM and a SIGKILL restart with their keys, and each
/// gets its full TTL again (no checkpoints in etcd 3.4 by default): a TTL 4
/// lease down to 2 s before the restart has 4 s again after it, then
/// expires.
async fn restart_script(mut r: Run) -> Run {
    let l = r.grant("TTL 100", 100, 0).await;
    r.grant("client ID 9, TTL 100", 100, 9).await;
    let short = r.grant("TTL 4", 4, 0).await;
    for k in KEYS {
        r.put(&format!("put {k}"), put_req(k, "v", l)).await;
    }
    r.put("put s", put_req("s", "v", short)).await;
    r.put("put n", put_req("n", "v", 9)).await;
    r.range("before the restarts", 0).await;
    let by = deadline();
    loop {
        let req = pb::LeaseTimeToLiveRequest {
            id: short,
            keys: false,
        };
        let t = r
            .lease
            .lease_time_to_live(req)
            .await
            .expect("TimeToLive")
            .into_inner();
        assert!(t.ttl > 0 && Instant::now() < by, "{t:?}");
        if t.ttl <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.restart(false).await;
    let restarted = Instant::now();
    r.ttl("TTL 100 after SIGTERM: full again", l, true).await;
    r.ttl("TTL 4 after SIGTERM: full again", short, true).await;
    r.ttl("client ID 9", 9, true).await;
    r.leases("the leases", true).await;
    r.range("after SIGTERM", 0).await;
    let mut ka = r.keep_alive("keep-alive", l).await;
    r.ka(&mut ka, "keep-alive of 9", 9).await;
    let by = restarted + secs(4 + 1) + SLACK;
    loop {
        let req = pb::RangeRequest {
            key: b"s".to_vec(),
            ..Default::default()
        };
        let n = r.kv.range(req).await.expect("range").into_inner().count;
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < by,
            "s is still there after {:?}",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = restarted.elapsed();
    println!(
        "{}: the TTL 4 lease expired {took:?} after the restart",
        r.server.name()
    );
    r.fact(
        "the TTL 4 lease expired 2 s or more after the restart",
        took >= secs(2),
    );
    r.ttl("TTL 4 after it expired", short, true).await;
    r.range("after the expiry", 0).await;
    r.restart(true).await;
    r.ttl("TTL 100 after SIGKILL: full again", l, true).await;
    r.leases("the leases", true).await;
    r.range("after SIGKILL", 0).await;
    r
}

#[test]
fn expired_leases_delete_their_keys_as_etcd() {
    side_by_side(&[2], expiry_script);
}

#[test]
fn leases_survive_restarts_as_etcd() {
    side_by_side(&[2], restart_script);
}
