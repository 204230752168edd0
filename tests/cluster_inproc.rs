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
    let c = Cluster::start(3, &[]);
    let old = c.leader(&[]);
    c.put_until_acked(old, "before", "1");
    c.net.isolate(c.id(old));
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
    c.net.heal();
    c.converges(old, "during", "2");
    assert_eq!(c.read(new, "lost"), None);
    let hashes: Vec<u32> = (0..MEMBERS).map(|i| c.hash(i, rev)).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at {rev} differs: {hashes:?}"
    );
}
