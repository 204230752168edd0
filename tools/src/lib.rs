//! Shared code of cairn's tools. `loadgen` is the engine of `cairn-bench`;
//! `etcd` starts a real etcd for side-by-side tests; `ports` hands out
//! loopback ports that concurrent test processes never share; `certs` makes
//! the CA, member and client certificates of a secure cluster.

pub mod certs;
pub mod cluster;
pub mod etcd;
pub mod harness;
pub mod loadgen;
pub mod ports;
