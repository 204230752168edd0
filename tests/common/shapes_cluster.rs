//! The side-by-side comparison of a cluster's answers with etcd 3.4's
//! (`tests/server_shapes_cluster.rs`): the outcomes of a script, their
//! comparison, the normalization of responses by member role (`L` the
//! leader when the script starts, `F1` and `F2` the followers, labels of
//! members the script added), and requests that retry what a client
//! retries.

use cairn_proto::etcdserverpb as pb;
use pb::alarm_request::AlarmAction;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use pb::AlarmType;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The members a script starts with, by role.
pub const ROLES: [&str; 3] = ["L", "F1", "F2"];

/// Bound on every wait for a cluster to agree or converge.
pub const LIMIT: Duration = Duration::from_secs(60);
/// Bound on one request (a leader change may hold it a while).
pub const CALL_MAX: Duration = Duration::from_secs(30);
/// Bound on the tries of one request that met a leader change.
pub const TRIES_MAX: usize = 200;
/// What a client retries (clientv3 retries the first two; etcd answers the
/// third to a member change in the 5 s after its start).
pub const RETRYABLE: [&str; 3] = [
    "etcdserver: no leader",
    "etcdserver: leader changed",
    "etcdserver: unhealthy cluster",
];

/// What one request got, normalized: the response's normalized form, or the
/// error's code and message.
pub type Outcome = Result<String, (tonic::Code, String)>;

/// The labelled outcomes of one cluster, in request order.
#[derive(Default)]
pub struct Record(pub Vec<(String, Outcome)>);

impl Record {
    pub fn ok(&mut self, label: &str, shape: impl std::fmt::Debug) {
        self.0.push((label.to_string(), Ok(format!("{shape:?}"))));
    }

    pub fn outcome<T>(
        &mut self,
        label: &str,
        r: Result<T, tonic::Status>,
        norm: impl FnOnce(T) -> String,
    ) {
        let o = r.map(norm).map_err(|s| (s.code(), s.message().to_string()));
        self.0.push((label.to_string(), o));
    }
}

/// Every outcome of cairn equals etcd's, label by label, except those in
/// `known`: there cairn's is the one given (a README difference) and
/// etcd's another. Every mismatch is reported at once.
pub fn assert_same(cairn: &Record, etcd: &Record, known: &[(&str, Outcome)]) {
    let labels = |r: &Record| r.0.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(cairn), labels(etcd), "the same script ran on both");
    let mut wrong = Vec::new();
    for ((label, ours), (_, theirs)) in cairn.0.iter().zip(&etcd.0) {
        match known.iter().find(|(l, _)| l == label) {
            Some((_, expected)) if ours != expected => wrong.push(format!(
                "{label}: cairn's documented answer changed:\n  cairn: {ours:?}\n  expected: {expected:?}"
            )),
            Some(_) if ours == theirs => wrong.push(format!(
                "{label}: now as etcd's: update README and this test"
            )),
            None if ours != theirs => wrong.push(format!(
                "{label}:\n  cairn: {ours:?}\n  etcd:  {theirs:?}"
            )),
            _ => {}
        }
    }
    for (label, _) in known {
        if !cairn.0.iter().any(|(l, _)| l == label) {
            wrong.push(format!("{label}: not in the script"));
        }
    }
    assert!(wrong.is_empty(), "cairn vs etcd 3.4:\n{}", wrong.join("\n"));
}

/// 1 for a value that is set, 0 for one that is not.
pub fn set(x: u64) -> u64 {
    u64::from(x != 0)
}

/// A member the script talks to.
pub struct Node {
    pub role: &'static str,
    pub name: String,
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub ch: Channel,
}

/// One cluster under test, its members in role order (leader first).
pub struct Side {
    pub nodes: Vec<Node>,
    pub cluster_id: u64,
    /// Members added by the script and URLs it made up, with their labels.
    pub added: Vec<(u64, &'static str)>,
    pub urls: Vec<(String, &'static str)>,
}

impl Side {
    /// Finds who leads (every member names the same one, bounded) and puts
    /// it first; `members` are (name, client URL, peer URL).
    pub async fn discover(members: Vec<(String, String, String)>) -> Side {
        let deadline = Instant::now() + LIMIT;
        let (mut nodes, leader) = loop {
            let mut nodes = Vec::new();
            let mut leaders = Vec::new();
            for (name, client, peer) in &members {
                let ch = super::channel(client).await;
                let st = MaintenanceClient::new(ch.clone())
                    .status(pb::StatusRequest {})
                    .await;
                let st = st.map(|r| r.into_inner());
                let (id, leader) =
                    st.map_or((0, 0), |s| (s.header.map_or(0, |h| h.member_id), s.leader));
                leaders.push(leader);
                let (name, client, peer) = (name.clone(), client.clone(), peer.clone());
                nodes.push(Node {
                    role: "",
                    name,
                    id,
                    client,
                    peer,
                    ch,
                });
            }
            let agreed = leaders.iter().all(|l| *l == leaders[0] && *l != 0);
            if agreed && nodes.iter().any(|n| n.id == leaders[0]) {
                break (nodes, leaders[0]);
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        nodes.sort_by_key(|n| n.id != leader);
        for (n, role) in nodes.iter_mut().zip(["L", "F1", "F2"]) {
            n.role = role;
        }
        let h = MaintenanceClient::new(nodes[0].ch.clone())
            .status(pb::StatusRequest {})
            .await;
        let cluster_id = h
            .expect("Status")
            .into_inner()
            .header
            .expect("a header")
            .cluster_id;
        assert_ne!(cluster_id, 0);
        let urls = (0..3)
            .map(|_| (format!("http://127.0.0.1:{}", super::free_port()), ""))
            .collect();
        let mut side = Side {
            nodes,
            cluster_id,
            added: Vec::new(),
            urls,
        };
        for (u, l) in side.urls.iter_mut().zip(["<P1>", "<P2>", "<P3>"]) {
            u.1 = l;
        }
        side
    }

    pub fn node(&self, role: &str) -> &Node {
        self.nodes.iter().find(|n| n.role == role).expect("a role")
    }

    pub fn m(&self, role: &str) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.node(role).ch.clone())
    }

    pub fn c(&self, role: &str) -> ClusterClient<Channel> {
        ClusterClient::new(self.node(role).ch.clone())
    }

    pub fn kv(&self, role: &str) -> KvClient<Channel> {
        KvClient::new(self.node(role).ch.clone())
    }

    pub fn url(&self, label: &str) -> String {
        self.urls
            .iter()
            .find(|u| u.1 == label)
            .expect("a URL")
            .0
            .clone()
    }

    pub fn id(&self, label: &str) -> u64 {
        let added = self.added.iter().find(|a| a.1 == label).map(|a| a.0);
        added.unwrap_or_else(|| self.node(label).id)
    }

    /// The member an id names, by its label.
    pub fn label(&self, id: u64) -> String {
        if id == 0 {
            return "0".into();
        }
        let added = self.added.iter().find(|a| a.0 == id).map(|a| a.1);
        let node = self.nodes.iter().find(|n| n.id == id).map(|n| n.role);
        node.or(added).unwrap_or("<not a member>").to_string()
    }

    pub fn url_label(&self, url: &str) -> String {
        for n in &self.nodes {
            if url == n.client || url == n.peer {
                let kind = if url == n.client { "client" } else { "peer" };
                return format!("<{kind} of {}>", n.role);
            }
        }
        let made_up = self
            .urls
            .iter()
            .find(|u| u.0 == url)
            .map(|u| u.1.to_string());
        made_up.unwrap_or_else(|| url.to_string())
    }

    pub fn header(&self, h: Option<pb::ResponseHeader>) -> String {
        let Some(h) = h else {
            return "no header".into();
        };
        let cluster = match h.cluster_id {
            0 => "0",
            id if id == self.cluster_id => "the cluster's",
            _ => "another",
        };
        let member = self.label(h.member_id);
        let term = set(h.raft_term);
        format!(
            "header(cluster {cluster}, member {member}, revision {}, term set {term})",
            h.revision
        )
    }

    /// Status: the leader and alarms as labels, figures as set or not, the
    /// version as its minor (cairn reports 3.4.0, etcd its release).
    pub fn status(&self, s: pb::StatusResponse) -> String {
        assert!(s.version.starts_with("3.4."), "{s:?}");
        let term = s.header.as_ref().map(|h| h.raft_term);
        let mut errors: Vec<String> = s.errors.iter().map(|e| self.ids_in(e)).collect();
        errors.sort();
        format!(
            "{}, leader {}, term set {} (the header's: {}), index set {}, applied set {}, \
             dbSize set {}, inUse set {}, learner {}, errors {errors:?}",
            self.header(s.header),
            self.label(s.leader),
            set(s.raft_term),
            term == Some(s.raft_term),
            set(s.raft_index),
            set(s.raft_applied_index),
            set(s.db_size as u64),
            set(s.db_size_in_use as u64),
            s.is_learner,
        )
    }

    /// `text` with every member id in it as its label.
    pub fn ids_in(&self, text: &str) -> String {
        let mut out = text.to_string();
        for id in self
            .nodes
            .iter()
            .map(|n| n.id)
            .chain(self.added.iter().map(|a| a.0))
        {
            out = out.replace(&id.to_string(), &self.label(id));
        }
        out
    }

    pub fn alarms(&self, r: pb::AlarmResponse) -> String {
        let mut list: Vec<(String, i32)> = r
            .alarms
            .iter()
            .map(|a| (self.label(a.member_id), a.alarm))
            .collect();
        list.sort();
        format!("{}, alarms {list:?}", self.header(r.header))
    }

    pub fn member(&self, m: &pb::Member) -> String {
        let own = self
            .nodes
            .iter()
            .find(|n| n.id == m.id)
            .map(|n| n.name.as_str());
        let name = if Some(m.name.as_str()) == own {
            "<its name>"
        } else {
            &m.name
        };
        let peers: Vec<String> = m.peer_ur_ls.iter().map(|u| self.url_label(u)).collect();
        let clients: Vec<String> = m.client_ur_ls.iter().map(|u| self.url_label(u)).collect();
        format!(
            "{} {name:?} peers {peers:?} clients {clients:?} learner {}",
            self.label(m.id),
            m.is_learner
        )
    }

    /// A member list sorted by label, and whether it came in id order.
    pub fn members(&self, header: Option<pb::ResponseHeader>, list: &[pb::Member]) -> String {
        let by_id = list.windows(2).all(|w| w[0].id < w[1].id);
        let mut list: Vec<String> = list.iter().map(|m| self.member(m)).collect();
        list.sort();
        format!("{}, in id order {by_id}, {list:#?}", self.header(header))
    }
}

/// Sends a request until it meets no leader change (bounded).
pub async fn retry<T, F: Future<Output = Result<tonic::Response<T>, tonic::Status>>>(
    mut f: impl FnMut() -> F,
) -> Result<T, tonic::Status> {
    let deadline = Instant::now() + LIMIT;
    for _ in 0..TRIES_MAX {
        let r = tokio::time::timeout(CALL_MAX, f())
            .await
            .expect("an answer within CALL_MAX");
        match r {
            Err(s) if RETRYABLE.contains(&s.message()) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => return r.map(tonic::Response::into_inner),
        }
    }
    panic!("still a leader change after {TRIES_MAX} tries");
}

/// A put through `role`: its header, normalized.
pub async fn put(s: &Side, role: &str, key: &str, value: &str) -> Outcome {
    let req = pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    let r = retry(|| {
        let (mut kv, req) = (s.kv(role), req.clone());
        async move { kv.put(req).await }
    })
    .await;
    r.map(|r| s.header(r.header))
        .map_err(|e| (e.code(), e.message().to_string()))
}

/// A linearizable read through `role`: afterwards it has applied every
/// write acknowledged before.
pub async fn sync(s: &Side, role: &str) {
    let req = pb::RangeRequest {
        key: b"sync".to_vec(),
        ..Default::default()
    };
    retry(|| {
        let (mut kv, req) = (s.kv(role), req.clone());
        async move { kv.range(req).await }
    })
    .await
    .expect("a linearizable read");
}

pub async fn status(s: &Side, role: &str) -> Result<pb::StatusResponse, tonic::Status> {
    retry(|| {
        let mut m = s.m(role);
        async move { m.status(pb::StatusRequest {}).await }
    })
    .await
}

pub async fn hash_kv(
    s: &Side,
    role: &str,
    revision: i64,
) -> Result<pb::HashKvResponse, tonic::Status> {
    retry(|| {
        let mut m = s.m(role);
        async move { m.hash_kv(pb::HashKvRequest { revision }).await }
    })
    .await
}

pub async fn alarm(
    s: &Side,
    role: &str,
    action: AlarmAction,
    member: &str,
    alarm: AlarmType,
) -> Result<pb::AlarmResponse, tonic::Status> {
    let req = pb::AlarmRequest {
        action: action as i32,
        member_id: s.id(member),
        alarm: alarm as i32,
    };
    retry(|| {
        let mut m = s.m(role);
        async move { m.alarm(req).await }
    })
    .await
}

pub async fn member_add(
    s: &Side,
    role: &str,
    urls: &[&str],
    learner: bool,
) -> Result<pb::MemberAddResponse, tonic::Status> {
    let req = pb::MemberAddRequest {
        peer_ur_ls: urls.iter().map(|u| u.to_string()).collect(),
        is_learner: learner,
    };
    retry(|| {
        let (mut c, req) = (s.c(role), req.clone());
        async move { c.member_add(req).await }
    })
    .await
}

pub fn added(s: &Side, r: &pb::MemberAddResponse) -> String {
    let m = r.member.as_ref().map(|m| s.member(m));
    format!("member {m:?}, list {}", s.members(r.header, &r.members))
}

pub async fn promote(
    s: &Side,
    role: &str,
    id: u64,
) -> Result<pb::MemberPromoteResponse, tonic::Status> {
    retry(|| {
        let mut c = s.c(role);
        async move { c.member_promote(pb::MemberPromoteRequest { id }).await }
    })
    .await
}

pub async fn update(
    s: &Side,
    role: &str,
    id: u64,
    urls: &[&str],
) -> Result<pb::MemberUpdateResponse, tonic::Status> {
    let req = pb::MemberUpdateRequest {
        id,
        peer_ur_ls: urls.iter().map(|u| u.to_string()).collect(),
    };
    retry(|| {
        let (mut c, req) = (s.c(role), req.clone());
        async move { c.member_update(req).await }
    })
    .await
}

pub async fn remove(
    s: &Side,
    role: &str,
    id: u64,
) -> Result<pb::MemberRemoveResponse, tonic::Status> {
    retry(|| {
        let mut c = s.c(role);
        async move { c.member_remove(pb::MemberRemoveRequest { id }).await }
    })
    .await
}

pub async fn move_leader(
    s: &Side,
    role: &str,
    target_id: u64,
) -> Result<pb::MoveLeaderResponse, tonic::Status> {
    retry(|| {
        let mut m = s.m(role);
        async move { m.move_leader(pb::MoveLeaderRequest { target_id }).await }
    })
    .await
}

/// MemberList on each member once it lists `count` members (bounded: a
/// member applies a change a little after the one that answered).
pub async fn lists(s: &Side, rec: &mut Record, when: &str, count: usize, has_url: Option<&str>) {
    for role in ROLES {
        let deadline = Instant::now() + LIMIT;
        let r = loop {
            let r = retry(|| {
                let mut c = s.c(role);
                async move { c.member_list(pb::MemberListRequest {}).await }
            })
            .await;
            let url_in = |l: &pb::MemberListResponse| {
                has_url.is_none_or(|u| {
                    l.members
                        .iter()
                        .any(|m| m.peer_ur_ls.iter().any(|p| *p == u))
                })
            };
            match &r {
                Ok(l) if (l.members.len() != count || !url_in(l)) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break r,
            }
        };
        rec.outcome(&format!("MemberList on {role} {when}"), r, |r| {
            s.members(r.header, &r.members)
        });
    }
}

/// A promotion, sent again while it is refused as not in sync if `wait`
/// (bounded: a voter, or a started learner, catches up).
pub async fn promote_once_in_sync(
    s: &Side,
    role: &str,
    id: u64,
    wait: bool,
) -> Result<pb::MemberPromoteResponse, tonic::Status> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = promote(s, role, id).await;
        match &r {
            Err(e)
                if wait
                    && e.message().ends_with("in sync with leader")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => return r,
        }
    }
}

/// Runs until `f` says its answer is the one awaited (bounded): the
/// answer then, or the last one.
pub async fn until<T, F: Future<Output = Result<T, tonic::Status>>>(
    mut f: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> Result<T, tonic::Status> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = f().await;
        if r.as_ref().is_ok_and(&done) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process the test started, SIGKILLed and reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child this test started and has
        // not reaped yet.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Starts `program` (etcd or cairn) as member `m3` joining a running
/// cluster: `urls` are `--initial-cluster`, its peer URL and its client
/// URL; its data and log (`m3.log`) under `dir`.
pub fn join(
    program: &std::path::Path,
    dir: &std::path::Path,
    urls: [&str; 3],
    token: &str,
    extra: &[String],
) -> KillOnDrop {
    let [initial, peer, client] = urls;
    let log = std::fs::File::create(dir.join("m3.log")).expect("a log file");
    let child = std::process::Command::new(program)
        .args(["--name", "m3", "--data-dir"])
        .arg(dir.join("m3"))
        .args(["--listen-client-urls", client])
        .args(["--advertise-client-urls", client])
        .args(["--listen-peer-urls", peer])
        .args(["--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", initial])
        .args(["--initial-cluster-state", "existing"])
        .args(["--initial-cluster-token", token])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the fourth member starts");
    KillOnDrop(child)
}
