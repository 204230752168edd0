//! Expiry: the write leader's loop that revokes expired leases, a round
//! at a time in batches (see [`Member::revoke_batch`]), and the cross-shard
//! txn that deletes a lease's keys. The rest of the lessor's calls are in
//! `super::lease`.

use super::Member;
use crate::api::EtcdError;
use crate::lease::EXPIRY_TICK;
use crate::mvcc::txn as m;
use crate::raft::meta::{MetaCommand, MetaReply};
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// Most leases one expiry round revokes (etcd: `leaseRevokeRate / 2` per
/// 500 ms).
const EXPIRED_PER_ROUND: usize = crate::lease::LEASE_REVOKE_RATE / 2;

impl Member {
    /// Revokes the expired leases `ids` (each marked as being revoked) as
    /// one batch: fenced, out of the table in one meta entry, then their
    /// keys deleted, each lease's at a revision of its own — by one write
    /// each for leases whose keys live on one shard (the shards batch
    /// them), in one cross-shard round for the others (etcd's pace is
    /// 1,000 revokes a second; one round trip per lease would not keep it).
    pub(super) async fn revoke_batch(
        self: &Arc<Self>,
        ids: &[i64],
    ) -> Vec<(i64, Result<Option<i64>, Status>)> {
        let mut results = Vec::with_capacity(ids.len());
        let mut fenced = Vec::with_capacity(ids.len());
        for &id in ids {
            if self.leases.view.fence(&[id]).is_ok() {
                fenced.push(id);
            } else {
                // Not in the table (any more): nothing to keep a deadline for.
                self.leases.lessor().remove(id);
                results.push((id, Err(EtcdError::LeaseNotFound.status())));
            }
        }
        if fenced.is_empty() {
            return results;
        }
        let tabled = match self
            .meta_write(MetaCommand::Revoke {
                ids: fenced.clone(),
            })
            .await
        {
            Ok(MetaReply::Done) => Ok(()),
            Ok(_) => Err(EtcdError::LeaseNotFound.status()),
            Err(e) => Err(e),
        };
        if let Err(e) = tabled {
            results.extend(fenced.into_iter().map(|id| (id, Err(e.clone()))));
            return results;
        }
        let mut single = Vec::new();
        let (mut across, mut across_ids) = (Vec::new(), Vec::new());
        for id in fenced {
            self.leases.lessor().remove(id);
            match self.lease_keys_by_shard(id).await {
                Err(e) => results.push((id, Err(e))),
                Ok(found) => match &found[..] {
                    [] => results.push((id, Ok(None))),
                    [(shard, _)] => single.push((id, *shard)),
                    _ => {
                        across.push(lease_delete_txn(id, found));
                        across_ids.push(id);
                    }
                },
            }
        }
        let singles = single.into_iter().map(|(id, shard)| async move {
            let r = self
                .write(shard, m::RequestOp::LeaseDeletes { lease: id })
                .await;
            (id, r.map(|o| o.revision))
        });
        results.extend(futures::future::join_all(singles).await);
        if across.is_empty() {
            return results;
        }
        match self.write_across_batch(across).await {
            Err(e) => results.extend(across_ids.into_iter().map(|id| (id, Err(e.clone())))),
            Ok(outcomes) => {
                for (id, outcome) in across_ids.into_iter().zip(outcomes) {
                    let r = match outcome {
                        Ok(o) if txn_succeeded(&o) => Ok(o.revision),
                        // A key moved meanwhile: the lease's own way, which
                        // gathers again.
                        Ok(_) => self.delete_lease_keys(id).await,
                        Err(e) => Err(e),
                    };
                    results.push((id, r));
                }
            }
        }
        results
    }
}

/// The cross-shard txn that deletes the keys `found` (per shard) if they
/// all still carry lease `id`, and the keys it touches.
pub(super) fn lease_delete_txn(id: i64, found: Vec<(usize, Vec<Vec<u8>>)>) -> super::cross::Across {
    let keys: Vec<Vec<u8>> = found.into_iter().flat_map(|(_, k)| k).collect();
    let touched = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    let txn = m::TxnRequest {
        compare: keys
            .iter()
            .map(|k| m::Compare {
                result: m::CompareResult::Equal,
                target: m::CompareTarget::Lease(id),
                key: k.clone(),
                range_end: Vec::new(),
            })
            .collect(),
        success: keys
            .iter()
            .map(|k| {
                m::RequestOp::DeleteRange(m::DeleteRangeRequest {
                    key: k.clone(),
                    range_end: Vec::new(),
                    prev_kv: false,
                })
            })
            .collect(),
        failure: Vec::new(),
    };
    (m::RequestOp::Txn(txn), touched)
}

pub(super) fn txn_succeeded(outcome: &crate::shard::WriteOutcome) -> bool {
    matches!(&outcome.response, m::ResponseOp::Txn(t) if t.succeeded)
}

/// Revokes expired leases while the member runs and stamps (a single
/// member, or a cluster's write leader): at most
/// [`EXPIRED_PER_ROUND`] every [`EXPIRY_TICK`], as etcd. Ends when the
/// member starts to stop (`stop`): a member draining its clients revokes
/// nothing more, as etcd stops its lessor first.
pub async fn expire(member: Arc<Member>, mut stop: tokio::sync::broadcast::Receiver<()>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.recv() => return,
        }
        if member.fatal.is_latched() {
            return;
        }
        // A follower's lessor is empty (demoted); checked for clarity.
        if !member.seq.leading() {
            continue;
        }
        let expired = member
            .leases
            .lessor()
            .expired(Instant::now(), EXPIRED_PER_ROUND);
        // (A lease a client is revoking right now is left to that revoke.)
        let mine: Vec<i64> = expired
            .into_iter()
            .filter(|id| member.leases.start_revoke(*id))
            .collect();
        for (id, r) in member.revoke_batch(&mine).await {
            member.leases.end_revoke(id);
            if let Err(e) = r {
                // Offered again after the lessor's retry interval.
                if e.code() != tonic::Code::NotFound {
                    eprintln!("cairn: revoking expired lease {id:x}: {}", e.message());
                }
            }
        }
    }
}
