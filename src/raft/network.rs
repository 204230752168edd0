//! The Raft network of a single-member cluster: there is nobody to talk to.
//! Every RPC reports the target unreachable (openraft never sends one when the
//! membership is this member alone). Members over QUIC arrive with clusters.

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::ReplicationClosed;
use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, RaftTypeConfig};
use std::future::Future;

/// Creates [`NoPeer`] clients.
#[derive(Clone, Default)]
pub struct SingleMemberNetwork;

/// A client to a member that does not exist.
pub struct NoPeer;

fn unreachable<C: RaftTypeConfig>() -> Unreachable<C> {
    Unreachable::new(&AnyError::error("single-member cluster: no peers"))
}

impl<C> RaftNetworkFactory<C> for SingleMemberNetwork
where
    C: RaftTypeConfig<NodeId = u64, Node = openraft::BasicNode>,
{
    type Network = NoPeer;

    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoPeer {
        NoPeer
    }
}

impl<C> RaftNetworkV2<C> for NoPeer
where
    C: RaftTypeConfig<NodeId = u64, Node = openraft::BasicNode>,
{
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<C>,
        _snapshot: SnapshotOf<C, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}
