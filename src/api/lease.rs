//! The Lease service: etcd's messages to the member's lease calls
//! (`crate::member::lease`) and back.

use crate::member::Member;
use cairn_proto::etcdserverpb as pb;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Keepalive answers queued per stream before the task waits for the
/// client.
const SEND_QUEUE: usize = 16;

pub struct LeaseService(pub Arc<Member>);

impl LeaseService {
    /// A header at the member's current revision.
    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(current_header(&self.0))
    }
}

fn current_header(member: &Member) -> pb::ResponseHeader {
    member.header(member.seq.committed(), member.raft_term())
}

/// The answers of one keepalive stream.
pub type KeepAliveResponses = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

/// Serves one keepalive stream whose requests come from `requests` (gRPC's
/// stream, or the JSON gateway's body): answers in request order until
/// `requests` ends or fails, or the receiver of the answers is dropped. A
/// failed renew (not an unknown lease: that answers TTL 0) ends the stream
/// with its status.
pub fn keep_alive<R>(member: Arc<Member>, mut requests: R) -> KeepAliveResponses
where
    R: futures::Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    tokio::spawn(async move {
        while let Some(Ok(req)) = requests.next().await {
            // etcd fills the header before renewing.
            let header = current_header(&member);
            let answer = member
                .lease_renew(req.id)
                .await
                .map(|ttl| pb::LeaseKeepAliveResponse {
                    header: Some(header),
                    id: req.id,
                    ttl,
                });
            let failed = answer.is_err();
            if tx.send(answer).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        // A token, if sent, must be valid (etcd checks no permission).
        super::access::caller_of(&self.0, &request).await?;
        let r = request.into_inner();
        // Run to the end even if the client goes away (a grant half done
        // would leave the table and the deadlines apart).
        let member = self.0.clone();
        let (id, ttl) = tokio::spawn(async move { member.lease_grant(r.id, r.ttl).await })
            .await
            .map_err(|e| Status::internal(format!("lease grant failed: {e}")))??;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.header(),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = super::access::caller_of(&self.0, &request).await?;
        let id = request.into_inner().id;
        super::access::lease_keys_writable(&self.0, caller.as_ref(), id).await?;
        // Run to the end even if the client goes away: a revoke dropped
        // half way would leave the lease fenced and marked as being revoked.
        let member = self.0.clone();
        let revision = tokio::spawn(async move { member.lease_revoke(id).await })
            .await
            .map_err(|e| Status::internal(format!("lease revoke failed: {e}")))??;
        let revision = revision.unwrap_or_else(|| self.0.seq.committed());
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.0.header(revision, self.0.raft_term())),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveResponses;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Ok(Response::new(keep_alive(
            self.0.clone(),
            request.into_inner(),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let credential = super::access::credential(&request);
        let r = request.into_inner();
        let header = self.header();
        let t = self.0.lease_time_to_live(r.id, r.keys).await?;
        if r.keys && (credential.is_some() || self.0.auth.view.enabled()) {
            // etcd 3.4.26's fix of CVE-2023-32082 (3.4.23 does not check).
            let caller = super::access::caller(&self.0, credential.as_ref()).await?;
            super::access::keys_readable(&self.0, caller.as_ref(), &t.keys)?;
        }
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl: t.ttl,
            granted_ttl: t.granted,
            keys: t.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self.0.lease_list().await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(),
            leases: leases
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
