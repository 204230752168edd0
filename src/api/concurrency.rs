//! What the Lock and Election services share: etcd 3.4 serves both with its
//! `clientv3/concurrency` recipes (Mutex, Election) running against its own
//! KV, Lease and Watch through an in-process client. cairn does the same
//! with its own services, called in-process ([`Client`]), and an in-process
//! watch ([`KeyWatch`]) that reads the member's watch hub (or, behind it, the
//! shards' histories) as the Watch service does.
//!
//! The recipes' shape, kept here: a session's lease (lease 0: a new lease of
//! 60 s, which nobody keeps alive); a contender's key `<name>/<lease in
//! hex>`; waiting for one's turn = waiting for the deletion of the key with
//! the greatest create revision below one's own, one key at a time (no
//! thundering herd).
//!
//! Errors: etcd's recipes hand back the in-process client's errors, which
//! its gRPC server then sends as code Unknown with etcd's message (see
//! [`unknown`]); the client's own cancellation is not an error (the call is
//! dropped, and a [`Cleanup`] undoes what it left).
//!
//! Runs on the tokio front runtime.

use crate::member::Member;
use crate::mvcc::{Event, RangeEnd};
use crate::watch::Read;
use cairn_proto::etcdserverpb as pb;
use pb::kv_server::Kv;
use pb::lease_server::Lease;
use std::sync::Arc;
use tonic::{Request, Status};

/// The TTL of a session's lease when the request names none (etcd's
/// `concurrency.defaultSessionTTL`).
pub const SESSION_TTL_SECONDS: i64 = 60;

/// An error of the in-process client as etcd's Lock and Election servers
/// send it: the message kept, the code Unknown (etcd's `rpctypes.EtcdError`
/// carries no gRPC status, so gRPC sends any error it wraps as Unknown).
pub fn unknown(status: Status) -> Status {
    Status::unknown(status.message().to_string())
}

/// Go's `%x` of a lease ID (a sign, then the magnitude in hex).
pub fn lease_hex(lease: i64) -> String {
    if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    }
}

/// A contender's key: `<prefix><lease in hex>` (the prefix ends with `/`).
pub fn contender_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(lease_hex(lease).as_bytes());
    key
}

/// etcd's `GetPrefixRangeEnd`: the first key after every key that starts
/// with `prefix` (`"\0"`, every key, if there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The member's KV and Lease services, called in-process (etcd's
/// `v3client`): validation, routing, quota, headers and auth checks are
/// theirs. The second field is the caller's credential, sent with every
/// request, so each step is checked as etcd checks its in-process client's
/// (which carries the caller's token).
#[derive(Clone)]
pub struct Client(pub Arc<Member>, pub Option<crate::auth::Credential>);

fn op(request: pb::request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

/// `create_revision(key) == rev`.
fn create_is(key: &[u8], rev: i64) -> pb::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

/// The first range response of a txn's answer.
pub fn first_range(t: &pb::TxnResponse) -> Option<&pb::RangeResponse> {
    match t.responses.first()?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

impl Client {
    /// A request carrying the caller's credential.
    fn request<T>(&self, message: T) -> Request<T> {
        use crate::auth::Credential;
        let mut req = Request::new(message);
        match &self.1 {
            Some(Credential::Token(t)) => {
                if let Ok(v) = t.parse() {
                    req.metadata_mut().insert("token", v);
                }
            }
            Some(Credential::CertName(name)) => {
                let peer = super::tls::ClientPeer {
                    addr: ([0, 0, 0, 0], 0).into(),
                    common_name: Some(name.as_str().into()),
                };
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            None => {}
        }
        req
    }

    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let kv = super::kv::KvService(self.0.clone());
        Ok(kv
            .txn(self.request(req))
            .await
            .map_err(unknown)?
            .into_inner())
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        let kv = super::kv::KvService(self.0.clone());
        Ok(kv
            .range(self.request(req))
            .await
            .map_err(unknown)?
            .into_inner())
    }

    pub async fn delete(&self, key: Vec<u8>) -> Result<pb::DeleteRangeResponse, Status> {
        let kv = super::kv::KvService(self.0.clone());
        let req = pb::DeleteRangeRequest {
            key,
            ..Default::default()
        };
        let r = kv.delete_range(self.request(req)).await;
        Ok(r.map_err(unknown)?.into_inner())
    }

    /// etcd's `NewSession(WithLease(lease))`: lease 0 grants a new lease of
    /// [`SESSION_TTL_SECONDS`]; any other is used as it is (an unknown one
    /// fails later, at the put). The session is orphaned at once (the
    /// servers call `Orphan()`): nothing keeps its lease alive.
    pub async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let leases = super::lease::LeaseService(self.0.clone());
        let req = pb::LeaseGrantRequest {
            ttl: SESSION_TTL_SECONDS,
            id: 0,
        };
        let r = leases.lease_grant(self.request(req)).await;
        Ok(r.map_err(unknown)?.into_inner().id)
    }

    /// Txn: if `key` was never created, put it (`value`, `lease`), else get
    /// it. Returns the answer and the key's create revision.
    pub async fn create_or_get(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(pb::TxnResponse, i64), Status> {
        use pb::request_op::Request as R;
        let put = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let get = pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let t = self
            .txn(pb::TxnRequest {
                compare: vec![create_is(key, 0)],
                success: vec![op(R::RequestPut(put))],
                failure: vec![op(R::RequestRange(get))],
            })
            .await?;
        let rev = if t.succeeded {
            t.header.as_ref().map_or(0, |h| h.revision)
        } else {
            let kv = first_range(&t).and_then(|r| r.kvs.first());
            // The key existed when the compare ran, and the get of the same
            // txn read it at that revision.
            kv.ok_or_else(|| Status::internal("a txn's get lost the key its compare saw"))?
                .create_revision
        };
        Ok((t, rev))
    }

    /// Txn: if `key` still has create revision `rev`, `then` (a put or a
    /// delete of it). Returns the answer.
    pub async fn if_created_at(
        &self,
        key: &[u8],
        rev: i64,
        then: pb::request_op::Request,
    ) -> Result<pb::TxnResponse, Status> {
        self.txn(pb::TxnRequest {
            compare: vec![create_is(key, rev)],
            success: vec![op(then)],
            failure: Vec::new(),
        })
        .await
    }

    /// The key under `prefix` with the lowest (`ascending`) or highest
    /// create revision, at most `max_create_revision` (0: any): etcd's
    /// `WithFirstCreate` / `WithLastCreate`.
    pub async fn by_create(
        &self,
        prefix: &[u8],
        ascending: bool,
        max_create_revision: i64,
    ) -> Result<pb::RangeResponse, Status> {
        use pb::range_request::{SortOrder, SortTarget};
        let order = if ascending {
            SortOrder::Ascend
        } else {
            SortOrder::Descend
        };
        self.range(pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: order as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision,
            ..Default::default()
        })
        .await
    }

    /// etcd's `waitDeletes`: waits until no key under `prefix` has a create
    /// revision at most `max_create_revision`, watching one key at a time
    /// (the newest of them, so each waiter waits for one other). Returns the
    /// header of the range that found none, or None if the first one did
    /// (nothing to wait for).
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let mut waited = false;
        loop {
            let r = self.by_create(prefix, false, max_create_revision).await?;
            let header = r.header.unwrap_or_default();
            let Some(last) = r.kvs.into_iter().next() else {
                return Ok(waited.then_some(header));
            };
            let mut watch = KeyWatch::new(self.0.clone(), last.key, Vec::new(), header.revision);
            'deleted: loop {
                let (events, _) = watch.next().await?;
                if events.iter().any(|e| e.delete) {
                    break 'deleted;
                }
            }
            waited = true;
        }
    }
}

/// An in-process watch of a key or range (clientv3's `Watch` as the
/// recipes use it): every event from a start revision on, in revision
/// order. Registered with the member's watch hub while it lives, so the
/// shards record events for it.
pub struct KeyWatch {
    member: Arc<Member>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    end: RangeEnd,
    /// The next revision to read.
    next: i64,
    committed: tokio::sync::watch::Receiver<i64>,
}

impl KeyWatch {
    /// A watch of `key` (to `range_end`, as in a Range) from revision
    /// `from`.
    pub fn new(member: Arc<Member>, key: Vec<u8>, range_end: Vec<u8>, from: i64) -> Self {
        let committed = member.seq.subscribe();
        member.hub.add_watcher(|| member.seq.last_stamped());
        KeyWatch {
            end: RangeEnd::from_request(&range_end),
            key,
            range_end,
            next: from.max(1),
            committed,
            member,
        }
    }

    /// The next events (one or more, in revision order) and the C they were
    /// read at; waits until there are some. Fails only if the history it
    /// needs was compacted or the member is stopping.
    pub async fn next(&mut self) -> Result<(Vec<Event>, i64), Status> {
        use crate::api::EtcdError;
        loop {
            let c = *self.committed.borrow_and_update();
            while self.next <= c {
                let events = match self.member.hub.read(self.next, c) {
                    Read::Events(batches, upto) => {
                        let events = batches
                            .iter()
                            .filter(|b| b.0 >= self.next && b.0 <= upto)
                            .flat_map(|b| b.1.iter())
                            .filter(|e| self.end.contains(&self.key, &e.kv.key))
                            .cloned()
                            .collect();
                        self.next = self.next.max(upto + 1);
                        events
                    }
                    Read::Behind(_) => {
                        let (events, reached) = self.history(c).await?;
                        self.next = reached + 1;
                        events
                    }
                };
                if !events.is_empty() {
                    return Ok((events, c));
                }
            }
            if self.committed.changed().await.is_err() {
                return Err(EtcdError::Stopped.status());
            }
        }
    }

    /// The events from `next` to at most `c` in the shards' histories (a
    /// bounded piece), and the revision they reach.
    async fn history(&self, c: i64) -> Result<(Vec<Event>, i64), Status> {
        use crate::api::EtcdError;
        self.member
            .history(&self.key, &self.range_end, &self.end, self.next, c)
            .await
            .map_err(|_| unknown(EtcdError::Compacted.status()))
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.member.hub.remove_watcher();
    }
}

/// What a waiting Lock or Campaign leaves behind if it does not finish
/// (its client went away, or the wait failed): etcd deletes the waiter's
/// key (a Lock: `Mutex.Unlock`; a Campaign: `Election.Resign`, only if the
/// key still has its create revision). Armed until [`Cleanup::disarm`];
/// dropped armed, it runs the delete in a task of its own.
pub struct Cleanup {
    client: Client,
    key: Vec<u8>,
    /// Some: delete only if the key's create revision is this one.
    created_at: Option<i64>,
    armed: bool,
}

impl Cleanup {
    pub fn new(client: Client, key: Vec<u8>, created_at: Option<i64>) -> Self {
        Cleanup {
            client,
            key,
            created_at,
            armed: true,
        }
    }

    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, key, created_at) = (self.client.clone(), self.key.clone(), self.created_at);
        // Best effort, as etcd's (its error is dropped too); nothing to do
        // if the front runtime is gone (the member stopped).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = match created_at {
                None => client.delete(key).await.map(|_| ()),
                Some(rev) => {
                    let delete =
                        pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        });
                    client.if_created_at(&key, rev, delete).await.map(|_| ())
                }
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_hex_is_gos_percent_x() {
        assert_eq!(lease_hex(0), "0");
        assert_eq!(lease_hex(0x694d_7a3b_2c1d_0e0f), "694d7a3b2c1d0e0f");
        assert_eq!(lease_hex(-5), "-5");
        assert_eq!(lease_hex(i64::MIN), "-8000000000000000");
        assert_eq!(contender_key(b"n/", 255), b"n/ff".to_vec());
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"n/"), b"n0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
