//! A shard core: one pinned glommio executor that alone owns its shard's WAL,
//! Raft group and MVCC store (DESIGN §2). Other threads reach it only through
//! [`ShardHandle`] messages; replies come back on oneshot channels.
//!
//! Writes are evaluated here against the newest (speculative) state, stamped
//! with the next revision from the member's [`SharedSequencer`], applied to the
//! store at once, and queued into the Raft log in stamping order; the reply is
//! sent when Raft reports the entry committed, after the revision is marked
//! committed. A request that changes nothing consumes no revision: its reply
//! names the revision its evaluation saw, and the front waits for C to reach it.

mod error;
pub mod route;
pub use error::ShardError;

use crate::fatal::Fatal;
use crate::mvcc::txn::{
    no_leases, stamp, Eval, RangeRequest, RangeResponse, RequestOp, ResponseOp,
};
use crate::mvcc::{Change, Event, RangeEnd, Store, StoreImage};
use crate::raft::log_store::WalLogStore;
use crate::raft::meta::{MemberRecord, MetaCommand, MetaRaft, MetaStateMachine, META_GROUP};
use crate::raft::network::SingleMemberNetwork;
use crate::raft::parts::PartBook;
use crate::raft::state_machine::ShardStateMachine;
use crate::raft::types::{ShardCommand, ShardRaft};
use crate::sequencer::SharedSequencer;
use crate::watch::WatchHub;
use cairn_wal::storage::DmaStorage;
use cairn_wal::Wal;
use glommio::{LocalExecutorBuilder, Placement};
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, Raft};
use openraft_rt::WatchReceiver;
use std::cell::RefCell;
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
#[derive(Debug)]
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
        revision: i64,
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
    /// The store's size ([`Store::bytes`]), as of the shard's last request.
    pub bytes: std::sync::atomic::AtomicU64,
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
#[derive(Clone, Debug)]
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
    let thread = LocalExecutorBuilder::new(placement)
        .name(&name)
        .io_memory(crate::raft::runtime::IO_MEMORY_BYTES)
        .spawn(move || async move {
            let r = run(cfg, rx, start_rx, shard_gauges).await;
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

/// What a round of WAL upkeep found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upkeep {
    /// The next segment is ready.
    Ready,
    /// No room for the next segment: nothing was written; it is tried again.
    NoSpace(String),
    /// The WAL failed (latched); upkeep stops.
    Failed(String),
}

/// Runs the WAL's upkeep off the write path every 50 ms (reclaim segments,
/// prepare the next one), telling `report` each round's outcome, until the
/// WAL fails.
pub fn spawn_wal_upkeep(wal: Rc<Wal<DmaStorage>>, report: impl Fn(Upkeep) + 'static) {
    glommio::spawn_local(async move {
        loop {
            match wal.maintain().await {
                Ok(()) => report(Upkeep::Ready),
                Err(e @ cairn_wal::WalError::NoSpace { .. }) => {
                    report(Upkeep::NoSpace(e.to_string()))
                }
                Err(e) => {
                    report(Upkeep::Failed(e.to_string()));
                    return;
                }
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    })
    .detach();
}

/// Watches a Raft group until it stops: publishes its term to `term` as it
/// changes and latches `fatal` if the group stops on its own (a storage
/// error, a panic in its core) rather than because `stopping` was set.
fn watch_raft<C: openraft::RaftTypeConfig<NodeId = u64, Term = u64>>(
    group: String,
    mut metrics: openraft::type_config::alias::WatchReceiverOf<C, openraft::RaftMetrics<C>>,
    term: Option<Arc<std::sync::atomic::AtomicU64>>,
    fatal: Arc<Fatal>,
    stopping: Rc<std::cell::Cell<bool>>,
) where
    openraft::type_config::alias::WatchReceiverOf<C, openraft::RaftMetrics<C>>: 'static,
{
    glommio::spawn_local(async move {
        loop {
            let failed = {
                let m = metrics.borrow_watched();
                if let Some(term) = &term {
                    term.fetch_max(m.current_term, std::sync::atomic::Ordering::Relaxed);
                }
                m.running_state.as_ref().err().map(|e| e.to_string())
            };
            if let Some(e) = failed {
                if !stopping.get() {
                    fatal.latch(format!("{group}: raft stopped: {e}"));
                }
                return;
            }
            if metrics.changed().await.is_err() {
                if !stopping.get() {
                    fatal.latch(format!("{group}: raft stopped"));
                }
                return;
            }
        }
    })
    .detach();
}

/// Raft timing, from `--heartbeat-interval` and `--election-timeout` (ms):
/// heartbeats every `heartbeat_ms`; a follower that hears nothing campaigns
/// after a random time in [`election_ms`, 2 × `election_ms`), as etcd
/// randomizes its election ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

impl Default for RaftTiming {
    /// etcd's defaults.
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_ms: 1000,
        }
    }
}

/// The Raft settings of a shard group. `--snapshot-count` counts writes, as
/// etcd's does (one request per entry there); the shard triggers those
/// snapshots itself since an entry may carry many writes. The policy here is
/// the backstop for entries that carry none.
pub fn raft_config(snapshot_count: u64, timing: RaftTiming) -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_ms,
        election_timeout_max: timing.election_ms * 2,
        // The log behind a snapshot is purged (keeping a tail for slow
        // followers), and the WAL reclaims it.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_count),
        max_in_snapshot_log_to_keep: snapshot_count.min(1000),
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

async fn run(
    cfg: ShardConfig,
    rx: flume::Receiver<ShardMsg>,
    start: oneshot::Receiver<(Arc<SharedSequencer>, Arc<WatchHub>)>,
    gauges: Arc<ShardGauges>,
) -> Result<(), String> {
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
    let store = Rc::new(RefCell::new(Store::new()));
    let sm = ShardStateMachine::open(store.clone(), cfg.dir.join("snapshots"))
        .map_err(|x| e("loading the snapshot")(&x))?
        .with_parts(cfg.parts.clone(), cfg.id as u32);
    let mut log_store: WalLogStore<ShardRaft, DmaStorage> = WalLogStore::new(wal.clone(), 0);
    let newest = newest_revision_in_log(&wal, &mut log_store)
        .await
        .map_err(|x| e("reading the log's tail")(&x))?;
    cfg.parts.newest_in_log(cfg.id as u32, newest);
    let config = Arc::new(raft_config(cfg.snapshot_count, cfg.raft_timing)?);
    let raft = Raft::new(
        cfg.member_id,
        config,
        SingleMemberNetwork,
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|x| e("starting raft")(&x))?;
    lead_alone(&raft, cfg.member_id, &cfg.peer_url)
        .await
        .map_err(|x| e("becoming leader")(&x))?;
    watch_raft::<ShardRaft>(
        format!("shard {}", cfg.id),
        raft.metrics(),
        Some(cfg.raft_term.clone()),
        cfg.fatal.clone(),
        stopping.clone(),
    );
    // Replay: every committed entry applied before serving, except behind a
    // cross-shard part that waits for the other shards' logs (or for the
    // member to start: parts left incomplete by a crash are dropped then).
    replay(&raft, None)
        .await
        .map_err(|x| e("replaying the log")(&x))?;
    cfg.parts.replayed(cfg.id as u32, store.borrow().revision());
    let (seq, hub) = start
        .await
        .map_err(|_| format!("shard {}: never told to serve", cfg.id))?;
    // Everything at or below C is decided: say so in the log, so a later
    // replay drops what this start dropped (DESIGN §2.1 point 5).
    raft.client_write(ShardCommand::Tick {
        closed: seq.committed(),
    })
    .await
    .map_err(|x| e("starting to serve")(&x))?;
    let meta = match &cfg.member {
        Some(me) => Some(
            start_meta(&cfg, wal.clone(), me.clone())
                .await
                .map_err(|x| e("starting the meta group")(&x))?,
        ),
        None => None,
    };
    if let Some((meta_raft, _)) = &meta {
        watch_raft::<MetaRaft>(
            "the meta group".into(),
            meta_raft.metrics(),
            None,
            cfg.fatal.clone(),
            stopping.clone(),
        );
    }

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
                        let ctx = WriteCtx {
                            raft: &raft,
                            store: &store,
                            seq: &seq,
                            hub: &hub,
                            entry_bytes_max,
                            fatal: &cfg.fatal,
                            no_space: &gauges.wal_no_space,
                        };
                        since_snapshot += write(&ctx, batch, permit).await;
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
                let r = raft.client_write(ShardCommand::Compact { revision }).await;
                let _ = reply.send(r.map(|_| ()).map_err(|_| ShardError::Stopped));
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
                    latched(&raft, &store, &seq, &hub, ctl, &cfg.fatal).await;
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
            ShardMsg::Members { reply } => {
                let _ = reply.send(meta.as_ref().map(|(_, sm)| sm.members()));
            }
            ShardMsg::Shutdown { reply } => {
                stopping.set(true);
                if let Some((meta_raft, _)) = &meta {
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

/// Makes this member the group's only voter (the first time) and waits until
/// it leads.
async fn lead_alone<C, SM>(raft: &Raft<C, SM>, member_id: u64, peer_url: &str) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        let members = BTreeMap::from([(member_id, BasicNode::new(peer_url))]);
        raft.initialize(members).await.map_err(|e| e.to_string())?;
    } else if raft.metrics().borrow_watched().current_leader != Some(member_id) {
        // The sole voter: campaign now rather than after an election timeout.
        raft.trigger()
            .elect(false)
            .await
            .map_err(|e| e.to_string())?;
    }
    raft.wait(Some(Duration::from_secs(60)))
        .current_leader(member_id, "becoming leader")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The newest revision (or `closed`) in a shard's log, applied or not; 0 if
/// none. Scans back from the last entry past those without one.
async fn newest_revision_in_log(
    wal: &Wal<DmaStorage>,
    log: &mut WalLogStore<ShardRaft, DmaStorage>,
) -> Result<i64, std::io::Error> {
    use openraft::RaftLogReader;
    let Some((first, last)) = wal.entry_range(0) else {
        return Ok(0);
    };
    let mut end = last + 1;
    while end > first {
        let start = end.saturating_sub(64).max(first);
        for entry in log.try_get_log_entries(start..end).await?.iter().rev() {
            if let openraft::EntryPayload::Normal(command) = &entry.payload {
                if let Some(revision) = command.newest_revision() {
                    return Ok(revision);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Waits until every entry in the log at start is applied. Called once this
/// member leads the group alone (`lead_alone`): then every entry in its log
/// commits, also those above the committed index it had saved (saved
/// lazily, it may lag), so waiting for the last index covers them all.
async fn replay<C, SM>(raft: &Raft<C, SM>, timeout: Option<Duration>) -> Result<(), String>
where
    C: openraft::RaftTypeConfig<NodeId = u64, Node = BasicNode>,
    SM: openraft::storage::RaftStateMachine<C>,
{
    let last = raft.metrics().borrow_watched().last_log_index;
    raft.wait(timeout)
        .applied_index_at_least(last, "replaying the log")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Starts the meta group on this core's WAL (DESIGN §2), replays it, and
/// records this member in it if its record changed.
async fn start_meta(
    cfg: &ShardConfig,
    wal: Rc<Wal<DmaStorage>>,
    me: MemberRecord,
) -> Result<(Raft<MetaRaft, MetaStateMachine>, MetaStateMachine), String> {
    let sm = MetaStateMachine::open(cfg.dir.join("meta")).map_err(|e| e.to_string())?;
    let config = openraft::Config {
        cluster_name: "cairn-meta".into(),
        heartbeat_interval: cfg.raft_timing.heartbeat_ms,
        election_timeout_min: cfg.raft_timing.election_ms,
        election_timeout_max: cfg.raft_timing.election_ms * 2,
        // The meta group shares shard 0's WAL, whose segments are reclaimed
        // only once no group needs them: its rare entries must not pin them.
        // A snapshot (a few hundred bytes) after every entry purges its log.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let log_store: WalLogStore<MetaRaft, DmaStorage> = WalLogStore::new(wal, META_GROUP);
    let raft = Raft::new(
        cfg.member_id,
        Arc::new(config),
        SingleMemberNetwork,
        log_store,
        sm.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    lead_alone(&raft, cfg.member_id, &cfg.peer_url).await?;
    replay(&raft, Some(Duration::from_secs(60))).await?;
    if !sm.members().contains(&me) {
        raft.client_write(MetaCommand::PutMember(me))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((raft, sm))
}

/// Builds a snapshot of everything applied and waits until it is kept.
async fn snapshot_now(raft: &Raft<ShardRaft, ShardStateMachine>) -> Result<(), ShardError> {
    let Some(applied) = raft.metrics().borrow_watched().last_applied else {
        return Ok(()); // nothing applied, nothing to keep
    };
    raft.trigger()
        .snapshot()
        .await
        .map_err(|_| ShardError::Stopped)?;
    raft.wait(Some(Duration::from_secs(600)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "defragment",
        )
        .await
        .map(|_| ())
        .map_err(|_| ShardError::Stopped)
}

/// Serves a cross-shard coordinator until it lets go of the latch.
async fn latched(
    raft: &Raft<ShardRaft, ShardStateMachine>,
    store: &Rc<RefCell<Store>>,
    seq: &SharedSequencer,
    hub: &WatchHub,
    ctl: flume::Receiver<LatchCtl>,
    fatal: &Arc<Fatal>,
) {
    while let Ok(msg) = ctl.recv_async().await {
        match msg {
            LatchCtl::Export {
                ranges,
                upto,
                reply,
            } => {
                let _ = reply.send(store.borrow().export_ranges(&ranges, upto));
            }
            LatchCtl::Part {
                revision,
                changes,
                participants,
                reply,
            } => {
                // As in `write`: nothing builds on a failed write's effects.
                if fatal.is_latched() {
                    let _ = reply.send(Err(ShardError::Stopped));
                    continue;
                }
                // Like a write: applied now, answered once committed. The
                // coordinator marks the revision committed when every part is.
                store.borrow_mut().apply(revision, &changes);
                if hub.recording() {
                    let events = store.borrow().events_at(revision, &changes);
                    hub.publish([(revision, events)], seq.committed());
                }
                let command = ShardCommand::Part {
                    revision,
                    changes,
                    participants,
                };
                let (responder, committed, applied) = ProgressResponder::new();
                // As for a write (see `propose`): a part that cannot commit stops the member.
                if let Err(err) = raft.client_write_ff(command, Some(responder)).await {
                    fatal.latch(format!("shard: raft refused part {revision}: {err}"));
                    let _ = reply.send(Err(ShardError::Stopped));
                    continue;
                }
                let fatal = fatal.clone();
                glommio::spawn_local(async move {
                    let r = committed.await.map(|_| ()).map_err(|err| {
                        fatal.latch(format!(
                            "shard: part {revision} could not be committed: {err}"
                        ));
                        ShardError::Stopped
                    });
                    let _ = reply.send(r);
                    let _ = applied.await;
                })
                .detach();
            }
        }
    }
}

/// The WAL configuration of a shard with `segment_bytes` segments.
pub fn wal_config(segment_bytes: u64) -> cairn_wal::Config {
    cairn_wal::Config {
        segment_bytes,
        batch_bytes_max: (segment_bytes as usize / 4).min(cairn_wal::DMA_BATCH_BYTES_MAX),
        ..cairn_wal::Config::default()
    }
}

/// Bound on the changes one log entry carries (as [`changes_bytes`] counts
/// them): an entry is one WAL record, which must fit a batch; the margin
/// covers the entry's own encoding.
pub fn entry_bytes_max(wal: &cairn_wal::Config) -> usize {
    wal.record_bytes_max() * 3 / 4
}

/// An upper estimate of the log bytes of one write's changes.
fn changes_bytes(changes: &[Change]) -> usize {
    16 + changes
        .iter()
        .map(|c| match c {
            Change::Put { key, value, .. } => key.len() + value.len() + 32,
            Change::Delete { key } => key.len() + 16,
            Change::DeleteRange { key, end } => {
                key.len()
                    + 32
                    + if let RangeEnd::Until(e) = end {
                        e.len()
                    } else {
                        0
                    }
            }
        })
        .sum::<usize>()
}

/// `op`'s changes (on one shard) as one log entry holds them, and their
/// [`changes_bytes`]: as they are if they fit `entry_bytes_max`; the deletes
/// of a plain DeleteRange (outside a txn) that do not fit, as the one range
/// change that stands for them all (valid because a shard applies a write on
/// the state it was evaluated on); anything else that does not fit is
/// refused with etcd's "request is too large".
pub fn fit_entry(
    op: &RequestOp,
    changes: Vec<Change>,
    entry_bytes_max: usize,
) -> Result<(Vec<Change>, usize), ShardError> {
    let bytes = changes_bytes(&changes);
    if bytes <= entry_bytes_max {
        return Ok((changes, bytes));
    }
    match op {
        RequestOp::DeleteRange(d) => {
            let range = vec![Change::DeleteRange {
                key: d.key.clone(),
                end: RangeEnd::from_request(&d.range_end),
            }];
            let bytes = changes_bytes(&range);
            Ok((range, bytes))
        }
        _ => Err(ShardError::TooLarge),
    }
}

/// What [`write`] works with.
struct WriteCtx<'a> {
    raft: &'a Raft<ShardRaft, ShardStateMachine>,
    store: &'a Rc<RefCell<Store>>,
    seq: &'a Arc<SharedSequencer>,
    hub: &'a WatchHub,
    entry_bytes_max: usize,
    fatal: &'a Arc<Fatal>,
    /// Set while the WAL has no room for its next segment.
    no_space: &'a std::sync::atomic::AtomicBool,
}

/// Writes stamped for one log entry, with their answers and watch events.
#[derive(Default)]
struct Entry {
    writes: Vec<(i64, Vec<Change>)>,
    answers: Vec<(i64, ResponseOp, WriteReply)>,
    events: Vec<(i64, Vec<Event>)>,
    bytes: usize,
}

/// Evaluates, stamps and applies speculatively each of `batch` in order, and
/// proposes the ones that changed something as log entries of at most
/// `entry_bytes_max` (usually one); each is answered once its entry commits.
/// A write whose changes alone exceed that bound is fitted by [`fit_entry`]
/// or refused before it is stamped (nothing changes). Returns how many were
/// proposed.
async fn write(
    ctx: &WriteCtx<'_>,
    batch: Vec<(RequestOp, WriteReply)>,
    permit: glommio::sync::StaticPermit,
) -> u64 {
    let store = ctx.store;
    let seq = ctx.seq;
    // Released when the last entry of the batch is answered.
    let permit = Rc::new(permit);
    let mut entry = Entry::default();
    let mut proposed = 0;
    // Stamp, apply and queue in order; an entry is proposed before the next
    // write is stamped, so the log holds this shard's writes in revision order.
    for (op, reply) in batch {
        // Nothing is evaluated or stamped after a fatal error: a write that
        // could not commit may have left its effects in this shard's
        // speculative state, and nothing may build on them.
        if ctx.fatal.is_latched() {
            let _ = reply.send(Err(ShardError::Stopped));
            continue;
        }
        if ctx.no_space.load(std::sync::atomic::Ordering::Relaxed) {
            // Nothing is evaluated or stamped: the write changes nothing.
            let _ = reply.send(Err(ShardError::NoSpace));
            continue;
        }
        let evaluated = {
            let s = store.borrow();
            // The member's newest revision: reads of this shard's keys at any
            // revision up to it are valid (it holds all of its own).
            let current = seq.last_stamped();
            let mut eval = Eval::new(&s, &no_leases).current_revision(current);
            // A read at an older revision of the member is answered once C
            // covers it (a range in a branch not taken may name a future one:
            // ignored).
            let view = s.revision().max(op.max_revision().min(current));
            eval.op(&op).map(|resp| (resp, eval.into_changes(), view))
        };
        match evaluated {
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
            Ok((response, changes, view)) if changes.is_empty() => {
                let _ = reply.send(Ok(WriteOutcome {
                    response,
                    revision: None,
                    view,
                }));
            }
            Ok((mut response, changes, _)) => {
                let (changes, bytes) = match fit_entry(&op, changes, ctx.entry_bytes_max) {
                    Ok(fit) => fit,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        continue;
                    }
                };
                if entry.bytes + bytes > ctx.entry_bytes_max {
                    proposed += propose(ctx, std::mem::take(&mut entry), permit.clone()).await;
                }
                let revision = seq.stamp();
                store.borrow_mut().apply(revision, &changes);
                // Asked after stamping: see WatchHub::add_watcher.
                if ctx.hub.recording() {
                    let events = store.borrow().events_at(revision, &changes);
                    entry.events.push((revision, events));
                }
                stamp(&mut response, revision);
                entry.bytes += bytes;
                entry.writes.push((revision, changes));
                entry.answers.push((revision, response, reply));
            }
        }
    }
    proposed + propose(ctx, entry, permit).await
}

/// Proposes one entry's writes; answers them once it commits. Returns how
/// many writes it proposed.
async fn propose(ctx: &WriteCtx<'_>, entry: Entry, permit: Rc<glommio::sync::StaticPermit>) -> u64 {
    let Entry {
        mut writes,
        answers,
        events,
        ..
    } = entry;
    // Before any of them can commit: see crate::watch.
    if !events.is_empty() {
        ctx.hub.publish(events, ctx.seq.committed());
    }
    let proposed = writes.len() as u64;
    let command = match writes.len() {
        0 => return 0,
        1 => {
            let (revision, changes) = writes.pop().expect("one");
            ShardCommand::Write { revision, changes }
        }
        _ => ShardCommand::Writes { writes },
    };
    let (responder, committed, applied) = ProgressResponder::new();
    // A write that is stamped and applied here but cannot be committed leaves
    // C below it for good: the member cannot take another write, so it stops
    // (reads at C never saw it; nothing acknowledged depends on it).
    if let Err(e) = ctx.raft.client_write_ff(command, Some(responder)).await {
        ctx.fatal.latch(format!("shard: raft refused a write: {e}"));
        for (_, _, reply) in answers {
            let _ = reply.send(Err(ShardError::Stopped));
        }
        return 0;
    }
    let seq = ctx.seq.clone();
    let fatal = ctx.fatal.clone();
    glommio::spawn_local(async move {
        let _permit = permit;
        match committed.await {
            Ok(_) => {
                for (revision, response, reply) in answers {
                    seq.commit(revision);
                    let _ = reply.send(Ok(WriteOutcome {
                        response,
                        revision: Some(revision),
                        view: revision,
                    }));
                }
                // Keep the receiver until openraft reports the entry applied.
                let _ = applied.await;
            }
            Err(e) => {
                let revisions = answers.first().map(|a| a.0)..=answers.last().map(|a| a.0);
                fatal.latch(format!(
                    "shard: writes {revisions:?} could not be committed: {e}"
                ));
                for (_, _, reply) in answers {
                    let _ = reply.send(Err(ShardError::Stopped));
                }
            }
        }
    })
    .detach();
    proposed
}
