//! bench-plot turns compare-etcd results into the two SVG plots.

use std::path::Path;
use std::process::Command;

/// Runs bench-plot on `results`, drawing into `out`; true if it succeeded.
fn plot(results: &Path, out: &Path) -> bool {
    Command::new(env!("CARGO_BIN_EXE_bench-plot"))
        .args([
            "--results",
            results.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success()
}

#[test]
fn plots_are_drawn_from_the_rounds_medians() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    for (sys, scale) in [("etcd", 1.0), ("cairn", 2.0)] {
        for (scenario, rps) in [
            ("put-1", 2000.0),
            ("put-100", 18000.0),
            ("put-1000", 21000.0),
        ] {
            for round in 1..=3 {
                let json = serde_json::json!({
                    "rps": rps * scale + round as f64,
                    "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 4.0, "p999_ms": 8.0,
                    "errors": 0,
                });
                std::fs::write(
                    results.join(format!("{sys}.{scenario}.{round}.json")),
                    json.to_string(),
                )
                .unwrap();
            }
        }
    }
    let out = dir.path().join("plots");
    assert!(plot(&results, &out));
    let put = std::fs::read_to_string(out.join("put-throughput.svg")).unwrap();
    assert!(put.starts_with("<svg"));
    assert!(
        put.contains("cairn") && put.contains("etcd"),
        "legend names both"
    );
    assert!(put.contains("requests/s"));
    let lat = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    for scenario in ["put-1", "put-100", "put-1000"] {
        assert!(lat.contains(scenario), "a panel per scenario: {scenario}");
    }
    // An empty results directory is an error, not an empty plot.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(!plot(&empty, &out));
}
