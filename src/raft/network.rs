//! The Raft network of one group over the member's [`Transport`]: openraft's
//! RPCs encoded (postcard) into [`Frame`]s tagged with the group, and the
//! receiving side ([`serve`]) that decodes them for the group's `Raft`.
//!
//! A single-member cluster uses [`crate::transport::NoPeers`]: openraft never
//! calls it when this member is the only voter.

use crate::transport::{CallError, Frame, Kind, SharedTransport};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{NetworkError, ReplicationClosed};
use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// Creates [`PeerClient`]s of one group.
#[derive(Clone)]
pub struct PeerNetwork {
    group: u64,
    transport: SharedTransport,
    append_ttl: Duration,
}

impl PeerNetwork {
    /// `append_ttl`: how long an AppendEntries may take (see
    /// [`PeerClient`]); the election timeout.
    pub fn new(group: u64, transport: SharedTransport, append_ttl: Duration) -> Self {
        Self {
            group,
            transport,
            append_ttl,
        }
    }
}

/// Sends one group's RPCs to one member.
///
/// openraft gives every AppendEntries the heartbeat interval as its time to
/// live, but the answer comes after the follower's WAL sync, which on a
/// busy disk takes longer than a heartbeat (50–100 ms); a timed-out append
/// counts the peer unreachable and backs replication off, so commits stall
/// under exactly the load that slowed the sync. An append (and a
/// heartbeat, also one) may take up to the election timeout here: a
/// follower silent for that long is as good as gone.
pub struct PeerClient {
    group: u64,
    target: u64,
    transport: SharedTransport,
    append_ttl: Duration,
}

impl<C> RaftNetworkFactory<C> for PeerNetwork
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerClient {
        PeerClient {
            group: self.group,
            target,
            transport: self.transport.clone(),
            append_ttl: self.append_ttl,
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_stdvec(value).map_err(|e| AnyError::error(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(bytes).map_err(|e| AnyError::error(format!("decoding: {e}")))
}

/// A failed call as openraft's error: an unreachable or silent peer is
/// backed off from; a peer that failed to handle the RPC is retried.
fn rpc_error<C: RaftTypeConfig>(e: CallError) -> RPCError<C> {
    match e {
        CallError::Unreachable(_) | CallError::Timeout => {
            RPCError::Unreachable(Unreachable::new(&AnyError::error(e.to_string())))
        }
        CallError::Remote(_) => RPCError::Network(NetworkError::new(&AnyError::error(e))),
    }
}

impl PeerClient {
    async fn call<C, Req, Resp>(
        &self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<C>>
    where
        C: RaftTypeConfig,
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let frame = Frame {
            kind,
            group: self.group,
            body,
        };
        let ttl = match kind {
            Kind::Append => option.hard_ttl().max(self.append_ttl),
            _ => option.hard_ttl(),
        };
        let reply = self
            .transport
            .call(self.target, frame, ttl)
            .await
            .map_err(rpc_error)?;
        decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl<C> RaftNetworkV2<C> for PeerClient
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(Kind::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(Kind::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call(Kind::Transfer, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        self.call(Kind::Snapshot, &req, &option)
            .await
            .map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::RemoteError(r) => {
                    StreamingError::Network(NetworkError::new(&AnyError::error(r)))
                }
            })
    }
}

/// Handles one Raft frame of `raft`'s group; the reply's bytes, or why not.
pub async fn serve<C, SM>(raft: &Raft<C, SM>, kind: Kind, body: &[u8]) -> Result<Vec<u8>, String>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    let s = |e: AnyError| e.to_string();
    match kind {
        Kind::Append => {
            let req: AppendEntriesRequest<C> = decode(body).map_err(s)?;
            let resp = raft.append_entries(req).await.map_err(|e| e.to_string())?;
            encode(&resp).map_err(s)
        }
        Kind::Vote => {
            let req: VoteRequest<C> = decode(body).map_err(s)?;
            let resp = raft.vote(req).await.map_err(|e| e.to_string())?;
            encode(&resp).map_err(s)
        }
        Kind::Snapshot => {
            let (vote, meta, data): (VoteOf<C>, SnapshotMetaOf<C>, Vec<u8>) =
                decode(body).map_err(s)?;
            let snapshot = SnapshotOf::<C, Vec<u8>> {
                meta,
                snapshot: data,
            };
            let resp = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string())?;
            encode(&resp).map_err(s)
        }
        Kind::PreVote => {
            let req: VoteRequest<C> = decode(body).map_err(s)?;
            let resp = raft.pre_vote(req).await.map_err(|e| e.to_string())?;
            encode(&resp).map_err(s)
        }
        Kind::Transfer => {
            let req: TransferLeaderRequest<C> = decode(body).map_err(s)?;
            let resp = raft
                .handle_transfer_leader(req)
                .await
                .map_err(|e| e.to_string())?;
            encode(&resp).map_err(s)
        }
        Kind::Forward | Kind::ReadIndex | Kind::Removed => {
            Err(format!("{kind:?} is not a Raft frame"))
        }
    }
}
