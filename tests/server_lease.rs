//! The Lease service, side by side with a real etcd 3.4.23: each scenario
//! runs the same requests against a fresh etcd, then a fresh cairn member
//! (one shard and two), and every step's outcome must match etcd's, checked
//! as it happens. Normalized: lease IDs the server chose (labelled `L1`,
//! `L2`, ... in order of first sight; client-chosen IDs stay as they are),
//! cluster/member IDs and raft_term (set or unset), remaining TTLs (plus the
//! time since the client saw the lease granted, renewed or restarted, equal
//! within 1.5 s, so a slower run does not count against it), and the keys
//! of TimeToLive (sorted: etcd lists them in Go map order). Revisions,
//! codes, messages, header presence and every other field are compared
//! exactly. Expiry and restarts: `server_lease_expiry.rs`; the runner:
//! `lease_harness`.
//!
//! `CAIRN_LEASE_ETCD_ONLY=1` runs etcd's side alone and prints its steps;
//! `CAIRN_LEASE_ETCD_TWICE=1` checks the scripts: a second etcd in cairn's
//! place must match the first.

mod common;
#[allow(dead_code)]
mod lease_harness;

use lease_harness::*;

/// Grant: TTLs raised to the minimum (2 s with etcd's default flags), the
/// largest TTL, client IDs, a duplicate, the TTL error before the duplicate
/// one; a grant takes no revision.
async fn grant_script(mut r: Run) -> Run {
    common::put(&mut r.kv, "x", "1").await;
    let mut chosen = Vec::new();
    for ttl in [0, 1, -5, 9_000_000_000] {
        chosen.push(r.grant(&format!("grant TTL {ttl}"), ttl, 0).await);
    }
    r.grant("grant TTL 9000000001", 9_000_000_001, 0).await;
    r.grant("client ID 7", 10, 7).await;
    r.grant("client ID 7 again", 10, 7).await;
    r.grant("client ID 7 again, TTL too large", 9_000_000_001, 7)
        .await;
    r.grant("negative client ID", 10, -3).await;
    let distinct: std::collections::BTreeSet<_> = chosen.iter().collect();
    r.fact(
        "server-chosen IDs: positive, distinct",
        (chosen.iter().all(|&i| i > 0), distinct.len()),
    );
    r.ttl("the raised TTL is granted", chosen[0], false).await;
    r.ttl("the largest TTL", chosen[3], false).await;
    r.ttl("the negative ID", -3, false).await;
    r.put("a put after the grants", put_req("x", "2", 0)).await;
    r
}

/// Revoke: unknown IDs, a lease without keys (no revision), a lease with
/// keys on both shards (one revision, DELETE events in key order).
async fn revoke_script(mut r: Run) -> Run {
    r.revoke("revoke an unknown ID", UNKNOWN).await;
    r.revoke("revoke ID 0", 0).await;
    common::put(&mut r.kv, "z", "no lease").await;
    let empty = r.grant("grant", 100, 0).await;
    r.revoke("revoke a lease without keys", empty).await;
    r.revoke("revoke it again", empty).await;
    let l = r.grant("grant", 100, 0).await;
    let mut w = r.watch(0).await;
    for k in KEYS.iter().rev() {
        r.put(&format!("put {k} with the lease"), put_req(k, "v", l))
            .await;
    }
    let rev = r.revoke("revoke: one revision", l).await;
    r.range("just before the revoke", rev - 1).await;
    r.range("after the revoke", 0).await;
    let evs = r.events(&mut w, KEYS.len() * 2, deadline()).await;
    r.fact(
        "watch: puts, then DELETEs at one revision in key order",
        evs,
    );
    r.ttl("TimeToLive after the revoke", l, true).await;
    r.revoke("revoke it again", l).await;
    r
}

fn txn(taken: bool, success: Vec<pb::PutRequest>, failure: Vec<pb::PutRequest>) -> pb::TxnRequest {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let ops = |puts: Vec<pb::PutRequest>| {
        let op = |p| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(p)),
        };
        puts.into_iter().map(op).collect()
    };
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: b"never".to_vec(),
            range_end: vec![],
            target_union: Some(TargetUnion::Version(if taken { 0 } else { 1 })),
        }],
        success: ops(success),
        failure: ops(failure),
    }
}

/// Puts with leases: an unknown lease, in either branch of a txn;
/// `ignore_lease` / `ignore_value` errors and their order against the lease
/// check (single Put: lease first; Txn: key first); what they keep.
async fn put_checks_script(mut r: Run) -> Run {
    let l = r.grant("grant", 100, 0).await;
    r.put("unknown lease", put_req("k", "v0", UNKNOWN)).await;
    r.range("nothing changed", 0).await;
    r.put("put k with the lease", put_req("k", "v1", l)).await;
    let bad = || put_req("a", "t", UNKNOWN);
    let good = |k: &str| put_req(k, "t", l);
    r.txn(
        "txn: unknown lease, taken",
        txn(true, vec![bad()], vec![good("b")]),
    )
    .await;
    r.txn(
        "txn: unknown lease, not taken",
        txn(true, vec![good("b")], vec![bad()]),
    )
    .await;
    r.txn(
        "txn: failure taken, unknown lease",
        txn(false, vec![good("c")], vec![bad()]),
    )
    .await;
    r.txn(
        "txn: a good and a bad put",
        txn(true, vec![good("c"), bad()], vec![]),
    )
    .await;
    r.range("after the txns", 0).await;
    let p = |key: &str, value: &str, lease: i64, ignore_value: bool, ignore_lease: bool| {
        pb::PutRequest {
            ignore_value,
            ignore_lease,
            ..put_req(key, value, lease)
        }
    };
    let cases = [
        ("ignore_lease with a lease", p("k", "x", l, false, true)),
        (
            "ignore_lease with an unknown lease",
            p("k", "x", UNKNOWN, false, true),
        ),
        ("ignore_value with a value", p("k", "x", 0, true, false)),
        ("ignore_value, missing key", p("m", "", 0, true, false)),
        ("ignore_lease, missing key", p("m", "x", 0, false, true)),
        ("both ignores, missing key", p("m", "", 0, true, true)),
        (
            "ignore_value, unknown lease, missing key",
            p("m", "", UNKNOWN, true, false),
        ),
        (
            "ignore_value, unknown lease, k",
            p("k", "", UNKNOWN, true, false),
        ),
    ];
    for (label, req) in cases {
        r.put(&format!("Put: {label}"), req.clone()).await;
        r.txn(&format!("Txn: {label}"), txn(true, vec![req], vec![]))
            .await;
    }
    r.put("ignore_lease keeps the lease", p("k", "v2", 0, false, true))
        .await;
    r.range("k", 0).await;
    r.put(
        "ignore_value, lease 0: detaches",
        p("k", "", 0, true, false),
    )
    .await;
    r.range("k", 0).await;
    r.txn(
        "Txn: ignore_value with the lease",
        txn(true, vec![p("k", "", l, true, false)], vec![]),
    )
    .await;
    r.txn(
        "Txn: ignore_lease keeps it",
        txn(true, vec![p("k", "v3", 0, false, true)], vec![]),
    )
    .await;
    r.range("k", 0).await;
    r.ttl("the lease's keys", l, true).await;
    r
}

/// TimeToLive of unknown and fresh leases; keys attached, moved between
/// leases, detached by a put without lease and by a delete; a txn attaching
/// on both shards; revoking one lease leaves the moved keys.
async fn attach_script(mut r: Run) -> Run {
    r.ttl("unknown", UNKNOWN, false).await;
    r.ttl("unknown, keys", UNKNOWN, true).await;
    r.ttl("ID 0", 0, true).await;
    let l1 = r.grant("grant L1", 30, 0).await;
    let l2 = r.grant("grant L2", 60, 0).await;
    let t = r.ttl("just after the grant", l1, false).await;
    r.fact("below the granted TTL: truncated, not rounded", t < 30);
    r.ttl("no keys yet", l1, true).await;
    for k in KEYS.iter().rev() {
        r.put(&format!("put {k} with L1"), put_req(k, "v", l1))
            .await;
    }
    r.ttl("L1, keys", l1, true).await;
    r.ttl("L1, keys not asked", l1, false).await;
    r.put("a moves to L2", put_req("a", "w", l2)).await;
    r.ttl("L1, keys", l1, true).await;
    r.ttl("L2, keys", l2, true).await;
    r.put("b: no lease", put_req("b", "w", 0)).await;
    r.delete("delete c", "c").await;
    r.ttl("L1, keys", l1, true).await;
    let put = |k: &str| put_req(k, "t", l2);
    r.txn(
        "txn: d, e, f with L2",
        txn(true, vec![put("d"), put("e"), put("f")], vec![]),
    )
    .await;
    r.ttl("L2, keys", l2, true).await;
    r.range("leases in Range", 0).await;
    r.revoke("revoke L1", l1).await;
    r.range("after revoking L1", 0).await;
    r.ttl("L2, keys", l2, true).await;
    r.revoke("revoke L2", l2).await;
    r.range("after revoking L2", 0).await;
    r
}

/// LeaseLeases: every lease, by remaining time (etcd sorts by expiry).
async fn leases_script(mut r: Run) -> Run {
    r.leases("none", false).await;
    let mut ids = Vec::new();
    for (ttl, id) in [(100, 0), (10, 0), (50, 0), (30, 0), (20, 77)] {
        ids.push(r.grant(&format!("grant TTL {ttl}"), ttl, id).await);
    }
    r.leases("by remaining time", false).await;
    r.revoke("revoke TTL 50", ids[2]).await;
    r.leases("without it", false).await;
    r
}

/// KeepAlive: one stream for several leases, unknown and revoked IDs
/// answered TTL 0 without ending it, two streams at once, half-close.
async fn keep_alive_script(mut r: Run) -> Run {
    common::put(&mut r.kv, "x", "1").await;
    let l1 = r.grant("grant L1", 10, 0).await;
    let l2 = r.grant("grant L2", 20, 0).await;
    r.grant("grant 7", 30, 7).await;
    let mut ka = r.keep_alive("open with L1", l1).await;
    for (label, id) in [
        ("L2", l2),
        ("7", 7),
        ("unknown", UNKNOWN),
        ("0", 0),
        ("L1", l1),
    ] {
        r.ka(&mut ka, label, id).await;
    }
    common::put(&mut r.kv, "x", "2").await;
    r.ka(&mut ka, "after a put: the header's revision", l1)
        .await;
    r.revoke("revoke L2", l2).await;
    r.ka(&mut ka, "revoked L2", l2).await;
    r.ka(&mut ka, "7 after that", 7).await;
    let mut other = r.keep_alive("a second stream", 7).await;
    r.ka(&mut ka, "the first stream", l1).await;
    r.ka(&mut other, "the second stream", l1).await;
    r.ka_close("half-close", ka).await;
    r.ka(&mut other, "the second stream still", 7).await;
    r.ttl("L1 after the keep-alives", l1, false).await;
    r
}

#[test]
fn grant_answers_as_etcd() {
    side_by_side(&[1, 2], grant_script);
}

#[test]
fn revoke_answers_as_etcd() {
    side_by_side(&[1, 2], revoke_script);
}

#[test]
fn puts_with_leases_are_checked_as_etcd() {
    side_by_side(&[1, 2], put_checks_script);
}

#[test]
fn keys_attach_and_move_as_etcd() {
    side_by_side(&[1, 2], attach_script);
}

#[test]
fn leases_are_listed_as_etcd() {
    side_by_side(&[2], leases_script);
}

#[test]
fn keep_alive_streams_as_etcd() {
    side_by_side(&[1, 2], keep_alive_script);
}

/// Runs etcdctl with `args` (`{Ln}`: the n-th server-chosen ID, in hex):
/// its exit code, stdout and `Error:` lines, normalized by `relabel`.
fn ctl(r: &mut Run, args: &[&str]) {
    let subst = |a: &&str| {
        let mut a = a.to_string();
        for (n, id) in r.ids.iter().enumerate() {
            a = a.replace(&format!("{{L{}}}", n + 1), &format!("{id:x}"));
        }
        a
    };
    let real: Vec<String> = args.iter().map(subst).collect();
    let real: Vec<&str> = real.iter().map(|s| s.as_str()).collect();
    let url = r.server.url();
    let out = common::etcdctl(url.trim_start_matches("http://"), &real, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("exit {:?}\n{stdout}{errors:?}", out.status.code());
    let (text, seen, ttls) = relabel(r, &text);
    let id = seen.first().copied().unwrap_or(0);
    let renewed = text.contains(" keepalived ");
    if renewed || text.contains(" granted with TTL(") && ttls.is_empty() {
        r.started.insert(id, std::time::Instant::now());
    }
    let ttls = ttls.into_iter().map(|t| r.since(id, t)).collect();
    r.push(&args.join(" "), Ok(text), ttls);
}

/// etcdctl's text normalized: the 16-digit hex IDs the server chose as
/// `Run::id` labels them (others as printed), the numbers of
/// `remaining(Ns)` taken out, the words of `keys([...])` sorted. Also the
/// IDs seen, in order.
fn relabel(r: &mut Run, text: &str) -> (String, Vec<i64>, Vec<i64>) {
    let (mut out, mut seen, mut rest) = (String::new(), Vec::new(), text);
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_alphanumeric());
        let (w, tail) = rest.split_at(n.unwrap_or(rest.len()).max(1));
        let hex = w.len() == 16
            && w.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        let id = if hex {
            u64::from_str_radix(w, 16).unwrap() as i64
        } else {
            0
        };
        if hex {
            seen.push(id);
        }
        match id.unsigned_abs() >= 1 << 32 {
            true => out.push_str(&r.id(id)),
            false => out.push_str(w),
        }
        rest = tail;
    }
    let (mut text, mut ttls, mut rest) = (String::new(), Vec::new(), out.as_str());
    while let Some(i) = rest.find("remaining(") {
        let (head, tail) = rest.split_at(i + "remaining(".len());
        let end = tail.find("s)").expect("remaining(Ns)");
        ttls.push(tail[..end].parse().expect("a number"));
        text = text + head + "~";
        rest = &tail[end..];
    }
    text.push_str(rest);
    if let Some(i) = text.find("keys([") {
        let end = i + text[i..].find("])").expect("keys([...])");
        let mut keys: Vec<&str> = text[i + 6..end].split(' ').collect();
        keys.sort();
        text = format!("{}{}{}", &text[..i + 6], keys.join(" "), &text[end..]);
    }
    (text, seen, ttls)
}

/// etcdctl's lease commands (and `put --lease`, `put --ignore-lease`): the
/// same exit codes, stdout and `Error:` lines; `{L1}` in an argument is the
/// first server-chosen ID in hex, as etcdctl prints and parses them.
async fn etcdctl_script(mut r: Run) -> Run {
    let steps: &[&[&str]] = &[
        &["lease", "grant", "60"],
        &["lease", "grant", "30"],
        &["lease", "grant", "abc"],
        &["lease", "grant", "9000000001"],
        &["put", "--lease={L1}", "a", "1"],
        &["put", "--lease={L1}", "a/x", "2"],
        &["put", "--lease={L2}", "b", "3"],
        &["put", "--lease=3e7", "c", "4"],
        &["put", "--ignore-lease", "a", "5"],
        &["put", "--ignore-lease", "zz", "5"],
        &["lease", "list"],
        &["lease", "timetolive", "{L1}"],
        &["lease", "timetolive", "--keys", "{L1}"],
        &["lease", "timetolive", "3e7"],
        &["lease", "keep-alive", "--once", "{L1}"],
        &["lease", "keep-alive", "--once", "3e7"],
        &["lease", "revoke", "{L1}"],
        &["lease", "revoke", "{L1}"],
        &["lease", "keep-alive", "--once", "{L1}"],
        &["get", "", "--prefix"],
        &["lease", "list"],
        &["lease", "timetolive", "--keys", "{L2}"],
    ];
    for args in steps {
        ctl(&mut r, args);
    }
    r
}

#[test]
fn etcdctl_lease_commands_answer_as_etcd() {
    side_by_side(&[2], etcdctl_script);
}
