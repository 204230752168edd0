//! [`ShardStateMachine`]: openraft's state machine for one shard, over the
//! shard's MVCC [`Store`].
//!
//! The write leader applies a write to the store when it stamps it
//! (speculatively, DESIGN §2.1), so when the committed entry reaches `apply`
//! the store already holds that revision and nothing is done twice. Entries the
//! store has not seen (replay after a restart, a follower) are applied here.
//! Snapshots are the store as of the last applied revision.

use super::types::{ShardCommand, ShardRaft};
use crate::mvcc::{Store, StoreImage};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

#[derive(Default)]
struct Applied {
    log_id: Option<LogIdOf<ShardRaft>>,
    membership: StoredMembershipOf<ShardRaft>,
    /// Revision of the last applied write (what a snapshot holds).
    revision: i64,
    snapshot: Option<(SnapshotMetaOf<ShardRaft>, Vec<u8>)>,
}

/// See the module docs. Clones share the state (the builder is a clone).
#[derive(Clone)]
pub struct ShardStateMachine {
    store: Rc<RefCell<Store>>,
    applied: Rc<RefCell<Applied>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotImage {
    store: StoreImage,
}

impl ShardStateMachine {
    pub fn new(store: Rc<RefCell<Store>>) -> Self {
        Self {
            store,
            applied: Rc::default(),
        }
    }

    /// Revision of the last applied write.
    pub fn applied_revision(&self) -> i64 {
        self.applied.borrow().revision
    }

    fn apply_one(&self, command: &ShardCommand) {
        let mut store = self.store.borrow_mut();
        match command {
            ShardCommand::Write { revision, changes } => {
                if *revision > store.revision() {
                    store.apply(*revision, changes);
                }
                let mut a = self.applied.borrow_mut();
                a.revision = a.revision.max(*revision);
            }
            ShardCommand::Compact { revision } => {
                if *revision > store.compacted() {
                    store
                        .compact(*revision)
                        .expect("above the compaction point");
                }
            }
        }
    }
}

impl RaftSnapshotBuilder<ShardRaft> for ShardStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardRaft, Vec<u8>>, io::Error> {
        let (log_id, membership, revision) = {
            let a = self.applied.borrow();
            (a.log_id, a.membership.clone(), a.revision)
        };
        let image = SnapshotImage {
            store: self.store.borrow().export_at(revision),
        };
        let data = postcard::to_stdvec(&image).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<ShardRaft> {
            last_log_id: log_id,
            last_membership: membership,
        };
        self.applied.borrow_mut().snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<ShardRaft, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<ShardRaft> for ShardStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<ShardRaft>>, StoredMembershipOf<ShardRaft>), io::Error> {
        let a = self.applied.borrow();
        Ok((a.log_id, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<ShardRaft>, io::Error>> + Unpin,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.apply_one(command),
                EntryPayload::Membership(m) => {
                    self.applied.borrow_mut().membership =
                        StoredMembershipOf::<ShardRaft>::new(Some(log_id), m.clone());
                }
            }
            self.applied.borrow_mut().log_id = Some(log_id);
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<ShardRaft>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let image: SnapshotImage = postcard::from_bytes(&snapshot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let revision = image.store.revision;
        *self.store.borrow_mut() = Store::import(image.store);
        let mut a = self.applied.borrow_mut();
        a.log_id = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        a.revision = revision;
        a.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<ShardRaft, Vec<u8>>>, io::Error> {
        Ok(self
            .applied
            .borrow()
            .snapshot
            .clone()
            .map(|(meta, snapshot)| SnapshotOf::<ShardRaft, Vec<u8>> { meta, snapshot }))
    }
}
