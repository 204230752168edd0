//! The lease workload: clients that grant leases, attach keys to them and
//! keep them alive, revoke them or let them expire, recording every request
//! (see `cairn_check::history`'s lease calls; `cairn_check::leases` checks
//! the history against the watch streams on `l/`).
//!
//! Each client loops until the run's deadline, one request in flight:
//! grant a lease (TTL 5 or 6 s, above cairn's minimum of 1–2 s for the
//! harness's Raft timings), put 2–4 keys `l/<lease hex>/<i>` chosen so that
//! they land on different shards (cairn routes a key by `crc32(key) %
//! shards`, `src/shard/route.rs`), then one of: keep it alive for a while
//! and revoke it; keep it alive for a while and stop (it must expire); never
//! keep it alive (it expires after its TTL). Keepalives go over one
//! LeaseKeepAlive stream every TTL/3, each recorded as an op with the TTL
//! it answered. Errors and timeouts are unknown outcomes, as in
//! [`super::workload`]; a put refused because the lease is gone failed.

use super::workload::{bytes, call, header_revision, Answer, Ctx, OP_TIMEOUT};
use cairn_check::history::{Call, Done, Outcome};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest,
};
use rand::rngs::StdRng;
use rand::RngExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The prefix of every lease key (the watcher on it: `l/` to `l0`).
pub const PREFIX: &str = "l/";
/// Keepalives per lease at most.
const KEEPALIVES_MAX: u32 = 30;
/// Keys per lease at most.
const KEYS_MAX: usize = 4;

/// CRC-32 (IEEE), as `crc32fast::hash`, which cairn's shard routing uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The shard that owns `key` (cairn's `shard::route::shard_of`).
pub fn shard_of(key: &str, shards: usize) -> usize {
    crc32(key.as_bytes()) as usize % shards.max(1)
}

/// `count` keys of `lease`, covering as many shards as there are keys.
pub fn lease_keys(lease: i64, count: usize, shards: usize) -> Vec<String> {
    let key = |i: usize| format!("{PREFIX}{lease:x}/{i}");
    let mut picked: Vec<usize> = Vec::new();
    let mut covered = vec![false; shards.max(1)];
    for i in 0..64 {
        if picked.len() == count {
            break;
        }
        let s = shard_of(&key(i), shards);
        if !covered[s] {
            covered[s] = true;
            picked.push(i);
        }
    }
    let mut i = 0;
    while picked.len() < count {
        if !picked.contains(&i) {
            picked.push(i);
        }
        i += 1;
    }
    picked.sort_unstable();
    picked.into_iter().map(key).collect()
}

/// What a client does with a lease after its puts.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Keep it alive `n` times, then revoke it.
    Revoke(u32),
    /// Keep it alive `n` times, then let it expire.
    Expire(u32),
    /// Let it expire at once.
    Never,
}

/// One lease client until `deadline` (see the module docs).
pub async fn lease_client(
    ctx: Arc<Ctx>,
    client: u32,
    shards: usize,
    mut rng: StdRng,
    deadline: Instant,
) {
    let mut endpoint = client as usize;
    let mut n = 0u64;
    let running = |ctx: &Ctx| !ctx.stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    while running(&ctx) {
        let channel = ctx.channel(endpoint);
        let mut leases = LeaseClient::new(channel.clone());
        let mut kv = KvClient::new(channel);
        let ttl = rng.random_range(5..=6);
        let Some((lease, ttl)) = grant(&ctx, &mut leases, client, ttl).await else {
            endpoint += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
            continue;
        };
        let count = rng.random_range(2..=KEYS_MAX);
        let mut errored = false;
        for key in lease_keys(lease, count, shards) {
            n += 1;
            let value = format!("l{client}-{n}");
            if !put(&ctx, &mut kv, client, key, value, lease).await {
                errored = true;
                break;
            }
        }
        let renewals = rng.random_range(1..=6);
        let plan = match rng.random_range(0..3) {
            _ if errored => Plan::Never,
            0 => Plan::Revoke(renewals),
            1 => Plan::Expire(renewals),
            _ => Plan::Never,
        };
        let every = Duration::from_millis(ttl.max(1) as u64 * 1000 / 3);
        let (Plan::Revoke(times) | Plan::Expire(times)) = plan else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
            if errored {
                endpoint += 1;
            }
            continue;
        };
        let mut keeper = Keeper {
            leases,
            endpoint,
            stream: None,
        };
        let gone = keeper
            .keep_alive(&ctx, client, lease, times, every, &running)
            .await;
        endpoint = keeper.endpoint;
        if let (Plan::Revoke(_), false, true) = (plan, gone, running(&ctx)) {
            revoke(&ctx, &mut keeper.leases, client, lease).await;
        }
    }
}

/// A recorded LeaseGrant; the lease and its TTL if answered.
async fn grant(
    ctx: &Ctx,
    leases: &mut LeaseClient<Channel>,
    client: u32,
    ttl: i64,
) -> Option<(i64, i64)> {
    let invoke = ctx.recorder.now_us();
    let answer = match call(leases.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await {
        Answer::Ok(r) if !r.error.is_empty() => Answer::Failed(r.error),
        a => a,
    };
    let r = ctx.settle(client, invoke, Call::LeaseGrant { ttl }, answer, |r| Done {
        revision: header_revision(&r.header),
        lease: r.id,
        ttl: r.ttl,
        ..Done::default()
    })?;
    Some((r.id, r.ttl))
}

/// A recorded LeasePut; whether it was answered.
async fn put(
    ctx: &Ctx,
    kv: &mut KvClient<Channel>,
    client: u32,
    key: String,
    value: String,
    lease: i64,
) -> bool {
    let invoke = ctx.recorder.now_us();
    let answer = match call(kv.put(PutRequest {
        key: bytes(&key),
        value: bytes(&value),
        lease,
        ..Default::default()
    }))
    .await
    {
        // NotFound: the lease is gone, nothing was written.
        Answer::Unknown(e) if e.starts_with("NotFound") => Answer::Failed(e),
        a => a,
    };
    let call_ = Call::LeasePut { key, value, lease };
    ctx.settle(client, invoke, call_, answer, |r| Done {
        revision: header_revision(&r.header),
        ..Done::default()
    })
    .is_some()
}

/// A keepalive stream and where it goes.
struct Keeper {
    leases: LeaseClient<Channel>,
    endpoint: usize,
    /// The open stream: its requests' sender and its responses.
    stream: Option<(
        tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
        tonic::Streaming<LeaseKeepAliveResponse>,
    )>,
}

impl Keeper {
    /// Keeps `lease` alive `times` times, `every` apart, each keepalive
    /// recorded; after a break the next one goes over a new stream to the
    /// next member. True when a keepalive answered that the lease is gone
    /// (TTL ≤ 0).
    async fn keep_alive(
        &mut self,
        ctx: &Ctx,
        client: u32,
        lease: i64,
        times: u32,
        every: Duration,
        running: &impl Fn(&Ctx) -> bool,
    ) -> bool {
        for _ in 0..times.min(KEEPALIVES_MAX) {
            tokio::time::sleep(every).await;
            if !running(ctx) {
                return false;
            }
            let invoke = ctx.recorder.now_us();
            let outcome = match self.once(lease).await {
                Answer::Ok(r) => Outcome::Ok(Done {
                    revision: header_revision(&r.header),
                    ttl: r.ttl,
                    ..Done::default()
                }),
                Answer::Failed(error) => Outcome::Failed { error },
                Answer::Unknown(error) => Outcome::Unknown { error },
            };
            let gone = matches!(&outcome, Outcome::Ok(d) if d.ttl <= 0);
            if !matches!(outcome, Outcome::Ok(_)) {
                self.stream = None;
                self.endpoint += 1;
                self.leases = LeaseClient::new(ctx.channel(self.endpoint));
            }
            ctx.op(client, invoke, Call::LeaseKeepAlive { lease }, outcome);
            if gone {
                return true;
            }
        }
        false
    }

    /// One keepalive request and its answer, over the open stream or a new
    /// one.
    async fn once(&mut self, lease: i64) -> Answer<LeaseKeepAliveResponse> {
        let request = LeaseKeepAliveRequest { id: lease };
        match self.stream.as_ref() {
            None => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(1);
                let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
                if tx.try_send(request).is_err() {
                    return Answer::Failed("could not queue the keepalive".into());
                }
                match call(self.leases.lease_keep_alive(requests)).await {
                    Answer::Ok(s) => self.stream = Some((tx, s)),
                    Answer::Failed(e) | Answer::Unknown(e) => return Answer::Unknown(e),
                }
            }
            Some((tx, _)) => {
                if tx.try_send(request).is_err() {
                    return Answer::Unknown("the keepalive stream is closed".into());
                }
            }
        }
        let Some((_, s)) = self.stream.as_mut() else {
            return Answer::Unknown("no keepalive stream".into());
        };
        match tokio::time::timeout(OP_TIMEOUT, s.message()).await {
            Ok(Ok(Some(r))) => Answer::Ok(r),
            Ok(Ok(None)) => Answer::Unknown("the keepalive stream ended".into()),
            Ok(Err(e)) => Answer::Unknown(format!("{:?}: {}", e.code(), e.message())),
            Err(_) => Answer::Unknown(format!("no answer within {OP_TIMEOUT:?}")),
        }
    }
}

/// A recorded LeaseRevoke.
async fn revoke(ctx: &Ctx, leases: &mut LeaseClient<Channel>, client: u32, lease: i64) {
    let invoke = ctx.recorder.now_us();
    let answer = call(leases.lease_revoke(LeaseRevokeRequest { id: lease })).await;
    ctx.settle(client, invoke, Call::LeaseRevoke { lease }, answer, |r| {
        Done {
            revision: header_revision(&r.header),
            ..Done::default()
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_ieee() {
        // The check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_leases_keys_cover_the_shards() {
        for lease in [1i64, 0x1d, 0x7fff_0000_1234] {
            let keys = lease_keys(lease, 3, 2);
            assert_eq!(keys.len(), 3);
            let mut shards: Vec<usize> = keys.iter().map(|k| shard_of(k, 2)).collect();
            shards.sort_unstable();
            shards.dedup();
            assert_eq!(shards, [0, 1], "{keys:?}");
            assert!(keys.iter().all(|k| k.starts_with(&format!("l/{lease:x}/"))));
        }
    }
}
