//! The Lock service (`v3lockpb.Lock`) and `etcdctl lock`, side by side with
//! a real etcd 3.4.23: each scenario runs against a fresh etcd, then fresh
//! cairn members (one shard and two), and every step's outcome must match
//! etcd's as it happens (`lease_harness`; normalization in
//! `lock_harness`). Contenders' lease IDs are chosen so that one lock's keys
//! lie on both shards of a two-shard member.
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

/// Errors as etcd's lock server sends them (code Unknown, etcd's message),
/// lease 0 (a new 60 s lease), re-entering with the same lease, an empty
/// name, Unlock of a missing key.
async fn lock_basics_script(mut r: Run) -> Run {
    lock(&mut r, "unknown lease", "n", UNKNOWN).await;
    lock(&mut r, "negative lease", "n", -5).await;
    unlock(&mut r, "unlock an empty key", b"").await;
    unlock(&mut r, "unlock a missing key", b"n/0").await;
    keys(&mut r, "nothing was written", "").await;
    let k = lock(&mut r, "lease 0: a lease of the server's", "n", 0)
        .await
        .expect("locked");
    // Its lease: 60 s, granted by the server, holding the key.
    let hex = String::from_utf8_lossy(&k)
        .rsplit_once('/')
        .unwrap()
        .1
        .to_string();
    let id = u64::from_str_radix(&hex, 16).expect("hex") as i64;
    let t = r
        .lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    let held: Vec<String> = t.keys.iter().map(|x| key(&mut r, x)).collect();
    let got = format!("granted {} keys {held:?}", t.granted_ttl);
    let since = r.since(id, t.ttl);
    r.push("the lease of lease 0", Ok(got), vec![since]);
    unlock(&mut r, "unlock it", &k).await;
    let l = r.grant("grant", 100, 0x10).await;
    let k = lock(&mut r, "lock n", "n", l).await.expect("locked");
    lock(&mut r, "the same lease again: at once, same key", "n", l).await;
    lock(&mut r, "an empty name", "", l).await;
    keys(&mut r, "the keys", "").await;
    unlock(&mut r, "unlock n", &k).await;
    unlock(&mut r, "unlock it again", &k).await;
    keys(&mut r, "the keys", "").await;
    r
}

/// Three contenders with their keys on both shards: the first holds it,
/// the others wait in create-revision order; an Unlock hands it to the
/// second only, a revoke of the second's lease to the third.
async fn contention_script(mut r: Run) -> Run {
    let ids = ids_across_shards("n/", 3);
    for &id in &ids {
        r.grant("grant", 100, id).await;
    }
    let first = lock(&mut r, "the first locks", "n", ids[0]).await;
    let second = lock_in_task(&r, "n", ids[1]);
    let k2 = format!("n/{:x}", ids[1]);
    let k3 = format!("n/{:x}", ids[2]);
    let created = wait_key(&mut r, k2.as_bytes(), true).await;
    r.fact("the second's key is created", created);
    let third = lock_in_task(&r, "n", ids[2]);
    let created = wait_key(&mut r, k3.as_bytes(), true).await;
    r.fact("the third's key is created", created);
    let waiting = (still_waiting(&second).await, !third.is_finished());
    r.fact("both wait", waiting);
    keys(&mut r, "three keys", "n/").await;
    unlock(&mut r, "the first unlocks", &first.expect("locked")).await;
    let got = answer(second).await;
    let (got, _) = lock_outcome(&mut r, got);
    r.push("the second has it", got, vec![]);
    let waiting = still_waiting(&third).await;
    r.fact("the third still waits", waiting);
    r.revoke("revoke the second's lease", ids[1]).await;
    let got = answer(third).await;
    let (got, _) = lock_outcome(&mut r, got);
    r.push("the third has it", got, vec![]);
    keys(&mut r, "the third's key", "n/").await;
    r
}

/// A key under the prefix that is no contender's still counts: a Lock
/// waits until it is deleted.
async fn other_keys_script(mut r: Run) -> Run {
    let l = r.grant("grant", 100, 0x20).await;
    r.put("a plain key under q/", put_req("q/plain", "v", 0))
        .await;
    let h = lock_in_task(&r, "q", l);
    let waiting = still_waiting(&h).await;
    r.fact("the lock waits for it", waiting);
    r.delete("delete the plain key", "q/plain").await;
    let got = answer(h).await;
    let (got, _) = lock_outcome(&mut r, got);
    r.push("locked", got, vec![]);
    r
}

/// A waiter whose client goes away: its key is deleted (etcd's
/// `Mutex.Unlock` on a cancelled wait); the holder keeps the lock.
async fn cancel_script(mut r: Run) -> Run {
    let ids = ids_across_shards("n/", 2);
    for &id in &ids {
        r.grant("grant", 100, id).await;
    }
    lock(&mut r, "the first locks", "n", ids[0]).await;
    let second = lock_in_task(&r, "n", ids[1]);
    let k2 = format!("n/{:x}", ids[1]);
    let created = wait_key(&mut r, k2.as_bytes(), true).await;
    r.fact("the second's key is created", created);
    let waiting = still_waiting(&second).await;
    r.fact("it waits", waiting);
    second.abort();
    let gone = wait_key(&mut r, k2.as_bytes(), false).await;
    r.fact("its client went away: its key is deleted", gone);
    keys(&mut r, "the first's key alone", "n/").await;
    r
}

/// The holder's lease expires: the waiter gets the lock. The waiter's own
/// lease expires while it waits: etcd 3.4 does not notice, and answers
/// when its turn comes, with the key that is gone.
async fn expiry_script(mut r: Run) -> Run {
    let ids = ids_across_shards("n/", 3);
    r.grant("grant a short lease", 2, ids[0]).await;
    r.grant("grant", 100, ids[1]).await;
    lock(&mut r, "lock with the short lease", "n", ids[0]).await;
    let second = lock_in_task(&r, "n", ids[1]);
    let got = answer(second).await;
    let (got, k2) = lock_outcome(&mut r, got);
    r.push("the holder's lease expired: the waiter has it", got, vec![]);
    r.grant("grant a short lease", 2, ids[2]).await;
    let third = lock_in_task(&r, "n", ids[2]);
    let k3 = format!("n/{:x}", ids[2]);
    let created = wait_key(&mut r, k3.as_bytes(), true).await;
    r.fact("the third's key is created", created);
    let gone = wait_key(&mut r, k3.as_bytes(), false).await;
    r.fact("its lease expired: its key is gone", gone);
    r.fact("it still waits", !third.is_finished());
    unlock(&mut r, "the second unlocks", &k2.expect("locked")).await;
    let got = answer(third).await;
    let (got, _) = lock_outcome(&mut r, got);
    r.push("the third answers, with its lost key", got, vec![]);
    keys(&mut r, "no key", "n/").await;
    r
}

#[test]
fn lock_answers_as_etcd() {
    side_by_side(&[1, 2], lock_basics_script);
}

#[test]
fn contenders_take_the_lock_in_create_order_as_etcd() {
    side_by_side(&[1, 2], contention_script);
}

#[test]
fn a_lock_waits_for_other_keys_under_its_prefix_as_etcd() {
    side_by_side(&[2], other_keys_script);
}

#[test]
fn a_waiter_that_goes_away_deletes_its_key_as_etcd() {
    side_by_side(&[1, 2], cancel_script);
}

#[test]
fn leases_expire_under_locks_as_etcd() {
    side_by_side(&[2], expiry_script);
}

/// `etcdctl lock` (clientv3's Mutex over KV, Lease and Watch: a session
/// lease kept alive) with contenders in processes: the second waits until
/// the first's process ends (SIGTERM: it unlocks), the third until the
/// second's lease is revoked (the second then reports its session
/// expired), the fourth until the third's process is killed and its
/// session lease (`--ttl 2`) expires; then the `lock <name> <command>`
/// form runs the command with the lock's key and revision.
async fn etcdctl_lock_script(mut r: Run) -> Run {
    let url = r.server.url();
    let first = Ctl::start(&url, &["lock", "L"]);
    let lines = first.lines(2);
    let got = keyed(&mut r, &lines);
    r.fact("the first prints its key", got);
    let second = Ctl::start(&url, &["lock", "L"]);
    r.fact("the second waits", second.quiet());
    r.fact("the first ends on SIGTERM", first.stop(false));
    let lines = second.lines(2);
    let got = keyed(&mut r, &lines);
    r.fact("the second has it", got);
    let third = Ctl::start(&url, &["lock", "--ttl", "2", "L"]);
    r.fact("the third waits", third.quiet());
    let hex = lines[0].rsplit_once('/').expect("a contender's key").1;
    let lease = u64::from_str_radix(hex, 16).expect("a lease in hex") as i64;
    r.revoke("revoke the second's lease", lease).await;
    let mut second = second;
    r.fact("the second's session expired", second.wait());
    let got = keyed(&mut r, &third.lines(2));
    r.fact("the third has it", got);
    let fourth = Ctl::start(&url, &["lock", "L"]);
    r.fact("the fourth waits", fourth.quiet());
    let (code, _) = third.stop(true);
    r.fact("the third is killed", code);
    let got = keyed(&mut r, &fourth.lines(2));
    r.fact("the third's lease expired: the fourth has it", got);
    fourth.stop(false);
    let mut cmd = Ctl::start(
        &url,
        &[
            "lock",
            "L",
            "--",
            "sh",
            "-c",
            "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV",
        ],
    );
    let line = cmd.lines(1).remove(0);
    let (k, rev) = line.split_once(' ').expect("key and revision");
    let got = format!("{} rev {rev}", key(&mut r, k.as_bytes()));
    r.fact("lock L -- cmd: the command sees the key and revision", got);
    r.fact("and ends", cmd.wait());
    keys(&mut r, "no lock key left", "L/").await;
    r
}

#[test]
fn etcdctl_lock_works_as_against_etcd() {
    side_by_side(&[1, 2], etcdctl_lock_script);
}
