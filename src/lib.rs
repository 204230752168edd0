//! cairn: an etcd-v3-compatible replicated key-value store.
//!
//! - [`raft`]: openraft glue (log store over the WAL; runtime adapter and state
//!   machine arrive with the server).

pub mod raft;
