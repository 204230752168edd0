//! The write path of a shard core: evaluate, stamp, apply speculatively,
//! propose, answer once committed (DESIGN §2.1 points 2-3); and a latched
//! shard serving a cross-shard coordinator (point 4).
//!
//! A shard stamps only while the member's sequencer leads and its state
//! machine records the leadership it stamps under (set by the failover):
//! otherwise a write is answered [`ShardError::NotLeader`] and changes
//! nothing. A write proposed under a leadership that ends before it commits
//! is answered [`ShardError::LeaderChanged`]: it may still commit under the
//! next leader, or not (the client learns an unknown outcome, as from etcd).

use super::{ShardError, WriteOutcome, WriteReply};
use crate::fatal::Fatal;
use crate::mvcc::txn::{stamp, Eval, RequestOp, ResponseOp};
use crate::mvcc::{Change, Event, RangeEnd, Store};
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::types::{ShardCommand, ShardRaft};
use crate::sequencer::{SharedSequencer, Stamp};
use crate::shard::LatchCtl;
use crate::watch::WatchHub;
use openraft::error::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::Raft;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// What became of a proposal whose commit notice never came (the `Err`
/// of [`uncommitted`]: Raft answered something else, which is fatal).
#[derive(Debug, PartialEq, Eq)]
enum Uncommitted {
    /// Raft refused to append it although this member still leads the
    /// group (its quorum lease lapsed, or it hands the group over): it never
    /// commits (see [`SharedSequencer::refused`]).
    Refused,
    /// This member stopped leading the group: it may still commit under
    /// the next leader, or not (an unknown outcome).
    Unknown,
    /// The group's Raft stopped: the member is stopping (or Raft failed,
    /// which the group's watcher latches as fatal, see `groups.rs`); the
    /// write may have been appended (an unknown outcome).
    Stopped,
}

async fn uncommitted(
    applied: impl std::future::Future<
        Output = Result<openraft::raft::ClientWriteResult<ShardRaft>, impl std::fmt::Debug>,
    >,
) -> Result<Uncommitted, String> {
    use openraft::errors::ForwardReason;
    match applied.await {
        Ok(Err(ClientWriteError::ForwardToLeader(f)))
            if matches!(
                f.reason,
                ForwardReason::LeaseExpired | ForwardReason::LeadershipTransfer
            ) =>
        {
            Ok(Uncommitted::Refused)
        }
        Ok(Err(ClientWriteError::ForwardToLeader(_) | ClientWriteError::LogEntryDiscarded(_))) => {
            Ok(Uncommitted::Unknown)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) => Err("committed without a commit notice".into()),
        Err(_) => Ok(Uncommitted::Stopped),
    }
}

/// Serves a cross-shard coordinator until it lets go of the latch.
pub(super) async fn latched(
    raft: &Raft<ShardRaft, ShardStateMachine>,
    sm: &ShardStateMachine,
    store: &Rc<RefCell<Store>>,
    seq: &Arc<SharedSequencer>,
    hub: &WatchHub,
    ctl: flume::Receiver<LatchCtl>,
    fatal: &Arc<Fatal>,
) {
    while let Ok(msg) = ctl.recv_async().await {
        match msg {
            LatchCtl::Export {
                ranges,
                upto,
                reply,
            } => {
                let _ = reply.send(store.borrow().export_ranges(&ranges, upto));
            }
            LatchCtl::Part {
                stamp: stamped,
                changes,
                participants,
                reply,
            } => {
                let revision = stamped.revision;
                // As in `write`: nothing builds on a failed write's effects.
                if fatal.is_latched() {
                    let _ = reply.send(Err(ShardError::Stopped));
                    continue;
                }
                if sm.stamping_as().is_none() {
                    let _ = reply.send(Err(ShardError::NotLeader));
                    continue;
                }
                // Like a write: applied now, answered once committed. The
                // coordinator marks the revision committed when every part is.
                store.borrow_mut().apply(revision, &changes);
                if hub.recording() {
                    let events = store.borrow().events_at(revision, &changes);
                    hub.publish([(revision, events)], seq.committed());
                }
                let command = ShardCommand::Part {
                    revision,
                    changes,
                    participants,
                };
                let (responder, committed, applied) = ProgressResponder::new();
                // As for a write (see `propose`): a part that cannot commit stops the member.
                if let Err(err) = raft.client_write_ff(command, Some(responder)).await {
                    fatal.latch(format!("shard: raft refused part {revision}: {err}"));
                    let _ = reply.send(Err(ShardError::Stopped));
                    continue;
                }
                let fatal = fatal.clone();
                let seq = seq.clone();
                glommio::spawn_local(async move {
                    let r = match committed.await {
                        Ok(_) => Ok(()),
                        Err(_) => match uncommitted(applied).await {
                            Ok(Uncommitted::Refused) => {
                                seq.refused(stamped);
                                Err(ShardError::LeaderChanged)
                            }
                            Ok(Uncommitted::Unknown) => Err(ShardError::LeaderChanged),
                            Ok(Uncommitted::Stopped) => Err(ShardError::Stopped),
                            Err(err) => {
                                fatal.latch(format!(
                                    "shard: part {revision} could not be committed: {err}"
                                ));
                                Err(ShardError::Stopped)
                            }
                        },
                    };
                    let _ = reply.send(r);
                })
                .detach();
            }
        }
    }
}

/// Bound on the changes one log entry carries (as [`changes_bytes`] counts
/// them): an entry is one WAL record, which must fit a batch; the margin
/// covers the entry's own encoding.
pub fn entry_bytes_max(wal: &cairn_wal::Config) -> usize {
    wal.record_bytes_max() * 3 / 4
}

/// An upper estimate of the log bytes of one write's changes.
fn changes_bytes(changes: &[Change]) -> usize {
    16 + changes
        .iter()
        .map(|c| match c {
            Change::Put { key, value, .. } => key.len() + value.len() + 32,
            Change::Delete { key } => key.len() + 16,
            Change::DeleteRange { key, end } => {
                key.len()
                    + 32
                    + if let RangeEnd::Until(e) = end {
                        e.len()
                    } else {
                        0
                    }
            }
        })
        .sum::<usize>()
}

/// `op`'s changes (on one shard) as one log entry holds them, and their
/// [`changes_bytes`]: as they are if they fit `entry_bytes_max`; the deletes
/// of a plain DeleteRange (outside a txn) that do not fit, as the one range
/// change that stands for them all (valid because a shard applies a write on
/// the state it was evaluated on); anything else that does not fit is
/// refused with etcd's "request is too large".
pub fn fit_entry(
    op: &RequestOp,
    changes: Vec<Change>,
    entry_bytes_max: usize,
) -> Result<(Vec<Change>, usize), ShardError> {
    let bytes = changes_bytes(&changes);
    if bytes <= entry_bytes_max {
        return Ok((changes, bytes));
    }
    match op {
        RequestOp::DeleteRange(d) => {
            let range = vec![Change::DeleteRange {
                key: d.key.clone(),
                end: RangeEnd::from_request(&d.range_end),
            }];
            let bytes = changes_bytes(&range);
            Ok((range, bytes))
        }
        _ => Err(ShardError::TooLarge),
    }
}

/// Failpoint `shard::write::evaluated=return(PREFIX)`: a put of a key that
/// starts with PREFIX waits here, evaluated but not yet stamped nor applied,
/// holding its shard core (which answers nothing meanwhile), until the
/// failpoint changes. For the test of a put racing its lease's revoke.
#[cfg(feature = "failpoints")]
fn hold_evaluated(op: &RequestOp) {
    let RequestOp::Put(put) = op else {
        return;
    };
    while fail::eval("shard::write::evaluated", |arg| arg)
        .flatten()
        .is_some_and(|prefix| put.key.starts_with(prefix.as_bytes()))
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What [`write`] works with.
pub(super) struct WriteCtx<'a> {
    pub raft: &'a Raft<ShardRaft, ShardStateMachine>,
    pub sm: &'a ShardStateMachine,
    pub store: &'a Rc<RefCell<Store>>,
    pub seq: &'a Arc<SharedSequencer>,
    pub hub: &'a WatchHub,
    pub entry_bytes_max: usize,
    pub fatal: &'a Arc<Fatal>,
    /// Set while the WAL has no room for its next segment.
    pub no_space: &'a std::sync::atomic::AtomicBool,
    /// Which leases a put may name (see `crate::member::lease`).
    pub leases: &'a crate::lease::LeaseView,
}

/// Writes stamped for one log entry, with their answers and watch events.
#[derive(Default)]
struct Entry {
    writes: Vec<(i64, Vec<Change>)>,
    answers: Vec<(Stamp, ResponseOp, WriteReply)>,
    events: Vec<(i64, Vec<Event>)>,
    bytes: usize,
}

/// Evaluates, stamps and applies speculatively each of `batch` in order, and
/// proposes the ones that changed something as log entries of at most
/// `entry_bytes_max` (usually one); each is answered once its entry commits.
/// A write whose changes alone exceed that bound is fitted by [`fit_entry`]
/// or refused before it is stamped (nothing changes). Returns how many were
/// proposed.
pub(super) async fn write(
    ctx: &WriteCtx<'_>,
    batch: Vec<(RequestOp, WriteReply)>,
    permit: glommio::sync::StaticPermit,
) -> u64 {
    let store = ctx.store;
    let seq = ctx.seq;
    // Released when the last entry of the batch is answered.
    let permit = Rc::new(permit);
    let mut entry = Entry::default();
    let mut proposed = 0;
    // Stamp, apply and queue in order; an entry is proposed before the next
    // write is stamped, so the log holds this shard's writes in revision order.
    for (op, reply) in batch {
        // Nothing is evaluated or stamped after a fatal error: a write that
        // could not commit may have left its effects in this shard's
        // speculative state, and nothing may build on them.
        if ctx.fatal.is_latched() {
            let _ = reply.send(Err(ShardError::Stopped));
            continue;
        }
        if ctx.no_space.load(std::sync::atomic::Ordering::Relaxed) {
            // Nothing is evaluated or stamped: the write changes nothing.
            let _ = reply.send(Err(ShardError::NoSpace));
            continue;
        }
        let evaluated = {
            let s = store.borrow();
            // The member's newest revision: reads of this shard's keys at any
            // revision up to it are valid (it holds all of its own).
            let current = seq.last_stamped();
            let lease_exists = |id| ctx.leases.exists(id);
            let mut eval = Eval::new(&s, &lease_exists).current_revision(current);
            // A read at an older revision of the member is answered once C
            // covers it (a range in a branch not taken may name a future one:
            // ignored).
            let view = s.revision().max(op.max_revision().min(current));
            eval.op(&op).map(|resp| (resp, eval.into_changes(), view))
        };
        #[cfg(feature = "failpoints")]
        hold_evaluated(&op);
        match evaluated {
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
            Ok((response, changes, view)) if changes.is_empty() => {
                let _ = reply.send(Ok(WriteOutcome {
                    response,
                    revision: None,
                    view,
                }));
            }
            Ok((mut response, changes, _)) => {
                let (changes, bytes) = match fit_entry(&op, changes, ctx.entry_bytes_max) {
                    Ok(fit) => fit,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        continue;
                    }
                };
                if entry.bytes + bytes > ctx.entry_bytes_max {
                    proposed += propose(ctx, std::mem::take(&mut entry), permit.clone()).await;
                }
                let stamped = match ctx.sm.stamping_as() {
                    Some(_) => seq.stamp(),
                    None => None,
                };
                let Some(stamped) = stamped else {
                    let _ = reply.send(Err(ShardError::NotLeader));
                    continue;
                };
                let revision = stamped.revision;
                store.borrow_mut().apply(revision, &changes);
                // Asked after stamping: see WatchHub::add_watcher.
                if ctx.hub.recording() {
                    let events = store.borrow().events_at(revision, &changes);
                    entry.events.push((revision, events));
                }
                stamp(&mut response, revision);
                entry.bytes += bytes;
                entry.writes.push((revision, changes));
                entry.answers.push((stamped, response, reply));
            }
        }
    }
    proposed + propose(ctx, entry, permit).await
}

/// Proposes one entry's writes; answers them once it commits. Returns how
/// many writes it proposed.
async fn propose(ctx: &WriteCtx<'_>, entry: Entry, permit: Rc<glommio::sync::StaticPermit>) -> u64 {
    let Entry {
        mut writes,
        answers,
        events,
        ..
    } = entry;
    // Before any of them can commit: see crate::watch.
    if !events.is_empty() {
        ctx.hub.publish(events, ctx.seq.committed());
    }
    let proposed = writes.len() as u64;
    let command = match writes.len() {
        0 => return 0,
        1 => {
            let (revision, changes) = writes.pop().expect("one");
            ShardCommand::Write { revision, changes }
        }
        _ => ShardCommand::Writes { writes },
    };
    let (responder, committed, applied) = ProgressResponder::new();
    // A write that is stamped and applied here but cannot be committed leaves
    // C below it for good: the member cannot take another write, so it stops
    // (reads at C never saw it; nothing acknowledged depends on it).
    if let Err(e) = ctx.raft.client_write_ff(command, Some(responder)).await {
        ctx.fatal.latch(format!("shard: raft refused a write: {e}"));
        for (_, _, reply) in answers {
            let _ = reply.send(Err(ShardError::Stopped));
        }
        return 0;
    }
    let seq = ctx.seq.clone();
    let fatal = ctx.fatal.clone();
    glommio::spawn_local(async move {
        let _permit = permit;
        match committed.await {
            Ok(_) => {
                for (stamped, response, reply) in answers {
                    seq.commit(stamped);
                    // Committed, but maybe evaluated over a refused write's
                    // effects: an unknown outcome then.
                    let answer = if seq.acknowledgeable(stamped) {
                        Ok(WriteOutcome {
                            response,
                            revision: Some(stamped.revision),
                            view: stamped.revision,
                        })
                    } else {
                        Err(ShardError::LeaderChanged)
                    };
                    let _ = reply.send(answer);
                }
                // Keep the receiver until openraft reports the entry applied.
                let _ = applied.await;
            }
            Err(_) => {
                let revisions =
                    answers.first().map(|a| a.0.revision)..=answers.last().map(|a| a.0.revision);
                let error = match uncommitted(applied).await {
                    Ok(Uncommitted::Refused) => {
                        for (stamped, _, _) in &answers {
                            seq.refused(*stamped);
                        }
                        ShardError::LeaderChanged
                    }
                    Ok(Uncommitted::Unknown) => ShardError::LeaderChanged,
                    Ok(Uncommitted::Stopped) => ShardError::Stopped,
                    Err(e) => {
                        fatal.latch(format!(
                            "shard: writes {revisions:?} could not be committed: {e}"
                        ));
                        ShardError::Stopped
                    }
                };
                for (_, _, reply) in answers {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    })
    .detach();
    proposed
}
