//! Auth in a 3-member cluster (in one process, over the channel
//! transport): the auth store is the cluster's. Users, roles and enabling
//! auth go through a follower (forwarded to the write leader) and every
//! member then enforces them; a simple token issued by one member works on
//! the others (etcd 3.4's tokens are cluster-wide); a password change made
//! on another member ends the token everywhere; the store survives the
//! write leader's stop, and a member restarted from its data dir enforces
//! it and accepts a token issued after it came back.
//!
//! A follower whose meta group lags (its meta frames cut) checks a
//! linearizable read, and answers reads of the store, as the write leader
//! would: after catching up with the leader's auth state, as etcd checks
//! after its read index. A made-up simple token naming a future login is
//! refused at once.

mod common;

use cairn::shard::META_FRAME_GROUP;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use common::cluster::{retry, Cluster, MEMBERS, SETTLE};
use std::time::{Duration, Instant};
use tonic::{Code, Request, Status};

const CALL: Duration = Duration::from_secs(10);

async fn timed<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL, f)
        .await
        .map_err(|_| Status::deadline_exceeded("client timeout"))?
        .map(tonic::Response::into_inner)
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("token", t.parse().expect("ascii token"));
    }
    r
}

fn connect_err(e: tonic::transport::Error) -> Status {
    Status::unavailable(e.to_string())
}

/// Runs an Auth call on member `i`.
fn auth<T>(
    c: &Cluster,
    i: usize,
    token: Option<&str>,
    call: impl AsyncFnOnce(
        &mut AuthClient<tonic::transport::Channel>,
        Option<&str>,
    ) -> Result<T, Status>,
) -> Result<T, Status> {
    let url = c.url(i);
    c.rt.block_on(async move {
        let mut a = AuthClient::connect(url).await.map_err(connect_err)?;
        call(&mut a, token).await
    })
}

fn put(c: &Cluster, i: usize, token: Option<&str>, key: &str) -> Result<i64, Status> {
    let url = c.url(i);
    let req = pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    c.rt.block_on(async move {
        let mut kv = KvClient::connect(url).await.map_err(connect_err)?;
        let r = timed(kv.put(with_token(req, token))).await?;
        Ok(r.header.expect("header").revision)
    })
}

fn login(c: &Cluster, i: usize, user: &str, password: &str) -> Result<String, Status> {
    let req = pb::AuthenticateRequest {
        name: user.into(),
        password: password.into(),
    };
    auth(c, i, None, async move |a, _| {
        Ok(timed(a.authenticate(req)).await?.token)
    })
}

/// Waits until `f` fails with `code` (each member applies changes on its
/// own time).
fn until_refused<T: std::fmt::Debug>(
    what: &str,
    code: Code,
    mut f: impl FnMut() -> Result<T, Status>,
) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match f() {
            Err(e) if e.code() == code => return,
            other => assert!(Instant::now() < deadline, "{what}: still {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One call of the set-up, given a token.
type Step<'a> = Box<dyn Fn(Option<&str>) -> Result<(), Status> + 'a>;

/// Sets up root, role `r` (read-write on prefix `a/`) and user `u` holding
/// it, then enables auth, every call through member `via`.
fn set_up(c: &Cluster, via: usize) {
    let steps: Vec<(&str, Step)> = vec![
        (
            "add root",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthUserAddRequest {
                        name: "root".into(),
                        password: "rootpw".into(),
                        options: None,
                    };
                    timed(a.user_add(with_token(r, t))).await.map(drop)
                })
            }),
        ),
        (
            "grant root",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthUserGrantRoleRequest {
                        user: "root".into(),
                        role: "root".into(),
                    };
                    timed(a.user_grant_role(with_token(r, t))).await.map(drop)
                })
            }),
        ),
        (
            "add role",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthRoleAddRequest { name: "r".into() };
                    timed(a.role_add(with_token(r, t))).await.map(drop)
                })
            }),
        ),
        (
            "grant permission",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthRoleGrantPermissionRequest {
                        name: "r".into(),
                        perm: Some(cairn_proto::authpb::Permission {
                            perm_type: 2,
                            key: b"a/".to_vec(),
                            range_end: b"a0".to_vec(),
                        }),
                    };
                    timed(a.role_grant_permission(with_token(r, t)))
                        .await
                        .map(drop)
                })
            }),
        ),
        (
            "add u",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthUserAddRequest {
                        name: "u".into(),
                        password: "upw".into(),
                        options: None,
                    };
                    timed(a.user_add(with_token(r, t))).await.map(drop)
                })
            }),
        ),
        (
            "grant u",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    let r = pb::AuthUserGrantRoleRequest {
                        user: "u".into(),
                        role: "r".into(),
                    };
                    timed(a.user_grant_role(with_token(r, t))).await.map(drop)
                })
            }),
        ),
        (
            "enable",
            Box::new(|t| {
                auth(c, via, t, async |a, t| {
                    timed(a.auth_enable(with_token(pb::AuthEnableRequest {}, t)))
                        .await
                        .map(drop)
                })
            }),
        ),
    ];
    for (what, step) in steps {
        // A retry after a lost answer may find the change made.
        retry(what, || match step(None) {
            Err(e) if e.code() == Code::FailedPrecondition && e.message().contains("exist") => {
                Ok(())
            }
            other => other,
        });
    }
}

fn status(c: &Cluster, i: usize) -> Result<(bool, u64), Status> {
    auth(c, i, None, async |a, _| {
        let s = timed(a.auth_status(pb::AuthStatusRequest {})).await?;
        Ok((s.enabled, s.auth_revision))
    })
}

#[test]
fn the_auth_store_and_its_tokens_are_the_clusters() {
    let mut c = Cluster::start(0xa17, &["--bcrypt-cost", "4"]);
    let leader = c.leader(&[]);
    let followers: Vec<usize> = (0..MEMBERS).filter(|i| *i != leader).collect();
    let (f1, f2) = (followers[0], followers[1]);

    set_up(&c, f1);
    // Every member comes to the same store: enabled, one revision.
    let want = retry("status on the leader", || status(&c, leader));
    assert!(want.0, "auth enabled");
    for i in 0..MEMBERS {
        retry("the same store everywhere", || match status(&c, i)? {
            s if s == want => Ok(()),
            s => Err(Status::unavailable(format!(
                "member {i} at {s:?}, want {want:?}"
            ))),
        });
    }

    // A token from one follower works on every member, within its rights.
    let token = retry("login on a follower", || login(&c, f2, "u", "upw"));
    for i in 0..MEMBERS {
        retry("a put with the token", || put(&c, i, Some(&token), "a/1"));
        let e = put(&c, i, Some(&token), "b").unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, "etcdserver: permission denied"),
            "member {i}"
        );
        let e = put(&c, i, None, "a/1").unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "etcdserver: user name is empty"),
            "member {i}"
        );
    }
    let e = login(&c, f1, "u", "wrong").unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: authentication failed, invalid user ID or password"
    );

    // u cannot manage users; root can, from any member.
    let root = retry("root login", || login(&c, leader, "root", "rootpw"));
    let change = |i: usize, t: &str, pw: &'static str| {
        auth(&c, i, Some(t), async move |a, t| {
            let r = pb::AuthUserChangePasswordRequest {
                name: "u".into(),
                password: pw.into(),
            };
            timed(a.user_change_password(with_token(r, t)))
                .await
                .map(drop)
        })
    };
    let e = change(f1, &token, "mine").unwrap_err();
    assert_eq!(e.message(), "etcdserver: permission denied");
    retry("password change through a follower", || {
        change(f1, &root, "upw2")
    });
    // The old token dies on every member.
    for i in 0..MEMBERS {
        until_refused("the old token", Code::Unauthenticated, || {
            put(&c, i, Some(&token), "a/2")
        });
    }
    retry("login with the new password", || login(&c, f2, "u", "upw2"));

    // The write leader stops: the store lives on in the survivors.
    c.stop(leader);
    let next = c.leader(&[leader]);
    let (enabled, _) = retry("status on the new leader", || status(&c, next));
    assert!(enabled);
    let token2 = retry("login on the new leader", || login(&c, next, "u", "upw2"));
    retry("a put after the failover", || {
        put(&c, next, Some(&token2), "a/3")
    });

    // The old leader comes back from its data dir: it enforces the store,
    // and a token issued elsewhere after its return works on it.
    c.restart(leader);
    let token3 = retry("login after the restart", || login(&c, next, "u", "upw2"));
    retry("the restarted member takes the new token", || {
        put(&c, leader, Some(&token3), "a/4")
    });
    let e = put(&c, leader, Some(&token3), "b").unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Lock runs etcd's recipe with the caller's rights: u may lock under
    // its prefix, not elsewhere, and nobody without a token.
    let lock = |name: &'static str, token: Option<String>| {
        use cairn_proto::v3lockpb as lpb;
        let url = c.url(f1);
        c.rt.block_on(async move {
            let mut l = lpb::lock_client::LockClient::connect(url)
                .await
                .map_err(connect_err)?;
            let req = lpb::LockRequest {
                name: name.into(),
                lease: 0,
            };
            timed(l.lock(with_token(req, token.as_deref()))).await
        })
    };
    let held = retry("a lock under u's prefix", || {
        lock("a/lk", Some(token3.clone()))
    });
    assert!(held.key.starts_with(b"a/lk/"), "{held:?}");
    let e = lock("b/lk", Some(token3.clone())).unwrap_err();
    assert!(e.message().contains("permission denied"), "{e:?}");
    let e = lock("a/lk2", None).unwrap_err();
    assert!(e.message().contains("user name is empty"), "{e:?}");
}

/// `key` read on member `i` with `token`: its value, or the refusal.
fn range(
    c: &Cluster,
    i: usize,
    token: Option<&str>,
    key: &str,
    serializable: bool,
    limit: Duration,
) -> Result<Option<Vec<u8>>, Status> {
    let url = c.url(i);
    let req = pb::RangeRequest {
        key: key.into(),
        serializable,
        ..Default::default()
    };
    c.rt.block_on(async move {
        let mut kv = KvClient::connect(url).await.map_err(connect_err)?;
        let r = tokio::time::timeout(limit, kv.range(with_token(req, token)))
            .await
            .map_err(|_| Status::deadline_exceeded("client timeout"))??;
        Ok(r.into_inner().kvs.first().map(|kv| kv.value.clone()))
    })
}

#[test]
fn a_follower_behind_on_auth_checks_reads_against_the_leaders_store() {
    let c = Cluster::start(0xa18, &["--bcrypt-cost", "4"]);
    let leader = c.leader(&[]);
    let f = (0..MEMBERS).find(|i| *i != leader).expect("a follower");
    set_up(&c, leader);
    let root = retry("root login on the follower", || {
        login(&c, f, "root", "rootpw")
    });
    let u = retry("u login on the follower", || login(&c, f, "u", "upw"));
    retry("a put as u", || put(&c, leader, Some(&u), "a/k"));
    retry("u reads on the follower", || {
        range(&c, f, Some(&u), "a/k", false, CALL)
    });

    // The follower hears nothing more of the meta group (where the auth
    // store lives); its data groups keep up.
    for other in (0..MEMBERS).filter(|i| *i != f) {
        c.net.cut_group(c.id(other), c.id(f), META_FRAME_GROUP);
    }
    let revoke = pb::AuthRoleRevokePermissionRequest {
        role: "r".into(),
        key: b"a/".to_vec(),
        range_end: b"a0".to_vec(),
    };
    auth(&c, leader, Some(&root), async move |a, t| {
        timed(a.role_revoke_permission(with_token(revoke, t)))
            .await
            .map(drop)
    })
    .expect("revoke through the leader");
    // The follower still has the old store: a serializable read, checked
    // on the member's own state as etcd checks it, still passes there.
    let stale = range(&c, f, Some(&u), "a/k", true, CALL);
    assert!(
        matches!(stale, Ok(Some(_))),
        "the follower's meta group lags: u's serializable read passes, got {stale:?}"
    );

    let (read, role) = std::thread::scope(|s| {
        let read = s.spawn(|| range(&c, f, Some(&u), "a/k", false, CALL));
        let role = s.spawn(|| {
            auth(&c, f, Some(&root), async |a, t| {
                let r = pb::AuthRoleGetRequest { role: "r".into() };
                timed(a.role_get(with_token(r, t))).await
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        c.net.heal();
        (read.join().expect("read"), role.join().expect("role get"))
    });
    // Both waited for the follower to hold the revoke.
    let e = read.expect_err("a linearizable read after the revoke is refused");
    assert_eq!(
        (e.code(), e.message()),
        (Code::PermissionDenied, "etcdserver: permission denied")
    );
    let role = role.expect("role get on the follower");
    assert!(role.perm.is_empty(), "the revoke shows: {role:?}");

    // A simple token naming a login nobody made is refused without the
    // wait for a login this member has not applied yet (5 s).
    let made_up = "abcdefghijklmnop.99999999";
    for i in [leader, f] {
        let e = range(&c, i, Some(made_up), "a/k", true, Duration::from_secs(3))
            .expect_err("a made-up token");
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token"),
            "member {i}"
        );
    }
}
