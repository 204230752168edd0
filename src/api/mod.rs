//! The client-facing API, on the front (tokio) threads: every request is
//! validated before it is routed to a shard or proposed, so a bad request
//! changes nothing.
//!
//! Adapters only: they hold the member (`crate::member::Member`) and turn
//! etcd's messages into its calls and back.
//!
//! - [`kv`], [`cluster`]: the KV and Cluster services.
//! - [`maintenance`]: the Maintenance service, snapshots.
//! - [`watch`]: the Watch service (events from the member's `WatchHub`).
//! - [`lease`]: the Lease service.
//! - [`auth`]: the Auth service; the permission checks of the others
//!   ([`access`]).
//! - [`lock`], [`election`]: the Lock and Election services, over
//!   [`concurrency`] (etcd's mutex and election recipes, in-process).
//! - [`gateway`], [`http`]: etcd's JSON gateway, health, version, metrics.
//! - [`coalesce`], [`tls`]: the listeners of client connections (coalesced
//!   writes; TLS).
//! - [`errors`], [`validate`], [`convert`]: etcd's error table, request rules,
//!   protobuf ↔ MVCC types.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod coalesce;
pub mod concurrency;
pub mod convert;
pub mod election;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod rpc_metrics;
pub mod tls;
pub mod validate;
pub mod watch;

pub use errors::EtcdError;
