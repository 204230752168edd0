//! [`WalLogStore`]: openraft's `RaftLogStorage` for one Raft group, on the
//! WAL of the core that runs the group.
//!
//! Many groups share one [`Wal`]; each store is a view of its own group id.
//! Entries are encoded with postcard; the vote and the committed log id are
//! group metadata; the purged log id is the purge record's metadata.
//!
//! # How it meets openraft's contract
//! - `append` encodes the entries into the WAL's open batch (readable at once),
//!   then spawns a task that waits for the WAL's group commit and calls the
//!   callback: appends of all groups on the core share fsyncs.
//! - `save_vote` returns only once the vote record is durable.
//! - All writes of a group go through the one WAL in call order (LSN order), and
//!   the WAL makes a prefix durable, so IO is never reordered.
//! - `truncate_after` and `purge` write a record; they become durable with the
//!   next sync, always before anything appended after them.
//!
//! The newest entries are also kept decoded in memory (bounded by
//! [`RECENT_ENTRIES_MAX`] and [`RECENT_BYTES_MAX`]): openraft reads each entry
//! back to apply it right after it commits, and the WAL's O_DIRECT files have
//! no page cache, so without this every apply would be a device read.

use cairn_wal::storage::Storage;
use cairn_wal::{Wal, WalError, META_VOTE};
use openraft::alias::{LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, RaftLogReader, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::rc::Rc;

/// Metadata key of the last committed log id (see `save_committed`).
pub const META_COMMITTED: u64 = 1;

/// Bound on the entries kept decoded in memory. Only the entries between
/// append and apply are read back, a few hundred at most (a shard has at most
/// 16384 writes in flight, ~24 per entry at 100 clients).
pub const RECENT_ENTRIES_MAX: usize = 1024;
/// Bound on the encoded bytes of the entries kept in memory (decoded, they
/// take ~1.5× that). 16 MiB here cost ~25 MB of RSS per shard once entries
/// carried batches of writes.
pub const RECENT_BYTES_MAX: usize = 4 << 20;

/// The newest entries of the log, consecutive, with their encoded sizes.
struct Recent<E> {
    entries: VecDeque<(u64, E, usize)>,
    bytes: usize,
}

impl<E> Recent<E> {
    fn push(&mut self, index: u64, entry: E, bytes: usize) {
        if self.entries.back().is_some_and(|(i, _, _)| *i + 1 != index) {
            self.clear();
        }
        self.entries.push_back((index, entry, bytes));
        self.bytes += bytes;
        while self.entries.len() > RECENT_ENTRIES_MAX || self.bytes > RECENT_BYTES_MAX {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, _, b)) = self.entries.pop_front() {
            self.bytes -= b;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

impl<E: Clone> Recent<E> {
    /// Entries `lo..=hi`, if all of them are here.
    fn get(&self, lo: u64, hi: u64) -> Option<Vec<E>> {
        let first = self.entries.front()?.0;
        let last = self.entries.back()?.0;
        if lo < first || hi > last || lo > hi {
            return None;
        }
        let from = (lo - first) as usize;
        let to = (hi - first) as usize;
        Some(
            self.entries
                .range(from..=to)
                .map(|(_, e, _)| e.clone())
                .collect(),
        )
    }
}

/// One Raft group's log on a shared WAL.
pub struct WalLogStore<C: RaftTypeConfig, S: Storage> {
    wal: Rc<Wal<S>>,
    group: u64,
    recent: Rc<RefCell<Recent<C::Entry>>>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig, S: Storage> Clone for WalLogStore<C, S> {
    fn clone(&self) -> Self {
        Self {
            wal: self.wal.clone(),
            group: self.group,
            recent: self.recent.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig, S: Storage> WalLogStore<C, S> {
    /// The log of `group` in `wal`.
    pub fn new(wal: Rc<Wal<S>>, group: u64) -> Self {
        Self {
            wal,
            group,
            recent: Rc::new(RefCell::new(Recent {
                entries: VecDeque::new(),
                bytes: 0,
            })),
            _config: PhantomData,
        }
    }

    pub fn group(&self) -> u64 {
        self.group
    }
}

fn to_io(e: WalError) -> io::Error {
    io::Error::other(e)
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(io::Error::other)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl<C, S> RaftLogReader<C> for WalLogStore<C, S>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned + Clone,
    VoteOf<C>: Serialize + DeserializeOwned,
    S: Storage + 'static,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        use std::ops::Bound;
        let lo = match range.start_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_add(1),
            Bound::Unbounded => None,
        };
        let hi = match range.end_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_sub(1),
            Bound::Unbounded => None,
        };
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if let Some(hit) = self.recent.borrow().get(lo, hi) {
                return Ok(hit);
            }
        }
        let records = self.wal.read(self.group, range).await.map_err(to_io)?;
        records.iter().map(|(_, bytes)| decode(bytes)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.wal
            .meta(self.group, META_VOTE)
            .map(|b| decode(&b))
            .transpose()
    }
}

impl<C, S> RaftLogStorage<C> for WalLogStore<C, S>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned + Clone,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
    S: Storage + 'static,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self
            .wal
            .purged(self.group)
            .map(|(_, meta)| decode(&meta))
            .transpose()?;
        let last_log_id = match self.wal.entry_range(self.group) {
            Some((_, last)) => {
                let entries = self.try_get_log_entries(last..=last).await?;
                let entry = entries
                    .first()
                    .ok_or_else(|| io::Error::other(format!("last entry {last} not readable")))?;
                Some(openraft::entry::RaftEntry::log_id(entry))
            }
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let lsn = self
            .wal
            .set_meta(self.group, META_VOTE, &encode(vote)?)
            .await
            .map_err(to_io)?;
        self.wal.sync(lsn).await.map_err(to_io)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Tests: the committed index is never saved (it may lag anyway).
        fail::fail_point!("raft::save_committed", |_| Ok(()));
        // Durable with the next sync; a lost update only means re-applying
        // from an older (still committed) point after a restart.
        self.wal
            .set_meta(self.group, META_COMMITTED, &encode(&committed)?)
            .await
            .map_err(to_io)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        match self.wal.meta(self.group, META_COMMITTED) {
            Some(b) => decode(&b),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut recent = self.recent.borrow_mut();
            for entry in entries {
                let index = openraft::entry::RaftEntry::index(&entry);
                let bytes = encode(&entry)?;
                recent.push(index, entry, bytes.len());
                encoded.push((index, bytes));
            }
        }
        let lsn = self
            .wal
            .append(self.group, encoded.iter().map(|(i, b)| (*i, b.as_slice())))
            .await
            .map_err(to_io)?;
        let wal = self.wal.clone();
        // Dropping the handle detaches the task; it completes the callback.
        drop(C::spawn(async move {
            callback.io_completed(wal.sync(lsn).await.map_err(to_io));
        }));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        {
            let mut recent = self.recent.borrow_mut();
            while recent.entries.back().is_some_and(|(i, _, _)| *i >= from) {
                let (_, _, b) = recent.entries.pop_back().expect("checked");
                recent.bytes -= b;
            }
        }
        self.wal.truncate(self.group, from).await.map_err(to_io)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        {
            let mut recent = self.recent.borrow_mut();
            while recent
                .entries
                .front()
                .is_some_and(|(i, _, _)| *i <= log_id.index())
            {
                recent.pop_front();
            }
        }
        self.wal
            .purge(self.group, log_id.index(), &encode(&log_id)?)
            .await
            .map_err(to_io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent() -> Recent<u64> {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    #[test]
    fn recent_entries_are_consecutive_and_bounded() {
        let mut r = recent();
        for i in 1..=10 {
            r.push(i, i * 100, 10);
        }
        assert_eq!(r.get(3, 5), Some(vec![300, 400, 500]));
        assert_eq!(r.get(0, 5), None, "index 0 is not here");
        assert_eq!(r.get(9, 11), None, "index 11 is not here");
        // A gap (after a truncate the store did not see) starts over.
        r.push(20, 2000, 10);
        assert_eq!(r.get(10, 10), None);
        assert_eq!(r.get(20, 20), Some(vec![2000]));
        // Bounded by count.
        let mut r = recent();
        for i in 0..(RECENT_ENTRIES_MAX as u64 + 5) {
            r.push(i, i, 1);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(r.get(4, 4), None, "the oldest went");
        // Bounded by bytes.
        let mut r = recent();
        r.push(1, 1, RECENT_BYTES_MAX);
        r.push(2, 2, 1);
        assert_eq!((r.entries.len(), r.bytes), (1, 1));
    }
}
