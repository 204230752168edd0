//! Requests whose keys live on several shards (DESIGN §2.1 point 4): a
//! `DeleteRange` over a range, a `Txn` over keys of different shards.
//!
//! One at a time per member (they are rare; Kubernetes sends single-key
//! txns). The coordinator, on the front runtime:
//! 1. latches every shard the request touches, in shard order (a latched shard
//!    stamps nothing else, so no revision lands on a touched key meanwhile);
//! 2. waits until C covers every revision stamped so far, so the touched
//!    shards hold only committed state, at view v;
//! 3. gathers the touched keys' histories up to v from those shards and
//!    evaluates the request once over them, with the same code a single
//!    shard uses — compares, ranges at old revisions, nested txns included;
//! 4. if it changed something: stamps one revision r and sends each changed
//!    shard its part (same r, list of participants), which the shard applies
//!    and appends to its own log;
//! 5. marks r committed once every part is, then lets the latches go.
//!
//! It runs as its own task: a client that goes away midway cannot leave a
//! stamped revision undecided (C would stop).

use super::Member;
use crate::api::EtcdError;
use crate::mvcc::txn::{self as m, Eval};
use crate::mvcc::{RangeEnd, Store, StoreImage};
use crate::shard::route::{shards_touched, split};
use crate::shard::{LatchCtl, ShardMsg, WriteOutcome};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::Status;

/// How often a coordinator waiting for C checks that this member still
/// leads.
const LEADERSHIP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

impl Member {
    /// Runs `op`, which touches the keys in `touched`, across shards (on
    /// the write leader: forwarded there if this member does not stamp).
    pub async fn write_across(
        self: &Arc<Self>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<WriteOutcome, Status> {
        if let super::peers::Route::To(leader) = self.write_route().await? {
            let fwd = super::peers::Forward::Write {
                shard: None,
                op,
                touched,
            };
            return self
                .forward(leader, fwd)
                .await?
                .ok_or_else(|| Status::internal("a forwarded write came back without outcome"));
        }
        self.write_across_here(op, touched).await
    }

    /// Runs `op` across this member's shards.
    pub(super) async fn write_across_here(
        self: &Arc<Self>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<WriteOutcome, Status> {
        let member = self.clone();
        tokio::spawn(async move { member.coordinate(op, touched).await })
            .await
            .map_err(|e| Status::internal(format!("cross-shard write failed: {e}")))?
    }

    async fn coordinate(
        &self,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<WriteOutcome, Status> {
        let _one_at_a_time = self.cross.lock().await;
        let n = self.shards.len();
        // 1. Latch, in shard order. Dropping `latches` releases them.
        let mut latches: BTreeMap<usize, flume::Sender<LatchCtl>> = BTreeMap::new();
        for shard in shards_touched(&touched, n) {
            let (tx, rx) = flume::bounded(2);
            let (reply, latched) = oneshot::channel();
            self.shards[shard]
                .send(ShardMsg::Latch { ctl: rx, reply })
                .await?;
            latched.await.map_err(|_| EtcdError::Stopped.status())?;
            latches.insert(shard, tx);
        }
        // 2. Everything stamped so far is decided, in this leadership: a
        // revision stamped in one that ended may never commit (and C may
        // then stay below it for as long as no other write comes), so the
        // wait ends with the leadership; latched shards take no writes.
        let epoch = self
            .seq
            .leading_epoch()
            .ok_or_else(|| EtcdError::LeaderChanged.status())?;
        let view = self.seq.last_stamped();
        let mut committed = std::pin::pin!(self.seq.wait_committed(view));
        loop {
            tokio::select! {
                _ = &mut committed => break,
                _ = tokio::time::sleep(LEADERSHIP_CHECK) => {
                    if self.seq.leading_epoch() != Some(epoch) {
                        return Err(EtcdError::LeaderChanged.status());
                    }
                }
            }
        }
        // 3. Gather and evaluate.
        let ranges: Vec<(Vec<u8>, RangeEnd)> = touched
            .iter()
            .map(|(k, e)| (k.clone(), RangeEnd::from_request(e)))
            .collect();
        let mut images = Vec::with_capacity(latches.len());
        for ctl in latches.values() {
            let (reply, image) = oneshot::channel();
            ctl.send_async(LatchCtl::Export {
                ranges: ranges.clone(),
                upto: view,
                reply,
            })
            .await
            .map_err(|_| EtcdError::Stopped.status())?;
            images.push(image.await.map_err(|_| EtcdError::Stopped.status())?);
        }
        let (mut response, changes) = {
            let state = Store::import(StoreImage::merge(images));
            let lease_exists = |id| self.leases.view.exists(id);
            let mut eval = Eval::new(&state, &lease_exists).current_revision(view);
            let response = eval.op(&op).map_err(EtcdError::from)?;
            (response, eval.into_changes())
        };
        if changes.is_empty() {
            drop(latches);
            return self
                .unchanged_is_current(WriteOutcome {
                    response,
                    revision: None,
                    view,
                })
                .await;
        }
        // 4. One revision, one part per changed shard.
        let mut parts = split(changes, n);
        // A shard without room for its log refuses, before anything is stamped.
        if parts.keys().any(|&shard| self.shards[shard].wal_no_space()) {
            return Err(EtcdError::DiskFull.status());
        }
        // Each part is one log entry on its shard, fitted as a shard fits a
        // write; a refusal comes before anything is stamped.
        for part in parts.values_mut() {
            let changes = std::mem::take(part);
            *part = crate::shard::fit_entry(&op, changes, self.entry_bytes_max)
                .map_err(Status::from)?
                .0;
        }
        let participants: Vec<u32> = parts.keys().map(|s| *s as u32).collect();
        // Stamped only in the leadership whose state it read.
        let stamped = self
            .seq
            .stamp_in(epoch)
            .ok_or_else(|| EtcdError::LeaderChanged.status())?;
        let revision = stamped.revision;
        let mut committed = Vec::with_capacity(parts.len());
        for (shard, changes) in parts {
            let (reply, done) = oneshot::channel();
            let sent = latches[&shard]
                .send_async(LatchCtl::Part {
                    stamp: stamped,
                    changes,
                    participants: participants.clone(),
                    reply,
                })
                .await;
            if sent.is_err() {
                // The shard core is gone: the member is stopping, and this
                // revision stays undecided (C stops below it).
                return Err(EtcdError::Stopped.status());
            }
            committed.push(done);
        }
        // 5. Committed iff every part is.
        for done in committed {
            match done.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(EtcdError::Stopped.status()),
            }
        }
        self.seq.commit(stamped);
        drop(latches);
        m::stamp(&mut response, revision);
        Ok(WriteOutcome {
            response,
            revision: Some(revision),
            view: revision,
        })
    }
}
