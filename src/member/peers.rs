//! The member in a cluster: what reaches it from peers ([`MemberInbox`]),
//! writes forwarded to the write leader, and linearizable reads confirmed
//! by it (ReadIndex).
//!
//! - A write that arrives at a member that does not stamp is forwarded to
//!   the write leader (the meta group's leader) as a [`Forward`] frame; the
//!   leader runs it as its own client's and answers the outcome; the
//!   forwarding member answers its client once its own visible revision
//!   covers the outcome (so a client reads its write back from the member
//!   it wrote through). A forwarded request is never forwarded again.
//! - A linearizable read takes the leader's C after the leader confirmed
//!   that it still leads the meta group and every data group (one
//!   heartbeat round each, answered by a quorum), and reads at a local C
//!   at least that high.

use super::Member;
use crate::api::EtcdError;
use crate::mvcc::txn as m;
use crate::raft::board::GroupBoard;
use crate::raft::meta::{MemberRecord, MetaCommand};
use crate::shard::peer::{Group, GroupCtl, RaftIn};
use crate::shard::{RaftTiming, WriteOutcome, META_FRAME_GROUP};
use crate::transport::{CallError, Frame, Inbox, Kind, SharedTransport};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Status;

/// How long a forwarded request, or a leadership confirmation, may take
/// before the client is told `request timed out` (etcd's is 5 s plus the
/// election timeout's doubling).
pub const FORWARD_TTL: Duration = Duration::from_secs(5);

/// What the member knows of the cluster.
pub struct Peers {
    pub transport: SharedTransport,
    /// The groups' leadership, as the shard cores report it.
    pub board: Arc<GroupBoard>,
    /// Each shard core's channel for leadership requests.
    pub raft_in: Vec<flume::Sender<RaftIn>>,
    /// The voters of the cluster's first membership (member ids).
    pub voters: Vec<u64>,
    /// A member of a cluster (several members, or one that joined one).
    pub clustered: bool,
    /// `--initial-cluster-token` (an added member's id depends on it).
    pub token: String,
    /// The member's identity and its data dir (a member that joined records
    /// its cluster's id there once it learns it).
    pub identity: (crate::identity::Identity, std::path::PathBuf),
    pub timing: RaftTiming,
    /// This member as `Cluster.MemberList` shows it.
    pub me: MemberRecord,
}

impl Peers {
    /// A cluster of more than one member.
    pub fn clustered(&self) -> bool {
        self.clustered
    }

    /// The voters' member ids.
    pub fn voter_ids(&self) -> &[u64] {
        &self.voters
    }

    /// Asks a group of this member for something, and waits for the answer.
    pub async fn ask<T>(
        &self,
        shard: usize,
        group: Group,
        make: impl FnOnce(oneshot::Sender<T>) -> GroupCtl,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.raft_in[shard]
            .send_async(RaftIn::Ctl {
                group,
                ctl: make(tx),
            })
            .await
            .map_err(|_| "shard stopped".to_string())?;
        rx.await.map_err(|_| "shard stopped".to_string())
    }

    /// Tells a group of this member something, without waiting.
    pub fn tell(&self, shard: usize, group: Group, ctl: GroupCtl) {
        let _ = self.raft_in[shard].try_send(RaftIn::Ctl { group, ctl });
    }
}

/// Where a write is run (see [`Member::write_route`]).
pub enum Route {
    Here,
    To(u64),
}

/// A request forwarded to the write leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forward {
    /// A write on one shard (`Some`), or across shards touching `touched`.
    Write {
        shard: Option<usize>,
        op: m::RequestOp,
        touched: Vec<(Vec<u8>, Vec<u8>)>,
        /// The auth store revision its rights were checked at (None: not
        /// checked).
        checked: Option<u64>,
    },
    Compact {
        revision: i64,
    },
    /// A member's record for the meta group (its name and client URLs).
    PutMember(MemberRecord),
    /// A membership change.
    Members(super::membership::Change),
    /// A lease RPC (run by the write leader's lessor).
    Lease(super::lease::LeaseCall),
    /// An alarm raised or cleared.
    Alarm {
        alarm: crate::raft::alarms::Alarm,
        raise: bool,
    },
    /// An auth store change or a login.
    Auth {
        caller: Option<crate::auth::Caller>,
        command: crate::auth::AuthCommand,
    },
}

/// The write leader's answer to a [`Forward`].
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Write(Option<WriteOutcome>),
    Lease(super::lease::LeaseAnswer),
    /// Whether the alarm change changed anything.
    Alarm(bool),
    /// What the meta group answered an auth change.
    Auth(crate::raft::meta::MetaReply),
}

/// A gRPC status as it crosses the transport.
#[derive(Debug, Serialize, Deserialize)]
struct WireStatus {
    code: i32,
    message: String,
}

impl From<Status> for WireStatus {
    fn from(s: Status) -> Self {
        WireStatus {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}

impl From<WireStatus> for Status {
    fn from(w: WireStatus) -> Self {
        Status::new(tonic::Code::from_i32(w.code), w.message)
    }
}

type ForwardReply = Result<Answer, WireStatus>;
type ReadIndexReply = Result<ReadIndex, WireStatus>;

/// What a linearizable read must see, as the write leader answers it once
/// it confirmed its leadership.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ReadIndex {
    /// The leader's C: every write acknowledged before the request.
    pub c: i64,
    /// The meta index of the leader's last auth change or login
    /// ([`crate::auth::view::AuthView::changed`]): the auth state every
    /// check after the request must be made against (or a later one).
    pub auth: u64,
}

fn call_error(e: CallError) -> Status {
    match e {
        CallError::Timeout => EtcdError::Timeout.status(),
        CallError::Unreachable(_) => EtcdError::NoLeader.status(),
        CallError::Remote(why) => Status::unavailable(format!("cairn: write leader: {why}")),
    }
}

impl Member {
    /// Where a write goes: here if this member stamps, else to the write
    /// leader (the meta group's leader). Waits up to three election
    /// timeouts for one of them (a leader being elected, or this member
    /// finishing its failover).
    pub async fn write_route(&self) -> Result<Route, Status> {
        if !self.peers.clustered() || self.seq.leading() {
            return Ok(Route::Here);
        }
        let wait = Duration::from_millis(self.peers.timing.election_ms * 3);
        let mut rx = self.peers.board.subscribe();
        let found = tokio::time::timeout(wait, async {
            loop {
                if self.seq.leading() {
                    return Route::Here;
                }
                match self.peers.board.meta_leader() {
                    Some(id) if id != self.member_id => return Route::To(id),
                    _ => {}
                }
                // The board wakes this on leadership changes; the end of
                // this member's own failover shows in the sequencer.
                let _ = tokio::time::timeout(Duration::from_millis(10), rx.changed()).await;
            }
        })
        .await;
        found.map_err(|_| EtcdError::NoLeader.status())
    }

    /// Sends `fwd` to the write leader `leader` and returns its outcome,
    /// once this member's C covers it.
    pub async fn forward(&self, leader: u64, fwd: Forward) -> Result<Option<WriteOutcome>, Status> {
        let outcome = match self.call_leader(leader, &fwd).await? {
            Answer::Write(outcome) => outcome,
            other => return Err(Status::internal(format!("unexpected answer {other:?}"))),
        };
        if let Some(o) = &outcome {
            // Read-your-writes through this member; bounded: the write
            // committed whether or not this member catches up in time.
            let _ = tokio::time::timeout(FORWARD_TTL, self.seq.wait_committed(o.view)).await;
        }
        Ok(outcome)
    }

    /// Sends a lease RPC to the write leader `leader` and returns its
    /// answer (a revoke's once this member's C covers its revision).
    pub async fn forward_lease(
        &self,
        leader: u64,
        call: super::lease::LeaseCall,
    ) -> Result<super::lease::LeaseAnswer, Status> {
        let answer = match self.call_leader(leader, &Forward::Lease(call)).await? {
            Answer::Lease(answer) => answer,
            other => return Err(Status::internal(format!("unexpected answer {other:?}"))),
        };
        if let super::lease::LeaseAnswer::Revoked(Some(revision)) = &answer {
            let _ = tokio::time::timeout(FORWARD_TTL, self.seq.wait_committed(*revision)).await;
        }
        Ok(answer)
    }

    /// Sends an alarm change to the write leader `leader`.
    pub async fn forward_alarm(
        &self,
        leader: u64,
        alarm: crate::raft::alarms::Alarm,
        raise: bool,
    ) -> Result<bool, Status> {
        match self
            .call_leader(leader, &Forward::Alarm { alarm, raise })
            .await?
        {
            Answer::Alarm(changed) => Ok(changed),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn forward_auth(
        &self,
        leader: u64,
        caller: Option<crate::auth::Caller>,
        command: crate::auth::AuthCommand,
    ) -> Result<crate::raft::meta::MetaReply, Status> {
        match self
            .call_leader(leader, &Forward::Auth { caller, command })
            .await?
        {
            Answer::Auth(reply) => Ok(reply),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }

    async fn call_leader(&self, leader: u64, fwd: &Forward) -> Result<Answer, Status> {
        let body = postcard::to_stdvec(fwd).map_err(|e| Status::internal(e.to_string()))?;
        let frame = Frame {
            kind: Kind::Forward,
            group: 0,
            body,
        };
        let reply = self
            .peers
            .transport
            .call(leader, frame, FORWARD_TTL)
            .await
            .map_err(call_error)?;
        let reply: ForwardReply =
            postcard::from_bytes(&reply).map_err(|e| Status::internal(e.to_string()))?;
        reply.map_err(Status::from)
    }

    /// Runs a request forwarded by another member, if this member stamps.
    async fn run_forwarded(self: &Arc<Self>, fwd: Forward) -> Result<Answer, Status> {
        // The member that forwarded it took this one for the write leader: if
        // it is finishing its failover, it waits (bounded); if another
        // member leads, the request is not forwarded again.
        if let Route::To(_) = self.write_route().await? {
            return Err(EtcdError::LeaderChanged.status());
        }
        let outcome = match fwd {
            Forward::Write {
                shard: Some(shard),
                op,
                checked,
                ..
            } if shard < self.shards.len() => {
                self.auth_current(checked)?;
                let deadline = tokio::time::Instant::now() + FORWARD_TTL;
                match self.write_here(shard, op, deadline).await {
                    Ok(answer) => answer.map(Some),
                    Err(_) => Err(EtcdError::LeaderChanged.status()),
                }
            }
            Forward::Write {
                shard: None,
                op,
                touched,
                checked,
            } => {
                self.auth_current(checked)?;
                self.write_across_here(op, touched).await.map(Some)
            }
            Forward::Write { .. } => Err(Status::invalid_argument("no such shard")),
            Forward::Compact { revision } => self.compact_here(revision).await.map(|()| None),
            Forward::PutMember(record) => self.put_member_here(record).await.map(|()| None),
            Forward::Members(change) => self.change_members_here(change).await.map(|_| None),
            Forward::Lease(call) => return self.lease_call_here(call).await.map(Answer::Lease),
            Forward::Alarm { alarm, raise } => {
                return self
                    .change_alarm_here(alarm, raise)
                    .await
                    .map(Answer::Alarm)
            }
            Forward::Auth { caller, command } => {
                return self
                    .auth_change_here(caller, command)
                    .await
                    .map(Answer::Auth)
            }
        };
        outcome.map(Answer::Write)
    }

    /// Records `record` in the meta group (this member leads it).
    async fn put_member_here(&self, record: MemberRecord) -> Result<(), Status> {
        self.meta_write(MetaCommand::PutMember(record))
            .await
            .map(|_| ())
    }

    /// Makes sure the meta group holds this member's record as it is now
    /// (etcd's members publish their attributes once they start).
    pub async fn publish_self(&self) -> Result<(), Status> {
        let members = self
            .ask(0, |reply| crate::shard::ShardMsg::Members { reply })
            .await?
            .unwrap_or_default();
        if members.contains(&self.peers.me) {
            return Ok(());
        }
        match self.write_route().await? {
            Route::Here => self.put_member_here(self.peers.me.clone()).await,
            Route::To(leader) => self
                .forward(leader, Forward::PutMember(self.peers.me.clone()))
                .await
                .map(|_| ()),
        }
    }

    /// What a linearizable read must see: C of the write leader at the
    /// time of the request, once it confirmed its leadership, and its auth
    /// state then.
    pub async fn read_index(&self) -> Result<ReadIndex, Status> {
        if !self.peers.clustered() {
            return Ok(ReadIndex {
                c: self.seq.committed(),
                auth: self.auth.view.changed(),
            });
        }
        let leader = match self.write_route().await? {
            Route::Here => return self.confirmed_read_index().await,
            Route::To(leader) => leader,
        };
        let frame = Frame {
            kind: Kind::ReadIndex,
            group: 0,
            body: Vec::new(),
        };
        let reply = self
            .peers
            .transport
            .call(leader, frame, FORWARD_TTL)
            .await
            .map_err(call_error)?;
        let reply: ReadIndexReply =
            postcard::from_bytes(&reply).map_err(|e| Status::internal(e.to_string()))?;
        reply.map_err(Status::from)
    }

    /// [`Member::read_index`] on the write leader. The meta group's
    /// confirmation waits until it applied its read index, so the auth
    /// state read after it holds every change acknowledged before.
    async fn confirmed_read_index(&self) -> Result<ReadIndex, Status> {
        let c = self.confirmed_c().await?;
        Ok(ReadIndex {
            c,
            auth: self.auth.view.changed(),
        })
    }

    /// C, once this member confirmed it leads every group.
    pub(super) async fn confirmed_c(&self) -> Result<i64, Status> {
        let c = self.seq.committed();
        let mut asks = Vec::with_capacity(self.shards.len() + 1);
        for shard in 0..self.shards.len() {
            asks.push(self.peers.ask(shard, Group::Data, GroupCtl::Confirm));
        }
        asks.push(self.peers.ask(0, Group::Meta, GroupCtl::Confirm));
        let confirmed = tokio::time::timeout(FORWARD_TTL, futures::future::join_all(asks))
            .await
            .map_err(|_| EtcdError::Timeout.status())?;
        for r in confirmed {
            if r.map_err(|_| EtcdError::Stopped.status())?.is_err() {
                return Err(EtcdError::LeaderChanged.status());
            }
        }
        if !self.seq.leading() {
            return Err(EtcdError::LeaderChanged.status());
        }
        Ok(c)
    }
}

/// Routes a member's incoming frames: Raft frames to the shard core that
/// owns the group, forwarded requests and ReadIndex to the member.
pub struct MemberInbox {
    raft_in: Vec<flume::Sender<RaftIn>>,
    member: OnceLock<Weak<Member>>,
}

impl MemberInbox {
    pub fn new(raft_in: Vec<flume::Sender<RaftIn>>) -> Arc<Self> {
        Arc::new(Self {
            raft_in,
            member: OnceLock::new(),
        })
    }

    /// From now on forwarded requests reach `member`.
    pub fn serve(&self, member: &Arc<Member>) {
        let _ = self.member.set(Arc::downgrade(member));
    }

    fn member(&self) -> Result<Arc<Member>, String> {
        self.member
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the member is not serving".to_string())
    }
}

impl Inbox for MemberInbox {
    fn deliver(&self, from: u64, frame: Frame) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match frame.kind {
            Kind::Append | Kind::Vote | Kind::PreVote | Kind::Snapshot | Kind::Transfer => {
                let (shard, group) = if frame.group == META_FRAME_GROUP {
                    (0, Group::Meta)
                } else {
                    (frame.group as usize, Group::Data)
                };
                let Some(tx) = self.raft_in.get(shard).cloned() else {
                    return Box::pin(futures::future::ready(Err(format!(
                        "no group {}",
                        frame.group
                    ))));
                };
                Box::pin(async move {
                    let (reply, rx) = oneshot::channel();
                    tx.send_async(RaftIn::Frame {
                        group,
                        kind: frame.kind,
                        body: frame.body,
                        reply,
                    })
                    .await
                    .map_err(|_| "shard stopped".to_string())?;
                    rx.await.map_err(|_| "shard stopped".to_string())?
                })
            }
            Kind::Forward => {
                let member = self.member();
                Box::pin(async move {
                    let member = member?;
                    let fwd: Forward =
                        postcard::from_bytes(&frame.body).map_err(|e| e.to_string())?;
                    let reply: ForwardReply =
                        member.run_forwarded(fwd).await.map_err(WireStatus::from);
                    postcard::to_stdvec(&reply).map_err(|e| e.to_string())
                })
            }
            Kind::Removed => {
                let member = self.member();
                Box::pin(async move {
                    let member = member?;
                    // Sent by the write leader that removed it (peers are
                    // members: with https:// peer URLs, authenticated).
                    if from != member.member_id {
                        member.fatal.latch(String::from(
                            "the member has been permanently removed from the cluster",
                        ));
                    }
                    Ok(Vec::new())
                })
            }
            Kind::ReadIndex => {
                let member = self.member();
                Box::pin(async move {
                    let member = member?;
                    let reply: ReadIndexReply = if member.seq.leading() {
                        member
                            .confirmed_read_index()
                            .await
                            .map_err(WireStatus::from)
                    } else {
                        Err(EtcdError::LeaderChanged.status().into())
                    };
                    postcard::to_stdvec(&reply).map_err(|e| e.to_string())
                })
            }
        }
    }
}
