//! The members of a cluster run: N `cairn` processes planned by
//! [`LocalCluster`] (ports, ids, `--initial-cluster`), run as harness
//! [`Member`]s (logs, exits, failpoints, restarts), each advertising the
//! port of its relay in a [`PeerNet`] so that the nemesis can partition and
//! slow the links between them.

use super::members::Member;
use super::peernet::PeerNet;
use crate::cluster::LocalCluster;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a new cluster may take until its members agree on a leader.
pub const FORM_MAX: Duration = Duration::from_secs(120);

/// See the module docs.
pub struct Cluster {
    pub members: Vec<Member>,
    /// Each member's id (Status `header.member_id`), by index.
    pub ids: Vec<u64>,
    /// The relays between the members; None when they reach each other
    /// directly (no network faults then).
    pub net: Option<PeerNet>,
    plan: LocalCluster,
}

impl Cluster {
    /// Plans `n` members (data dirs `dir/mI`, logs `dir/member-mI.log`,
    /// `args` for each), starts their relays on `rt` (seeded with `seed`;
    /// none if `relays` is false), launches them all, and waits until each
    /// serves and they agree on a leader.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cairn: &Path,
        dir: &Path,
        n: usize,
        args: &[String],
        failpoints: &[(String, String)],
        rt: &tokio::runtime::Runtime,
        relays: bool,
        seed: u64,
    ) -> Result<Cluster> {
        let mut plan = LocalCluster::new(cairn, dir, n, args);
        let net = if relays {
            let relay_ports: Vec<u16> = (0..n).map(|_| crate::ports::free_port()).collect();
            plan.advertise_peers_at(&relay_ports);
            let routes: Vec<(u16, u16)> = plan
                .members
                .iter()
                .map(|m| (m.advertise_port, m.peer_port))
                .collect();
            let net = rt
                .block_on(PeerNet::start(&routes, seed))
                .context("starting the peer relays")?;
            Some(net)
        } else {
            None
        };
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let m = &plan.members[i];
                let mut member = Member::new(
                    cairn,
                    &m.name,
                    m.client_port,
                    m.dir.clone(),
                    dir.join(format!("member-{}.log", m.name)),
                    plan.member_flags(i),
                );
                member.failpoints = failpoints.to_vec();
                member
            })
            .collect();
        for m in &mut members {
            m.launch()?;
        }
        for m in &mut members {
            m.wait_ready()?;
        }
        let mut cluster = Cluster {
            members,
            ids: Vec::new(),
            net,
            plan,
        };
        let deadline = Instant::now() + FORM_MAX;
        for i in 0..n {
            let id = loop {
                if let Some(id) = cluster.plan.member_id(i) {
                    break id;
                }
                if Instant::now() > deadline {
                    bail!("{} did not tell its id", cluster.members[i].name);
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            cluster.ids.push(id);
        }
        cluster
            .plan
            .agreed_leader_among(&(0..n).collect::<Vec<_>>(), FORM_MAX)?;
        Ok(cluster)
    }

    /// Every member's client URL, by index.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members whose process runs (paused ones too).
    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|i| self.members[*i].running())
            .collect()
    }

    /// The write leader that every running member names, if they agree
    /// within `limit` (none may be paused: each is asked with a timeout).
    pub fn leader(&self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let seen: Vec<Option<u64>> = self
                .running()
                .into_iter()
                .map(|i| self.plan.leader_seen_by(i))
                .collect();
            if let Some(Some(id)) = seen.first() {
                if seen.iter().all(|s| s == &Some(*id)) {
                    if let Some(i) = self.index_of(*id) {
                        return Some(i);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The write leader's id as member `i` tells it (Status), if it knows one.
    pub fn leader_seen_by(&self, i: usize) -> Option<u64> {
        self.plan.leader_seen_by(i)
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|x| *x == id)
    }

    /// Takes every fault back: the links healed, paused members continued.
    /// Members that are not running are left to the caller (it restarts
    /// them with what it knows of how they stopped).
    pub fn heal(&self) {
        if let Some(net) = &self.net {
            net.heal();
        }
        for m in &self.members {
            m.signal(libc::SIGCONT);
        }
    }

    /// Stops every member (SIGTERM, SIGKILL after `limit`).
    pub fn stop(&mut self, limit: Duration) {
        // All at once, then each waited for.
        for m in &self.members {
            m.signal(libc::SIGCONT);
            m.signal(libc::SIGTERM);
        }
        for m in &mut self.members {
            m.stop(limit);
        }
    }
}
