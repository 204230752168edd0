//! Shared code of cairn's tools. `loadgen` is the engine of `cairn-bench`;
//! `etcd` starts a real etcd for side-by-side tests.

pub mod etcd;
pub mod loadgen;
