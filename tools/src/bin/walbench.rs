//! `walbench`: append throughput and latency of the cairn WAL on a real disk.
//!
//! One glommio executor pinned to a core (as a shard core is) runs `--writers`
//! tasks. Each task appends a record to its own group and waits until it is
//! durable, in a loop, for `--seconds`:
//!
//! - `--mode group`: the WAL's group commit: appends that arrive while an
//!   fdatasync is in flight share the next one.
//! - `--mode each`: the naive baseline: every append waits for its own
//!   fdatasync, no batching (appenders take turns).
//! - `--mode raw`: no WAL at all: one task writes `--record-bytes` (rounded up
//!   to 4 KiB) with glommio's `DmaFile::write_at` and calls `fdatasync`, in a
//!   loop, on a preallocated file. It shows what the IO stack alone allows.
//!
//! Each writer purges its group behind itself so segments are recycled as in
//! steady state. The last line printed is one JSON object.

use anyhow::{bail, Context, Result};
use cairn_wal::storage::{DmaStorage, StdStorage, Storage, WalIo};
use cairn_wal::{Config, Wal};
use clap::{Parser, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    Group,
    Each,
    Raw,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// O_DIRECT through io_uring (what the server uses).
    Dma,
    /// Buffered std::fs files.
    Std,
}

#[derive(Parser, Debug)]
#[command(about = "Benchmark cairn's WAL: appends/s, MB/s, fsyncs/s and latency")]
struct Args {
    /// Directory for the WAL files (created; its WAL files are removed first).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum, default_value = "group")]
    mode: Mode,
    /// Concurrent appenders (each its own group).
    #[arg(long, default_value_t = 1)]
    writers: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up (segments allocated, caches warm).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    #[arg(long, value_enum, default_value = "dma")]
    backend: Backend,
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    #[arg(long, default_value_t = cairn_wal::DMA_BATCH_BYTES_MAX)]
    batch_bytes_max: usize,
    /// CPU to pin the executor to (compare with fio pinned to the same CPU).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// How the DMA backend writes and syncs: `ring` (io_uring write, then
    /// io_uring fdatasync), `dsync` (io_uring writes on O_DSYNC files: one op
    /// per batch) or `blocking` (pwrite(2) + fdatasync(2) on the executor thread).
    #[arg(long, default_value = "dsync")]
    io: WalIo,
    /// glommio's registered DMA memory for the executor (`io_memory`).
    /// Batch buffers come from it when they fit (fixed-buffer writes, memory
    /// already faulted in); larger ones are fresh heap allocations.
    #[arg(long, default_value_t = cairn_wal::DMA_IO_MEMORY_BYTES)]
    io_memory: usize,
    /// Entries each writer keeps before purging (segments then recycle).
    #[arg(long, default_value_t = 256)]
    keep_entries: u64,
}

#[derive(Default)]
struct Samples {
    latencies_us: Vec<u32>,
    appends: u64,
    bytes: u64,
}

/// Bound on stored latency samples (about 40 MB).
const SAMPLES_MAX: usize = 10_000_000;

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    for e in std::fs::read_dir(&args.dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "wal" || x == "tmp") {
            std::fs::remove_file(&p)?;
        }
    }
    if args.writers == 0 {
        bail!("--writers must be at least 1");
    }
    let cpu = args.cpu;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("walbench")
        .io_memory(args.io_memory)
        .spawn(move || async move {
            match args.backend {
                Backend::Dma => run(DmaStorage::new(&args.dir)?.io(args.io), &args).await,
                Backend::Std => run(StdStorage::new(&args.dir)?, &args).await,
            }
        })
        .map_err(|e| {
            anyhow::anyhow!("starting the glommio executor (see LINUX_REQUIREMENTS.md): {e}")
        })?;
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e:?}"))?
}

/// The `raw` mode: write + fdatasync on a bare DmaFile, no WAL.
async fn run_raw(args: &Args) -> Result<()> {
    use glommio::io::{DmaFile, OpenOptions};
    const FILE_BYTES: u64 = 64 << 20;
    let path = args.dir.join("raw.wal");
    std::fs::write(&path, vec![0u8; FILE_BYTES as usize])?;
    let file: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = args.record_bytes.div_ceil(4096).max(1) * 4096;
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup_seconds);
    let end = warmup_end + Duration::from_secs_f64(args.seconds);
    let mut latencies_us = Vec::new();
    let mut offset = 0u64;
    let mut measured_from = None;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let mut buf = file.alloc_dma_buffer(bytes);
        buf.as_bytes_mut().fill(0xA5);
        file.write_at(buf, offset)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        file.fdatasync().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        offset = (offset + bytes as u64) % FILE_BYTES;
        if t0 >= warmup_end {
            measured_from.get_or_insert(t0);
            if latencies_us.len() < SAMPLES_MAX {
                latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
    let elapsed = measured_from
        .context("nothing measured")?
        .elapsed()
        .as_secs_f64();
    let samples = Samples {
        appends: latencies_us.len() as u64,
        bytes: (latencies_us.len() * bytes) as u64,
        latencies_us,
    };
    std::fs::remove_file(&path)?;
    report(args, samples, elapsed, None)
}

async fn run<S: Storage + 'static>(storage: S, args: &Args) -> Result<()> {
    if args.mode == Mode::Raw {
        return run_raw(args).await;
    }
    let cfg = Config {
        segment_bytes: args.segment_bytes,
        batch_bytes_max: args.batch_bytes_max,
        spare_segments_max: 4,
    };
    let (wal, _) = Wal::open(storage, cfg).await?;
    let wal = Rc::new(wal);
    // The owner's upkeep: reclaim old segments and prepare the next one, so
    // rotations on the write path wait for no rename or directory fsync.
    let stop = Rc::new(std::cell::Cell::new(false));
    let spare_keeper = {
        let (wal, stop) = (wal.clone(), stop.clone());
        glommio::spawn_local(async move {
            while wal.fatal_error().is_none() && !stop.get() {
                if wal.maintain().await.is_err() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        })
        .detach()
    };
    let turn = Rc::new(glommio::sync::Semaphore::new(1));
    let samples = Rc::new(RefCell::new(Samples::default()));
    let start = Instant::now();
    let warmup_end = start + Duration::from_secs_f64(args.warmup_seconds);
    let end = warmup_end + Duration::from_secs_f64(args.seconds);
    let measure_start = Rc::new(RefCell::new(None::<(Instant, u64)>));
    let payload = vec![0xA5u8; args.record_bytes];
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let (wal, turn, samples, payload, measure_start) = (
            wal.clone(),
            turn.clone(),
            samples.clone(),
            payload.clone(),
            measure_start.clone(),
        );
        let mode = args.mode;
        let keep = args.keep_entries;
        tasks.push(glommio::spawn_local(async move {
            let mut index = 1u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let t0 = Instant::now();
                let permit = if mode == Mode::Each {
                    Some(
                        turn.acquire_permit(1)
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    )
                } else {
                    None
                };
                let lsn = wal.append(w, [(index, payload.as_slice())]).await?;
                wal.sync(lsn).await?;
                drop(permit);
                let took = t0.elapsed();
                if t0 >= warmup_end {
                    let mut ms = measure_start.borrow_mut();
                    if ms.is_none() {
                        *ms = Some((t0, wal.stats().batches));
                    }
                    let mut s = samples.borrow_mut();
                    s.appends += 1;
                    s.bytes += payload.len() as u64;
                    if s.latencies_us.len() < SAMPLES_MAX {
                        s.latencies_us
                            .push(took.as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                if index > keep && index.is_multiple_of(keep) {
                    wal.purge(w, index - keep, b"").await?;
                }
                index += 1;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await?;
    }
    // Let the upkeep finish what it started: a rename or directory fsync on
    // glommio's blocking pool must not outlive the executor.
    stop.set(true);
    spare_keeper.await;
    let (t_start, batches_at_start) = measure_start
        .borrow()
        .context("no append finished after the warm-up")?;
    let elapsed = t_start.elapsed().as_secs_f64();
    let stats = wal.stats();
    let samples = std::mem::take(&mut *samples.borrow_mut());
    report(
        args,
        samples,
        elapsed,
        Some((stats.batches - batches_at_start, stats)),
    )
}

/// Prints the summary; the last line is one JSON object. `wal` is None in raw
/// mode, where every append is one fdatasync.
fn report(
    args: &Args,
    mut s: Samples,
    elapsed: f64,
    wal: Option<(u64, cairn_wal::WalStats)>,
) -> Result<()> {
    let fsyncs = wal.map_or(s.appends, |(f, _)| f);
    s.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let v = &s.latencies_us;
        if v.is_empty() {
            return 0;
        }
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let appends_per_sec = s.appends as f64 / elapsed;
    let mb_per_sec = s.bytes as f64 / elapsed / 1e6;
    let fsyncs_per_sec = fsyncs as f64 / elapsed;
    println!(
        "mode={:?} backend={:?} writers={} record_bytes={} seconds={:.2}",
        args.mode, args.backend, args.writers, args.record_bytes, elapsed
    );
    println!(
        "appends/s={appends_per_sec:.0} MB/s={mb_per_sec:.2} fsyncs/s={fsyncs_per_sec:.0} records/fsync={:.1} p50={}us p99={}us max={}us",
        s.appends as f64 / fsyncs.max(1) as f64,
        pct(0.5),
        pct(0.99),
        s.latencies_us.last().copied().unwrap_or(0)
    );
    let json = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "backend": format!("{:?}", args.backend).to_lowercase(),
        "writers": args.writers,
        "record_bytes": args.record_bytes,
        "seconds": elapsed,
        "appends": s.appends,
        "appends_per_sec": appends_per_sec,
        "mb_per_sec": mb_per_sec,
        "fsyncs": fsyncs,
        "fsyncs_per_sec": fsyncs_per_sec,
        "p50_us": pct(0.5),
        "p90_us": pct(0.9),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": s.latencies_us.last().copied().unwrap_or(0),
        "rotations": wal.map_or(0, |(_, st)| st.rotations),
        "segments_reclaimed": wal.map_or(0, |(_, st)| st.segments_reclaimed),
    });
    println!("{json}");
    Ok(())
}
