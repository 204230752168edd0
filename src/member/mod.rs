//! The member: the node itself as the front threads see it — its shard
//! cores (by handle), the sequencer and committed prefix C, the watch hub,
//! alarms and the fatal latch — and what it does with a request once the API
//! edge has validated and converted it: route it to the shard that owns its
//! key (`crate::shard::route`), or fan it out for a range; answer once C
//! covers what it wrote or saw; coordinate writes over several shards
//! ([`cross`]).
//!
//! Runs on the tokio front runtime. Its errors are etcd's (`EtcdError` from
//! the API's error table, a leaf module), as gRPC statuses.

pub mod alarms;
pub mod auth;
mod cross;
pub mod leader;
pub mod lease;
pub mod lease_expiry;
pub mod membership;
pub mod peers;
pub mod rtt;
mod snapshot;

use crate::api::EtcdError;
use crate::mvcc::txn as m;
use crate::sequencer::SharedSequencer;
use crate::shard::{ShardHandle, ShardMsg, ShardStatus, WriteOutcome};
use cairn_proto::etcdserverpb as pb;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

/// A write this member did not run: it does not stamp (see
/// [`Member::write`]).
struct Unstamped;

/// The etcd API version cairn speaks (what `Status.version` reports).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// A running member, shared by the front threads.
/// (Its name and URLs are in the meta group: see `ClusterService`.)
pub struct Member {
    pub member_id: u64,
    /// The cluster's id (0 until a member that joined learned it).
    pub cluster_id: std::sync::atomic::AtomicU64,
    /// Whether the member serves clients yet: from its start, unless it
    /// is joining a running cluster; then once it has learned the
    /// cluster's id and applied its own addition (so it never answers
    /// with cluster id 0, or as a voter while it is a learner), as etcd
    /// serves a joining member's clients only once it is ready. Only ever
    /// goes from false to true.
    pub joined: tokio::sync::watch::Sender<bool>,
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
    pub metrics: crate::api::rpc_metrics::RpcMetrics,
    /// Held by a cross-shard write (and compaction): one at a time.
    pub cross: tokio::sync::Mutex<()>,
    /// `--quota-backend-bytes` (0 replaced by etcd's default).
    pub quota_bytes: u64,
    pub alarms: Arc<crate::raft::alarms::AlarmView>,
    pub auth: auth::Auth,
    /// Round trips to the other members (`etcd_network_peer_round_trip_time_seconds`).
    pub peer_rtts: rtt::PeerRtts,
    /// Set when the member cannot go on (see `crate::fatal`).
    pub fatal: Arc<crate::fatal::Fatal>,
    /// The other members, and this member's groups' leadership.
    pub peers: peers::Peers,
    /// Writes whose proposal failed (a leader change, a stopped shard):
    /// etcd_server_proposals_failed_total.
    pub proposals_failed: std::sync::atomic::AtomicU64,
    pub leases: lease::Leases,
}

impl Member {
    pub fn header(&self, revision: i64, raft_term: u64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.member_id,
            revision,
            raft_term,
        }
    }

    pub fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.status());
        }
        Ok(())
    }

    /// The shards a request touches: None = all of them.
    pub fn route<K: AsRef<[u8]>, E: AsRef<[u8]>>(&self, keys: &[(K, E)]) -> Option<usize> {
        let owners = crate::shard::route::shards_touched(keys, self.shards.len());
        match owners.len() {
            0 | 1 => owners.first().copied().or(Some(0)),
            _ => None,
        }
    }

    pub async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.shards[shard].send(make(tx)).await?;
        rx.await.map_err(|_| EtcdError::Stopped.status())
    }

    /// Runs a write on one shard (on the write leader: forwarded there if
    /// this member does not stamp) and waits until C covers it.
    pub async fn write(&self, shard: usize, op: m::RequestOp) -> Result<WriteOutcome, Status> {
        self.write_as(shard, op, None).await
    }

    /// [`Member::write`] of a client's request whose rights were checked
    /// against auth store revision `checked` (None: not a client's; 0:
    /// checked with auth off):
    /// the write leader refuses it (`revision of auth store is old`) if
    /// its store has moved past that, as etcd checks at apply.
    pub async fn write_as(
        &self,
        shard: usize,
        op: m::RequestOp,
        checked: Option<u64>,
    ) -> Result<WriteOutcome, Status> {
        let deadline = tokio::time::Instant::now() + peers::FORWARD_TTL;
        loop {
            if let peers::Route::To(leader) = self.write_route().await? {
                let fwd = peers::Forward::Write {
                    shard: Some(shard),
                    op,
                    touched: Vec::new(),
                    checked,
                };
                return self.forward(leader, fwd).await?.ok_or_else(|| {
                    Status::internal("a forwarded write came back without outcome")
                });
            }
            self.auth_current(checked)?;
            match self.write_here(shard, op.clone(), deadline).await {
                // This member stopped stamping between routing and the
                // shard: nothing was done; route it again.
                Err(Unstamped) if tokio::time::Instant::now() < deadline => continue,
                Err(Unstamped) => return Err(EtcdError::LeaderChanged.status()),
                Ok(answer) => return answer,
            }
        }
    }

    /// Runs a write on one shard of this member and waits until C covers
    /// it; `Err(Unstamped)` if this member does not stamp (nothing done).
    /// While it stamps, a shard that refuses (its leadership changing
    /// under it) is asked again until `deadline`.
    async fn write_here(
        &self,
        shard: usize,
        op: m::RequestOp,
        deadline: tokio::time::Instant,
    ) -> Result<Result<WriteOutcome, Status>, Unstamped> {
        loop {
            if self.fatal.is_latched() {
                return Ok(Err(EtcdError::Stopped.status()));
            }
            let asked = self
                .ask(shard, |reply| ShardMsg::Write {
                    op: op.clone(),
                    reply,
                })
                .await;
            let outcome = match asked {
                Err(status) => return Ok(Err(status)),
                Ok(Err(crate::shard::ShardError::NotLeader)) => {
                    if !self.seq.leading() {
                        return Err(Unstamped);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Err(EtcdError::LeaderChanged.status()));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                Ok(Err(e)) => {
                    if matches!(
                        e,
                        crate::shard::ShardError::LeaderChanged | crate::shard::ShardError::Stopped
                    ) {
                        self.proposals_failed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Err(e.into()));
                }
                Ok(Ok(outcome)) => outcome,
            };
            self.seq.wait_committed(outcome.view).await;
            return Ok(self.unchanged_is_current(outcome).await);
        }
    }

    /// A request that changed nothing (a read-only txn, a compare that
    /// failed, a delete of nothing) answers from this member's state: in a
    /// cluster that is linearizable only if this member still leads once
    /// it has evaluated it (as a ReadIndex read), and its answer then names
    /// the confirmed C, which covers every write acknowledged before it was
    /// asked, wherever it was acknowledged (and a member that forwarded it
    /// waits until its own C covers that too).
    async fn unchanged_is_current(
        &self,
        mut outcome: WriteOutcome,
    ) -> Result<WriteOutcome, Status> {
        if outcome.revision.is_none() && self.peers.clustered() {
            let c = self.confirmed_c().await?;
            outcome.view = outcome.view.max(c);
        }
        Ok(outcome)
    }

    /// Before a linearizable read (and its permission check) in a cluster:
    /// waits until this member's C covers the write leader's C at the time
    /// of the call, and its auth state the leader's then (see
    /// [`Member::read_index`]), as etcd checks and serves a read after its
    /// read index.
    pub async fn linearize(&self) -> Result<(), Status> {
        if !self.peers.clustered() {
            return Ok(());
        }
        let index = self.read_index().await?;
        let caught_up = async {
            self.seq.wait_committed(index.c).await;
            self.auth.view.applied_to(index.auth).await;
        };
        tokio::time::timeout(peers::FORWARD_TTL, caught_up)
            .await
            .map_err(|_| EtcdError::Timeout.status())
    }

    /// This member's auth store holds every change acknowledged before the
    /// call, wherever it was made (for the auth store's own reads).
    pub async fn auth_caught_up(&self) -> Result<(), Status> {
        if !self.peers.clustered() {
            return Ok(());
        }
        let index = self.read_index().await?;
        tokio::time::timeout(peers::FORWARD_TTL, self.auth.view.applied_to(index.auth))
            .await
            .map_err(|_| EtcdError::Timeout.status())
    }

    /// A range at C (or at the requested revision), merged over the shards.
    /// A linearizable one is [`Member::linearize`]d first by the caller.
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
    ///
    /// As etcd's HashKV: a revision at or below the compaction point is
    /// compacted; a negative one names no revision (etcd hashes the empty
    /// range of revisions (compaction, revision]), so its hash is that of
    /// an empty store.
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
            // A shard holding no key hashes to that of an empty hasher.
            let h = if revision < 0 {
                crc32fast::hash(&[])
            } else {
                h
            };
            combined.update(&h.to_le_bytes());
            compacted = comp;
        }
        if revision > 0 && revision <= compacted {
            return Err(EtcdError::Compacted.status());
        }
        Ok((combined.finalize(), compacted, at))
    }

    /// Compacts every shard at `revision` (at most C, above the last
    /// compaction), on the write leader.
    pub async fn compact(&self, revision: i64) -> Result<(), Status> {
        if let peers::Route::To(leader) = self.write_route().await? {
            return self
                .forward(leader, peers::Forward::Compact { revision })
                .await
                .map(|_| ());
        }
        self.compact_here(revision).await
    }

    async fn compact_here(&self, revision: i64) -> Result<(), Status> {
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

    /// The cluster's id (0 until a member that joined learned it).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The write leader (the meta group's leader) as this member knows it.
    /// None once it has not known the leader alive for two election
    /// timeouts (etcd's followers drop a silent leader at an election
    /// timeout; its leader steps down when a quorum stops answering).
    pub fn leader(&self) -> Option<u64> {
        if self.peers.clustered() {
            let within = std::time::Duration::from_millis(2 * self.peers.timing.election_ms);
            self.peers.board.live_meta_leader(within)
        } else {
            Some(self.member_id)
        }
    }

    /// Writes `command` in the meta group (this member leads it).
    pub async fn meta_write(
        &self,
        command: crate::raft::meta::MetaCommand,
    ) -> Result<crate::raft::meta::MetaReply, Status> {
        use crate::shard::peer::{Group, GroupCtl};
        self.peers
            .ask(0, Group::Meta, |reply| GroupCtl::MetaWrite {
                command,
                reply,
            })
            .await
            .map_err(|_| EtcdError::Stopped.status())?
            .map_err(|_| EtcdError::LeaderChanged.status())
    }

    /// The highest Raft term any shard reports.
    pub fn raft_term(&self) -> u64 {
        self.raft_term.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Events read back from the shards' histories, per shard and call.
const HISTORY_EVENTS_MAX: usize = 4096;

impl Member {
    /// The events of the range `key`..`range_end` (`end`: the same range
    /// end, parsed) from revision `from` to at most `c`, read from the
    /// shards' histories (for a watcher that fell behind the hub): a
    /// bounded piece, in revision order (keys in order within one), and
    /// the revision it reaches (every event of the range up to it is in).
    /// `Err(Some(compaction point))` if a shard compacted past `from`,
    /// `Err(None)` if a shard is gone (the member is stopping).
    pub async fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        end: &crate::mvcc::RangeEnd,
        from: i64,
        c: i64,
    ) -> Result<(Vec<crate::mvcc::Event>, i64), Option<i64>> {
        let shards = crate::shard::route::shards_touched(&[(key, range_end)], self.shards.len());
        let mut events = Vec::new();
        let mut reached = c;
        for shard in shards {
            let (key, end) = (key.to_vec(), end.clone());
            let r = self
                .ask(shard, |reply| ShardMsg::Events {
                    key,
                    end,
                    from,
                    to: c,
                    limit: HISTORY_EVENTS_MAX,
                    reply,
                })
                .await
                .map_err(|_| None)?;
            let (evs, upto) = r.map_err(Some)?;
            reached = reached.min(upto);
            events.extend(evs);
        }
        events.retain(|e| e.kv.mod_revision <= reached);
        events.sort_by(|a, b| (a.kv.mod_revision, &a.kv.key).cmp(&(b.kv.mod_revision, &b.kv.key)));
        Ok((events, reached))
    }
}
