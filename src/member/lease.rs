//! Leases (etcd 3.4's lessor) on the member that stamps.
//!
//! - The table (which leases exist, their TTLs) is in the meta group:
//!   `Grant` and `Revoke` entries. Every member mirrors what it applied in
//!   its [`LeaseView`], which the shards consult when a put names a lease.
//! - Which keys a lease holds is not in the table: each key's version names
//!   its lease and each shard indexes its keys by lease (as etcd rebuilds it
//!   from its keys at start).
//! - Deadlines are kept by this member's [`Lessor`] while it stamps, never
//!   written to a log (etcd 3.4 without checkpoints): when a leadership
//!   starts, every lease gets its whole TTL again plus an election timeout.
//! - A revoke (asked, or an expiry) deletes every key of the lease at one
//!   revision: on one shard by a `LeaseDeletes` write that reads the
//!   shard's index when it is evaluated, across shards by one cross-shard
//!   txn whose compares say the keys still carry the lease (retried if one
//!   moved meanwhile).
//!
//! The race the design leaves open (a put attaching a key to lease L while L
//! is revoked) is closed by a fence, with this invariant: once a revoke has
//! fenced L, no evaluation on any shard accepts a put with L; and a put
//! evaluated before the fence is applied to its shard's store before that
//! shard answers which keys carry L, because a shard evaluates, stamps and
//! applies a batch of writes within one message, and answers the next
//! message only after (a latched shard answers only after its cross-shard
//! part is applied). So the keys the revoke gathers are all the keys that
//! will ever carry L, and the revoke deletes them all.
//!
//! In a cluster every lease RPC runs on the write leader (etcd's followers
//! forward keepalives and TimeToLive to theirs): a member that does not
//! stamp forwards it as a [`LeaseCall`]. Only the write leader's lessor
//! holds deadlines and expires leases; it gets them when its failover
//! makes it the write leader, after its meta group applied every entry
//! before its term (so its table is the cluster's), and drops them when
//! that leadership ends. A revoke that ended half way under an old leader
//! (table done, keys not) is finished by the next one: each leadership
//! starts with a sweep of keys whose lease is gone. The fences are the
//! leader's alone: only the write leader's shards evaluate puts.

use super::lease_expiry::{lease_delete_txn, txn_succeeded};
use super::peers::Route;
use super::Member;
use crate::api::EtcdError;
use crate::lease::{min_lease_ttl, IdGen, LeaseView, Lessor, MAX_LEASE_TTL};
use crate::mvcc::txn as m;
use crate::raft::meta::{MetaCommand, MetaReply};
use crate::shard::{RaftTiming, ShardMsg};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::Status;

/// How often a revoke whose cross-shard delete found a key moved gathers
/// the keys again before giving up (the lease is gone from the table by
/// then; what is left is swept when a leadership starts).
const DELETE_TRIES: usize = 20;

/// The member's lease state.
pub struct Leases {
    pub view: Arc<LeaseView>,
    lessor: Mutex<Lessor>,
    ids: IdGen,
    /// etcd's minimum TTL for this member's Raft timing.
    pub min_ttl: i64,
    election: Duration,
    /// Leases being revoked: a grant of the same id, a keepalive and a
    /// TimeToLive wait until the revoke is done.
    revoking: Mutex<HashSet<i64>>,
    revoked: tokio::sync::Notify,
}

/// A lease's TimeToLive.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimeToLive {
    /// Remaining seconds (truncated), -1 if the lease is unknown.
    pub ttl: i64,
    pub granted: i64,
    pub keys: Vec<Vec<u8>>,
}

impl Leases {
    pub fn new(view: Arc<LeaseView>, member_id: u64, timing: RaftTiming) -> Self {
        let election = Duration::from_millis(timing.election_ms);
        Self {
            view,
            lessor: Mutex::new(Lessor::new(election)),
            ids: IdGen::new(member_id, std::time::SystemTime::now()),
            min_ttl: min_lease_ttl(timing.heartbeat_ms, timing.election_ms),
            election,
            revoking: Mutex::default(),
            revoked: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn lessor(&self) -> MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn revoking(&self) -> MutexGuard<'_, HashSet<i64>> {
        self.revoking.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` as being revoked; false if it already is.
    pub(super) fn start_revoke(&self, id: i64) -> bool {
        self.revoking().insert(id)
    }

    pub(super) fn end_revoke(&self, id: i64) {
        self.revoking().remove(&id);
        self.view.unfence(&[id]);
        self.revoked.notify_waiters();
    }

    /// Waits until no revoke of `id` is under way.
    async fn settled(&self, id: i64) {
        loop {
            let notified = self.revoked.notified();
            if !self.revoking().contains(&id) {
                return;
            }
            notified.await;
        }
    }

    /// A leadership starts: every lease in the table gets its TTL plus an
    /// election timeout from now (etcd's Promote).
    pub fn promote(&self) {
        self.lessor().promote(
            self.view.leases().into_iter(),
            Instant::now(),
            self.election,
        );
    }

    /// The leadership ended: no deadlines here any more (etcd's Demote).
    /// Revokes under way end by themselves (their meta writes fail).
    pub fn demote(&self) {
        self.lessor().demote();
    }
}

/// A lease RPC, as a member that does not stamp forwards it to the write
/// leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum LeaseCall {
    Grant { id: i64, ttl: i64 },
    Revoke { id: i64 },
    Renew { id: i64 },
    TimeToLive { id: i64, keys: bool },
    List,
}

/// The write leader's answer to a [`LeaseCall`].
#[derive(Debug, Serialize, Deserialize)]
pub enum LeaseAnswer {
    Granted { id: i64, ttl: i64 },
    Revoked(Option<i64>),
    Renewed(i64),
    TimeToLive(TimeToLive),
    List(Vec<i64>),
}

fn unexpected(answer: LeaseAnswer) -> Status {
    Status::internal(format!("cairn: unexpected lease answer {answer:?}"))
}

impl Member {
    /// Runs `call` on the write leader: here, or forwarded.
    async fn lease_call(self: &Arc<Self>, call: LeaseCall) -> Result<LeaseAnswer, Status> {
        match self.write_route().await? {
            Route::Here => self.lease_call_here(call).await,
            Route::To(leader) => self.forward_lease(leader, call).await,
        }
    }

    /// Runs `call` on this member, which stamps (or did when it was
    /// routed).
    pub(super) async fn lease_call_here(
        self: &Arc<Self>,
        call: LeaseCall,
    ) -> Result<LeaseAnswer, Status> {
        Ok(match call {
            LeaseCall::Grant { id, ttl } => {
                let (id, ttl) = self.grant_here(id, ttl).await?;
                LeaseAnswer::Granted { id, ttl }
            }
            LeaseCall::Revoke { id } => LeaseAnswer::Revoked(self.revoke_here(id).await?),
            LeaseCall::Renew { id } => LeaseAnswer::Renewed(self.renew_here(id).await?),
            LeaseCall::TimeToLive { id, keys } => {
                LeaseAnswer::TimeToLive(self.time_to_live_here(id, keys).await?)
            }
            LeaseCall::List => LeaseAnswer::List(self.list_here()),
        })
    }

    /// LeaseGrant: the lease's id (chosen by the write leader if 0) and
    /// TTL (raised to the minimum).
    pub async fn lease_grant(self: &Arc<Self>, id: i64, ttl: i64) -> Result<(i64, i64), Status> {
        match self.lease_call(LeaseCall::Grant { id, ttl }).await? {
            LeaseAnswer::Granted { id, ttl } => Ok((id, ttl)),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseRevoke: the revision at which the lease's keys were deleted
    /// (None if it held none).
    pub async fn lease_revoke(self: &Arc<Self>, id: i64) -> Result<Option<i64>, Status> {
        match self.lease_call(LeaseCall::Revoke { id }).await? {
            LeaseAnswer::Revoked(revision) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseKeepAlive for one lease: its TTL, or 0 if it is unknown or
    /// expired.
    pub async fn lease_renew(self: &Arc<Self>, id: i64) -> Result<i64, Status> {
        match self.lease_call(LeaseCall::Renew { id }).await? {
            LeaseAnswer::Renewed(ttl) => Ok(ttl),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseTimeToLive.
    pub async fn lease_time_to_live(
        self: &Arc<Self>,
        id: i64,
        keys: bool,
    ) -> Result<TimeToLive, Status> {
        match self.lease_call(LeaseCall::TimeToLive { id, keys }).await? {
            LeaseAnswer::TimeToLive(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// LeaseLeases: every lease, the soonest to expire first.
    pub async fn lease_list(self: &Arc<Self>) -> Result<Vec<i64>, Status> {
        match self.lease_call(LeaseCall::List).await? {
            LeaseAnswer::List(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    async fn grant_here(self: &Arc<Self>, id: i64, ttl: i64) -> Result<(i64, i64), Status> {
        let leases = &self.leases;
        // etcd checks the quota first (its quota server wraps the lease
        // server), then the TTL, then the id.
        self.check_quota(crate::lease::LEASE_GRANT_COST).await?;
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.status());
        }
        let id = if id == 0 { leases.ids.next() } else { id };
        let ttl = ttl.max(leases.min_ttl);
        leases.settled(id).await;
        match self.meta_write(MetaCommand::Grant { id, ttl }).await? {
            MetaReply::Done => {}
            MetaReply::LeaseExists => return Err(EtcdError::LeaseExist.status()),
            MetaReply::LeaseNotFound | MetaReply::Unchanged => {
                return Err(EtcdError::LeaseNotFound.status())
            }
            other => {
                return Err(Status::internal(format!(
                    "a lease grant answered {other:?}"
                )))
            }
        }
        // (Unless a revoke of this id already went by: an expiry of a lease
        // no longer in the table would also drop it, see `revoke_started`.)
        if leases.view.in_table(id) {
            leases.lessor().grant(id, ttl, Instant::now());
        }
        Ok((id, ttl))
    }

    async fn revoke_here(self: &Arc<Self>, id: i64) -> Result<Option<i64>, Status> {
        let leases = &self.leases;
        if !leases.start_revoke(id) {
            // Another revoke of it is under way: once it is done, the
            // lease is not found.
            leases.settled(id).await;
            return Err(EtcdError::LeaseNotFound.status());
        }
        let r = self.revoke_started(id, true).await;
        leases.end_revoke(id);
        r
    }

    /// The revoke of `id`, marked as under way: fence, remove from the
    /// table (unless `in_table` is false: a sweep of keys whose lease is
    /// gone), delete its keys.
    async fn revoke_started(
        self: &Arc<Self>,
        id: i64,
        in_table: bool,
    ) -> Result<Option<i64>, Status> {
        if in_table {
            if self.leases.view.fence(&[id]).is_err() {
                // Not in the table (any more): nothing to keep a deadline for.
                self.leases.lessor().remove(id);
                return Err(EtcdError::LeaseNotFound.status());
            }
            // Failpoint `lease::revoke::fenced=return(MS)`: the revoke
            // waits MS ms once fenced (for the race test).
            #[cfg(feature = "failpoints")]
            if let Some(ms) = fail::eval("lease::revoke::fenced", |arg| {
                arg.and_then(|ms| ms.parse::<u64>().ok())
            })
            .flatten()
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match self
                .meta_write(MetaCommand::Revoke { ids: vec![id] })
                .await?
            {
                MetaReply::Done => {}
                _ => return Err(EtcdError::LeaseNotFound.status()),
            }
            self.leases.lessor().remove(id);
        }
        self.delete_lease_keys(id).await
    }

    /// Which keys carry lease `id`, per shard (only shards that hold some).
    pub(super) async fn lease_keys_by_shard(
        &self,
        id: i64,
    ) -> Result<Vec<(usize, Vec<Vec<u8>>)>, Status> {
        let mut found = Vec::new();
        for shard in 0..self.shards.len() {
            let keys = self
                .ask(shard, |reply| ShardMsg::LeaseKeys { lease: id, reply })
                .await?;
            if !keys.is_empty() {
                found.push((shard, keys));
            }
        }
        Ok(found)
    }

    /// Deletes every key that carries `id` at one revision (None: there
    /// were none). `id` is fenced or gone from the table: no key gets it
    /// any more.
    pub(super) async fn delete_lease_keys(
        self: &Arc<Self>,
        id: i64,
    ) -> Result<Option<i64>, Status> {
        for _ in 0..DELETE_TRIES {
            let found = self.lease_keys_by_shard(id).await?;
            match &found[..] {
                [] => return Ok(None),
                [(shard, _)] => {
                    let outcome = self
                        .write(*shard, m::RequestOp::LeaseDeletes { lease: id })
                        .await?;
                    return Ok(outcome.revision);
                }
                _ => {
                    let (op, touched) = lease_delete_txn(id, found);
                    let outcome = self.write_across(op, touched).await?;
                    if txn_succeeded(&outcome) {
                        return Ok(outcome.revision);
                    }
                    // A key moved to another lease or was deleted since
                    // they were gathered: gather again.
                }
            }
        }
        Err(Status::unavailable(format!(
            "cairn: the keys of lease {id:x} kept changing while it was revoked"
        )))
    }

    async fn renew_here(&self, id: i64) -> Result<i64, Status> {
        let leases = &self.leases;
        leases.settled(id).await;
        if !leases.view.exists(id) {
            return Ok(0);
        }
        let renewed = leases.lessor().renew(id, Instant::now());
        match renewed {
            Some(ttl) => Ok(ttl),
            None => {
                // Overdue: as etcd's, the answer (0) waits until the
                // expiry has revoked it (its keys are gone by then), or
                // this member stops leading; bounded by the lessor's
                // retry interval.
                let retry = leases.lessor().retry();
                let _ = tokio::time::timeout(retry, async {
                    loop {
                        let notified = leases.revoked.notified();
                        if !leases.view.in_table(id) || !self.seq.leading() {
                            return;
                        }
                        // (Leadership ends without a notice: looked at
                        // every election timeout.)
                        let _ = tokio::time::timeout(leases.election, notified).await;
                    }
                })
                .await;
                Ok(0)
            }
        }
    }

    async fn time_to_live_here(&self, id: i64, keys: bool) -> Result<TimeToLive, Status> {
        let leases = &self.leases;
        leases.settled(id).await;
        let (remaining, granted) = {
            let lessor = leases.lessor();
            (lessor.remaining(id, Instant::now()), lessor.ttl(id))
        };
        let (Some(ttl), Some(granted), true) = (remaining, granted, leases.view.in_table(id))
        else {
            return Ok(TimeToLive {
                ttl: -1,
                granted: 0,
                keys: Vec::new(),
            });
        };
        let keys = if keys {
            let mut all: Vec<Vec<u8>> = self
                .lease_keys_by_shard(id)
                .await?
                .into_iter()
                .flat_map(|(_, k)| k)
                .collect();
            all.sort();
            all
        } else {
            Vec::new()
        };
        Ok(TimeToLive { ttl, granted, keys })
    }

    fn list_here(&self) -> Vec<i64> {
        let listed = self.leases.lessor().by_expiry(Instant::now());
        listed.into_iter().map(|(id, _, _)| id).collect()
    }

    /// A single member starts to serve: every lease gets its TTL again,
    /// and keys whose lease is gone (a revoke that stopped between the
    /// table and the keys) are deleted.
    pub async fn lease_leadership_starts(self: &Arc<Self>) -> Result<(), Status> {
        // Asked first: shard 0 answers only once its loop runs, which is
        // after its meta group has replayed its log (`shard::run`), so the
        // view holds every granted lease when it is read below. (Read
        // before that, an empty table would make every leased key look
        // orphaned.)
        let in_use = self.leases_in_use().await?;
        self.leases.promote();
        self.sweep(in_use).await;
        Ok(())
    }

    /// The leases that keys carry, on every shard.
    async fn leases_in_use(&self) -> Result<HashSet<i64>, Status> {
        let mut in_use = HashSet::new();
        for shard in 0..self.shards.len() {
            in_use.extend(
                self.ask(shard, |reply| ShardMsg::LeasesInUse { reply })
                    .await?,
            );
        }
        Ok(in_use)
    }

    /// Deletes the keys whose lease is no longer in the table (a revoke
    /// that stopped between the table and the keys), as the write leader
    /// whose table is the cluster's: a single member once it replayed its
    /// log, a cluster's write leader after its failover.
    pub async fn sweep_orphaned_lease_keys(self: &Arc<Self>) -> Result<(), Status> {
        let in_use = self.leases_in_use().await?;
        self.sweep(in_use).await;
        Ok(())
    }

    /// Revokes the leases of `in_use` (carried by keys) that are not in
    /// the table: their keys go.
    async fn sweep(self: &Arc<Self>, in_use: HashSet<i64>) {
        let leases = &self.leases;
        for id in in_use {
            if leases.view.in_table(id) || !leases.start_revoke(id) {
                continue;
            }
            let r = self.revoke_started(id, false).await;
            leases.end_revoke(id);
            if let Err(e) = r {
                // The member serves anyway; the next start tries again.
                eprintln!(
                    "cairn: deleting the keys of revoked lease {id:x}: {}",
                    e.message()
                );
            }
        }
    }
}
