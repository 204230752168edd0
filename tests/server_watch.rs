//! The Watch service: the same watch requests and writes sent to real etcd
//! 3.4, a one-shard and a two-shard member get the same responses (events,
//! prev_kv, filters, refused watches, history from a past revision,
//! compaction, cancel, progress); a watcher far behind a small event log is
//! caught up from the histories with every revision once and in order; and
//! the real `etcdctl watch` works. Seeds are printed; CAIRN_WATCH_SEED=<seed>
//! replays.

mod common;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::mvccpb::event::EventType;
use common::Cairn;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const KEYS: [&str; 8] = ["a/0", "a/1", "a/2", "a/3", "b/0", "b/1", "b/2", "c"];

/// How long a test waits for something that must come (a response, an
/// event, a count): generous, as a loaded machine is slow. Nothing waits a
/// fixed time to conclude that something will not come.
const PATIENCE: Duration = Duration::from_secs(60);

/// One watch stream.
struct Conn {
    tx: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Conn {
    /// A stream whose first request is `first` (etcd sends the response
    /// headers with its first response, and the call waits for them).
    async fn open(ch: Channel, first: pb::WatchCreateRequest) -> Conn {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let create = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(first)),
        };
        tx.send(create).await.expect("queued");
        let rx = WatchClient::new(ch)
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Conn { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        let req = pb::WatchRequest {
            request_union: Some(r),
        };
        self.tx.send(req).await.expect("request stream");
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    /// The next response; panics, naming `what` was awaited, if none has
    /// come by `deadline`.
    async fn next_by(
        &mut self,
        deadline: Instant,
        what: &dyn std::fmt::Display,
    ) -> pb::WatchResponse {
        match tokio::time::timeout_at(deadline.into(), self.rx.message()).await {
            Ok(r) => r.expect("watch stream").expect("stream open"),
            Err(_) => panic!("no watch response in time: waited {PATIENCE:?} for {what}"),
        }
    }

    async fn next(&mut self) -> pb::WatchResponse {
        self.next_by(Instant::now() + PATIENCE, &"a watch response")
            .await
    }

    /// Asks for progress and records every response before the answer in
    /// `seen` (the answer itself is not recorded; it must vouch for `upto`).
    ///
    /// cairn answers once every watcher of the stream has had its events up
    /// to the revision it names, so nothing up to there can come after it.
    /// etcd 3.4.23 answers at once (its answer can overtake events still
    /// queued for the stream), so callers first read every event they know
    /// is due; this then collects anything else that was sent.
    async fn settle(&mut self, seen: &mut Seen, upto: i64) {
        self.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
            .await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = self
                .next_by(deadline, &"the answer to a progress request")
                .await;
            if is_progress(&r) {
                let rev = r.header.as_ref().map_or(0, |h| h.revision);
                assert!(rev >= upto, "progress at {rev}, below {upto}: {r:?}");
                return;
            }
            seen.take(r);
        }
    }
}

/// A progress notification: the stream's (watch ID -1, as both cairn and
/// etcd 3.4.23 send it), neither a created/refused nor a canceled watch.
fn is_progress(r: &pb::WatchResponse) -> bool {
    r.watch_id == -1 && !r.created && !r.canceled && r.events.is_empty()
}

/// An event as compared between servers.
type Ev = (i32, String, String, i64, i64, i64, Option<(String, i64)>);

fn ev(e: &cairn_proto::mvccpb::Event) -> Ev {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kv = e.kv.clone().unwrap_or_default();
    (
        e.r#type,
        s(&kv.key),
        s(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        e.prev_kv.as_ref().map(|p| (s(&p.value), p.mod_revision)),
    )
}

/// What a stream got: every watcher's events (a revision's events in key
/// order: cairn sends them so, etcd in the txn's op order), and every other
/// response in order.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    events: BTreeMap<i64, Vec<Ev>>,
    control: Vec<String>,
}

impl Seen {
    fn take(&mut self, r: pb::WatchResponse) {
        if r.events.is_empty() {
            let rev = r.header.as_ref().map_or(0, |h| h.revision);
            self.control.push(format!(
                "id={} created={} canceled={} compact={} reason={:?}{}",
                r.watch_id,
                r.created,
                r.canceled,
                r.compact_revision,
                // etcd names the cause of a refused watch; cairn also names it
                // for compaction, which etcd 3.4 leaves empty.
                if r.created {
                    r.cancel_reason.as_str()
                } else {
                    ""
                },
                // Progress responses name the revision they vouch for.
                if !r.created && !r.canceled {
                    format!(" rev={rev}")
                } else {
                    String::new()
                },
            ));
        }
        let list = self.events.entry(r.watch_id).or_default();
        list.extend(r.events.iter().map(ev));
        list.sort_by(|a, b| (a.4, &a.1).cmp(&(b.4, &b.1)));
    }
}

/// Whether the watcher `create` made gets event `e`: its key range and
/// filters (the watchers of `run` are created before any write).
fn wants(create: &pb::WatchCreateRequest, e: &Ev) -> bool {
    let key = e.1.as_bytes();
    let in_range = match create.range_end.as_slice() {
        [] => key == create.key.as_slice(),
        [0] => key >= create.key.as_slice(),
        end => create.key.as_slice() <= key && key < end,
    };
    let filtered = |f: FilterType| create.filters.contains(&(f as i32));
    let skipped = if e.0 == EventType::Delete as i32 {
        filtered(FilterType::Nodelete)
    } else {
        filtered(FilterType::Noput)
    };
    in_range && !skipped
}

fn write_op(rng: &mut StdRng, i: usize) -> pb::RequestOp {
    use pb::request_op::Request;
    let key = KEYS[rng.random_range(0..KEYS.len())].as_bytes().to_vec();
    let put = |key: Vec<u8>| {
        Request::RequestPut(pb::PutRequest {
            key,
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        })
    };
    let request = match rng.random_range(0..10) {
        0..=5 => put(key),
        6 | 7 => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key,
            ..Default::default()
        }),
        8 => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
            prev_kv: true,
        }),
        _ => Request::RequestTxn(pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(put(b"c".to_vec())),
                },
                pb::RequestOp {
                    request: Some(put(b"a/1".to_vec())),
                },
                pb::RequestOp {
                    request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: b"b/".to_vec(),
                        range_end: b"b0".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        }),
    };
    pb::RequestOp {
        request: Some(request),
    }
}

async fn run(ch: Channel, url: &str, ops: &[pb::RequestOp]) -> Seen {
    let mut kv = KvClient::new(ch.clone());
    let mut seen = Seen::default();
    let all = |start: i64, prev_kv: bool| pb::WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: start,
        prev_kv,
        ..Default::default()
    };
    let creates = [
        pb::WatchCreateRequest {
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
            prev_kv: true,
            ..Default::default()
        },
        all(0, false),
        pb::WatchCreateRequest {
            key: b"c".to_vec(),
            filters: vec![FilterType::Nodelete as i32],
            ..Default::default()
        },
        pb::WatchCreateRequest {
            key: b"a/2".to_vec(),
            range_end: b"b/2".to_vec(),
            filters: vec![FilterType::Noput as i32],
            prev_kv: true,
            ..Default::default()
        },
        // Refused: an empty range, and an ID in use.
        pb::WatchCreateRequest {
            key: b"b".to_vec(),
            range_end: b"a".to_vec(),
            ..Default::default()
        },
        pb::WatchCreateRequest {
            key: b"b/".to_vec(),
            watch_id: 2,
            ..Default::default()
        },
        // The client's own ID.
        pb::WatchCreateRequest {
            key: b"b/".to_vec(),
            range_end: b"b0".to_vec(),
            watch_id: 100,
            ..Default::default()
        },
    ];
    // The watchers created (not refused), with what they asked for.
    let mut watching = Vec::new();
    let mut note = |seen: &mut Seen, create: pb::WatchCreateRequest, r: pb::WatchResponse| {
        if r.created && !r.canceled {
            watching.push((r.watch_id, create));
        }
        seen.take(r);
    };
    let mut creates = creates.into_iter();
    let first = creates.next().unwrap();
    let mut conn = Conn::open(ch, first.clone()).await;
    note(&mut seen, first, conn.next().await);
    for c in creates {
        conn.create(c.clone()).await;
        note(&mut seen, c, conn.next().await);
    }
    let mut last = 0;
    for op in ops {
        let r = kv
            .txn(pb::TxnRequest {
                success: vec![op.clone()],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .into_inner();
        last = r.header.unwrap().revision;
    }
    // A last put every watcher of everything sees: then the rest is quiet.
    let done = common::put(&mut kv, "zz", "done").await;
    assert!(done > last);
    loop {
        let r = conn.next().await;
        let end = r.watch_id == 1 && r.events.iter().any(|e| ev(e).4 == done);
        seen.take(r);
        if end {
            break;
        }
    }
    // Watcher 1 (every key, no filter) has every event now (a watcher's
    // events come in revision order); the other watchers' events can still
    // be on their way (neither server orders events across watchers). Read
    // until each has those of watcher 1 it wants (a missing one fails
    // here), then collect anything else sent before a progress answer.
    let everything = seen.events[&1].clone();
    let due: Vec<(i64, BTreeSet<(i64, String)>)> = watching
        .iter()
        .map(|(id, create)| {
            let want = everything.iter().filter(|e| wants(create, e));
            (*id, want.map(|e| (e.4, e.1.clone())).collect())
        })
        .collect();
    let missing = |seen: &Seen| -> Vec<(i64, usize)> {
        due.iter()
            .filter_map(|(id, want)| {
                let got: BTreeSet<(i64, String)> =
                    seen.events.get(id).map_or_else(BTreeSet::new, |v| {
                        v.iter().map(|e| (e.4, e.1.clone())).collect()
                    });
                let n = want.difference(&got).count();
                (n > 0).then_some((*id, n))
            })
            .collect()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = missing(&seen);
        if left.is_empty() {
            break;
        }
        let what = format!("{url}: events up to {done} ((watcher, events missing): {left:?})");
        seen.take(conn.next_by(deadline, &what).await);
    }
    conn.settle(&mut seen, done).await;
    // History: from revision 2, with prev_kv; it must be everything watcher
    // 1 saw (checked below) and the same as etcd's.
    conn.create(all(2, true)).await;
    loop {
        let r = conn.next().await;
        let end = r.events.iter().any(|e| ev(e).4 == done);
        seen.take(r);
        if end {
            break;
        }
    }
    // Progress: each caught-up watcher hears the current revision (what
    // comes after the answer is read by the steps below and compared too).
    conn.send(RequestUnion::ProgressRequest(pb::WatchProgressRequest {}))
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = conn
            .next_by(
                deadline,
                &format!("{url}: the answer to a progress request"),
            )
            .await;
        let end = is_progress(&r);
        seen.take(r);
        if end {
            break;
        }
    }
    // Cancel one; canceling an unknown ID answers nothing.
    for id in [0, 55] {
        conn.send(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: id,
        }))
        .await;
    }
    seen.take(conn.next().await);
    // Compacted history: created, then canceled naming the compaction point.
    kv.compact(pb::CompactionRequest {
        revision: done - 5,
        physical: true,
    })
    .await
    .unwrap();
    conn.create(all(3, false)).await;
    seen.take(conn.next().await);
    seen.take(conn.next().await);
    // Anything else sent (nothing is due) is recorded and compared.
    conn.settle(&mut seen, done).await;
    seen
}

#[test]
fn watch_answers_as_etcd_does() {
    let seed = common::seed("CAIRN_WATCH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let ops: Vec<pb::RequestOp> = (0..60).map(|i| write_op(&mut rng, i)).collect();
    let etcd = common::etcd();
    let tmp = tempfile::tempdir().unwrap();
    let one = Cairn::start(tmp.path(), 1);
    let two = Cairn::start(tmp.path(), 2);
    let rt = common::rt();
    let mut results = Vec::new();
    for url in [etcd.url.clone(), one.url(), two.url()] {
        let ch = rt.block_on(common::channel(&url));
        let seen = rt.block_on(run(ch, &url, &ops));
        results.push((url, seen));
    }
    let (_, want) = &results[0];
    // The run itself checks something: watcher 1 (everything, no prev_kv)
    // and the history watcher (from 2, with prev_kv) saw the same changes.
    let strip = |v: &Vec<Ev>| -> Vec<Ev> {
        v.iter()
            .map(|e| {
                let mut e = e.clone();
                e.6 = None;
                e
            })
            .collect()
    };
    let history_id = 4; // auto IDs 0..=3, then the client's 2 (refused) and 100
    assert!(want.events[&1].len() > 30, "etcd saw events: {want:?}");
    assert_eq!(strip(&want.events[&1]), strip(&want.events[&history_id]));
    for (url, seen) in &results[1..] {
        assert_eq!(
            seen.control, want.control,
            "{url}: control responses (seed {seed})"
        );
        for (id, events) in &want.events {
            assert_eq!(
                seen.events.get(id),
                Some(events),
                "{url}: events of watcher {id} (seed {seed})"
            );
        }
        assert_eq!(seen.events.len(), want.events.len(), "{url}");
    }
}

/// `clients` tasks that put `puts` keys between them (`key(i)` = value
/// `v{i}`); each returns (revision, key, value) of its puts.
fn writers(
    ch: &Channel,
    clients: usize,
    puts: usize,
    key: fn(usize) -> String,
) -> Vec<tokio::task::JoinHandle<Vec<(i64, String, String)>>> {
    (0..clients)
        .map(|t| {
            let mut kv = KvClient::new(ch.clone());
            tokio::spawn(async move {
                let mut wrote = Vec::new();
                for i in (t..puts).step_by(clients) {
                    let (key, value) = (key(i), format!("v{i}"));
                    let rev = common::put(&mut kv, key.clone(), value.clone()).await;
                    wrote.push((rev, key, value));
                }
                wrote
            })
        })
        .collect()
}

/// A watcher far behind a 4 KiB event log (it does not read while 3,000
/// puts land on two shards from 8 clients) gets every revision exactly once,
/// in order, with the values written; so does one that starts at revision 2
/// after the fact.
#[test]
fn a_slow_watcher_is_caught_up_from_history() {
    let tmp = tempfile::tempdir().unwrap();
    let cairn = Cairn::start_with(tmp.path(), 2, &["--watch-log-bytes", "4096"]);
    let rt = common::rt();
    rt.block_on(async {
        let ch = cairn.channel().await;
        let mut slow = Conn::open(
            ch.clone(),
            pb::WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            },
        )
        .await;
        assert!(slow.next().await.created);
        const PUTS: usize = 3000;
        let tasks = writers(&ch, 8, PUTS, |i| format!("k{:03}", i % 300));
        let mut want = BTreeMap::new();
        for t in tasks {
            for (rev, key, value) in t.await.unwrap() {
                assert!(
                    want.insert(rev, (key, value)).is_none(),
                    "revision {rev} twice"
                );
            }
        }
        assert_eq!(
            want.keys().copied().collect::<Vec<_>>(),
            (2..2 + PUTS as i64).collect::<Vec<_>>()
        );
        let late = Conn::open(
            ch,
            pb::WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                start_revision: 2,
                ..Default::default()
            },
        )
        .await;
        for mut conn in [slow, late] {
            let mut got = Vec::new();
            while got.len() < PUTS {
                let r = conn.next().await;
                assert!(!r.canceled, "{r:?}");
                for e in &r.events {
                    let kv = e.kv.clone().unwrap();
                    let s = |b: Vec<u8>| String::from_utf8(b).unwrap();
                    got.push((kv.mod_revision, s(kv.key), s(kv.value)));
                }
            }
            let want: Vec<_> = want
                .iter()
                .map(|(r, (k, v))| (*r, k.clone(), v.clone()))
                .collect();
            assert_eq!(got, want);
        }
    });
}

/// The real `etcdctl watch --prefix` prints the puts and deletes it sees.
#[test]
fn etcdctl_watch_prints_events() {
    let tmp = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(tmp.path(), 2);
    let ep = cairn.endpoint();
    let mut child = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &ep, "watch", "--prefix", "w/"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl: run tools/test.sh, which installs Debian's etcd-client");
    let stdout = child.stdout.take().unwrap();
    let (line_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if line_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // etcdctl prints nothing when its watch is created; write until it sees
    // one (a probe printed late is one of the probes dropped below).
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while got.is_empty() && Instant::now() < deadline {
        common::ok(&ep, &["put", "w/probe", "p"]);
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            got.push(l);
        }
    }
    assert_eq!(got, ["PUT"], "etcdctl watch saw the probe");
    common::ok(&ep, &["put", "w/a", "1"]);
    common::ok(&ep, &["put", "other", "x"]);
    common::ok(&ep, &["del", "w/a"]);
    while !got.ends_with(&["DELETE".to_string(), "w/a".to_string()]) {
        match lines.recv_timeout(PATIENCE) {
            Ok(l) => got.push(l),
            Err(_) => break,
        }
    }
    let watchers = || {
        let (_, m) = cairn.http("GET", "/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .map(|n| n.parse::<u64>().unwrap())
    };
    assert_eq!(watchers(), Some(1), "etcdctl's watcher is counted");
    let _ = child.kill();
    let _ = child.wait();
    // The stream ends with the connection: its watcher is no longer counted
    // (and the member stops recording events).
    let deadline = Instant::now() + PATIENCE;
    while watchers() != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(watchers(), Some(0));
    // Probes written before the watch existed print nothing; later ones
    // (racing the first line) print PUT, key, value each.
    let mut rest = &got[..];
    while rest.len() >= 3 && rest[..3] == ["PUT", "w/probe", "p"] {
        rest = &rest[3..];
    }
    assert_eq!(rest, ["PUT", "w/a", "1", "DELETE", "w/a"], "{got:?}");
}

/// Recording starts with the first watcher (nothing is kept while there is
/// none): watchers created while 4 clients write to two shards, the first
/// and after the last one left, each get every revision after the one their
/// `created` response names, once and in order.
#[test]
fn watchers_created_during_writes_miss_nothing() {
    /// Puts at least, all told (the writers go on until both rounds are done).
    const PUTS: usize = 2000;
    /// Puts acknowledged before each watcher is created, with none there.
    const BEFORE: usize = 100;
    /// Revisions each watcher reads before it leaves.
    const READ: i64 = 300;
    let tmp = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(tmp.path(), 2);
    let watchers = || {
        let (_, m) = cairn.http("GET", "/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .map(|n| n.parse::<u64>().unwrap())
    };
    let rt = common::rt();
    rt.block_on(async {
        let ch = cairn.channel().await;
        // 4 clients put k00000, k00001, ...; `written` counts the puts
        // acknowledged.
        let next = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut kv = KvClient::new(ch.clone());
                let (next, written, stop) = (next.clone(), written.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= PUTS && stop.load(Ordering::SeqCst) {
                            break;
                        }
                        common::put(&mut kv, format!("k{i:05}"), format!("v{i}")).await;
                        written.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let all = || pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let mut got = Vec::new();
        for round in 0..2 {
            // Writes are running (since the start, or since the last
            // watcher left), none of them recorded.
            let target = written.load(Ordering::SeqCst) + BEFORE;
            let deadline = Instant::now() + PATIENCE;
            while written.load(Ordering::SeqCst) < target {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {BEFORE} puts took over {PATIENCE:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut conn = Conn::open(ch.clone(), all()).await;
            let created = conn.next().await;
            assert!(created.created, "{created:?}");
            let from = created.header.unwrap().revision + 1;
            let mut revs = Vec::new();
            // Read up to a revision the writers are still to reach, then
            // leave (dropping the stream removes the watcher).
            let until = from + READ - 1;
            let what = format!("round {round}: revisions {from}..={until}");
            let deadline = Instant::now() + PATIENCE;
            while revs.last().is_none_or(|&last| last < until) {
                let r = conn.next_by(deadline, &what).await;
                assert!(!r.canceled, "round {round}: {r:?}");
                revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
            }
            assert!(!revs.is_empty(), "round {round}: writes were running");
            got.push((round, from, revs));
            drop(conn);
            // It has left: the member counts no watcher (and so records
            // nothing) before the next round.
            let deadline = Instant::now() + PATIENCE;
            while watchers() != Some(0) {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the watcher is still counted after {PATIENCE:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        for (round, from, revs) in got {
            let last = *revs.last().unwrap();
            assert_eq!(
                revs,
                (from..=last).collect::<Vec<_>>(),
                "round {round}: every revision after {}, in order",
                from - 1
            );
        }
    });
}
