//! Shared by `server_auth.rs`: etcd 3.4 and cairn processes started with
//! auth flags (and restartable while auth is enabled), and a scenario runner
//! that sends the same requests to both, with or without a token, records
//! every answer normalized, and compares cairn's with etcd's step by step.
//!
//! Normalized: response headers keep only the revision (cluster and member
//! IDs and the raft term are the member's own); a simple token shows as
//! `simple token` (its text is random), a JWT as its `username` and
//! `revision` claims (the expiry is the clock's); everything else (codes,
//! messages, revisions, key-values, flags) is compared exactly.
//!
//! `CAIRN_AUTH_ETCD_ONLY=1` runs etcd's side alone and prints every step;
//! `CAIRN_AUTH_ETCD_TWICE=1` checks the scripts themselves: a second etcd in
//! cairn's place must match the first.

use crate::common;
pub use cairn_proto::authpb;
pub use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use pb::auth_client::AuthClient;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::maintenance_client::MaintenanceClient;
use pb::watch_client::WatchClient;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long anything that must come may take (a loaded machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// bcrypt's cheapest cost, on both servers: the tests hash many passwords.
pub const CHEAP: [&str; 2] = ["--bcrypt-cost", "4"];

pub fn shard_of(key: &str) -> usize {
    cairn::shard::route::shard_of(key.as_bytes(), 2)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Etcd,
    Cairn,
}

/// A single etcd 3.4 member or a two-shard cairn member, with its flags, on
/// free loopback ports and a temp dir; restartable on the same data and
/// ports; SIGKILLed by its PID when dropped. Unlike `common::Cairn`, it is
/// ready when it answers at all: with auth enabled, a Range without a token
/// is refused, and that answer counts.
pub struct Proc {
    pub kind: Kind,
    child: Option<Child>,
    pub port: u16,
    peer: u16,
    flags: Vec<String>,
    base: tempfile::TempDir,
}

impl Proc {
    pub fn start(kind: Kind, flags: &[&str]) -> Proc {
        let mut p = Proc {
            kind,
            child: None,
            port: common::free_port(),
            peer: common::free_port(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            base: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        };
        p.spawn();
        common::rt().block_on(p.ready());
        p
    }

    pub fn etcd(flags: &[&str]) -> Proc {
        Self::start(Kind::Etcd, flags)
    }

    pub fn cairn(flags: &[&str]) -> Proc {
        Self::start(Kind::Cairn, flags)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Etcd => "etcd 3.4",
            Kind::Cairn => "cairn (2 shards)",
        }
    }

    /// A file in this process's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    fn spawn(&mut self) {
        let url = self.url();
        let data = self.base.path().join("data");
        let child = match self.kind {
            Kind::Etcd => {
                let peer = format!("http://127.0.0.1:{}", self.peer);
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.file("etcd.log"))
                    .unwrap();
                Command::new("etcd")
                    .args(["--name", "ref", "--data-dir"])
                    .arg(&data)
                    .args([
                        "--listen-client-urls",
                        &url,
                        "--advertise-client-urls",
                        &url,
                    ])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("ref={peer}")])
                    .args(&self.flags)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect(
                        "`etcd` not found: run tools/test.sh, which installs Debian's etcd-server",
                    )
            }
            Kind::Cairn => Command::new(env!("CARGO_BIN_EXE_cairn"))
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &url])
                .args(["--shards", "2"])
                .args(&self.flags)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting cairn"),
        };
        self.child = Some(child);
    }

    /// Waits until the member answers a Range without a token: its result,
    /// or one of etcd's errors (auth enabled).
    async fn ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.file("etcd.log")).unwrap_or_default();
                panic!("{} exited while starting: {status}\n{log}", self.name());
            }
            if let Ok(mut kv) = KvClient::connect(self.url()).await {
                let r = kv.range(pb::RangeRequest::default()).await;
                match r {
                    Ok(_) => return,
                    Err(s) if s.message().starts_with("etcdserver: ") => return,
                    Err(_) => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {PATIENCE:?}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the same command again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.kill(libc::SIGTERM);
        self.spawn();
        self.ready().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

/// Who a request is sent as.
#[derive(Clone, Debug)]
pub enum Cred {
    /// No token.
    Anon,
    /// The token in gRPC metadata `token` (what etcd's clientv3 sends).
    Token(String),
    /// The token in gRPC metadata `authorization` (the gateway's header,
    /// forwarded; the token itself, no `Bearer`).
    Authorization(String),
    /// Both: `token` first, then `authorization`.
    Both(String, String),
}

impl Cred {
    pub fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.set_timeout(PATIENCE);
        self.add_to(r.metadata_mut());
        r
    }

    fn add_to(&self, md: &mut tonic::metadata::MetadataMap) {
        let mut add = |key: &'static str, token: &str| {
            md.insert(key, token.parse().expect("a token fit for gRPC metadata"));
        };
        match self {
            Cred::Anon => {}
            Cred::Token(t) => add("token", t),
            Cred::Authorization(t) => add("authorization", t),
            Cred::Both(t, a) => {
                add("token", t);
                add("authorization", a);
            }
        }
    }
}

/// An answer as it is compared: `ok <what>` or `ERR <code>: <message>`.
pub fn err(s: &tonic::Status) -> String {
    format!("ERR {:?}: {}", s.code(), s.message())
}

/// A response as it is compared (header: its revision alone).
pub trait Show {
    fn show(&self) -> String;
}

pub fn hdr(h: &Option<pb::ResponseHeader>) -> String {
    match h {
        None => "no header".into(),
        Some(h) => format!("rev {}", h.revision),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn kv(kv: &mvccpb::KeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} l{}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

fn kvs(v: &[mvccpb::KeyValue]) -> String {
    v.iter().map(kv).collect::<Vec<_>>().join(", ")
}

pub fn perm(p: &authpb::Permission) -> String {
    let t = authpb::permission::Type::try_from(p.perm_type)
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|_| format!("type {}", p.perm_type));
    format!("{t} [{:?}, {:?})", text(&p.key), text(&p.range_end))
}

macro_rules! show_header_only {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                hdr(&self.header)
            }
        }
    )*};
}

show_header_only!(
    pb::AuthEnableResponse,
    pb::AuthDisableResponse,
    pb::AuthUserAddResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse,
    pb::LeaseRevokeResponse,
    pb::CompactionResponse,
    pb::DefragmentResponse
);

impl Show for pb::AuthUserGetResponse {
    fn show(&self) -> String {
        format!("{} roles {:?}", hdr(&self.header), self.roles)
    }
}

impl Show for pb::AuthUserListResponse {
    fn show(&self) -> String {
        format!("{} users {:?}", hdr(&self.header), self.users)
    }
}

impl Show for pb::AuthRoleListResponse {
    fn show(&self) -> String {
        format!("{} roles {:?}", hdr(&self.header), self.roles)
    }
}

impl Show for pb::AuthRoleGetResponse {
    fn show(&self) -> String {
        let perms: Vec<String> = self.perm.iter().map(perm).collect();
        format!("{} perms {perms:?}", hdr(&self.header))
    }
}

impl Show for pb::AuthenticateResponse {
    fn show(&self) -> String {
        format!("{} {}", hdr(&self.header), token_shape(&self.token))
    }
}

impl Show for pb::RangeResponse {
    fn show(&self) -> String {
        format!(
            "{} count {} more {} [{}]",
            hdr(&self.header),
            self.count,
            self.more,
            kvs(&self.kvs)
        )
    }
}

impl Show for pb::PutResponse {
    fn show(&self) -> String {
        match &self.prev_kv {
            None => hdr(&self.header),
            Some(p) => format!("{} prev {}", hdr(&self.header), kv(p)),
        }
    }
}

impl Show for pb::DeleteRangeResponse {
    fn show(&self) -> String {
        format!(
            "{} deleted {} prev [{}]",
            hdr(&self.header),
            self.deleted,
            kvs(&self.prev_kvs)
        )
    }
}

impl Show for pb::TxnResponse {
    fn show(&self) -> String {
        use pb::response_op::Response as R;
        let ops: Vec<String> = self
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(R::ResponseRange(r)) => format!("range({})", r.show()),
                Some(R::ResponsePut(r)) => format!("put({})", r.show()),
                Some(R::ResponseDeleteRange(r)) => format!("delete({})", r.show()),
                Some(R::ResponseTxn(r)) => format!("txn({})", r.show()),
                None => "none".into(),
            })
            .collect();
        format!("{} succeeded {} {ops:?}", hdr(&self.header), self.succeeded)
    }
}

impl Show for pb::LeaseGrantResponse {
    fn show(&self) -> String {
        format!(
            "{} ID {} TTL {} error {:?}",
            hdr(&self.header),
            self.id,
            self.ttl,
            self.error
        )
    }
}

impl Show for pb::LeaseTimeToLiveResponse {
    fn show(&self) -> String {
        let mut keys: Vec<String> = self.keys.iter().map(|k| text(k)).collect();
        keys.sort();
        // The remaining TTL is the clock's: only whether it is left.
        format!(
            "ID {} TTL left {} granted {} keys {keys:?}",
            self.id,
            self.ttl > 0,
            self.granted_ttl
        )
    }
}

impl Show for pb::StatusResponse {
    fn show(&self) -> String {
        // (The version is the server's: cairn says 3.4.0.)
        hdr(&self.header)
    }
}

impl Show for pb::AlarmResponse {
    fn show(&self) -> String {
        format!("{} alarms {}", hdr(&self.header), self.alarms.len())
    }
}

impl Show for pb::HashResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::HashKvResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::MoveLeaderResponse {
    fn show(&self) -> String {
        hdr(&self.header)
    }
}

impl Show for pb::MemberListResponse {
    fn show(&self) -> String {
        format!("{} members {}", hdr(&self.header), self.members.len())
    }
}

impl Show for pb::MemberAddResponse {
    fn show(&self) -> String {
        format!("{} members {}", hdr(&self.header), self.members.len())
    }
}

impl Show for pb::WatchResponse {
    fn show(&self) -> String {
        let evs: Vec<String> = self
            .events
            .iter()
            .map(|e| {
                let t = if e.r#type == 0 { "PUT" } else { "DELETE" };
                format!("{t} {}", e.kv.as_ref().map(kv).unwrap_or_default())
            })
            .collect();
        format!(
            "{} id {} created {} canceled {} reason {:?} compact {} events {evs:?}",
            hdr(&self.header),
            self.watch_id,
            self.created,
            self.canceled,
            self.cancel_reason,
            self.compact_revision
        )
    }
}

/// A token as compared: a simple token's text is random (etcd 3.4: 16
/// letters, a dot, the raft index), a JWT's claims are the user and the
/// auth revision.
pub fn token_shape(token: &str) -> String {
    match jwt_claims(token) {
        Some(c) => format!("jwt user {} revision {}", c["username"], c["revision"]),
        None if token.is_empty() => "no token".into(),
        None => "simple token".into(),
    }
}

/// The claims of a JWT (not verified), if `token` is one.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64url(claims)?;
    serde_json::from_slice(&bytes).ok()
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One step: its label and what the server answered, normalized.
pub type Step = (String, String);

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

pub fn watch_req(key: &str, end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn range_req(key: &str, end: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub fn put_req(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn delete_req(key: &str, end: &str, prev_kv: bool) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        prev_kv,
    }
}

pub fn op_range(key: &str, end: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range_req(key, end))),
    }
}

pub fn op_put(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put_req(key, value))),
    }
}

pub fn op_delete(key: &str, end: &str, prev_kv: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(delete_req(
            key, end, prev_kv,
        ))),
    }
}

/// A txn whose compare (`key`'s version > 0) holds if `key` exists.
pub fn txn_req(
    key: &str,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            key: key.into(),
            range_end: vec![],
            target_union: Some(TargetUnion::Version(0)),
        }],
        success,
        failure,
    }
}

/// What is compared with etcd: a cairn member, or a second etcd with
/// `CAIRN_AUTH_ETCD_TWICE` set.
pub fn other(flags: &[&str]) -> Proc {
    if std::env::var_os("CAIRN_AUTH_ETCD_TWICE").is_some() {
        Proc::etcd(flags)
    } else {
        Proc::cairn(flags)
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
