//! The one small trait the WAL does its IO through, and its backends.
//!
//! - [`StdStorage`]: `std::fs` files with `pwrite`/`fdatasync` (buffered IO;
//!   works on any filesystem, tmpfs included).
//! - [`MemStorage`]: in memory, with fault injection and crash simulation, for tests.
//! - `DmaStorage` (feature `dma`): glommio `DmaFile`, O_DIRECT through io_uring;
//!   what the server uses on its shard cores.
//!
//! All methods take `&self`; a backend is used from one thread (the shard core
//! that owns the WAL), so futures need not be `Send`.
//!
//! # Contract
//! - `write_at` is only called with a page-aligned offset and a length that is a
//!   multiple of [`crate::format::PAGE`]; it writes all of `data` or fails.
//! - Nothing written is durable until `sync` of that file returns `Ok`.
//! - `create_zeroed` returns once a file of `bytes` zeros exists under `name`
//!   and its data is durable; the name itself is durable after `sync_dir`.
//! - `rename` replaces `to` atomically; durable after `sync_dir`.
//! - After any error the WAL latches it and stops using the backend.

use std::io;

#[cfg(feature = "dma")]
mod dma;
mod mem;
mod std_fs;

#[cfg(feature = "dma")]
pub use dma::{DmaStorage, WalIo};
pub use mem::{CrashMode, Faults, MemStorage};
pub use std_fs::StdStorage;

#[allow(async_fn_in_trait)]
pub trait Storage {
    /// An open file.
    type File;

    /// Names of the files in the WAL directory.
    async fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` holding `bytes` zeros, data synced. Replaces any file of that name.
    async fn create_zeroed(&self, name: &str, bytes: u64) -> io::Result<()>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Current length of the file.
    async fn file_len(&self, file: &Self::File) -> io::Result<u64>;
    /// Reads `len` bytes at `offset` (both page-aligned). Short only at end of file.
    async fn read_at(&self, file: &Self::File, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Writes all of `data` at `offset` (both page-aligned).
    async fn write_at(&self, file: &Self::File, offset: u64, data: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    async fn sync(&self, file: &Self::File) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Deletes `name`.
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable path of `name`, for error messages.
    fn describe(&self, name: &str) -> String;
}
