//! cairn: an etcd-v3-compatible replicated key-value store.
//!
//! - [`api`]: the gRPC and HTTP adapters: etcd's error table, request validation.
//! - [`member`]: the node: shard handles, sequencer, watch hub, alarms, routing of
//!   requests, cross-shard writes.
//! - [`fatal`]: the member's fatal-error latch.
//! - [`identity`]: the member's ids and first membership, kept in its data dir.
//! - [`mvcc`]: one shard's keys and revision histories, and request evaluation.
//! - [`sequencer`]: the write leader's revision counter and committed prefix C.
//! - [`watch`]: the member's recent events in revision order, for watchers.
//! - [`shard`]: a shard core (glommio executor owning a WAL, a Raft group and a store).
//! - [`raft`]: openraft glue: log store over the WAL, glommio runtime adapter,
//!   state machine over the store, cross-shard part decisions.
//! - [`transport`]: how members reach each other (frames to a member by id).
//! - [`compactor`]: auto-compaction policies.

pub mod api;
pub mod auth;
pub mod check_host;
pub mod compactor;
pub mod config;
pub mod fatal;
pub mod identity;
pub mod lease;
pub mod member;
pub mod mvcc;
pub mod raft;
pub mod sequencer;
pub mod server;
pub mod shard;
pub mod tls;
pub mod transport;
pub mod watch;
