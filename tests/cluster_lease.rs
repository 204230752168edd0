//! Leases in a 3-member cluster (in one process, over the channel
//! transport): every lease RPC works through every member (followers
//! forward to the write leader), a revoke deletes every key of the lease on
//! both shards at one revision on every member, and a lease kept alive
//! through a follower survives the write leader's stop while an idle one
//! expires on the new leader, its keys at one revision; a Lock (built on
//! leases) is handed over between contenders on different members.

mod common;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use common::cluster::{retry, Cluster, MEMBERS, SETTLE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALL: Duration = Duration::from_secs(10);

async fn lease_client(
    url: String,
) -> Result<LeaseClient<tonic::transport::Channel>, tonic::Status> {
    LeaseClient::connect(url)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

async fn kv_client(url: String) -> Result<KvClient<tonic::transport::Channel>, tonic::Status> {
    KvClient::connect(url)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL, f)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("client timeout"))?
        .map(tonic::Response::into_inner)
}

fn grant(c: &Cluster, i: usize, ttl: i64) -> Result<pb::LeaseGrantResponse, tonic::Status> {
    let url = c.url(i);
    c.rt.block_on(async move {
        let mut l = lease_client(url).await?;
        timed(l.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })).await
    })
}

fn revoke(c: &Cluster, i: usize, id: i64) -> Result<pb::LeaseRevokeResponse, tonic::Status> {
    let url = c.url(i);
    c.rt.block_on(async move {
        let mut l = lease_client(url).await?;
        timed(l.lease_revoke(pb::LeaseRevokeRequest { id })).await
    })
}

fn time_to_live(
    c: &Cluster,
    i: usize,
    id: i64,
) -> Result<pb::LeaseTimeToLiveResponse, tonic::Status> {
    let url = c.url(i);
    c.rt.block_on(async move {
        let mut l = lease_client(url).await?;
        timed(l.lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })).await
    })
}

/// One keepalive through member `i`, on a stream of its own.
async fn keep_alive_once(url: String, id: i64) -> Result<i64, tonic::Status> {
    let mut l = lease_client(url).await?;
    let req = tonic::codegen::tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
    let mut answers = timed(l.lease_keep_alive(req)).await?;
    let answer = tokio::time::timeout(CALL, answers.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("client timeout"))??
        .ok_or_else(|| tonic::Status::unavailable("the stream ended"))?;
    Ok(answer.ttl)
}

fn put_with_lease(c: &Cluster, i: usize, key: &str, lease: i64) -> Result<i64, tonic::Status> {
    let url = c.url(i);
    let key = key.as_bytes().to_vec();
    c.rt.block_on(async move {
        let mut kv = kv_client(url).await?;
        let r = timed(kv.put(pb::PutRequest {
            key,
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }))
        .await?;
        Ok(r.header.expect("header").revision)
    })
}

/// The keys under `prefix` on member `i` (serializable: its own state),
/// at `revision` (0: the newest).
fn keys_at(c: &Cluster, i: usize, prefix: &str, revision: i64) -> Vec<String> {
    let url = c.url(i);
    let key = prefix.as_bytes().to_vec();
    let mut end = key.clone();
    *end.last_mut().expect("a prefix") += 1;
    let r =
        c.rt.block_on(async move {
            let mut kv = kv_client(url).await?;
            timed(kv.range(pb::RangeRequest {
                key,
                range_end: end,
                revision,
                serializable: true,
                keys_only: true,
                ..Default::default()
            }))
            .await
        })
        .expect("range");
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// Keys under `prefix` that land on both shards of member 0.
fn keys_on_both_shards(c: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let member = &c.members[0].as_ref().expect("running").member;
    let mut keys = Vec::new();
    let mut shards = std::collections::BTreeSet::new();
    for k in 0.. {
        let key = format!("{prefix}{k:02}");
        shards.insert(member.route(&[(key.as_bytes(), b"")]).expect("one shard"));
        keys.push(key);
        if keys.len() >= n && shards.len() == 2 {
            return keys;
        }
    }
    unreachable!()
}

/// Waits until member `i` has applied revision `rev`.
fn reaches(c: &Cluster, i: usize, rev: i64) {
    let m = &c.members[i].as_ref().expect("running").member;
    let deadline = Instant::now() + SETTLE;
    while m.seq.committed() < rev {
        assert!(Instant::now() < deadline, "member {i} never reached {rev}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that the keys under `prefix` on member `i` went from all of
/// `keys` to none in one revision between `from` and `to`; returns it.
fn gone_at_once(c: &Cluster, i: usize, prefix: &str, keys: &[String], from: i64, to: i64) -> i64 {
    let mut gone = None;
    for rev in from..=to {
        let at = keys_at(c, i, prefix, rev);
        match (gone, at.len()) {
            (None, n) if n == keys.len() => assert_eq!(at, keys, "member {i} at {rev}"),
            (None, 0) => gone = Some(rev),
            (Some(_), 0) => {}
            _ => panic!("member {i} at {rev}: {at:?} (of {keys:?}): not all at once"),
        }
    }
    gone.unwrap_or_else(|| panic!("member {i}: {prefix} still there at {to}"))
}

#[test]
fn every_lease_rpc_works_through_every_member_and_a_revoke_deletes_at_one_revision() {
    let c = Cluster::start(11, &[]);
    let leader = c.leader(&[]);
    let (f1, f2) = ((leader + 1) % MEMBERS, (leader + 2) % MEMBERS);
    // Granted through a follower (forwarded), used through the other one.
    let g = retry("grant", || grant(&c, f1, 30));
    assert_eq!(g.ttl, 30);
    assert_ne!(g.id, 0);
    let keys = keys_on_both_shards(&c, "l/", 6);
    let mut last = 0;
    for k in &keys {
        last = retry("put", || put_with_lease(&c, f2, k, g.id));
    }
    let e = put_with_lease(&c, f1, "l/unknown", g.id + 1).expect_err("unknown lease");
    assert_eq!(e.message(), "etcdserver: requested lease not found");
    let ttl = time_to_live(&c, f2, g.id).expect("time to live");
    assert_eq!(ttl.granted_ttl, 30);
    assert!((25..=30).contains(&ttl.ttl), "{}", ttl.ttl);
    let mut listed: Vec<String> = ttl
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, keys);
    let renewed =
        c.rt.block_on(keep_alive_once(c.url(f2), g.id))
            .expect("keepalive");
    assert_eq!(renewed, 30);
    let unknown =
        c.rt.block_on(keep_alive_once(c.url(f1), g.id + 1))
            .expect("keepalive");
    assert_eq!(unknown, 0, "an unknown lease renews to TTL 0");
    let url = c.url(f1);
    let leases =
        c.rt.block_on(async move {
            let mut l = lease_client(url).await?;
            timed(l.lease_leases(pb::LeaseLeasesRequest {})).await
        })
        .expect("leases");
    assert_eq!(
        leases.leases.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![g.id]
    );
    // Revoked through a follower: every member drops every key at the
    // revision the answer names, which the follower already shows.
    let r = revoke(&c, f2, g.id).expect("revoke");
    let at = r.header.expect("header").revision;
    assert!(at > last, "{at} after {last}");
    assert!(keys_at(&c, f2, "l/", 0).is_empty(), "read-your-revoke");
    for i in 0..MEMBERS {
        reaches(&c, i, at);
        assert_eq!(gone_at_once(&c, i, "l/", &keys, last, at), at, "member {i}");
    }
    let e = revoke(&c, f1, g.id).expect_err("revoked twice");
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "etcdserver: requested lease not found");
    assert_eq!(time_to_live(&c, leader, g.id).expect("ttl").ttl, -1);
}

#[test]
fn a_lease_kept_alive_through_a_follower_outlives_the_leader_and_an_idle_one_expires() {
    let mut c = Cluster::start(12, &[]);
    let old = c.leader(&[]);
    let (f1, f2) = ((old + 1) % MEMBERS, (old + 2) % MEMBERS);
    let kept = retry("grant", || grant(&c, f1, 3)).id;
    let idle = retry("grant", || grant(&c, f1, 3)).id;
    let kept_keys = keys_on_both_shards(&c, "kept/", 2);
    let idle_keys = keys_on_both_shards(&c, "idle/", 2);
    let mut last = 0;
    for k in &kept_keys {
        last = retry("put", || put_with_lease(&c, f1, k, kept));
    }
    for k in &idle_keys {
        last = retry("put", || put_with_lease(&c, f1, k, idle));
    }
    // Keeps `kept` alive through f2 every 500 ms (a new stream each time:
    // a stream whose renew failed ends), recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let keeper = {
        let (stop, answers, url) = (stop.clone(), answers.clone(), c.url(f2));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let end = Instant::now() + SETTLE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let r = rt.block_on(keep_alive_once(url.clone(), kept));
                answers
                    .lock()
                    .unwrap()
                    .push(r.map_err(|e| e.message().to_string()));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    c.stop(old);
    let new = c.leader(&[old]);
    // The idle lease gets its TTL again from the failover (3 s plus an
    // election timeout), then expires; the kept one is renewed throughout.
    let deadline = Instant::now() + SETTLE;
    while !keys_at(&c, f2, "idle/", 0).is_empty() {
        assert!(Instant::now() < deadline, "the idle lease never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more TTLs: the kept lease would have expired by now if it had
    // not been renewed through the failover.
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    keeper.join().expect("keeper");
    let answers = answers.lock().unwrap().clone();
    assert!(
        !answers.iter().any(|a| a == &Ok(0)),
        "the kept lease was never reported expired: {answers:?}"
    );
    assert!(
        answers.iter().rev().take(3).all(|a| a == &Ok(3)),
        "renewed through the new leader: {answers:?}"
    );
    let ttl = retry("time to live", || time_to_live(&c, f2, kept));
    assert!(ttl.ttl > 0, "{ttl:?}");
    assert_eq!(ttl.keys.len(), kept_keys.len());
    assert_eq!(retry("time to live", || time_to_live(&c, f1, idle)).ttl, -1);
    let now = c.members[new]
        .as_ref()
        .expect("running")
        .member
        .seq
        .committed();
    for i in [f1, f2] {
        reaches(&c, i, now);
        assert_eq!(keys_at(&c, i, "kept/", 0), kept_keys, "member {i}");
        gone_at_once(&c, i, "idle/", &idle_keys, last, now);
    }
}

#[test]
fn a_lock_taken_through_one_follower_is_handed_over_through_another() {
    use cairn_proto::v3lockpb as lpb;
    use lpb::lock_client::LockClient;
    let c = Cluster::start(13, &[]);
    let leader = c.leader(&[]);
    let (f1, f2) = ((leader + 1) % MEMBERS, (leader + 2) % MEMBERS);
    let first = retry("grant", || grant(&c, f1, 30)).id;
    let second = retry("grant", || grant(&c, f2, 30)).id;
    let lock = |i: usize, lease: i64| {
        let url = c.url(i);
        async move {
            let mut l = LockClient::connect(url)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            l.lock(lpb::LockRequest {
                name: b"cluster-lock".to_vec(),
                lease,
            })
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let held = c.rt.block_on(lock(f1, first)).expect("the first lock");
    assert_eq!(held.key, format!("cluster-lock/{first:x}").into_bytes());
    // The second waits (through the other follower) until the first is
    // unlocked (through the leader).
    let waiting = c.rt.spawn(lock(f2, second));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!waiting.is_finished(), "the second lock waits");
    let url = c.url(leader);
    let key = held.key.clone();
    c.rt.block_on(async move {
        let mut l = LockClient::connect(url).await.expect("connect");
        l.unlock(lpb::UnlockRequest { key }).await.expect("unlock");
    });
    let got =
        c.rt.block_on(async { tokio::time::timeout(CALL, waiting).await })
            .expect("handed over in time")
            .expect("task")
            .expect("the second lock");
    assert_eq!(got.key, format!("cluster-lock/{second:x}").into_bytes());
    assert!(
        got.header.expect("header").revision > held.header.expect("header").revision,
        "taken after the first was"
    );
}

/// Two keys under `prefix` on different shards (by member 0's routing).
fn pair_on_two_shards(c: &Cluster, prefix: &str) -> [String; 2] {
    let member = &c.members[0].as_ref().expect("running").member;
    let shard = |k: &str| member.route(&[(k.as_bytes(), b"")]).expect("one shard");
    let first = format!("{prefix}0");
    let other = (1..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| shard(k) != shard(&first))
        .expect("a key on the other shard");
    [first, other]
}

/// Every (lease, TTL) a keeper was answered, and the errors it saw.
type Renewals = (Vec<(i64, i64)>, Vec<String>);

/// Keeps `ids` (as they are added) alive through `url` until `stop`: one
/// keepalive stream a second, every id on it; a stream that fails (a
/// leader change) is opened again. Returns every (id, TTL) answered and
/// the errors seen.
fn keep_alive_all(
    url: String,
    ids: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Renewals> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (mut answers, mut errors) = (Vec::new(), Vec::new());
        let end = Instant::now() + SETTLE * 2;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let ids = ids.lock().unwrap().clone();
            let round = rt.block_on(async {
                let mut l = lease_client(url.clone()).await?;
                let reqs: Vec<_> = ids
                    .iter()
                    .map(|id| pb::LeaseKeepAliveRequest { id: *id })
                    .collect();
                let mut stream =
                    timed(l.lease_keep_alive(tonic::codegen::tokio_stream::iter(reqs))).await?;
                let mut got = Vec::new();
                while got.len() < ids.len() {
                    let a = tokio::time::timeout(CALL, stream.message())
                        .await
                        .map_err(|_| tonic::Status::deadline_exceeded("client timeout"))??
                        .ok_or_else(|| tonic::Status::unavailable("the stream ended"))?;
                    got.push((a.id, a.ttl));
                }
                Ok::<_, tonic::Status>(got)
            });
            match round {
                Ok(got) => answers.extend(got),
                Err(e) => errors.push(e.message().to_string()),
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
        (answers, errors)
    })
}

/// The issue's "lease expiry under load … in a 3-member cluster across a
/// leader kill", scaled to the in-process cluster: of many leases with
/// keys on both shards, the half kept alive through a follower all survive
/// the write leader's stop, and every idle one expires with its two keys
/// deleted at one revision (as a watch on a follower sees it).
#[test]
fn many_leases_across_a_leader_stop_kept_ones_live_idle_ones_go_whole() {
    const EACH: usize = 30;
    const TTL: i64 = 8;
    let mut c = Cluster::start(14, &[]);
    let old = c.leader(&[]);
    let (f1, f2) = ((old + 1) % MEMBERS, (old + 2) % MEMBERS);
    // Grants `EACH` leases through f1 and puts their keys (two per lease,
    // one per shard) over one connection; returns (lease, keys) and the
    // last put's revision.
    let make = |group: &str, keep: Option<Arc<Mutex<Vec<i64>>>>| {
        let keys: Vec<[String; 2]> = (0..EACH)
            .map(|j| pair_on_two_shards(&c, &format!("many/{group}{j:03}/")))
            .collect();
        let url = c.url(f1);
        c.rt.block_on(async move {
            let mut leases = lease_client(url.clone()).await.expect("lease");
            let mut kv = kv_client(url).await.expect("kv");
            let (mut made, mut last) = (Vec::new(), 0);
            for keys in keys {
                let grant = pb::LeaseGrantRequest { ttl: TTL, id: 0 };
                let id = timed(leases.lease_grant(grant)).await.expect("grant").id;
                if let Some(keep) = &keep {
                    keep.lock().unwrap().push(id);
                }
                for k in &keys {
                    let r = timed(kv.put(pb::PutRequest {
                        key: k.as_bytes().to_vec(),
                        value: b"v".to_vec(),
                        lease: id,
                        ..Default::default()
                    }))
                    .await
                    .expect("put");
                    last = r.header.expect("header").revision;
                }
                made.push((id, keys));
            }
            (made, last)
        })
    };
    // The kept leases are renewed from their grant on; the idle ones are
    // made last, so they expire after the leader stops.
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let keeper = keep_alive_all(c.url(f2), ids.clone(), stop.clone());
    let (kept, _) = make("k", Some(ids.clone()));
    let (idle, last) = make("i", None);
    // A watch on f1 sees every idle key's deletion.
    let deletes = {
        let url = c.url(f1);
        let want = 2 * EACH;
        c.rt.spawn(async move {
            use cairn_proto::etcdserverpb::watch_client::WatchClient;
            let create = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: b"many/i".to_vec(),
                        range_end: b"many/j".to_vec(),
                        start_revision: last + 1,
                        ..Default::default()
                    },
                )),
            };
            let mut w = WatchClient::connect(url).await.expect("watch connect");
            // The request stream stays open (the server ends a watch stream
            // whose requests end).
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(create).await.expect("queued");
            let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
            let mut events = w.watch(requests).await.expect("watch").into_inner();
            let mut seen = Vec::new();
            while seen.len() < want {
                let Ok(Ok(Some(r))) = tokio::time::timeout(SETTLE * 2, events.message()).await
                else {
                    break;
                };
                for e in r.events {
                    let kv = e.kv.expect("kv");
                    seen.push((
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        kv.mod_revision,
                        e.r#type,
                    ));
                }
            }
            drop(tx);
            seen
        })
    };
    c.stop(old);
    let new = c.leader(&[old]);
    let deadline = Instant::now() + SETTLE;
    while !keys_at(&c, f2, "many/i", 0).is_empty() {
        assert!(Instant::now() < deadline, "idle leases never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two more TTLs: a kept lease not renewed through the failover would
    // be gone by now.
    std::thread::sleep(Duration::from_secs(2 * TTL as u64));
    stop.store(true, Ordering::Relaxed);
    let (answers, errors) = keeper.join().expect("keeper");
    let expired: Vec<_> = answers.iter().filter(|(_, ttl)| *ttl <= 0).collect();
    assert!(
        expired.is_empty(),
        "kept leases answered expired: {expired:?} (errors {errors:?})"
    );
    assert!(
        answers.len() >= 3 * EACH,
        "few renewals: {} ({errors:?})",
        answers.len()
    );
    let now = c.members[new]
        .as_ref()
        .expect("running")
        .member
        .seq
        .committed();
    let mut want_kept: Vec<String> = kept.iter().flat_map(|(_, ks)| ks.clone()).collect();
    want_kept.sort();
    for i in [f1, f2] {
        reaches(&c, i, now);
        assert_eq!(keys_at(&c, i, "many/k", 0), want_kept, "member {i}");
        assert!(keys_at(&c, i, "many/i", 0).is_empty(), "member {i}");
    }
    let seen = c.rt.block_on(deletes).expect("watch task");
    assert_eq!(seen.len(), 2 * EACH, "deletions seen: {seen:?}");
    let revision_of = |k: &str| {
        seen.iter()
            .find(|(key, _, _)| key == k)
            .map(|(_, rev, typ)| {
                assert_eq!(*typ, 1, "{k}: a delete");
                *rev
            })
            .unwrap_or_else(|| panic!("{k} never deleted"))
    };
    for (id, [a, b]) in &idle {
        assert_eq!(
            revision_of(a),
            revision_of(b),
            "lease {id:x}: its keys at one revision"
        );
    }
}
