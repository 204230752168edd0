//! Keys on several shards behave as on one (DESIGN §2.1): the same random
//! requests sent to real etcd 3.4, a one-shard and a three-shard member get
//! the same answers, revisions included; cross-shard txns are atomic under concurrency and
//! across SIGKILL. Seeds are printed; CAIRN_SHARDS_SEED=<seed> replays.

mod common;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use common::Cairn;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn seed() -> u64 {
    common::seed("CAIRN_SHARDS_SEED")
}

const KEYS: [&str; 10] = [
    "a/0", "a/1", "a/2", "a/3", "a/4", "b/0", "b/1", "b/2", "b/3", "c",
];

fn key(rng: &mut StdRng) -> Vec<u8> {
    KEYS[rng.random_range(0..KEYS.len())].as_bytes().to_vec()
}

/// A key and range end: one key, a prefix, an interval, or everything.
fn range(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    match rng.random_range(0..5) {
        0 | 1 => (key(rng), Vec::new()),
        2 => (b"a/".to_vec(), b"a0".to_vec()),
        3 => (b"a/2".to_vec(), b"b/2".to_vec()),
        _ => (b"\0".to_vec(), b"\0".to_vec()),
    }
}

fn value(rng: &mut StdRng) -> Vec<u8> {
    format!("v{}", rng.random_range(0..4)).into_bytes()
}

fn range_request(rng: &mut StdRng, revision_max: i64) -> pb::RangeRequest {
    let (key, range_end) = range(rng);
    pb::RangeRequest {
        key,
        range_end,
        limit: if rng.random_bool(0.3) { 2 } else { 0 },
        revision: if rng.random_bool(0.2) {
            rng.random_range(1..=revision_max.max(1))
        } else {
            0
        },
        sort_order: rng.random_range(0..3),
        sort_target: rng.random_range(0..5),
        count_only: rng.random_bool(0.1),
        keys_only: rng.random_bool(0.1),
        ..Default::default()
    }
}

fn request_op(
    rng: &mut StdRng,
    revision_max: i64,
    used: &mut Vec<Vec<u8>>,
    depth: usize,
) -> pb::RequestOp {
    use pb::request_op::Request;
    let kinds = if depth == 0 { 4 } else { 3 };
    let request = match rng.random_range(0..kinds) {
        // A nested txn writes keys of its own.
        3 => {
            let mut t = txn(rng, revision_max, depth + 1);
            let mut keys = Vec::new();
            for op in t.success.iter().chain(&t.failure) {
                match &op.request {
                    Some(Request::RequestPut(p)) => keys.push(p.key.clone()),
                    Some(Request::RequestDeleteRange(d)) => keys.push(d.key.clone()),
                    _ => {}
                }
            }
            if keys.iter().any(|k| used.contains(k)) {
                t.success.clear();
                t.failure.clear();
            } else {
                used.extend(keys);
            }
            Request::RequestTxn(t)
        }
        0 => Request::RequestRange(range_request(rng, revision_max)),
        1 => {
            // Txns may not put the same key twice: pick an unused one.
            let k = key(rng);
            if used.contains(&k) {
                Request::RequestRange(range_request(rng, revision_max))
            } else {
                used.push(k.clone());
                Request::RequestPut(pb::PutRequest {
                    key: k,
                    value: value(rng),
                    prev_kv: rng.random_bool(0.5),
                    ..Default::default()
                })
            }
        }
        _ => {
            let k = key(rng);
            if used.contains(&k) {
                Request::RequestRange(range_request(rng, revision_max))
            } else {
                used.push(k.clone());
                Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: k,
                    prev_kv: rng.random_bool(0.5),
                    ..Default::default()
                })
            }
        }
    };
    pb::RequestOp {
        request: Some(request),
    }
}

fn txn(rng: &mut StdRng, revision_max: i64, depth: usize) -> pb::TxnRequest {
    let compare = (0..rng.random_range(0..3))
        .map(|_| {
            let (key, range_end) = range(rng);
            let (target, target_union) = match rng.random_range(0..3) {
                0 => (
                    pb::compare::CompareTarget::Value,
                    pb::compare::TargetUnion::Value(value(rng)),
                ),
                1 => (
                    pb::compare::CompareTarget::Version,
                    pb::compare::TargetUnion::Version(rng.random_range(0..3)),
                ),
                _ => (
                    pb::compare::CompareTarget::Mod,
                    pb::compare::TargetUnion::ModRevision(rng.random_range(0..=revision_max)),
                ),
            };
            pb::Compare {
                result: rng.random_range(0..4),
                target: target as i32,
                key,
                range_end,
                target_union: Some(target_union),
            }
        })
        .collect();
    let mut used = Vec::new();
    let success = (0..rng.random_range(0..4))
        .map(|_| request_op(rng, revision_max, &mut used, depth))
        .collect();
    let mut used = Vec::new();
    let failure = (0..rng.random_range(0..3))
        .map(|_| request_op(rng, revision_max, &mut used, depth))
        .collect();
    pb::TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A response with the member-specific header fields cleared.
fn norm_header(h: &mut Option<pb::ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// Nested responses keep their headers: etcd leaves them without member
/// fields, with the revision as of that op.
fn norm_txn(t: &mut pb::TxnResponse) {
    norm_header(&mut t.header);
}

/// One random request; the answer as text (code and message for errors).
async fn send(kv: &mut KvClient<Channel>, req: &Req) -> String {
    let answer = match req.clone() {
        Req::Range(r) => kv.range(r).await.map(|r| {
            let mut r = r.into_inner();
            norm_header(&mut r.header);
            format!("{r:?}")
        }),
        Req::Put(r) => kv.put(r).await.map(|r| {
            let mut r = r.into_inner();
            norm_header(&mut r.header);
            format!("{r:?}")
        }),
        Req::Delete(r) => kv.delete_range(r).await.map(|r| {
            let mut r = r.into_inner();
            norm_header(&mut r.header);
            format!("{r:?}")
        }),
        Req::Txn(r) => kv.txn(r).await.map(|r| {
            let mut r = r.into_inner();
            norm_txn(&mut r);
            format!("{r:?}")
        }),
        Req::Compact(r) => kv.compact(r).await.map(|r| {
            let mut r = r.into_inner();
            norm_header(&mut r.header);
            format!("{r:?}")
        }),
    };
    answer.unwrap_or_else(|s| format!("error {:?}: {}", s.code(), s.message()))
}

#[derive(Clone, Debug)]
enum Req {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
}

fn request(rng: &mut StdRng, revision: i64) -> Req {
    match rng.random_range(0..20) {
        0..=4 => Req::Range(range_request(rng, revision + 1)),
        5..=8 => Req::Put(pb::PutRequest {
            key: key(rng),
            value: value(rng),
            prev_kv: rng.random_bool(0.5),
            ..Default::default()
        }),
        9..=11 => {
            let (key, range_end) = range(rng);
            Req::Delete(pb::DeleteRangeRequest {
                key,
                range_end,
                prev_kv: rng.random_bool(0.5),
            })
        }
        12..=18 => Req::Txn(txn(rng, revision + 1, 0)),
        _ => Req::Compact(pb::CompactionRequest {
            revision: revision - rng.random_range(0..8),
            physical: false,
        }),
    }
}

fn header_revision(answer: &str) -> Option<i64> {
    let at = answer.find("revision: ")? + "revision: ".len();
    answer[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn one_and_three_shards_answer_exactly_like_etcd() {
    let seed = seed();
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let etcd = common::etcd();
    let one = Cairn::start(base.path(), 1);
    let three = Cairn::start(base.path(), 3);
    let rt = common::rt();
    rt.block_on(async {
        let mut e = KvClient::connect(etcd.url.clone()).await.unwrap();
        let mut a = KvClient::connect(one.url()).await.unwrap();
        let mut b = KvClient::connect(three.url()).await.unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut revision = 1;
        for i in 0..400 {
            let req = request(&mut rng, revision);
            let limit = Duration::from_secs(30);
            let answer = |kv: &mut KvClient<Channel>, who: &'static str| {
                let req = req.clone();
                let mut kv = kv.clone();
                async move {
                    tokio::time::timeout(limit, send(&mut kv, &req))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("request {i} (seed {seed}): {who} hangs: {req:?}")
                        })
                }
            };
            let want = answer(&mut e, "etcd").await;
            let x = answer(&mut a, "1 shard").await;
            let y = answer(&mut b, "3 shards").await;
            assert_eq!(
                x, want,
                "request {i} (seed {seed}): 1 shard and etcd differ: {req:?}"
            );
            assert_eq!(
                y, want,
                "request {i} (seed {seed}): 3 shards and etcd differ: {req:?}"
            );
            if let Some(r) = header_revision(&want) {
                revision = revision.max(r);
            }
        }
        assert!(revision > 50, "the requests changed too little: {revision}");
    });
}

/// Four accounts on (mostly) different shards; concurrent transfers are
/// cross-shard txns; every read of all accounts sums to the same total.
#[test]
fn cross_shard_txns_are_atomic_under_concurrency() {
    const ACCOUNTS: usize = 4;
    const TRANSFERS_PER_WRITER: usize = 60;
    const WRITERS: usize = 3;
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let c = Cairn::start(base.path(), 3);
    let rt = common::rt();
    let acct = |i: usize| format!("acct/{i}").into_bytes();
    rt.block_on(async {
        let mut kv = KvClient::connect(c.url()).await.unwrap();
        for i in 0..ACCOUNTS {
            kv.put(pb::PutRequest {
                key: acct(i),
                value: b"100".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let mut kv = kv.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64);
                let mut done = 0;
                while done < TRANSFERS_PER_WRITER && Instant::now() < deadline {
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + 1 + rng.random_range(0..ACCOUNTS - 1)) % ACCOUNTS;
                    let mut current = Vec::new();
                    for k in [acct(from), acct(to)] {
                        let r = kv
                            .range(pb::RangeRequest {
                                key: k,
                                ..Default::default()
                            })
                            .await
                            .unwrap()
                            .into_inner();
                        let kv0 = r.kvs[0].clone();
                        let v: i64 = String::from_utf8(kv0.value).unwrap().parse().unwrap();
                        current.push((kv0.key, kv0.mod_revision, v));
                    }
                    let compare = current
                        .iter()
                        .map(|(k, m, _)| pb::Compare {
                            result: pb::compare::CompareResult::Equal as i32,
                            target: pb::compare::CompareTarget::Mod as i32,
                            key: k.clone(),
                            range_end: Vec::new(),
                            target_union: Some(pb::compare::TargetUnion::ModRevision(*m)),
                        })
                        .collect();
                    let put = |k: &[u8], v: i64| pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: k.to_vec(),
                            value: v.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    };
                    let r = kv
                        .txn(pb::TxnRequest {
                            compare,
                            success: vec![
                                put(&current[0].0, current[0].2 - 1),
                                put(&current[1].0, current[1].2 + 1),
                            ],
                            failure: vec![],
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    if r.succeeded {
                        done += 1;
                    }
                }
                done
            }));
        }
        // Readers: all accounts in one range, at C and at older revisions.
        let mut reads = 0;
        while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            let r = kv
                .range(pb::RangeRequest {
                    key: b"acct/".to_vec(),
                    range_end: b"acct0".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let sum: i64 = r
                .kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.value).parse::<i64>().unwrap())
                .sum();
            assert_eq!(sum, 100 * ACCOUNTS as i64, "a read saw half a transfer");
            let at = r.header.unwrap().revision - 3;
            let old = kv
                .range(pb::RangeRequest {
                    key: b"acct/".to_vec(),
                    range_end: b"acct0".to_vec(),
                    revision: at,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            if old.kvs.len() == ACCOUNTS {
                let sum: i64 = old
                    .kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.value).parse::<i64>().unwrap())
                    .sum();
                assert_eq!(
                    sum,
                    100 * ACCOUNTS as i64,
                    "revision {at} holds half a transfer"
                );
            }
            reads += 1;
        }
        let mut transfers = 0;
        for t in tasks {
            transfers += t.await.unwrap();
        }
        assert!(
            transfers > 0 && reads > 0,
            "{transfers} transfers, {reads} reads"
        );
        // Each transfer took exactly one revision.
        let r = kv
            .range(pb::RangeRequest {
                key: b"acct/".to_vec(),
                range_end: b"acct0".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.header.unwrap().revision,
            1 + ACCOUNTS as i64 + transfers as i64,
            "one revision per transfer"
        );
    });
}

/// Pairs of keys on different shards written by one txn each; SIGKILL at a
/// random point; after restart every pair is all or nothing, and every
/// acknowledged pair is there with its revision.
#[test]
fn cross_shard_txns_are_all_or_nothing_across_sigkill() {
    const ROUNDS: usize = 3;
    const WRITERS: usize = 4;
    const TXNS_PER_WRITER_MAX: usize = 2_000;
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    let rt = common::rt();
    // The second key of a pair lands on the other shard.
    let pair = |round: usize, w: usize, i: usize| {
        let x = format!("pair/{round}/{w}/{i:05}/x").into_bytes();
        let mut y_suffix = 0;
        let y = loop {
            let y = format!("pair/{round}/{w}/{i:05}/y{y_suffix}").into_bytes();
            if cairn::shard::route::shard_of(&y, 2) != cairn::shard::route::shard_of(&x, 2) {
                break y;
            }
            y_suffix += 1;
        };
        (x, y)
    };
    let mut acked: Vec<(Vec<u8>, Vec<u8>, i64)> = Vec::new();
    for round in 0..ROUNDS {
        let url = c.url();
        let writers = std::thread::spawn(move || {
            let rt = common::rt();
            rt.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut tasks = Vec::new();
                for w in 0..WRITERS {
                    let url = url.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut acked = Vec::new();
                        let Ok(mut kv) = KvClient::connect(url).await else {
                            return acked;
                        };
                        for i in 0..TXNS_PER_WRITER_MAX {
                            if Instant::now() > deadline {
                                break;
                            }
                            let (x, y) = pair(round, w, i);
                            let put = |k: &[u8]| pb::RequestOp {
                                request: Some(pb::request_op::Request::RequestPut(
                                    pb::PutRequest {
                                        key: k.to_vec(),
                                        value: b"both".to_vec(),
                                        ..Default::default()
                                    },
                                )),
                            };
                            let txn = pb::TxnRequest {
                                compare: vec![],
                                success: vec![put(&x), put(&y)],
                                failure: vec![],
                            };
                            match kv.txn(txn).await {
                                Ok(r) => {
                                    acked.push((x, y, r.into_inner().header.unwrap().revision))
                                }
                                Err(_) => break,
                            }
                        }
                        acked
                    }));
                }
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all
            })
        });
        std::thread::sleep(Duration::from_millis(300 + rng.random_range(0..900)));
        c.crash();
        let new = writers.join().unwrap();
        assert!(!new.is_empty(), "round {round}: nothing acknowledged");
        acked.extend(new);
        c.restart();
        rt.block_on(async {
            let mut kv = KvClient::connect(c.url()).await.unwrap();
            let all = kv
                .range(pb::RangeRequest {
                    key: b"pair/".to_vec(),
                    range_end: b"pair0".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let found: std::collections::BTreeMap<Vec<u8>, i64> = all
                .kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.mod_revision))
                .collect();
            // All or nothing: keys come in pairs with one revision.
            let mut by_pair: std::collections::BTreeMap<Vec<u8>, Vec<i64>> = Default::default();
            for (k, rev) in &found {
                let stem = k[..k.iter().rposition(|b| *b == b'/').unwrap()].to_vec();
                by_pair.entry(stem).or_default().push(*rev);
            }
            for (stem, revs) in &by_pair {
                assert!(
                    revs.len() == 2 && revs[0] == revs[1],
                    "round {round} (seed {seed}): {} is half written: {revs:?}",
                    String::from_utf8_lossy(stem)
                );
            }
            for (x, y, rev) in &acked {
                for k in [x, y] {
                    assert_eq!(
                        found.get(k),
                        Some(rev),
                        "round {round} (seed {seed}): acknowledged {} lost or changed",
                        String::from_utf8_lossy(k)
                    );
                }
            }
            // Revisions continue above everything acknowledged.
            let max = acked.iter().map(|(_, _, r)| *r).max().unwrap();
            let next = kv
                .put(pb::PutRequest {
                    key: format!("after/{round}").into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .header
                .unwrap()
                .revision;
            assert!(next > max, "round {round}: revision {next} after {max}");
        });
    }
}
