//! Maintenance and Cluster responses have etcd 3.4's shape, field by field:
//! the same requests go to a real etcd 3.4 (Debian's etcd-server) and to a
//! cairn member started with comparable flags (name `ref`, its own client
//! URL advertised, a peer URL), and the responses are compared whole after
//! normalizing what differs by nature: ids and Raft figures (compared as set
//! or zero), hashes (set or zero; their behaviour is compared: a write
//! changes them, an earlier revision hashes as it did), sizes, the version.
//! Revisions, compaction points, alarms, member names and URLs (the
//! server's own URLs as placeholders), headers present or absent, and every
//! error's code and message are compared exactly.
//!
//! Covered: Status, Hash, HashKV (compaction, future and negative
//! revisions), Alarm (GET with and without a type, ACTIVATE and DEACTIVATE
//! of NOSPACE, NONE, CORRUPT and an unnamed type, member 0, puts under
//! NOSPACE), Defragment, Snapshot (the stream's shape), MoveLeader on one
//! member and Cluster.MemberList. On a member started alone,
//! MemberAdd/Remove/Update/Promote answer `Unimplemented` (a one-member
//! cluster cannot grow yet; etcd's can: README). The
//! deliberate differences are listed in README.md ("Differences from etcd
//! 3.4 you may notice"), and each is asserted here so that a change shows.

mod common;

use cairn_proto::etcdserverpb as pb;
use pb::alarm_request::AlarmAction;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use pb::AlarmType;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;

/// How long a member may take to answer after it starts (a loaded machine
/// is slow).
const START_MAX: Duration = Duration::from_secs(60);

/// A cairn member started with the flags `common::etcd()` gives etcd, so
/// that names and URLs can be compared. Killed by its PID when dropped.
struct Member {
    child: Option<Child>,
    url: String,
    peer: String,
    dir: PathBuf,
}

impl Member {
    fn start(base: &Path, shards: usize) -> Member {
        let (client, peer) = (common::free_port(), common::free_port());
        let mut m = Member {
            child: None,
            url: format!("http://127.0.0.1:{client}"),
            peer: format!("http://127.0.0.1:{peer}"),
            dir: base.join("member"),
        };
        m.spawn(shards);
        m
    }

    fn spawn(&mut self, shards: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["--name", "ref", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("ref={}", self.peer)])
            .args(["--shards", &shards.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cairn");
        let child = self.child.insert(child);
        common::wait_serving(&self.url, START_MAX, || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!("cairn exited while starting: {status}");
            }
        });
    }

    /// SIGKILL, then start again on the same data dir and ports.
    fn crash_and_restart(&mut self, shards: usize) {
        self.kill();
        self.spawn(shards);
    }

    fn endpoint(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one request got, normalized: the response's Debug form, or the
/// error's code and message.
type Outcome = Result<String, (tonic::Code, String)>;

/// The labelled outcomes of one server, in request order.
#[derive(Default)]
struct Record(Vec<(String, Outcome)>);

impl Record {
    fn ok(&mut self, label: &str, shape: impl std::fmt::Debug) {
        self.0.push((label.to_string(), Ok(format!("{shape:?}"))));
    }

    fn outcome<T>(
        &mut self,
        label: &str,
        r: Result<tonic::Response<T>, tonic::Status>,
        norm: impl FnOnce(T) -> String,
    ) {
        let o = r
            .map(|r| norm(r.into_inner()))
            .map_err(|s| (s.code(), s.message().to_string()));
        self.0.push((label.to_string(), o));
    }
}

/// Every outcome of cairn equals etcd's, label by label.
fn assert_same(cairn: &Record, etcd: &Record) {
    let labels = |r: &Record| r.0.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(cairn), labels(etcd), "the same script ran on both");
    for ((label, ours), (_, theirs)) in cairn.0.iter().zip(&etcd.0) {
        assert_eq!(ours, theirs, "{label}: cairn (left) vs etcd 3.4 (right)");
    }
}

/// 1 for a value that is set, 0 for one that is not (ids, terms, hashes:
/// present or absent, not their values).
fn set(x: u64) -> u64 {
    u64::from(x != 0)
}

/// A header with its ids and term as set/unset; the revision as it is.
fn header(h: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
    h.map(|h| pb::ResponseHeader {
        cluster_id: set(h.cluster_id),
        member_id: set(h.member_id),
        revision: h.revision,
        raft_term: set(h.raft_term),
    })
}

/// Status: ids, Raft figures and sizes as set/unset, after checking how they
/// relate (the leader is the member itself; the body's term is the
/// header's); the version as its minor (cairn reports the API level 3.4.0,
/// etcd its release); errors sorted (etcd lists them in map order), the
/// server's own id as `<self>`.
fn status(s: pb::StatusResponse) -> String {
    let h = s.header.expect("a Status header");
    assert_eq!(s.leader, h.member_id, "a lone member leads: {s:?}");
    assert_eq!(s.raft_term, h.raft_term, "{s:?}");
    assert!(s.raft_applied_index <= s.raft_index, "{s:?}");
    assert!(s.db_size_in_use <= s.db_size, "{s:?}");
    assert!(s.version.starts_with("3.4."), "{s:?}");
    let own = h.member_id.to_string();
    let mut errors: Vec<String> = s.errors.iter().map(|e| e.replace(&own, "<self>")).collect();
    errors.sort();
    format!(
        "{:?}",
        pb::StatusResponse {
            header: header(Some(h)),
            version: "3.4.x".into(),
            db_size: set(s.db_size as u64) as i64,
            leader: set(s.leader),
            raft_index: set(s.raft_index),
            raft_term: set(s.raft_term),
            raft_applied_index: set(s.raft_applied_index),
            errors,
            db_size_in_use: set(s.db_size_in_use as u64) as i64,
            is_learner: s.is_learner,
        }
    )
}

fn hash(r: pb::HashResponse) -> String {
    format!(
        "{:?}",
        pb::HashResponse {
            header: header(r.header),
            hash: set(u64::from(r.hash)) as u32,
        }
    )
}

fn hash_kv(r: pb::HashKvResponse) -> String {
    format!(
        "{:?}",
        pb::HashKvResponse {
            header: header(r.header),
            hash: set(u64::from(r.hash)) as u32,
            compact_revision: r.compact_revision,
        }
    )
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Outcome {
    kv.put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .map(|r| format!("{:?}", header(r.into_inner().header)))
    .map_err(|s| (s.code(), s.message().to_string()))
}

async fn hash_kv_of(m: &mut MaintenanceClient<Channel>, revision: i64) -> u32 {
    m.hash_kv(pb::HashKvRequest { revision })
        .await
        .expect("HashKV")
        .into_inner()
        .hash
}

/// Status, Hash, HashKV and Defragment on a fresh server, after writes and
/// after a compaction.
async fn status_and_hashes(url: String) -> Record {
    let ch = common::channel(&url).await;
    let (mut m, mut kv) = (MaintenanceClient::new(ch.clone()), KvClient::new(ch));
    let mut rec = Record::default();

    // Fresh: etcd's bbolt file is never empty, cairn's store is (a
    // documented difference), so the sizes are left out here.
    let mut fresh = m
        .status(pb::StatusRequest {})
        .await
        .expect("Status")
        .into_inner();
    fresh.db_size = 1;
    fresh.db_size_in_use = 1;
    rec.ok("Status, fresh (sizes aside)", status(fresh));
    rec.outcome("Hash, fresh", m.hash(pb::HashRequest {}).await, hash);
    let r = m.hash_kv(pb::HashKvRequest { revision: 0 }).await;
    rec.outcome("HashKV, fresh: compact_revision -1", r, hash_kv);
    let empty = hash_kv_of(&mut m, 0).await;

    let h0 = m.hash(pb::HashRequest {}).await.unwrap().into_inner().hash;
    let h0_again = m.hash(pb::HashRequest {}).await.unwrap().into_inner().hash;
    rec.ok("Hash is stable while nothing changes", h0 == h0_again);
    rec.ok("put a", put(&mut kv, "a", "1").await);
    rec.ok("put b", put(&mut kv, "b", "2").await);
    let h1 = m.hash(pb::HashRequest {}).await.unwrap().into_inner().hash;
    rec.ok("Hash changes with a write", h1 != h0);
    rec.outcome("Hash at 3", m.hash(pb::HashRequest {}).await, hash);

    let k3 = hash_kv_of(&mut m, 0).await;
    rec.ok("HashKV changes with a write", k3 != empty);
    rec.ok(
        "HashKV at 3 is that at 0 (current)",
        hash_kv_of(&mut m, 3).await == k3,
    );
    rec.ok(
        "HashKV at 1 is the fresh one",
        hash_kv_of(&mut m, 1).await == empty,
    );
    rec.ok(
        "HashKV at -1 hashes nothing",
        hash_kv_of(&mut m, -1).await == empty,
    );
    rec.ok("put a again", put(&mut kv, "a", "3").await);
    rec.ok(
        "HashKV at 3 is unchanged by a later write",
        hash_kv_of(&mut m, 3).await == k3,
    );
    rec.ok("HashKV now differs", hash_kv_of(&mut m, 0).await != k3);
    for revision in [0, 2, 4, -1, 5, 100] {
        let r = m.hash_kv(pb::HashKvRequest { revision }).await;
        rec.outcome(&format!("HashKV at {revision}"), r, hash_kv);
    }

    let r = kv
        .compact(pb::CompactionRequest {
            revision: 3,
            physical: true,
        })
        .await;
    rec.outcome("compact at 3", r, |r| format!("{:?}", header(r.header)));
    // At or below the compaction point: compacted, as etcd.
    for revision in [0, 1, 2, 3, 4, -1] {
        let r = m.hash_kv(pb::HashKvRequest { revision }).await;
        rec.outcome(
            &format!("HashKV at {revision} after compacting at 3"),
            r,
            hash_kv,
        );
    }
    rec.ok(
        "HashKV at -1 after compacting still hashes nothing",
        hash_kv_of(&mut m, -1).await == empty,
    );

    let r = m.status(pb::StatusRequest {}).await;
    rec.outcome("Status after writes", r, status);
    let r = m.defragment(pb::DefragmentRequest {}).await;
    rec.outcome("Defragment", r, |r| format!("{r:?}"));
    rec.outcome("Hash after all", m.hash(pb::HashRequest {}).await, hash);
    rec
}

#[test]
fn status_hash_hashkv_and_defragment_answer_as_etcd() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Member::start(tmp.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    let ours = rt.block_on(status_and_hashes(cairn.url.clone()));
    let theirs = rt.block_on(status_and_hashes(etcd.url.clone()));
    assert_same(&ours, &theirs);
    // The documented differences, so that a change shows.
    rt.block_on(async {
        let st = MaintenanceClient::new(common::channel(&cairn.url).await)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.version, "3.4.0", "the API level, not a release");
        let etcd_st = MaintenanceClient::new(common::channel(&etcd.url).await)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(etcd_st.version.starts_with("3.4."), "{etcd_st:?}");
    });
    // A fresh member's store is empty: dbSize 0 (etcd's bbolt file is never).
    let tmp2 = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let fresh = Member::start(tmp2.path(), 1);
    let st = rt.block_on(async {
        MaintenanceClient::new(common::channel(&fresh.url).await)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!((st.db_size, st.db_size_in_use), (0, 0), "{st:?}");
}

fn alarm_request(action: AlarmAction, member_id: u64, alarm: i32) -> pb::AlarmRequest {
    pb::AlarmRequest {
        action: action as i32,
        member_id,
        alarm,
    }
}

/// The alarms sorted (etcd lists them in map order), the server's own id as
/// `u64::MAX`.
fn alarms(own: u64) -> impl Fn(pb::AlarmResponse) -> String {
    move |r| {
        let mut list: Vec<(u64, i32)> = r
            .alarms
            .iter()
            .map(|a| {
                let id = if a.member_id == own {
                    u64::MAX
                } else {
                    a.member_id
                };
                (id, a.alarm)
            })
            .collect();
        list.sort();
        format!("header {:?}, alarms {list:?}", r.header)
    }
}

/// Every alarm action, as etcdctl and Kubernetes send them and beyond: on
/// member 0 and the server's own id, of every named type and an unnamed
/// one; puts under NOSPACE; Status errors. (Puts under CORRUPT are left
/// out: etcd refuses writes while it is raised, cairn does not — documented.)
async fn alarm_script(url: String) -> Record {
    use AlarmAction::{Activate, Deactivate, Get};
    let ch = common::channel(&url).await;
    let (mut m, mut kv) = (MaintenanceClient::new(ch.clone()), KvClient::new(ch));
    let own = m
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .leader;
    assert!(own > 6, "the fixed member ids below are not the server's");
    let (none, nospace, corrupt, unnamed) = (
        AlarmType::None as i32,
        AlarmType::Nospace as i32,
        AlarmType::Corrupt as i32,
        7,
    );
    let mut rec = Record::default();
    // A key first: a fresh cairn's dbSize is 0 (documented), etcd's is not.
    rec.ok("put before the alarms", put(&mut kv, "x", "0").await);
    let steps: Vec<(&str, AlarmAction, u64, i32)> = vec![
        ("GET all, none raised", Get, 0, none),
        ("ACTIVATE NOSPACE for member 0", Activate, 0, nospace),
        ("ACTIVATE it again", Activate, 0, nospace),
        ("GET all", Get, 0, none),
        ("GET NOSPACE", Get, 0, nospace),
        ("GET CORRUPT", Get, 0, corrupt),
        ("GET NOSPACE, another member id (ignored)", Get, 42, nospace),
    ];
    for (label, action, member, alarm) in steps {
        let r = m.alarm(alarm_request(action, member, alarm)).await;
        rec.outcome(label, r, alarms(own));
    }
    rec.ok("put under NOSPACE", put(&mut kv, "x", "1").await);
    rec.outcome(
        "Status with NOSPACE for member 0",
        m.status(pb::StatusRequest {}).await,
        status,
    );
    let steps: Vec<(&str, AlarmAction, u64, i32)> = vec![
        (
            "DEACTIVATE member 0, NONE (no wildcard)",
            Deactivate,
            0,
            none,
        ),
        (
            "DEACTIVATE member 42, NOSPACE (not raised)",
            Deactivate,
            42,
            nospace,
        ),
        ("GET all, NOSPACE still raised", Get, 0, none),
        ("DEACTIVATE NOSPACE for member 0", Deactivate, 0, nospace),
        ("DEACTIVATE it again", Deactivate, 0, nospace),
        ("GET all, none left", Get, 0, none),
    ];
    for (label, action, member, alarm) in steps {
        let r = m.alarm(alarm_request(action, member, alarm)).await;
        rec.outcome(label, r, alarms(own));
    }
    rec.ok("put after disarming", put(&mut kv, "x", "2").await);

    let steps: Vec<(&str, AlarmAction, u64, i32)> = vec![
        ("ACTIVATE NONE for member 5", Activate, 5, none),
        ("ACTIVATE CORRUPT for member 5", Activate, 5, corrupt),
        ("ACTIVATE type 7 for member 6", Activate, 6, unnamed),
        ("ACTIVATE NOSPACE for the server", Activate, own, nospace),
        ("GET all", Get, 0, none),
        ("GET CORRUPT", Get, 0, corrupt),
        ("GET type 7", Get, 0, unnamed),
        ("GET NOSPACE", Get, 0, nospace),
    ];
    for (label, action, member, alarm) in steps {
        let r = m.alarm(alarm_request(action, member, alarm)).await;
        rec.outcome(label, r, alarms(own));
    }
    rec.outcome(
        "Status with four alarms",
        m.status(pb::StatusRequest {}).await,
        status,
    );
    // NOSPACE first: etcd restores its normal applier when CORRUPT goes,
    // whatever else is raised.
    let steps: Vec<(&str, AlarmAction, u64, i32)> = vec![
        (
            "DEACTIVATE NOSPACE for the server",
            Deactivate,
            own,
            nospace,
        ),
        (
            "DEACTIVATE CORRUPT for member 6 (not raised)",
            Deactivate,
            6,
            corrupt,
        ),
        ("DEACTIVATE CORRUPT for member 5", Deactivate, 5, corrupt),
        ("DEACTIVATE NONE for member 5", Deactivate, 5, none),
        ("DEACTIVATE type 7 for member 6", Deactivate, 6, unnamed),
        ("GET all, none left", Get, 0, none),
    ];
    for (label, action, member, alarm) in steps {
        let r = m.alarm(alarm_request(action, member, alarm)).await;
        rec.outcome(label, r, alarms(own));
    }
    rec.outcome(
        "Status without alarms",
        m.status(pb::StatusRequest {}).await,
        status,
    );
    rec.ok("put at the end", put(&mut kv, "x", "3").await);
    rec
}

#[test]
fn alarms_answer_as_etcd() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut cairn = Member::start(tmp.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    let ours = rt.block_on(alarm_script(cairn.url.clone()));
    let theirs = rt.block_on(alarm_script(etcd.url.clone()));
    assert_same(&ours, &theirs);

    // cairn only: an unknown action is refused (etcd 3.4.23 dereferences a
    // nil response and crashes, so it is not sent to etcd).
    let err = rt
        .block_on(async {
            MaintenanceClient::new(common::channel(&cairn.url).await)
                .alarm(pb::AlarmRequest {
                    action: 3,
                    member_id: 0,
                    alarm: 0,
                })
                .await
        })
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            tonic::Code::InvalidArgument,
            "cairn: unknown alarm action 3"
        )
    );

    // Alarms of every kind survive a crash, and `etcdctl alarm disarm`
    // (which lists them and disarms each exactly) clears them.
    let list = |url: &str| {
        let url = url.to_string();
        rt.block_on(async move {
            let r = MaintenanceClient::new(common::channel(&url).await)
                .alarm(alarm_request(AlarmAction::Get, 0, 0))
                .await
                .unwrap()
                .into_inner();
            let mut l: Vec<(u64, i32)> = r.alarms.iter().map(|a| (a.member_id, a.alarm)).collect();
            l.sort();
            l
        })
    };
    rt.block_on(async {
        let mut m = MaintenanceClient::new(common::channel(&cairn.url).await);
        for (member, alarm) in [(0, 1), (5, 0), (6, 7)] {
            m.alarm(alarm_request(AlarmAction::Activate, member, alarm))
                .await
                .unwrap();
        }
    });
    let raised = vec![(0, 1), (5, 0), (6, 7)];
    assert_eq!(list(&cairn.url), raised);
    cairn.crash_and_restart(2);
    assert_eq!(list(&cairn.url), raised, "kept across a crash");
    let out = common::ok(cairn.endpoint(), &["alarm", "list"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        // etcdctl prints each as gogo's compact text (zero fields left out).
        ["alarm:NOSPACE ", "memberID:5 ", "memberID:6 alarm:7 "],
        "{out}"
    );
    common::ok(cairn.endpoint(), &["alarm", "disarm"]);
    assert_eq!(list(&cairn.url), vec![]);
}

fn presence<T>(x: &Option<T>) -> &'static str {
    if x.is_some() {
        "present"
    } else {
        "absent"
    }
}

/// One Snapshot message, described by its role, so that two streams of
/// different lengths compare: data chunks before the last, the last data
/// chunk, the final message.
fn snapshot_shape(messages: &[pb::SnapshotResponse]) -> Vec<String> {
    let (last, data) = messages.split_last().expect("a snapshot message");
    let total: usize = data.iter().map(|m| m.blob.len()).sum();
    let mut sent = 0;
    let mut shape: Vec<String> = Vec::new();
    for (i, m) in data.iter().enumerate() {
        sent += m.blob.len();
        let role = if i + 1 < data.len() {
            if m.blob.len() == 32 << 10 {
                "data chunk: 32 KiB"
            } else {
                "data chunk: not 32 KiB"
            }
        } else if !m.blob.is_empty() && m.blob.len() <= 32 << 10 {
            "last data chunk: 1 B to 32 KiB"
        } else {
            "last data chunk: empty or too long"
        };
        let remaining = if m.remaining_bytes == (total - sent) as u64 {
            "the data after it"
        } else {
            "something else"
        };
        let line = format!(
            "{role}, header {}, remaining_bytes {remaining}",
            presence(&m.header)
        );
        if shape.last() != Some(&line) {
            shape.push(line);
        }
    }
    let mut whole = sha2::Sha256::new();
    for m in data {
        whole.update(&m.blob);
    }
    let digest = if last.blob == whole.finalize().as_slice() {
        "SHA-256 of the data"
    } else {
        "not the SHA-256 of the data"
    };
    shape.push(format!(
        "final: {digest}, header {}, remaining_bytes {}",
        presence(&last.header),
        last.remaining_bytes
    ));
    shape.push(format!(
        "data in whole 512-byte pages: {}",
        total.is_multiple_of(512)
    ));
    // The content: an etcd backend (bbolt with etcd's buckets) holding the
    // 150 keys the script put, each once.
    let file: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.blob.iter().copied())
        .collect();
    let content = match cairn_snapshot::Snapshot::new(file.clone(), file.len() as u64, &Default::default())
        .and_then(|snap| snap.items()?.collect::<Result<Vec<_>, _>>())
    {
        Ok(items) => format!(
            "content: an etcd backend with {} puts under snap/",
            items
                .iter()
                .filter(|i| matches!(i, cairn_snapshot::Item::Put { kv, .. } if kv.key.starts_with(b"snap/")))
                .count()
        ),
        Err(e) => format!("content: not an etcd backend ({e})"),
    };
    shape.push(content);
    shape
}

async fn snapshot_script(url: String) -> (Vec<String>, usize) {
    let ch = common::channel(&url).await;
    let mut kv = KvClient::new(ch.clone());
    let value = "v".repeat(1000);
    for i in 0..150 {
        put(&mut kv, &format!("snap/{i:03}"), &value)
            .await
            .expect("put");
    }
    let mut stream = MaintenanceClient::new(ch)
        .snapshot(pb::SnapshotRequest {})
        .await
        .expect("Snapshot")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.expect("a snapshot message") {
        messages.push(m);
    }
    (snapshot_shape(&messages), messages.len())
}

/// The Snapshot stream's shape (its content, etcd's file format, is
/// checked by `tests/server_snapshot_etcd.rs`): 32 KiB chunks without headers, `remaining_bytes`
/// counting down the data, then the SHA-256 alone.
#[test]
fn snapshot_streams_as_etcd() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Member::start(tmp.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    let (ours, ours_n) = rt.block_on(snapshot_script(cairn.url.clone()));
    let (theirs, theirs_n) = rt.block_on(snapshot_script(etcd.url.clone()));
    assert_eq!(ours, theirs, "cairn (left) vs etcd 3.4 (right)");
    assert!(
        ours_n >= 3 && theirs_n >= 3,
        "several data chunks on both: {ours_n}, {theirs_n}"
    );
    assert_eq!(
        theirs,
        [
            "data chunk: 32 KiB, header absent, remaining_bytes the data after it",
            "last data chunk: 1 B to 32 KiB, header absent, remaining_bytes the data after it",
            "final: SHA-256 of the data, header absent, remaining_bytes 0",
            "data in whole 512-byte pages: true",
            "content: an etcd backend with 150 puts under snap/",
        ]
    );
}

/// The member list: ids as set/unset, the server's own URLs as
/// placeholders (checked first: the advertised client URL is the one dialed,
/// the peer URL a loopback one).
fn members(url: String, peer: Option<String>) -> impl Fn(pb::MemberListResponse) -> String {
    move |r| {
        let list: Vec<pb::Member> = r
            .members
            .iter()
            .map(|m| {
                assert_eq!(m.client_ur_ls, std::slice::from_ref(&url), "{m:?}");
                assert_eq!(m.peer_ur_ls.len(), 1, "{m:?}");
                assert!(m.peer_ur_ls[0].starts_with("http://127.0.0.1:"), "{m:?}");
                if let Some(peer) = &peer {
                    assert_eq!(&m.peer_ur_ls[0], peer, "{m:?}");
                }
                pb::Member {
                    id: set(m.id),
                    name: m.name.clone(),
                    peer_ur_ls: vec!["<peer>".into()],
                    client_ur_ls: vec!["<client>".into()],
                    is_learner: m.is_learner,
                }
            })
            .collect();
        format!("{:?} {list:?}", header(r.header))
    }
}

async fn cluster_script(url: String, peer: Option<String>) -> Record {
    let ch = common::channel(&url).await;
    let (mut m, mut c) = (MaintenanceClient::new(ch.clone()), ClusterClient::new(ch));
    let mut rec = Record::default();
    let r = c.member_list(pb::MemberListRequest {}).await;
    rec.outcome("MemberList", r, members(url.clone(), peer.clone()));
    let listed = c
        .member_list(pb::MemberListRequest {})
        .await
        .unwrap()
        .into_inner();
    let own = listed.members[0].id;
    assert_eq!(listed.header.unwrap().member_id, own);
    for (label, target_id) in [
        ("MoveLeader to 0", 0),
        ("MoveLeader to a non-member", own ^ 1),
        ("MoveLeader to itself", own),
    ] {
        let r = m.move_leader(pb::MoveLeaderRequest { target_id }).await;
        rec.outcome(label, r, |r| format!("{r:?}"));
    }
    let r = c.member_list(pb::MemberListRequest {}).await;
    rec.outcome("MemberList after", r, members(url.clone(), peer.clone()));
    rec
}

/// MemberList and MoveLeader on one member; the membership changes answer
/// Unimplemented on a member started alone (they work in clusters:
/// `cluster_procs.rs`, `cluster_inproc.rs`).
#[test]
fn member_list_and_move_leader_answer_as_etcd() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cairn = Member::start(tmp.path(), 2);
    let etcd = common::etcd();
    let rt = common::rt();
    let ours = rt.block_on(cluster_script(cairn.url.clone(), Some(cairn.peer.clone())));
    let theirs = rt.block_on(cluster_script(etcd.url.clone(), None));
    assert_same(&ours, &theirs);

    rt.block_on(async {
        let mut c = ClusterClient::new(common::channel(&cairn.url).await);
        let codes = [
            c.member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: false,
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            c.member_remove(pb::MemberRemoveRequest { id: 1 })
                .await
                .map(|_| ())
                .unwrap_err(),
            c.member_update(pb::MemberUpdateRequest {
                id: 1,
                peer_ur_ls: vec![],
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            c.member_promote(pb::MemberPromoteRequest { id: 1 })
                .await
                .map(|_| ())
                .unwrap_err(),
        ];
        for e in codes {
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
            assert!(
                e.message()
                    .contains("membership changes need a cluster started with several members"),
                "{e:?}"
            );
        }
    });
}
