//! Authenticate and what a token is worth, side by side with etcd.

use crate::auth::*;
use crate::setup_users;

/// Authenticate and what a token is worth: right and wrong passwords,
/// unknown and password-less users, no token, malformed tokens, either
/// metadata key, and tokens after a password change, a deletion, auth
/// disabled and enabled again, and a restart.
pub(super) async fn tokens_script(mut r: Run) -> Run {
    let a = &Cred::Anon;
    setup_users(&mut r).await;
    let k = || range_req("k", "");
    let root = &r.cred("root, right password", "root", "rootpw").await;
    r.login("root, wrong password", "root", "nope").await;
    r.login("root, empty password", "root", "").await;
    r.login("unknown user", "nobody", "x").await;
    r.login("empty user name", "", "").await;
    r.login("no-password user, no password", "np", "").await;
    r.login("no-password user, a password", "np", "x").await;
    r.user_add("root adds ep, empty password", root, "ep", "")
        .await;
    r.login("ep, empty password", "ep", "").await;
    r.login("ep, a password", "ep", "x").await;
    r.passwd("root gives np a password", root, "np", "nowpw")
        .await;
    r.login("np, with it", "np", "nowpw").await;
    let tu = r.login("u", "u", "upw").await;
    let u = &Cred::Token(tu.clone());
    r.range("u reads k", u, k()).await;
    r.put("u writes k", u, put_req("k", "1")).await;
    r.range("no token", a, k()).await;
    r.put("no token: put", a, put_req("k", "x")).await;
    r.delete("no token: delete", a, delete_req("k", "", false))
        .await;
    r.txn(
        "no token: txn",
        a,
        txn_req("k", vec![op_range("k", "")], vec![]),
    )
    .await;
    r.lease_grant(
        "no token: lease grant",
        a,
        pb::LeaseGrantRequest { ttl: 60, id: 77 },
    )
    .await;
    r.lease_revoke(
        "no token: lease revoke",
        a,
        pb::LeaseRevokeRequest { id: 77 },
    )
    .await;
    r.watch("no token: watch", a, watch_req("k", "")).await;
    for (what, bad) in [
        ("no dot", "garbage"),
        ("index not a number", "abcdefghijklmnop.x"),
        ("three parts", "a.1.2"),
        ("never issued", "abcdefghijklmnop.1"),
        ("empty", ""),
        ("u's, Bearer-prefixed", &format!("Bearer {tu}")),
    ] {
        let c = &Cred::Token(bad.to_string());
        r.range(&format!("malformed token ({what}): range"), c, k())
            .await;
        r.put(
            &format!("malformed token ({what}): put"),
            c,
            put_req("k", "x"),
        )
        .await;
        r.user_list(&format!("malformed token ({what}): user list"), c)
            .await;
        r.status(
            &format!("malformed token ({what}): status"),
            c,
            pb::StatusRequest {},
        )
        .await;
        r.watch(
            &format!("malformed token ({what}): watch"),
            c,
            watch_req("k", ""),
        )
        .await;
        // (Authenticate with such a token: a deliberate difference, see
        // `authenticate_ignores_the_token_it_carries_unlike_etcd_3_4_23`.)
    }
    let bad = || "garbage".to_string();
    let auth_u = &Cred::Authorization(tu.clone());
    r.range("`authorization` metadata", auth_u, k()).await;
    r.put("`authorization` metadata: put", auth_u, put_req("k", "2"))
        .await;
    r.range(
        "both, token valid, authorization garbage",
        &Cred::Both(tu.clone(), bad()),
        k(),
    )
    .await;
    r.range(
        "both, token garbage, authorization valid",
        &Cred::Both(bad(), tu.clone()),
        k(),
    )
    .await;
    r.login_as("authenticate with u's token", u, "root", "rootpw")
        .await;
    // A password change ends the user's tokens; others' stay.
    let tu2 = r.login("u again: a second token", "u", "upw").await;
    r.passwd("root changes u's password", root, "u", "upw2")
        .await;
    r.range("u's first token after the change", u, k()).await;
    r.range("u's second token", &Cred::Token(tu2), k()).await;
    r.range("root's token", root, k()).await;
    r.login("u, old password", "u", "upw").await;
    let u = &r.cred("u, new password", "u", "upw2").await;
    r.range("u's new token", u, k()).await;
    // Deleting a user ends its tokens, even once it is added again.
    r.user_delete("root deletes u", root, "u").await;
    r.range("u's token after the deletion", u, k()).await;
    r.user_add("root adds u again", root, "u", "upw2").await;
    r.range("u's old token, u added again", u, k()).await;
    let u = &r.cred("u logs in", "u", "upw2").await;
    r.range("u without roles", u, k()).await;
    r.grant_role("rk to u", root, "u", "rk").await;
    r.range("u with rk again", u, k()).await;
    // Disable then enable: every token is gone.
    r.auth_disable("disable", root, pb::AuthDisableRequest {})
        .await;
    r.range("disabled: u's token", u, k()).await;
    r.range("disabled: no token", a, k()).await;
    r.login("disabled: authenticate", "u", "upw2").await;
    r.auth_enable("enable", a, pb::AuthEnableRequest {}).await;
    r.range("enabled again: u's old token", u, k()).await;
    r.user_list("enabled again: root's old token", root).await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    // A restart: auth stays enabled, users stay, tokens do not.
    r.restart().await;
    r.range("after a restart: no token", a, k()).await;
    r.user_list("after a restart: root's old token", root).await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    r.user_list("users", root).await;
    r.role_get("rk", root, "rk").await;
    r.range("root reads k", root, k()).await;
    r
}
