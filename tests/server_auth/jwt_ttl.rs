//! JWT tokens and the auth store's revision; simple tokens'
//! `--auth-token-ttl`.

use crate::auth::*;
use crate::setup_users;
use authpb::permission::Type::{Read, Readwrite};
use std::time::Duration;

/// An RSA key pair for `--auth-token jwt` (openssl writes it to `dir`);
/// the flag.
pub(super) fn jwt_flag(dir: &std::path::Path) -> String {
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (private, public) = (private.to_str().unwrap(), public.to_str().unwrap());
    run(&["genrsa", "-out", private, "2048"]);
    run(&["rsa", "-in", private, "-pubout", "-out", public]);
    format!("jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl=5m")
}

/// The auth store's revision as a fresh JWT of root's carries it.
async fn auth_revision(r: &mut Run, after: &str) {
    r.login(&format!("auth revision after: {after}"), "root", "rootpw")
        .await;
}

/// JWT tokens carry the auth store's revision: which changes move it, and
/// "revision of auth store is old" for a token older than the last one.
pub(super) async fn jwt_script(mut r: Run) -> Run {
    let a = &Cred::Anon;
    setup_users(&mut r).await;
    auth_revision(&mut r, "setup").await;
    let root = &r.cred("root logs in", "root", "rootpw").await;
    let u = &r.cred("u logs in", "u", "upw").await;
    let k = || range_req("k", "");
    r.range("u reads k", u, k()).await;
    r.user_add("root adds v", root, "v", "pw").await;
    auth_revision(&mut r, "user add").await;
    r.range("u's token, older than the store: range", u, k())
        .await;
    let serializable = pb::RangeRequest {
        serializable: true,
        ..k()
    };
    r.range("serializable range", u, serializable).await;
    r.put("put", u, put_req("k", "1")).await;
    r.txn(
        "read-only txn",
        u,
        txn_req("k", vec![op_range("k", "")], vec![]),
    )
    .await;
    r.txn("txn", u, txn_req("k", vec![op_put("k", "2")], vec![]))
        .await;
    r.delete("delete", u, delete_req("k", "", false)).await;
    r.watch("watch", u, watch_req("k", "")).await;
    r.user_get("user get of oneself", u, "u").await;
    r.role_get("role get of one's role", u, "rk").await;
    r.lease_grant("lease grant", u, pb::LeaseGrantRequest { ttl: 60, id: 9 })
        .await;
    r.lease_revoke("lease revoke", u, pb::LeaseRevokeRequest { id: 9 })
        .await;
    r.compact(
        "compact",
        u,
        pb::CompactionRequest {
            revision: 1,
            physical: false,
        },
    )
    .await;
    r.range("root's old token: range", root, k()).await;
    r.user_list("root's old token: user list", root).await;
    r.user_add("root's old token: user add", root, "w", "pw")
        .await;
    r.hash("root's old token: hash", root, pb::HashRequest {})
        .await;
    let u = &r.cred("u logs in again", "u", "upw").await;
    r.range("u's new token", u, k()).await;
    // What moves the revision (each failure and no-op here does not).
    r.grant_role("grant rk to u again", root, "u", "rk").await;
    auth_revision(&mut r, "a grant already there").await;
    r.user_add("add v again", root, "v", "pw").await;
    r.role_add("add rk again", root, "rk").await;
    r.revoke_perm("revoke a permission not granted", root, "rk", "q", "")
        .await;
    r.auth_enable("enable again", root, pb::AuthEnableRequest {})
        .await;
    auth_revision(&mut r, "failures, enable again").await;
    r.range("u's token", u, k()).await;
    r.passwd("change v's password", root, "v", "pw2").await;
    auth_revision(&mut r, "password change").await;
    r.role_add("add role rv", root, "rv").await;
    auth_revision(&mut r, "role add").await;
    r.grant_perm("rv: READ k", root, "rv", Read, "k", "").await;
    auth_revision(&mut r, "permission grant").await;
    r.grant_perm("rv: READWRITE k, an update", root, "rv", Readwrite, "k", "")
        .await;
    auth_revision(&mut r, "permission update").await;
    r.grant_role("grant rv to v", root, "v", "rv").await;
    auth_revision(&mut r, "role grant").await;
    r.revoke_role("revoke rv from v", root, "v", "rv").await;
    auth_revision(&mut r, "role revoke").await;
    r.revoke_perm("revoke rv's permission", root, "rv", "k", "")
        .await;
    auth_revision(&mut r, "permission revoke").await;
    r.role_delete("delete rv", root, "rv").await;
    auth_revision(&mut r, "role delete").await;
    r.user_delete("delete v", root, "v").await;
    auth_revision(&mut r, "user delete").await;
    let u = &r.cred("u logs in", "u", "upw").await;
    for (what, bad) in [
        ("not a JWT", "garbage".to_string()),
        ("three empty parts", "..".to_string()),
        ("simple-token shaped", "abcdefghijklmnop.1".to_string()),
        ("u's, signature changed", {
            // The signature's first character (its last may hold only
            // padding bits).
            let Cred::Token(t) = u else { unreachable!() };
            let at = t.rfind('.').unwrap() + 1;
            let first = if t[at..].starts_with('A') { "B" } else { "A" };
            format!("{}{first}{}", &t[..at], &t[at + 1..])
        }),
    ] {
        let c = &Cred::Token(bad);
        r.range(&format!("bad JWT ({what}): range"), c, k()).await;
        r.watch(&format!("bad JWT ({what}): watch"), c, watch_req("k", ""))
            .await;
    }
    // Disabled, a JWT still names its user (and nothing is checked).
    r.auth_disable("disable", root, pb::AuthDisableRequest {})
        .await;
    r.range("disabled: u's token", u, k()).await;
    r.put("disabled: u's token, put", u, put_req("other", "1"))
        .await;
    r.range("disabled: no token", a, k()).await;
    r.auth_enable("enable", a, pb::AuthEnableRequest {}).await;
    r.range("enabled again: u's token", u, k()).await;
    let u = &r.cred("u logs in", "u", "upw").await;
    // A restart keeps a JWT's worth.
    r.restart().await;
    r.range("after a restart: u's token", u, k()).await;
    auth_revision(&mut r, "a restart").await;
    r
}

/// `--auth-token-ttl 2`: a simple token unused for longer than that stops
/// working; one in use is kept alive. Polled, not timed: many tokens are
/// taken in a row and one more of them is tried each second, the youngest
/// first (trying one renews it), until one is refused; meanwhile one token
/// is used every 200 ms.
pub(super) async fn ttl_script(mut r: Run) -> Run {
    setup_users(&mut r).await;
    let k = || range_req("k", "");
    let kept = r.cred("u logs in: the token kept in use", "u", "upw").await;
    let mut spares = Vec::new();
    for _ in 0..PATIENCE.as_secs() {
        spares.push(r.login("u logs in: a spare token", "u", "upw").await);
    }
    let mut kept_fails = None;
    let mut expired = None;
    let mut next_probe = tokio::time::Instant::now() + Duration::from_secs(1);
    // The youngest first: once one is refused, every older one is too.
    let mut spares = spares.into_iter().rev();
    while expired.is_none() {
        let got = r.peek_range(&kept, k()).await;
        if !got.starts_with("ok") && kept_fails.is_none() {
            kept_fails = Some(got);
        }
        if tokio::time::Instant::now() >= next_probe {
            next_probe += Duration::from_secs(1);
            let Some(spare) = spares.next() else { break };
            let got = r.peek_range(&Cred::Token(spare), k()).await;
            if !got.starts_with("ok") {
                expired = Some(got);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.fact("an unused token, once its TTL is over", expired);
    r.fact(
        "the token used every 200 ms meanwhile: any failure",
        kept_fails,
    );
    r.range("the token in use, after", &kept, k()).await;
    let oldest = spares.next_back().unwrap_or_default();
    r.range("the oldest spare, never used", &Cred::Token(oldest), k())
        .await;
    let fresh = r.cred("u logs in again", "u", "upw").await;
    r.range("a new token", &fresh, k()).await;
    r
}
