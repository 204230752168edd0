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

/// The `io_memory` (glommio's registered DMA area) an executor that writes
/// this WAL through `DmaStorage` should have, with batches of at most
/// [`DMA_BATCH_BYTES_MAX`]. A batch's write buffer (its records plus at most
/// a page) then comes from this area — glommio's buddy allocator rounds it up
/// to 2 MiB, and reads get the rest — and is written as an io_uring
/// fixed-buffer write from memory already faulted in. A buffer that does not
/// fit is a fresh heap allocation: page faults and page pinning on every
/// write (10–20% of the bandwidth of 1 MiB batches here). The area is
/// resident and, where RLIMIT_MEMLOCK allows, registered with the kernel
/// (see LINUX_REQUIREMENTS.md).
pub const DMA_IO_MEMORY_BYTES: usize = 4 << 20;

/// The largest `batch_bytes_max` whose write buffer fits a 2 MiB block of
/// [`DMA_IO_MEMORY_BYTES`].
pub const DMA_BATCH_BYTES_MAX: usize = (2 << 20) - crate::format::PAGE;
