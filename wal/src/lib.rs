//! cairn's write-ahead log: one append-only log per shard core, shared by
//! the Raft groups on that core, written with O_DIRECT page-aligned writes and
//! group commit (one `write_at` + one `fdatasync` per batch).
//!
//! - [`format`]: the on-disk layout (documented in `wal/FORMAT.md`).
//! - [`recovery`]: the pure decision of how a segment ends (torn tail or corruption).
//! - [`storage`]: the IO trait and its backends (std files, memory with faults, glommio DMA).
//! - [`Wal`]: the log itself: per-group append, truncate, purge, metadata, read, sync.
//!
//! The crate knows nothing of Raft or keys; it builds and tests without glommio
//! (feature `dma` adds the glommio backend).

pub mod error;
pub mod format;
pub mod histogram;
pub mod recovery;
pub mod storage;
mod wal;
mod yield_once;

pub use error::{Result, WalError};
pub use histogram::Histogram;
pub use wal::{Config, OpenReport, Wal, WalStats, META_VOTE};
