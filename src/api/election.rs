//! The Election service (`v3electionpb.Election`), as etcd 3.4's
//! `v3election` server over its `concurrency.Election`: candidates are keys
//! `<name>/<lease in hex>`, the leader is the one of lowest create revision,
//! and its value is what it proclaims. Built from the member's own KV, Lease
//! and Watch ([`super::concurrency`]).
//!
//! - Campaign(name, lease, value): lease 0 takes a new 60 s lease that
//!   nobody keeps alive. Creates the key with the value and the lease (or
//!   finds it, and proclaims the new value if it differs), then waits until
//!   every older candidate's key is deleted. A Campaign whose client goes
//!   away resigns (deletes its key if it still has its create revision).
//!   Answers with its txn's header and the `LeaderKey`.
//! - Proclaim(leader, value): puts the value, with the leader's lease, if
//!   the key still has the leader's create revision; else
//!   `election: not leader`. (As etcd 3.4: a leader key whose lease is 0
//!   gets a new 60 s lease, to which the key is then attached.)
//! - Resign(leader): deletes the key if it still has that create revision
//!   (no error if not).
//! - Leader(name): the key of lowest create revision, or
//!   `election: no leader`.
//! - Observe(name): a stream of the leader as it is, then of each value it
//!   proclaims; when its key is deleted, the next leader (waiting for one to
//!   appear if there is none).
//!
//! Errors: code Unknown with etcd's message, as etcd's server sends them
//! (see [`super::concurrency::unknown`]).
//!
//! Runs on the tokio front runtime.

use super::concurrency::{contender_key, first_range, prefix_end, Cleanup, Client, KeyWatch};
use crate::member::Member;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb as epb;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// etcd's messages (`concurrency.ErrElectionNotLeader`, `ErrElectionNoLeader`,
/// `v3election.ErrMissingLeaderKey`).
pub const ERR_NOT_LEADER: &str = "election: not leader";
pub const ERR_NO_LEADER: &str = "election: no leader";
pub const ERR_MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// Observe answers queued per stream before the task waits for the client.
const OBSERVE_QUEUE: usize = 16;

pub struct ElectionService(pub Arc<Member>);

/// Puts `value` (with `lease`) on `key` if it still has create revision
/// `rev`: etcd's `Election.Proclaim`.
async fn proclaim(
    client: &Client,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: Vec<u8>,
) -> Result<pb::TxnResponse, Status> {
    let put = pb::request_op::Request::RequestPut(pb::PutRequest {
        key: key.to_vec(),
        value,
        lease,
        ..Default::default()
    });
    let t = client.if_created_at(key, rev, put).await?;
    if !t.succeeded {
        return Err(Status::unknown(ERR_NOT_LEADER));
    }
    Ok(t)
}

/// Deletes `key` if it still has create revision `rev`: etcd's
/// `Election.Resign`.
async fn resign(client: &Client, key: &[u8], rev: i64) -> Result<pb::TxnResponse, Status> {
    let delete = pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    });
    client.if_created_at(key, rev, delete).await
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let credential = super::access::credential(&request);
        let r = request.into_inner();
        let client = Client(self.0.clone(), credential);
        let lease = client.session_lease(r.lease).await?;
        let prefix = prefix_of(&r.name);
        let key = contender_key(&prefix, lease);
        let (created, rev) = client.create_or_get(&key, &r.value, lease).await?;
        let found = first_range(&created).and_then(|g| g.kvs.first());
        if found.is_some_and(|kv| kv.value != r.value) {
            if let Err(e) = proclaim(&client, &key, rev, lease, r.value).await {
                let _ = resign(&client, &key, rev).await;
                return Err(e);
            }
        }
        // A client that goes away while this waits resigns (etcd resigns
        // only then: a wait that fails otherwise leaves the key).
        let cleanup = Cleanup::new(client.clone(), key.clone(), Some(rev));
        let waited = client.wait_deletes(&prefix, rev - 1).await;
        cleanup.disarm();
        waited?;
        Ok(Response::new(epb::CampaignResponse {
            header: created.header,
            leader: Some(epb::LeaderKey {
                name: r.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let credential = super::access::credential(&request);
        let r = request.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let client = Client(self.0.clone(), credential);
        let lease = client.session_lease(leader.lease).await?;
        let t = proclaim(&client, &leader.key, leader.rev, lease, r.value).await?;
        Ok(Response::new(epb::ProclaimResponse { header: t.header }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let credential = super::access::credential(&request);
        let prefix = prefix_of(&request.get_ref().name);
        let r = Client(self.0.clone(), credential)
            .by_create(&prefix, true, 0)
            .await?;
        let kv = r.kvs.into_iter().next();
        if kv.is_none() {
            return Err(Status::unknown(ERR_NO_LEADER));
        }
        Ok(Response::new(epb::LeaderResponse {
            header: r.header,
            kv,
        }))
    }

    type ObserveStream = ReceiverStream<Result<epb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client = Client(self.0.clone(), super::access::credential(&request));
        let prefix = prefix_of(&request.get_ref().name);
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE);
        tokio::spawn(async move {
            // Stops when the client goes away, whatever it waits for.
            tokio::select! {
                _ = observe(client, prefix, &tx) => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let credential = super::access::credential(&request);
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(ERR_MISSING_LEADER_KEY))?;
        let client = Client(self.0.clone(), credential);
        // As etcd's: a session of the leader's lease (lease 0 grants one).
        client.session_lease(leader.lease).await?;
        let t = resign(&client, &leader.key, leader.rev).await?;
        Ok(Response::new(epb::ResignResponse { header: t.header }))
    }
}

/// etcd's `Election.observe`: the leader now, then every PUT of its key
/// until it is deleted, then the next leader, and so on. Returns when the
/// stream cannot go on (the client went away, a read failed: etcd then ends
/// the stream without an error).
async fn observe(
    client: Client,
    prefix: Vec<u8>,
    tx: &mpsc::Sender<Result<epb::LeaderResponse, Status>>,
) {
    let member = client.0.clone();
    // A response at the revision of the event it reports (etcd's watch
    // header for an event as it happens).
    let at = |rev: i64| Some(member.header(rev, member.raft_term()));
    loop {
        let Ok(r) = client.by_create(&prefix, true, 0).await else {
            return;
        };
        let (header, kv) = match r.kvs.into_iter().next() {
            Some(kv) => (r.header, kv),
            None => {
                // No leader: the first key put under the prefix from the
                // range's revision on.
                let from = r.header.map_or(0, |h| h.revision);
                let end = prefix_end(&prefix);
                let mut watch = KeyWatch::new(member.clone(), prefix.clone(), end, from);
                loop {
                    let Ok((events, _)) = watch.next().await else {
                        return;
                    };
                    if let Some(e) = events.into_iter().find(|e| !e.delete) {
                        break (at(e.kv.mod_revision), super::convert::kv(e.kv));
                    }
                }
            }
        };
        let next = header.as_ref().map_or(0, |h| h.revision) + 1;
        let key = kv.key.clone();
        let sent = tx.send(Ok(epb::LeaderResponse {
            header,
            kv: Some(kv),
        }));
        if sent.await.is_err() {
            return;
        }
        let mut watch = KeyWatch::new(member.clone(), key, Vec::new(), next);
        'leader: loop {
            let Ok((events, _)) = watch.next().await else {
                return;
            };
            for e in events {
                if e.delete {
                    break 'leader;
                }
                let header = at(e.kv.mod_revision);
                let kv = Some(super::convert::kv(e.kv));
                if tx
                    .send(Ok(epb::LeaderResponse { header, kv }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
