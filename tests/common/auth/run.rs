//! The scenario runner (`Run`: every answer recorded, normalized, and
//! checked against etcd's as it comes), open watch streams, and the
//! side-by-side comparison of etcd 3.4 and cairn.

use super::{authpb, err, other, pb, Cred, Kind, Proc, Show, Step, PATIENCE};
use crate::common;
use pb::auth_client::AuthClient;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use pb::watch_client::WatchClient;
use std::fmt::Debug;
use std::future::Future;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// One scenario on one server.
pub struct Run {
    pub srv: Proc,
    pub ch: Channel,
    steps: Vec<Step>,
    /// etcd's steps, which this run's must match.
    want: Option<Vec<Step>>,
    /// Steps that differed from etcd's.
    pub diffs: Vec<String>,
}

async fn connect(url: String) -> Channel {
    let ch = Channel::from_shared(url).unwrap().connect_timeout(PATIENCE);
    ch.timeout(PATIENCE).connect().await.expect("connect")
}

macro_rules! unary {
    ($($name:ident: $client:ident.$method:ident($req:ty);)*) => {$(
        pub async fn $name(&mut self, label: &str, c: &Cred, m: $req) -> String {
            let res = $client::new(self.ch.clone()).$method(c.req(m)).await;
            self.rec(label, res)
        }
    )*};
}

impl Run {
    pub async fn new(srv: Proc, want: Option<Vec<Step>>) -> Run {
        let ch = connect(srv.url()).await;
        Run {
            srv,
            ch,
            steps: Vec::new(),
            want,
            diffs: Vec::new(),
        }
    }

    /// Restarts the server (SIGTERM) on its data and reconnects.
    pub async fn restart(&mut self) {
        self.srv.restart().await;
        self.ch = connect(self.srv.url()).await;
    }

    pub fn is_etcd(&self) -> bool {
        self.srv.kind == Kind::Etcd
    }

    /// Records a step and checks it against etcd's.
    pub fn push(&mut self, label: &str, got: String) -> String {
        let i = self.steps.len();
        if let Some(want) = &self.want {
            match want.get(i) {
                Some((l, _)) if l != label => {
                    panic!("step {i}: the scripts diverged: etcd's was {l:?}, this is {label:?}")
                }
                None => panic!("step {i} {label:?}: etcd had no such step"),
                Some((_, w)) if *w != got => {
                    let d = format!(
                        "step {i} {label:?}:\n    etcd 3.4: {w}\n    {}: {got}",
                        self.srv.name()
                    );
                    eprintln!("DIFFERS: {d}");
                    self.diffs.push(d);
                }
                Some(_) => {}
            }
        }
        self.steps.push((label.to_string(), got.clone()));
        got
    }

    /// A fact the script established (compared like a step).
    pub fn fact(&mut self, label: &str, value: impl Debug) {
        self.push(label, format!("{value:?}"));
    }

    /// A Range's answer, shown but not recorded (for polling).
    pub async fn peek_range(&self, c: &Cred, m: pb::RangeRequest) -> String {
        match KvClient::new(self.ch.clone()).range(c.req(m)).await {
            Ok(r) => format!("ok {}", r.into_inner().show()),
            Err(s) => err(&s),
        }
    }

    /// Records a unary answer.
    pub fn rec<T: Show>(
        &mut self,
        label: &str,
        res: Result<tonic::Response<T>, tonic::Status>,
    ) -> String {
        let got = match res {
            Ok(r) => format!("ok {}", r.into_inner().show()),
            Err(s) => err(&s),
        };
        self.push(label, got)
    }

    unary! {
        auth_enable: AuthClient.auth_enable(pb::AuthEnableRequest);
        auth_disable: AuthClient.auth_disable(pb::AuthDisableRequest);
        user_add_req: AuthClient.user_add(pb::AuthUserAddRequest);
        user_get_req: AuthClient.user_get(pb::AuthUserGetRequest);
        user_list_req: AuthClient.user_list(pb::AuthUserListRequest);
        user_delete_req: AuthClient.user_delete(pb::AuthUserDeleteRequest);
        user_passwd_req: AuthClient.user_change_password(pb::AuthUserChangePasswordRequest);
        user_grant_req: AuthClient.user_grant_role(pb::AuthUserGrantRoleRequest);
        user_revoke_req: AuthClient.user_revoke_role(pb::AuthUserRevokeRoleRequest);
        role_add_req: AuthClient.role_add(pb::AuthRoleAddRequest);
        role_get_req: AuthClient.role_get(pb::AuthRoleGetRequest);
        role_list_req: AuthClient.role_list(pb::AuthRoleListRequest);
        role_delete_req: AuthClient.role_delete(pb::AuthRoleDeleteRequest);
        role_grant_req: AuthClient.role_grant_permission(pb::AuthRoleGrantPermissionRequest);
        role_revoke_req: AuthClient.role_revoke_permission(pb::AuthRoleRevokePermissionRequest);
        range: KvClient.range(pb::RangeRequest);
        put: KvClient.put(pb::PutRequest);
        delete: KvClient.delete_range(pb::DeleteRangeRequest);
        txn: KvClient.txn(pb::TxnRequest);
        compact: KvClient.compact(pb::CompactionRequest);
        lease_grant: LeaseClient.lease_grant(pb::LeaseGrantRequest);
        lease_revoke: LeaseClient.lease_revoke(pb::LeaseRevokeRequest);
        lease_ttl: LeaseClient.lease_time_to_live(pb::LeaseTimeToLiveRequest);
        status: MaintenanceClient.status(pb::StatusRequest);
        alarm: MaintenanceClient.alarm(pb::AlarmRequest);
        hash: MaintenanceClient.hash(pb::HashRequest);
        hash_kv: MaintenanceClient.hash_kv(pb::HashKvRequest);
        defragment: MaintenanceClient.defragment(pb::DefragmentRequest);
        move_leader: MaintenanceClient.move_leader(pb::MoveLeaderRequest);
        member_list: ClusterClient.member_list(pb::MemberListRequest);
        member_add: ClusterClient.member_add(pb::MemberAddRequest);
    }

    pub async fn user_add(&mut self, label: &str, c: &Cred, name: &str, password: &str) -> String {
        let m = pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: None,
        };
        self.user_add_req(label, c, m).await
    }

    pub async fn user_get(&mut self, label: &str, c: &Cred, name: &str) -> String {
        let m = pb::AuthUserGetRequest { name: name.into() };
        self.user_get_req(label, c, m).await
    }

    pub async fn user_list(&mut self, label: &str, c: &Cred) -> String {
        self.user_list_req(label, c, pb::AuthUserListRequest {})
            .await
    }

    pub async fn user_delete(&mut self, label: &str, c: &Cred, name: &str) -> String {
        let m = pb::AuthUserDeleteRequest { name: name.into() };
        self.user_delete_req(label, c, m).await
    }

    pub async fn passwd(&mut self, label: &str, c: &Cred, name: &str, password: &str) -> String {
        let m = pb::AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
        };
        self.user_passwd_req(label, c, m).await
    }

    pub async fn grant_role(&mut self, label: &str, c: &Cred, user: &str, role: &str) -> String {
        let m = pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        self.user_grant_req(label, c, m).await
    }

    pub async fn revoke_role(&mut self, label: &str, c: &Cred, user: &str, role: &str) -> String {
        let m = pb::AuthUserRevokeRoleRequest {
            name: user.into(),
            role: role.into(),
        };
        self.user_revoke_req(label, c, m).await
    }

    pub async fn role_add(&mut self, label: &str, c: &Cred, name: &str) -> String {
        let m = pb::AuthRoleAddRequest { name: name.into() };
        self.role_add_req(label, c, m).await
    }

    pub async fn role_get(&mut self, label: &str, c: &Cred, role: &str) -> String {
        let m = pb::AuthRoleGetRequest { role: role.into() };
        self.role_get_req(label, c, m).await
    }

    pub async fn role_list(&mut self, label: &str, c: &Cred) -> String {
        self.role_list_req(label, c, pb::AuthRoleListRequest {})
            .await
    }

    pub async fn role_delete(&mut self, label: &str, c: &Cred, role: &str) -> String {
        let m = pb::AuthRoleDeleteRequest { role: role.into() };
        self.role_delete_req(label, c, m).await
    }

    /// Grants `perm_type` on [key, end) (`end` empty: the key alone).
    pub async fn grant_perm(
        &mut self,
        label: &str,
        c: &Cred,
        role: &str,
        perm_type: authpb::permission::Type,
        key: &str,
        end: &str,
    ) -> String {
        let m = pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(authpb::Permission {
                perm_type: perm_type as i32,
                key: key.into(),
                range_end: end.into(),
            }),
        };
        self.role_grant_req(label, c, m).await
    }

    pub async fn revoke_perm(
        &mut self,
        label: &str,
        c: &Cred,
        role: &str,
        key: &str,
        end: &str,
    ) -> String {
        let m = pb::AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.into(),
            range_end: end.into(),
        };
        self.role_revoke_req(label, c, m).await
    }

    /// Authenticates; records the answer and returns the token (a token
    /// that no server gave if it failed, so that scripts go on).
    pub async fn login(&mut self, label: &str, name: &str, password: &str) -> String {
        self.login_as(label, &Cred::Anon, name, password).await
    }

    /// `login` with `c`'s metadata on the Authenticate call.
    pub async fn login_as(&mut self, label: &str, c: &Cred, name: &str, password: &str) -> String {
        let m = pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        };
        let res = AuthClient::new(self.ch.clone())
            .authenticate(c.req(m))
            .await;
        let token = res.as_ref().map(|r| r.get_ref().token.clone()).ok();
        self.rec(label, res);
        token.unwrap_or_else(|| "notgiven.1".into())
    }

    /// A token for `name`, as `Cred::Token`.
    pub async fn cred(&mut self, label: &str, name: &str, password: &str) -> Cred {
        Cred::Token(self.login(label, name, password).await)
    }

    /// Opens a watch stream as `c` whose first request is `create`; records
    /// the first response. The stream is returned (open) for events.
    pub async fn watch(&mut self, label: &str, c: &Cred, create: pb::WatchCreateRequest) -> Watch {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let first = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        tx.send(first).await.unwrap();
        let mut r = tonic::Request::new(ReceiverStream::new(rx));
        c.add_to(r.metadata_mut());
        let res = WatchClient::new(self.ch.clone()).watch(r).await;
        match res {
            Err(s) => {
                self.push(label, err(&s));
                Watch { tx, rx: None }
            }
            Ok(stream) => {
                let mut w = Watch {
                    tx,
                    rx: Some(stream.into_inner()),
                };
                let got = w.next().await;
                self.push(label, got);
                w
            }
        }
    }

    /// The next response of a watch stream, recorded.
    pub async fn watch_next(&mut self, label: &str, w: &mut Watch) -> String {
        let got = w.next().await;
        self.push(label, got)
    }

    /// A Snapshot stream's first message (or its error), as `ok <bytes?>`.
    pub async fn snapshot(&mut self, label: &str, c: &Cred) -> String {
        let res = MaintenanceClient::new(self.ch.clone())
            .snapshot(c.req(pb::SnapshotRequest {}))
            .await;
        let got = match res {
            Err(s) => err(&s),
            Ok(r) => match r.into_inner().message().await {
                Ok(Some(m)) => format!("ok some data {}", !m.blob.is_empty()),
                Ok(None) => "ok no message".into(),
                Err(s) => err(&s),
            },
        };
        self.push(label, got)
    }

    pub fn finish(self) -> (Vec<Step>, Vec<String>) {
        if let Some(want) = &self.want {
            assert_eq!(
                self.steps.len(),
                want.len(),
                "{}: all of etcd's steps",
                self.srv.name()
            );
        }
        (self.steps, self.diffs)
    }
}

/// An open watch stream.
pub struct Watch {
    pub tx: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    rx: Option<tonic::Streaming<pb::WatchResponse>>,
}

impl Watch {
    /// The next response, shown; `ERR`/`closed` if the stream ended.
    pub async fn next(&mut self) -> String {
        let Some(rx) = self.rx.as_mut() else {
            return "closed".into();
        };
        match tokio::time::timeout(PATIENCE, rx.message()).await {
            Err(_) => panic!("no watch response within {PATIENCE:?}"),
            Ok(Ok(Some(r))) => format!("ok {}", r.show()),
            Ok(Ok(None)) => "closed".into(),
            Ok(Err(s)) => err(&s),
        }
    }

    pub async fn create(&self, create: pb::WatchCreateRequest) {
        let m = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        self.tx.send(m).await.unwrap();
    }
}

/// Runs `script` alone on a fresh server of `kind`: its steps (for what
/// deliberately differs from etcd 3.4.23).
pub fn run_on<F, Fut>(kind: Kind, flags: &[&str], script: F) -> Vec<Step>
where
    F: Fn(Run) -> Fut,
    Fut: Future<Output = Run>,
{
    let rt = common::rt();
    let p = Proc::start(kind, flags);
    rt.block_on(async { script(Run::new(p, None).await).await.finish().0 })
}

/// Runs `script` against etcd 3.4 started with `flags`, then against a
/// two-shard cairn with the same flags; every step of cairn's must match
/// etcd's. All differences are printed, then the test fails listing them.
pub fn side_by_side<F, Fut>(flags: &[&str], script: F)
where
    F: Fn(Run) -> Fut,
    Fut: Future<Output = Run>,
{
    let rt = common::rt();
    let etcd = Proc::etcd(flags);
    let (want, _) = rt.block_on(async { script(Run::new(etcd, None).await).await.finish() });
    if std::env::var_os("CAIRN_AUTH_ETCD_ONLY").is_some() {
        for (i, (label, got)) in want.iter().enumerate() {
            println!("{i:3} {label}: {got}");
        }
        return;
    }
    let other = other(flags);
    let name = other.name();
    let (_, diffs) =
        rt.block_on(async { script(Run::new(other, Some(want)).await).await.finish() });
    assert!(
        diffs.is_empty(),
        "{name} answered {} step(s) unlike etcd 3.4:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
