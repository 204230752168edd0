//! JWT tokens (`--auth-token jwt,...`, etcd's syntax): a login answers a
//! signed token carrying the user and the auth store revision; it works
//! until the store changes (then, as etcd's, requests fail with `revision
//! of auth store is old` and the client logs in again) and until its `ttl`
//! runs out (then `invalid auth token`); a member with only the public key
//! checks tokens another member signed but cannot issue them; and a bad
//! flag refuses the start with a message naming the problem.

mod common;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use common::Cairn;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Status};

const PATIENCE: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn jwt_flag(private: bool, ttl: &str) -> String {
    let mut flag = format!(
        "jwt,pub-key={},sign-method=RS256,ttl={ttl}",
        fixture("rsa2048.pub")
    );
    if private {
        flag.push_str(&format!(",priv-key={}", fixture("rsa2048.key")));
    }
    flag
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

async fn put(ch: &tonic::transport::Channel, token: &str, key: &str) -> Result<(), Status> {
    let req = pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    KvClient::new(ch.clone())
        .put(with_token(req, token))
        .await
        .map(drop)
}

async fn login(ch: &tonic::transport::Channel, user: &str, pw: &str) -> Result<String, Status> {
    let req = pb::AuthenticateRequest {
        name: user.into(),
        password: pw.into(),
    };
    let r = AuthClient::new(ch.clone()).authenticate(req).await?;
    Ok(r.into_inner().token)
}

/// root (role root) and enabled auth.
async fn set_up(ch: &tonic::transport::Channel) {
    let mut a = AuthClient::new(ch.clone());
    let add = pb::AuthUserAddRequest {
        name: "root".into(),
        password: "pw".into(),
        options: None,
    };
    a.user_add(add).await.unwrap();
    let grant = pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    };
    a.user_grant_role(grant).await.unwrap();
    a.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
}

#[test]
fn jwt_tokens_carry_the_store_revision_and_expire() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let flag = jwt_flag(true, "3s");
    let signer = Cairn::start_with(
        base.path(),
        2,
        &["--auth-token", &flag, "--bcrypt-cost", "4"],
    );
    let verifier_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let verify_only = jwt_flag(false, "3s");
    let verifier = Cairn::start_with(verifier_dir.path(), 1, &["--auth-token", &verify_only]);
    common::rt().block_on(async {
        let ch = signer.channel().await;
        set_up(&ch).await;
        let token = login(&ch, "root", "pw").await.unwrap();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        put(&ch, &token, "a").await.unwrap();

        // A change of the store: the token's revision is old.
        let add = pb::AuthUserAddRequest {
            name: "other".into(),
            password: "x".into(),
            options: None,
        };
        AuthClient::new(ch.clone())
            .user_add(with_token(add, &token))
            .await
            .unwrap();
        let e = put(&ch, &token, "a").await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old"
            )
        );
        let token = login(&ch, "root", "pw").await.unwrap();
        put(&ch, &token, "a").await.unwrap();

        // Another member with only the public key: its store has no users
        // (it is not in this cluster) but it reads the token; it cannot
        // issue one.
        let vch = verifier.channel().await;
        let e = login(&vch, "root", "pw").await.unwrap_err();
        assert_eq!(e.message(), "etcdserver: authentication is not enabled");
        let status = AuthClient::new(vch.clone())
            .auth_status(with_token(pb::AuthStatusRequest {}, &token))
            .await;
        assert!(status.is_ok(), "a valid signature is accepted: {status:?}");
        let forged = format!("{}x", token);
        let e = AuthClient::new(vch.clone())
            .auth_status(with_token(pb::AuthStatusRequest {}, &forged))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);

        // Past its ttl (3 s): invalid.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match put(&ch, &token, "a").await {
                Ok(()) => assert!(Instant::now() < deadline, "the token never expired"),
                Err(e) => {
                    assert_eq!(
                        (e.code(), e.message()),
                        (Code::Unauthenticated, "etcdserver: invalid auth token")
                    );
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[test]
fn bad_auth_token_flags_refuse_the_start() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for (flag, says) in [
        ("nope", "nope"),
        ("jwt,pub-key=/nonexistent,sign-method=RS256", "/nonexistent"),
        ("jwt,priv-key=/x", "sign-method"),
    ] {
        let out = common::cairn_refuses(base.path(), &["--auth-token", flag]);
        assert!(out.contains(says), "--auth-token {flag}: {out}");
    }
}
