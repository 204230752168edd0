//! Crash test: writers keep writing and record every acknowledged put; the
//! server is killed with SIGKILL at a random point, several times. After each
//! restart every acknowledged write is present with the revision it was
//! acknowledged with, and new revisions continue above all of them.
//! The random seed is printed; CAIRN_CRASH_SEED=<seed> replays the schedule.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::Cairn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds: writers per round, puts per writer, and the time a round may take.
const WRITERS: usize = 8;
const PUTS_PER_WRITER_MAX: usize = 5_000;
const ROUND_SECONDS_MAX: u64 = 20;
const ROUNDS: usize = 3;

type Acked = Arc<Mutex<Vec<(Vec<u8>, i64)>>>;

fn writers(url: String, round: usize, acked: Acked) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(ROUND_SECONDS_MAX);
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let (url, acked) = (url.clone(), acked.clone());
                tasks.push(tokio::spawn(async move {
                    let Ok(mut kv) = KvClient::connect(url).await else {
                        return;
                    };
                    for i in 0..PUTS_PER_WRITER_MAX {
                        if Instant::now() > deadline {
                            return;
                        }
                        let key = format!("crash/{round}/{w}/{i:05}").into_bytes();
                        let put = PutRequest {
                            key: key.clone(),
                            value: vec![b'x'; 64],
                            ..Default::default()
                        };
                        match kv.put(put).await {
                            Ok(r) => acked
                                .lock()
                                .unwrap()
                                .push((key, r.into_inner().header.unwrap().revision)),
                            Err(_) => return, // the server is gone
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    })
}

/// SIGKILLs `c` after a random 0.2–1 s of writing, `rounds` times, and checks
/// after each restart that every acknowledged write is there.
fn crash_rounds(c: &mut Cairn, rounds: usize, next: &mut impl FnMut() -> u64) {
    let acked: Acked = Arc::default();
    let rt = common::rt();
    for round in 0..rounds {
        let w = writers(c.url(), round, acked.clone());
        std::thread::sleep(Duration::from_millis(200 + next() % 800));
        c.crash();
        w.join().unwrap();
        c.restart();
        let all = acked.lock().unwrap().clone();
        assert!(
            !all.is_empty(),
            "round {round}: nothing was acknowledged before the crash"
        );
        rt.block_on(async {
            let mut kv = KvClient::connect(c.url()).await.unwrap();
            for (key, rev) in &all {
                let r = kv
                    .range(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let kv0 = r.kvs.first().unwrap_or_else(|| {
                    panic!(
                        "round {round}: acknowledged {:?} is lost",
                        String::from_utf8_lossy(key)
                    )
                });
                assert_eq!(
                    kv0.mod_revision,
                    *rev,
                    "round {round}: {:?} has another revision",
                    String::from_utf8_lossy(key)
                );
            }
            let max_acked = all.iter().map(|(_, r)| *r).max().unwrap();
            let mut revs: Vec<i64> = all.iter().map(|(_, r)| *r).collect();
            revs.sort_unstable();
            revs.dedup();
            assert_eq!(
                revs.len(),
                all.len(),
                "every acknowledged put has its own revision"
            );
            let next_rev = common::put(&mut kv, format!("after/{round}"), "").await;
            assert!(
                next_rev > max_acked,
                "round {round}: revision went back ({next_rev} <= {max_acked})"
            );
        });
        println!("round {round}: {} acknowledged writes verified", all.len());
    }
}

fn rng(var: &str) -> impl FnMut() -> u64 {
    let mut rng = common::seed(var) | 1;
    move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    }
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start(base.path(), 2);
    crash_rounds(&mut c, ROUNDS, &mut rng("CAIRN_CRASH_SEED"));
}

#[test]
fn with_blocking_wal_io_every_acknowledged_write_survives_sigkill() {
    // --wal-io blocking: pwrite + fdatasync on the shard core.
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = Cairn::start_with(base.path(), 1, &["--wal-io", "blocking"]);
    crash_rounds(&mut c, 2, &mut rng("CAIRN_CRASH_SEED"));
}
