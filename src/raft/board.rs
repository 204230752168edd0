//! [`GroupBoard`]: what each of a member's Raft groups last reported about its
//! leadership, published by the shard cores (from openraft's metrics) for the
//! member's write-leadership controller on the front.
//!
//! Groups `0..n` are the data groups (shard ids); group `n` is the meta group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// One group's leadership as its Raft reported it last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    pub term: u64,
    /// The leader this member knows of in `term`.
    pub leader: Option<u64>,
    /// This member is the group's leader (openraft's Leader state).
    pub leading: bool,
    /// The group's membership as this member knows it (the newest it has,
    /// committed or not): voters, learners, and every member's peer URL.
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub nodes: BTreeMap<u64, String>,
    /// The membership is a joint one (a change is under way).
    pub joint: bool,
}

/// See the module docs.
pub struct GroupBoard {
    views: Mutex<Vec<GroupView>>,
    /// Times the meta group's leader changed to a new one, as this member
    /// saw it (etcd_server_leader_changes_seen_total).
    leader_changes: std::sync::atomic::AtomicU64,
    /// Per group (data groups, then the meta group): when this member last
    /// knew the group's leader alive. A follower, when it answered the
    /// leader's AppendEntries (heartbeats included); the meta group's
    /// leader, when a quorum last acknowledged it. Only moves forward.
    contact: Mutex<Vec<Option<std::time::Instant>>>,
    changed: tokio::sync::watch::Sender<u64>,
    data_groups: usize,
}

impl GroupBoard {
    /// A board for `data_groups` data groups and the meta group.
    pub fn new(data_groups: usize) -> Self {
        Self {
            views: Mutex::new(vec![GroupView::default(); data_groups + 1]),
            leader_changes: Default::default(),
            contact: Mutex::new(vec![None; data_groups + 1]),
            changed: tokio::sync::watch::channel(0).0,
            data_groups,
        }
    }

    /// The meta group's index.
    pub fn meta(&self) -> usize {
        self.data_groups
    }

    pub fn data_groups(&self) -> usize {
        self.data_groups
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<GroupView>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Group `group` reports `view`.
    pub fn set(&self, group: usize, view: GroupView) {
        let changed = {
            let mut views = self.lock();
            let old = std::mem::replace(&mut views[group], view.clone());
            if group == self.data_groups && view.leader.is_some() && view.leader != old.leader {
                self.leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            old != view
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Every group's view (data groups, then the meta group).
    pub fn views(&self) -> Vec<GroupView> {
        self.lock().clone()
    }

    /// The meta group's leader, as this member knows it.
    pub fn meta_leader(&self) -> Option<u64> {
        self.lock()[self.data_groups].leader
    }

    /// The meta group's view (its membership is the cluster's).
    pub fn meta_view(&self) -> GroupView {
        self.lock()[self.data_groups].clone()
    }

    /// This member knows the meta leader alive as of `at`.
    pub fn contact(&self, at: std::time::Instant) {
        self.contact_with(self.data_groups, at);
    }

    /// This member knows the leader of `group` alive as of `at`.
    pub fn contact_with(&self, group: usize, at: std::time::Instant) {
        let mut c = self.contact.lock().unwrap_or_else(|e| e.into_inner());
        if c[group].is_none_or(|c| c < at) {
            c[group] = Some(at);
        }
    }

    /// Whether this member heard the leader of `group` within `within`.
    pub fn heard_within(&self, group: usize, within: std::time::Duration) -> bool {
        let c = self.contact.lock().unwrap_or_else(|e| e.into_inner())[group];
        c.is_some_and(|c| c.elapsed() <= within)
    }

    /// The meta group's leader, if this member knew it alive within
    /// `within` (etcd's members stop naming a leader they have not heard
    /// from for an election timeout).
    pub fn live_meta_leader(&self, within: std::time::Duration) -> Option<u64> {
        let leader = self.meta_leader()?;
        self.heard_within(self.data_groups, within)
            .then_some(leader)
    }

    /// Leader changes of the meta group this member saw.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
