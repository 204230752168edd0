//! `cairn-bench` against a real etcd 3.4 (Debian's `etcd-server`, installed by
//! `tools/test.sh`), started here on free loopback ports with a temp data dir
//! and stopped by PID. Each subcommand's JSON summary is checked, and what it
//! did is checked in etcd itself.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_tools::etcd::{free_port, Etcd};
use cairn_tools::loadgen::keys::key_bytes;
use std::process::Command;

fn start_etcd() -> Etcd {
    Etcd::start_in(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn count(etcd: &Etcd, key: &[u8], end: &[u8]) -> Result<i64, Box<dyn std::error::Error>> {
    let mut kv = KvClient::connect(etcd.url.clone()).await?;
    let r = kv.range(RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        count_only: true,
        ..Default::default()
    });
    Ok(r.await?.into_inner().count)
}

async fn version(etcd: &Etcd, key: Vec<u8>) -> i64 {
    let mut kv = KvClient::connect(etcd.url.clone()).await.unwrap();
    let r = kv
        .range(RangeRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.kvs.first().map_or(0, |kv| kv.version)
}

/// Runs cairn-bench and returns its last line as JSON.
fn bench(etcd: &Etcd, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["--endpoints", &etcd.url, "--threads", "2"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cairn-bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn load_generator_drives_real_etcd() {
    let etcd = start_etcd();

    // put: every key of the space written, every request answered.
    let j = bench(
        &etcd,
        &[
            "--clients",
            "8",
            "--conns",
            "2",
            "--total",
            "200",
            "--key-space-size",
            "50",
            "--sequential-keys",
            "--val-size",
            "256",
            "put",
        ],
    );
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(200), Some(0)),
        "{j}"
    );
    assert!(j["p50_ms"].as_f64().unwrap() > 0.0 && j["p99_ms"].as_f64() >= j["p50_ms"].as_f64());
    assert_eq!(
        rt().block_on(count(&etcd, b"\0", b"\0")).unwrap(),
        50,
        "50 distinct keys in etcd"
    );

    // txn-put: each op bumps exactly one key's version once, conflicts retried.
    let keys: Vec<Vec<u8>> = (0..5).map(|n| key_bytes(n, 8)).collect();
    let before: i64 = keys
        .iter()
        .map(|k| rt().block_on(version(&etcd, k.clone())))
        .sum();
    let j = bench(
        &etcd,
        &[
            "--clients",
            "8",
            "--total",
            "100",
            "--key-space-size",
            "5",
            "txn-put",
        ],
    );
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(100), Some(0)),
        "{j}"
    );
    let after: i64 = keys
        .iter()
        .map(|k| rt().block_on(version(&etcd, k.clone())))
        .sum();
    assert_eq!(after - before, 100, "one version per txn-put");

    // range (serializable) and mixed.
    let j = bench(
        &etcd,
        &[
            "--clients",
            "4",
            "--total",
            "100",
            "range",
            "foo",
            "--consistency",
            "s",
        ],
    );
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(100), Some(0)),
        "{j}"
    );
    let j = bench(
        &etcd,
        &[
            "--clients",
            "4",
            "--total",
            "100",
            "--key-space-size",
            "10",
            "mixed",
            "--read-ratio",
            "0.5",
        ],
    );
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(100), Some(0)),
        "{j}"
    );

    // watch-latency: every watcher sees every put.
    let j = bench(
        &etcd,
        &[
            "watch-latency",
            "--streams",
            "2",
            "--watchers-per-stream",
            "2",
            "--put-total",
            "30",
            "--put-rate",
            "300",
        ],
    );
    assert_eq!(
        (j["requests"].as_u64(), j["errors"].as_u64()),
        (Some(120), Some(0)),
        "{j}"
    );

    // Open loop: op i is due at i/rate, so 100 ops at 200/s take at least 0.495 s.
    let j = bench(
        &etcd,
        &["--clients", "4", "--total", "100", "--rate", "200", "put"],
    );
    assert_eq!(j["requests"].as_u64(), Some(100));
    assert!(j["total_s"].as_f64().unwrap() >= 0.49, "{j}");
}

#[test]
fn unreachable_endpoint_fails_clearly() {
    let port = free_port(); // nothing listens here
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args([
            "--endpoints",
            &format!("127.0.0.1:{port}"),
            "--total",
            "1",
            "put",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
