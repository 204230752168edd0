//! Membership changes (etcd's Cluster service), on the write leader: the
//! meta group's membership is the cluster's (voters, learners, and each
//! member's peer URL); the write leader's controller brings every data group
//! to it (`super::leader`). Records (name, URLs) are meta-group entries.
//!
//! As etcd 3.4: at most one learner; a learner is promoted only once it is
//! in sync with the leader (its matched index at least 90% of the leader's,
//! in the meta group and every data group; checked before whether it is a
//! learner at all, so an unstarted voter is "not in sync", as in etcd); a
//! learner serves only Status, Snapshot and serializable Range (`etcdserver:
//! rpc not supported for learner`).
//! An added member's id is computed from its peer URLs and the cluster's
//! token (etcd draws one at random and a joining member asks its peers; a
//! cairn member started with `--initial-cluster-state existing` computes
//! it).

use super::peers::{Forward, Route};
use super::Member;
use crate::api::EtcdError;
use crate::raft::meta::{MemberRecord, MetaCommand};
use crate::shard::peer::{Group, GroupCtl, Target};
use crate::shard::ShardMsg;
use serde::{Deserialize, Serialize};
use tonic::Status;

/// A membership change forwarded to the write leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Change {
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    Promote {
        id: u64,
    },
}

/// A member as MemberList shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub record: MemberRecord,
    pub learner: bool,
}

/// The id a member added with `peer_urls` gets in a cluster of `token`.
pub fn added_member_id(peer_urls: &[String], token: &str) -> u64 {
    crate::config::stable_id(&["", &peer_urls.join(","), token])
}

fn check_urls(urls: &[String]) -> Result<(), Status> {
    let ok = !urls.is_empty()
        && urls.iter().all(|u| {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            rest.is_some_and(|r| {
                r.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            })
        });
    if ok {
        Ok(())
    } else {
        Err(EtcdError::MemberBadUrls.status())
    }
}

impl Member {
    /// Whether this member is a learner (it serves only Status and
    /// serializable reads).
    pub fn is_learner(&self) -> bool {
        self.peers.clustered()
            && self
                .peers
                .board
                .meta_view()
                .learners
                .contains(&self.member_id)
    }

    /// Refuses what a learner does not serve.
    pub fn not_a_learner(&self) -> Result<(), Status> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner.status());
        }
        Ok(())
    }

    /// The members: the meta group's records, learners marked, and members
    /// in the membership that have not recorded themselves yet (unstarted:
    /// no name, no client URLs).
    pub async fn member_list(&self) -> Result<Vec<Listed>, Status> {
        let records = self
            .ask(0, |reply| ShardMsg::Members { reply })
            .await?
            .unwrap_or_default();
        if !self.peers.clustered() {
            return Ok(records
                .into_iter()
                .map(|record| Listed {
                    record,
                    learner: false,
                })
                .collect());
        }
        let view = self.peers.board.meta_view();
        let mut out = Vec::new();
        for (id, url) in &view.nodes {
            let record = records
                .iter()
                .find(|r| r.id == *id)
                .cloned()
                .unwrap_or_else(|| MemberRecord {
                    id: *id,
                    name: String::new(),
                    peer_urls: vec![url.clone()],
                    client_urls: Vec::new(),
                });
            out.push(Listed {
                record,
                learner: view.learners.contains(id),
            });
        }
        Ok(out)
    }

    /// Runs a membership change on the write leader; the id it concerns.
    pub async fn change_members(&self, change: Change) -> Result<u64, Status> {
        if !self.peers.clustered() {
            return Err(Status::unimplemented(
                "cairn: membership changes need a cluster started with several members",
            ));
        }
        match self.write_route().await? {
            Route::Here => self.change_members_here(change).await,
            Route::To(leader) => self.forward_member_change(leader, change).await,
        }
    }

    async fn forward_member_change(&self, leader: u64, change: Change) -> Result<u64, Status> {
        let id = match &change {
            Change::Add { peer_urls, .. } => added_member_id(peer_urls, &self.peers.token),
            Change::Remove { id } | Change::Update { id, .. } | Change::Promote { id } => *id,
        };
        self.forward(leader, Forward::Members(change)).await?;
        Ok(id)
    }

    /// [`Member::change_members`] on this member, the write leader.
    pub(super) async fn change_members_here(&self, change: Change) -> Result<u64, Status> {
        let view = self.peers.board.meta_view();
        let mut target = Target {
            voters: view.voters.clone(),
            learners: view.learners.clone(),
            nodes: view.nodes.clone(),
        };
        let (id, record) = match change {
            Change::Add { peer_urls, learner } => {
                check_urls(&peer_urls)?;
                if view.nodes.values().any(|u| peer_urls.contains(u)) {
                    return Err(EtcdError::PeerUrlExist.status());
                }
                if learner && !view.learners.is_empty() {
                    return Err(EtcdError::TooManyLearners.status());
                }
                let id = added_member_id(&peer_urls, &self.peers.token);
                if view.nodes.contains_key(&id) {
                    return Err(EtcdError::MemberExist.status());
                }
                target.nodes.insert(id, peer_urls[0].clone());
                if learner {
                    target.learners.insert(id);
                } else {
                    target.voters.insert(id);
                }
                let record = MemberRecord {
                    id,
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                (id, Some(MetaCommand::PutMember(record)))
            }
            Change::Remove { id } => {
                if target.nodes.remove(&id).is_none() {
                    return Err(EtcdError::MemberNotFound.status());
                }
                target.voters.remove(&id);
                target.learners.remove(&id);
                (id, Some(MetaCommand::RemoveMember(id)))
            }
            Change::Update { id, peer_urls } => {
                check_urls(&peer_urls)?;
                if !target.nodes.contains_key(&id) {
                    return Err(EtcdError::MemberNotFound.status());
                }
                if view
                    .nodes
                    .iter()
                    .any(|(other, u)| *other != id && peer_urls.contains(u))
                {
                    return Err(EtcdError::PeerUrlExist.status());
                }
                target.nodes.insert(id, peer_urls[0].clone());
                let mut records = self
                    .ask(0, |reply| ShardMsg::Members { reply })
                    .await?
                    .unwrap_or_default();
                let record = match records.iter().position(|r| r.id == id) {
                    Some(i) => MemberRecord {
                        peer_urls,
                        ..records.swap_remove(i)
                    },
                    None => MemberRecord {
                        id,
                        name: String::new(),
                        peer_urls,
                        client_urls: Vec::new(),
                    },
                };
                (id, Some(MetaCommand::PutMember(record)))
            }
            Change::Promote { id } => {
                if !view.nodes.contains_key(&id) {
                    return Err(EtcdError::MemberNotFound.status());
                }
                // In etcd's order: whether it caught up comes first, for
                // any member (an unstarted voter is "not in sync"), then
                // whether it is a learner.
                if !self.in_sync(id).await? {
                    return Err(EtcdError::LearnerNotReady.status());
                }
                if !view.learners.contains(&id) {
                    return Err(EtcdError::MemberNotLearner.status());
                }
                target.learners.remove(&id);
                target.voters.insert(id);
                (id, None)
            }
        };
        self.peers
            .ask(0, Group::Meta, |reply| GroupCtl::Membership {
                target,
                reply,
            })
            .await
            .map_err(|_| EtcdError::Stopped.status())?
            .map_err(|e| Status::unavailable(format!("cairn: membership change: {e}")))?;
        if let Some(command) = record {
            self.meta_write(command).await?;
        }
        Ok(id)
    }

    /// Whether `id` caught up in the meta group and every data group.
    async fn in_sync(&self, id: u64) -> Result<bool, Status> {
        let mut groups = vec![(0, Group::Meta)];
        groups.extend((0..self.shards.len()).map(|s| (s, Group::Data)));
        for (shard, group) in groups {
            let ready = self
                .peers
                .ask(shard, group, |reply| GroupCtl::InSync { node: id, reply })
                .await
                .map_err(|_| EtcdError::Stopped.status())?
                .map_err(|_| EtcdError::LeaderChanged.status())?;
            if !ready {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
