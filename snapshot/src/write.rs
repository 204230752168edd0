//! Writes an etcd 3.4 snapshot: etcd [`Item`]s → a bbolt file with etcd's
//! buckets → followed by the SHA-256 of the bbolt bytes, exactly what etcd's
//! `Maintenance.Snapshot` streams and `etcdctl snapshot save` stores (etcd
//! `etcdserver/api/v3rpc/maintenance.go`: it hashes the database bytes as it
//! sends them, then sends the 32-byte sum).
//!
//! Items must come in file order: by bucket name (bytes), then by key bytes
//! within a bucket ([`Item::file_order`]); the writer refuses anything else.
//! Every bucket etcd 3.4 creates is written, empty where no item names it.
//! The input is read twice (see [`crate::bolt::write`] for why a bbolt file
//! cannot be streamed in one pass); the output streams once, in order.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::bolt::write::{write_bolt, BoltWriter, Layout, WriteError, WriteOptions};
use crate::etcd::{bucket, Item, Revision};

/// Items to write. [`write_snapshot`] calls [`SnapshotSource::for_each`]
/// twice; both calls must give the same items in the same order.
pub trait SnapshotSource {
    /// Calls `out` for every item, in file order; stops at and returns its first error.
    fn for_each(
        &self,
        out: &mut dyn FnMut(&Item) -> Result<(), SnapshotWriteError>,
    ) -> Result<(), SnapshotWriteError>;
}

/// A closure that feeds every item to its argument: `|out| { for … { out(&item)?; } Ok(()) }`.
impl<F> SnapshotSource for F
where
    F: Fn(
        &mut dyn FnMut(&Item) -> Result<(), SnapshotWriteError>,
    ) -> Result<(), SnapshotWriteError>,
{
    fn for_each(
        &self,
        out: &mut dyn FnMut(&Item) -> Result<(), SnapshotWriteError>,
    ) -> Result<(), SnapshotWriteError> {
        self(out)
    }
}

impl SnapshotSource for [Item] {
    fn for_each(
        &self,
        out: &mut dyn FnMut(&Item) -> Result<(), SnapshotWriteError>,
    ) -> Result<(), SnapshotWriteError> {
        self.iter().try_for_each(out)
    }
}

impl SnapshotSource for Vec<Item> {
    fn for_each(
        &self,
        out: &mut dyn FnMut(&Item) -> Result<(), SnapshotWriteError>,
    ) -> Result<(), SnapshotWriteError> {
        self.as_slice().for_each(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotWriteError {
    #[error(transparent)]
    Bolt(#[from] WriteError),
    #[error("writing the snapshot trailer: {0}")]
    Io(#[from] io::Error),
    #[error("item for bucket {bucket:?} after bucket {after:?}: items must come in bucket order")]
    BucketOrder { bucket: String, after: String },
    #[error("snapshot source: {0}")]
    Source(String),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub layout: Layout,
    /// The trailer: SHA-256 of the bbolt bytes.
    pub sha256: [u8; 32],
    /// Bytes written: bbolt file + 32.
    pub bytes: u64,
    /// Main revision of the last record of bucket `key` (0 if none): what
    /// `etcdctl snapshot status` reports as `revision`.
    pub revision: i64,
    /// Records in all buckets: `etcdctl snapshot status`'s `totalKey`.
    pub total_key: u64,
}

/// The etcd-level writer: feeds [`Item`]s into a [`BoltWriter`], opening
/// etcd's buckets in order (empty ones included) and refusing items out of
/// order. [`write_snapshot`] drives it through both passes and adds the
/// trailer; use it directly only to run the passes yourself.
pub struct SnapshotWriter<'w, 'a> {
    bolt: &'w mut BoltWriter<'a>,
    /// Index in [`bucket::ALL`] of the next etcd bucket not yet written.
    next_bucket: usize,
    open: Option<Vec<u8>>,
    revision: i64,
    total_key: u64,
}

impl<'w, 'a> SnapshotWriter<'w, 'a> {
    pub fn new(bolt: &'w mut BoltWriter<'a>) -> Self {
        SnapshotWriter {
            bolt,
            next_bucket: 0,
            open: None,
            revision: 0,
            total_key: 0,
        }
    }

    pub fn push(&mut self, item: &Item) -> Result<(), SnapshotWriteError> {
        let name = item.bucket();
        if self.open.as_deref() != Some(name) {
            if let Some(open) = self.open.take() {
                if name < open.as_slice() {
                    return Err(SnapshotWriteError::BucketOrder {
                        bucket: String::from_utf8_lossy(name).into_owned(),
                        after: String::from_utf8_lossy(&open).into_owned(),
                    });
                }
                self.bolt.end_bucket()?;
            }
            self.empty_buckets_before(Some(name))?;
            if bucket::ALL.get(self.next_bucket) == Some(&name) {
                self.next_bucket += 1;
            }
            self.bolt.begin_bucket(name)?;
            self.open = Some(name.to_vec());
        }
        let key = item.key();
        self.bolt.put(&key, &item.value())?;
        self.total_key += 1;
        if name == bucket::KEY {
            if let Some((Revision { main, .. }, _)) = Revision::from_key(&key) {
                self.revision = main;
            }
        }
        Ok(())
    }

    /// Closes the open bucket and writes the etcd buckets not yet written.
    pub fn finish(&mut self) -> Result<(), SnapshotWriteError> {
        if self.open.take().is_some() {
            self.bolt.end_bucket()?;
        }
        self.empty_buckets_before(None)
    }

    /// Writes, empty, the etcd buckets whose names sort before `name` (all, for `None`).
    fn empty_buckets_before(&mut self, name: Option<&[u8]>) -> Result<(), SnapshotWriteError> {
        while let Some(&b) = bucket::ALL.get(self.next_bucket) {
            if name.is_some_and(|n| b >= n) {
                break;
            }
            self.bolt.begin_bucket(b)?;
            self.bolt.end_bucket()?;
            self.next_bucket += 1;
        }
        Ok(())
    }
}

/// Hashes what passes through.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    sha: Sha256,
    bytes: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `source`'s items as an etcd 3.4 snapshot (bbolt + SHA-256) into `sink`.
///
/// On error the sink holds an incomplete snapshot (no valid trailer): discard it.
pub fn write_snapshot(
    sink: &mut dyn Write,
    options: &WriteOptions,
    source: &dyn SnapshotSource,
) -> Result<WriteSummary, SnapshotWriteError> {
    let mut hashing = Hashing {
        inner: sink,
        sha: Sha256::new(),
        bytes: 0,
    };
    let (mut revision, mut total_key) = (0, 0);
    let layout = write_bolt(&mut hashing, options, |bolt| {
        let mut items = SnapshotWriter::new(bolt);
        source.for_each(&mut |item| items.push(item))?;
        items.finish()?;
        (revision, total_key) = (items.revision, items.total_key);
        Ok::<(), SnapshotWriteError>(())
    })?;
    assert_eq!(
        hashing.bytes,
        layout.bytes(),
        "wrote exactly the planned pages"
    );
    let sha256: [u8; 32] = hashing.sha.finalize().into();
    let sink = hashing.inner;
    sink.write_all(&sha256)?;
    sink.flush()?;
    Ok(WriteSummary {
        layout,
        sha256,
        bytes: layout.bytes() + 32,
        revision,
        total_key,
    })
}
