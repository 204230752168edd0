//! Compiles etcd's `.proto` files (in `etcd/`) with protox, a pure-Rust
//! protobuf compiler, and generates prost types plus tonic clients and
//! servers, and serde implementations (pbjson) for the JSON gateway. No
//! `protoc` is needed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "etcd/kv.proto",
        "etcd/auth.proto",
        "etcd/rpc.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["etcd"])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // serde (proto3 JSON: original field names out, both spellings in, 64-bit
    // integers as strings, bytes as base64) for the HTTP/JSON gateway. Unknown
    // fields are skipped, as etcd's gateway (jsonpb) skips them.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
