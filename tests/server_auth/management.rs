//! User and role management side by side with etcd, auth disabled then
//! enabled.

use crate::auth::*;
use authpb::permission::Type::{Read, Readwrite, Write};

/// User and role management, auth disabled then enabled: every RPC's
/// answer and every error of etcd (exists, not found, empty names, root's
/// protections, grants twice, revokes of what was not granted, the
/// no-password option), lists sorted, and nothing changed by a refusal.
pub(super) async fn management_script(mut r: Run) -> Run {
    let a = &Cred::Anon;
    r.user_list("no users yet", a).await;
    r.role_list("no roles yet", a).await;
    r.auth_enable("enable without a root user", a, pb::AuthEnableRequest {})
        .await;
    r.auth_disable("disable while disabled", a, pb::AuthDisableRequest {})
        .await;
    r.login("authenticate while disabled", "nobody", "x").await;
    r.user_add("add root", a, "root", "rootpw").await;
    r.auth_enable(
        "enable: root lacks the root role",
        a,
        pb::AuthEnableRequest {},
    )
    .await;
    r.user_add("add root again", a, "root", "other").await;
    r.user_add("empty user name", a, "", "pw").await;
    r.user_add("empty password", a, "emptypw", "").await;
    let no_password = |name: &str, password: &str| pb::AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        options: Some(authpb::UserAddOptions { no_password: true }),
    };
    r.user_add_req("no_password option", a, no_password("np", ""))
        .await;
    r.user_add_req(
        "no_password option with a password",
        a,
        no_password("np2", "given"),
    )
    .await;
    for u in ["zed", "alice", "Bob", "_x", "alice2"] {
        r.user_add(&format!("add {u}"), a, u, "pw").await;
    }
    r.user_list("users, sorted", a).await;
    r.user_get("root: no roles", a, "root").await;
    r.user_get("unknown user", a, "nobody").await;
    r.user_get("empty user name", a, "").await;
    r.role_add("empty role name", a, "").await;
    r.role_get("root role, never added", a, "root").await;
    r.role_get("empty role name", a, "").await;
    r.grant_role(
        "grant the root role (never added) to root",
        a,
        "root",
        "root",
    )
    .await;
    r.user_get("root has it", a, "root").await;
    r.role_list("the root role is not listed", a).await;
    for role in ["r1", "r0", "R", "_r"] {
        r.role_add(&format!("add role {role}"), a, role).await;
    }
    r.role_add("add r1 again", a, "r1").await;
    r.role_list("roles, sorted", a).await;
    r.role_get("r1: no permissions", a, "r1").await;
    r.grant_role("grant to an unknown user", a, "nobody", "r1")
        .await;
    r.grant_role("grant an unknown role", a, "alice", "nope")
        .await;
    r.grant_role("grant an empty role", a, "alice", "").await;
    r.grant_role("grant to an empty user", a, "", "r1").await;
    r.grant_role("grant r1 to alice", a, "alice", "r1").await;
    r.grant_role("grant r1 to alice again", a, "alice", "r1")
        .await;
    r.grant_role("grant r0 to alice", a, "alice", "r0").await;
    r.grant_role("grant _r to alice", a, "alice", "_r").await;
    r.user_get("alice: roles sorted", a, "alice").await;
    r.revoke_role("revoke a role not granted", a, "alice", "R")
        .await;
    r.revoke_role("revoke from an unknown user", a, "nobody", "r1")
        .await;
    r.revoke_role("revoke an unknown role", a, "alice", "nope")
        .await;
    r.user_get("alice: unchanged", a, "alice").await;
    r.grant_perm("READ a", a, "r1", Read, "a", "").await;
    r.grant_perm("WRITE [b, d)", a, "r1", Write, "b", "d").await;
    r.grant_perm("READWRITE prefix p/", a, "r1", Readwrite, "p/", "p0")
        .await;
    r.grant_perm("READ from key x", a, "r1", Read, "x", "\0")
        .await;
    r.grant_perm("a again, READWRITE: updated", a, "r1", Readwrite, "a", "")
        .await;
    r.grant_perm("a to a0: another permission", a, "r1", Write, "a", "a0")
        .await;
    r.grant_perm("range end before key", a, "r1", Read, "z", "m")
        .await;
    r.grant_perm("empty key", a, "r0", Read, "", "").await;
    r.grant_perm("empty key, from key", a, "r0", Write, "", "\0")
        .await;
    r.grant_perm("unknown role", a, "nope", Read, "a", "").await;
    r.grant_perm("empty role", a, "", Read, "a", "").await;
    r.role_grant_req(
        "unknown permission type",
        a,
        pb::AuthRoleGrantPermissionRequest {
            name: "R".into(),
            perm: Some(authpb::Permission {
                perm_type: 7,
                key: b"q".to_vec(),
                range_end: vec![],
            }),
        },
    )
    .await;
    r.role_get("r1: permissions sorted by key", a, "r1").await;
    r.role_get("r0", a, "r0").await;
    r.role_get("R", a, "R").await;
    r.revoke_perm("revoke: same key, other end", a, "r1", "b", "c")
        .await;
    r.revoke_perm("revoke: a key never granted", a, "r1", "q", "")
        .await;
    r.revoke_perm("revoke: unknown role", a, "nope", "a", "")
        .await;
    r.revoke_perm("revoke: empty role", a, "", "a", "").await;
    r.role_get("r1: unchanged", a, "r1").await;
    r.revoke_perm("revoke a", a, "r1", "a", "").await;
    r.revoke_perm("revoke a again", a, "r1", "a", "").await;
    r.revoke_perm("revoke [z, m)", a, "r1", "z", "m").await;
    r.role_get("r1: without them", a, "r1").await;
    r.passwd("change an unknown user's password", a, "nobody", "x")
        .await;
    r.passwd("change an empty user's password", a, "", "x")
        .await;
    r.passwd("change alice's password", a, "alice", "pw2").await;
    r.user_get("alice: roles kept", a, "alice").await;
    r.user_delete("delete an unknown user", a, "nobody").await;
    r.user_delete("delete an empty user", a, "").await;
    r.user_delete("delete zed", a, "zed").await;
    r.user_delete("delete zed again", a, "zed").await;
    r.role_delete("delete an unknown role", a, "nope").await;
    r.role_delete("delete an empty role", a, "").await;
    r.role_delete("delete r0 (alice has it)", a, "r0").await;
    r.user_get("alice: r0 gone with it", a, "alice").await;
    r.role_add("add r0 again", a, "r0").await;
    r.user_get("alice: not given back", a, "alice").await;
    r.role_get("r0 again: no permissions", a, "r0").await;
    r.role_add("add the root role", a, "root").await;
    r.role_get("root role", a, "root").await;
    r.role_list("roles", a).await;
    r.user_list("users", a).await;
    r.revoke_role("revoke root from root, auth disabled", a, "root", "root")
        .await;
    r.auth_enable(
        "enable: root lacks the root role",
        a,
        pb::AuthEnableRequest {},
    )
    .await;
    r.grant_role("grant root to root", a, "root", "root").await;
    r.grant_role("grant r1 to root", a, "root", "r1").await;
    r.auth_enable("enable", a, pb::AuthEnableRequest {}).await;

    // Enabled.
    r.user_list("no token", a).await;
    r.user_get("no token, empty name", a, "").await;
    r.user_get("no token, root", a, "root").await;
    r.role_get("no token, root role", a, "root").await;
    r.auth_enable("enable again, no token", a, pb::AuthEnableRequest {})
        .await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    r.auth_enable("enable again as root", root, pb::AuthEnableRequest {})
        .await;
    r.user_list("users", root).await;
    r.role_list("roles", root).await;
    r.user_delete("delete root while enabled", root, "root")
        .await;
    r.revoke_role("revoke root from root while enabled", root, "root", "root")
        .await;
    r.role_delete("delete the root role while enabled", root, "root")
        .await;
    r.revoke_role("revoke r1 from root", root, "root", "r1")
        .await;
    r.grant_role("grant root to alice", root, "alice", "root")
        .await;
    r.revoke_role("revoke root from alice", root, "alice", "root")
        .await;
    r.user_get("root", root, "root").await;
    r.user_add("empty user name", root, "", "pw").await;
    r.user_add("user exists", root, "alice", "pw").await;
    r.role_add("empty role name", root, "").await;
    r.role_add("role exists", root, "r1").await;
    r.user_get("unknown user", root, "nobody").await;
    r.role_get("unknown role", root, "nope").await;
    r.grant_role("grant an unknown role", root, "alice", "nope")
        .await;
    r.revoke_role("revoke a role not granted", root, "alice", "R")
        .await;
    r.revoke_perm("revoke a permission not granted", root, "r1", "a", "")
        .await;
    r.user_add("add carol", root, "carol", "pw").await;
    r.role_add("add role c", root, "c").await;
    r.grant_perm("c: READ k", root, "c", Read, "k", "").await;
    r.grant_role("grant c to carol", root, "carol", "c").await;
    r.user_list("users", root).await;
    r.role_list("roles", root).await;
    r.role_get("c", root, "c").await;
    r.user_delete("delete carol", root, "carol").await;
    r.role_delete("delete c", root, "c").await;
    r.auth_disable("disable, no token", a, pb::AuthDisableRequest {})
        .await;
    r.auth_disable("disable as root", root, pb::AuthDisableRequest {})
        .await;
    r.user_list("disabled: root's old token", root).await;
    r.auth_disable("disable again", a, pb::AuthDisableRequest {})
        .await;
    r.user_list("disabled: no token", a).await;
    r.user_delete("delete root, auth disabled", a, "root").await;
    r.role_delete("delete the root role, auth disabled", a, "root")
        .await;
    r.user_list("users", a).await;
    r.role_list("roles", a).await;
    r
}
