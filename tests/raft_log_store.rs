//! openraft's log-storage conformance suite (`openraft::testing::log::Suite`)
//! against `WalLogStore` on the WAL: once on real files (std backend, temp
//! dir) and once on the in-memory backend. The state machine here is a small
//! in-memory test fixture: the suite needs one beside the log store.

use cairn::raft::WalLogStore;
use cairn_wal::storage::{MemStorage, StdStorage, Storage};
use cairn_wal::{Config, Wal};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, StorageError};
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

openraft::declare_raft_types!(pub TestConfig: D = String, R = String);

/// Applied state of the fixture state machine.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Applied {
    last_applied: Option<LogIdOf<TestConfig>>,
    membership: StoredMembershipOf<TestConfig>,
    values: Vec<String>,
}

/// The last snapshot built or installed: its meta and its bytes.
type StoredSnapshot = Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>;

#[derive(Clone, Default)]
struct FixtureStateMachine {
    applied: Rc<RefCell<Applied>>,
    snapshot: Rc<RefCell<StoredSnapshot>>,
}

impl RaftSnapshotBuilder<TestConfig> for FixtureStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TestConfig, Vec<u8>>, io::Error> {
        let a = self.applied.borrow().clone();
        let data = serde_json::to_vec(&a).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<TestConfig> {
            last_log_id: a.last_applied,
            last_membership: a.membership.clone(),
        };
        *self.snapshot.borrow_mut() = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TestConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TestConfig> for FixtureStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TestConfig>>, StoredMembershipOf<TestConfig>), io::Error> {
        let a = self.applied.borrow();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            Stream<Item = Result<openraft::storage::EntryResponder<TestConfig>, io::Error>> + Unpin,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut a = self.applied.borrow_mut();
            a.last_applied = Some(entry.log_id());
            let reply = match &entry.payload {
                EntryPayload::Blank => String::new(),
                EntryPayload::Normal(v) => {
                    a.values.push(v.clone());
                    v.clone()
                }
                EntryPayload::Membership(m) => {
                    a.membership =
                        StoredMembershipOf::<TestConfig>::new(Some(entry.log_id()), m.clone());
                    String::new()
                }
            };
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
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let a: Applied = serde_json::from_slice(&snapshot).map_err(io::Error::other)?;
        *self.applied.borrow_mut() = a;
        *self.snapshot.borrow_mut() = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TestConfig, Vec<u8>>>, io::Error> {
        Ok(self
            .snapshot
            .borrow()
            .clone()
            .map(|(meta, snapshot)| SnapshotOf::<TestConfig, Vec<u8>> { meta, snapshot }))
    }
}

/// Small segments, so the suite's logs rotate and get purged across segments.
fn config() -> Config {
    Config {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        spare_segments_max: 1,
    }
}

struct FilesBuilder;

impl
    StoreBuilder<
        TestConfig,
        WalLogStore<TestConfig, StdStorage>,
        FixtureStateMachine,
        tempfile::TempDir,
    > for FilesBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            WalLogStore<TestConfig, StdStorage>,
            FixtureStateMachine,
        ),
        StorageError<TestConfig>,
    > {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let store = open_store(StdStorage::new(dir.path()).expect("dir"), 3).await;
        Ok((dir, store, FixtureStateMachine::default()))
    }
}

struct MemBuilder;

impl StoreBuilder<TestConfig, WalLogStore<TestConfig, MemStorage>, FixtureStateMachine>
    for MemBuilder
{
    async fn build(
        &self,
    ) -> Result<
        ((), WalLogStore<TestConfig, MemStorage>, FixtureStateMachine),
        StorageError<TestConfig>,
    > {
        Ok((
            (),
            open_store(MemStorage::new(), 7).await,
            FixtureStateMachine::default(),
        ))
    }
}

/// A store for `group` on a fresh WAL that already holds another group's
/// entries, so the suite runs on a shared log as in the server.
async fn open_store<S: Storage + 'static>(storage: S, group: u64) -> WalLogStore<TestConfig, S> {
    let (wal, _) = Wal::open(storage, config()).await.expect("open wal");
    for i in 1..=20u64 {
        wal.append(group + 100, [(i, b"other group".as_slice())])
            .await
            .expect("append");
    }
    WalLogStore::new(Rc::new(wal), group)
}

fn run_local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}

#[test]
fn openraft_log_storage_suite_on_files() {
    run_local(Suite::test_all(FilesBuilder)).expect("suite passes");
}

#[test]
fn openraft_log_storage_suite_in_memory() {
    run_local(Suite::test_all(MemBuilder)).expect("suite passes");
}
