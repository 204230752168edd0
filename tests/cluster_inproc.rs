//! Three members in one process over the in-memory channel transport
//! (issue 12, step 1): writes through any member, reads from every member,
//! the write leader stopped or cut off under writes, nothing acknowledged
//! lost, and the members converging afterwards.

mod common;

use common::cluster::{Cluster, MEMBERS};

#[test]
fn writes_through_any_member_are_read_from_every_member() {
    let c = Cluster::start(1, &[]);
    let leader = c.leader(&[]);
    let follower = (leader + 1) % MEMBERS;
    // Keys on both shards, through the leader and through a follower.
    let mut revisions = Vec::new();
    for k in 0..20 {
        let via = if k % 2 == 0 { leader } else { follower };
        revisions.push(c.put_until_acked(via, &format!("k{k}"), &format!("v{k}")));
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions increase: {revisions:?}"
    );
    for i in 0..MEMBERS {
        for k in 0..20 {
            c.converges(i, &format!("k{k}"), &format!("v{k}"));
        }
        // Linearizable reads on every member see the last write.
        assert_eq!(c.read(i, "k19"), Some("v19".into()));
    }
    // Read-your-writes through the follower: its own state has the write.
    c.put_until_acked(follower, "mine", "1");
    assert_eq!(
        c.get(follower, "mine", true).expect("read"),
        Some("1".into())
    );
    let last = *revisions.last().expect("writes");
    let hashes: Vec<u32> = (0..MEMBERS).map(|i| c.hash(i, last)).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {last} differs: {hashes:?}"
    );
}

#[test]
fn a_stopped_leader_is_replaced_and_nothing_acknowledged_is_lost() {
    let mut c = Cluster::start(2, &[]);
    let old = c.leader(&[]);
    let mut acked = Vec::new();
    for k in 0..10 {
        acked.push((
            format!("a{k}"),
            c.put_until_acked(old, &format!("a{k}"), "x"),
        ));
    }
    c.stop(old);
    let new = c.leader(&[old]);
    assert_ne!(new, old);
    for k in 0..10 {
        let rev = c.put_until_acked(new, &format!("b{k}"), "y");
        assert!(
            rev > acked.last().expect("acked").1,
            "revisions keep increasing"
        );
        acked.push((format!("b{k}"), rev));
    }
    for (key, _) in &acked {
        let want = if key.starts_with('a') { "x" } else { "y" };
        assert_eq!(c.read(new, key).as_deref(), Some(want), "{key}");
    }
    // The stopped member comes back, catches up and agrees.
    c.restart(old);
    let (last_key, last) = acked.last().expect("acked").clone();
    c.converges(old, &last_key, "y");
    let hashes: Vec<u32> = (0..MEMBERS).map(|i| c.hash(i, last)).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {last} differs: {hashes:?}"
    );
    let _ = c.id(old);
}

#[test]
fn an_isolated_leader_acknowledges_nothing_and_the_majority_goes_on() {
    let mut c = Cluster::start(3, &[]);
    let old = c.leader(&[]);
    c.put_until_acked(old, "before", "1");
    c.net.isolate(c.id(old));
    // A write sent to it at once is stamped and proposed before it notices:
    // it stays in its log, never committed, while it is cut off.
    let pending = {
        let url = c.url(old);
        std::thread::spawn(move || {
            let rt = common::rt();
            rt.block_on(async move {
                use cairn_proto::etcdserverpb as pb;
                let mut kv = pb::kv_client::KvClient::connect(url).await.ok()?;
                let put = kv.put(pb::PutRequest {
                    key: b"lost".to_vec(),
                    value: b"0".to_vec(),
                    ..Default::default()
                });
                tokio::time::timeout(std::time::Duration::from_secs(30), put)
                    .await
                    .ok()
                    .map(|r| r.is_ok())
            })
        })
    };
    let new = c.leader(&[old]);
    let rev = c.put_until_acked(new, "during", "2");
    // The isolated member acknowledges no write and no linearizable read.
    assert!(
        c.put(old, "lost", "3").is_err(),
        "isolated member acked a write"
    );
    assert!(
        c.get(old, "during", false).is_err(),
        "isolated member answered a linearizable read"
    );
    // Stopped while still cut off, with its write still in its log: a
    // clean stop, not a fatal error (the write's outcome is unknown).
    let fatal = c.members[old]
        .as_ref()
        .expect("running")
        .member
        .fatal
        .clone();
    c.stop(old);
    assert!(!fatal.is_latched(), "stopping latched a fatal error");
    assert_ne!(
        pending.join().expect("pending put"),
        Some(true),
        "the cut-off member acknowledged a write"
    );
    c.net.heal();
    c.restart(old);
    c.converges(old, "during", "2");
    assert_eq!(c.read(new, "lost"), None);
    let hashes: Vec<u32> = (0..MEMBERS).map(|i| c.hash(i, rev)).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {rev} differs: {hashes:?}"
    );
}

#[test]
fn a_follower_far_behind_catches_up_from_a_snapshot() {
    // Snapshots every 50 writes, and the log behind them purged: a member
    // that was away for 300 writes needs a snapshot streamed to it.
    let mut c = Cluster::start(4, &["--snapshot-count", "50"]);
    let leader = c.leader(&[]);
    let away = (leader + 1) % MEMBERS;
    c.put_until_acked(leader, "first", "1");
    c.stop(away);
    let mut last = 0;
    for k in 0..300 {
        last = c.put_until_acked(leader, &format!("s{k:03}"), &format!("{k}"));
    }
    c.restart(away);
    c.converges(away, "s299", "299");
    c.converges(away, "first", "1");
    let hashes: Vec<u32> = (0..MEMBERS).map(|i| c.hash(i, last)).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {last} differs: {hashes:?}"
    );
    // And it goes on applying what comes after the snapshot.
    c.put_until_acked(leader, "after", "2");
    c.converges(away, "after", "2");
}

#[test]
fn a_watch_on_a_follower_sees_every_write_in_order() {
    use cairn_proto::etcdserverpb as pb;
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    let c = Cluster::start(5, &[]);
    let leader = c.leader(&[]);
    let follower = (leader + 1) % MEMBERS;
    let start = c.put_until_acked(leader, "w/start", "0");
    let url = c.url(follower);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut events = c.rt.block_on(async move {
        tx.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"w/".to_vec(),
                    range_end: b"w0".to_vec(),
                    start_revision: start + 1,
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("create");
        // Kept open while the stream is read.
        std::mem::forget(tx);
        WatchClient::connect(url)
            .await
            .expect("connect")
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner()
    });
    // Writes through the leader and through the other follower, both shards.
    let other = (leader + 2) % MEMBERS;
    let mut written = Vec::new();
    for k in 0..30 {
        let via = if k % 2 == 0 { leader } else { other };
        let key = format!("w/{k}");
        written.push((key.clone(), c.put_until_acked(via, &key, "x")));
    }
    let seen: Vec<(String, i64)> = c.rt.block_on(async {
        let mut seen = Vec::new();
        while seen.len() < written.len() {
            let r = tokio::time::timeout(std::time::Duration::from_secs(30), events.message())
                .await
                .expect("events in time")
                .expect("stream")
                .expect("open");
            for e in r.events {
                let kv = e.kv.expect("kv");
                seen.push((
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                ));
            }
        }
        seen
    });
    assert_eq!(seen, written, "the follower's watch: every write, in order");
}

#[test]
fn a_learner_is_added_caught_up_promoted_and_a_member_removed() {
    use cairn_proto::etcdserverpb as pb;
    use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
    // One shard each: four members' shard cores within the memlock limit.
    let mut c = Cluster::start_with(7, 1, &[]);
    let leader = c.leader(&[]);
    for k in 0..20 {
        c.put_until_acked(leader, &format!("k{k}"), "before");
    }
    let list = |c: &Cluster, via: usize| -> Vec<pb::Member> {
        let url = c.url(via);
        c.rt.block_on(async move {
            let mut cl = ClusterClient::connect(url).await.expect("connect");
            cl.member_list(pb::MemberListRequest::default())
                .await
                .expect("list")
                .into_inner()
                .members
        })
    };
    let new = c.add_member(leader, true);
    // Its very first answer knows the cluster and that it is a learner (it
    // serves clients only once it has applied its own addition).
    let status = |c: &Cluster, i: usize| {
        let url = c.url(i);
        c.rt.block_on(async move {
            let call = async {
                let mut m =
                    cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient::connect(url)
                        .await
                        .expect("connect");
                m.status(pb::StatusRequest {}).await
            };
            tokio::time::timeout(common::cluster::SETTLE, call)
                .await
                .expect("answers within SETTLE")
                .expect("status")
                .into_inner()
        })
    };
    let first = status(&c, new);
    let cluster_id = status(&c, leader).header.expect("header").cluster_id;
    assert_eq!(first.header.expect("header").cluster_id, cluster_id);
    assert!(
        first.is_learner,
        "a joining learner says so from its first answer"
    );
    // The learner catches up from the others and serves serializable reads.
    c.converges(new, "k19", "before");
    let err = c.put(new, "x", "1").expect_err("a learner takes no write");
    assert_eq!(err.message(), "etcdserver: rpc not supported for learner");
    let before = list(&c, leader);
    assert_eq!(before.len(), 4);
    assert!(before.iter().any(|m| m.id == c.id(new) && m.is_learner));
    // A second learner: refused as etcd does.
    let url = c.url(leader);
    let err = c.rt.block_on(async move {
        ClusterClient::connect(url)
            .await
            .expect("connect")
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: true,
            })
            .await
            .expect_err("one learner at most")
    });
    assert_eq!(
        err.message(),
        "etcdserver: too many learner members in cluster"
    );
    // Promoted (once in sync), it takes writes through its front.
    let deadline = std::time::Instant::now() + common::cluster::SETTLE;
    loop {
        let (url, id) = (c.url(leader), c.id(new));
        let promoted = c.rt.block_on(async move {
            ClusterClient::connect(url)
                .await
                .expect("connect")
                .member_promote(pb::MemberPromoteRequest { id })
                .await
        });
        match promoted {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "promote: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    c.put_until_acked(new, "via-new", "1");
    assert_eq!(c.read(leader, "via-new"), Some("1".into()));
    // Remove a follower: it stops; the other three go on.
    let gone = (0..MEMBERS).find(|i| *i != leader).expect("a follower");
    let (url, id) = (c.url(leader), c.id(gone));
    c.rt.block_on(async move {
        ClusterClient::connect(url)
            .await
            .expect("connect")
            .member_remove(pb::MemberRemoveRequest { id })
            .await
            .expect("remove")
    });
    let deadline = std::time::Instant::now() + common::cluster::SETTLE;
    while !c.members[gone]
        .as_ref()
        .expect("running")
        .member
        .fatal
        .is_latched()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed member goes on"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let removed = c.members[gone].take().expect("running");
    let _ = removed.stop(Some("removed".into()));
    let after = list(&c, leader);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|m| !m.is_learner && m.id != id));
    let rev = c.put_until_acked(leader, "after-remove", "1");
    for i in (0..c.members.len()).filter(|i| *i != gone) {
        c.converges(i, "after-remove", "1");
        let _ = c.hash(i, rev);
    }
}

#[test]
fn a_watch_that_requires_a_leader_ends_when_its_member_loses_it() {
    use cairn_proto::etcdserverpb as pb;
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    let c = Cluster::start(8, &[]);
    let leader = c.leader(&[]);
    let follower = (leader + 1) % MEMBERS;
    let url = c.url(follower);
    // The follower may not know the leader yet when the leader does: a
    // client retries `no leader` (as clientv3 does) until it knows one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut stream = loop {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let url = url.clone();
        let opened = c.rt.block_on(async move {
            tx.send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    },
                )),
            })
            .await
            .expect("create");
            std::mem::forget(tx);
            let mut req = tonic::Request::new(ReceiverStream::new(rx));
            // clientv3's WithRequireLeader.
            req.metadata_mut()
                .insert("hasleader", "true".parse().expect("metadata"));
            WatchClient::connect(url)
                .await
                .expect("connect")
                .watch(req)
                .await
        });
        match opened {
            Ok(r) => break r.into_inner(),
            Err(s) if s.message() == "etcdserver: no leader" => {
                assert!(std::time::Instant::now() < deadline, "{s:?}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(s) => panic!("watch: {s:?}"),
        }
    };
    let created =
        c.rt.block_on(stream.message())
            .expect("created")
            .expect("open");
    assert!(created.created);
    // Cut the follower off: it loses its leader, and the watch ends so.
    c.net.isolate(c.id(follower));
    let ended = c.rt.block_on(async {
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), stream.message()).await {
                Err(_) => panic!("the watch went on without a leader"),
                Ok(Err(status)) => return status,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => panic!("the stream ended without etcd's error"),
            }
        }
    });
    assert_eq!(ended.message(), "etcdserver: no leader");
    c.net.heal();
}

#[test]
fn a_fresh_cluster_shows_revision_1_on_every_member_before_any_write() {
    use cairn_proto::etcdserverpb as pb;
    let c = Cluster::start(14, &[]);
    // Asked at once (before a write leader may exist) and once one does:
    // etcd's first revision is 1, never 0.
    for round in 0..2 {
        if round == 1 {
            c.leader(&[]);
        }
        for i in 0..MEMBERS {
            let url = c.url(i);
            let rev = c.rt.block_on(async move {
                let mut kv = pb::kv_client::KvClient::connect(url)
                    .await
                    .expect("connect");
                kv.range(pb::RangeRequest {
                    key: b"nothing".to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .expect("range")
                .into_inner()
                .header
                .expect("header")
                .revision
            });
            assert_eq!(rev, 1, "member {i}, round {round}");
        }
    }
}
