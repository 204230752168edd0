//! Starting and stopping a member: data dir, shard cores, sequencer, and the
//! gRPC front on a small tokio runtime.

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::config::Config;
use crate::identity::Identity;
use crate::member::alarms::DEFAULT_QUOTA_BYTES;
use crate::member::peers::{MemberInbox, Peers};
use crate::member::Member;
use crate::raft::board::GroupBoard;
use crate::raft::meta::MemberRecord;
use crate::raft::parts::PartBook;
use crate::sequencer::SharedSequencer;
use crate::shard::{self, ShardConfig, ShardMsg};
use crate::transport::channel::ChannelNet;
use crate::transport::{NoPeers, SharedTransport};
use crate::watch::WatchHub;
use cairn_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Front (tokio) worker threads; shard cores do the heavy work.
pub const FRONT_THREADS: usize = 2;
/// How long a stopping member waits for client connections to drain.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// gRPC framing allowance on top of `--max-request-bytes` (as etcd allows).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The CPUs this process may run on (its affinity mask, as `taskset` or a
/// cpuset leaves it), in order; shard `i` is pinned to the `i`-th of them
/// (wrapping), so a member started under `taskset -c 2,3` stays on 2 and 3.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let cpus: Vec<usize> = if ok {
        // SAFETY: CPU_ISSET reads the set filled in above; i < CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(String::from).collect()
}

/// How a member reaches the other members.
pub enum Peering {
    /// A single-member cluster: nobody to reach.
    Alone,
    /// Members in this process, over an in-memory net (tests).
    Channel(ChannelNet),
    /// Members over QUIC on the peer port (`--listen-peer-urls`); none
    /// for a lone member.
    Quic,
}

/// Starts the QUIC transport of a cluster member.
fn quic(
    cfg: &Config,
    identity: &Identity,
    inbox: Arc<MemberInbox>,
) -> Result<SharedTransport, String> {
    use crate::transport::quic::{Hello, PeerTls, QuicConfig, QuicTransport, PROTOCOL_VERSION};
    let member_id = identity.member_id;
    let mut peers = BTreeMap::new();
    for (id, (name, url)) in &identity.voters {
        if *id == member_id {
            continue;
        }
        crate::transport::quic::resolve(url).ok_or_else(|| {
            format!("--initial-cluster: {name}={url}: not an http(s):// URL that resolves")
        })?;
        peers.insert(*id, url.clone());
    }
    // A member that joined knows the others by address alone.
    let mut seeds = Vec::new();
    if identity.joined {
        for (name, url) in cfg.initial_voters()?.into_values() {
            if name == cfg.name {
                continue;
            }
            crate::transport::quic::resolve(&url).ok_or_else(|| {
                format!("--initial-cluster: {name}={url}: not an http(s):// URL that resolves")
            })?;
            seeds.push(url);
        }
    }
    let tls = match (
        &cfg.peer_cert_file,
        &cfg.peer_key_file,
        &cfg.peer_trusted_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => PeerTls::Mutual {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            allowed_cn: cfg.peer_cert_allowed_cn.clone(),
        },
        _ => {
            eprintln!(
                "cairn: WARNING: http:// peer URLs: peer traffic is encrypted (QUIC) but members \
                 are not authenticated; use https:// peer URLs with --peer-cert-file, \
                 --peer-key-file and --peer-trusted-ca-file"
            );
            if cfg.peer_cert_allowed_cn.is_some() {
                eprintln!(
                    "cairn: WARNING: --peer-cert-allowed-cn has no effect without \
                     --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"
                );
            }
            PeerTls::Unauthenticated
        }
    };
    let listen = cfg.peer_listen_addr()?;
    let transport = QuicTransport::start(
        QuicConfig {
            me: member_id,
            listen,
            peers,
            seeds,
            tls,
            hello: Hello {
                protocol: PROTOCOL_VERSION,
                member_id,
                cluster: match identity.cluster_id {
                    0 => String::new(),
                    id => format!("{id:x}"),
                },
                token: identity.token.clone(),
                shards: identity.shards as u32,
            },
        },
        inbox,
    )?;
    eprintln!("cairn: peers over QUIC on {listen} (UDP)");
    Ok(transport)
}

/// A started member: its front runtime, servers and shard cores.
pub struct Running {
    pub member: Arc<Member>,
    /// The addresses its clients connect to.
    pub client_addrs: Vec<std::net::SocketAddr>,
    rt: tokio::runtime::Runtime,
    stop_tx: tokio::sync::broadcast::Sender<()>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    handles: Vec<shard::ShardHandle>,
    threads: Vec<glommio::ExecutorJoinHandle<Result<(), String>>>,
    /// The net this member is registered on, and its id there.
    net: Option<(ChannelNet, u64)>,
}

/// Runs a member until SIGINT or SIGTERM.
pub fn run(cfg: Config) -> Result<(), String> {
    cfg.validate()?;
    let running = start(&cfg, Peering::Quic)?;
    let failed = running.wait();
    running.stop(failed)
}

/// Starts a member: opens (or creates) its data dir, starts its shard cores,
/// replays, and serves clients on `--listen-client-urls`.
pub fn start(cfg: &Config, peering: Peering) -> Result<Running, String> {
    cfg.validate()?;
    if cfg.unsafe_no_fsync {
        eprintln!(
            "cairn: WARNING: --unsafe-no-fsync: the WAL does not fsync. Acknowledged writes \
             WILL BE LOST on a power failure or kernel crash. For tests and benchmarks only."
        );
    }
    let dir = cfg.data_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
    let identity = Identity::load_or_create(&dir, cfg)?;
    let shards = identity.shards;
    let cpus = allowed_cpus();
    let member_id = identity.member_id;
    let voters: BTreeMap<u64, String> = identity
        .voters
        .iter()
        .map(|(id, (_, url))| (*id, url.clone()))
        .collect();
    let clustered = identity.clustered();
    let peer_url = cfg
        .initial_advertise_peer_urls
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let timing = shard::RaftTiming {
        heartbeat_ms: cfg.heartbeat_interval,
        election_ms: cfg.election_timeout,
    };
    // The inbox exists before the shard cores: peers may call as soon as
    // this member listens.
    let (raft_in_tx, raft_in_rx): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| flume::bounded(shard::peer::RAFT_IN_QUEUE_MAX))
        .unzip();
    let inbox = MemberInbox::new(raft_in_tx.clone());
    let (transport, net): (SharedTransport, _) = match peering {
        Peering::Alone | Peering::Quic if !clustered => (Arc::new(NoPeers), None),
        Peering::Alone => return Err("a cluster of several members needs a peer transport".into()),
        Peering::Channel(net) => {
            net.register(member_id, inbox.clone());
            (net.endpoint(member_id), Some((net, member_id)))
        }
        Peering::Quic => (quic(cfg, &identity, inbox.clone())?, None),
    };
    let board = Arc::new(GroupBoard::new(shards));

    let raft_term = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fatal = Arc::new(crate::fatal::Fatal::default());
    let parts = Arc::new(PartBook::new(shards));
    let leases = Arc::new(crate::lease::LeaseView::new());
    let alarms = Arc::new(crate::raft::alarms::AlarmView::new());
    let auth = Arc::new(crate::auth::view::AuthView::new(
        crate::auth::view::Tokens::from_flag(&cfg.auth_token)?,
        std::time::Duration::from_secs(cfg.auth_token_ttl),
    ));
    let cfgs = raft_in_rx
        .into_iter()
        .enumerate()
        .map(|(id, raft_in)| ShardConfig {
            id,
            cpu: Some(cpus[id % cpus.len()]),
            dir: dir.join(format!("shard-{id}")),
            member_id,
            peer_url: peer_url.clone(),
            member: (id == 0).then(|| MemberRecord {
                id: member_id,
                name: cfg.name.clone(),
                peer_urls: split_urls(&cfg.initial_advertise_peer_urls),
                client_urls: split_urls(&cfg.advertise_client_urls),
            }),
            leases: leases.clone(),
            alarms: alarms.clone(),
            auth: auth.clone(),
            raft_term: raft_term.clone(),
            snapshot_count: cfg.snapshot_count,
            wal_segment_bytes: cfg.wal_segment_bytes,
            unsafe_no_fsync: cfg.unsafe_no_fsync,
            wal_io: cfg.wal_io,
            parts: parts.clone(),
            fatal: fatal.clone(),
            raft_timing: timing,
            shards,
            transport: transport.clone(),
            voters: voters.clone(),
            clustered,
            raft_in,
            board: board.clone(),
        })
        .collect();
    let started = shard::start_all(cfgs, &parts);
    let (started, last) = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some((net, id)) = &net {
                net.unregister(*id);
            }
            return Err(e);
        }
    };
    let (seq, hub) = if clustered {
        // A cluster member follows until its controller wins the write
        // leadership; it shows what every shard applied (etcd's first
        // revision is 1: a fresh member shows 1 too, not 0).
        let visible = parts.visible().max(1);
        (
            Arc::new(SharedSequencer::following(visible)),
            Arc::new(WatchHub::new(visible, cfg.watch_log_bytes)),
        )
    } else {
        // etcd's first revision is 1.
        let last = last.max(1);
        // Revisions are stamped above `last` from now on: a cross-shard part
        // at or below it that some shard's log lacks never committed.
        parts.close_all(last);
        (
            Arc::new(SharedSequencer::new(last)),
            Arc::new(WatchHub::new(last, cfg.watch_log_bytes)),
        )
    };
    let (handles, threads): (Vec<_>, Vec<_>) = started
        .into_iter()
        .map(|s| s.serve(seq.clone(), hub.clone()))
        .unzip();

    let member = Arc::new(Member {
        member_id,
        cluster_id: identity.cluster_id.into(),
        joined: tokio::sync::watch::channel(identity.cluster_id != 0).0,
        shards: handles.clone(),
        seq: seq.clone(),
        hub,
        max_txn_ops: cfg.max_txn_ops,
        max_request_bytes: cfg.max_request_bytes,
        entry_bytes_max: shard::entry_bytes_max(&shard::wal_config(cfg.wal_segment_bytes)),
        raft_term,
        metrics: Default::default(),
        cross: Default::default(),
        quota_bytes: match cfg.quota_backend_bytes {
            0 => DEFAULT_QUOTA_BYTES,
            n => n,
        },
        alarms,
        auth: crate::member::auth::Auth::new(auth, cfg.bcrypt_cost),
        peer_rtts: Default::default(),
        fatal: fatal.clone(),
        proposals_failed: Default::default(),
        leases: crate::member::lease::Leases::new(leases, member_id, timing),
        peers: Peers {
            transport,
            board,
            raft_in: raft_in_tx,
            voters: voters.keys().copied().collect(),
            clustered,
            token: identity.token.clone(),
            identity: (identity.clone(), dir.clone()),
            timing,
            me: MemberRecord {
                id: member_id,
                name: cfg.name.clone(),
                peer_urls: split_urls(&cfg.initial_advertise_peer_urls),
                client_urls: split_urls(&cfg.advertise_client_urls),
            },
        },
    });
    inbox.serve(&member);
    let listeners = cfg.client_listeners()?;
    let addrs: Vec<std::net::SocketAddr> = listeners.iter().map(|(a, _)| *a).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(FRONT_THREADS)
        .thread_name("cairn-front")
        .enable_all()
        .build()
        .map_err(|e| format!("front runtime: {e}"))?;
    let auto_compaction = cfg.auto_compaction()?;
    let max = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let servers = rt.block_on(async {
        if let Some(policy) = auto_compaction {
            tokio::spawn(crate::compactor::run(member.clone(), policy));
        }
        if !clustered {
            // This member stamps from now on: its leases' deadlines start
            // (each gets its whole TTL again, as after etcd's restart), and
            // keys of leases a stopped revoke left behind go.
            member
                .lease_leadership_starts()
                .await
                .map_err(|e| format!("starting leases: {}", e.message()))?;
            // Alarms an older cairn kept in the data dir join the meta group.
            crate::member::alarms::adopt_alarm_file(member.clone(), dir.clone(), 1).await?;
        } else {
            // (Once a write leader answers.)
            let (member, dir) = (member.clone(), dir.clone());
            tokio::spawn(async move {
                let adopted = crate::member::alarms::adopt_alarm_file(member, dir, 600).await;
                if let Err(e) = adopted {
                    eprintln!("cairn: {e}");
                }
            });
        }
        tokio::spawn(crate::member::lease_expiry::expire(
            member.clone(),
            stop_tx.subscribe(),
        ));
        if clustered {
            tokio::spawn(crate::member::leader::run(member.clone()));
            tokio::spawn(crate::member::rtt::run(member.clone()));
            // A follower's C is its visible revision.
            let (seq, parts) = (seq.clone(), parts.clone());
            let mut changed = parts.subscribe();
            tokio::spawn(async move {
                loop {
                    seq.observe(parts.visible());
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
        let tls = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => Some(crate::api::tls::server_config(
                cert,
                key,
                cfg.client_cert_auth
                    .then_some(cfg.trusted_ca_file.as_deref())
                    .flatten(),
            )?),
            _ => None,
        };
        let mut servers = Vec::new();
        for (addr, https) in &listeners {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--listen-client-urls {addr}: {e}"))?;
            // gRPC (HTTP/2) and HTTP/1.1 (/health, /version, /metrics) on one port.
            let grpc = tonic::service::Routes::new(
                KvServer::new(KvService(member.clone())).max_decoding_message_size(max),
            )
            .add_service(MaintenanceServer::new(MaintenanceService(member.clone())))
            .add_service(ClusterServer::new(ClusterService(member.clone())))
            .add_service(WatchServer::new(WatchService(member.clone())))
            .add_service(LeaseServer::new(LeaseService(member.clone())))
            .add_service(
                AuthServer::new(crate::api::auth::AuthService(member.clone()))
                    .max_decoding_message_size(max),
            )
            .add_service(
                LockServer::new(LockService(member.clone())).max_decoding_message_size(max),
            )
            .add_service(
                ElectionServer::new(ElectionService(member.clone()))
                    .max_decoding_message_size(max),
            )
            .prepare()
            .into_axum_router();
            let app = grpc
                .merge(crate::api::http::routes(member.clone()))
                .fallback(crate::api::http::fallback);
            let mut stop = stop_tx.subscribe();
            let stopped = async move {
                let _ = stop.recv().await;
            };
            let ready = until_joined(member.joined.subscribe(), stop_tx.subscribe());
            let server = match (&tls, https) {
                (Some(config), true) => {
                    let listener = crate::api::tls::TlsListener::new(listener, config.clone())
                        .map_err(|e| format!("--listen-client-urls {addr}: {e}"))?;
                    tokio::spawn(async move {
                        if !ready.await {
                            return Ok(());
                        }
                        axum::serve(
                            listener,
                            app.into_make_service_with_connect_info::<crate::api::tls::ClientPeer>(),
                        )
                            .with_graceful_shutdown(stopped)
                            .await
                    })
                }
                (None, true) => {
                    return Err(format!(
                        "--listen-client-urls https://{addr} needs --cert-file and --key-file"
                    ))
                }
                (_, false) => {
                    let listener = crate::api::coalesce::CoalescingListener(listener);
                    // The peer address: logins take turns by connection.
                    tokio::spawn(async move {
                        if !ready.await {
                            return Ok(());
                        }
                        axum::serve(
                            listener,
                            app.into_make_service_with_connect_info::<crate::api::tls::ClientPeer>(),
                        )
                        .with_graceful_shutdown(stopped)
                        .await
                    })
                }
            };
            servers.push(server);
            let scheme = if *https { "https" } else { "http" };
            eprintln!(
                "cairn: serving clients on {scheme}://{addr} ({shards} shards, member {member_id:x})"
            );
            if !*member.joined.borrow() {
                eprintln!(
                    "cairn: joining a running cluster: clients are answered once this member \
                     has learned the cluster's id and its own membership"
                );
            }
        }
        Ok::<_, String>(servers)
    });
    let servers = match servers {
        Ok(s) => s,
        Err(e) => {
            if let Some((net, id)) = &net {
                net.unregister(*id);
            }
            return Err(e);
        }
    };
    Ok(Running {
        member,
        client_addrs: addrs,
        rt,
        stop_tx,
        servers,
        handles,
        threads,
        net,
    })
}

impl Running {
    /// Blocks until SIGINT or SIGTERM (None) or a fatal error (its reason).
    pub fn wait(&self) -> Option<String> {
        let fatal = self.member.fatal.clone();
        self.rt.block_on(async move {
            tokio::select! {
                _ = wait_for_signal() => None,
                reason = fatal.wait() => Some(reason),
            }
        })
    }

    /// Stops the member: closes client connections (after a bounded
    /// drain) and, unless it `failed`, shuts its shard cores down cleanly.
    pub fn stop(self, failed: Option<String>) -> Result<(), String> {
        let Running {
            member,
            rt,
            stop_tx,
            mut servers,
            handles,
            threads,
            net,
            ..
        } = self;
        match &failed {
            None => eprintln!("cairn: shutting down"),
            Some(reason) => eprintln!("cairn: stopping after a fatal error: {reason}"),
        }
        if let Some((net, id)) = &net {
            net.unregister(*id);
        }
        let stopped = rt.block_on(async {
            let _ = stop_tx.send(());
            // Connections get a bounded drain; a client that never lets go
            // must not keep the member from stopping.
            let drain = futures::future::join_all(servers.iter_mut());
            if tokio::time::timeout(SHUTDOWN_DRAIN, drain).await.is_err() {
                eprintln!("cairn: clients still connected after {SHUTDOWN_DRAIN:?}; closing them");
                for s in &servers {
                    s.abort();
                }
            }
            if let Some(reason) = failed {
                // A failed shard may never answer a shutdown; what it
                // acknowledged is durable already. The process exits without
                // waiting for the shard cores.
                return Err(format!("stopped after a fatal error: {reason}"));
            }
            for h in &handles {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if h.send(ShardMsg::Shutdown { reply: tx }).await.is_ok() {
                    let _ = rx.await;
                }
            }
            Ok::<(), String>(())
        });
        // A member that failed exits without waiting for its shard cores,
        // which may be stuck behind the failure, nor for anything else they
        // hold: the runtime stops in the background and the rest is left to
        // the process's exit (dropping the peer transport or the runtime can
        // wait on tasks that wait on the failed shard: a member in a cluster
        // took over a minute to exit).
        if let Err(e) = stopped {
            rt.shutdown_background();
            std::mem::forget((member, handles, threads, net));
            return Err(e);
        }
        drop(member);
        drop(handles);
        drop(rt);
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("cairn: {e}"),
                Err(e) => eprintln!("cairn: shard thread failed: {e:?}"),
            }
        }
        Ok(())
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Until a member that joins a running cluster is ready to answer clients
/// (see `Member::joined`): true then, false if it stops first.
async fn until_joined(
    mut joined: tokio::sync::watch::Receiver<bool>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) -> bool {
    tokio::select! {
        r = joined.wait_for(|j| *j) => r.is_ok(),
        _ = stop.recv() => false,
    }
}
