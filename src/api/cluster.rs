//! The etcd gRPC Cluster service on the member: membership as the meta
//! group holds it, changes run by the write leader
//! (`crate::member::membership`). Responses carry etcd 3.4's header (no
//! revision); a change's member list is the answering member's once the
//! change shows in it (etcd's member answers after applying the change).
//! A learner refuses every Cluster RPC (`etcdserver: rpc not supported for
//! learner`), as etcd 3.4's. Compared with etcd in
//! `tests/server_shapes_cluster.rs`.

use crate::member::membership::{Change, Listed};
use crate::member::Member;
use cairn_proto::etcdserverpb as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Cluster service.
pub struct ClusterService(pub Arc<Member>);

fn member(l: Listed) -> pb::Member {
    pb::Member {
        id: l.record.id,
        name: l.record.name,
        peer_ur_ls: l.record.peer_urls,
        client_ur_ls: l.record.client_urls,
        is_learner: l.learner,
    }
}

impl ClusterService {
    fn header(&self) -> Option<pb::ResponseHeader> {
        // etcd 3.4's Cluster responses carry no revision.
        Some(self.0.header(0, self.0.raft_term()))
    }

    async fn members(&self) -> Result<Vec<pb::Member>, Status> {
        Ok(self
            .0
            .member_list()
            .await?
            .into_iter()
            .map(member)
            .collect())
    }

    /// The members once `done` holds of them in this member's view (the
    /// change was applied on the write leader; this member may be another
    /// one that applies it a little later). Bounded: after 5 s, as they are.
    async fn members_when(
        &self,
        done: impl Fn(&[pb::Member]) -> bool,
    ) -> Result<Vec<pb::Member>, Status> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let list = self.members().await?;
            if done(&list) || tokio::time::Instant::now() > deadline {
                return Ok(list);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_request(&self.0, &request).await?;
        let r = request.into_inner();
        let id = self
            .0
            .change_members(Change::Add {
                peer_urls: r.peer_ur_ls.clone(),
                learner: r.is_learner,
            })
            .await?;
        let members = self.members_when(|l| l.iter().any(|m| m.id == id)).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: r.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: r.is_learner,
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_request(&self.0, &request).await?;
        let id = request.into_inner().id;
        self.0.change_members(Change::Remove { id }).await?;
        let members = self.members_when(|l| l.iter().all(|m| m.id != id)).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_request(&self.0, &request).await?;
        let r = request.into_inner();
        self.0
            .change_members(Change::Update {
                id: r.id,
                peer_urls: r.peer_ur_ls.clone(),
            })
            .await?;
        let updated = |l: &[pb::Member]| {
            l.iter()
                .any(|m| m.id == r.id && m.peer_ur_ls == r.peer_ur_ls)
        };
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.members_when(updated).await?,
        }))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.0.not_a_learner()?;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.members().await?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_request(&self.0, &request).await?;
        let id = request.into_inner().id;
        self.0.change_members(Change::Promote { id }).await?;
        let promoted = |l: &[pb::Member]| l.iter().any(|m| m.id == id && !m.is_learner);
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.members_when(promoted).await?,
        }))
    }
}
