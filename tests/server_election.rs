//! The Election service (`v3electionpb.Election`) and `etcdctl elect`, side
//! by side with a real etcd 3.4.23: each scenario runs against a fresh etcd,
//! then fresh cairn members (one shard and two), and every step's outcome
//! must match etcd's as it happens (`lease_harness`; normalization in
//! `lock_harness`). Candidates' lease IDs are chosen so that one election's
//! keys lie on both shards of a two-shard member.
//!
//! `CAIRN_LEASE_ETCD_ONLY=1` prints etcd's steps; `CAIRN_LEASE_ETCD_TWICE=1`
//! checks the scripts against a second etcd.

mod common;
#[allow(dead_code)]
mod lease_harness;
#[allow(dead_code)]
mod lock_harness;

use lease_harness::*;
use lock_harness::*;
use std::time::Duration;

/// How long an Observe stream is watched sending nothing.
const QUIET: Duration = Duration::from_millis(700);

/// Campaign, Proclaim, Leader, Resign and their errors (code Unknown with
/// etcd's message): no leader, not leader, a missing leader field, an
/// unknown lease, empty keys; a Campaign of the leader's own lease with
/// another value proclaims it; a Proclaim with lease 0 moves the key to a
/// new lease of the server's, as etcd 3.4's does.
async fn election_basics_script(mut r: Run) -> Run {
    leader(&mut r, "no leader yet", "e").await;
    proclaim(&mut r, "proclaim without a leader field", None, "x").await;
    resign(&mut r, "resign without a leader field", None).await;
    campaign(&mut r, "campaign with an unknown lease", "e", UNKNOWN, "x").await;
    let ids = ids_across_shards("e/", 2);
    for &id in &ids {
        r.grant("grant", 100, id).await;
    }
    let me = campaign(&mut r, "campaign", "e", ids[0], "a")
        .await
        .expect("elected");
    leader(&mut r, "the leader", "e").await;
    let wrong = epb_leader(&me, |l| l.rev += 100);
    proclaim(&mut r, "proclaim with a wrong rev", wrong.clone(), "x").await;
    resign(&mut r, "resign with a wrong rev", wrong).await;
    let empty = epb_leader(&me, |l| l.key.clear());
    proclaim(&mut r, "proclaim with an empty key", empty.clone(), "x").await;
    resign(&mut r, "resign with an empty key", empty).await;
    proclaim(&mut r, "proclaim", Some(me.clone()), "a2").await;
    leader(&mut r, "the new value", "e").await;
    let no_lease = epb_leader(&me, |l| l.lease = 0);
    proclaim(&mut r, "proclaim with lease 0", no_lease, "a3").await;
    leader(&mut r, "the value, on a new lease", "e").await;
    let other = campaign(&mut r, "a second candidate's campaign", "f", ids[1], "b").await;
    campaign(&mut r, "campaign again, another value", "e", ids[0], "a4").await;
    leader(&mut r, "proclaimed, on the campaign's lease", "e").await;
    resign(&mut r, "resign", Some(me.clone())).await;
    leader(&mut r, "no leader", "e").await;
    resign(&mut r, "resign again", Some(me)).await;
    resign(&mut r, "resign f", other).await;
    campaign(&mut r, "an empty name", "", ids[0], "z").await;
    leader(&mut r, "its leader", "").await;
    keys(&mut r, "the keys", "").await;
    r
}

/// A leader key with `change` made to it.
fn epb_leader(
    l: &cairn_proto::v3electionpb::LeaderKey,
    change: impl FnOnce(&mut cairn_proto::v3electionpb::LeaderKey),
) -> Option<cairn_proto::v3electionpb::LeaderKey> {
    let mut l = l.clone();
    change(&mut l);
    Some(l)
}

/// Observe: nothing while there is no leader; the first leader; its
/// proclaimed values; the next leader when it resigns (a waiting Campaign
/// then answers); nothing when the leader's lease is revoked and no one
/// waits; the next leader to come; a second observer starts with the
/// current leader. A waiting candidate whose client goes away resigns.
async fn observe_script(mut r: Run) -> Run {
    let ids = ids_across_shards("e/", 4);
    for &id in &ids {
        r.grant("grant", 100, id).await;
    }
    let mut o = observe(&r, "e");
    observed(&mut r, "no leader: nothing", &mut o, QUIET).await;
    let a = campaign(&mut r, "A campaigns", "e", ids[0], "a").await;
    observed(&mut r, "A leads", &mut o, PATIENCE).await;
    let b = campaign_in_task(&r, "e", ids[1], "b");
    let kb = format!("e/{:x}", ids[1]);
    let created = wait_key(&mut r, kb.as_bytes(), true).await;
    r.fact("B's key is created", created);
    let waiting = still_waiting(&b).await;
    r.fact("B waits", waiting);
    observed(&mut r, "B's key is not the leader's", &mut o, QUIET).await;
    proclaim(&mut r, "A proclaims", a.clone(), "a2").await;
    observed(&mut r, "A's new value", &mut o, PATIENCE).await;
    resign(&mut r, "A resigns", a).await;
    let got = answer(b).await;
    let (got, _) = campaign_outcome(&mut r, got);
    r.push("B is elected", got, vec![]);
    observed(&mut r, "B leads", &mut o, PATIENCE).await;
    r.revoke("revoke B's lease", ids[1]).await;
    observed(&mut r, "no leader: nothing", &mut o, QUIET).await;
    campaign(&mut r, "C campaigns", "e", ids[2], "c").await;
    observed(&mut r, "C leads", &mut o, PATIENCE).await;
    let mut o2 = observe(&r, "e");
    observed(&mut r, "a new observer: C", &mut o2, PATIENCE).await;
    let d = campaign_in_task(&r, "e", ids[3], "d");
    let kd = format!("e/{:x}", ids[3]);
    let created = wait_key(&mut r, kd.as_bytes(), true).await;
    r.fact("D's key is created", created);
    let waiting = still_waiting(&d).await;
    r.fact("D waits", waiting);
    d.abort();
    let gone = wait_key(&mut r, kd.as_bytes(), false).await;
    r.fact("D's client went away: D resigned", gone);
    observed(&mut r, "nothing", &mut o, QUIET).await;
    keys(&mut r, "C's key", "e/").await;
    r
}

#[test]
fn election_answers_as_etcd() {
    side_by_side(&[1, 2], election_basics_script);
}

#[test]
fn observe_streams_leaders_as_etcd() {
    side_by_side(&[1, 2], observe_script);
}

/// `etcdctl elect` (clientv3's Election over KV, Lease and Watch) in
/// processes: an observer (`elect -l`) prints nothing until there is a
/// leader, then each leader; a second candidate waits until the first's
/// process ends (SIGTERM: it resigns). (A revoked lease is in
/// `observe_script`: etcdctl's session would notice it only at its next
/// keepalive, 20 s later.)
async fn etcdctl_elect_script(mut r: Run) -> Run {
    let url = r.server.url();
    let observer = Ctl::start(&url, &["elect", "-l", "E"]);
    r.fact("the observer: nothing yet", observer.quiet());
    let one = Ctl::start(&url, &["elect", "E", "one"]);
    let got = keyed(&mut r, &one.lines(2));
    r.fact("the first is elected", got);
    let got = keyed(&mut r, &observer.lines(2));
    r.fact("the observer sees it", got);
    let two = Ctl::start(&url, &["elect", "E", "two"]);
    r.fact("the second waits", two.quiet());
    r.fact("the first ends on SIGTERM", one.stop(false));
    let got = keyed(&mut r, &two.lines(2));
    r.fact("the second is elected", got);
    let got = keyed(&mut r, &observer.lines(2));
    r.fact("the observer sees it", got);
    r.fact("the second ends on SIGTERM", two.stop(false));
    r.fact("the observer: no leader, nothing", observer.quiet());
    r.fact("the observer ends on SIGTERM", observer.stop(false));
    keys(&mut r, "no key left", "E/").await;
    r
}

#[test]
fn etcdctl_elect_works_as_against_etcd() {
    side_by_side(&[1, 2], etcdctl_elect_script);
}
