//! Checkers for histories recorded by cairn's correctness harness
//! (`cairn-torture` in `tools/`).
//!
//! Sans-IO: a history is a list of [`history::Entry`] (JSON lines on disk);
//! each checker takes it and returns a verdict with the smallest failing
//! window of operations it could find. Nothing here talks to a server.
//!
//! - [`history`]: the record format shared by the recorder and the checkers.
//! - [`linear`]: per-key linearizability of register histories (Wing–Gong /
//!   porcupine search, P-compositional: one search per key), with unknown
//!   outcomes that may or may not have taken effect.
//! - [`revisions`]: what per-key checks cannot see — one global revision
//!   across shards: real-time order of write revisions, header revisions.
//! - [`append`]: strict serializability of list-append txn histories
//!   (dependency graph from the observed lists plus real-time edges, cycle
//!   search, as Elle does).
//! - [`watch`]: watch streams against the KV history.
//! - [`leases`]: a lease's keys deleted together at one revision, never
//!   before a keepalive's (or the grant's) TTL ran out, unless revoked.
//! - [`timeline`]: an SVG picture of a window of a history, one lane per client.

pub mod append;
pub mod history;
pub mod leases;
pub mod linear;
pub mod revisions;
pub mod timeline;
pub mod watch;
