//! The permission matrix: every permission type and shape through every
//! keyed RPC, and what needs root, side by side with etcd.

use crate::auth::*;
use authpb::permission::Type::{Read, Readwrite, Write};

/// A permission's shape: what is granted, keys inside it (on both shards
/// where it spans more than one key), a key outside it, and a range that
/// holds it and more.
struct Shape {
    name: &'static str,
    key: &'static str,
    end: &'static str,
    ins: &'static [&'static str],
    out: &'static str,
    wider: (&'static str, &'static str),
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "key",
        key: "a",
        end: "",
        ins: &["a"],
        out: "a/x",
        wider: ("a", "a0"),
    },
    Shape {
        name: "range",
        key: "b",
        end: "d",
        ins: &["b", "c/1"],
        out: "d",
        wider: ("a", "d"),
    },
    Shape {
        name: "prefix",
        key: "p/",
        end: "p0",
        ins: &["p/1", "p/4"],
        out: "p",
        wider: ("p", "p0"),
    },
    Shape {
        name: "from key",
        key: "x",
        end: "\0",
        ins: &["x", "y/1"],
        out: "w",
        wider: ("w", "\0"),
    },
];

/// Every key the matrix writes (seeded before auth is enabled).
pub(super) const SEEDED: [&str; 11] = [
    "a", "a/x", "b", "c/1", "d", "p", "p/1", "p/4", "w", "x", "y/1",
];

/// Root puts `keys` back (after a delete, allowed or not).
async fn restore(r: &mut Run, root: &Cred, keys: &[&str]) {
    for k in keys {
        r.put(&format!("root restores {k}"), root, put_req(k, "v"))
            .await;
    }
}

/// The revision now, as root reads it (not a step).
async fn revision(r: &mut Run, root: &Cred) -> i64 {
    use pb::kv_client::KvClient;
    let res = KvClient::new(r.ch.clone())
        .range(root.req(range_req("none", "")))
        .await;
    res.map(|r| r.into_inner().header.map_or(0, |h| h.revision))
        .unwrap_or(0)
}

/// One user holding one role with one permission, through every keyed RPC.
async fn matrix_user(r: &mut Run, root: &Cred, t: authpb::permission::Type, s: &Shape, n: i64) {
    let name = format!(
        "{}-{}",
        format!("{t:?}").to_lowercase(),
        s.name.replace(' ', "")
    );
    r.user_add(&format!("add {name}"), root, &name, "pw").await;
    r.role_add(&format!("role {name}"), root, &name).await;
    r.grant_perm(
        &format!("{name}: {t:?} {}", s.name),
        root,
        &name,
        t,
        s.key,
        s.end,
    )
    .await;
    r.grant_role(&format!("grant {name}"), root, &name, &name)
        .await;
    let c = &r.cred(&format!("{name} logs in"), &name, "pw").await;
    let l = |what: &str| format!("{name}: {what}");
    let (inn, out) = (s.ins[0], s.out);
    let (wk, we) = s.wider;
    r.range(&l("range in"), c, range_req(inn, "")).await;
    if let Some(other) = s.ins.get(1) {
        r.range(&l("range in, other shard"), c, range_req(other, ""))
            .await;
    }
    r.range(&l("range out"), c, range_req(out, "")).await;
    r.range(&l("range whole"), c, range_req(s.key, s.end)).await;
    r.range(&l("range wider"), c, range_req(wk, we)).await;
    let serializable = pb::RangeRequest {
        serializable: true,
        ..range_req(s.key, s.end)
    };
    r.range(&l("range whole, serializable"), c, serializable)
        .await;
    r.put(&l("put in"), c, put_req(inn, "u")).await;
    if let Some(other) = s.ins.get(1) {
        r.put(&l("put in, other shard"), c, put_req(other, "u"))
            .await;
    }
    let prev = pb::PutRequest {
        prev_kv: true,
        ..put_req(inn, "u2")
    };
    r.put(&l("put in, prev_kv"), c, prev).await;
    r.put(&l("put out"), c, put_req(out, "u")).await;
    r.delete(&l("delete in"), c, delete_req(inn, "", false))
        .await;
    restore(r, root, &[inn]).await;
    r.delete(&l("delete in, prev_kv"), c, delete_req(inn, "", true))
        .await;
    restore(r, root, &[inn]).await;
    r.delete(&l("delete whole"), c, delete_req(s.key, s.end, false))
        .await;
    restore(r, root, s.ins).await;
    r.delete(
        &l("delete whole, prev_kv"),
        c,
        delete_req(s.key, s.end, true),
    )
    .await;
    restore(r, root, s.ins).await;
    r.delete(&l("delete wider"), c, delete_req(wk, we, false))
        .await;
    restore(r, root, &[inn, out]).await;
    // Txn: the compare reads; both branches are checked, taken or not.
    let t1 = txn_req(inn, vec![op_put(inn, "t")], vec![op_range(inn, "")]);
    r.txn(&l("txn: compare in, put in | range in"), c, t1).await;
    let t2 = txn_req(inn, vec![op_range(inn, "")], vec![]);
    r.txn(&l("txn: compare in, range in (read-only)"), c, t2)
        .await;
    let t3 = txn_req(out, vec![op_range(inn, "")], vec![]);
    r.txn(&l("txn: compare out, range in"), c, t3).await;
    let t4 = txn_req(inn, vec![op_put(inn, "t")], vec![op_delete(out, "", false)]);
    r.txn(&l("txn: compare in, put in | delete out"), c, t4)
        .await;
    let t5 = txn_req(inn, vec![op_delete(inn, "", true)], vec![]);
    r.txn(&l("txn: compare in, delete in with prev_kv"), c, t5)
        .await;
    let t6 = txn_req(inn, vec![op_delete(inn, "", false)], vec![]);
    r.txn(&l("txn: compare in, delete in"), c, t6).await;
    let t7 = txn_req(out, vec![], vec![op_put(inn, "f")]);
    r.txn(&l("txn: compare out, | put in"), c, t7).await;
    let t8 = txn_req(inn, vec![op_range(s.key, s.end), op_put(inn, "t")], vec![]);
    r.txn(&l("txn: compare in, range whole, put in"), c, t8)
        .await;
    restore(r, root, &[inn, out]).await;
    // Watches: created, or refused on creation.
    r.watch(&l("watch in"), c, watch_req(inn, "")).await;
    r.watch(&l("watch out"), c, watch_req(out, "")).await;
    r.watch(&l("watch whole"), c, watch_req(s.key, s.end)).await;
    r.watch(&l("watch wider"), c, watch_req(wk, we)).await;
    // Leases: revoking deletes the keys, so it needs write on each.
    let (lin, lout) = (1000 + 10 * n, 1001 + 10 * n);
    for (id, key) in [(lin, inn), (lout, out)] {
        r.lease_grant(
            &format!("root grants {id}"),
            root,
            pb::LeaseGrantRequest { ttl: 600, id },
        )
        .await;
        let p = pb::PutRequest {
            lease: id,
            ..put_req(key, "leased")
        };
        r.put(&format!("root puts {key} with {id}"), root, p).await;
    }
    let p = pb::PutRequest {
        lease: lout,
        ..put_req(inn, "l")
    };
    r.put(&l("put in with the lease of out"), c, p).await;
    let ttl = pb::LeaseTimeToLiveRequest {
        id: lout,
        keys: false,
    };
    r.lease_ttl(&l("lease of out: time to live"), c, ttl).await;
    r.lease_revoke(
        &l("revoke the lease of out"),
        c,
        pb::LeaseRevokeRequest { id: lout },
    )
    .await;
    r.lease_revoke(
        &l("revoke the lease of in"),
        c,
        pb::LeaseRevokeRequest { id: lin },
    )
    .await;
    r.lease_revoke(
        &format!("root revokes {lout}"),
        root,
        pb::LeaseRevokeRequest { id: lout },
    )
    .await;
    r.lease_revoke(
        &format!("root revokes {lin}"),
        root,
        pb::LeaseRevokeRequest { id: lin },
    )
    .await;
    restore(r, root, &[inn, out]).await;
    let rev = revision(r, root).await;
    r.compact(
        &l("compact"),
        c,
        pb::CompactionRequest {
            revision: rev - 1,
            physical: false,
        },
    )
    .await;
    r.range(&l("range in, after all"), c, range_req(inn, ""))
        .await;
}

/// The permission matrix: READ, WRITE and READWRITE on a key, a range, a
/// prefix and a from-key range, each the only permission of one user,
/// through Range, Put, DeleteRange, Txn, Watch, leases and Compact; users
/// with no token or a bad one; what holds two roles; a range ending before
/// its key; and what a permission change does to a token and a watch.
pub(super) async fn matrix_script(mut r: Run) -> Run {
    let a = &Cred::Anon;
    for k in SEEDED {
        r.put(&format!("seed {k}"), a, put_req(k, "v")).await;
    }
    r.user_add("add root", a, "root", "rootpw").await;
    r.grant_role("root role", a, "root", "root").await;
    r.auth_enable("enable", a, pb::AuthEnableRequest {}).await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    let mut n = 0;
    for t in [Read, Write, Readwrite] {
        for s in &SHAPES {
            n += 1;
            matrix_user(&mut r, root, t, s, n).await;
        }
    }
    let rk = &r.cred("read-key logs in", "read-key", "pw").await;
    let bad = &Cred::Token("garbage".into());
    for (who, c) in [("no token", a), ("bad token", bad), ("read-key", rk)] {
        keyed_rpcs(&mut r, root, who, c).await;
    }
    for (who, c) in [("read-key", rk), ("no token", a), ("bad token", bad)] {
        admin_rpcs(&mut r, who, c, "read-key").await;
    }
    // Root's turn, on a user and role of its own.
    r.user_add("add spare", root, "spare", "pw").await;
    r.role_add("role spare", root, "spare").await;
    r.grant_role("grant spare", root, "spare", "spare").await;
    admin_rpcs(&mut r, "root", root, "spare").await;
    r.user_get("read-key: unchanged", root, "read-key").await;
    r.role_get("read-key's role: unchanged", root, "read-key")
        .await;
    // Two roles: their permissions add up.
    r.user_add("add two", root, "two", "pw").await;
    for (role, key, end) in [("bc", "b", "c"), ("cd", "c", "d")] {
        r.role_add(&format!("role {role}"), root, role).await;
        r.grant_perm(&format!("{role}: READ"), root, role, Read, key, end)
            .await;
        r.grant_role(&format!("{role} to two"), root, "two", role)
            .await;
    }
    let two = &r.cred("two logs in", "two", "pw").await;
    r.range("two: [b, c)", two, range_req("b", "c")).await;
    r.range("two: [c, d)", two, range_req("c", "d")).await;
    r.range("two: [b, d), across both roles", two, range_req("b", "d"))
        .await;
    r.range("two: [b, e)", two, range_req("b", "e")).await;
    r.watch("two: watch [b, d)", two, watch_req("b", "d")).await;
    // A permission whose range ends before its key (etcd takes it).
    r.user_add("add back", root, "back", "pw").await;
    r.role_add("role back", root, "back").await;
    r.grant_perm("back: READ [y, b)", root, "back", Read, "y", "b")
        .await;
    r.grant_role("back to back", root, "back", "back").await;
    r.role_get("back's permission, as given", root, "back")
        .await;
    let back = &r.cred("back logs in", "back", "pw").await;
    for (key, end) in [("y", ""), ("b", ""), ("c/1", ""), ("y", "b"), ("b", "y")] {
        r.range(
            &format!("back: range [{key:?}, {end:?})"),
            back,
            range_req(key, end),
        )
        .await;
    }
    r.watch("back: watch y", back, watch_req("y", "")).await;
    // A permission change acts on the next request of a token already
    // given; a watch already created goes on.
    let mut w = r.watch("read-key: watch a", rk, watch_req("a", "")).await;
    r.revoke_perm(
        "root revokes read-key's permission",
        root,
        "read-key",
        "a",
        "",
    )
    .await;
    r.range("read-key: range a, revoked", rk, range_req("a", ""))
        .await;
    r.put("root puts a", root, put_req("a", "after")).await;
    r.watch_next("read-key: the watch created before", &mut w)
        .await;
    r.watch("read-key: watch a again", rk, watch_req("a", ""))
        .await;
    r.grant_perm("root grants it again", root, "read-key", Read, "a", "")
        .await;
    r.range("read-key: range a, granted", rk, range_req("a", ""))
        .await;
    r.role_delete("root deletes the role read-key", root, "read-key")
        .await;
    r.range("read-key: range a, role deleted", rk, range_req("a", ""))
        .await;
    r.user_get("read-key: roles", root, "read-key").await;
    r.role_add("root adds the role read-key again", root, "read-key")
        .await;
    r.grant_perm("with its permission", root, "read-key", Read, "a", "")
        .await;
    r.range(
        "read-key: range a, role added again",
        rk,
        range_req("a", ""),
    )
    .await;
    r
}

/// Keyed RPCs as `c` (no token, a bad one, or a user with READ on `a`).
async fn keyed_rpcs(r: &mut Run, root: &Cred, who: &str, c: &Cred) {
    let l = |what: &str| format!("{who}: {what}");
    r.range(&l("range a"), c, range_req("a", "")).await;
    r.put(&l("put a"), c, put_req("a", "x")).await;
    r.delete(&l("delete a"), c, delete_req("a", "", false))
        .await;
    let t = txn_req("a", vec![op_range("a", "")], vec![]);
    r.txn(&l("txn, reading a"), c, t).await;
    let t = pb::TxnRequest::default();
    r.txn(&l("empty txn"), c, t).await;
    r.watch(&l("watch a"), c, watch_req("a", "")).await;
    let grant = pb::LeaseGrantRequest { ttl: 600, id: 5000 };
    r.lease_grant(&l("lease grant"), c, grant).await;
    let ttl = pb::LeaseTimeToLiveRequest {
        id: 5000,
        keys: false,
    };
    r.lease_ttl(&l("lease time to live"), c, ttl).await;
    r.lease_revoke(
        &l("lease revoke (no keys)"),
        c,
        pb::LeaseRevokeRequest { id: 5000 },
    )
    .await;
    r.lease_revoke(
        &l("lease revoke, unknown"),
        c,
        pb::LeaseRevokeRequest { id: 5001 },
    )
    .await;
    r.lease_grant(
        "root grants 5002",
        root,
        pb::LeaseGrantRequest { ttl: 600, id: 5002 },
    )
    .await;
    let p = pb::PutRequest {
        lease: 5002,
        ..put_req("a", "leased")
    };
    r.put("root puts a with 5002", root, p).await;
    r.lease_revoke(
        &l("lease revoke, on a"),
        c,
        pb::LeaseRevokeRequest { id: 5002 },
    )
    .await;
    r.lease_revoke(
        "root revokes 5002",
        root,
        pb::LeaseRevokeRequest { id: 5002 },
    )
    .await;
    restore(r, root, &["a"]).await;
    let rev = revision(r, root).await;
    let compact = pb::CompactionRequest {
        revision: rev,
        physical: true,
    };
    r.compact(&l("compact"), c, compact).await;
}

/// What needs root: the Auth RPCs (but a user's own UserGet and its roles'
/// RoleGet), some Maintenance and Cluster RPCs. `me`: the user (and the
/// role) of `c`, which root's calls change.
async fn admin_rpcs(r: &mut Run, who: &str, c: &Cred, me: &str) {
    let l = |what: &str| format!("{who}: {what}");
    r.status(&l("status"), c, pb::StatusRequest {}).await;
    let get = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        member_id: 0,
        alarm: 0,
    };
    r.alarm(&l("alarm get"), c, get).await;
    let deactivate = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Deactivate as i32,
        member_id: 0,
        alarm: pb::AlarmType::Nospace as i32,
    };
    r.alarm(&l("alarm deactivate"), c, deactivate).await;
    r.hash(&l("hash"), c, pb::HashRequest {}).await;
    r.hash_kv(&l("hash kv"), c, pb::HashKvRequest { revision: 0 })
        .await;
    r.defragment(&l("defragment"), c, pb::DefragmentRequest {})
        .await;
    r.snapshot(&l("snapshot"), c).await;
    r.move_leader(
        &l("move leader"),
        c,
        pb::MoveLeaderRequest { target_id: 12345 },
    )
    .await;
    r.member_list(&l("member list"), c, pb::MemberListRequest {})
        .await;
    if who != "root" {
        // (root's would add a member that never starts: quorum lost.)
        let add = pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: false,
        };
        r.member_add(&l("member add"), c, add).await;
    }
    r.user_list(&l("user list"), c).await;
    r.role_list(&l("role list"), c).await;
    r.user_get(&l("user get, oneself"), c, me).await;
    r.user_get(&l("user get root"), c, "root").await;
    r.user_get(&l("user get, unknown user"), c, "nobody").await;
    r.user_get(&l("user get, empty name"), c, "").await;
    r.role_get(&l("role get, one's own role"), c, me).await;
    r.role_get(&l("role get root"), c, "root").await;
    r.role_get(&l("role get, unknown role"), c, "nope").await;
    r.user_add(
        &l("user add"),
        c,
        &format!("new-{}", who.replace(' ', "")),
        "pw",
    )
    .await;
    r.role_add(&l("role add"), c, &format!("new-{}", who.replace(' ', "")))
        .await;
    r.passwd(&l("change one's own password"), c, me, "pw").await;
    r.grant_perm(&l("grant to one's own role"), c, me, Read, "b", "")
        .await;
    r.revoke_perm(&l("revoke from one's own role"), c, me, "b", "")
        .await;
    r.grant_role(&l("grant oneself root"), c, me, "root").await;
    r.revoke_role(&l("revoke root from oneself"), c, me, "root")
        .await;
    r.revoke_role(&l("revoke one's own role"), c, me, me).await;
    r.user_delete(&l("delete an unknown user"), c, "nobody")
        .await;
    r.role_delete(&l("delete an unknown role"), c, "nope").await;
    r.auth_enable(&l("auth enable"), c, pb::AuthEnableRequest {})
        .await;
    if who != "root" {
        r.auth_disable(&l("auth disable"), c, pb::AuthDisableRequest {})
            .await;
    }
}
