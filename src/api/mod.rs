//! The client-facing API, on the front (tokio) threads: every request is
//! validated before it is routed to a shard or proposed, so a bad request
//! changes nothing.
//!
//! - [`kv`]: the member as the front sees it, KV and Cluster services.
//! - [`cross`]: requests whose keys span shards (DESIGN §2.1 point 4).
//! - [`maintenance`]: Maintenance service, alarms, the space quota, snapshots.
//! - [`watch`]: the Watch service (events from the member's `WatchHub`).
//! - [`gateway`], [`http`]: etcd's JSON gateway, health, version, metrics.
//! - [`coalesce`]: the listener of client connections (coalesced writes).
//! - [`errors`], [`validate`], [`convert`]: etcd's error table, request rules,
//!   protobuf ↔ MVCC types.

pub mod coalesce;
pub mod convert;
pub mod cross;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod maintenance;
pub mod validate;
pub mod watch;

pub use errors::EtcdError;
