//! Write leadership across the member's N+1 Raft groups (DESIGN §2.1 points
//! 1 and 5, §2.1.1), run by each member of a cluster on its front runtime.
//!
//! openraft elects a leader per group; cairn needs one member to lead them
//! all, since only the member that leads the meta group and every data group
//! may stamp revisions. How the groups are brought together:
//!
//! - The meta group elects on its own timers (openraft's randomized
//!   election timeouts). Its leader is the write leader.
//! - Data groups never campaign on a timer (`enable_elect` off, see
//!   `crate::shard::raft_config`). This controller decides instead:
//!   1. a member that leads a data group while another member leads the
//!      meta group hands the data group over (`transfer_leader`: the target
//!      catches up first, then campaigns);
//!   2. the meta leader campaigns for a data group that nobody hands over
//!      (its leader is gone) after an election timeout;
//!   3. any member campaigns for a data group that has not been led by the
//!      meta leader for two election timeouts or more (with a random part):
//!      the meta leader may be unable to win it (a data group's voters
//!      refuse a candidate whose log of that group is behind theirs; its
//!      old leader may be dead, which a follower cannot tell from its
//!      metrics), and someone must lead it so that rule 1 can hand it over
//!      once the meta leader caught up. Every campaign starts with a
//!      Pre-Vote, so one that cannot win (a live leader holds its lease)
//!      changes no term.
//! - A member stamps only in an *epoch*: it leads every group, and has run
//!   the failover (DESIGN §2.1 point 5) in the terms it leads them in:
//!   each data group commits an entry of this term (so everything in its
//!   log is committed), then every group is closed at the newest revision
//!   any log holds (cross-shard parts at or below it are decided), and the
//!   sequencer stamps above it. When any group's term changes or its
//!   leadership is lost, the epoch ends at once: the sequencer stops
//!   stamping and C freezes; writes in flight are answered by the shards
//!   (`leader changed`: unknown outcome); speculative state is rolled back
//!   by each shard's state machine when an entry of another leadership
//!   reaches it (`crate::raft::state_machine`).
//! - While it stamps, the leader appends a Tick with its C to data groups
//!   that have nothing newer, so followers' visible revision moves.

use super::Member;
use crate::raft::board::GroupView;
use crate::shard::peer::{Group, GroupCtl, Target};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the controller looks, besides on every leadership change.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// Where the member's write leadership is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Following,
    /// Stamping in `epoch`, with every group at these terms.
    Leading {
        epoch: u64,
        terms: Vec<u64>,
    },
}

fn terms(views: &[GroupView]) -> Vec<u64> {
    views.iter().map(|v| v.term).collect()
}

/// The pause between failed failovers: from [`LOOK_EVERY`], doubling up
/// to an election timeout; a failure is logged when its reason changes, or
/// every [`LEADERLESS_SAY`] with how often it repeated meanwhile.
#[derive(Default)]
struct Retry {
    next: Option<Instant>,
    pause: Duration,
    said: Option<(String, Instant)>,
    unsaid: u64,
}

impl Retry {
    fn due(&self) -> bool {
        self.next.is_none_or(|t| Instant::now() >= t)
    }

    /// Records a failure; what to append to its log line, if it is logged.
    fn failed(&mut self, why: &str, election: Duration) -> Option<String> {
        let now = Instant::now();
        self.pause = (self.pause * 2).clamp(LOOK_EVERY, election.max(LOOK_EVERY));
        self.next = Some(now + self.pause);
        let say = match &self.said {
            Some((last, at)) => last != why || now - *at >= LEADERLESS_SAY,
            None => true,
        };
        if !say {
            self.unsaid += 1;
            return None;
        }
        let repeats = match std::mem::take(&mut self.unsaid) {
            0 => String::new(),
            n => format!(" ({n} more failures since the last line)"),
        };
        self.said = Some((why.to_string(), now));
        Some(repeats)
    }
}

/// Runs the controller until the member goes away.
pub async fn run(member: Arc<Member>) {
    let peers = &member.peers;
    let me = member.member_id;
    let n = member.shards.len();
    let election = Duration::from_millis(peers.timing.election_ms);
    let mut board = peers.board.subscribe();
    let mut state = State::Following;
    // Per data group: when it was last asked to elect or transfer, and
    // since when it has had no leader.
    let mut asked: Vec<Option<Instant>> = vec![None; n];
    let mut astray_since: Vec<Option<Instant>> = vec![None; n];
    let mut meta_leader_since: Option<Instant> = None;
    let mut seed = me ^ 0x9e37_79b9_7f4a_7c15;
    let mut synced: Vec<Option<Instant>> = vec![None; n];
    let mut cluster_recorded = false;
    let mut was_member = false;
    let mut known_nodes = std::collections::BTreeMap::new();
    let mut transport_peers = std::collections::BTreeMap::new();
    let mut last_cluster_look: Option<Instant> = None;
    // Publishing this member's record: not yet (None), under way, or done.
    let mut publish: Option<tokio::task::JoinHandle<bool>> = None;
    let mut published = false;
    // Since when no member has led every group as this member sees it, and
    // when that was last said (a cluster stuck without a write leader says
    // what each group looks like from here).
    let mut leaderless_since: Option<Instant> = None;
    let mut leaderless_said: Option<Instant> = None;
    // Failed failovers are retried with a growing pause (a member that
    // leads every group it can see but cannot commit, e.g. cut off, would
    // otherwise retry and log dozens of times a second).
    let mut retry = Retry::default();
    loop {
        if member.fatal.is_latched() {
            member.seq.follow();
            member.leases.demote();
            return;
        }
        let _ = tokio::time::timeout(LOOK_EVERY, board.changed()).await;
        let views = peers.board.views();
        let meta = &views[n];
        let leads_all = views.iter().all(|v| v.leading);
        match &state {
            State::Leading { epoch, terms: t } => {
                // Also ended by a shard whose write Raft refused (see
                // `SharedSequencer::refused`): the failover starts over.
                if !leads_all || *t != terms(&views) || member.seq.leading_epoch() != Some(*epoch) {
                    member.seq.follow();
                    member.leases.demote();
                    eprintln!("cairn: member {me:x}: write leadership (epoch {epoch}) ended");
                    state = State::Following;
                }
            }
            State::Following if leads_all && retry.due() => match failover(&member, &views).await {
                Ok(epoch) => {
                    retry = Retry::default();
                    eprintln!("cairn: member {me:x}: write leader (epoch {epoch})");
                    // Keys a revoke under an earlier leadership left behind.
                    let m = member.clone();
                    tokio::spawn(async move {
                        if let Err(e) = m.sweep_orphaned_lease_keys().await {
                            eprintln!(
                                "cairn: member {me:x}: deleting keys of revoked leases: {}",
                                e.message()
                            );
                        }
                    });
                    state = State::Leading {
                        epoch,
                        terms: terms(&views),
                    };
                }
                Err(e) => {
                    if let Some(repeats) = retry.failed(&e, election) {
                        eprintln!("cairn: member {me:x}: failover: {e}{repeats}");
                    }
                }
            },
            State::Following => {}
        }
        let settled = meta.leader.is_some()
            && views[..n]
                .iter()
                .all(|v| v.leader == meta.leader && v.term > 0);
        if settled {
            leaderless_since = None;
        } else {
            let now = Instant::now();
            let since = *leaderless_since.get_or_insert(now);
            if now - since >= LEADERLESS_SAY
                && leaderless_said.is_none_or(|t| now - t >= LEADERLESS_SAY)
            {
                leaderless_said = Some(now);
                eprintln!(
                    "cairn: member {me:x}: no write leader for {} s: {}",
                    (now - since).as_secs(),
                    describe(&views)
                );
            }
        }
        // This member's record in the meta group, once a leader exists.
        if !published {
            publish = match publish {
                None if meta.leader.is_some() => {
                    let m = member.clone();
                    Some(tokio::spawn(async move { m.publish_self().await.is_ok() }))
                }
                Some(task) if task.is_finished() => {
                    published = task.await.unwrap_or(false);
                    None
                }
                other => other,
            };
        }
        if let State::Leading { .. } = state {
            let closed = member.seq.committed();
            for shard in 0..n {
                peers.tell(shard, Group::Data, GroupCtl::Tick { closed });
            }
            // Data groups follow the meta group's membership.
            if !meta.joint && !meta.nodes.is_empty() {
                let target = Target {
                    voters: meta.voters.clone(),
                    learners: meta.learners.clone(),
                    nodes: meta.nodes.clone(),
                };
                for (shard, v) in views[..n].iter().enumerate() {
                    let same = v.voters == target.voters
                        && v.learners == target.learners
                        && v.nodes == target.nodes;
                    let quiet = synced[shard].is_none_or(|t| Instant::now() - t >= election);
                    if !same && !v.joint && quiet {
                        synced[shard] = Some(Instant::now());
                        let (reply, _) = tokio::sync::oneshot::channel();
                        peers.tell(
                            shard,
                            Group::Data,
                            GroupCtl::Membership {
                                target: target.clone(),
                                reply,
                            },
                        );
                    }
                }
            }
            // Bounded, as every wait of this loop: a write that cannot
            // commit (the leader cut off) must not keep the loop from seeing
            // the leadership end.
            if !cluster_recorded {
                cluster_recorded = tokio::time::timeout(election, record_cluster(&member))
                    .await
                    .unwrap_or(false);
            }
            // Members removed since the last look are told so: nothing else
            // reaches them any more.
            if !meta.joint {
                for id in known_nodes.keys().filter(|id| !meta.nodes.contains_key(id)) {
                    tell_removed(&member, *id);
                }
                known_nodes = meta.nodes.clone();
            }
        }
        // The transport reaches whoever the membership names.
        if !meta.nodes.is_empty() && meta.nodes != transport_peers {
            transport_peers = meta.nodes.clone();
            peers.transport.set_peers(&transport_peers);
        }
        // A member removed from the cluster stops, as etcd's does (once it
        // has seen itself a member: one that joins replays memberships
        // from before it was added).
        let known = meta.voters.contains(&me) || meta.learners.contains(&me);
        if known {
            was_member = true;
        } else if was_member && !meta.nodes.is_empty() && !meta.joint {
            member.fatal.latch(String::from(
                "the member has been permanently removed from the cluster",
            ));
        }
        // A member that joined learns its cluster's id from the meta group.
        if member.cluster_id() == 0
            && last_cluster_look.is_none_or(|t| Instant::now() - t >= Duration::from_millis(100))
        {
            last_cluster_look = Some(Instant::now());
            let _ = tokio::time::timeout(election, learn_cluster(&member)).await;
        }
        if known && member.cluster_id() != 0 {
            member
                .joined
                .send_if_modified(|joined| !std::mem::replace(joined, true));
        }
        // Bringing the data groups to the meta leader.
        let now = Instant::now();
        meta_leader_since = match (meta.leading, meta_leader_since) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
        for (shard, v) in views[..n].iter().enumerate() {
            // Not led by the meta leader (led by nobody, or by a member
            // that may be gone: a follower keeps naming a dead leader
            // until a new term, and Pre-Vote keeps failed campaigns from
            // starting one); or named as led by a member this one has not
            // heard from as the group's leader for two election timeouts
            // (the meta leader restarted with a log of this group that is
            // behind: it cannot win the group, and the followers still
            // name it, as the group's last leader).
            let silent = !v.leading && !peers.board.heard_within(shard, 2 * election);
            let astray =
                v.leader.is_none() || (meta.leader.is_some() && v.leader != meta.leader) || silent;
            astray_since[shard] = match (astray, astray_since[shard]) {
                (true, None) => Some(now),
                (true, since) => since,
                (false, _) => None,
            };
            let quiet = asked[shard].is_none_or(|t| now - t >= election);
            if !quiet {
                continue;
            }
            let ask = if v.leading {
                // Rule 1.
                match meta.leader {
                    Some(m) if m != me && !meta.leading => Some(GroupCtl::Transfer(m)),
                    _ => None,
                }
            } else if meta_leader_since.is_some_and(|t| now - t >= election) {
                // Rule 2.
                Some(GroupCtl::Elect)
            } else {
                // Rule 3, with a random part so members do not all campaign.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let jitter = Duration::from_millis(seed % peers.timing.election_ms.max(1));
                astray_since[shard]
                    .is_some_and(|t| now - t >= 2 * election + jitter)
                    .then_some(GroupCtl::Elect)
            };
            if let Some(ctl) = ask {
                asked[shard] = Some(now);
                peers.tell(shard, Group::Data, ctl);
            }
        }
    }
}

/// How long the groups may be without one leader before the controller
/// says how they look (then again as often while it lasts).
const LEADERLESS_SAY: Duration = Duration::from_secs(10);

/// Each group's term and leader as this member sees them, for the log.
fn describe(views: &[GroupView]) -> String {
    let n = views.len() - 1;
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = if i == n {
                "meta".to_string()
            } else {
                format!("shard {i}")
            };
            let leader = v.leader.map_or("none".to_string(), |l| format!("{l:x}"));
            let mark = if v.leading { " (this member)" } else { "" };
            format!("{name}: term {} leader {leader}{mark}", v.term)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Tells member `id` it was removed (a few tries, in the background).
fn tell_removed(member: &Member, id: u64) {
    let transport = member.peers.transport.clone();
    tokio::spawn(async move {
        for _ in 0..10 {
            let frame = crate::transport::Frame {
                kind: crate::transport::Kind::Removed,
                group: 0,
                body: Vec::new(),
            };
            if transport
                .call(id, frame, Duration::from_secs(1))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Records the cluster's id in the meta group if it is not there; true
/// once it is.
async fn record_cluster(member: &Member) -> bool {
    let recorded = member
        .ask(0, |reply| crate::shard::ShardMsg::ClusterId { reply })
        .await
        .ok()
        .flatten();
    if recorded.is_some() {
        return true;
    }
    let command = crate::raft::meta::MetaCommand::SetCluster(member.cluster_id());
    matches!(
        member
            .peers
            .ask(0, Group::Meta, |reply| GroupCtl::MetaWrite {
                command,
                reply
            })
            .await,
        Ok(Ok(_))
    )
}

/// A member that joined takes its cluster's id from the meta group, and
/// keeps it in its data dir.
async fn learn_cluster(member: &Member) {
    let Ok(Some(id)) = member
        .ask(0, |reply| crate::shard::ShardMsg::ClusterId { reply })
        .await
    else {
        return;
    };
    member
        .cluster_id
        .store(id, std::sync::atomic::Ordering::Relaxed);
    let (identity, dir) = &member.peers.identity;
    let learned = crate::identity::Identity {
        cluster_id: id,
        ..identity.clone()
    };
    if let Err(e) = learned.save(dir) {
        eprintln!("cairn: recording the cluster's id: {e}");
    }
}

/// DESIGN §2.1 point 5, once this member leads every group (as `views`
/// show), and the leases' part of it: returns the epoch it stamps in.
async fn failover(member: &Member, views: &[GroupView]) -> Result<u64, String> {
    let peers = &member.peers;
    let n = member.shards.len();
    let ttl = Duration::from_millis(3 * peers.timing.election_ms).max(Duration::from_secs(3));
    // 1. An entry of this term committed in each data group: every entry of
    // its log is committed; the newest revision any of them holds.
    let settles = (0..n).map(|shard| peers.ask(shard, Group::Data, GroupCtl::Settle));
    let settled = tokio::time::timeout(ttl, futures::future::join_all(settles))
        .await
        .map_err(|_| "the data groups did not commit an entry of this term in time")?;
    // etcd's first revision is 1: a new cluster's first write gets 2.
    let mut last = member.seq.committed().max(1);
    for r in settled {
        last = last.max(r??);
    }
    // The meta group too: every lease granted or revoked before this term
    // is in the table the lessor starts from (step 4).
    tokio::time::timeout(ttl, peers.ask(0, Group::Meta, GroupCtl::Settle))
        .await
        .map_err(|_| "the meta group did not apply its log in time")???;
    // 2. Every group closed at `last`, and applied up to it.
    let closes = (0..n).map(|shard| {
        peers.ask(shard, Group::Data, |reply| GroupCtl::Close {
            closed: last,
            reply,
        })
    });
    let closed = tokio::time::timeout(ttl, futures::future::join_all(closes))
        .await
        .map_err(|_| "the data groups did not apply their close in time")?;
    for r in closed {
        r??;
    }
    // 3. Still the leader of every group, in the same terms.
    let now = peers.board.views();
    if now.iter().any(|v| !v.leading) || terms(&now) != terms(views) {
        return Err("leadership changed during the failover".into());
    }
    // 4. The leases' deadlines start here (each gets its TTL plus an
    // election timeout: no lease expires for a failover), before any
    // request is routed here.
    member.leases.promote();
    Ok(member.seq.lead(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_failovers_back_off_and_repeat_reasons_are_not_logged_again() {
        let election = Duration::from_millis(1000);
        let mut r = Retry::default();
        assert!(r.due(), "the first failover runs at once");
        assert_eq!(r.failed("cut off", election), Some(String::new()));
        assert_eq!(r.pause, LOOK_EVERY);
        assert!(!r.due(), "the next one waits");
        for _ in 0..10 {
            assert_eq!(
                r.failed("cut off", election),
                None,
                "same reason: not logged"
            );
        }
        assert_eq!(
            r.pause, election,
            "the pause grows up to an election timeout"
        );
        assert_eq!(
            r.failed("other", election),
            Some(" (10 more failures since the last line)".to_string())
        );
    }
}
