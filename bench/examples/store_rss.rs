//! Memory of one MVCC store holding 1M keys (8-byte keys, 256-byte values,
//! one version each), as the RSS it adds to the process:
//!
//!     cargo run --release -p cairn-benches --example store_rss
//!
//! The server's RSS after loading the same keys is in bench/RESULTS.md; this
//! isolates the store's share of it.

use cairn::mvcc::{Change, Store};

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS")
        / 1024
}

fn main() {
    let before = rss_mb();
    let mut store = Store::new();
    for i in 0..1_000_000u64 {
        let key = format!("{i:08}").into_bytes();
        let value = vec![b'v'; 256];
        store.apply(
            i as i64 + 2,
            &[Change::Put {
                key,
                value,
                lease: 0,
            }],
        );
    }
    println!(
        "1M keys: {} MB of RSS for the store ({} MB of keys, values and version overhead as Store::bytes counts them)",
        rss_mb() - before,
        store.bytes() >> 20
    );
}
