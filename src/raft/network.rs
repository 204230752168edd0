//! The Raft network of a single-member cluster: there is nobody to talk to.
//! Every RPC reports the target unreachable (openraft never sends one when the
//! membership is this member alone). Members over QUIC arrive with clusters.

use super::types::ShardRaft;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::ReplicationClosed;
use openraft::error::{RPCError, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::AnyError;
use std::future::Future;

/// Creates [`NoPeer`] clients.
#[derive(Clone, Default)]
pub struct SingleMemberNetwork;

/// A client to a member that does not exist.
pub struct NoPeer;

fn unreachable() -> Unreachable<ShardRaft> {
    Unreachable::new(&AnyError::error("single-member cluster: no peers"))
}

impl RaftNetworkFactory<ShardRaft> for SingleMemberNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetworkV2<ShardRaft> for NoPeer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<ShardRaft>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<ShardRaft>,
        _option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<ShardRaft>,
        _snapshot: SnapshotOf<ShardRaft, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}
