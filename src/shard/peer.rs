//! A shard core's side of the cluster: Raft frames from peers for its groups
//! (its data group; on core 0 the meta group too), and what the member's
//! write-leadership controller (`crate::member::leader`) asks of them.
//!
//! Served by a task of its own, beside the shard's request loop: a shard
//! latched by a cross-shard write, or waiting for write permits, still
//! answers heartbeats and votes. At most [`PEER_TASKS_MAX`] are handled at
//! once per core; the transport's queue bounds the rest.

use super::groups::newest_revision_in_log;
use crate::mvcc::Store;
use crate::raft::log_store::WalLogStore;
use crate::raft::meta::{MetaCommand, MetaRaft, MetaReply, MetaStateMachine};
use crate::raft::network;
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::types::{ShardCommand, ShardRaft};
use crate::transport::Kind;
use cairn_wal::storage::DmaStorage;
use cairn_wal::Wal;
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, Raft};
use openraft_rt::WatchReceiver;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tokio::sync::oneshot;

/// Frames and controls handled at once on one shard core.
pub const PEER_TASKS_MAX: u64 = 256;
/// Bound on frames and controls queued for one shard core.
pub const RAFT_IN_QUEUE_MAX: usize = 1024;

/// Which of a core's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The shard's data group.
    Data,
    /// The meta group (core 0 only).
    Meta,
}

/// What reaches a shard core's groups from outside its request loop.
pub enum RaftIn {
    /// A Raft frame from a peer.
    Frame {
        group: Group,
        kind: Kind,
        body: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// The member's write-leadership controller.
    Ctl { group: Group, ctl: GroupCtl },
}

/// What the write-leadership controller asks of a group.
pub enum GroupCtl {
    /// Campaign now (after a Pre-Vote round: a member that cannot win
    /// changes no term).
    Elect,
    /// Hand the group's leadership to this member (if leading it).
    Transfer(u64),
    /// Failover, first step. A data group: commit an entry of this term,
    /// so every entry in the log is committed; answers the newest revision
    /// in the log. The meta group: once this member's leadership is
    /// confirmed, apply every entry before its term (its lease table is
    /// then the cluster's); answers 0.
    Settle(oneshot::Sender<Result<i64, String>>),
    /// Failover, second step: every revision up to `closed` is decided; say
    /// so in the log (cross-shard parts below it are decided by it), wait
    /// until it is applied, and stamp this shard's writes as this leader.
    Close {
        closed: i64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The write leader's C is `closed`: if this group has no entry that
    /// shows it, append a Tick, so followers' visible revision moves on.
    Tick { closed: i64 },
    /// Confirm this member still leads the group (ReadIndex: a heartbeat
    /// round acknowledged by a quorum).
    Confirm(oneshot::Sender<Result<(), String>>),
    /// Bring the group's membership to `target` (its leader only).
    Membership {
        target: Target,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Whether member `node` has caught up with this leader (etcd's rule:
    /// its matched index is at least 90% of the leader's).
    InSync {
        node: u64,
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// Append to the meta group's log (its leader only), and wait until applied.
    MetaWrite {
        command: MetaCommand,
        reply: oneshot::Sender<Result<MetaReply, String>>,
    },
}

/// A membership to bring a group to: voters, learners, and every member's
/// peer URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub nodes: BTreeMap<u64, String>,
}

/// Brings `raft`'s membership to `target`, idempotently: members it lacks
/// are added as learners (not waiting for them), changed URLs set, then the
/// voters replaced (a removed voter stays a learner), then members no longer
/// in `target` removed. Each step is one membership change openraft commits
/// (joint consensus where voters change).
async fn bring_to<C, SM>(raft: &Raft<C, SM>, target: &Target) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    use openraft::ChangeMembers;
    let current = raft.metrics().borrow_watched().membership_config.clone();
    let current = current.membership();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    for (id, url) in &target.nodes {
        match current.get_node(id) {
            None => {
                raft.add_learner(*id, BasicNode::new(url), false)
                    .await
                    .map_err(|x| e(&x))?;
            }
            Some(n) if n.addr != *url => {
                let set = BTreeMap::from([(*id, BasicNode::new(url))]);
                raft.change_membership(ChangeMembers::SetNodes(set), true)
                    .await
                    .map_err(|x| e(&x))?;
            }
            Some(_) => {}
        }
    }
    let voters: BTreeSet<u64> = current.voter_ids().collect();
    if voters != target.voters && !target.voters.is_empty() {
        raft.change_membership(ChangeMembers::ReplaceAllVoters(target.voters.clone()), true)
            .await
            .map_err(|x| e(&x))?;
    }
    let gone: BTreeSet<u64> = current
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !target.nodes.contains_key(id))
        .collect();
    if !gone.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(gone), true)
            .await
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// See [`GroupCtl::InSync`].
fn in_sync<C, SM>(raft: &Raft<C, SM>, node: u64) -> Result<bool, String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    let m = raft.metrics().borrow_watched().clone();
    let Some(replication) = &m.replication else {
        return Err("not the leader".into());
    };
    let last = m.last_log_index.unwrap_or(0);
    let matched = replication
        .get(&node)
        .and_then(|l| l.as_ref().map(|l| l.index))
        .unwrap_or(0);
    Ok(matched as f64 >= last as f64 * 0.9)
}

/// A core's groups, as the peer task reaches them.
pub(super) struct Groups {
    pub data: Raft<ShardRaft, ShardStateMachine>,
    pub sm: ShardStateMachine,
    pub store: Rc<RefCell<Store>>,
    pub wal: Rc<Wal<DmaStorage>>,
    /// Set once the meta group is started (core 0).
    pub meta: RefCell<Option<Raft<MetaRaft, MetaStateMachine>>>,
    /// The newest `closed` this core appended in a Tick.
    pub ticked: Cell<i64>,
    pub board: std::sync::Arc<crate::raft::board::GroupBoard>,
    /// This core's shard (its data group's index on the board).
    pub id: usize,
}

/// Serves `rx` on the current shard core until every sender is gone.
pub(super) fn serve(rx: flume::Receiver<RaftIn>, groups: Rc<Groups>) {
    glommio::spawn_local(async move {
        let permits = Rc::new(glommio::sync::Semaphore::new(PEER_TASKS_MAX));
        while let Ok(msg) = rx.recv_async().await {
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                return;
            };
            let groups = groups.clone();
            glommio::spawn_local(async move {
                let _permit = permit;
                handle(&groups, msg).await;
            })
            .detach();
        }
    })
    .detach();
}

async fn handle(g: &Groups, msg: RaftIn) {
    match msg {
        RaftIn::Frame {
            group: Group::Data,
            kind,
            body,
            reply,
        } => {
            let r = network::serve(&g.data, kind, &body).await;
            // As for the meta group below: the controller tells a data
            // group's live leader from one a follower only still names.
            if kind == Kind::Append && r.is_ok() {
                g.board.contact_with(g.id, std::time::Instant::now());
            }
            let _ = reply.send(r);
        }
        RaftIn::Frame {
            group: Group::Meta,
            kind,
            body,
            reply,
        } => {
            let meta = g.meta.borrow().clone();
            let r = match meta {
                Some(meta) => network::serve(&meta, kind, &body).await,
                None => Err("the meta group is not started".into()),
            };
            // An AppendEntries this member answered: it heard its leader
            // (if the leader's term is stale, it just failed to be one).
            if kind == Kind::Append && r.is_ok() {
                g.board.contact(std::time::Instant::now());
            }
            let _ = reply.send(r);
        }
        RaftIn::Ctl {
            group: Group::Meta,
            ctl,
        } => {
            let meta = g.meta.borrow().clone();
            if let Some(meta) = meta {
                meta_ctl(&meta, ctl).await;
            }
        }
        RaftIn::Ctl {
            group: Group::Data,
            ctl,
        } => data_ctl(g, ctl).await,
    }
}

/// The meta leader confirmed (a ReadIndex round) and applied up to its
/// read index.
async fn meta_ready(meta: &Raft<MetaRaft, MetaStateMachine>) -> Result<(), String> {
    let linearizer = meta
        .get_read_linearizer(openraft::ReadPolicy::ReadIndex)
        .await
        .map_err(|e| e.to_string())?;
    linearizer
        .await_ready(meta)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn meta_ctl(meta: &Raft<MetaRaft, MetaStateMachine>, ctl: GroupCtl) {
    match ctl {
        GroupCtl::Elect => {
            let _ = meta.trigger().elect(true).await;
        }
        GroupCtl::Transfer(to) => {
            let _ = meta.trigger().transfer_leader(to).await;
        }
        GroupCtl::Confirm(reply) => {
            // Also applied up to the read index: the member's auth state
            // then holds every change acknowledged before (linearizable
            // reads are checked against it).
            let _ = reply.send(meta_ready(meta).await);
        }
        GroupCtl::Settle(reply) => {
            // The read index of a leader is at least its term's first entry.
            let _ = reply.send(meta_ready(meta).await.map(|()| 0));
        }
        GroupCtl::Close { reply, .. } => {
            let _ = reply.send(Err("the meta group holds no revisions".into()));
        }
        GroupCtl::Tick { .. } => {}
        GroupCtl::Membership { target, reply } => {
            let _ = reply.send(bring_to(meta, &target).await);
        }
        GroupCtl::InSync { node, reply } => {
            let _ = reply.send(in_sync(meta, node));
        }
        GroupCtl::MetaWrite { command, reply } => {
            let r = meta.client_write(command).await;
            let _ = reply.send(r.map(|resp| resp.data).map_err(|e| e.to_string()));
        }
    }
}

async fn data_ctl(g: &Groups, ctl: GroupCtl) {
    let raft = &g.data;
    match ctl {
        GroupCtl::Elect => {
            let _ = raft.trigger().elect(true).await;
        }
        GroupCtl::Transfer(to) => {
            let _ = raft.trigger().transfer_leader(to).await;
        }
        GroupCtl::Confirm(reply) => {
            let r = raft
                .get_read_linearizer(openraft::ReadPolicy::ReadIndex)
                .await;
            let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
        }
        GroupCtl::Settle(reply) => {
            g.sm.drop_speculation();
            let _ = reply.send(settle(g).await);
        }
        GroupCtl::Close { closed, reply } => {
            let r = raft
                .client_write(ShardCommand::Tick { closed })
                .await
                .map_err(|e| e.to_string());
            let _ = reply.send(r.map(|resp| {
                g.ticked.set(g.ticked.get().max(closed));
                g.sm.stamp_as(resp.log_id.leader_id);
            }));
        }
        GroupCtl::MetaWrite { reply, .. } => {
            let _ = reply.send(Err("a data group holds no members".into()));
        }
        GroupCtl::Membership { target, reply } => {
            let _ = reply.send(bring_to(raft, &target).await);
        }
        GroupCtl::InSync { node, reply } => {
            let _ = reply.send(in_sync(raft, node));
        }
        GroupCtl::Tick { closed } => {
            if closed > g.ticked.get() && closed > g.store.borrow().revision() {
                g.ticked.set(closed);
                let _ = raft
                    .client_write_ff(ShardCommand::Tick { closed }, None)
                    .await;
            }
        }
    }
}

/// See [`GroupCtl::Settle`]. The Tick says nothing (`closed` 0): it only
/// has to commit in this term.
async fn settle(g: &Groups) -> Result<i64, String> {
    let (responder, committed, _applied) = ProgressResponder::new();
    g.data
        .client_write_ff(ShardCommand::Tick { closed: 0 }, Some(responder))
        .await
        .map_err(|e| e.to_string())?;
    committed
        .await
        .map_err(|_| "not the leader any more".to_string())?;
    let mut log: WalLogStore<ShardRaft, DmaStorage> = WalLogStore::new(g.wal.clone(), 0);
    newest_revision_in_log(&g.wal, &mut log)
        .await
        .map_err(|e| e.to_string())
}
