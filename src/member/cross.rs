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

/// A request across shards, and the keys (and range ends) it touches.
pub type Across = (m::RequestOp, Vec<(Vec<u8>, Vec<u8>)>);

impl Member {
    /// Runs `op`, which touches the keys in `touched`, across shards (on
    /// the write leader: forwarded there if this member does not stamp).
    pub async fn write_across(
        self: &Arc<Self>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<WriteOutcome, Status> {
        self.write_across_as(op, touched, None).await
    }

    /// [`Member::write_across`] of a request checked at auth store
    /// revision `checked` (see [`Member::write_as`]).
    pub async fn write_across_as(
        self: &Arc<Self>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
        checked: Option<u64>,
    ) -> Result<WriteOutcome, Status> {
        if let super::peers::Route::To(leader) = self.write_route().await? {
            let fwd = super::peers::Forward::Write {
                shard: None,
                op,
                touched,
                checked,
            };
            return self
                .forward(leader, fwd)
                .await?
                .ok_or_else(|| Status::internal("a forwarded write came back without outcome"));
        }
        self.auth_current(checked)?;
        self.write_across_here(op, touched).await
    }

    /// Runs `op` across this member's shards.
    pub(super) async fn write_across_here(
        self: &Arc<Self>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<WriteOutcome, Status> {
        let member = self.clone();
        let mut answers = tokio::spawn(async move { member.coordinate(vec![(op, touched)]).await })
            .await
            .map_err(|e| Status::internal(format!("cross-shard write failed: {e}")))??;
        answers.pop().expect("one answer per request")
    }

    /// Runs several cross-shard requests in one latch round (a batch of
    /// lease revokes): each is evaluated on the state the ones before it
    /// left and gets its own revision; their parts travel together. Here
    /// only (the write leader). An answer per request, in order; `Err` if
    /// the round could not start.
    pub(super) async fn write_across_batch(
        self: &Arc<Self>,
        ops: Vec<Across>,
    ) -> Result<Vec<Result<WriteOutcome, Status>>, Status> {
        if !self.seq.leading() {
            return Err(EtcdError::LeaderChanged.status());
        }
        let member = self.clone();
        tokio::spawn(async move { member.coordinate(ops).await })
            .await
            .map_err(|e| Status::internal(format!("cross-shard write failed: {e}")))?
    }

    async fn coordinate(
        &self,
        ops: Vec<Across>,
    ) -> Result<Vec<Result<WriteOutcome, Status>>, Status> {
        let _one_at_a_time = self.cross.lock().await;
        let n = self.shards.len();
        let touched: Vec<(Vec<u8>, Vec<u8>)> =
            ops.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
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
        // 3. Gather.
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
        let mut state = Store::import(StoreImage::merge(images));
        // 4. Each request evaluated on what the ones before it left, then
        // stamped and sent; 5. each committed iff every part of it is.
        let mut answers: Vec<Answer> = Vec::with_capacity(ops.len());
        let mut current = view;
        for (op, _) in &ops {
            let answer = self
                .evaluate_and_send(op, &mut state, current, epoch, &latches)
                .await;
            if let Answer::Sent { stamped, .. } = &answer {
                current = stamped.revision;
            }
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(match answer {
                Answer::Done(outcome) => outcome,
                Answer::Sent {
                    mut response,
                    stamped,
                    parts,
                } => {
                    let mut all = Ok(());
                    for done in parts {
                        let r = match done.await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e.into()),
                            Err(_) => Err(EtcdError::Stopped.status()),
                        };
                        all = all.and(r);
                    }
                    all.map(|()| {
                        self.seq.commit(stamped);
                        m::stamp(&mut response, stamped.revision);
                        WriteOutcome {
                            response,
                            revision: Some(stamped.revision),
                            view: stamped.revision,
                        }
                    })
                }
            });
        }
        drop(latches);
        // Unchanged answers: read at a C this member confirmed it leads at.
        let mut answered = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            answered.push(match outcome {
                Ok(o) if o.revision.is_none() => self.unchanged_is_current(o).await,
                other => other,
            });
        }
        Ok(answered)
    }

    /// Steps 3 to 4 for one request of a round: evaluated on `state` at
    /// `current`; if it changes something, stamped (in `epoch`), applied
    /// to `state`, and its parts sent to the latched shards.
    async fn evaluate_and_send(
        &self,
        op: &m::RequestOp,
        state: &mut Store,
        current: i64,
        epoch: u64,
        latches: &BTreeMap<usize, flume::Sender<LatchCtl>>,
    ) -> Answer {
        let (response, changes) = {
            let lease_exists = |id| self.leases.view.exists(id);
            let mut eval = Eval::new(state, &lease_exists).current_revision(current);
            match eval.op(op) {
                Ok(response) => (response, eval.into_changes()),
                Err(e) => return Answer::Done(Err(EtcdError::from(e).into())),
            }
        };
        if changes.is_empty() {
            return Answer::Done(Ok(WriteOutcome {
                response,
                revision: None,
                view: current,
            }));
        }
        let mut parts = split(changes.clone(), self.shards.len());
        // A shard without room for its log refuses, before anything is stamped.
        if parts.keys().any(|&shard| self.shards[shard].wal_no_space()) {
            return Answer::Done(Err(EtcdError::DiskFull.status()));
        }
        // Each part is one log entry on its shard, fitted as a shard fits a
        // write; a refusal comes before anything is stamped.
        for part in parts.values_mut() {
            match crate::shard::fit_entry(op, std::mem::take(part), self.entry_bytes_max) {
                Ok((fitted, _)) => *part = fitted,
                Err(e) => return Answer::Done(Err(e.into())),
            }
        }
        let participants: Vec<u32> = parts.keys().map(|s| *s as u32).collect();
        // Stamped only in the leadership whose state it read.
        let Some(stamped) = self.seq.stamp_in(epoch) else {
            return Answer::Done(Err(EtcdError::LeaderChanged.status()));
        };
        state.apply(stamped.revision, &changes);
        let mut sent = Vec::with_capacity(parts.len());
        for (shard, changes) in parts {
            let (reply, done) = oneshot::channel();
            let r = latches[&shard]
                .send_async(LatchCtl::Part {
                    stamp: stamped,
                    changes,
                    participants: participants.clone(),
                    reply,
                })
                .await;
            if r.is_err() {
                // The shard core is gone: the member is stopping, and this
                // revision stays undecided (C stops below it).
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(crate::shard::ShardError::Stopped));
                sent.push(rx);
                break;
            }
            sent.push(done);
        }
        Answer::Sent {
            response,
            stamped,
            parts: sent,
        }
    }
}

/// What became of one request of a round, before its parts committed.
enum Answer {
    /// Answered without a revision (nothing changed, or refused).
    Done(Result<WriteOutcome, Status>),
    /// Stamped and sent; committed once every part is.
    Sent {
        response: m::ResponseOp,
        stamped: crate::sequencer::Stamp,
        parts: Vec<oneshot::Receiver<Result<(), crate::shard::ShardError>>>,
    },
}
