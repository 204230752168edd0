//! The Maintenance service, alarms and the space quota.
//!
//! - `Status`: version, db size, leader, Raft index/term, alarms as errors.
//! - `Hash`/`HashKV`: cairn's own hash of the live keys at a revision (equal
//!   states hash equally; the values differ from etcd's, which hashes its
//!   bbolt file (`Hash`) or every revision kept since the last compaction
//!   (`HashKV`), so a compaction changes etcd's HashKV and not cairn's).
//! - `Alarm`: GET, ACTIVATE and DEACTIVATE as etcd 3.4 (no header; exact
//!   (member, type) pairs), kept durably in the data dir (`alarms`, one
//!   `member_id alarm` line each). In a cluster they are still each
//!   member's own, not replicated as etcd's (README).
//! - Space quota: the store's size ([`crate::mvcc::Store::bytes`], every
//!   version not compacted away) is what `Status.dbSize` reports and
//!   `--quota-backend-bytes` limits (0: etcd's default, 2 GiB). A put or a
//!   txn that would take the size to the quota raises the NOSPACE alarm and
//!   fails with etcd's "database space exceeded" (a txn without puts too,
//!   while the size is at the quota); while NOSPACE is raised, every put and
//!   txn with a put fails the same way; reads and DeleteRange work. Compact,
//!   then `etcdctl alarm disarm`, as with etcd.
//! - `Defragment`: cairn's store is in memory and compaction frees its space
//!   at once; defragment makes every shard write a fresh snapshot so the WAL
//!   behind it is reclaimed on disk.
//! - `Snapshot`: etcd 3.4's own snapshot file (a bbolt database with etcd's
//!   buckets, see `crate::member::snapshot`) of every key's history at the
//!   committed revision, streamed as etcd streams its file: 32 KiB chunks of
//!   the database, then its SHA-256 in a message of its own.
//! - `MoveLeader`: a lone member leads every shard; only itself is a target.
//!   In a cluster the write leadership moves to a voter.
//! - A learner serves `Status` and `Snapshot` only (etcd 3.4's interceptors
//!   let those through): the rest answer `etcdserver: rpc not supported for
//!   learner`.
//!
//! Response shapes (which fields are set, headers or none) are etcd 3.4.23's,
//! checked side by side with a real etcd in `tests/server_shapes.rs` and, on
//! every member of a cluster, `tests/server_shapes_cluster.rs`.

use crate::api::EtcdError;
use crate::member::{Member, ETCD_API_VERSION};
use crate::shard::ShardMsg;
use cairn_proto::etcdserverpb as pb;
use pb::alarm_request::AlarmAction;
use pb::AlarmType;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Snapshot stream chunk size (as etcd's).
const SNAPSHOT_CHUNK_BYTES: usize = 32 << 10;

/// What the puts of a request add to the store (see [`Member::check_quota`]).
pub fn put_cost(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + crate::mvcc::store::VERSION_OVERHEAD_BYTES
}

/// The puts of a txn, nested ones included (both branches: either may run).
pub fn txn_cost(t: &pb::TxnRequest) -> u64 {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .map(|op| match &op.request {
            Some(Request::RequestPut(p)) => put_cost(&p.key, &p.value),
            Some(Request::RequestTxn(t)) => txn_cost(t),
            _ => 0,
        })
        .sum()
}

/// An alarm as etcd 3.4 writes it in `Status.errors`: gogo protobuf's
/// compact text form of the `AlarmMember`, each field followed by a space
/// and zero fields left out (`memberID:5 alarm:NOSPACE `, `alarm:NOSPACE `
/// for member 0, `memberID:5 ` for NONE, a number for a type it has no
/// name for).
fn alarm_text(member_id: u64, alarm: i32) -> String {
    let mut text = String::new();
    if member_id != 0 {
        text.push_str(&format!("memberID:{member_id} "));
    }
    if alarm != 0 {
        match AlarmType::try_from(alarm) {
            Ok(t) => text.push_str(&format!("alarm:{} ", t.as_str_name())),
            Err(_) => text.push_str(&format!("alarm:{alarm} ")),
        }
    }
    text
}

/// See the module docs.
pub struct MaintenanceService(pub Arc<Member>);

type SnapshotStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    /// As etcd 3.4: no header; GET lists the alarms of the requested type
    /// (NONE: every alarm); ACTIVATE records any (member, type) pair as
    /// asked — member 0 and type NONE included — and answers it; DEACTIVATE
    /// removes exactly that pair and answers it if it was raised (clients
    /// such as `etcdctl alarm disarm` list the alarms and disarm each).
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        self.0.not_a_learner()?;
        // A token, if sent, must be valid (etcd checks no permission).
        super::access::valid_token_unmapped(&self.0, &request).await?;
        let r = request.into_inner();
        let m = &self.0;
        let pair = (r.member_id, r.alarm);
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => m
                .alarms
                .list()
                .into_iter()
                .filter(|(_, alarm)| r.alarm == AlarmType::None as i32 || *alarm == r.alarm)
                .collect(),
            Ok(AlarmAction::Activate) => {
                m.change_alarm(pair, true).await?;
                vec![pair]
            }
            Ok(AlarmAction::Deactivate) => {
                if m.change_alarm(pair, false).await? {
                    vec![pair]
                } else {
                    Vec::new()
                }
            }
            // etcd 3.4.23 dereferences a nil response and crashes here.
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "cairn: unknown alarm action {}",
                    r.action
                )))
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header: None,
            alarms: alarms
                .into_iter()
                .map(|(member_id, alarm)| pb::AlarmMember { member_id, alarm })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = &self.0;
        let mut term = 0;
        let (mut index, mut applied) = (0u64, 0u64);
        for shard in 0..m.shards.len() {
            let s = m.status_of(shard).await?;
            term = term.max(s.raft_term);
            index += s.raft_committed_index;
            applied += s.raft_applied_index;
        }
        let size = m.db_size() as i64;
        let errors = m
            .alarms
            .list()
            .into_iter()
            .map(|(id, a)| alarm_text(id, a))
            .collect();
        Ok(Response::new(pb::StatusResponse {
            header: Some(m.header(m.seq.committed(), term)),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: m.leader().unwrap_or(0),
            raft_index: index,
            raft_term: term,
            raft_applied_index: applied,
            errors,
            db_size_in_use: size,
            is_learner: m.is_learner(),
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_maintenance(&self.0, &request).await?;
        let m = &self.0;
        for shard in 0..m.shards.len() {
            m.ask(shard, |reply| ShardMsg::Snapshot { reply }).await??;
        }
        // etcd 3.4 answers Defragment without a header (client libraries
        // check for that).
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    /// cairn's hash of the whole key-value state at C (etcd hashes its
    /// backend file; the value differs from etcd's, equal states hash equally).
    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_maintenance(&self.0, &request).await?;
        let (hash, _, revision) = self.0.hash_kv(0).await?;
        let header = self.0.header(revision, self.0.raft_term());
        Ok(Response::new(pb::HashResponse {
            header: Some(header),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.0.not_a_learner()?;
        super::access::admin_maintenance(&self.0, &request).await?;
        let (hash, compact_revision, _) = self.0.hash_kv(request.into_inner().revision).await?;
        let header = self.0.header(self.0.seq.committed(), self.0.raft_term());
        Ok(Response::new(pb::HashKvResponse {
            header: Some(header),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streamed as etcd 3.4 streams its file: 32 KiB chunks of the data
    /// (the last one shorter), each without a header and with the bytes of
    /// data still to come, then one last message with the SHA-256 of the
    /// data (`remaining_bytes` 0 again).
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        super::access::admin_maintenance(&self.0, &request).await?;
        let mut data = self.0.etcd_snapshot().await?;
        let digest = data.split_off(data.len() - 32);
        let total = data.len();
        let mut messages: Vec<Result<pb::SnapshotResponse, Status>> = data
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header: None,
                    remaining_bytes: (total - *sent) as u64,
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        messages.push(Ok(pb::SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: digest,
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }

    /// As etcd's: only the leader hands its leadership over, to a voter.
    /// A lone member answers a transfer to itself at once (empty response,
    /// no header) and refuses any other target, which is not a member. In
    /// a cluster the meta group's leadership moves (the data groups follow
    /// it, see `crate::member::leader`), and the answer comes once the
    /// target leads it. Every answer is empty (no header), as etcd's.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.0.not_a_learner()?;
        let m = &self.0;
        let target = request.into_inner().target_id;
        if !m.peers.clustered() {
            if target != m.member_id {
                return Err(EtcdError::BadLeaderTransferee.status());
            }
            return Ok(Response::new(pb::MoveLeaderResponse { header: None }));
        }
        if m.leader() != Some(m.member_id) {
            return Err(EtcdError::NotLeader.status());
        }
        if target == m.member_id {
            return Ok(Response::new(pb::MoveLeaderResponse { header: None }));
        }
        if !m.peers.voter_ids().contains(&target) {
            return Err(EtcdError::BadLeaderTransferee.status());
        }
        m.peers.tell(
            0,
            crate::shard::peer::Group::Meta,
            crate::shard::peer::GroupCtl::Transfer(target),
        );
        let mut rx = m.peers.board.subscribe();
        let moved = tokio::time::timeout(crate::member::peers::FORWARD_TTL, async {
            while m.peers.board.meta_leader() != Some(target) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if moved.is_err() {
            return Err(EtcdError::Timeout.status());
        }
        // etcd 3.4 answers an empty response, a move included.
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }
}
