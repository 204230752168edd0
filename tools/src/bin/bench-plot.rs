//! Plots `bench/compare-etcd.sh` results as SVG (README shows them).
//!
//!     bench-plot --results bench/out/compare-etcd --out bench/plots
//!
//! Reads `<system>.<scenario>.<round>.json` files (cairn-bench's last line) and
//! writes, from the median of the rounds:
//! - `put-throughput.svg`: put requests/s against clients, etcd and cairn;
//! - `latency.svg`: p50/p90/p99/p99.9 per scenario, etcd and cairn.

use anyhow::{bail, Context, Result};
use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Plot bench/compare-etcd.sh results as SVG")]
struct Args {
    /// Directory with `<system>.<scenario>.<round>.json` files.
    #[arg(long, default_value = "bench/out/compare-etcd")]
    results: PathBuf,
    /// Where to write the SVG files.
    #[arg(long, default_value = "bench/plots")]
    out: PathBuf,
}

/// (system, scenario) -> the rounds' JSON summaries.
type Runs = BTreeMap<(String, String), Vec<Value>>;

fn load(dir: &Path) -> Result<Runs> {
    let mut runs = Runs::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() != 4 || parts[3] != "json" {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
            continue; // a failed round
        };
        runs.entry((parts[0].to_string(), parts[1].to_string()))
            .or_default()
            .push(v);
    }
    if runs.is_empty() {
        bail!("no results in {}", dir.display());
    }
    Ok(runs)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn field(runs: &Runs, system: &str, scenario: &str, key: &str) -> Option<f64> {
    let rounds = runs.get(&(system.to_string(), scenario.to_string()))?;
    Some(median(
        rounds.iter().filter_map(|r| r[key].as_f64()).collect(),
    ))
}

const SYSTEMS: [(&str, RGBColor); 2] = [
    ("etcd", RGBColor(0x41, 0x6a, 0xb6)),
    ("cairn", RGBColor(0xd9, 0x5f, 0x02)),
];

fn put_throughput(runs: &Runs, path: &Path) -> Result<()> {
    let points: Vec<(&str, f64)> = vec![("put-1", 1.0), ("put-100", 100.0), ("put-1000", 1000.0)];
    let max = points
        .iter()
        .flat_map(|(s, _)| {
            SYSTEMS
                .iter()
                .filter_map(|(sys, _)| field(runs, sys, s, "rps"))
        })
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "put throughput vs clients (median of rounds)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..1500f64).log_scale(), 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("requests/s")
        .draw()?;
    for (sys, color) in SYSTEMS {
        let series: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|(s, x)| field(runs, sys, s, "rps").map(|y| (*x, y)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(3)))?
            .label(sys)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(series.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency(runs: &Runs, path: &Path) -> Result<()> {
    let scenarios: Vec<String> = runs
        .keys()
        .map(|(_, s)| s.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let pcts = [
        ("p50", "p50_ms"),
        ("p90", "p90_ms"),
        ("p99", "p99_ms"),
        ("p99.9", "p999_ms"),
    ];
    let max = scenarios
        .iter()
        .flat_map(|s| {
            SYSTEMS
                .iter()
                .filter_map(move |(sys, _)| field(runs, sys, s, "p999_ms"))
        })
        .fold(0.1, f64::max);
    let root =
        SVGBackend::new(path, (900, 140 + 160 * scenarios.len() as u32 / 2)).into_drawing_area();
    root.fill(&WHITE)?;
    let cols = 2;
    let rows = scenarios.len().div_ceil(cols);
    let (title, body) = root.split_vertically(40);
    title.titled(
        "latency percentiles, ms (log scale; median of rounds)",
        ("sans-serif", 20),
    )?;
    let cells = body.split_evenly((rows.max(1), cols));
    for (cell, scenario) in cells.iter().zip(&scenarios) {
        let mut chart = ChartBuilder::on(cell)
            .caption(scenario, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(25)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..4f64, (0.05f64..max * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                pcts.get(*x as usize)
                    .map_or(String::new(), |(n, _)| n.to_string())
            })
            .draw()?;
        for (k, (sys, color)) in SYSTEMS.iter().enumerate() {
            let pts: Vec<(f64, f64)> = pcts
                .iter()
                .enumerate()
                .filter_map(|(i, (_, key))| {
                    field(runs, sys, scenario, key).map(|y| (i as f64 + 0.3 + 0.4 * k as f64, y))
                })
                .collect();
            chart.draw_series(pts.iter().map(|(x, y)| {
                Rectangle::new([(*x - 0.18, 0.05), (*x + 0.18, *y)], color.filled())
            }))?;
        }
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runs = load(&args.results)?;
    std::fs::create_dir_all(&args.out)?;
    put_throughput(&runs, &args.out.join("put-throughput.svg"))?;
    latency(&runs, &args.out.join("latency.svg"))?;
    println!(
        "wrote {} and {}",
        args.out.join("put-throughput.svg").display(),
        args.out.join("latency.svg").display()
    );
    Ok(())
}
