//! Shared by `server_auth/`: etcd 3.4 and cairn processes started with
//! auth flags (and restartable while auth is enabled), and a scenario runner
//! that sends the same requests to both, with or without a token, records
//! every answer normalized, and compares cairn's with etcd's step by step.
//!
//! Normalized: response headers keep only the revision (cluster and member
//! IDs and the raft term are the member's own); a simple token shows as
//! `simple token` (its text is random), a JWT as its `username` and
//! `revision` claims (the expiry is the clock's); everything else (codes,
//! messages, revisions, key-values, flags) is compared exactly.
//!
//! `CAIRN_AUTH_ETCD_ONLY=1` runs etcd's side alone and prints every step;
//! `CAIRN_AUTH_ETCD_TWICE=1` checks the scripts themselves: a second etcd in
//! cairn's place must match the first.
//!
//! `proc.rs`: the servers; `requests.rs`: who a request is sent as and the
//! request builders; `normalize.rs`: answers as they are compared;
//! `run.rs`: the scenario runner and the side-by-side comparison.

mod normalize;
mod proc;
mod requests;
mod run;

pub use cairn_proto::authpb;
pub use cairn_proto::etcdserverpb as pb;
pub use normalize::*;
pub use proc::*;
pub use requests::*;
pub use run::*;
use std::time::Duration;

/// How long anything that must come may take (a loaded machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// bcrypt's cheapest cost, on both servers: the tests hash many passwords.
pub const CHEAP: [&str; 2] = ["--bcrypt-cost", "4"];

pub fn shard_of(key: &str) -> usize {
    cairn::shard::route::shard_of(key.as_bytes(), 2)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Etcd,
    Cairn,
}

/// One step: its label and what the server answered, normalized.
pub type Step = (String, String);
