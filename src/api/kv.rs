//! The member as the front threads see it ([`Member`]), and the etcd gRPC
//! services on it: KV, Maintenance.Status, Cluster.MemberList.
//!
//! Runs on the tokio front runtime. A request is validated, converted, routed
//! to the shard that owns its key (`crc32(key) % shards`, stable across
//! restarts) or fanned out to all shards for a range, and answered once the
//! committed prefix C covers what it wrote or saw.

use super::convert;
use super::validate;
use super::EtcdError;
use crate::mvcc::txn as m;
use crate::sequencer::SharedSequencer;
use crate::shard::{ShardHandle, ShardMsg, ShardStatus, WriteOutcome};
use cairn_proto::etcdserverpb as pb;
use prost::Message;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// The etcd API version cairn speaks (what `Status.version` reports).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// A running member, shared by the front threads.
/// (Its name and URLs are in the meta group: see `ClusterService`.)
pub struct Member {
    pub member_id: u64,
    pub cluster_id: u64,
    pub shards: Vec<ShardHandle>,
    pub seq: Arc<SharedSequencer>,
    /// Events for watchers (see `crate::watch`).
    pub hub: Arc<crate::watch::WatchHub>,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    /// Bound on the changes of one log entry (`crate::shard::entry_bytes_max`).
    pub entry_bytes_max: usize,
    /// The highest Raft term any shard reports.
    pub raft_term: Arc<std::sync::atomic::AtomicU64>,
    pub metrics: super::http::RpcMetrics,
    /// Held by a cross-shard write (and compaction): one at a time.
    pub cross: tokio::sync::Mutex<()>,
    /// `--quota-backend-bytes` (0 replaced by etcd's default).
    pub quota_bytes: u64,
    pub alarms: super::maintenance::Alarms,
    /// Set when the member cannot go on (see `crate::fatal`).
    pub fatal: Arc<crate::fatal::Fatal>,
}

/// Which shard owns `key`.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    (crc32fast::hash(key) as usize) % shards
}

impl Member {
    pub fn header(&self, revision: i64, raft_term: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term,
        }
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.status());
        }
        Ok(())
    }

    /// The shards a request touches: None = all of them.
    fn route<K: AsRef<[u8]>, E: AsRef<[u8]>>(&self, keys: &[(K, E)]) -> Option<usize> {
        let owners = super::cross::shards_touched(keys, self.shards.len());
        match owners.len() {
            0 | 1 => owners.first().copied().or(Some(0)),
            _ => None,
        }
    }

    pub(crate) async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.shards[shard].send(make(tx)).await?;
        rx.await.map_err(|_| EtcdError::Stopped.status())
    }

    /// Runs a write on one shard and waits until C covers it.
    async fn write(&self, shard: usize, op: m::RequestOp) -> Result<WriteOutcome, Status> {
        if self.fatal.is_latched() {
            return Err(EtcdError::Stopped.status());
        }
        let outcome = self
            .ask(shard, |reply| ShardMsg::Write { op, reply })
            .await??;
        self.seq.wait_committed(outcome.view).await;
        Ok(outcome)
    }

    /// A range at C (or at the requested revision), merged over the shards.
    pub async fn range(&self, req: m::RangeRequest) -> Result<(m::RangeResponse, i64), Status> {
        let c = self.seq.committed();
        if req.revision > c {
            return Err(EtcdError::FutureRev.status());
        }
        let at = if req.revision > 0 { req.revision } else { c };
        if let Some(shard) = self.route(&[(&req.key, &req.range_end)]) {
            let req = m::RangeRequest {
                revision: at,
                ..req
            };
            let r = self
                .ask(shard, |reply| ShardMsg::Range { req, reply })
                .await??;
            return Ok((r, c));
        }
        let mut shard_req = m::RangeRequest {
            revision: at,
            ..req.clone()
        };
        // Every shard returns its keys in key order (before sort and limit;
        // the per-shard `limit` suffices when the result is in key order).
        let key_order = req.sort_target == m::SortTarget::Key
            && matches!(req.sort_order, m::SortOrder::None | m::SortOrder::Ascend);
        shard_req.sort_order = m::SortOrder::None;
        shard_req.sort_target = m::SortTarget::Key;
        shard_req.keys_only = false;
        if key_order {
            // One more than asked, so that `more` is right after merging.
            shard_req.limit = req.limit.saturating_add(i64::from(req.limit > 0));
        } else {
            shard_req.limit = 0;
        }
        let mut kvs = Vec::new();
        let mut count = 0;
        for shard in 0..self.shards.len() {
            let r = self
                .ask(shard, |reply| ShardMsg::Range {
                    req: shard_req.clone(),
                    reply,
                })
                .await??;
            count += r.count;
            kvs.extend(r.kvs);
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((m::finish_range(kvs, count, &req), c))
    }

    /// The member's key-value hash at `revision` (0: at C): the shards'
    /// hashes, combined in shard order. Returns (hash, compaction point, revision).
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), Status> {
        let c = self.seq.committed();
        if revision > c {
            return Err(EtcdError::FutureRev.status());
        }
        let at = if revision > 0 { revision } else { c };
        let mut combined = crc32fast::Hasher::new();
        let mut compacted = 0;
        for shard in 0..self.shards.len() {
            let (h, comp) = self
                .ask(shard, |reply| ShardMsg::HashKv {
                    revision: at,
                    reply,
                })
                .await??;
            combined.update(&h.to_le_bytes());
            compacted = comp;
        }
        Ok((combined.finalize(), compacted, at))
    }

    /// Compacts every shard at `revision` (at most C, above the last
    /// compaction).
    pub async fn compact(&self, revision: i64) -> Result<(), Status> {
        if revision > self.seq.committed() {
            return Err(EtcdError::FutureRev.status());
        }
        // Not while a cross-shard request reads histories.
        let _cross = self.cross.lock().await;
        let compacted = self.status_of(0).await?.compacted;
        if revision <= compacted {
            return Err(EtcdError::Compacted.status());
        }
        for shard in 0..self.shards.len() {
            self.ask(shard, |reply| ShardMsg::Compact { revision, reply })
                .await??;
        }
        Ok(())
    }

    /// A shard's Raft and store figures.
    pub async fn status_of(&self, shard: usize) -> Result<ShardStatus, Status> {
        self.ask(shard, |reply| ShardMsg::Status { reply }).await
    }

    /// The highest Raft term any shard reports.
    pub(crate) fn raft_term(&self) -> u64 {
        self.raft_term.load(std::sync::atomic::Ordering::Relaxed)
    }
}

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
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_range(&r)?;
        let req = convert::range_request(&r)?;
        let (resp, c) = self.0.range(req).await?;
        let header = self.0.header(c, self.0.raft_term());
        Ok(Response::new(convert::range_response(resp, header)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let _timed = super::http::Timed::new(&self.0.metrics, "Put");
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_put(&r)?;
        self.0
            .check_quota(super::maintenance::put_cost(&r.key, &r.value))?;
        let shard = shard_of(&r.key, self.0.shards.len());
        let out = self
            .0
            .write(shard, m::RequestOp::Put(convert::put_request(&r)))
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
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_delete(&r)?;
        let op = m::RequestOp::DeleteRange(convert::delete_request(&r));
        let out = match self.0.route(&[(&r.key, &r.range_end)]) {
            Some(shard) => self.0.write(shard, op).await?,
            None => {
                let touched = vec![(r.key.clone(), r.range_end.clone())];
                self.0.write_across(op, touched).await?
            }
        };
        let m::ResponseOp::DeleteRange(d) = out.response else {
            return Err(Status::internal("delete answered with another op"));
        };
        let revision = out.revision.unwrap_or_else(|| self.0.seq.committed());
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
        let r = request.into_inner();
        self.0.check_size(r.encoded_len())?;
        validate::check_txn(&r, self.0.max_txn_ops)?;
        self.0.check_quota(super::maintenance::txn_cost(&r))?;
        let t = convert::txn_request(&r)?;
        let mut keys = Vec::new();
        txn_keys(&t, &mut keys);
        let out = match self.0.route(&keys) {
            Some(shard) => self.0.write(shard, m::RequestOp::Txn(t)).await?,
            None => self.0.write_across(m::RequestOp::Txn(t), keys).await?,
        };
        let m::ResponseOp::Txn(t) = out.response else {
            return Err(Status::internal("txn answered with another op"));
        };
        let revision = out.revision.unwrap_or_else(|| self.0.seq.committed());
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
        let r = request.into_inner();
        self.0.compact(r.revision).await?;
        let header = self.0.header(self.0.seq.committed(), self.0.raft_term());
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header),
        }))
    }
}

/// Cluster: `MemberList` is served; membership changes arrive with clusters.
pub struct ClusterService(pub Arc<Member>);

fn not_yet_cluster(rpc: &str) -> Status {
    Status::unimplemented(format!("cairn: Cluster.{rpc} is not implemented yet"))
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet_cluster("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet_cluster("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet_cluster("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let m = &self.0;
        // The meta group (on shard 0) holds the membership.
        let members = m
            .ask(0, |reply| ShardMsg::Members { reply })
            .await?
            .ok_or_else(|| Status::internal("shard 0 runs no meta group"))?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(m.header(m.seq.committed(), m.raft_term())),
            members: members
                .into_iter()
                .map(|r| pb::Member {
                    id: r.id,
                    name: r.name,
                    peer_ur_ls: r.peer_urls,
                    client_ur_ls: r.client_urls,
                    is_learner: false,
                })
                .collect(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet_cluster("MemberPromote"))
    }
}
