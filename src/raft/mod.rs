//! Raft glue: openraft's storage traits over cairn's WAL.
//!
//! Runs on the shard core that owns the WAL: the types here are `!Send`
//! (openraft is built with `single-threaded`).

pub mod alarms;
pub mod board;
pub mod log_store;
pub mod meta;
pub mod network;
pub mod parts;
pub mod snapshot_file;
pub mod state_machine;
pub mod types;

pub use log_store::WalLogStore;
pub mod runtime;

pub use runtime::GlommioRuntime;
