//! Shared by `server_lock.rs` and `server_election.rs`: the Lock and
//! Election calls as steps of a `lease_harness::Run` (so each is checked
//! against etcd's as it happens), keys normalized, contenders that wait in
//! tasks, and `etcdctl` processes read line by line.
//!
//! Normalized, besides what `lease_harness` normalizes: in a contender's
//! key `<name>/<lease in hex>`, a lease the server chose is shown by its
//! label (`n/<L1>`); client-chosen leases stay as they are.

use crate::lease_harness::{hdr, Outcome, Run, PATIENCE};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use cairn_proto::v3electionpb as epb;
use cairn_proto::v3lockpb as lpb;
use epb::election_client::ElectionClient;
use lpb::lock_client::LockClient;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long a contender that must wait is watched not answering.
pub const STILL_WAITING: Duration = Duration::from_millis(700);

/// Client-chosen lease IDs whose contender keys under `prefix` lie on
/// shards 0, 1, 0, 1, ... of a two-shard member (so one lock's keys live
/// on both shards), `n` of them, from 0x100 up.
pub fn ids_across_shards(prefix: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut id = 0x100;
    while ids.len() < n {
        let key = format!("{prefix}{id:x}");
        if cairn::shard::route::shard_of(key.as_bytes(), 2) == ids.len() % 2 {
            ids.push(id);
        }
        id += 1;
        assert!(id < 0x10000, "no ID puts a key on the shard wanted");
    }
    ids
}

/// A key as compared: a server-chosen lease in its hex suffix by its label.
pub fn key(r: &mut Run, k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k).into_owned();
    if let Some((name, hex)) = s.rsplit_once('/') {
        // Go's %x of an ID: a sign, then the magnitude.
        let id = match hex.strip_prefix('-') {
            Some(h) => u64::from_str_radix(h, 16)
                .ok()
                .map(|x| (x as i64).wrapping_neg()),
            None => u64::from_str_radix(hex, 16).ok().map(|x| x as i64),
        };
        if let Some(id) = id.filter(|id| id.unsigned_abs() >= 1 << 32) {
            return format!("{name}/<{}>", r.id(id));
        }
    }
    s
}

/// Lines of etcdctl's output, each normalized as a key.
pub fn keyed(r: &mut Run, lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| key(r, l.as_bytes())).collect()
}

pub fn kv(r: &mut Run, kv: &mvccpb::KeyValue) -> String {
    let k = key(r, &kv.key);
    let (c, m, v) = (kv.create_revision, kv.mod_revision, kv.version);
    let lease = r.id(kv.lease);
    let value = String::from_utf8_lossy(&kv.value);
    format!("{k}={value} c{c} m{m} v{v} lease {lease}")
}

fn err(s: tonic::Status) -> (tonic::Code, String) {
    (s.code(), s.message().to_string())
}

pub fn lock_client(r: &Run) -> LockClient<Channel> {
    LockClient::new(r.ch.clone())
}

pub fn election_client(r: &Run) -> ElectionClient<Channel> {
    ElectionClient::new(r.ch.clone())
}

/// A Lock's answer as compared (and the key, if it answered).
pub fn lock_outcome(
    r: &mut Run,
    got: Result<tonic::Response<lpb::LockResponse>, tonic::Status>,
) -> (Outcome, Option<Vec<u8>>) {
    match got {
        Ok(l) => {
            let l = l.into_inner();
            let k = key(r, &l.key);
            (Ok(format!("{} key {k}", hdr(&l.header))), Some(l.key))
        }
        Err(s) => (Err(err(s)), None),
    }
}

/// Lock(name, lease) as a step; the key it answered with.
pub async fn lock(r: &mut Run, label: &str, name: &str, lease: i64) -> Option<Vec<u8>> {
    let req = lpb::LockRequest {
        name: name.into(),
        lease,
    };
    let got = lock_client(r).lock(req).await;
    let (got, key) = lock_outcome(r, got);
    r.push(label, got, vec![]);
    key
}

pub async fn unlock(r: &mut Run, label: &str, key: &[u8]) {
    let req = lpb::UnlockRequest { key: key.to_vec() };
    let got = lock_client(r).unlock(req).await;
    let got = got.map(|u| hdr(&u.into_inner().header)).map_err(err);
    r.push(label, got, vec![]);
}

/// A Lock in a task of its own (it may wait): awaited by `answer`.
pub fn lock_in_task(
    r: &Run,
    name: &str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<tonic::Response<lpb::LockResponse>, tonic::Status>> {
    let mut client = lock_client(r);
    let req = lpb::LockRequest {
        name: name.into(),
        lease,
    };
    tokio::spawn(async move { client.lock(req).await })
}

/// What a task's call answered, within `PATIENCE`.
pub async fn answer<T>(h: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(PATIENCE, h)
        .await
        .expect("an answer in time")
        .expect("the task")
}

/// True if the task is still waiting after `STILL_WAITING`.
pub async fn still_waiting<T>(h: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::sleep(STILL_WAITING).await;
    !h.is_finished()
}

async fn exists(r: &mut Run, k: &[u8]) -> bool {
    let req = pb::RangeRequest {
        key: k.to_vec(),
        ..Default::default()
    };
    !r.kv
        .range(req)
        .await
        .expect("range")
        .into_inner()
        .kvs
        .is_empty()
}

/// Waits (bounded) until `k` exists (`present`) or does not; true if it
/// came to be so within `PATIENCE`.
pub async fn wait_key(r: &mut Run, k: &[u8], present: bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if exists(r, k).await == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every key under `prefix` (every key if it is empty), in key order, as
/// a step.
pub async fn keys(r: &mut Run, label: &str, prefix: &str) {
    let (key, range_end) = if prefix.is_empty() {
        (vec![0], vec![0]) // every key
    } else {
        let end = cairn::api::concurrency::prefix_end(prefix.as_bytes());
        (prefix.as_bytes().to_vec(), end)
    };
    let req = pb::RangeRequest {
        key,
        range_end,
        ..Default::default()
    };
    let got = r.kv.range(req).await.map_err(err);
    let got = match got {
        Ok(g) => {
            let g = g.into_inner();
            let kvs: Vec<String> = g.kvs.iter().map(|x| kv(r, x)).collect();
            Ok(format!("{} {kvs:?}", hdr(&g.header)))
        }
        Err(e) => Err(e),
    };
    r.push(label, got, vec![]);
}

/// A leader key as compared.
pub fn leader_key(r: &mut Run, l: &epb::LeaderKey) -> String {
    let k = key(r, &l.key);
    let name = String::from_utf8_lossy(&l.name);
    format!(
        "name {name:?} key {k} rev {} lease {}",
        l.rev,
        r.id(l.lease)
    )
}

pub fn campaign_outcome(
    r: &mut Run,
    got: Result<tonic::Response<epb::CampaignResponse>, tonic::Status>,
) -> (Outcome, Option<epb::LeaderKey>) {
    match got {
        Ok(c) => {
            let c = c.into_inner();
            let l = c.leader.clone().unwrap_or_default();
            let got = format!("{} {}", hdr(&c.header), leader_key(r, &l));
            (Ok(got), c.leader)
        }
        Err(s) => (Err(err(s)), None),
    }
}

pub fn campaign_req(name: &str, lease: i64, value: &str) -> epb::CampaignRequest {
    epb::CampaignRequest {
        name: name.into(),
        lease,
        value: value.into(),
    }
}

/// Campaign as a step; the leader key it answered with.
pub async fn campaign(
    r: &mut Run,
    label: &str,
    name: &str,
    lease: i64,
    value: &str,
) -> Option<epb::LeaderKey> {
    let got = election_client(r)
        .campaign(campaign_req(name, lease, value))
        .await;
    let (got, leader) = campaign_outcome(r, got);
    r.push(label, got, vec![]);
    leader
}

pub fn campaign_in_task(
    r: &Run,
    name: &str,
    lease: i64,
    value: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<epb::CampaignResponse>, tonic::Status>> {
    let mut client = election_client(r);
    let req = campaign_req(name, lease, value);
    tokio::spawn(async move { client.campaign(req).await })
}

pub async fn proclaim(r: &mut Run, label: &str, leader: Option<epb::LeaderKey>, value: &str) {
    let req = epb::ProclaimRequest {
        leader,
        value: value.into(),
    };
    let got = election_client(r).proclaim(req).await;
    let got = got.map(|p| hdr(&p.into_inner().header)).map_err(err);
    r.push(label, got, vec![]);
}

pub async fn resign(r: &mut Run, label: &str, leader: Option<epb::LeaderKey>) {
    let got = election_client(r)
        .resign(epb::ResignRequest { leader })
        .await;
    let got = got.map(|p| hdr(&p.into_inner().header)).map_err(err);
    r.push(label, got, vec![]);
}

pub fn leader_outcome(r: &mut Run, l: &epb::LeaderResponse) -> String {
    let kv = l.kv.as_ref().map(|x| kv(r, x));
    format!("{} {kv:?}", hdr(&l.header))
}

pub async fn leader(r: &mut Run, label: &str, name: &str) {
    let req = epb::LeaderRequest { name: name.into() };
    let got = election_client(r).leader(req).await;
    let got = got.map(|l| leader_outcome(r, &l.into_inner())).map_err(err);
    r.push(label, got, vec![]);
}

/// An Observe stream, read in a task of its own: etcd's server sends the
/// response headers only with its first answer, so the call itself waits
/// until there is a leader. Aborted when dropped.
pub struct Observe {
    rx: tokio::sync::mpsc::Receiver<Result<epb::LeaderResponse, tonic::Status>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn observe(r: &Run, name: &str) -> Observe {
    let req = epb::LeaderRequest { name: name.into() };
    let mut client = election_client(r);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = tokio::spawn(async move {
        let mut s = match client.observe(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        loop {
            match s.message().await {
                Ok(Some(l)) => {
                    if tx.send(Ok(l)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return, // the channel closes: "the stream ended"
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Observe { rx, task }
}

/// The stream's next answer as a step (waiting at most `limit`; "nothing"
/// if none came).
pub async fn observed(r: &mut Run, label: &str, o: &mut Observe, limit: Duration) {
    let got = match tokio::time::timeout(limit, o.rx.recv()).await {
        Err(_) => Ok("nothing".to_string()),
        Ok(Some(Ok(l))) => Ok(leader_outcome(r, &l)),
        Ok(None) => Ok("the stream ended".to_string()),
        Ok(Some(Err(e))) => Err(err(e)),
    };
    r.push(label, got, vec![]);
}

/// A running `etcdctl` whose stdout is read line by line (stopped by its
/// PID when dropped).
pub struct Ctl {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Ctl {
    pub fn start(url: &str, args: &[&str]) -> Ctl {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", url])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`etcdctl` not found: run tools/test.sh, which installs Debian's etcd-client");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ctl { child, lines }
    }

    /// The next `n` lines, waiting at most `PATIENCE` for them all.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("etcdctl: {n} lines not in time; got {got:?}"),
            }
        }
        got
    }

    /// True if it printed nothing for `STILL_WAITING`.
    pub fn quiet(&self) -> bool {
        self.lines.recv_timeout(STILL_WAITING).is_err()
    }

    /// SIGTERM (or SIGKILL if `kill`); its exit code and stderr, within
    /// `PATIENCE`.
    pub fn stop(mut self, kill: bool) -> (Option<i32>, String) {
        let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.wait()
    }

    /// Its exit code and stderr, once it exits (within `PATIENCE`).
    pub fn wait(&mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "etcdctl did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}
