//! The meta group (DESIGN §2): one more Raft group on shard core 0, group id
//! [`META_GROUP`] in that core's WAL, holding what is not keyed data: the
//! cluster's membership now (`Cluster.MemberList` reads it), the lease table
//! and the auth store when they are built. Its leader is the write leader.
//!
//! The alarms are here (`Alarm`), mirrored in each member's [`AlarmView`]:
//! as etcd's, they are the cluster's, not one member's.
//!
//! The lease table is here too (`Grant`, `Revoke`): which leases exist and
//! their TTLs. Which keys a lease holds is not: each key's version names its
//! lease, and each shard indexes them (as etcd rebuilds it from its keys).
//! Every member mirrors the applied table in its [`LeaseView`], which the
//! shards consult when a put names a lease.
//!
//! The auth store is here (`Auth`): users, roles, permissions, whether
//! auth is on, and logins (each member keeps the simple token a login's
//! entry names). Every member mirrors it in its [`AuthView`].
//!
//! Each member records itself when it starts (`PutMember`), as etcd publishes
//! its attributes: a changed name or URL is a new entry in the log.
//! Snapshots are the whole state (small), in `shard-0/meta/current.snap`, in
//! the same checksummed file format as a shard's.

use super::alarms::{Alarm, AlarmView};
use super::snapshot_file::{
    encode_snapshot_file, read_snapshot_file, write_durably, SNAPSHOT_FILE,
};
use crate::auth::view::AuthView;
use crate::auth::{AuthCommand, AuthFail, AuthStore, Caller};
use crate::lease::LeaseView;
use crate::raft::GlommioRuntime;
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// The meta group's id in shard 0's WAL (the shard's own group is 0).
pub const META_GROUP: u64 = 1;

/// A member as `Cluster.MemberList` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// One entry of the meta log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Adds a member or replaces its record.
    PutMember(MemberRecord),
    RemoveMember(u64),
    /// The cluster's id, recorded once by the first write leader (a member
    /// that joins later learns it from here).
    SetCluster(u64),
    /// A lease granted (its TTL already raised to the minimum); refused
    /// (`LeaseExists`) if the id is taken.
    Grant {
        id: i64,
        ttl: i64,
    },
    /// Leases revoked or expired; `LeaseNotFound` if the first is unknown
    /// (then nothing changes).
    Revoke {
        ids: Vec<i64>,
    },
    /// An alarm raised or cleared (`Unchanged` if it already was).
    Alarm {
        member: u64,
        alarm: i32,
        raise: bool,
    },
    /// An auth store change or a login, asked by `caller` (checked at
    /// apply: changes need root while auth is on).
    Auth {
        caller: Option<Caller>,
        command: AuthCommand,
    },
}

/// What applying a [`MetaCommand`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    Done,
    LeaseExists,
    LeaseNotFound,
    /// Nothing to change (an alarm raised again, or cleared when it was
    /// not raised).
    Unchanged,
    /// The auth store refused the command (nothing changed).
    AuthRefused(AuthFail),
    /// A login applied at this log index (its simple token's suffix).
    LoggedIn(u64),
    /// An auth change applied at this log index (the member that asked
    /// waits until its own mirror has it before answering).
    AuthDone(u64),
}

impl std::fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaCommand::PutMember(m) => write!(f, "put-member({:x} {})", m.id, m.name),
            MetaCommand::RemoveMember(id) => write!(f, "remove-member({id:x})"),
            MetaCommand::SetCluster(id) => write!(f, "set-cluster({id:x})"),
            MetaCommand::Grant { id, ttl } => write!(f, "grant({id:x} ttl {ttl})"),
            MetaCommand::Revoke { ids } => write!(f, "revoke({} leases)", ids.len()),
            MetaCommand::Alarm {
                member,
                alarm,
                raise,
            } => write!(f, "alarm({member:x} {alarm} raise {raise})"),
            MetaCommand::Auth { caller, command } => {
                let by = caller.as_ref().map_or("-", |c| c.user.as_str());
                write!(f, "auth({} by {by})", command.name())
            }
        }
    }
}

openraft::declare_raft_types!(
    /// The type configuration of the meta group.
    pub MetaRaft:
        D = MetaCommand,
        R = MetaReply,
        AsyncRuntime = GlommioRuntime,
);

/// What the meta group holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub members: BTreeMap<u64, MemberRecord>,
    pub cluster_id: Option<u64>,
    /// Granted leases: id → TTL (s).
    pub leases: BTreeMap<i64, i64>,
    /// Raised alarms (member, type).
    pub alarms: BTreeSet<Alarm>,
    pub auth: AuthStore,
}

/// The state as snapshots before the auth store held it.
#[derive(Deserialize)]
struct MetaStateV4 {
    members: BTreeMap<u64, MemberRecord>,
    cluster_id: Option<u64>,
    leases: BTreeMap<i64, i64>,
    alarms: BTreeSet<Alarm>,
}

/// The state as snapshots before alarms held it.
#[derive(Deserialize)]
struct MetaStateV3 {
    members: BTreeMap<u64, MemberRecord>,
    cluster_id: Option<u64>,
    leases: BTreeMap<i64, i64>,
}

/// The state as snapshots before leases held it.
#[derive(Deserialize)]
struct MetaStateV2 {
    members: BTreeMap<u64, MemberRecord>,
    cluster_id: Option<u64>,
}

/// The state as snapshots before the cluster id was recorded held it.
#[derive(Deserialize)]
struct MetaStateV1 {
    members: BTreeMap<u64, MemberRecord>,
}

/// A snapshot's state: this version's shape, or an older one's, each read
/// whole. A shape that leaves bytes over is not that one, so an older shape
/// never reads the front of a newer snapshot and drops the rest (which
/// would, say, load a snapshot whose auth store does not decode as one with
/// auth off); a snapshot no shape reads whole refuses the start.
fn decode_state(data: &[u8]) -> io::Result<MetaState> {
    fn whole<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Option<T> {
        match postcard::take_from_bytes::<T>(data) {
            Ok((value, [])) => Some(value),
            _ => None,
        }
    }
    if let Some(state) = whole::<MetaState>(data) {
        return Ok(state);
    }
    if let Some(v4) = whole::<MetaStateV4>(data) {
        return Ok(MetaState {
            members: v4.members,
            cluster_id: v4.cluster_id,
            leases: v4.leases,
            alarms: v4.alarms,
            ..MetaState::default()
        });
    }
    if let Some(v3) = whole::<MetaStateV3>(data) {
        return Ok(MetaState {
            members: v3.members,
            cluster_id: v3.cluster_id,
            leases: v3.leases,
            ..MetaState::default()
        });
    }
    if let Some(v2) = whole::<MetaStateV2>(data) {
        return Ok(MetaState {
            members: v2.members,
            cluster_id: v2.cluster_id,
            ..MetaState::default()
        });
    }
    if let Some(v1) = whole::<MetaStateV1>(data) {
        return Ok(MetaState {
            members: v1.members,
            ..MetaState::default()
        });
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the meta group's snapshot is none of the shapes this cairn reads (a newer cairn's?)",
    ))
}

impl MetaState {
    pub fn apply(&mut self, command: &MetaCommand) -> MetaReply {
        match command {
            MetaCommand::PutMember(m) => {
                self.members.insert(m.id, m.clone());
            }
            MetaCommand::RemoveMember(id) => {
                self.members.remove(id);
            }
            MetaCommand::SetCluster(id) => {
                self.cluster_id.get_or_insert(*id);
            }
            MetaCommand::Grant { id, ttl } => {
                if self.leases.contains_key(id) {
                    return MetaReply::LeaseExists;
                }
                self.leases.insert(*id, *ttl);
            }
            MetaCommand::Revoke { ids } => {
                if ids.first().is_some_and(|id| !self.leases.contains_key(id)) {
                    return MetaReply::LeaseNotFound;
                }
                for id in ids {
                    self.leases.remove(id);
                }
            }
            MetaCommand::Alarm {
                member,
                alarm,
                raise,
            } => {
                let changed = if *raise {
                    self.alarms.insert((*member, *alarm))
                } else {
                    self.alarms.remove(&(*member, *alarm))
                };
                if !changed {
                    return MetaReply::Unchanged;
                }
            }
            MetaCommand::Auth { caller, command } => {
                if let Err(fail) = self.auth.apply(caller.as_ref(), command) {
                    return MetaReply::AuthRefused(fail);
                }
            }
        }
        MetaReply::Done
    }
}

#[derive(Default)]
struct Applied {
    log_id: Option<LogIdOf<MetaRaft>>,
    membership: StoredMembershipOf<MetaRaft>,
}

/// openraft's state machine for the meta group. Clones share the state.
#[derive(Clone)]
pub struct MetaStateMachine {
    state: Rc<RefCell<MetaState>>,
    applied: Rc<RefCell<Applied>>,
    dir: Rc<PathBuf>,
    /// The member's mirror of the lease table, kept equal to `state.leases`.
    leases: Arc<LeaseView>,
    /// The member's mirror of the alarms, kept equal to `state.alarms`.
    alarms: Arc<AlarmView>,
    /// The member's mirror of the auth store, kept equal to `state.auth`.
    auth: Arc<AuthView>,
}

impl MetaStateMachine {
    /// Keeps snapshots in `dir`, starting from the one there (if any); a
    /// file that does not verify refuses the start, naming it.
    pub fn open(
        dir: PathBuf,
        leases: Arc<LeaseView>,
        alarms: Arc<AlarmView>,
        auth: Arc<AuthView>,
    ) -> io::Result<Self> {
        let sm = Self {
            state: Rc::default(),
            applied: Rc::default(),
            dir: Rc::new(dir),
            leases,
            alarms,
            auth,
        };
        sm.leases.set_table(std::iter::empty());
        sm.alarms.set_all(std::iter::empty());
        sm.auth.load(&AuthStore::default(), 0);
        if let Some((meta, data)) = read_snapshot_file(&sm.dir.join(SNAPSHOT_FILE))? {
            sm.load(&meta, &data)?;
        }
        Ok(sm)
    }

    /// The cluster's id, once recorded.
    pub fn cluster_id(&self) -> Option<u64> {
        self.state.borrow().cluster_id
    }

    /// The members, by id.
    pub fn members(&self) -> Vec<MemberRecord> {
        self.state.borrow().members.values().cloned().collect()
    }

    fn load(&self, meta: &SnapshotMetaOf<MetaRaft>, data: &[u8]) -> io::Result<()> {
        let state = decode_state(data)?;
        self.leases
            .set_table(state.leases.iter().map(|(id, ttl)| (*id, *ttl)));
        self.alarms.set_all(state.alarms.iter().copied());
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index());
        self.auth.load(&state.auth, index);
        *self.state.borrow_mut() = state;
        let mut a = self.applied.borrow_mut();
        a.log_id = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        Ok(())
    }

    /// Brings the views to a command applied at `index`.
    fn mirror(&self, command: &MetaCommand, index: u64) {
        match command {
            MetaCommand::Auth { caller, command } => {
                self.auth.applied(caller.as_ref(), command, index)
            }
            MetaCommand::Grant { id, ttl } => self.leases.granted(*id, *ttl),
            MetaCommand::Revoke { ids } => self.leases.revoked(ids),
            MetaCommand::Alarm {
                member,
                alarm,
                raise,
            } => self.alarms.change((*member, *alarm), *raise),
            _ => {}
        }
    }

    /// The granted leases (id, TTL).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        let state = self.state.borrow();
        state.leases.iter().map(|(id, ttl)| (*id, *ttl)).collect()
    }

    fn keep(&self, meta: &SnapshotMetaOf<MetaRaft>, data: &[u8]) -> io::Result<()> {
        let (header, prefix) = encode_snapshot_file(meta, data)?;
        write_durably(&self.dir, SNAPSHOT_FILE, &[&header, &prefix, data])
    }
}

impl RaftSnapshotBuilder<MetaRaft> for MetaStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<MetaRaft, Vec<u8>>, io::Error> {
        let data = postcard::to_stdvec(&*self.state.borrow()).map_err(io::Error::other)?;
        let meta = {
            let a = self.applied.borrow();
            SnapshotMetaOf::<MetaRaft> {
                last_log_id: a.log_id,
                last_membership: a.membership.clone(),
            }
        };
        self.keep(&meta, &data)?;
        Ok(SnapshotOf::<MetaRaft, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<MetaRaft> for MetaStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<MetaRaft>>, StoredMembershipOf<MetaRaft>), io::Error> {
        let a = self.applied.borrow();
        Ok((a.log_id, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<MetaRaft>, io::Error>> + Unpin,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let mut reply = MetaReply::Done;
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => {
                    reply = self.state.borrow_mut().apply(command);
                    if reply == MetaReply::Done {
                        self.mirror(command, log_id.index());
                        if let MetaCommand::Auth { command, .. } = command {
                            reply = match command {
                                AuthCommand::Authenticate { .. } => {
                                    MetaReply::LoggedIn(log_id.index())
                                }
                                _ => MetaReply::AuthDone(log_id.index()),
                            };
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    self.applied.borrow_mut().membership =
                        StoredMembershipOf::<MetaRaft>::new(Some(log_id), m.clone());
                }
            }
            self.applied.borrow_mut().log_id = Some(log_id);
            self.auth.reached(log_id.index());
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<MetaRaft>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.keep(meta, &snapshot)?;
        self.load(meta, &snapshot)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<MetaRaft, Vec<u8>>>, io::Error> {
        let kept = read_snapshot_file(&self.dir.join(SNAPSHOT_FILE))?;
        Ok(kept.map(|(meta, snapshot)| SnapshotOf::<MetaRaft, Vec<u8>> { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct V4<'a> {
        members: &'a BTreeMap<u64, MemberRecord>,
        cluster_id: Option<u64>,
        leases: &'a BTreeMap<i64, i64>,
        alarms: &'a BTreeSet<Alarm>,
    }

    fn sample() -> MetaState {
        let mut s = MetaState::default();
        s.apply(&MetaCommand::SetCluster(7));
        s.apply(&MetaCommand::Grant { id: 5, ttl: 10 });
        s.apply(&MetaCommand::Alarm {
            member: 1,
            alarm: 1,
            raise: true,
        });
        s
    }

    fn load(data: &[u8]) -> io::Result<MetaState> {
        let dir = tempfile::tempdir().unwrap();
        let sm = MetaStateMachine::open(
            dir.path().to_path_buf(),
            Arc::new(LeaseView::new()),
            Arc::new(AlarmView::new()),
            Arc::new(AuthView::new(
                crate::auth::view::Tokens::Simple,
                crate::auth::token::DEFAULT_TTL,
            )),
        )?;
        sm.load(&SnapshotMetaOf::<MetaRaft>::default(), data)?;
        let state = sm.state.borrow().clone();
        Ok(state)
    }

    #[test]
    fn a_snapshot_from_before_the_auth_store_loads_with_an_empty_one() {
        let s = sample();
        let old = postcard::to_stdvec(&V4 {
            members: &s.members,
            cluster_id: s.cluster_id,
            leases: &s.leases,
            alarms: &s.alarms,
        })
        .unwrap();
        let loaded = load(&old).unwrap();
        assert_eq!(loaded, s);
        assert_eq!(loaded.auth, AuthStore::default());
    }

    #[test]
    fn a_snapshot_with_more_than_a_known_shape_refuses_to_load() {
        let mut data = postcard::to_stdvec(&sample()).unwrap();
        data.extend_from_slice(&[1, 2, 3]);
        assert!(load(&data).is_err(), "read a newer shape as an older one");
    }

    #[test]
    fn the_auth_store_round_trips_through_a_snapshot_and_refusals_change_nothing() {
        let mut s = sample();
        let add = |name: &str| MetaCommand::Auth {
            caller: None,
            command: AuthCommand::UserAdd {
                name: name.into(),
                hash: Some("h".into()),
            },
        };
        assert_eq!(s.apply(&add("root")), MetaReply::Done);
        let before = s.clone();
        assert_eq!(
            s.apply(&add("root")),
            MetaReply::AuthRefused(AuthFail::UserAlreadyExist)
        );
        assert_eq!(s, before);
        let data = postcard::to_stdvec(&s).unwrap();
        assert_eq!(load(&data).unwrap(), s);
    }
}
