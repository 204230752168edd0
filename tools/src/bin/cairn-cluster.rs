//! `cairn-cluster`: a local cluster on loopback for trying cairn out and for
//! tests. Starts N members (distinct client and peer ports, data dirs under
//! `--dir`), prints their endpoints and PIDs, and stops them (by PID) on
//! Ctrl-C or SIGTERM.
//!
//! ```text
//! cairn-cluster --members 3 --dir /tmp/cairn-cluster -- --shards 2
//! etcdctl --endpoints=$(cat /tmp/cairn-cluster/endpoints) endpoint status --cluster
//! ```

use anyhow::{Context, Result};
use cairn_tools::cluster::LocalCluster;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run a local cairn cluster on loopback")]
struct Args {
    /// Members (odd: 3 or 5).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Where the data dirs, logs and the `endpoints` file go.
    #[arg(long)]
    dir: PathBuf,
    /// The cairn binary (default: the one beside this tool).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Flags for every member (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match args.cairn {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("no directory beside this tool")?
            .join("cairn"),
    };
    std::fs::create_dir_all(&args.dir)?;
    let mut cluster = LocalCluster::new(&bin, &args.dir, args.members, &args.extra);
    cluster.start_all(Some(&args.dir), Duration::from_secs(60))?;
    for m in &cluster.members {
        println!(
            "{}: client {}  peer {} (udp)  pid {}  data {}  log {}",
            m.name,
            m.client_url(),
            m.peer_url(),
            m.pid().unwrap_or(0),
            m.dir.display(),
            args.dir.join(format!("{}.log", m.name)).display()
        );
    }
    let endpoints = cluster.endpoints();
    std::fs::write(args.dir.join("endpoints"), &endpoints)?;
    println!("endpoints: {endpoints}");
    println!("Ctrl-C stops the members.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    })?;
    cluster.stop_all();
    Ok(())
}
