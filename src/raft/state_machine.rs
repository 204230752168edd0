//! [`ShardStateMachine`]: openraft's state machine for one shard, over the
//! shard's MVCC [`Store`].
//!
//! The write leader applies a write to the store when it stamps it
//! (speculatively, DESIGN §2.1), so when the committed entry reaches `apply`
//! the store already holds that revision and nothing is done twice. Entries the
//! store has not seen (replay after a restart, a follower) are applied here.
//! Snapshots are the store as of the last applied revision, written to one
//! checksummed file in the shard's `snapshots/` directory before openraft may
//! purge the log behind them, and loaded from there at start (the file's
//! format and durable writing: `super::snapshot_file`).

use super::parts::{Decision, PartBook};
use super::snapshot_file::{read_snapshot_file, write_durably, write_snapshot_file, SNAPSHOT_FILE};
use super::types::{ShardCommand, ShardRaft};
use crate::mvcc::store::chunked;
use crate::mvcc::{Change, Store, StoreImage};
use crate::sequencer::SharedSequencer;
use crate::watch::WatchHub;
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::EntryPayload;
use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Applied {
    log_id: Option<LogIdOf<ShardRaft>>,
    membership: StoredMembershipOf<ShardRaft>,
    /// Revision of the last applied write (what a snapshot holds).
    revision: i64,
    /// The last snapshot, when there is no directory to keep it in (tests).
    snapshot: Option<(SnapshotMetaOf<ShardRaft>, Vec<u8>)>,
    /// Revisions of the cross-shard parts this shard applied that some
    /// shard may still replay from its log (not every shard has a snapshot
    /// past them). A snapshot keeps this list beside it (`HELD_PARTS_FILE`):
    /// a part inside a snapshot is no longer in the log, and without the
    /// list a replay would take this shard for one that went past the part
    /// without holding it, and drop the other shards' halves.
    held: std::collections::BTreeSet<i64>,
}

/// What a serving shard's state machine reports applied entries to: a
/// follower publishes their watch events and its progress (see
/// [`ShardStateMachine::wire`]).
pub struct Wiring {
    pub seq: Arc<SharedSequencer>,
    pub hub: Arc<WatchHub>,
    /// Whether a key belongs to this shard (its events in the hub).
    pub owns: KeyFilter,
}

/// Whether a key is this shard's.
pub type KeyFilter = Box<dyn Fn(&[u8]) -> bool>;

/// The leader id of a shard group's entries.
pub type LeaderIdOf = openraft::alias::CommittedLeaderIdOf<ShardRaft>;

/// See the module docs. Clones share the state (the builder is a clone).
#[derive(Clone)]
pub struct ShardStateMachine {
    store: Rc<RefCell<Store>>,
    applied: Rc<RefCell<Applied>>,
    /// The leadership (of this group) under which this member stamped the
    /// writes its store holds beyond what is applied; None if it holds
    /// none. An entry of another leadership reaching `apply` means those
    /// writes may never commit: the store is rolled back to what is applied
    /// first (DESIGN §2.1.1 "Uncertain writes"). The write path stamps only
    /// while this is set (see `crate::shard`).
    spec: Rc<RefCell<Option<LeaderIdOf>>>,
    wiring: Rc<RefCell<Option<Wiring>>>,
    /// Where snapshots are kept (None: in memory only, for tests).
    dir: Option<Rc<PathBuf>>,
    /// Decides cross-shard parts (None: parts apply at once, for tests of a
    /// lone shard).
    parts: Option<(Arc<PartBook>, u32)>,
    /// Where the store's size ([`Store::bytes`]) is published after every
    /// apply (a compaction replicated or answered off the shard loop
    /// changes it with no request to the shard).
    size: Option<Arc<AtomicU64>>,
}

/// Beside the snapshot: the cross-shard parts it holds that some shard may
/// still replay (postcard `Vec<i64>` of revisions; see `Applied::held`).
const HELD_PARTS_FILE: &str = "held-parts";

/// Keys encoded per step of a snapshot build.
const SNAPSHOT_CHUNK_KEYS: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotImage {
    store: StoreImage,
}

impl ShardStateMachine {
    /// A state machine whose snapshots live only in memory (tests).
    pub fn new(store: Rc<RefCell<Store>>) -> Self {
        Self {
            store,
            applied: Rc::default(),
            spec: Rc::default(),
            wiring: Rc::default(),
            dir: None,
            parts: None,
            size: None,
        }
    }

    /// Publishes the store's size to `gauge` now and after every apply.
    pub fn with_size_gauge(mut self, gauge: Arc<AtomicU64>) -> Self {
        gauge.store(self.store.borrow().bytes(), Ordering::Relaxed);
        self.size = Some(gauge);
        self
    }

    fn publish_size(&self) {
        if let Some(g) = &self.size {
            g.store(self.store.borrow().bytes(), Ordering::Relaxed);
        }
    }

    /// From now on, applied entries that this member did not stamp publish
    /// their events to `wiring.hub`, and their revisions to `wiring.seq`.
    pub fn wire(&self, wiring: Wiring) {
        let revision = self.store.borrow().revision();
        wiring.seq.note_applied(revision);
        // A cluster member's groups apply what the cluster commits from the
        // moment they start, and a shard may be wired well after the member
        // began to serve (it waited to join): what it applied meanwhile did
        // not pass the hub, so watchers read it from the histories.
        wiring.hub.skip_through(revision);
        *self.wiring.borrow_mut() = Some(wiring);
    }

    /// The leadership this member stamps this shard's writes under (set by
    /// the write leader's failover), or None.
    pub fn stamping_as(&self) -> Option<LeaderIdOf> {
        *self.spec.borrow()
    }

    /// This member stamps this shard's writes as the leader `leader` from
    /// now on: its entries found in `apply` are already in the store.
    pub fn stamp_as(&self, leader: LeaderIdOf) {
        *self.spec.borrow_mut() = Some(leader);
    }

    /// Before applying an entry of `leader`: if the store holds writes
    /// stamped under another leadership beyond what is applied, they may
    /// never commit. Every entry before this one in the log is applied, so
    /// every committed write of that leadership is in `applied`: the rest
    /// is dropped, from the store and from the watch hub's pending events.
    fn leader_of_next(&self, leader: &LeaderIdOf) {
        let stale = matches!(&*self.spec.borrow(), Some(spec) if spec != leader);
        if stale {
            self.roll_back_to(self.applied.borrow().revision);
        }
    }

    /// A write leadership of this member ended, and this member is about to
    /// lead again (failover, step 1), maybe in the same Raft term: its
    /// writes above C may be missing from the log (a part
    /// refused when the leadership ended, a proposal dropped), so they are
    /// dropped from the store and the hub; those in the log come back as
    /// they are applied. Writes up to C committed as they were stamped (C
    /// covers only committed revisions, also while it follows: a Tick of
    /// another leader would have rolled this store back already).
    pub fn drop_speculation(&self) {
        if self.spec.borrow().is_none() {
            return;
        }
        let committed = self
            .wiring
            .borrow()
            .as_ref()
            .map_or(0, |w| w.seq.committed());
        self.roll_back_to(self.applied.borrow().revision.max(committed));
    }

    /// Drops the store's writes above `to` (and their pending events) and
    /// stops stamping as the leadership that made them.
    fn roll_back_to(&self, to: i64) {
        *self.spec.borrow_mut() = None;
        let above = self.store.borrow().revision();
        if above > to {
            self.store.borrow_mut().rollback_to(to);
            if let Some(w) = &*self.wiring.borrow() {
                w.hub.retract_above(to, &w.owns);
            }
            eprintln!(
                "cairn: dropped the uncommitted writes {}..={above} of an ended leadership",
                to + 1
            );
        }
    }

    /// A write this member did not stamp was applied: its events go to the
    /// hub (if watched), released as the visible revision passes it.
    fn publish_applied(&self, revision: i64, changes: &[Change]) {
        if let Some(w) = &*self.wiring.borrow() {
            w.seq.note_applied(revision);
            if w.hub.recording() {
                let events = self.store.borrow().events_at(revision, changes);
                w.hub.publish([(revision, events)], w.seq.committed());
            }
        }
    }

    /// Lets `book` decide this shard's cross-shard parts, telling it which
    /// parts the loaded snapshot holds.
    pub fn with_parts(mut self, book: Arc<PartBook>, shard: u32) -> Self {
        {
            let a = self.applied.borrow();
            book.snapshotted(shard, a.revision);
            book.held_in_snapshot(shard, a.held.iter().copied());
        }
        self.parts = Some((book, shard));
        self
    }

    /// A state machine keeping snapshots in `dir`, starting from the one
    /// there (if any). Refuses a snapshot file that does not verify.
    pub fn open(store: Rc<RefCell<Store>>, dir: PathBuf) -> io::Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let sm = Self {
            store,
            applied: Rc::default(),
            spec: Rc::default(),
            wiring: Rc::default(),
            dir: Some(Rc::new(dir)),
            parts: None,
            size: None,
        };
        if let Some((meta, data)) = read_snapshot_file(&path)? {
            sm.load(&meta, data)?;
            let held_path = sm.dir.as_ref().map(|d| d.join(HELD_PARTS_FILE));
            if let Some(bytes) = held_path.and_then(|p| std::fs::read(p).ok()) {
                let held: Vec<i64> = postcard::from_bytes(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                sm.applied.borrow_mut().held = held.into_iter().collect();
            }
        }
        Ok(sm)
    }

    /// Replaces the state with a snapshot's.
    fn load(&self, meta: &SnapshotMetaOf<ShardRaft>, snapshot: Vec<u8>) -> io::Result<()> {
        let image = if chunked::is_chunked(&snapshot) {
            chunked::decode(&snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        } else {
            // Format 1: one postcard image (written by earlier versions).
            postcard::from_bytes::<SnapshotImage>(&snapshot)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .store
        };
        let revision = image.revision;
        *self.store.borrow_mut() = Store::import(image);
        let mut a = self.applied.borrow_mut();
        a.log_id = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        a.revision = revision;
        if self.dir.is_none() {
            a.snapshot = Some((meta.clone(), snapshot));
        }
        Ok(())
    }

    /// Keeps a snapshot: durably on disk if there is a dir (and not in memory:
    /// the store already holds that state), else in memory.
    fn keep(&self, meta: &SnapshotMetaOf<ShardRaft>, data: &[u8]) -> io::Result<()> {
        match &self.dir {
            Some(dir) => write_snapshot_file(dir, meta, data),
            None => {
                self.applied.borrow_mut().snapshot = Some((meta.clone(), data.to_vec()));
                Ok(())
            }
        }
    }

    /// Revision of the last applied write.
    pub fn applied_revision(&self) -> i64 {
        self.applied.borrow().revision
    }

    fn reached(&self, revision: i64) {
        if let Some((book, shard)) = &self.parts {
            book.reached(*shard, revision);
        }
    }

    /// One request's changes; a write leader applied them already when it
    /// stamped them (so did a snapshot that holds them).
    fn apply_write(&self, revision: i64, changes: &[Change]) {
        let fresh = revision > self.store.borrow().revision();
        if fresh {
            self.store.borrow_mut().apply(revision, changes);
        }
        {
            let mut a = self.applied.borrow_mut();
            a.revision = a.revision.max(revision);
        }
        if fresh {
            self.publish_applied(revision, changes);
        }
    }

    async fn apply_one(&self, command: &ShardCommand) {
        match command {
            ShardCommand::Write { revision, changes } => {
                self.apply_write(*revision, changes);
                self.reached(*revision);
            }
            ShardCommand::Writes { writes } => {
                for (revision, changes) in writes {
                    self.apply_write(*revision, changes);
                }
                if let Some((last, _)) = writes.last() {
                    self.reached(*last);
                }
            }
            ShardCommand::Compact { revision } => {
                let mut store = self.store.borrow_mut();
                if *revision > store.compacted() {
                    store
                        .compact(*revision)
                        .expect("above the compaction point");
                }
                // The shard's state is the same up to the compaction point.
                let mut a = self.applied.borrow_mut();
                a.revision = a.revision.max(*revision);
            }
            ShardCommand::Tick { closed } => self.reached(*closed),
            ShardCommand::Part {
                revision,
                changes,
                participants,
            } => {
                // A write leader applied it when it stamped it (or a snapshot
                // holds it): already decided.
                let decision = if *revision <= self.store.borrow().revision() {
                    None
                } else if let Some((book, shard)) = &self.parts {
                    let store = self.store.borrow().revision();
                    Some(book.hold(*shard, *revision, participants, store).await)
                } else {
                    Some(Decision::Apply)
                };
                if decision == Some(Decision::Apply) {
                    self.store.borrow_mut().apply(*revision, changes);
                    self.publish_applied(*revision, changes);
                }
                if decision != Some(Decision::Drop) {
                    let mut a = self.applied.borrow_mut();
                    a.revision = a.revision.max(*revision);
                    a.held.insert(*revision);
                }
                self.reached(*revision);
            }
        }
        // Before the entry's answer: whoever waited on it sees the new size.
        self.publish_size();
    }
}

impl RaftSnapshotBuilder<ShardRaft> for ShardStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardRaft, Vec<u8>>, io::Error> {
        let (log_id, membership, revision) = {
            let a = self.applied.borrow();
            (a.log_id, a.membership.clone(), a.revision)
        };
        // Encoded a chunk of keys at a time, yielding in between: the shard
        // keeps serving while a large store is encoded. Versions above
        // `revision` (written meanwhile) are left out; see `chunked`.
        let mut data = Vec::new();
        chunked::begin(&mut data, revision);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let last = chunked::chunk(
                &self.store.borrow(),
                after.as_deref(),
                revision,
                SNAPSHOT_CHUNK_KEYS,
                &mut data,
            )
            .map_err(io::Error::other)?;
            match last {
                Some(k) => after = Some(k),
                None => break,
            }
            // A short sleep, not just a yield: the executor then polls for IO
            // completions and requests from other threads too (a task that
            // only re-queues itself keeps the run queue busy until preempted).
            ShardRaft::sleep(Duration::from_micros(50)).await;
        }
        chunked::end(&self.store.borrow(), &mut data);
        let meta = SnapshotMetaOf::<ShardRaft> {
            last_log_id: log_id,
            last_membership: membership,
        };
        // The parts inside this snapshot that some shard may still replay
        // (see `Applied::held`); durable before the snapshot is.
        let held: Vec<i64> = {
            let floor = self
                .parts
                .as_ref()
                .map_or(i64::MIN, |(b, _)| b.min_snapshotted());
            let mut a = self.applied.borrow_mut();
            a.held.retain(|r| *r > floor);
            a.held.range(..=revision).copied().collect()
        };
        if let Some(dir) = &self.dir {
            let (dir, bytes) = (
                dir.as_ref().clone(),
                postcard::to_stdvec(&held).map_err(io::Error::other)?,
            );
            ShardRaft::spawn_blocking(move || write_durably(&dir, HELD_PARTS_FILE, &[&bytes]))
                .await??;
        }
        // Durable before openraft may purge the log behind it; the file is
        // written on a blocking thread, off the shard core.
        let data = match &self.dir {
            Some(dir) => {
                let (dir, m) = (dir.as_ref().clone(), meta.clone());
                ShardRaft::spawn_blocking(move || {
                    write_snapshot_file(&dir, &m, &data).map(|()| data)
                })
                .await??
            }
            None => {
                self.keep(&meta, &data)?;
                data
            }
        };
        if let Some((book, shard)) = &self.parts {
            book.snapshotted(*shard, revision);
        }
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
            // Tests: a slow apply (`sleep(ms)`), or a failing one (`return`).
            fail::fail_point!("raft::apply", |_| Err(io::Error::other(
                "raft::apply failpoint"
            )));
            let log_id = entry.log_id();
            self.leader_of_next(&log_id.leader_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.apply_one(command).await,
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
        self.keep(meta, &snapshot)?;
        *self.spec.borrow_mut() = None;
        self.load(meta, snapshot)?;
        if let Some(w) = &*self.wiring.borrow() {
            let revision = self.store.borrow().revision();
            w.seq.note_applied(revision);
            w.hub.skip_through(revision);
        }
        if let Some((book, shard)) = &self.parts {
            book.reached(*shard, self.applied.borrow().revision);
        }
        self.publish_size();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<ShardRaft, Vec<u8>>>, io::Error> {
        let kept = match &self.dir {
            Some(dir) => read_snapshot_file(&dir.join(SNAPSHOT_FILE))?,
            None => self.applied.borrow().snapshot.clone(),
        };
        Ok(kept.map(|(meta, snapshot)| SnapshotOf::<ShardRaft, Vec<u8>> { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Change {
        Change::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        }
    }

    #[test]
    fn a_batch_of_writes_applies_each_at_its_revision_once() {
        // The leader applied the first two when it stamped them; replay (a
        // follower, or a restart) applies the rest, each at its own revision.
        let store = Rc::new(RefCell::new(Store::new()));
        store.borrow_mut().apply(2, &[put("a", "1")]);
        store.borrow_mut().apply(3, &[put("b", "1")]);
        let sm = ShardStateMachine::new(store.clone());
        let batch = ShardCommand::Writes {
            writes: vec![
                (2, vec![put("a", "1")]),
                (3, vec![put("b", "1")]),
                (4, vec![put("a", "2"), put("c", "1")]),
                (5, vec![Change::Delete { key: "b".into() }]),
            ],
        };
        // Through the log's encoding, as replay reads it.
        let bytes = postcard::to_stdvec(&batch).unwrap();
        let batch: ShardCommand = postcard::from_bytes(&bytes).unwrap();
        futures::executor::block_on(sm.apply_one(&batch));
        assert_eq!(sm.applied_revision(), 5);
        let s = store.borrow();
        assert_eq!(s.revision(), 5);
        let mut want = Store::new();
        want.apply(2, &[put("a", "1")]);
        want.apply(3, &[put("b", "1")]);
        want.apply(4, &[put("a", "2"), put("c", "1")]);
        want.apply(5, &[Change::Delete { key: "b".into() }]);
        for at in 2..=5 {
            assert_eq!(s.hash_kv(at).unwrap(), want.hash_kv(at).unwrap(), "at {at}");
        }
    }

    #[test]
    fn an_applied_compaction_publishes_the_smaller_size_with_no_other_request() {
        let store = Rc::new(RefCell::new(Store::new()));
        let gauge = Arc::new(AtomicU64::new(0));
        let sm = ShardStateMachine::new(store.clone()).with_size_gauge(gauge.clone());
        let writes = (2..12)
            .map(|r| (r, vec![put("k", &"v".repeat(100))]))
            .collect();
        futures::executor::block_on(sm.apply_one(&ShardCommand::Writes { writes }));
        let full = gauge.load(Ordering::Relaxed);
        assert_eq!(full, store.borrow().bytes());
        assert!(full > 1000, "{full}");
        futures::executor::block_on(sm.apply_one(&ShardCommand::Compact { revision: 11 }));
        let compacted = gauge.load(Ordering::Relaxed);
        assert_eq!(compacted, store.borrow().bytes());
        assert!(compacted < full / 5, "{compacted} of {full}");
    }

    #[test]
    fn a_chunked_image_taken_while_the_store_changes_is_the_state_at_its_revision() {
        let mut s = Store::new();
        for i in 0..50 {
            s.apply(i + 2, &[put(&format!("k{i:03}"), "v")]);
        }
        s.apply(60, &[Change::Delete { key: "k010".into() }]);
        let at = s.revision();
        let want = s.export_at(at);
        let mut data = Vec::new();
        chunked::begin(&mut data, at);
        let mut after: Option<Vec<u8>> = None;
        let mut rev = at;
        while let Some(k) = chunked::chunk(&s, after.as_deref(), at, 7, &mut data).unwrap() {
            after = Some(k);
            // Between chunks: new keys before and after the cursor, and
            // changes to existing ones, all above `at`.
            rev += 1;
            s.apply(
                rev,
                &[
                    put("a-new", "x"),
                    put("k049", "changed"),
                    put(&format!("z{rev}"), "x"),
                ],
            );
        }
        chunked::end(&s, &mut data);
        assert_eq!(chunked::decode(&data).unwrap(), want);
        assert!(
            chunked::decode(&data[..data.len() - 1]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn a_compaction_between_chunks_keeps_the_image_readable_at_its_compaction_point() {
        let mut s = Store::new();
        for i in 0..20 {
            s.apply(2 * i + 2, &[put(&format!("k{i:02}"), "1")]);
            s.apply(2 * i + 3, &[put(&format!("k{i:02}"), "2")]);
        }
        let at = s.revision();
        let mut data = Vec::new();
        chunked::begin(&mut data, at);
        let first = chunked::chunk(&s, None, at, 5, &mut data).unwrap();
        s.compact(30).unwrap();
        let mut after = first;
        while let Some(k) = chunked::chunk(&s, after.as_deref(), at, 5, &mut data).unwrap() {
            after = Some(k);
        }
        chunked::end(&s, &mut data);
        let image = chunked::decode(&data).unwrap();
        assert_eq!(image.compacted, 30);
        let restored = Store::import(image);
        for read_at in [30, 35, at] {
            assert_eq!(
                restored.hash_kv(read_at).unwrap(),
                s.hash_kv(read_at).unwrap(),
                "same state at {read_at}"
            );
        }
    }
}
