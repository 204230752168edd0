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

use cairn_wal::storage::Storage;
use cairn_wal::{Wal, WalError, META_VOTE};
use openraft::alias::{LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, RaftLogReader, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::rc::Rc;

/// Metadata key of the last committed log id (see `save_committed`).
pub const META_COMMITTED: u64 = 1;

/// One Raft group's log on a shared WAL.
pub struct WalLogStore<C, S: Storage> {
    wal: Rc<Wal<S>>,
    group: u64,
    _config: PhantomData<C>,
}

impl<C, S: Storage> Clone for WalLogStore<C, S> {
    fn clone(&self) -> Self {
        Self {
            wal: self.wal.clone(),
            group: self.group,
            _config: PhantomData,
        }
    }
}

impl<C, S: Storage> WalLogStore<C, S> {
    /// The log of `group` in `wal`.
    pub fn new(wal: Rc<Wal<S>>, group: u64) -> Self {
        Self {
            wal,
            group,
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
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    S: Storage + 'static,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
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
    C::Entry: Serialize + DeserializeOwned,
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
        for entry in entries {
            let index = openraft::entry::RaftEntry::index(&entry);
            encoded.push((index, encode(&entry)?));
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
        self.wal.truncate(self.group, from).await.map_err(to_io)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.wal
            .purge(self.group, log_id.index(), &encode(&log_id)?)
            .await
            .map_err(to_io)?;
        Ok(())
    }
}
