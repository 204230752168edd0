//! `cairn-bench`: a load generator for etcd v3 endpoints (cairn or etcd),
//! shaped like etcd's `benchmark` tool.
//!
//! ```text
//! cairn-bench --endpoints 127.0.0.1:2379 --conns 10 --clients 100 --total 100000 \
//!     --key-size 8 --val-size 256 put
//! cairn-bench --clients 50 --total 20000 range foo --consistency s
//! cairn-bench --clients 50 --total 20000 --key-space-size 1000 txn-put
//! cairn-bench watch-latency --streams 10 --watchers-per-stream 10 --put-total 1000 --put-rate 100
//! cairn-bench --clients 50 --duration 10 mixed --read-ratio 0.9
//! cairn-bench --user root:pw put
//! cairn-bench --clients 64 --duration 15 authenticate --name root --password wrong
//! ```
//!
//! Every client is a task with one request in flight, on connection
//! `client % conns`. With `--rate` the run is open-loop: operation `i` is due at
//! `start + i / rate` and its latency counts from then (no coordinated
//! omission). A progress bar goes to stderr; the summary to stdout, and its last
//! line is one JSON object with the same figures.

use anyhow::{bail, Context, Result};
use cairn_proto::coalesce::Coalesce;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::StatusRequest;
use cairn_tools::loadgen::auth::{self, Token};
use cairn_tools::loadgen::keys::{key_bytes, random_value, KeyPicker};
use cairn_tools::loadgen::kv::{put, range, txn_put};
use cairn_tools::loadgen::report::{ClientRecorder, Recorder, Summary};
use cairn_tools::loadgen::watch;
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::http::Uri;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

// The same allocator as the server: the load generator shares the CPUs with
// the server under test, and glibc's malloc cost it ~7% of its CPU.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    about = "Load generator for etcd v3 endpoints (cairn or etcd)"
)]
struct Args {
    /// Comma-separated endpoints (host:port or URL).
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// gRPC connections (HTTP/2), shared round-robin by the clients.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Number of operations (default 10000 unless --duration is given).
    #[arg(long)]
    total: Option<u64>,
    /// Run for this many seconds instead of a fixed total.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 8)]
    val_size: usize,
    /// Number of distinct keys written/read.
    #[arg(long, default_value_t = 1)]
    key_space_size: u64,
    /// Use keys 0,1,2,.. (mod key space) instead of random ones.
    #[arg(long)]
    sequential_keys: bool,
    /// Open-loop rate in operations/s across all clients (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Send everything to the current leader (found with Maintenance.Status).
    #[arg(long)]
    target_leader: bool,
    /// CA certificate to verify the server (PEM); enables TLS.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client private key (PEM), with --cert.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Runtime worker threads (default: available CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// name:password: log in once per connection (Authenticate) and send
    /// the token with every request.
    #[arg(long)]
    user: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug, Clone)]
enum Cmd {
    /// Put keys.
    Put,
    /// Range over KEY (or [KEY, END)).
    Range {
        key: String,
        end: Option<String>,
        /// l = linearizable, s = serializable.
        #[arg(long, default_value = "l")]
        consistency: String,
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Kubernetes-style update: read the key's mod_revision, then a txn that
    /// puts only if it is unchanged; retried on conflict.
    TxnPut,
    /// Time from a put to its watch event, for every watcher.
    WatchLatency {
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
        #[arg(long, default_value_t = 100.0)]
        put_rate: f64,
    },
    /// Grants LEASES leases (not measured), then keeps them alive: each
    /// client a LeaseKeepAlive stream, one request in flight.
    LeaseKeepalive {
        #[arg(long, default_value_t = 10_000)]
        leases: u64,
        #[arg(long, default_value_t = 600)]
        ttl: i64,
    },
    /// Linearizable ranges and puts, mixed.
    Mixed {
        /// Fraction of operations that are reads.
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
    },
    /// One Authenticate call per operation (no token kept). Refusals, e.g.
    /// a wrong password, are counted as errors, by message.
    Authenticate {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password: String,
    },
}

/// Hands out operation numbers until the total or the deadline is reached.
struct Work {
    total: Option<u64>,
    deadline: Option<Instant>,
    next: AtomicU64,
    rate: f64,
    start: Instant,
    /// Operations finished (the progress bar's position).
    done: AtomicU64,
}

impl Work {
    /// The next operation's number and, in open-loop mode, when it is due.
    fn take(&self) -> Option<(u64, Option<Instant>)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| i >= t) {
            return None;
        }
        let due =
            (self.rate > 0.0).then(|| self.start + Duration::from_secs_f64(i as f64 / self.rate));
        let at = due.unwrap_or_else(Instant::now);
        if self.deadline.is_some_and(|d| at >= d) {
            return None;
        }
        Some((i, due))
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.conns == 0 {
        bail!("--clients and --conns must be at least 1");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn url(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(args: &Args, endpoint: &str) -> Result<Channel> {
    let tls = args.cacert.is_some() || args.cert.is_some();
    let mut ep = Endpoint::from_shared(url(endpoint, tls))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if tls {
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &args.cacert {
            cfg = cfg.ca_certificate(Certificate::from_pem(
                std::fs::read(ca).context("reading --cacert")?,
            ));
        }
        match (&args.cert, &args.key) {
            (Some(c), Some(k)) => {
                cfg = cfg.identity(Identity::from_pem(
                    std::fs::read(c).context("reading --cert")?,
                    std::fs::read(k).context("reading --key")?,
                ))
            }
            (None, None) => {}
            _ => bail!("--cert and --key go together"),
        }
        ep = ep.tls_config(cfg)?;
    }
    let connected = if tls {
        ep.connect().await
    } else {
        // Plain text: our own TCP connection, with coalesced writes.
        ep.connect_with_connector(tower::service_fn(|uri: Uri| async move {
            let addr = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(Coalesce::new(tcp)))
        }))
        .await
    };
    connected.with_context(|| format!("connecting to {endpoint}"))
}

/// The endpoints to use: all, or only the leader's.
async fn endpoints(args: &Args) -> Result<Vec<String>> {
    if !args.target_leader {
        return Ok(args.endpoints.clone());
    }
    for ep in &args.endpoints {
        let Ok(ch) = connect(args, ep).await else {
            continue;
        };
        let Ok(st) = MaintenanceClient::new(ch).status(StatusRequest {}).await else {
            continue;
        };
        let st = st.into_inner();
        if st.header.as_ref().is_some_and(|h| h.member_id == st.leader) {
            return Ok(vec![ep.clone()]);
        }
    }
    bail!("--target-leader: no endpoint reports itself as the leader")
}

async fn run(args: Args) -> Result<()> {
    let eps = endpoints(&args).await?;
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        conns.push(connect(&args, &eps[i % eps.len()]).await?);
    }
    let tokens = auth::tokens(&conns, args.user.as_deref()).await?;
    let args = Arc::new(args);
    let (op_name, rec, elapsed) = match args.cmd.clone() {
        Cmd::WatchLatency {
            streams,
            watchers_per_stream,
            put_total,
            put_rate,
        } => {
            let shape = watch::Shape {
                streams,
                watchers_per_stream,
                put_total,
                put_rate,
                key_size: args.key_size,
                val_size: args.val_size,
            };
            let (rec, elapsed) = watch::watch_latency(&conns, &tokens, &shape).await?;
            ("watch-latency", rec, elapsed)
        }
        Cmd::LeaseKeepalive { leases, ttl } => {
            let ids =
                cairn_tools::loadgen::lease::grant(&conns, &tokens, args.clients, leases, ttl)
                    .await?;
            let total = match (args.total, args.duration) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(10_000),
            };
            let bound = cairn_tools::loadgen::lease::Bound {
                total,
                deadline: args
                    .duration
                    .map(|d| Instant::now() + Duration::from_secs_f64(d)),
            };
            let (rec, elapsed) = cairn_tools::loadgen::lease::keep_alive(
                &conns,
                &tokens,
                args.clients,
                Arc::new(ids),
                bound,
            )
            .await?;
            ("lease-keepalive", rec, elapsed)
        }
        cmd => {
            let name = match cmd {
                Cmd::Put => "put",
                Cmd::Range { .. } => "range",
                Cmd::TxnPut => "txn-put",
                Cmd::Mixed { .. } => "mixed",
                Cmd::Authenticate { .. } => "authenticate",
                Cmd::WatchLatency { .. } | Cmd::LeaseKeepalive { .. } => unreachable!(),
            };
            let (rec, elapsed) = closed_or_open_loop(&args, &conns, &tokens, cmd).await?;
            (name, rec, elapsed)
        }
    };
    let summary = Summary::new(op_name, &rec, elapsed);
    print!("{}", summary.text(&rec));
    let extra = serde_json::json!({
        "clients": args.clients,
        "conns": args.conns,
        "endpoints": eps,
        "key_size": args.key_size,
        "val_size": args.val_size,
        "key_space_size": args.key_space_size,
        "rate": args.rate,
        "error_kinds": rec.errors,
        "answered_per_sec": (summary.requests + summary.errors) as f64
            / elapsed.as_secs_f64().max(1e-9),
    });
    println!("{}", summary.json(&rec, extra));
    // A refused login is an answer, not a failure of the run.
    let refusals_expected = matches!(args.cmd, Cmd::Authenticate { .. });
    if summary.requests == 0 && summary.errors > 0 && !refusals_expected {
        bail!("every request failed");
    }
    Ok(())
}

async fn closed_or_open_loop(
    args: &Arc<Args>,
    conns: &[Channel],
    tokens: &[Token],
    cmd: Cmd,
) -> Result<(Recorder, Duration)> {
    let total = match (args.total, args.duration) {
        (Some(t), _) => Some(t),
        (None, Some(_)) => None,
        (None, None) => Some(10_000),
    };
    let start = Instant::now();
    let work = Arc::new(Work {
        total,
        deadline: args.duration.map(|d| start + Duration::from_secs_f64(d)),
        next: AtomicU64::new(0),
        rate: args.rate,
        start,
        done: AtomicU64::new(0),
    });
    let pb = cairn_tools::loadgen::report::progress_bar(total.unwrap_or(0));
    let value = Arc::new(random_value(args.val_size));
    let shared = Arc::new(std::sync::Mutex::new(Recorder::default()));
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let ch = conns[c % conns.len()].clone();
        let token = tokens[c % conns.len()].clone();
        let rec = ClientRecorder::new(shared.clone());
        let (work, args, value, cmd) = (work.clone(), args.clone(), value.clone(), cmd.clone());
        tasks.push(tokio::spawn(async move {
            client(c as u64, ch, token, work, args, value, cmd, rec).await
        }));
    }
    let ticker = {
        let (pb, work) = (pb.clone(), work.clone());
        tokio::spawn(async move {
            loop {
                pb.set_position(work.done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let rec = std::mem::take(&mut *shared.lock().unwrap_or_else(|e| e.into_inner()));
    ticker.abort();
    pb.finish_and_clear();
    Ok((rec, elapsed))
}

#[allow(clippy::too_many_arguments)]
async fn client(
    id: u64,
    ch: Channel,
    token: Token,
    work: Arc<Work>,
    args: Arc<Args>,
    value: Arc<Vec<u8>>,
    cmd: Cmd,
    mut rec: ClientRecorder,
) {
    let mut kv = KvClient::new(ch.clone());
    let mut authc = AuthClient::new(ch);
    let mut rng = StdRng::seed_from_u64(0x5EED ^ id);
    let picker = KeyPicker {
        space: args.key_space_size,
        sequential: args.sequential_keys,
    };
    while let Some((i, due)) = work.take() {
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let t0 = due.unwrap_or_else(Instant::now);
        let key = key_bytes(picker.pick(i, &mut rng), args.key_size);
        let result = match &cmd {
            Cmd::Put => put(&mut kv, &token, key, &value).await,
            Cmd::Range {
                key,
                end,
                consistency,
                limit,
            } => {
                range(
                    &mut kv,
                    &token,
                    key.as_bytes().to_vec(),
                    end.clone().unwrap_or_default().into_bytes(),
                    consistency == "s",
                    *limit,
                )
                .await
            }
            Cmd::TxnPut => txn_put(&mut kv, &token, key, &value, &mut rec).await,
            Cmd::Mixed { read_ratio } => {
                if rng.random_bool(read_ratio.clamp(0.0, 1.0)) {
                    range(&mut kv, &token, key, Vec::new(), false, 0).await
                } else {
                    put(&mut kv, &token, key, &value).await
                }
            }
            Cmd::Authenticate { name, password } => {
                auth::authenticate(&mut authc, name, password).await
            }
            Cmd::WatchLatency { .. } | Cmd::LeaseKeepalive { .. } => {
                unreachable!("handled separately")
            }
        };
        match result {
            Ok(()) => rec.ok(t0.elapsed()),
            Err(status) => rec.error(format!("{:?}: {}", status.code(), status.message())),
        }
        work.done.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping `rec` adds its last samples to the shared histogram.
}
