//! The workloads: clients that send requests to the members and record
//! what they asked and what came back (see `cairn_check::history`).
//!
//! - registers: puts, linearizable gets and compare-and-set txns (on the
//!   value, or on mod_revision as Kubernetes does) on a few keys `r*`;
//! - list-append: txns that read and append to several keys `a*` (on
//!   different shards) at one revision, with mod_revision compares on every
//!   key they touch (optimistic concurrency);
//! - watchers: streams on the keys from different start revisions,
//!   resumed after a break from the revision after the last one seen;
//! - leases: in [`super::leases`].
//!
//! Every client has at most one request in flight and gives up on it after
//! [`OP_TIMEOUT`]: a write given up on, or answered with an error, is an
//! unknown outcome (it may have happened). Loops stop at the run's deadline.

use super::recorder::Recorder;
use cairn_check::history::{
    Call, Done, Entry, Event, EventKind, Expect, Micro, Op, Outcome, WatchResponse, WatchStart,
};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use rand::rngs::StdRng;
use rand::RngExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// A request not answered within this is given up on (unknown outcome).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a watcher asks for a progress notification.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the workload tasks share.
pub struct Ctx {
    pub recorder: Arc<Recorder>,
    /// Client URLs of the members; a client moves to the next one after an
    /// error.
    pub endpoints: Vec<String>,
    /// Set when the clients should stop.
    pub stop: AtomicBool,
    /// The highest revision any answer named (for the watchers' last catch-up).
    pub max_revision: AtomicI64,
}

impl Ctx {
    pub(super) fn channel(&self, n: usize) -> Channel {
        let url = &self.endpoints[n % self.endpoints.len()];
        // The URLs are the harness's own loopback URLs.
        Endpoint::from_shared(url.clone())
            .expect("an endpoint URL")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    fn saw(&self, revision: i64) {
        self.max_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// Records `call`'s outcome from `answer` (`done` describes an answered
    /// one); the answer, if there was one.
    pub(super) fn settle<T>(
        &self,
        client: u32,
        invoke_us: u64,
        call: Call,
        answer: Answer<T>,
        done: impl FnOnce(&T) -> Done,
    ) -> Option<T> {
        let (outcome, answered) = match answer {
            Answer::Ok(r) => (Outcome::Ok(done(&r)), Some(r)),
            Answer::Failed(error) => (Outcome::Failed { error }, None),
            Answer::Unknown(error) => (Outcome::Unknown { error }, None),
        };
        self.op(client, invoke_us, call, outcome);
        answered
    }

    pub(super) fn op(&self, client: u32, invoke_us: u64, call: Call, outcome: Outcome) {
        if let Outcome::Ok(done) = &outcome {
            self.saw(done.revision);
        }
        self.recorder.record(Entry::Op(Op {
            id: self.recorder.op_id(),
            client,
            invoke_us,
            complete_us: self.recorder.now_us(),
            call,
            outcome,
        }));
    }
}

/// The register keys.
pub fn register_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

/// The list-append keys.
pub fn append_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("a{i}")).collect()
}

/// An answered request, an error that says the request never took effect,
/// or one that leaves it open.
pub(super) enum Answer<T> {
    Ok(T),
    Failed(String),
    Unknown(String),
}

pub(super) async fn call<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Answer<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(r)) => Answer::Ok(r.into_inner()),
        // Refused before anything was stamped: bad input, or no room
        // (quota or a full disk).
        Ok(Err(s))
            if matches!(
                s.code(),
                tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
            ) =>
        {
            Answer::Failed(s.message().to_string())
        }
        Ok(Err(s)) => Answer::Unknown(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Answer::Unknown(format!("no answer within {OP_TIMEOUT:?}")),
    }
}

pub(super) fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn compare(key: &str, expect: &Expect) -> Compare {
    let (target, union) = match expect {
        Expect::Value(Some(v)) => (CompareTarget::Value, TargetUnion::Value(bytes(v))),
        Expect::Value(None) => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        Expect::ModRevision(r) => (CompareTarget::Mod, TargetUnion::ModRevision(*r)),
    };
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: bytes(key),
        target_union: Some(union),
        ..Default::default()
    }
}

fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: bytes(key),
            ..Default::default()
        })),
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: bytes(key),
            value: bytes(value),
            ..Default::default()
        })),
    }
}

pub(super) fn header_revision(h: &Option<cairn_proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// A linearizable get of `key`, recorded; its value and mod_revision if answered.
pub async fn get(
    ctx: &Ctx,
    kv: &mut KvClient<Channel>,
    client: u32,
    key: &str,
) -> Option<(Option<String>, i64)> {
    let invoke = ctx.recorder.now_us();
    let answer = call(kv.range(RangeRequest {
        key: bytes(key),
        ..Default::default()
    }))
    .await;
    let call_ = Call::Get {
        key: key.into(),
        serializable: false,
    };
    let value_of = |r: &cairn_proto::etcdserverpb::RangeResponse| {
        let kv = r.kvs.first();
        (
            kv.map(|kv| text(&kv.value)),
            kv.map_or(0, |kv| kv.mod_revision),
        )
    };
    let r = ctx.settle(client, invoke, call_, answer, |r| {
        let (value, mod_revision) = value_of(r);
        Done {
            revision: header_revision(&r.header),
            value,
            mod_revision,
            ..Default::default()
        }
    })?;
    Some(value_of(&r))
}

/// One register client until the deadline.
pub async fn register_client(
    ctx: Arc<Ctx>,
    client: u32,
    keys: Vec<String>,
    mut rng: StdRng,
    deadline: Instant,
) {
    let mut endpoint = client as usize;
    let mut kv = KvClient::new(ctx.channel(endpoint));
    // What this client last saw of each key: (value, mod_revision).
    let mut seen: HashMap<String, (Option<String>, i64)> = HashMap::new();
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let key = keys[rng.random_range(0..keys.len())].clone();
        let dice = rng.random_range(0..10);
        let errored = if dice < 4 {
            match get(&ctx, &mut kv, client, &key).await {
                Some(v) => {
                    seen.insert(key, v);
                    false
                }
                None => true,
            }
        } else {
            n += 1;
            let value = format!("c{client}-{n}");
            let invoke = ctx.recorder.now_us();
            if dice < 7 {
                let answer = call(kv.put(PutRequest {
                    key: bytes(&key),
                    value: bytes(&value),
                    ..Default::default()
                }))
                .await;
                let call_ = Call::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                let revision =
                    |r: &cairn_proto::etcdserverpb::PutResponse| header_revision(&r.header);
                let answered = ctx.settle(client, invoke, call_, answer, |r| Done {
                    revision: revision(r),
                    ..Default::default()
                });
                match answered {
                    Some(r) => {
                        seen.insert(key, (Some(value), revision(&r)));
                        false
                    }
                    None => true,
                }
            } else {
                let last = seen.get(&key).cloned().unwrap_or((None, 0));
                let expect = if dice == 7 {
                    Expect::Value(last.0)
                } else {
                    Expect::ModRevision(last.1)
                };
                let answer = call(kv.txn(TxnRequest {
                    compare: vec![compare(&key, &expect)],
                    success: vec![put_op(&key, &value)],
                    failure: vec![],
                }))
                .await;
                let call_ = Call::Cas {
                    key: key.clone(),
                    expect,
                    value: value.clone(),
                };
                let answered = ctx.settle(client, invoke, call_, answer, |r| Done {
                    revision: header_revision(&r.header),
                    succeeded: Some(r.succeeded),
                    ..Default::default()
                });
                match answered {
                    Some(r) => {
                        if r.succeeded {
                            seen.insert(key, (Some(value), header_revision(&r.header)));
                        }
                        false
                    }
                    None => true,
                }
            }
        };
        if errored {
            // Try another member (the same one when there is one), after a
            // short pause so a member that is down is not hammered.
            endpoint += 1;
            kv = KvClient::new(ctx.channel(endpoint));
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
        }
    }
}

fn parse_list(value: &[u8]) -> Vec<u64> {
    text(value)
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn format_list(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads `keys` in one txn (one revision): each key's list and mod_revision,
/// and the revision.
async fn read_lists(
    kv: &mut KvClient<Channel>,
    keys: &[String],
) -> Answer<(Vec<(Vec<u64>, i64)>, i64)> {
    let answer = call(kv.txn(TxnRequest {
        compare: vec![],
        success: keys.iter().map(|k| range_op(k)).collect(),
        failure: vec![],
    }))
    .await;
    match answer {
        Answer::Ok(r) => {
            let lists = r
                .responses
                .iter()
                .map(|op| match &op.response {
                    Some(Response::ResponseRange(range)) => {
                        range.kvs.first().map_or((Vec::new(), 0), |kv| {
                            (parse_list(&kv.value), kv.mod_revision)
                        })
                    }
                    _ => (Vec::new(), 0),
                })
                .collect();
            Answer::Ok((lists, header_revision(&r.header)))
        }
        Answer::Failed(e) => Answer::Failed(e),
        Answer::Unknown(e) => Answer::Unknown(e),
    }
}

/// One list-append txn: reads its keys, then commits its appends only if
/// none of its keys changed since (mod_revision compares). Recorded as one
/// operation from the read to the commit.
pub async fn append_txn(
    ctx: &Ctx,
    kv: &mut KvClient<Channel>,
    client: u32,
    ops: Vec<Micro>,
) -> bool {
    let keys: Vec<String> = ops
        .iter()
        .map(|m| match m {
            Micro::R { key } | Micro::Append { key, .. } => key.clone(),
        })
        .collect();
    let invoke = ctx.recorder.now_us();
    let has_append = ops.iter().any(|m| matches!(m, Micro::Append { .. }));
    let call_ = Call::Txn { ops: ops.clone() };
    let (lists, read_revision) = match read_lists(kv, &keys).await {
        Answer::Ok(r) => r,
        // Nothing was written yet: the txn did not happen.
        Answer::Failed(error) | Answer::Unknown(error) => {
            ctx.op(client, invoke, call_, Outcome::Failed { error });
            return false;
        }
    };
    let reads: Vec<Vec<u64>> = ops
        .iter()
        .zip(&lists)
        .filter(|(m, _)| matches!(m, Micro::R { .. }))
        .map(|(_, (list, _))| list.clone())
        .collect();
    if !has_append {
        let done = Done {
            revision: read_revision,
            succeeded: Some(true),
            reads,
            ..Default::default()
        };
        ctx.op(client, invoke, call_, Outcome::Ok(done));
        return true;
    }
    let compares = keys
        .iter()
        .zip(&lists)
        .map(|(k, (_, m))| compare(k, &Expect::ModRevision(*m)))
        .collect();
    let puts = ops
        .iter()
        .zip(&lists)
        .filter_map(|(m, (list, _))| match m {
            Micro::Append { key, element } => {
                let mut list = list.clone();
                list.push(*element);
                Some(put_op(key, &format_list(&list)))
            }
            Micro::R { .. } => None,
        })
        .collect();
    let answer = call(kv.txn(TxnRequest {
        compare: compares,
        success: puts,
        failure: vec![],
    }))
    .await;
    match answer {
        Answer::Ok(r) if r.succeeded => {
            let done = Done {
                revision: header_revision(&r.header),
                succeeded: Some(true),
                reads,
                ..Default::default()
            };
            ctx.op(client, invoke, call_, Outcome::Ok(done));
            true
        }
        Answer::Ok(_) => {
            let error = "a key changed since it was read (compare failed)".to_string();
            ctx.op(client, invoke, call_, Outcome::Failed { error });
            true
        }
        Answer::Failed(error) => {
            ctx.op(client, invoke, call_, Outcome::Failed { error });
            false
        }
        Answer::Unknown(error) => {
            ctx.op(client, invoke, call_, Outcome::Unknown { error });
            false
        }
    }
}

/// One list-append client until the deadline: txns of 1–3 micro-ops on
/// distinct keys; elements are unique (`client * 10^9 + n`).
pub async fn append_client(
    ctx: Arc<Ctx>,
    client: u32,
    keys: Vec<String>,
    mut rng: StdRng,
    deadline: Instant,
) {
    let mut endpoint = client as usize;
    let mut kv = KvClient::new(ctx.channel(endpoint));
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut picked: Vec<&String> = Vec::new();
        let count = rng.random_range(1..=3).min(keys.len());
        while picked.len() < count {
            let k = &keys[rng.random_range(0..keys.len())];
            if !picked.contains(&k) {
                picked.push(k);
            }
        }
        let ops = picked
            .into_iter()
            .map(|key| {
                if rng.random_range(0..2) == 0 {
                    Micro::R { key: key.clone() }
                } else {
                    n += 1;
                    Micro::Append {
                        key: key.clone(),
                        element: u64::from(client) * 1_000_000_000 + n,
                    }
                }
            })
            .collect();
        if !append_txn(&ctx, &mut kv, client, ops).await {
            endpoint += 1;
            kv = KvClient::new(ctx.channel(endpoint));
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
        }
    }
}

/// What a watcher watches.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub key: String,
    /// Empty: the key alone; "\0": every key from `key`.
    pub range_end: String,
    /// 0: from the member's current revision.
    pub start_revision: i64,
}

/// Watches `spec` until the run stops and the watcher has seen everything up
/// to the highest revision any client saw (bounded by `catch_up`), resuming
/// after every break as a new watcher (a new id in the history) from the
/// revision after the last one it saw. `ids` hands out watcher ids.
pub async fn watcher(
    ctx: Arc<Ctx>,
    spec: WatchSpec,
    ids: Arc<std::sync::atomic::AtomicU32>,
    first_endpoint: usize,
    catch_up: Duration,
) {
    let mut from = spec.start_revision;
    let mut endpoint = first_endpoint;
    let mut stop_at: Option<(Instant, i64)> = None;
    loop {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        ctx.recorder.record(Entry::WatchStart(WatchStart {
            watcher: id,
            at_us: ctx.recorder.now_us(),
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: from,
        }));
        let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: bytes(&spec.key),
                range_end: bytes(&spec.range_end),
                start_revision: from,
                ..Default::default()
            })),
        };
        let _ = tx.send(create).await;
        let mut client = WatchClient::new(ctx.channel(endpoint));
        let stream = tokio::time::timeout(OP_TIMEOUT, client.watch(tokio_stream(rx))).await;
        let mut stream = match stream {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                endpoint += 1;
                if done_watching(&ctx, &mut stop_at, from - 1, catch_up) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        // The highest revision this stream covered: events and progress.
        let mut covered = from - 1;
        loop {
            if done_watching(&ctx, &mut stop_at, covered, catch_up) {
                return;
            }
            tokio::select! {
                _ = progress.tick() => {
                    let req = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    if tx.try_send(req).is_err() {
                        break;
                    }
                }
                msg = tokio::time::timeout(OP_TIMEOUT, stream.message()) => {
                    let r = match msg {
                        Ok(Ok(Some(r))) => r,
                        // Broken, ended, or silent for too long: resume.
                        _ => break,
                    };
                    let header = header_revision(&r.header);
                    let is_progress = r.events.is_empty() && !r.created && !r.canceled;
                    let events: Vec<Event> = r
                        .events
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv.as_ref()?;
                            Some(Event {
                                kind: if e.r#type == 0 { EventKind::Put } else { EventKind::Delete },
                                key: text(&kv.key),
                                value: text(&kv.value),
                                mod_revision: kv.mod_revision,
                            })
                        })
                        .collect();
                    if let Some(last) = events.last() {
                        covered = covered.max(last.mod_revision);
                        from = last.mod_revision + 1;
                    }
                    if is_progress {
                        covered = covered.max(header);
                        from = from.max(header + 1);
                    }
                    ctx.recorder.record(Entry::WatchResponse(WatchResponse {
                        watcher: id,
                        at_us: ctx.recorder.now_us(),
                        header_revision: header,
                        events,
                        progress: is_progress,
                        canceled: r.canceled,
                        compact_revision: r.compact_revision,
                    }));
                    if r.canceled {
                        // Compacted away or refused: nothing more to learn.
                        return;
                    }
                }
            }
        }
        endpoint += 1;
    }
}

/// Whether a watcher is done: the run stopped and it covered the highest
/// revision any client saw then, or `catch_up` passed since the stop.
fn done_watching(
    ctx: &Ctx,
    stop_at: &mut Option<(Instant, i64)>,
    covered: i64,
    catch_up: Duration,
) -> bool {
    if !ctx.stop.load(Ordering::Relaxed) {
        return false;
    }
    let (since, target) =
        *stop_at.get_or_insert_with(|| (Instant::now(), ctx.max_revision.load(Ordering::Relaxed)));
    covered >= target || since.elapsed() > catch_up
}

/// An mpsc receiver as a stream of requests.
fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures::Stream<Item = WatchRequest> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
