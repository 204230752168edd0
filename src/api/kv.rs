//! The etcd gRPC services KV and Cluster on the member
//! ([`crate::member::Member`]): requests are validated and converted here,
//! then handed to the member.
//!
//! Runs on the tokio front runtime.

use super::access;
use super::convert;
use super::validate;
use crate::mvcc::txn as m;
use cairn_proto::etcdserverpb as pb;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::member::Member;
use crate::shard::route::shard_of;

/// Every key (and range end) a txn touches, nested txns included.
fn txn_keys(t: &m::TxnRequest, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    for c in &t.compare {
        out.push((c.key.clone(), c.range_end.clone()));
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            m::RequestOp::Range(r) => out.push((r.key.clone(), r.range_end.clone())),
            m::RequestOp::Put(p) => out.push((p.key.clone(), Vec::new())),
            m::RequestOp::DeleteRange(d) => out.push((d.key.clone(), d.range_end.clone())),
            m::RequestOp::Txn(t) => txn_keys(t, out),
            m::RequestOp::LeaseDeletes { .. } => {} // internal: never in a client's txn
        }
    }
}

/// The KV service.
pub struct KvService(pub Arc<Member>);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "Range");
        let credential = access::credential(&request);
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_range(&r)?;
        if !r.serializable {
            self.0.not_a_learner()?;
            self.0.linearize().await?;
        }
        let caller = access::caller(&self.0, credential.as_ref()).await?;
        access::range(&self.0, caller.as_ref(), &r.key, &r.range_end)?;
        let req = convert::range_request(&r)?;
        let (resp, c) = self.0.range(req).await?;
        access::still_current(&self.0, caller.as_ref())?;
        let header = self.0.header(c, self.0.raft_term());
        Ok(Response::new(convert::range_response(resp, header)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "Put");
        self.0.not_a_learner()?;
        let credential = access::credential(&request);
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_put(&r)?;
        self.0
            .check_quota(super::maintenance::put_cost(&r.key, &r.value))
            .await?;
        let caller = access::caller(&self.0, credential.as_ref()).await?;
        access::put(&self.0, caller.as_ref(), &r).await?;
        let shard = shard_of(&r.key, self.0.shards.len());
        let checked = access::checked_at(&self.0, caller.as_ref());
        let out = self
            .0
            .write_as(shard, m::RequestOp::Put(convert::put_request(&r)), checked)
            .await?;
        let m::ResponseOp::Put(p) = out.response else {
            return Err(Status::internal("put answered with another op"));
        };
        let header = self
            .0
            .header(out.revision.unwrap_or(out.view), self.0.raft_term());
        Ok(Response::new(pb::PutResponse {
            header: Some(header),
            prev_kv: p.prev_kv.map(convert::kv),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "DeleteRange");
        self.0.not_a_learner()?;
        let credential = access::credential(&request);
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_delete(&r)?;
        let caller = access::caller(&self.0, credential.as_ref()).await?;
        access::delete(&self.0, caller.as_ref(), &r)?;
        let op = m::RequestOp::DeleteRange(convert::delete_request(&r));
        let checked = access::checked_at(&self.0, caller.as_ref());
        let out = match self.0.route(&[(&r.key, &r.range_end)]) {
            Some(shard) => self.0.write_as(shard, op, checked).await?,
            None => {
                let touched = vec![(r.key.clone(), r.range_end.clone())];
                self.0.write_across_as(op, touched, checked).await?
            }
        };
        let m::ResponseOp::DeleteRange(d) = out.response else {
            return Err(Status::internal("delete answered with another op"));
        };
        let revision = out
            .revision
            .unwrap_or_else(|| self.0.seq.committed().max(out.view));
        let header = self.0.header(revision, self.0.raft_term());
        Ok(Response::new(pb::DeleteRangeResponse {
            header: Some(header),
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.into_iter().map(convert::kv).collect(),
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "Txn");
        self.0.not_a_learner()?;
        let credential = access::credential(&request);
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_txn(&r, self.0.max_txn_ops)?;
        self.0.check_quota(super::maintenance::txn_cost(&r)).await?;
        let caller = access::caller(&self.0, credential.as_ref()).await?;
        access::txn(&self.0, caller.as_ref(), &r).await?;
        let t = convert::txn_request(&r)?;
        let mut keys = Vec::new();
        txn_keys(&t, &mut keys);
        let checked = access::checked_at(&self.0, caller.as_ref());
        let out = match self.0.route(&keys) {
            Some(shard) => {
                self.0
                    .write_as(shard, m::RequestOp::Txn(t), checked)
                    .await?
            }
            None => {
                self.0
                    .write_across_as(m::RequestOp::Txn(t), keys, checked)
                    .await?
            }
        };
        let m::ResponseOp::Txn(t) = out.response else {
            return Err(Status::internal("txn answered with another op"));
        };
        if access::txn_reads_only(&r) {
            access::still_current(&self.0, caller.as_ref())?;
        }
        let revision = out
            .revision
            .unwrap_or_else(|| self.0.seq.committed().max(out.view));
        let header = self.0.header(revision, self.0.raft_term());
        Ok(Response::new(convert::txn_response(
            t,
            &header,
            out.revision.is_some(),
        )))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "Compact");
        self.0.not_a_learner()?;
        // A token, if sent, must be valid (etcd checks no permission).
        super::access::caller_of(&self.0, &request).await?;
        let r = request.into_inner();
        self.0.compact(r.revision).await?;
        let header = self.0.header(self.0.seq.committed(), self.0.raft_term());
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header),
        }))
    }
}
