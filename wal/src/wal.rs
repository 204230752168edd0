//! The write-ahead log: one per shard core, shared by all Raft groups on it.
//!
//! Owns its segment files and an in-memory index of every group's live
//! entries (index → location). Single-threaded (`Rc`/`RefCell`, `!Send`): it
//! lives on the core that owns it. Many tasks on that core may append
//! concurrently; one of them at a time drives the IO (group commit).
//!
//! # Appended and durable
//! [`Wal::append`] encodes records into the open in-memory batch and returns
//! their LSN: the entries are *appended* (readable through [`Wal::read`]) but
//! not durable. [`Wal::sync`] waits until a given LSN is *durable*. The first
//! waiter with nothing in flight becomes the flusher: it takes the whole open
//! batch, writes it with one `write_at` and one `fdatasync`, and wakes the
//! others. Appends made while that happens form the next batch. There is no
//! timer and no artificial delay: the batch is whatever accumulated while the
//! previous sync ran.
//!
//! # Bounds
//! Queued (appended, not yet in flight) record bytes are kept at or under
//! `batch_bytes_max`: an append that would pass it first drives or awaits a
//! flush. With at most one batch in flight, memory is at most about twice that.
//!
//! # Errors
//! After a failed write, fsync or file operation the WAL latches the error; every
//! later call returns it. See [`WalError`].

use crate::error::{Result, WalError};
use crate::format::{
    self, align_down_u64, encode_record, record_bytes, segment_name, segment_salt, spare_name,
    RecordHeader, RecordKind, SegmentHeader, FIRST_RECORD_OFFSET, PAGE,
};
use crate::recovery::{self, Verdict};
use crate::storage::Storage;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Batch buffers kept for reuse (each up to `batch_bytes_max` + 3 pages).
const FREE_BUFS_MAX: usize = 2;

/// Metadata key of a group's vote (hard state).
pub const META_VOTE: u64 = 0;

/// Tunables of a WAL. `Config::default()` suits the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size of every segment file; a multiple of 4096, at least
    /// `batch_bytes_max + 3 pages`.
    pub segment_bytes: u64,
    /// Largest batch written with one `write_at`, and the bound on queued bytes.
    pub batch_bytes_max: usize,
    /// Reclaimed segments kept as spares for reuse; more are deleted.
    pub spare_segments_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            batch_bytes_max: 4 << 20,
            spare_segments_max: 2,
        }
    }
}

impl Config {
    /// Largest payload of a single record.
    pub fn record_bytes_max(&self) -> usize {
        self.batch_bytes_max
            - format::RECORD_HEADER_BYTES
            - format::RECORD_CRC_BYTES
            - format::RECORD_ALIGN
    }

    fn torn_window_bytes(&self) -> u64 {
        (self.batch_bytes_max + 2 * PAGE) as u64
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(WalError::InvalidConfig(m));
        if self.batch_bytes_max < PAGE {
            return bad(format!("batch_bytes_max {} < {PAGE}", self.batch_bytes_max));
        }
        if !self.segment_bytes.is_multiple_of(PAGE as u64) {
            return bad(format!(
                "segment_bytes {} is not a multiple of {PAGE}",
                self.segment_bytes
            ));
        }
        if self.segment_bytes < (self.batch_bytes_max + 3 * PAGE) as u64 {
            return bad(format!(
                "segment_bytes {} < batch_bytes_max {} + 3 pages",
                self.segment_bytes, self.batch_bytes_max
            ));
        }
        Ok(())
    }
}

/// Where a record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u32,
    lsn: u64,
}

/// One group's view: its live entries and its metadata.
#[derive(Default, Debug)]
struct Group {
    /// Index of `entries[0]`.
    first_index: u64,
    entries: VecDeque<Loc>,
    /// Index the next append must have; None while the group never had entries.
    next_index: Option<u64>,
    /// Last purged index and the caller's metadata for it.
    purged: Option<(u64, Vec<u8>)>,
    meta: BTreeMap<u64, Vec<u8>>,
}

impl Group {
    fn last_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first_index + self.entries.len() as u64 - 1)
    }

    fn check_append(&self, group: u64, index: u64) -> Result<()> {
        if let Some((p, _)) = &self.purged {
            if index <= *p {
                return Err(WalError::Compacted {
                    group,
                    index,
                    purged: *p,
                });
            }
        }
        match self.next_index {
            Some(n) if n != index => Err(WalError::OutOfOrder {
                group,
                expected: n,
                got: index,
            }),
            _ => Ok(()),
        }
    }

    fn push(&mut self, index: u64, loc: Loc) {
        if self.entries.is_empty() {
            self.first_index = index;
        }
        self.entries.push_back(loc);
        self.next_index = Some(index + 1);
    }

    /// Drops entries `>= index`; the next append must have `index`.
    fn truncate(&mut self, index: u64) {
        if index <= self.first_index {
            self.entries.clear();
        } else {
            let keep = (index - self.first_index) as usize;
            self.entries.truncate(keep);
        }
        self.next_index = Some(index);
    }

    /// Drops entries `<= index`.
    fn purge(&mut self, index: u64, meta: Vec<u8>) {
        let drop = (index + 1).saturating_sub(self.first_index) as usize;
        if drop >= self.entries.len() {
            self.entries.clear();
        } else {
            self.entries.drain(..drop);
        }
        self.first_index = self.first_index.max(index + 1);
        if self.next_index.is_none_or(|n| n <= index) {
            self.next_index = Some(index + 1);
        }
        self.purged = Some((index, meta));
    }

    fn loc(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first_index)?;
        self.entries.get(i as usize).copied()
    }
}

/// Records encoded for one segment, written with one `write_at`.
struct Batch {
    seq: u64,
    /// Page-aligned file offset where `buf` goes.
    start: u64,
    /// The rewritten partial page prefix, then records.
    buf: Vec<u8>,
    first_lsn: u64,
    last_lsn: u64,
    /// Record bytes (not the prefix) in this batch.
    record_bytes: usize,
    /// This batch starts a new segment: rotate before writing it.
    new_segment: bool,
}

impl Batch {
    fn holds(&self, loc: &Loc) -> bool {
        loc.seq == self.seq && loc.lsn >= self.first_lsn && loc.lsn <= self.last_lsn
    }
}

struct Segment<F> {
    seq: u64,
    file: Rc<F>,
}

struct Inner<F> {
    cfg: Config,
    groups: BTreeMap<u64, Group>,
    /// Live segments, oldest first; the last one is being written.
    segments: VecDeque<Segment<F>>,
    /// The next segment, named and directory-synced ahead of time; its header
    /// is written together with its first batch.
    next_segment: Option<Segment<F>>,
    /// Sequence number of the next segment the flusher starts.
    next_seq: u64,
    /// A task is preparing `next_segment`.
    preparing: bool,
    /// Spare numbers available for rotation.
    spares: Vec<u64>,
    next_spare: u64,
    /// Segment that appends go to, and the end of encoded data in it.
    cur_seq: u64,
    cur_offset: u64,
    /// Bytes of the current partial page (from its page start to `cur_offset`)
    /// as of the last sealed batch of the current segment.
    tail: Vec<u8>,
    next_lsn: u64,
    durable_lsn: u64,
    /// LSN of the newest Purge or Truncate record: reclaim waits until it is
    /// durable (a segment freed by a drop that is lost in a crash would be needed).
    last_drop_lsn: u64,
    /// Close the current segment before the next record (it was written under
    /// another config).
    rotate_next: bool,
    reclaiming: bool,
    /// Batch buffers to reuse (no page faults on fresh memory every batch).
    free_bufs: Vec<Vec<u8>>,
    open: Option<Batch>,
    sealed: VecDeque<Batch>,
    queued_bytes: usize,
    inflight: Option<Rc<Batch>>,
    flushing: bool,
    flush_epoch: u64,
    waiters: Vec<Waker>,
    fatal: Option<WalError>,
}

/// Counters for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStats {
    pub batches: u64,
    pub records: u64,
    pub bytes_written: u64,
    pub rotations: u64,
    pub segments_reclaimed: u64,
}

/// The write-ahead log. See the module docs.
pub struct Wal<S: Storage> {
    storage: Rc<S>,
    inner: RefCell<Inner<S::File>>,
    stats: Cell<WalStats>,
    /// How long each batch took to become durable: its write and its sync
    /// (with `O_DSYNC` segments the write is the sync).
    fsync: std::sync::Arc<crate::Histogram>,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes zeroed after the end of valid data (a torn or stale tail).
    pub tail_zeroed_bytes: u64,
}

impl<S: Storage> Wal<S> {
    /// Opens (or creates) the WAL in `storage`, replaying every segment.
    ///
    /// Refuses with [`WalError::Corrupt`] (naming file and offset) when a
    /// record in the middle of the log is damaged; a torn tail is truncated.
    pub async fn open(storage: S, cfg: Config) -> Result<(Self, OpenReport)> {
        cfg.validate()?;
        let storage = Rc::new(storage);
        let names = storage
            .list()
            .await
            .map_err(|e| WalError::io("list", storage.describe("."), e))?;
        let mut seqs = Vec::new();
        let mut spares = Vec::new();
        for name in &names {
            if let Some(seq) = format::parse_segment_name(name) {
                seqs.push(seq);
            } else if let Some(n) = format::parse_spare_name(name) {
                spares.push(n);
            } else if name.ends_with(".tmp") {
                storage
                    .remove(name)
                    .await
                    .map_err(|e| WalError::io("remove", storage.describe(name), e))?;
            }
        }
        seqs.sort_unstable();
        spares.sort_unstable();
        for w in seqs.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(WalError::Corrupt {
                    file: storage.describe(&segment_name(w[0] + 1)),
                    offset: 0,
                    reason: format!(
                        "segment {} is missing between {} and {}",
                        w[0] + 1,
                        w[0],
                        w[1]
                    ),
                });
            }
        }

        let mut groups: BTreeMap<u64, Group> = BTreeMap::new();
        let mut replay_groups: BTreeMap<u64, ReplayGroup> = BTreeMap::new();
        let mut segments = VecDeque::new();
        let mut report = OpenReport {
            segments: seqs.len(),
            ..Default::default()
        };
        let mut expected_first = None;
        let mut next_lsn = 1;
        let mut last_drop_lsn = 0;
        // Writer position, set from the last segment.
        let mut tail_state: Option<(u64, u64, Vec<u8>, SegmentHeader, u64)> = None; // seq, offset, tail, header, zero_to

        // Segment headers first: judging segment i needs segment i+1's first LSN.
        // The last segment may be one prepared ahead whose header (written with
        // its first batch) never became durable.
        let mut files = Vec::new();
        let mut prepared = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let name = segment_name(seq);
            let file = storage
                .open(&name)
                .await
                .map_err(|e| WalError::io("open", storage.describe(&name), e))?;
            let len = storage
                .file_len(&file)
                .await
                .map_err(|e| WalError::io("stat", storage.describe(&name), e))?;
            let page = storage
                .read_at(&file, 0, PAGE.min(len as usize))
                .await
                .map_err(|e| WalError::io("read", storage.describe(&name), e))?;
            let header = SegmentHeader::decode(&page);
            let unwritten = header.as_ref().map_or(true, |h| h.seq != seq);
            if unwritten && i + 1 == seqs.len() {
                prepared = Some((seq, name, Rc::new(file), len));
                continue;
            }
            let first = header
                .map(|h| h.first_lsn)
                .map_err(|reason| WalError::Corrupt {
                    file: storage.describe(&name),
                    offset: 0,
                    reason,
                })?;
            files.push((seq, name, Rc::new(file), len, first));
        }

        for i in 0..files.len() {
            let (seq, name, file, len, _) = &files[i];
            let bytes = storage
                .read_at(file, 0, *len as usize)
                .await
                .map_err(|e| WalError::io("read", storage.describe(name), e))?;
            let corrupt = |d: recovery::Damage| WalError::Corrupt {
                file: storage.describe(name),
                offset: d.offset,
                reason: d.reason,
            };
            let scan = recovery::scan_segment(&bytes, *seq, expected_first).map_err(corrupt)?;
            let next_first = files.get(i + 1).map(|f| f.4);
            let verdict = recovery::judge(&scan, next_first).map_err(corrupt)?;
            for r in &scan.records {
                let h = &r.header;
                let loc = Loc {
                    seq: *seq,
                    offset: r.offset,
                    len: h.len,
                    lsn: h.lsn,
                };
                replay(
                    &mut groups,
                    h,
                    format::payload(&bytes, r.offset as usize, h),
                    loc,
                    Some(&mut replay_groups),
                )
                .map_err(|reason| WalError::Corrupt {
                    file: storage.describe(name),
                    offset: r.offset,
                    reason,
                })?;
                if matches!(h.kind, RecordKind::Purge | RecordKind::Truncate) {
                    last_drop_lsn = h.lsn;
                }
            }
            report.records += scan.records.len() as u64;
            next_lsn = scan.last_lsn() + 1;
            expected_first = Some(next_lsn);
            if let Verdict::Tail { zero_to } = verdict {
                let end = scan.end_offset;
                let page_start = align_down_u64(end, PAGE as u64);
                let tail = bytes[page_start as usize..end as usize].to_vec();
                tail_state = Some((*seq, end, tail, scan.header, zero_to));
            }
            segments.push_back(Segment {
                seq: *seq,
                file: file.clone(),
            });
        }

        let mut next_segment = None;
        if let Some((seq, name, file, len)) = prepared {
            // Unwritten header: the first batch never became durable, unless
            // valid records lie beyond the torn window (then page 0 is damaged).
            let bytes = storage
                .read_at(&file, 0, len as usize)
                .await
                .map_err(|e| WalError::io("read", storage.describe(&name), e))?;
            let from = FIRST_RECORD_OFFSET as usize + cfg.torn_window_bytes() as usize;
            if let Some(at) = recovery::find_valid_record(
                &bytes,
                from,
                segment_salt(seq),
                next_lsn,
                cfg.record_bytes_max(),
            ) {
                return Err(WalError::Corrupt {
                    file: storage.describe(&name),
                    offset: 0,
                    reason: format!(
                        "segment header is unreadable but a valid record follows at offset {at}"
                    ),
                });
            }
            next_segment = Some(Segment { seq, file });
        }

        for (gid, t) in &replay_groups {
            if let Some(Gap {
                lo: expected,
                jumped_to: index,
                seq,
                offset,
                ..
            }) = t.gap
            {
                return Err(WalError::Corrupt {
                    file: storage.describe(&segment_name(seq)),
                    offset,
                    reason: format!("group {gid}: entry {index} follows {expected} with no purge covering the gap: records are missing"),
                });
            }
        }
        let next_spare = spares.last().map_or(0, |n| n + 1);
        let inner = Inner {
            cfg: cfg.clone(),
            groups,
            next_seq: segments.back().map_or_else(
                || {
                    next_segment
                        .as_ref()
                        .map_or(1, |s: &Segment<S::File>| s.seq)
                },
                |s| s.seq + 1,
            ),
            segments,
            next_segment,
            preparing: false,
            spares,
            next_spare,
            cur_seq: 0,
            cur_offset: 0,
            tail: Vec::new(),
            next_lsn,
            durable_lsn: next_lsn - 1,
            last_drop_lsn,
            rotate_next: false,
            reclaiming: false,
            free_bufs: Vec::new(),
            open: None,
            sealed: VecDeque::new(),
            queued_bytes: 0,
            inflight: None,
            flushing: false,
            flush_epoch: 0,
            waiters: Vec::new(),
            fatal: None,
        };
        let wal = Wal {
            storage,
            inner: RefCell::new(inner),
            stats: Cell::new(WalStats::default()),
            fsync: std::sync::Arc::new(crate::Histogram::fsync()),
        };

        match tail_state {
            Some((seq, offset, tail, header, zero_to)) => {
                // Zero whatever follows the valid data in the torn window, so no
                // half-written record from before the crash can verify later.
                let page_start = align_down_u64(offset, PAGE as u64);
                let zero_end = format::align_up(zero_to as usize, PAGE) as u64;
                if zero_end > page_start {
                    let mut buf = tail.clone();
                    buf.resize((zero_end - page_start) as usize, 0);
                    let file = wal
                        .inner
                        .borrow()
                        .segments
                        .back()
                        .expect("last segment")
                        .file
                        .clone();
                    let name = segment_name(seq);
                    wal.storage
                        .write_at(&file, page_start, &buf)
                        .await
                        .map_err(|e| WalError::io("write", wal.storage.describe(&name), e))?;
                    wal.storage
                        .sync(&file)
                        .await
                        .map_err(|e| WalError::io("fsync", wal.storage.describe(&name), e))?;
                    report.tail_zeroed_bytes = zero_end - offset;
                }
                let mut inner = wal.inner.borrow_mut();
                inner.cur_seq = seq;
                inner.cur_offset = offset;
                inner.tail = tail;
                // Keep writing this segment only if it was made for this config.
                inner.rotate_next = header.segment_bytes != cfg.segment_bytes
                    || header.torn_window_bytes != cfg.torn_window_bytes();
            }
            None => {
                // No written segment: the first append starts the next one.
                let mut inner = wal.inner.borrow_mut();
                inner.cur_seq = inner.next_seq - 1;
                inner.cur_offset = cfg.segment_bytes; // forces a rotation on first append
            }
        }
        wal.prepare_next().await?;
        Ok((wal, report))
    }

    /// Appends entries `(index, payload)` of `group`, consecutive indexes.
    /// Returns the LSN of the last record; the entries are readable now and
    /// durable once [`Wal::sync`] of that LSN returns.
    pub async fn append<'a, I>(&self, group: u64, entries: I) -> Result<u64>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
    {
        let mut last = self.last_lsn();
        for (index, payload) in entries {
            self.check_fatal()?;
            {
                let inner = self.inner.borrow();
                let g = inner.groups.get(&group);
                if let Some(g) = g {
                    g.check_append(group, index)?;
                }
            }
            last = self
                .put_record(RecordKind::Entry, group, index, payload)
                .await?;
        }
        Ok(last)
    }

    /// Removes `group`'s entries `>= index` (a Raft log conflict). Returns the
    /// LSN of the record, durable after [`Wal::sync`].
    pub async fn truncate(&self, group: u64, index: u64) -> Result<u64> {
        self.check_fatal()?;
        {
            let inner = self.inner.borrow();
            let Some(g) = inner.groups.get(&group) else {
                return Ok(inner.next_lsn - 1);
            };
            if let Some((p, _)) = &g.purged {
                if index <= *p {
                    return Err(WalError::Compacted {
                        group,
                        index,
                        purged: *p,
                    });
                }
            }
            if g.next_index.is_none_or(|n| index >= n) {
                return Ok(inner.next_lsn - 1); // nothing there to remove
            }
        }
        self.put_record(RecordKind::Truncate, group, index, &[])
            .await
    }

    /// Removes `group`'s entries `<= index` (after a snapshot), remembering
    /// `meta` (e.g. the purged log id) as the group's purge point.
    pub async fn purge(&self, group: u64, index: u64, meta: &[u8]) -> Result<u64> {
        self.check_fatal()?;
        {
            let inner = self.inner.borrow();
            if let Some((p, _)) = inner.groups.get(&group).and_then(|g| g.purged.as_ref()) {
                if index < *p {
                    return Err(WalError::Compacted {
                        group,
                        index,
                        purged: *p,
                    });
                }
            }
        }
        self.put_record(RecordKind::Purge, group, index, meta).await
    }

    /// Sets `group`'s metadata `key` (e.g. [`META_VOTE`]) to `value`. Returns
    /// the LSN; call [`Wal::sync`] to make it durable.
    pub async fn set_meta(&self, group: u64, key: u64, value: &[u8]) -> Result<u64> {
        self.check_fatal()?;
        self.put_record(RecordKind::Meta, group, key, value).await
    }

    /// Waits until every record up to `lsn` is durable, flushing as needed.
    pub async fn sync(&self, lsn: u64) -> Result<()> {
        let lsn = lsn.min(self.last_lsn());
        let mut yielded = false;
        loop {
            let epoch = {
                let inner = self.inner.borrow();
                if let Some(e) = &inner.fatal {
                    return Err(e.clone());
                }
                if inner.durable_lsn >= lsn {
                    return Ok(());
                }
                if !inner.flushing {
                    None
                } else {
                    Some(inner.flush_epoch)
                }
            };
            match epoch {
                None if !yielded => {
                    // Let tasks that are ready to run (appenders woken by the
                    // last flush) append first, so they join this batch. One
                    // trip through the run queue, not a timer. Then look
                    // again: one of them may have flushed our record.
                    crate::yield_once::yield_now().await;
                    yielded = true;
                }
                None => {
                    yielded = false;
                    self.flush_once().await?
                }
                Some(epoch) => FlushDone { wal: self, epoch }.await,
            }
        }
    }

    /// Makes everything appended so far durable.
    pub async fn sync_all(&self) -> Result<()> {
        self.sync(self.last_lsn()).await
    }

    /// LSN of the last appended record (0 if none).
    pub fn last_lsn(&self) -> u64 {
        self.inner.borrow().next_lsn - 1
    }

    /// LSN up to which everything is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.inner.borrow().durable_lsn
    }

    /// Groups that have entries, a purge point or metadata.
    pub fn groups(&self) -> Vec<u64> {
        self.inner.borrow().groups.keys().copied().collect()
    }

    /// `(first, last)` index of `group`'s live entries, if it has any.
    pub fn entry_range(&self, group: u64) -> Option<(u64, u64)> {
        let inner = self.inner.borrow();
        let g = inner.groups.get(&group)?;
        Some((g.first_index, g.last_index()?))
    }

    /// Last purged index of `group` and the metadata given to [`Wal::purge`].
    pub fn purged(&self, group: u64) -> Option<(u64, Vec<u8>)> {
        self.inner.borrow().groups.get(&group)?.purged.clone()
    }

    /// `group`'s metadata value under `key`.
    pub fn meta(&self, group: u64, key: u64) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .groups
            .get(&group)?
            .meta
            .get(&key)
            .cloned()
    }

    /// The latched fatal error, if any.
    pub fn fatal_error(&self) -> Option<WalError> {
        self.inner.borrow().fatal.clone()
    }

    /// The latency of making a batch durable, write + sync (shared: readable
    /// from other threads).
    pub fn fsync_histogram(&self) -> std::sync::Arc<crate::Histogram> {
        self.fsync.clone()
    }

    pub fn stats(&self) -> WalStats {
        self.stats.get()
    }

    /// Record bytes appended but not yet taken by a flush (bounded by `batch_bytes_max`).
    pub fn queued_bytes(&self) -> usize {
        self.inner.borrow().queued_bytes
    }

    /// Panics if an internal invariant does not hold. Cheap; tests call it after
    /// every step.
    pub fn check_invariants(&self) {
        let inner = self.inner.borrow();
        assert!(
            inner.durable_lsn < inner.next_lsn,
            "durable <= last appended"
        );
        // Backpressure keeps queued bytes within batch_bytes_max, plus at most
        // one rotation checkpoint (restated purge points and metadata).
        assert!(
            inner.queued_bytes <= 2 * inner.cfg.batch_bytes_max,
            "queued bytes {} over the bound",
            inner.queued_bytes
        );
        for b in inner
            .sealed
            .iter()
            .chain(inner.open.iter())
            .chain(inner.inflight.as_deref())
        {
            assert!(
                b.record_bytes <= inner.cfg.batch_bytes_max,
                "a batch fits the torn window"
            );
        }
        let queued: usize = inner
            .sealed
            .iter()
            .chain(inner.open.iter())
            .map(|b| b.record_bytes)
            .sum();
        assert_eq!(queued, inner.queued_bytes, "queued bytes match the batches");
        for w in inner.segments.iter().collect::<Vec<_>>().windows(2) {
            assert_eq!(w[0].seq + 1, w[1].seq, "live segments are consecutive");
        }
        assert!(
            inner.rotate_next || inner.cur_offset <= inner.cfg.segment_bytes,
            "writer inside its segment unless a rotation is pending"
        );
        for (gid, g) in &inner.groups {
            if let (Some(last), Some(next)) = (g.last_index(), g.next_index) {
                assert_eq!(
                    last + 1,
                    next,
                    "group {gid}: next index follows the last entry"
                );
            }
            if let (Some((p, _)), false) = (&g.purged, g.entries.is_empty()) {
                assert!(
                    g.first_index > *p,
                    "group {gid}: live entries above the purge point"
                );
            }
            let mut prev_lsn = 0;
            for l in &g.entries {
                assert!(l.lsn > prev_lsn, "group {gid}: entry LSNs increase");
                prev_lsn = l.lsn;
                assert!(l.lsn < inner.next_lsn);
            }
        }
    }

    /// Number of live segment files.
    pub fn segment_count(&self) -> usize {
        self.inner.borrow().segments.len()
    }

    /// Reads `group`'s entries in `range` (clamped to the live entries), in
    /// index order, from memory if not yet written, else from disk with the
    /// checksum verified.
    pub async fn read(
        &self,
        group: u64,
        range: impl RangeBounds<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.check_fatal()?;
        let (locs, mut out, first) = {
            let inner = self.inner.borrow();
            let Some(g) = inner.groups.get(&group) else {
                return Ok(Vec::new());
            };
            let Some(last) = g.last_index() else {
                return Ok(Vec::new());
            };
            let lo = match range.start_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => i.saturating_add(1),
                Bound::Unbounded => g.first_index,
            }
            .max(g.first_index);
            let hi = match range.end_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => match i.checked_sub(1) {
                    Some(i) => i,
                    None => return Ok(Vec::new()),
                },
                Bound::Unbounded => last,
            }
            .min(last);
            if lo > hi {
                return Ok(Vec::new());
            }
            let locs: Vec<Loc> = (lo..=hi).map(|i| g.loc(i).expect("live entry")).collect();
            // Entries still in memory are copied now, under the same borrow.
            let out: Vec<Option<Vec<u8>>> =
                locs.iter().map(|l| inner.payload_in_memory(l)).collect();
            (locs, out, lo)
        };
        // Disk reads for the rest, coalesced per segment.
        let mut i = 0;
        while i < locs.len() {
            if out[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let span_max = 1u64 << 20;
            while j < locs.len()
                && out[j].is_none()
                && locs[j].seq == locs[i].seq
                && locs[j].offset >= locs[i].offset
                && locs[j].offset + record_bytes(locs[j].len as usize) as u64 - locs[i].offset
                    <= span_max
            {
                j += 1;
            }
            let start = align_down_u64(locs[i].offset, PAGE as u64);
            let end_byte = locs[i..j]
                .iter()
                .map(|l| l.offset + record_bytes(l.len as usize) as u64)
                .max()
                .expect("non-empty");
            let end = format::align_up(end_byte as usize, PAGE) as u64;
            let file = self.segment_file(locs[i].seq)?;
            let name = segment_name(locs[i].seq);
            let bytes = self
                .storage
                .read_at(&file, start, (end - start) as usize)
                .await
                .map_err(|e| self.latch(WalError::io("read", self.storage.describe(&name), e)))?;
            for k in i..j {
                let l = locs[k];
                let at = (l.offset - start) as usize;
                let bad = |reason: String| WalError::Corrupt {
                    file: self.storage.describe(&name),
                    offset: l.offset,
                    reason,
                };
                let h = format::decode_header(&bytes, at, usize::MAX)
                    .map_err(|d| bad(d.to_string()))?;
                if h.lsn != l.lsn
                    || h.len != l.len
                    || !format::crc_ok(&bytes, at, &h, segment_salt(l.seq))
                {
                    return Err(bad("entry does not verify on read".into()));
                }
                out[k] = Some(format::payload(&bytes, at, &h).to_vec());
            }
            i = j;
        }
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(k, p)| (first + k as u64, p.expect("filled")))
            .collect())
    }

    /// Background upkeep for the owner to call now and then (after rotations,
    /// or on a timer): turns segments that no group needs any more into spares,
    /// and prepares the next segment, so that a rotation on the write path
    /// waits for neither a rename, a directory fsync nor a zero-filled file.
    ///
    /// A full file system here is [`WalError::NoSpace`]: nothing was written
    /// and nothing is latched; call again once there is room (the writes
    /// already in the current segment go on until it is full).
    pub async fn maintain(&self) -> Result<()> {
        self.check_fatal()?;
        self.reclaim().await?;
        self.prepare_next().await
    }

    // ---- internals ----

    fn check_fatal(&self) -> Result<()> {
        match &self.inner.borrow().fatal {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn latch(&self, e: WalError) -> WalError {
        let mut inner = self.inner.borrow_mut();
        if inner.fatal.is_none() && e.is_fatal() {
            inner.fatal = Some(e.clone());
        }
        inner.fatal.clone().unwrap_or(e)
    }

    fn segment_file(&self, seq: u64) -> Result<Rc<S::File>> {
        let inner = self.inner.borrow();
        inner
            .segments
            .iter()
            .find(|s| s.seq == seq)
            .map(|s| s.file.clone())
            .ok_or_else(|| WalError::Corrupt {
                file: self.storage.describe(&segment_name(seq)),
                offset: 0,
                reason: "segment of a live entry is gone".into(),
            })
    }

    /// Encodes one record into the open batch, waiting for queue space first.
    async fn put_record(
        &self,
        kind: RecordKind,
        group: u64,
        index: u64,
        payload: &[u8],
    ) -> Result<u64> {
        let max = self.inner.borrow().cfg.record_bytes_max();
        if payload.len() > max {
            return Err(WalError::RecordTooLarge {
                bytes: payload.len(),
                max,
            });
        }
        let size = record_bytes(payload.len());
        // Backpressure: queued bytes stay within batch_bytes_max.
        loop {
            let epoch = {
                let inner = self.inner.borrow();
                if let Some(e) = &inner.fatal {
                    return Err(e.clone());
                }
                if inner.queued_bytes == 0 || inner.queued_bytes + size <= inner.cfg.batch_bytes_max
                {
                    break;
                }
                if inner.flushing {
                    Some(inner.flush_epoch)
                } else {
                    None
                }
            };
            match epoch {
                None => self.flush_once().await?,
                Some(epoch) => FlushDone { wal: self, epoch }.await,
            }
        }
        let mut inner = self.inner.borrow_mut();
        // The group checks again: another task may have appended while we waited.
        if kind == RecordKind::Entry {
            if let Some(g) = inner.groups.get(&group) {
                g.check_append(group, index)?;
            }
        }
        Ok(inner.encode(kind, group, index, payload))
    }

    /// Takes the next batch, writes it with one write and one fdatasync.
    async fn flush_once(&self) -> Result<()> {
        let batch = {
            let mut inner = self.inner.borrow_mut();
            debug_assert!(!inner.flushing);
            let Some(batch) = inner.take_batch() else {
                return Ok(());
            };
            inner.flushing = true;
            let batch = Rc::new(batch);
            inner.inflight = Some(batch.clone());
            batch
        };
        let result = self.write_batch(&batch).await;
        let mut stats = self.stats.get();
        {
            let mut inner = self.inner.borrow_mut();
            inner.flushing = false;
            inner.inflight = None;
            match &result {
                Ok(()) => {
                    assert!(
                        batch.last_lsn >= inner.durable_lsn,
                        "durable LSN never goes back"
                    );
                    inner.durable_lsn = batch.last_lsn;
                    stats.batches += 1;
                    stats.records += batch.last_lsn + 1 - batch.first_lsn;
                    stats.bytes_written += batch.buf.len() as u64;
                    if batch.new_segment {
                        stats.rotations += 1;
                    }
                }
                Err(e) => {
                    if inner.fatal.is_none() {
                        inner.fatal = Some(e.clone());
                    }
                }
            }
            inner.flush_epoch += 1;
            for w in inner.waiters.drain(..) {
                w.wake();
            }
            if let Ok(done) = Rc::try_unwrap(batch) {
                if inner.free_bufs.len() < FREE_BUFS_MAX {
                    inner.free_bufs.push(done.buf);
                }
            }
        }
        self.stats.set(stats);
        result
    }

    async fn write_batch(&self, batch: &Batch) -> Result<()> {
        let name = segment_name(batch.seq);
        let file = if batch.new_segment {
            self.rotate(batch.seq).await?
        } else {
            self.segment_file(batch.seq)?
        };
        let started = std::time::Instant::now();
        self.storage
            .write_at(&file, batch.start, &batch.buf)
            .await
            .map_err(|e| WalError::io("write", self.storage.describe(&name), e))?;
        let synced = self
            .storage
            .sync(&file)
            .await
            .map_err(|e| WalError::io("fsync", self.storage.describe(&name), e));
        self.fsync.observe(started.elapsed());
        synced
    }

    /// Makes the prepared next segment (`seq`) the one being written,
    /// preparing it now if the owner's [`Wal::maintain`] has not.
    async fn rotate(&self, seq: u64) -> Result<Rc<S::File>> {
        loop {
            let prepared = self.inner.borrow().next_segment.as_ref().map(|s| s.seq);
            match prepared {
                Some(p) => {
                    assert_eq!(p, seq, "the prepared segment is the next one");
                    break;
                }
                None => {
                    // Slow path: nobody prepared ahead. Recycle first. A
                    // write waits on this segment: no room is fatal here.
                    self.reclaim().await?;
                    self.prepare_next().await.map_err(WalError::fatal_form)?;
                }
            }
        }
        let mut inner = self.inner.borrow_mut();
        let segment = inner.next_segment.take().expect("prepared");
        let file = segment.file.clone();
        inner.segments.push_back(segment);
        inner.next_seq = seq + 1;
        Ok(file)
    }

    /// Names a spare (or a new zero-filled file) as the next segment and makes
    /// the name durable. Its header is written later, with its first batch.
    async fn prepare_next(&self) -> Result<()> {
        loop {
            let epoch = {
                let inner = self.inner.borrow();
                if let Some(e) = &inner.fatal {
                    return Err(e.clone());
                }
                if inner.next_segment.is_some() {
                    return Ok(());
                }
                if !inner.preparing {
                    break;
                }
                inner.flush_epoch
            };
            FlushDone { wal: self, epoch }.await;
        }
        let (seq, spare, bytes) = {
            let mut inner = self.inner.borrow_mut();
            inner.preparing = true;
            (inner.next_seq, inner.spares.pop(), inner.cfg.segment_bytes)
        };
        let to = segment_name(seq);
        let io = |op, name: &str, e| WalError::io(op, self.storage.describe(name), e);
        let r = async {
            match spare {
                Some(n) => {
                    let from = spare_name(n);
                    self.storage
                        .rename(&from, &to)
                        .await
                        .map_err(|e| io("rename", &from, e))?;
                }
                None => {
                    let tmp = format!("{to}.tmp");
                    if let Err(e) = self.storage.create_zeroed(&tmp, bytes).await {
                        if e.kind() == std::io::ErrorKind::StorageFull {
                            // Nothing of the log was written: give back
                            // what the attempt took and stay usable.
                            let _ = self.storage.remove(&tmp).await;
                            return Err(WalError::NoSpace {
                                file: self.storage.describe(&tmp),
                                message: e.to_string(),
                            });
                        }
                        return Err(io("create", &tmp, e));
                    }
                    self.storage
                        .rename(&tmp, &to)
                        .await
                        .map_err(|e| io("rename", &tmp, e))?;
                }
            }
            self.storage
                .sync_dir()
                .await
                .map_err(|e| io("fsync dir", ".", e))?;
            self.storage.open(&to).await.map_err(|e| io("open", &to, e))
        }
        .await;
        let mut inner = self.inner.borrow_mut();
        inner.preparing = false;
        inner.flush_epoch += 1;
        for w in inner.waiters.drain(..) {
            w.wake();
        }
        match r {
            Ok(file) => {
                inner.next_segment = Some(Segment {
                    seq,
                    file: Rc::new(file),
                });
                Ok(())
            }
            Err(e) => {
                if inner.fatal.is_none() && e.is_fatal() {
                    inner.fatal = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// Drops segments that no group needs any more (oldest first), turning them
    /// into spares up to `spare_segments_max`.
    async fn reclaim(&self) -> Result<()> {
        loop {
            let victim = {
                let mut inner = self.inner.borrow_mut();
                if inner.reclaiming
                    || inner.durable_lsn < inner.last_drop_lsn
                    || inner.segments.len() < 2
                {
                    return Ok(());
                }
                let oldest = inner.segments.front().expect("non-empty").seq;
                let needed = inner
                    .groups
                    .values()
                    .filter_map(|g| g.entries.front().map(|l| l.seq))
                    .min();
                // Never the segment being written, nor one with live entries.
                if oldest >= inner.cur_seq || needed.is_some_and(|n| n <= oldest) {
                    return Ok(());
                }
                // The next segment must be durable-started (its header and
                // checkpoint records), which holds once its first batch is durable.
                let next_first = inner.segments.get(1).map(|s| s.seq);
                if next_first.is_none() {
                    return Ok(());
                }
                inner.reclaiming = true;
                inner.segments.pop_front().expect("non-empty")
            };
            let name = segment_name(victim.seq);
            drop(victim.file);
            let keep = {
                let inner = self.inner.borrow();
                inner.spares.len() < inner.cfg.spare_segments_max
            };
            let r = if keep {
                let n = {
                    let mut inner = self.inner.borrow_mut();
                    let n = inner.next_spare;
                    inner.next_spare += 1;
                    n
                };
                let r = self.storage.rename(&name, &spare_name(n)).await;
                if r.is_ok() {
                    self.inner.borrow_mut().spares.push(n);
                }
                r
            } else {
                self.storage.remove(&name).await
            };
            let r = match r {
                Ok(()) => self.storage.sync_dir().await,
                Err(e) => Err(e),
            };
            self.inner.borrow_mut().reclaiming = false;
            r.map_err(|e| self.latch(WalError::io("reclaim", self.storage.describe(&name), e)))?;
            let mut stats = self.stats.get();
            stats.segments_reclaimed += 1;
            self.stats.set(stats);
        }
    }
}

impl<F> Inner<F> {
    /// Encodes a record at the writer position and applies it to the index.
    fn encode(&mut self, kind: RecordKind, group: u64, index: u64, payload: &[u8]) -> u64 {
        let size = record_bytes(payload.len()) as u64;
        if self.rotate_next || self.cur_offset + size > self.cfg.segment_bytes {
            self.rotate_next = false;
            self.start_segment();
        }
        let header = self.encode_at_position(kind, group, index, payload);
        let lsn = header.lsn;
        let loc = Loc {
            seq: self.cur_seq,
            offset: self.cur_offset - size,
            len: header.len,
            lsn,
        };
        replay(&mut self.groups, &header, payload, loc, None).expect("validated before encoding");
        if matches!(kind, RecordKind::Purge | RecordKind::Truncate) {
            self.last_drop_lsn = lsn;
        }
        lsn
    }

    /// Encodes a record into the open batch (sealing a full one first) and
    /// returns its header.
    fn encode_at_position(
        &mut self,
        kind: RecordKind,
        group: u64,
        index: u64,
        payload: &[u8],
    ) -> RecordHeader {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let size = record_bytes(payload.len());
        // One batch is one write: keep it within batch_bytes_max (the torn window).
        if self
            .open
            .as_ref()
            .is_some_and(|b| b.record_bytes > 0 && b.record_bytes + size > self.cfg.batch_bytes_max)
        {
            self.seal_open();
        }
        if self.open.is_none() {
            let start = align_down_u64(self.cur_offset, PAGE as u64);
            debug_assert_eq!((self.cur_offset - start) as usize, self.tail.len());
            self.open = Some(Batch {
                seq: self.cur_seq,
                start,
                buf: {
                    let mut buf = self.new_buf();
                    buf.extend_from_slice(&self.tail);
                    buf
                },
                first_lsn: lsn,
                last_lsn: lsn - 1,
                record_bytes: 0,
                new_segment: false,
            });
        }
        let batch = self.open.as_mut().expect("open batch");
        let salt = segment_salt(batch.seq);
        let header = RecordHeader {
            len: payload.len() as u32,
            kind,
            group,
            index,
            lsn,
        };
        encode_record(&mut batch.buf, salt, &header, payload);
        batch.last_lsn = lsn;
        batch.record_bytes += size;
        self.queued_bytes += size;
        self.cur_offset += size as u64;
        debug_assert_eq!(batch.start + batch.buf.len() as u64, self.cur_offset);
        header
    }

    /// Moves the open batch to the sealed queue. The next batch of the same
    /// segment starts by rewriting this one's last partial page.
    fn seal_open(&mut self) {
        if let Some(b) = self.open.take() {
            if b.seq == self.cur_seq {
                let page_start = align_down_u64(self.cur_offset, PAGE as u64);
                self.tail = b.buf[(page_start - b.start) as usize..].to_vec();
            }
            self.sealed.push_back(b);
        }
    }

    /// Closes the current segment and starts the next one with a checkpoint
    /// of every group's purge point and metadata.
    fn start_segment(&mut self) {
        self.seal_open();
        self.cur_seq += 1;
        self.cur_offset = FIRST_RECORD_OFFSET;
        self.tail.clear();
        let lsn = self.next_lsn;
        // The first batch of a segment is written from offset 0: its first
        // page is the segment header, filled in when the batch is taken.
        let mut buf = self.new_buf();
        buf.resize(PAGE, 0);
        self.open = Some(Batch {
            seq: self.cur_seq,
            start: 0,
            buf,
            first_lsn: lsn,
            last_lsn: lsn - 1,
            record_bytes: 0,
            new_segment: true,
        });
        let checkpoint: Vec<(RecordKind, u64, u64, Vec<u8>)> = self
            .groups
            .iter()
            .flat_map(|(&gid, g)| {
                let purge = g
                    .purged
                    .iter()
                    .map(move |(i, m)| (RecordKind::Purge, gid, *i, m.clone()));
                let meta = g
                    .meta
                    .iter()
                    .map(move |(k, v)| (RecordKind::Meta, gid, *k, v.clone()));
                purge.chain(meta)
            })
            .collect();
        for (kind, gid, index, payload) in checkpoint {
            // Restatements: the index already holds them, so only encode.
            assert!(
                self.cur_offset + record_bytes(payload.len()) as u64 <= self.cfg.segment_bytes,
                "rotation checkpoint does not fit in one segment"
            );
            self.encode_at_position(kind, gid, index, &payload);
        }
    }

    /// The next batch to write (a sealed one, else the open one), ready for
    /// the disk: header page filled in if it starts a segment, zero-padded to a
    /// page boundary.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.sealed.is_empty() {
            self.seal_open();
        }
        let mut batch = self.sealed.pop_front()?;
        self.queued_bytes -= batch.record_bytes;
        if batch.new_segment {
            let header = SegmentHeader {
                seq: batch.seq,
                first_lsn: batch.first_lsn,
                segment_bytes: self.cfg.segment_bytes,
                torn_window_bytes: self.cfg.torn_window_bytes(),
            };
            assert_eq!(
                batch.start, 0,
                "a segment's first batch starts with its header"
            );
            batch.buf[..PAGE].copy_from_slice(&header.encode());
        }
        let padded = format::align_up(batch.buf.len(), PAGE);
        batch.buf.resize(padded, 0);
        Some(batch)
    }

    /// An empty batch buffer, reused if one is free.
    fn new_buf(&mut self) -> Vec<u8> {
        match self.free_bufs.pop() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(self.cfg.batch_bytes_max + 3 * PAGE),
        }
    }

    fn payload_in_memory(&self, loc: &Loc) -> Option<Vec<u8>> {
        if loc.lsn <= self.durable_lsn {
            return None;
        }
        let batches = self
            .inflight
            .as_deref()
            .into_iter()
            .chain(self.sealed.iter())
            .chain(self.open.iter());
        for b in batches {
            if b.holds(loc) {
                let at = (loc.offset - b.start) as usize + format::RECORD_HEADER_BYTES;
                return Some(b.buf[at..at + loc.len as usize].to_vec());
            }
        }
        unreachable!("a record above the durable LSN is in a batch")
    }
}

/// Replay bookkeeping for one group on open.
///
/// Segments are reclaimed once no *live* entry is in them, so the oldest
/// replayed segment may not hold a group's entries that a purge further on in
/// the log removes. The group's first entry record in the replay may then jump
/// past the index its checkpoint implies. The skipped indexes (the gap) must
/// all be removed by later purges (from below) and truncates (from above) by the
/// end of the replay, or records are missing.
#[derive(Default)]
struct ReplayGroup {
    seen_entry_or_truncate: bool,
    gap: Option<Gap>,
}

/// Indexes `lo..=hi` skipped by a replay jump, found at `seq`/`offset`.
struct Gap {
    lo: u64,
    hi: u64,
    jumped_to: u64,
    seq: u64,
    offset: u64,
}

impl ReplayGroup {
    /// Purges remove the gap from below, truncates from above.
    fn shrink(&mut self, purged_to: Option<u64>, truncated_from: Option<u64>) {
        if let Some(g) = &mut self.gap {
            if let Some(p) = purged_to {
                g.lo = g.lo.max(p + 1);
            }
            if let Some(t) = truncated_from {
                g.hi = g.hi.min(t.saturating_sub(1));
                if t == 0 {
                    g.lo = 1;
                    g.hi = 0;
                }
            }
            if g.lo > g.hi {
                self.gap = None;
            }
        }
    }
}

/// Applies one record to the group index (on append, strictly; on replay,
/// allowing the first-entry jump described at [`ReplayGroup`]).
fn replay(
    groups: &mut BTreeMap<u64, Group>,
    h: &RecordHeader,
    payload: &[u8],
    loc: Loc,
    mut replaying: Option<&mut BTreeMap<u64, ReplayGroup>>,
) -> Result<(), String> {
    let g = groups.entry(h.group).or_default();
    let track = replaying.as_mut().map(|r| r.entry(h.group).or_default());
    match h.kind {
        RecordKind::Entry => {
            if let Err(e) = g.check_append(h.group, h.index) {
                match &track {
                    Some(t)
                        if !t.seen_entry_or_truncate
                            && g.entries.is_empty()
                            && h.index > g.next_index.unwrap_or(0) => {}
                    _ => return Err(e.to_string()),
                }
                if let Some(t) = track {
                    let lo = g.next_index.unwrap_or(0);
                    t.gap = Some(Gap {
                        lo,
                        hi: h.index - 1,
                        jumped_to: h.index,
                        seq: loc.seq,
                        offset: loc.offset,
                    });
                    t.seen_entry_or_truncate = true;
                }
            } else if let Some(t) = track {
                t.seen_entry_or_truncate = true;
            }
            g.push(h.index, loc);
        }
        RecordKind::Truncate => {
            if let Some(t) = track {
                t.seen_entry_or_truncate = true;
                t.shrink(None, Some(h.index));
            }
            g.truncate(h.index)
        }
        RecordKind::Purge => {
            if let Some(t) = track {
                t.shrink(Some(h.index), None);
            }
            g.purge(h.index, payload.to_vec())
        }
        RecordKind::Meta => {
            g.meta.insert(h.index, payload.to_vec());
        }
    }
    Ok(())
}

/// Resolves when a flush finishes (the flush epoch moves past `epoch`).
struct FlushDone<'a, S: Storage> {
    wal: &'a Wal<S>,
    epoch: u64,
}

impl<S: Storage> Future for FlushDone<'_, S> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.wal.inner.borrow_mut();
        if inner.flush_epoch != self.epoch {
            Poll::Ready(())
        } else {
            inner.waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
