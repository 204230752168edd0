//! Starting and watching a shard core's Raft groups (its data group and,
//! on core 0, the meta group): their settings, leadership at start, replay.

use super::ShardConfig;
use crate::fatal::Fatal;
use crate::raft::board::{GroupBoard, GroupView};
use crate::raft::log_store::WalLogStore;
use crate::raft::meta::{MemberRecord, MetaCommand, MetaRaft, MetaStateMachine, META_GROUP};
use crate::raft::network::PeerNetwork;
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::types::ShardRaft;
use crate::shard::ShardError;
use cairn_wal::storage::DmaStorage;
use cairn_wal::Wal;
use openraft::{BasicNode, Raft};
use openraft_rt::WatchReceiver;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The frame group id of the meta group (data groups use their shard id).
pub const META_FRAME_GROUP: u64 = u64::MAX;

/// Watches a Raft group until it stops: publishes its term to `term` and
/// its leadership to `board` as they change, and latches `fatal` if the
/// group stops on its own (a storage error, a panic in its core) rather
/// than because `stopping` was set.
pub(super) fn watch_raft<C: openraft::RaftTypeConfig<NodeId = u64, Term = u64, Node = BasicNode>>(
    group: String,
    mut metrics: openraft::type_config::alias::WatchReceiverOf<C, openraft::RaftMetrics<C>>,
    term: Option<Arc<std::sync::atomic::AtomicU64>>,
    board: (Arc<GroupBoard>, usize),
    fatal: Arc<Fatal>,
    stopping: Rc<std::cell::Cell<bool>>,
) where
    openraft::type_config::alias::WatchReceiverOf<C, openraft::RaftMetrics<C>>: 'static,
{
    glommio::spawn_local(async move {
        loop {
            let failed = {
                let m = metrics.borrow_watched();
                if let Some(term) = &term {
                    term.fetch_max(m.current_term, std::sync::atomic::Ordering::Relaxed);
                }
                // The leader's lease: when a quorum last acknowledged it.
                if board.1 == board.0.meta() {
                    if let Some(at) = &m.last_quorum_acked {
                        let ago = openraft_rt::Instant::elapsed(&**at);
                        if let Some(at) = std::time::Instant::now().checked_sub(ago) {
                            board.0.contact(at);
                        }
                    }
                }
                let membership = m.membership_config.membership();
                board.0.set(
                    board.1,
                    GroupView {
                        term: m.current_term,
                        leader: m.current_leader,
                        leading: m.state == openraft::ServerState::Leader,
                        voters: membership.voter_ids().collect(),
                        learners: membership.learner_ids().collect(),
                        nodes: membership
                            .nodes()
                            .map(|(id, n)| (*id, n.addr.clone()))
                            .collect(),
                        joint: membership.get_joint_config().len() > 1,
                    },
                );
                m.running_state.as_ref().err().map(|e| e.to_string())
            };
            if let Some(e) = failed {
                if !stopping.get() {
                    fatal.latch(format!("{group}: raft stopped: {e}"));
                }
                return;
            }
            if metrics.changed().await.is_err() {
                if !stopping.get() {
                    fatal.latch(format!("{group}: raft stopped"));
                }
                return;
            }
        }
    })
    .detach();
}

/// Raft timing, from `--heartbeat-interval` and `--election-timeout` (ms):
/// heartbeats every `heartbeat_ms`; a follower that hears nothing campaigns
/// after a random time in [`election_ms`, 2 × `election_ms`), as etcd
/// randomizes its election ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

impl Default for RaftTiming {
    /// etcd's defaults.
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_ms: 1000,
        }
    }
}

/// The Raft settings of a shard group. `--snapshot-count` counts writes, as
/// etcd's does (one request per entry there); the shard triggers those
/// snapshots itself since an entry may carry many writes. The policy here is
/// the backstop for entries that carry none.
///
/// In a cluster (`cluster`), a data group never campaigns on its own timer:
/// the member's write-leadership controller (`crate::member::leader`)
/// decides when, so the leader of every data group is the meta group's
/// leader. In a cluster, leadership is never restored without an election
/// after a restart, in any group: a restarted member learns what committed
/// from the others first.
pub fn raft_config(
    snapshot_count: u64,
    timing: RaftTiming,
    cluster: bool,
) -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_ms,
        election_timeout_max: timing.election_ms * 2,
        // The log behind a snapshot is purged (keeping a tail for slow
        // followers), and the WAL reclaims it.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_count),
        max_in_snapshot_log_to_keep: snapshot_count.min(1000),
        enable_elect: !cluster,
        // A lone member is the only one that can lead: it restores its
        // leadership at once (as before clusters existed).
        enable_leader_restore: if cluster { Some(false) } else { None },
        // A member that was cut off does not come back with a term that
        // unseats a healthy leader.
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

/// Makes `voters` the group's first membership if it has none (every
/// member does the same with the same voters, as openraft allows).
///
/// A peer may be quicker: once this member has voted in the group's first
/// election (its vote is no longer the initial one), openraft refuses to
/// initialize it. That is no failure: the member that asked for the vote
/// initialized the group with the same voters and replicates it here.
pub(super) async fn join<C, SM>(
    raft: &Raft<C, SM>,
    voters: &BTreeMap<u64, String>,
) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        let members: BTreeMap<u64, BasicNode> = voters
            .iter()
            .map(|(id, url)| (*id, BasicNode::new(url)))
            .collect();
        match raft.initialize(members).await {
            Ok(())
            | Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Makes this member the group's only voter (the first time) and waits until
/// it leads.
pub(super) async fn lead_alone<C, SM>(
    raft: &Raft<C, SM>,
    member_id: u64,
    peer_url: &str,
) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        let members = BTreeMap::from([(member_id, BasicNode::new(peer_url))]);
        raft.initialize(members).await.map_err(|e| e.to_string())?;
    } else if raft.metrics().borrow_watched().current_leader != Some(member_id) {
        // The sole voter: campaign now rather than after an election timeout.
        raft.trigger()
            .elect(false)
            .await
            .map_err(|e| e.to_string())?;
    }
    raft.wait(Some(Duration::from_secs(60)))
        .current_leader(member_id, "becoming leader")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The newest revision (or `closed`) in a shard's log, applied or not; 0 if
/// none. Scans back from the last entry past those without one.
pub(super) async fn newest_revision_in_log(
    wal: &Wal<DmaStorage>,
    log: &mut WalLogStore<ShardRaft, DmaStorage>,
) -> Result<i64, std::io::Error> {
    use openraft::RaftLogReader;
    let Some((first, last)) = wal.entry_range(0) else {
        return Ok(0);
    };
    let mut end = last + 1;
    while end > first {
        let start = end.saturating_sub(64).max(first);
        for entry in log.try_get_log_entries(start..end).await?.iter().rev() {
            if let openraft::EntryPayload::Normal(command) = &entry.payload {
                // (A Tick of 0 says nothing: a failover's first entry.)
                if let Some(revision) = command.newest_revision().filter(|r| *r > 0) {
                    return Ok(revision);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Waits until every entry in the log at start is applied. Called once this
/// member leads the group alone (`lead_alone`): then every entry in its log
/// commits, also those above the committed index it had saved (saved
/// lazily, it may lag), so waiting for the last index covers them all.
pub(super) async fn replay<C, SM>(
    raft: &Raft<C, SM>,
    timeout: Option<Duration>,
) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    let last = raft.metrics().borrow_watched().last_log_index;
    raft.wait(timeout)
        .applied_index_at_least(last, "replaying the log")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Starts the meta group on this core's WAL (DESIGN §2). A single member
/// leads it at once, replays it, and records itself in it if its record
/// changed; a cluster member joins it (its leader is elected, and records
/// the members).
pub(super) async fn start_meta(
    cfg: &ShardConfig,
    wal: Rc<Wal<DmaStorage>>,
    me: MemberRecord,
) -> Result<(Raft<MetaRaft, MetaStateMachine>, MetaStateMachine), String> {
    let sm = MetaStateMachine::open(
        cfg.dir.join("meta"),
        cfg.leases.clone(),
        cfg.alarms.clone(),
        cfg.auth.clone(),
    )
    .map_err(|e| e.to_string())?;
    let config = openraft::Config {
        cluster_name: "cairn-meta".into(),
        heartbeat_interval: cfg.raft_timing.heartbeat_ms,
        election_timeout_min: cfg.raft_timing.election_ms,
        election_timeout_max: cfg.raft_timing.election_ms * 2,
        // The meta group shares shard 0's WAL, whose segments are reclaimed
        // only once no group needs them: its entries must not pin them. It
        // snapshots whenever shard 0's data group does (see the shard loop),
        // and after `--snapshot-count` entries of its own (lease grants and
        // revokes are entries: a snapshot per entry would rewrite the whole
        // lease table each time).
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        enable_leader_restore: if cfg.clustered { Some(false) } else { None },
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let log_store: WalLogStore<MetaRaft, DmaStorage> = WalLogStore::new(wal, META_GROUP);
    let raft = Raft::new(
        cfg.member_id,
        Arc::new(config),
        PeerNetwork::new(
            META_FRAME_GROUP,
            cfg.transport.clone(),
            std::time::Duration::from_millis(cfg.raft_timing.election_ms),
        ),
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if cfg.clustered {
        if cfg.voters.len() > 1 {
            join(&raft, &cfg.voters).await?;
        }
        return Ok((raft, sm));
    }
    lead_alone(&raft, cfg.member_id, &cfg.peer_url).await?;
    replay(&raft, Some(Duration::from_secs(60))).await?;
    if !sm.members().contains(&me) {
        raft.client_write(MetaCommand::PutMember(me))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((raft, sm))
}

/// Makes the meta group snapshot whenever `data` (shard 0's group, in the
/// same WAL) has built one, on every member: the meta group's entries then
/// never pin a WAL segment that the data group's log no longer needs.
pub(super) fn snapshot_along(
    data: Raft<ShardRaft, ShardStateMachine>,
    meta: Raft<MetaRaft, MetaStateMachine>,
) {
    glommio::spawn_local(async move {
        let mut metrics = data.metrics();
        let mut seen = metrics.borrow_watched().snapshot;
        while metrics.changed().await.is_ok() {
            let now = metrics.borrow_watched().snapshot;
            if now != seen {
                seen = now;
                if meta.trigger().snapshot().await.is_err() {
                    return;
                }
            }
        }
    })
    .detach();
}

/// Builds a snapshot of everything applied and waits until it is kept.
pub(super) async fn snapshot_now(
    raft: &Raft<ShardRaft, ShardStateMachine>,
) -> Result<(), ShardError> {
    let Some(applied) = raft.metrics().borrow_watched().last_applied else {
        return Ok(()); // nothing applied, nothing to keep
    };
    raft.trigger()
        .snapshot()
        .await
        .map_err(|_| ShardError::Stopped)?;
    raft.wait(Some(Duration::from_secs(600)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "defragment",
        )
        .await
        .map(|_| ())
        .map_err(|_| ShardError::Stopped)
}
