//! Errors of the WAL. Three classes:
//! - caller errors (`OutOfOrder`, `RecordTooLarge`, `Compacted`, `InvalidConfig`):
//!   nothing was written, the WAL stays usable;
//! - `Corrupt`: found on open or on read; open refuses to start;
//! - `Io`: a failed write, fsync or file operation. It is **fatal**: the WAL
//!   latches it and every later call returns the same error. Nothing is retried.
//! - `NoSpace`: the file system had no room for the next segment while it
//!   was prepared ahead of need ([`crate::Wal::maintain`]): nothing of the
//!   log was written and the WAL stays usable; the owner should refuse new
//!   writes until a later `maintain` succeeds. When a write itself needs
//!   the segment and there is no room, that is an `Io` error (fatal).

use std::io;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    #[error("wal io error: {op} {file}: {message}")]
    Io {
        op: &'static str,
        file: String,
        kind: io::ErrorKind,
        message: String,
    },
    #[error("wal corrupt: {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("wal: group {group}: index {got} appended where {expected} was expected")]
    OutOfOrder { group: u64, expected: u64, got: u64 },
    #[error("wal: group {group}: index {index} is at or below the purged index {purged}")]
    Compacted { group: u64, index: u64, purged: u64 },
    #[error("wal: record of {bytes} bytes exceeds record_bytes_max {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("wal: invalid config: {0}")]
    InvalidConfig(String),
    #[error("wal: no space to prepare the next segment {file}: {message}; nothing was written")]
    NoSpace { file: String, message: String },
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: impl Into<String>, e: io::Error) -> Self {
        WalError::Io {
            op,
            file: file.into(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The fatal form of a [`WalError::NoSpace`] (when a write needed the
    /// segment); other errors as they are.
    pub(crate) fn fatal_form(self) -> Self {
        match self {
            WalError::NoSpace { file, message } => WalError::Io {
                op: "create",
                file,
                kind: io::ErrorKind::StorageFull,
                message,
            },
            other => other,
        }
    }

    /// True for errors after which the WAL accepts no more calls.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::Io { .. } | WalError::Corrupt { .. })
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
