//! etcd 3.4 snapshot files, read and written.
//!
//! An etcd 3.4 snapshot (what `etcdctl snapshot save` stores and
//! `etcdctl snapshot restore` takes) is a bbolt database file followed by the
//! SHA-256 of those bytes (32 bytes). This crate writes one as a stream from
//! etcd-level records, and reads one (from etcd or from us) back into them.
//! It is a library of plain functions over `Write`/`ReadAt`: no threads, no
//! async, no clock, no shared state; it runs on whichever thread calls it,
//! and the server decides where the bytes go.
//!
//! Layout:
//! - [`bolt`]: bbolt's file format; [`bolt::write`] (streaming bulk build,
//!   two passes over the input, see there why), [`bolt::read`] (tree walk).
//! - [`etcd`]: etcd 3.4's buckets and encodings, as [`etcd::Item`]s.
//! - [`write`]: [`write::write_snapshot`]: items → bbolt + SHA-256 trailer.
//! - [`read`]: [`read::Snapshot`]: trailer check (as `etcdctl snapshot
//!   restore`), items, and `etcdctl snapshot status`'s numbers.

pub mod bolt;
pub mod crc32c;
pub mod etcd;
pub mod read;
pub mod write;

pub use etcd::{Item, Lease, Member, Revision};
pub use read::{ReadError, ReadOptions, Snapshot, Status};
pub use write::{write_snapshot, SnapshotSource, SnapshotWriteError, SnapshotWriter, WriteSummary};
