//! The client-facing API: etcd's error table and request validation (the
//! tonic services and the HTTP gateway arrive with the server).
//!
//! Runs on the front (tokio) threads: everything here is checked before a
//! request is routed to a shard or proposed, so a bad request changes nothing.

pub mod convert;
pub mod cross;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod maintenance;
pub mod validate;

pub use errors::EtcdError;
