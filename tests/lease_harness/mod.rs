//! Shared by `server_lease.rs` and `server_lease_expiry.rs`: the servers (a
//! restartable etcd 3.4, cairn members), a scenario runner that checks every
//! step against etcd's as it goes (so a difference fails at once, naming
//! the step), and the normalization of what legitimately differs.

use crate::common::{self, Cairn};
pub use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;
use std::fmt::Debug;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long anything that must come may take (a loaded machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(60);
/// Keys on both shards of a two-shard member (checked by `side_by_side`).
pub const KEYS: [&str; 4] = ["a", "a/x", "b", "c"];
/// A lease ID never granted.
pub const UNKNOWN: i64 = 999;

pub fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

pub fn shard_of(key: &str) -> usize {
    cairn::shard::route::shard_of(key.as_bytes(), 2)
}

pub fn put_req(key: &str, value: &str, lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    }
}

/// A real etcd 3.4 with the flags of `tools/src/etcd.rs`, which can be
/// stopped and started again on its data dir (`common::Etcd` cannot).
pub struct Etcd {
    child: Option<Child>,
    url: String,
    peer: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let port = || format!("http://127.0.0.1:{}", common::free_port());
        let mut e = Etcd {
            child: None,
            url: port(),
            peer: port(),
            dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let (url, peer) = (&self.url, &self.peer);
        let child = Command::new("etcd")
            .args(["--name", "ref", "--data-dir"])
            .arg(self.dir.path().join("etcd"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args([
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
            ])
            .args(["--initial-cluster", &format!("ref={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`etcd` not found: run tools/test.sh, which installs Debian's etcd-server");
        let child = self.child.insert(child);
        common::wait_serving(url, PATIENCE, || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!("etcd exited while starting: {status}");
            }
        });
    }

    fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL);
    }
}

pub enum Server {
    Etcd(Etcd),
    /// The member, then its base dir (dropped after it).
    Cairn(Cairn, tempfile::TempDir),
}

impl Server {
    pub fn url(&self) -> String {
        match self {
            Server::Etcd(e) => e.url.clone(),
            Server::Cairn(c, _) => c.url(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Server::Etcd(_) => "etcd 3.4".into(),
            Server::Cairn(c, _) => format!("cairn, {} shard(s)", c.shards),
        }
    }

    /// SIGTERM (SIGKILL if `kill`), then start again on the same data dir
    /// and ports.
    pub fn restart(&mut self, kill: bool) {
        match self {
            Server::Etcd(e) => {
                e.stop(if kill { libc::SIGKILL } else { libc::SIGTERM });
                e.spawn();
            }
            Server::Cairn(c, _) => {
                if kill {
                    c.crash();
                } else {
                    c.stop();
                }
                c.restart();
            }
        }
    }
}

/// What a request got, normalized: a description, or the code and message.
pub type Outcome = Result<String, (tonic::Code, String)>;

#[derive(Clone, Debug)]
pub struct Step {
    pub label: String,
    pub got: Outcome,
    /// Remaining TTLs plus the seconds since the client saw the lease
    /// (re)start (see `Run::since`): equal within 1.5 s on two servers,
    /// however fast each ran the script. Negative TTLs (-1: not found) as
    /// they are, compared exactly.
    pub ttls: Vec<f64>,
}

fn close(a: &[f64], b: &[f64]) -> bool {
    let near = |x: f64, y: f64| x == y || (x >= 0.0 && y >= 0.0 && (x - y).abs() <= 1.5);
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| near(*x, *y))
}

/// Ids and term as set/unset, the revision as it is.
pub fn hdr(h: &Option<pb::ResponseHeader>) -> String {
    match h {
        None => "no header".into(),
        Some(h) => {
            let set = |x: u64| u8::from(x != 0);
            let ids = (set(h.cluster_id), set(h.member_id), set(h.raft_term));
            format!("rev {} ids {ids:?}", h.revision)
        }
    }
}

/// One scenario on one server.
pub struct Run {
    pub server: Server,
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub ch: Channel,
    /// Server-chosen lease IDs, in order of first sight (`L1` is the first).
    pub ids: Vec<i64>,
    /// When the client last saw each lease granted, renewed or restarted.
    pub started: std::collections::HashMap<i64, Instant>,
    steps: Vec<Step>,
    /// etcd's steps, which this run's must match as they come.
    want: Option<Vec<Step>>,
}

/// A channel whose calls fail after `PATIENCE` rather than hang (a
/// stream's messages are not bounded by it: callers bound their reads).
async fn connect(url: String) -> Channel {
    let ch = Channel::from_shared(url).unwrap().connect_timeout(PATIENCE);
    ch.timeout(PATIENCE).connect().await.expect("connect")
}

impl Run {
    pub async fn new(server: Server, want: Option<Vec<Step>>) -> Run {
        let ch = connect(server.url()).await;
        Run {
            server,
            kv: KvClient::new(ch.clone()),
            lease: LeaseClient::new(ch.clone()),
            ch,
            ids: Vec::new(),
            started: Default::default(),
            steps: Vec::new(),
            want,
        }
    }

    /// Restarts the server (see `Server::restart`) and connects again.
    pub async fn restart(&mut self, kill: bool) {
        // Off the runtime's thread: starting waits with a runtime of its own.
        let server = &mut self.server;
        std::thread::scope(|s| s.spawn(|| server.restart(kill)).join().unwrap());
        self.ch = connect(self.server.url()).await;
        self.kv = KvClient::new(self.ch.clone());
        self.lease = LeaseClient::new(self.ch.clone());
        let now = Instant::now();
        self.started.values_mut().for_each(|t| *t = now);
    }

    /// A remaining TTL as compared: plus the seconds since `id` was seen
    /// (re)started, i.e. about the TTL it had then (negative ones as they
    /// are).
    pub fn since(&self, id: i64, ttl: i64) -> f64 {
        let e = self
            .started
            .get(&id)
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        if ttl < 0 {
            ttl as f64
        } else {
            ttl as f64 + e
        }
    }

    /// A lease ID as compared: small (client-chosen, unknown) ones as they
    /// are, the server's as `L<n>`.
    pub fn id(&mut self, id: i64) -> String {
        if id.unsigned_abs() < 1 << 32 {
            return id.to_string();
        }
        let n = match self.ids.iter().position(|&x| x == id) {
            Some(n) => n,
            None => {
                self.ids.push(id);
                self.ids.len() - 1
            }
        };
        format!("L{}", n + 1)
    }

    pub fn push(&mut self, label: &str, got: Outcome, ttls: Vec<f64>) {
        let i = self.steps.len();
        if let Some(want) = &self.want {
            let name = self.server.name();
            let w = want
                .get(i)
                .unwrap_or_else(|| panic!("{name}: step {i} {label:?} is not etcd's"));
            assert!(
                w.label == label && w.got == got && close(&w.ttls, &ttls),
                "{name}, step {i} {label:?}:\n  {name}: {got:?} TTLs {ttls:.1?}\n  etcd 3.4: {:?} {:?} TTLs {:.1?}",
                w.label,
                w.got,
                w.ttls
            );
        }
        let label = label.to_string();
        self.steps.push(Step { label, got, ttls });
    }

    pub fn fact(&mut self, label: &str, value: impl Debug) {
        self.push(label, Ok(format!("{value:?}")), vec![]);
    }

    fn record<T>(
        &mut self,
        label: &str,
        r: Result<tonic::Response<T>, tonic::Status>,
        norm: impl FnOnce(&mut Self, &T) -> (String, Vec<f64>),
    ) -> Option<T> {
        match r {
            Ok(r) => {
                let r = r.into_inner();
                let (got, ttls) = norm(self, &r);
                self.push(label, Ok(got), ttls);
                Some(r)
            }
            Err(s) => {
                self.push(label, Err((s.code(), s.message().to_string())), vec![]);
                None
            }
        }
    }

    /// The granted ID (0 on an error).
    pub async fn grant(&mut self, label: &str, ttl: i64, id: i64) -> i64 {
        let r = self
            .lease
            .lease_grant(pb::LeaseGrantRequest { ttl, id })
            .await;
        let g = self.record(label, r, |s, g| {
            let id = s.id(g.id);
            let got = format!(
                "{} ID {id} TTL {} error {:?}",
                hdr(&g.header),
                g.ttl,
                g.error
            );
            (got, vec![])
        });
        let id = g.map_or(0, |g| g.id);
        self.started.insert(id, Instant::now());
        id
    }

    /// The header's revision (0 on an error).
    pub async fn revoke(&mut self, label: &str, id: i64) -> i64 {
        let r = self.lease.lease_revoke(pb::LeaseRevokeRequest { id }).await;
        let r = self.record(label, r, |_, r| (hdr(&r.header), vec![]));
        r.and_then(|r| r.header).map_or(0, |h| h.revision)
    }

    /// The remaining TTL (`i64::MIN` on an error).
    pub async fn ttl(&mut self, label: &str, id: i64, keys: bool) -> i64 {
        let r = self
            .lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys })
            .await;
        let r = self.record(label, r, |s, t| {
            let mut keys: Vec<String> = t
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            keys.sort();
            let id = s.id(t.id);
            let got = format!(
                "{} ID {id} granted {} keys {keys:?}",
                hdr(&t.header),
                t.granted_ttl
            );
            (got, vec![s.since(t.id, t.ttl)])
        });
        r.map_or(i64::MIN, |t| t.ttl)
    }

    /// The leases listed, in their order (or `sorted`, where etcd's order
    /// is arbitrary: equal expiry times).
    pub async fn leases(&mut self, label: &str, sorted: bool) {
        let r = self.lease.lease_leases(pb::LeaseLeasesRequest {}).await;
        self.record(label, r, |s, l| {
            let mut ids: Vec<String> = l.leases.iter().map(|x| s.id(x.id)).collect();
            if sorted {
                ids.sort();
            }
            (format!("{} {ids:?}", hdr(&l.header)), vec![])
        });
    }

    /// The header's revision (0 on an error).
    pub async fn put(&mut self, label: &str, req: pb::PutRequest) -> i64 {
        let r = self.kv.put(req).await;
        let r = self.record(label, r, |_, p| (hdr(&p.header), vec![]));
        r.and_then(|r| r.header).map_or(0, |h| h.revision)
    }

    pub async fn txn(&mut self, label: &str, req: pb::TxnRequest) {
        let r = self.kv.txn(req).await;
        self.record(label, r, |_, t| {
            let got = format!(
                "{} succeeded {} ops {}",
                hdr(&t.header),
                t.succeeded,
                t.responses.len()
            );
            (got, vec![])
        });
    }

    pub async fn delete(&mut self, label: &str, key: &str) {
        let req = pb::DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let r = self.kv.delete_range(req).await;
        self.record(label, r, |_, d| {
            (format!("{} deleted {}", hdr(&d.header), d.deleted), vec![])
        });
    }

    /// Every key at `revision` (0: now), with its lease.
    pub async fn range(&mut self, label: &str, revision: i64) {
        let req = pb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        let r = self.kv.range(req).await;
        self.record(label, r, |s, r| {
            let kvs: Vec<String> = r.kvs.iter().map(|kv| s.kv(kv)).collect();
            (format!("{} {kvs:?}", hdr(&r.header)), vec![])
        });
    }

    pub fn kv(&mut self, kv: &mvccpb::KeyValue) -> String {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (c, m, v) = (kv.create_revision, kv.mod_revision, kv.version);
        let lease = self.id(kv.lease);
        format!(
            "{}={} c{c} m{m} v{v} lease {lease}",
            s(&kv.key),
            s(&kv.value)
        )
    }

    pub fn event(&mut self, e: &mvccpb::Event) -> String {
        let kind = if e.r#type == 1 { "DELETE" } else { "PUT" };
        let kv = self.kv(&e.kv.clone().unwrap_or_default());
        let prev = e.prev_kv.as_ref().map(|p| self.kv(p));
        format!("{kind} {kv} prev {prev:?}")
    }

    /// A watch of every key from `start` (0: from now), with prev_kv.
    pub async fn watch(&mut self, start: i64) -> Watch {
        use pb::watch_request::RequestUnion;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = pb::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: start,
            prev_kv: true,
            ..Default::default()
        };
        let req = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        tx.send(req).await.unwrap();
        let mut rx = WatchClient::new(self.ch.clone())
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let created = tokio::time::timeout(PATIENCE, rx.message()).await;
        let created = created.expect("created in time").expect("watch");
        assert!(created.is_some_and(|c| c.created), "a watch of everything");
        Watch { _tx: tx, rx }
    }

    /// The next `n` events, normalized (panics if they are not in by `by`).
    pub async fn events(&mut self, w: &mut Watch, n: usize, by: Instant) -> Vec<String> {
        let evs = w.events(n, by).await;
        evs.iter().map(|e| self.event(e)).collect()
    }

    /// A keep-alive stream whose first request is for `first`.
    pub async fn keep_alive(&mut self, label: &str, first: i64) -> Ka {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::LeaseKeepAliveRequest { id: first })
            .await
            .unwrap();
        let r = self.lease.lease_keep_alive(ReceiverStream::new(rx)).await;
        let r = self.record(
            &format!("{label}: opened"),
            r.map(|r| r.map(Some)),
            |_, _| ("ok".into(), vec![]),
        );
        let mut ka = Ka {
            tx: Some(tx),
            rx: r.flatten().expect("a keep-alive stream"),
        };
        self.ka_next(label, &mut ka).await;
        ka
    }

    async fn ka_next(&mut self, label: &str, ka: &mut Ka) {
        let m = tokio::time::timeout(PATIENCE, ka.rx.message());
        let got = match m.await.expect("a keep-alive answer in time") {
            Ok(Some(r)) => {
                if r.ttl > 0 {
                    self.started.insert(r.id, Instant::now());
                }
                Ok(format!(
                    "{} ID {} TTL {}",
                    hdr(&r.header),
                    self.id(r.id),
                    r.ttl
                ))
            }
            Ok(None) => Ok("the stream ended".into()),
            Err(s) => Err((s.code(), s.message().to_string())),
        };
        self.push(label, got, vec![]);
    }

    pub async fn ka(&mut self, ka: &mut Ka, label: &str, id: i64) {
        let tx = ka.tx.as_ref().expect("open");
        tx.send(pb::LeaseKeepAliveRequest { id })
            .await
            .expect("stream open");
        self.ka_next(label, ka).await;
    }

    /// Ends the requests; what comes next.
    pub async fn ka_close(&mut self, label: &str, mut ka: Ka) {
        ka.tx = None;
        self.ka_next(label, &mut ka).await;
    }
}

pub struct Watch {
    _tx: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Watch {
    /// The next `n` events in the order they come (panics if they are not
    /// in by `by`).
    pub async fn events(&mut self, n: usize, by: Instant) -> Vec<mvccpb::Event> {
        let mut evs = Vec::new();
        while evs.len() < n {
            let m = tokio::time::timeout_at(by.into(), self.rx.message()).await;
            let r = m.unwrap_or_else(|_| panic!("{n} events not in time; got {evs:?}"));
            let r = r.expect("watch").expect("watch open");
            assert!(!r.canceled, "{r:?}");
            evs.extend(r.events);
        }
        evs
    }
}

pub struct Ka {
    tx: Option<tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>>,
    rx: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

/// Runs `script` against a fresh etcd 3.4, then against a fresh cairn
/// member of each shard count, every cairn step checked against etcd's.
/// With `CAIRN_LEASE_ETCD_ONLY` set, only etcd's side runs (its steps are
/// printed); with `CAIRN_LEASE_ETCD_TWICE`, a second etcd takes cairn's
/// place (a check of the scripts and their normalization).
pub fn side_by_side<F, Fut>(shards: &[usize], script: F)
where
    F: Fn(Run) -> Fut,
    Fut: Future<Output = Run>,
{
    let shards_of_keys: std::collections::BTreeSet<usize> =
        KEYS.iter().map(|k| shard_of(k)).collect();
    assert_eq!(shards_of_keys.len(), 2, "KEYS are on both of two shards");
    let rt = common::rt();
    let etcd = Server::Etcd(Etcd::start());
    let run = rt.block_on(async { script(Run::new(etcd, None).await).await });
    let want = run.steps.clone();
    drop(run);
    if std::env::var_os("CAIRN_LEASE_ETCD_ONLY").is_some() {
        for s in &want {
            println!("{:?}: {:?} TTLs {:.1?}", s.label, s.got, s.ttls);
        }
        return;
    }
    if std::env::var_os("CAIRN_LEASE_ETCD_TWICE").is_some() {
        // The scripts' own check: a second etcd must match the first.
        let again = Server::Etcd(Etcd::start());
        rt.block_on(async { script(Run::new(again, Some(want.clone())).await).await });
        return;
    }
    for &n in shards {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let server = Server::Cairn(Cairn::start_with(tmp.path(), n, &[]), tmp);
        let run = rt.block_on(async { script(Run::new(server, Some(want.clone())).await).await });
        assert_eq!(
            run.steps.len(),
            want.len(),
            "{}: all of etcd's steps",
            run.server.name()
        );
    }
}
