//! etcd's v3 API as Rust types (prost) and gRPC clients/servers (tonic),
//! generated from the `.proto` files in `proto/etcd/` (see `proto/README.md`).
//! Field numbers and names are etcd's, so any etcd v3 client talks to a
//! server built on these, and our clients talk to etcd.
//!
//! [`coalesce`]: the connection IO of both ends (the server's front and the
//! load generator), which gathers a connection's writes into fewer syscalls.

pub mod coalesce;

#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
