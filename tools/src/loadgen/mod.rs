//! The load generator behind `cairn-bench`: connections, keys, pacing,
//! latency recording and the summary. Works against any etcd v3 endpoint.

pub mod auth;
pub mod keys;
pub mod kv;
pub mod lease;
pub mod report;
pub mod watch;
