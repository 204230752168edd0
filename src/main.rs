//! `cairn`: the server binary. The etcd v3 API server is built in the next
//! issue; until then this binary refuses to start instead of pretending.

fn main() {
    eprintln!("cairn: the server is not built yet (see the open issues); the WAL is in wal/, its benchmark is `walbench`");
    std::process::exit(2);
}
