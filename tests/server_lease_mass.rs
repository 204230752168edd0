//! Lease expiry under load (issue 13) on a two-shard member: N leases
//! (`CAIRN_MASS_LEASES`, default 2,000; the figure is 10,000), each
//! with one key on each shard; half are kept alive from one keepalive
//! stream, the others stop being renewed at once. Exactly the others' keys
//! disappear, each lease's two keys at one revision (a watch sees every
//! delete); the expiry pace is etcd's (at most 1,000 revokes a second), so
//! the wait allows for it. Then the member is killed (SIGKILL) and
//! restarted: the expired stay gone, and the kept-alive leases, renewed
//! again on the new process, keep every key past their TTL.

mod common;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use common::Cairn;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const TTL: i64 = 6;
/// Requests in flight while setting up.
const CONCURRENCY: usize = 32;
/// Leases granted before their keepalive starts.
const GRANT_CHUNK: usize = 200;
const PATIENCE: Duration = Duration::from_secs(120);

fn leases() -> usize {
    std::env::var("CAIRN_MASS_LEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Lease `i`'s key on `shard` (of 2).
fn key(i: usize, shard: usize) -> Vec<u8> {
    (0..)
        .map(|n| format!("m/{i:05}/{n}").into_bytes())
        .find(|k| cairn::shard::route::shard_of(k, 2) == shard)
        .expect("a key on the shard")
}

fn index_of(key: &[u8]) -> usize {
    let s = String::from_utf8_lossy(key);
    s.split('/')
        .nth(1)
        .and_then(|i| i.parse().ok())
        .expect("m/<i>/<n>")
}

/// Runs `f(i)` for every `i` in `0..n`, `CONCURRENCY` at a time.
async fn each<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Keeps `ids` alive from one stream, a round every second, until `stop`
/// fires; every answer must be the TTL. Awaited, it ends with the panic of
/// a failed check.
type Keeper = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

fn keep_alive(mut lease: LeaseClient<Channel>, ids: Vec<i64>) -> Keeper {
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut answers = lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .expect("keep-alive")
            .into_inner();
        loop {
            let send = async {
                for id in &ids {
                    tx.send(pb::LeaseKeepAliveRequest { id: *id })
                        .await
                        .expect("send");
                }
            };
            let check = async {
                for id in &ids {
                    let a = answers.message().await.expect("answer").expect("open");
                    assert_eq!((a.id, a.ttl), (*id, TTL), "a kept-alive lease expired");
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = futures::future::join(send, check) => {}
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    (stop_tx, task)
}

/// Stops a keeper, failing the test if one of its checks failed.
async fn stop(keeper: Keeper) {
    let (stop, task) = keeper;
    let _ = stop.send(());
    if let Err(e) = task.await {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn count(kv: &mut KvClient<Channel>) -> (i64, i64) {
    let r = kv
        .range(pb::RangeRequest {
            key: b"m/".to_vec(),
            range_end: b"m0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    (r.count, r.header.expect("header").revision)
}

#[test]
fn half_of_many_leases_expire_each_at_one_revision_and_the_rest_survive_a_kill() {
    let n = leases();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    let rt = common::rt();
    let ch = rt.block_on(c.channel());
    let (kept, keeper, start) = rt.block_on(async {
        // Each chunk of leases renewed from the moment it is granted,
        // while the rest are granted and the keys go in (which may take
        // longer than a TTL on a slow machine).
        let t0 = std::time::Instant::now();
        let ids: Vec<i64> = (1..=n as i64).collect();
        let mut setup = Vec::new();
        for chunk in ids.chunks(GRANT_CHUNK) {
            each(chunk.len(), |i| {
                let mut lease = LeaseClient::new(ch.clone());
                let id = chunk[i];
                async move {
                    lease
                        .lease_grant(pb::LeaseGrantRequest { ttl: TTL, id })
                        .await
                        .expect("grant");
                }
            })
            .await;
            setup.push(keep_alive(LeaseClient::new(ch.clone()), chunk.to_vec()));
        }
        eprintln!("mass: {n} leases granted in {:?}", t0.elapsed());
        let t0 = std::time::Instant::now();
        each(2 * n, |j| {
            let mut kv = KvClient::new(ch.clone());
            async move {
                kv.put(pb::PutRequest {
                    key: key(j / 2, j % 2),
                    value: b"v".to_vec(),
                    lease: (j / 2) as i64 + 1,
                    ..Default::default()
                })
                .await
                .expect("put");
            }
        })
        .await;
        eprintln!("mass: {} keys put in {:?}", 2 * n, t0.elapsed());
        let kept: Vec<i64> = ids.iter().copied().filter(|id| id % 2 == 0).collect();
        let keeper = keep_alive(LeaseClient::new(ch.clone()), kept.clone());
        for keeper in setup {
            stop(keeper).await;
        }
        let (keys, rev) = count(&mut KvClient::new(ch.clone())).await;
        assert_eq!(keys, 2 * n as i64);
        (kept, keeper, rev)
    });
    // Every delete, from the revision the keys were all there.
    let deleted: BTreeMap<usize, Vec<i64>> = rt.block_on(async {
        let mut watch = WatchClient::new(ch.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"m/".to_vec(),
                    range_end: b"m0".to_vec(),
                    start_revision: start + 1,
                    ..Default::default()
                },
            )),
        })
        .await
        .unwrap();
        let mut events = watch
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut deleted: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
        let mut seen = 0;
        let t0 = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while seen < n {
            let r = tokio::time::timeout_at(deadline, events.message())
                .await
                .unwrap_or_else(|_| panic!("{seen} of {n} expired keys deleted in time"))
                .expect("watch")
                .expect("open");
            for e in r.events {
                assert_eq!(e.r#type, mvccpb::event::EventType::Delete as i32, "{e:?}");
                let kv = e.kv.expect("kv");
                deleted
                    .entry(index_of(&kv.key))
                    .or_default()
                    .push(kv.mod_revision);
                seen += 1;
            }
        }
        eprintln!("mass: {n} keys expired in {:?}", t0.elapsed());
        drop(tx);
        stop(keeper).await;
        deleted
    });
    let expired: Vec<usize> = deleted.keys().copied().collect();
    let want: Vec<usize> = (0..n).filter(|i| (i + 1) % 2 == 1).collect();
    assert_eq!(expired, want, "exactly the leases not kept alive expired");
    for (i, revs) in &deleted {
        assert!(
            revs.len() == 2 && revs[0] == revs[1],
            "lease {}: its keys went at {revs:?}",
            i + 1
        );
    }
    // A SIGKILL, a restart: the kept leases get their TTL again and are
    // renewed on a new stream; nothing more goes.
    c.crash();
    c.restart();
    let ch = rt.block_on(c.channel());
    rt.block_on(async {
        let mut kv = KvClient::new(ch.clone());
        assert_eq!(count(&mut kv).await.0, n as i64, "after the restart");
        let keeper = keep_alive(LeaseClient::new(ch.clone()), kept.clone());
        tokio::time::sleep(Duration::from_secs(TTL as u64 + 3)).await;
        stop(keeper).await;
        assert_eq!(count(&mut kv).await.0, n as i64, "a TTL later");
        let listed = LeaseClient::new(ch.clone())
            .lease_leases(pb::LeaseLeasesRequest {})
            .await
            .expect("leases")
            .into_inner()
            .leases
            .len();
        assert_eq!(listed, kept.len());
    });
}
