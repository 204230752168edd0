//! A shard core: one pinned glommio executor that alone owns its shard's WAL,
//! Raft group and MVCC store (DESIGN §2). Other threads reach it only through
//! [`ShardHandle`] messages; replies come back on oneshot channels. Raft
//! frames from peers and the write-leadership controller's requests arrive
//! on a channel of their own ([`peer`]).
//!
//! Writes are evaluated here against the newest (speculative) state, stamped
//! with the next revision from the member's [`SharedSequencer`], applied to the
//! store at once, and queued into the Raft log in stamping order; the reply is
//! sent when Raft reports the entry committed, after the revision is marked
//! committed ([`write`]). A request that changes nothing consumes no revision:
//! its reply names the revision its evaluation saw, and the front waits for C
//! to reach it. Only the write leader stamps; a follower's shard applies what
//! its log commits (`crate::raft::state_machine`).

mod error;
mod groups;
pub mod peer;
pub mod route;
mod starting;
mod upkeep;
mod write;
pub use error::ShardError;
pub use groups::{raft_config, RaftTiming, META_FRAME_GROUP};
pub use upkeep::{spawn_wal_upkeep, wal_config, Upkeep};
pub use write::{entry_bytes_max, fit_entry};

use crate::fatal::Fatal;
use crate::mvcc::txn::{no_leases, Eval, RangeRequest, RangeResponse, RequestOp, ResponseOp};
use crate::mvcc::{Change, Event, RangeEnd, Store, StoreImage};
use crate::raft::board::GroupBoard;
use crate::raft::log_store::WalLogStore;
use crate::raft::meta::MemberRecord;
use crate::raft::network::PeerNetwork;
use crate::raft::parts::PartBook;
use crate::raft::state_machine::{ShardStateMachine, Wiring};
use crate::raft::types::{ShardCommand, ShardRaft};
use crate::sequencer::SharedSequencer;
use crate::transport::SharedTransport;
use crate::watch::WatchHub;
use cairn_wal::storage::DmaStorage;
use cairn_wal::Wal;
use glommio::{LocalExecutorBuilder, Placement};
use groups::{
    join, lead_alone, newest_revision_in_log, replay, snapshot_now, start_meta, watch_raft,
};
use openraft::Raft;
use openraft_rt::WatchReceiver;
use peer::{Groups, RaftIn};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Bound on queued requests per shard; senders wait when it is full.
pub const SHARD_QUEUE_MAX: usize = 4096;
/// Bound on writes proposed but not yet answered per shard; the shard stops
/// taking requests while it is reached.
pub const SHARD_INFLIGHT_WRITES_MAX: u64 = 16384;
/// Most writes taken off the queue together into one log entry: the writes
/// that queued while the shard was busy share the entry's costs (openraft's
/// bookkeeping, the WAL record, the commit wake-up).
pub const SHARD_WRITE_BATCH_MAX: usize = 256;

/// What a write produced.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WriteOutcome {
    pub response: ResponseOp,
    /// The revision the write got, or None if it changed nothing.
    pub revision: Option<i64>,
    /// The newest revision the evaluation saw; the answer is valid once C >= it.
    pub view: i64,
}

/// Where a write's answer goes.
pub type WriteReply = oneshot::Sender<Result<WriteOutcome, ShardError>>;

/// Requests to a shard core.
pub enum ShardMsg {
    Write {
        op: RequestOp,
        reply: WriteReply,
    },
    Range {
        req: RangeRequest,
        reply: oneshot::Sender<Result<RangeResponse, ShardError>>,
    },
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    Status {
        reply: oneshot::Sender<ShardStatus>,
    },
    /// The hash of this shard's keys at `revision`, and its compaction point.
    HashKv {
        revision: i64,
        reply: oneshot::Sender<Result<(u32, i64), ShardError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// The members the meta group holds (shard 0; others answer None).
    Members {
        reply: oneshot::Sender<Option<Vec<MemberRecord>>>,
    },
    /// The keys that carry a lease, in key order (a revoke gathers them).
    LeaseKeys {
        lease: i64,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    /// The leases this shard's keys carry.
    LeasesInUse {
        reply: oneshot::Sender<Vec<i64>>,
    },
    /// The cluster id the meta group holds (shard 0), if recorded.
    ClusterId {
        reply: oneshot::Sender<Option<u64>>,
    },
    /// The shard's histories up to `upto`, postcard-encoded as a
    /// [`StoreImage`] (Maintenance.Snapshot).
    Image {
        upto: i64,
        reply: oneshot::Sender<Result<Vec<u8>, ShardError>>,
    },
    /// The events on keys of the range with revisions in `from..=to`, at
    /// most about `limit` (see [`Store::events_between`]), and the revision
    /// they reach (watchers reading history); Err(compaction point) if `from`
    /// is below it.
    Events {
        key: Vec<u8>,
        end: RangeEnd,
        from: i64,
        to: i64,
        limit: usize,
        reply: oneshot::Sender<Result<(Vec<Event>, i64), i64>>,
    },
    /// Take a snapshot now, so the WAL behind it is reclaimed (Defragment).
    Snapshot {
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
    /// Stop taking other requests and serve only `ctl` until it closes: a
    /// cross-shard request is being evaluated and written (DESIGN §2.1
    /// point 4). `reply` answers once the shard is latched.
    Latch {
        ctl: flume::Receiver<LatchCtl>,
        reply: oneshot::Sender<()>,
    },
}

/// What a cross-shard coordinator asks a latched shard.
pub enum LatchCtl {
    /// The histories of the keys in `ranges`, up to revision `upto`.
    Export {
        ranges: Vec<(Vec<u8>, RangeEnd)>,
        upto: i64,
        reply: oneshot::Sender<StoreImage>,
    },
    /// Apply and propose this shard's part; `reply` answers once committed.
    Part {
        /// The coordinator's stamp: its revision, and the leadership it
        /// was stamped in.
        stamp: crate::sequencer::Stamp,
        changes: Vec<Change>,
        participants: Vec<u32>,
        reply: oneshot::Sender<Result<(), ShardError>>,
    },
}

/// A shard's Raft and store figures (Maintenance.Status, metrics).
#[derive(Clone, Debug, Default)]
pub struct ShardStatus {
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub raft_committed_index: u64,
    pub revision: i64,
    pub compacted: i64,
    pub keys: usize,
    pub leader: Option<u64>,
}

/// A sendable handle to a shard core.
#[derive(Clone)]
pub struct ShardHandle {
    pub id: usize,
    tx: flume::Sender<ShardMsg>,
    /// Figures the shard core publishes for metrics.
    pub gauges: Arc<ShardGauges>,
}

/// What a shard core publishes for the front's metrics without being asked.
#[derive(Debug, Default)]
pub struct ShardGauges {
    /// The store's size ([`Store::bytes`]), as of the shard's last request
    /// or the state machine's last apply.
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The WAL's fdatasync latencies (set once the WAL is open).
    pub wal_fsync: std::sync::OnceLock<Arc<cairn_wal::Histogram>>,
    /// The WAL found no room for its next segment (see [`Upkeep::NoSpace`]):
    /// the shard refuses writes until it has one.
    pub wal_no_space: std::sync::atomic::AtomicBool,
}

impl ShardHandle {
    /// Whether the shard refuses writes for want of disk space.
    pub fn wal_no_space(&self) -> bool {
        self.gauges
            .wal_no_space
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shard store's size in bytes ([`Store::bytes`]).
    pub fn bytes(&self) -> u64 {
        self.gauges.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests waiting in the shard core's queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Sends a request; `Stopped` if the shard core is gone.
    pub async fn send(&self, msg: ShardMsg) -> Result<(), ShardError> {
        self.tx
            .send_async(msg)
            .await
            .map_err(|_| ShardError::Stopped)
    }
}

/// How to start a shard core.
#[derive(Clone)]
pub struct ShardConfig {
    pub id: usize,
    /// CPU to pin to (None: unpinned, for tests).
    pub cpu: Option<usize>,
    /// The shard's own directory (its WAL goes in `wal/`).
    pub dir: PathBuf,
    pub member_id: u64,
    pub peer_url: String,
    /// This member's record: shard 0 runs the meta group and records it there.
    pub member: Option<MemberRecord>,
    /// The member's mirror of the lease table (the meta group on shard 0
    /// keeps it; every shard's writes consult it).
    pub leases: Arc<crate::lease::LeaseView>,
    /// The member's mirror of the alarms (the meta group keeps it).
    pub alarms: Arc<crate::raft::alarms::AlarmView>,
    /// The member's mirror of the auth store (the meta group keeps it).
    pub auth: Arc<crate::auth::view::AuthView>,
    /// Where this shard publishes its Raft term (the member's response
    /// headers read it without asking a shard).
    pub raft_term: Arc<std::sync::atomic::AtomicU64>,
    /// Committed entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// WAL segment size (`--wal-segment-bytes`).
    pub wal_segment_bytes: u64,
    /// `--unsafe-no-fsync`: the WAL never fsyncs.
    pub unsafe_no_fsync: bool,
    pub wal_io: cairn_wal::storage::WalIo,
    /// Decides cross-shard parts found in the log, shared by the member's shards.
    pub parts: Arc<PartBook>,
    /// The member's fatal-error latch: set when this shard's log or Raft
    /// group fails, or a write it proposed cannot be committed.
    pub fatal: Arc<Fatal>,
    pub raft_timing: RaftTiming,
    /// The member's shard count.
    pub shards: usize,
    /// How this member reaches the others.
    pub transport: SharedTransport,
    /// The cluster's first voters (member id → peer URL): this member alone,
    /// or every member of `--initial-cluster`.
    pub voters: BTreeMap<u64, String>,
    /// A member of a cluster: several voters, or it joined one (then its
    /// groups start empty and learn their membership from the leader).
    pub clustered: bool,
    /// Raft frames and leadership requests for this core's groups.
    pub raft_in: flume::Receiver<RaftIn>,
    /// Where this core publishes its groups' leadership.
    pub board: Arc<GroupBoard>,
}

/// A started shard core: its handle and its thread.
pub struct StartedShard {
    pub handle: ShardHandle,
    pub thread: glommio::ExecutorJoinHandle<Result<(), String>>,
    failed: std::sync::mpsc::Receiver<String>,
    start: oneshot::Sender<(Arc<SharedSequencer>, Arc<WatchHub>)>,
}

impl StartedShard {
    /// Lets the shard serve requests, stamping revisions from `seq` and
    /// publishing their events to `hub`.
    pub fn serve(
        self,
        seq: Arc<SharedSequencer>,
        hub: Arc<WatchHub>,
    ) -> (ShardHandle, glommio::ExecutorJoinHandle<Result<(), String>>) {
        let _ = self.start.send((seq, hub));
        (self.handle, self.thread)
    }
}

/// Starts every shard core and waits until their replays settle (see
/// [`PartBook::replay_settled`]). Returns them and the newest revision in
/// any log: the member stamps above it.
pub fn start_all(
    cfgs: Vec<ShardConfig>,
    parts: &PartBook,
) -> Result<(Vec<StartedShard>, i64), String> {
    let started = cfgs.into_iter().map(start).collect::<Result<Vec<_>, _>>()?;
    let deadline = std::time::Instant::now() + REPLAY_MAX;
    loop {
        for s in &started {
            if let Ok(e) = s.failed.try_recv() {
                return Err(e);
            }
        }
        if let Some(last) = parts.replay_settled() {
            return Ok((started, last));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the shards did not replay their logs within {REPLAY_MAX:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// When a shard still starting first says which step it is in.
const STARTING_SLOW: Duration = Duration::from_secs(30);

/// How long replaying the logs at start may take.
const REPLAY_MAX: Duration = Duration::from_secs(600);

/// Starts a shard core, which replays its log.
fn start(cfg: ShardConfig) -> Result<StartedShard, String> {
    let (tx, rx) = flume::bounded(SHARD_QUEUE_MAX);
    let (failed_tx, failed) = std::sync::mpsc::channel::<String>();
    let gauges = Arc::new(ShardGauges::default());
    let shard_gauges = gauges.clone();
    let (start_tx, start_rx) = oneshot::channel::<(Arc<SharedSequencer>, Arc<WatchHub>)>();
    let placement = cfg.cpu.map_or(Placement::Unbound, Placement::Fixed);
    let id = cfg.id;
    let name = format!("shard-{id}");
    let step = starting::StartStep::default();
    step.watch(id, STARTING_SLOW);
    let thread = LocalExecutorBuilder::new(placement)
        .name(&name)
        .io_memory(crate::raft::runtime::IO_MEMORY_BYTES)
        .spawn(move || async move {
            let r = run(cfg, rx, start_rx, shard_gauges, step.clone()).await;
            step.done();
            if let Err(e) = &r {
                let _ = failed_tx.send(e.clone());
            }
            r
        })
        .map_err(|e| format!("starting {name}: {e} (see LINUX_REQUIREMENTS.md)"))?;
    Ok(StartedShard {
        handle: ShardHandle { id, tx, gauges },
        thread,
        failed,
        start: start_tx,
    })
}

async fn run(
    cfg: ShardConfig,
    rx: flume::Receiver<ShardMsg>,
    start: oneshot::Receiver<(Arc<SharedSequencer>, Arc<WatchHub>)>,
    gauges: Arc<ShardGauges>,
    step: starting::StartStep,
) -> Result<(), String> {
    step.at("opening the WAL");
    let e = |what: &str| {
        let what = what.to_string();
        move |err: &dyn std::fmt::Display| format!("shard {}: {what}: {err}", cfg.id)
    };
    let mut storage = DmaStorage::new(cfg.dir.join("wal"))
        .map_err(|x| e("wal dir")(&x))?
        .io(cfg.wal_io);
    if cfg.unsafe_no_fsync {
        storage = storage.unsafe_no_fsync();
    }
    let wal_cfg = wal_config(cfg.wal_segment_bytes);
    let entry_bytes_max = entry_bytes_max(&wal_cfg);
    let (wal, _) = Wal::open(storage, wal_cfg)
        .await
        .map_err(|x| e("opening the WAL")(&x))?;
    let wal = Rc::new(wal);
    let _ = gauges.wal_fsync.set(wal.fsync_histogram());
    {
        let (fatal, id, gauges) = (cfg.fatal.clone(), cfg.id, gauges.clone());
        spawn_wal_upkeep(wal.clone(), move |upkeep| {
            let no_space = matches!(upkeep, Upkeep::NoSpace(_));
            let was = gauges
                .wal_no_space
                .swap(no_space, std::sync::atomic::Ordering::Relaxed);
            match upkeep {
                Upkeep::NoSpace(e) if !was => {
                    eprintln!("cairn: shard {id}: refusing writes: {e}")
                }
                Upkeep::Ready if was => eprintln!("cairn: shard {id}: room again, taking writes"),
                Upkeep::Failed(e) => {
                    fatal.latch(format!("shard {id}: WAL: {e}"));
                }
                _ => {}
            }
        });
    }
    // Set once this shard is told to stop: its groups stopping then is no failure.
    let stopping = Rc::new(std::cell::Cell::new(false));
    // The meta group's state machine, once started (core 0).
    let meta: RefCell<Option<crate::raft::meta::MetaStateMachine>> = RefCell::new(None);
    let store = Rc::new(RefCell::new(Store::new()));
    step.at("loading the snapshot");
    let sm = ShardStateMachine::open(store.clone(), cfg.dir.join("snapshots"))
        .map_err(|x| e("loading the snapshot")(&x))?
        .with_parts(cfg.parts.clone(), cfg.id as u32)
        .with_size_gauge(gauges.bytes.clone());
    let mut log_store: WalLogStore<ShardRaft, DmaStorage> = WalLogStore::new(wal.clone(), 0);
    step.at("reading the log's tail");
    let newest = newest_revision_in_log(&wal, &mut log_store)
        .await
        .map_err(|x| e("reading the log's tail")(&x))?;
    cfg.parts.newest_in_log(cfg.id as u32, newest);
    let cluster = cfg.clustered;
    let config = Arc::new(raft_config(cfg.snapshot_count, cfg.raft_timing, cluster)?);
    step.at("starting raft");
    let raft = Raft::new(
        cfg.member_id,
        config,
        PeerNetwork::new(
            cfg.id as u64,
            cfg.transport.clone(),
            std::time::Duration::from_millis(cfg.raft_timing.election_ms),
        ),
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|x| e("starting raft")(&x))?;
    let groups = Rc::new(Groups {
        data: raft.clone(),
        sm: sm.clone(),
        store: store.clone(),
        wal: wal.clone(),
        meta: RefCell::new(None),
        ticked: Cell::new(0),
        board: cfg.board.clone(),
        id: cfg.id,
    });
    peer::serve(cfg.raft_in.clone(), groups.clone());
    step.at("joining its group");
    if cluster {
        if cfg.voters.len() > 1 {
            join(&raft, &cfg.voters)
                .await
                .map_err(|x| e("joining the cluster")(&x))?;
        }
    } else {
        lead_alone(&raft, cfg.member_id, &cfg.peer_url)
            .await
            .map_err(|x| e("becoming leader")(&x))?;
    }
    watch_raft::<ShardRaft>(
        format!("shard {}", cfg.id),
        raft.metrics(),
        Some(cfg.raft_term.clone()),
        (cfg.board.clone(), cfg.id),
        cfg.fatal.clone(),
        stopping.clone(),
    );
    // Replay (a single member): every committed entry applied before
    // serving, except behind a cross-shard part that waits for the other
    // shards' logs (or for the member to start: parts left incomplete by a
    // crash are dropped then). A cluster member applies what the cluster
    // commits, as it learns it.
    step.at("replaying the log");
    if !cluster {
        replay(&raft, None)
            .await
            .map_err(|x| e("replaying the log")(&x))?;
    }
    cfg.parts.replayed(cfg.id as u32, store.borrow().revision());
    step.at("waiting to be told to serve");
    let (seq, hub) = start
        .await
        .map_err(|_| format!("shard {}: never told to serve", cfg.id))?;
    let (id, shards) = (cfg.id, cfg.shards);
    sm.wire(Wiring {
        seq: seq.clone(),
        hub: hub.clone(),
        owns: Box::new(move |key| route::shard_of(key, shards) == id),
    });
    if !cluster {
        // Everything at or below C is decided: say so in the log, so a later
        // replay drops what this start dropped (DESIGN §2.1 point 5). This
        // member stamps this shard's writes from now on.
        step.at("writing the start tick");
        let closed = seq.committed();
        let resp = raft
            .client_write(ShardCommand::Tick { closed })
            .await
            .map_err(|x| e("starting to serve")(&x))?;
        groups.ticked.set(closed);
        sm.stamp_as(resp.log_id.leader_id);
    }
    if let Some(me) = &cfg.member {
        step.at("starting the meta group");
        let (meta_raft, meta_sm) = start_meta(&cfg, wal.clone(), me.clone())
            .await
            .map_err(|x| e("starting the meta group")(&x))?;
        watch_raft::<crate::raft::meta::MetaRaft>(
            "the meta group".into(),
            meta_raft.metrics(),
            None,
            (cfg.board.clone(), cfg.board.meta()),
            cfg.fatal.clone(),
            stopping.clone(),
        );
        groups::snapshot_along(raft.clone(), meta_raft.clone());
        *groups.meta.borrow_mut() = Some(meta_raft);
        *meta.borrow_mut() = Some(meta_sm);
    }

    step.done();
    let inflight = Rc::new(glommio::sync::Semaphore::new(SHARD_INFLIGHT_WRITES_MAX));
    let publish_bytes = || {
        gauges
            .bytes
            .store(store.borrow().bytes(), std::sync::atomic::Ordering::Relaxed);
    };
    publish_bytes();
    // A message taken off the queue while gathering a batch of writes.
    let mut next: Option<ShardMsg> = None;
    // Writes proposed since the last snapshot this loop asked for.
    let mut since_snapshot: u64 = 0;
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => match rx.recv_async().await {
                Ok(msg) => msg,
                Err(_) => break,
            },
        };
        match msg {
            ShardMsg::Write { op, reply } => {
                let mut batch = vec![(op, reply)];
                while batch.len() < SHARD_WRITE_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(ShardMsg::Write { op, reply }) => batch.push((op, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // Acquired before proposing, released with the answers.
                match inflight.acquire_static_permit(batch.len() as u64).await {
                    Ok(permit) => {
                        let ctx = write::WriteCtx {
                            raft: &raft,
                            sm: &sm,
                            store: &store,
                            seq: &seq,
                            hub: &hub,
                            entry_bytes_max,
                            fatal: &cfg.fatal,
                            no_space: &gauges.wal_no_space,
                            leases: &cfg.leases,
                        };
                        since_snapshot += write::write(&ctx, batch, permit).await;
                        if since_snapshot >= cfg.snapshot_count {
                            since_snapshot = 0;
                            // Built from what is applied by then; not awaited.
                            let _ = raft.trigger().snapshot().await;
                        }
                    }
                    Err(_) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(ShardError::Stopped));
                        }
                    }
                }
            }
            ShardMsg::Range { req, reply } => {
                let store = store.borrow();
                let _ = reply.send(
                    // The front checked the revision against the member's.
                    Eval::new(&store, &no_leases)
                        .current_revision(req.revision)
                        .range(&req)
                        .map_err(ShardError::from),
                );
            }
            ShardMsg::Compact { revision, reply } => {
                // Answered once applied, off this loop: a leader cut off from
                // the others keeps serving reads and Status meanwhile. (The
                // history at or below a compaction point never changes, so
                // writes proposed after it may come first in the log.)
                let raft = raft.clone();
                glommio::spawn_local(async move {
                    let r = raft.client_write(ShardCommand::Compact { revision }).await;
                    let _ = reply.send(r.map(|_| ()).map_err(|_| ShardError::Stopped));
                })
                .detach();
            }
            ShardMsg::HashKv { revision, reply } => {
                let s = store.borrow();
                let _ = reply.send(
                    s.hash_kv(revision)
                        .map(|h| (h, s.compacted()))
                        .map_err(ShardError::from),
                );
            }
            ShardMsg::Status { reply } => {
                let m = raft.metrics().borrow_watched().clone();
                let s = store.borrow();
                let _ = reply.send(ShardStatus {
                    raft_term: m.current_term,
                    raft_index: m.last_log_index.unwrap_or(0),
                    raft_applied_index: m.last_applied.map_or(0, |l| l.index),
                    raft_committed_index: m.local_committed.map_or(0, |l| l.index),
                    revision: s.revision(),
                    compacted: s.compacted(),
                    keys: s.key_count(),
                    leader: m.current_leader,
                });
            }
            ShardMsg::Latch { ctl, reply } => {
                if reply.send(()).is_ok() {
                    write::latched(&raft, &sm, &store, &seq, &hub, ctl, &cfg.fatal).await;
                }
            }
            ShardMsg::Image { upto, reply } => {
                let encoded = postcard::to_stdvec(&store.borrow().image_at(upto));
                let _ = reply.send(encoded.map_err(|e| {
                    eprintln!("cairn: shard: encoding a snapshot image: {e}");
                    ShardError::Stopped
                }));
            }
            ShardMsg::Events {
                key,
                end,
                from,
                to,
                limit,
                reply,
            } => {
                let store = store.borrow();
                let _ = reply.send(if from < store.compacted() {
                    Err(store.compacted())
                } else {
                    Ok(store.events_between(&key, &end, from, to, limit))
                });
            }
            ShardMsg::Snapshot { reply } => {
                let _ = reply.send(snapshot_now(&raft).await);
            }
            ShardMsg::LeaseKeys { lease, reply } => {
                let _ = reply.send(store.borrow().lease_keys(lease));
            }
            ShardMsg::LeasesInUse { reply } => {
                let _ = reply.send(store.borrow().leases_in_use());
            }
            ShardMsg::Members { reply } => {
                let _ = reply.send(meta.borrow().as_ref().map(|sm| sm.members()));
            }
            ShardMsg::ClusterId { reply } => {
                let _ = reply.send(meta.borrow().as_ref().and_then(|sm| sm.cluster_id()));
            }
            ShardMsg::Shutdown { reply } => {
                stopping.set(true);
                let meta_raft = groups.meta.borrow().clone();
                if let Some(meta_raft) = meta_raft {
                    let _ = meta_raft.shutdown().await;
                }
                let _ = raft.shutdown().await;
                let _ = wal.sync_all().await;
                let _ = reply.send(());
                break;
            }
        }
        publish_bytes();
    }
    Ok(())
}
