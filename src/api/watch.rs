//! The Watch service: etcd's bidirectional watch stream.
//!
//! One task per stream serves all of its watchers. Whenever C moves it sends
//! each watcher the events from its next revision up to C, in revision order:
//! from the hub's log of recent events (`crate::watch`), or, for a watcher
//! that starts in the past or has fallen out of the log (etcd's "unsynced"
//! watchers), from the shards' key histories, a bounded piece at a time. A
//! watcher that needs history below the compaction point is canceled with
//! `compact_revision` set, as etcd does.
//!
//! Memory is bounded: responses go out through a small queue, and while the
//! client does not read them the task waits and reads nothing else; the
//! watchers' positions simply fall behind, to be caught up from the
//! histories.
//!
//! What etcd 3.4 does, kept here: watch IDs from 0 per stream (or the
//! client's own, refused if in use), `created` before any event, events of
//! one revision never split across responses, `start_revision` 0 = from the
//! next revision, `range_end` `"\0"` = every key from `key`, `prev_kv`, the
//! NOPUT/NODELETE filters, progress on request (`WatchProgressRequest`: once
//! every watcher of the stream has its events up to the current revision,
//! one empty response with watch ID -1 at that revision, as etcd 3.4.2x
//! sends) and every 10 minutes for `progress_notify` watchers that got
//! nothing since. A compacted watcher's cancel also names the reason
//! (etcd's compaction message; etcd 3.4 leaves it empty).
//! `fragment` is accepted; responses are never fragmented.

use crate::member::Member;
use crate::mvcc::store::ERR_COMPACTED;
use crate::mvcc::{Event, RangeEnd};
use crate::watch::Read;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use pb::watch_request::RequestUnion;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses queued per stream before the task waits for the client.
const SEND_QUEUE: usize = 16;
/// A response stops growing past this (at a revision boundary).
const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// etcd's default progress-notify interval.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// etcd's messages for a refused watch.
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

pub struct WatchService(pub Arc<Member>);

/// The responses of one watch stream, as the service sends them.
pub type Responses = ReceiverStream<Result<pb::WatchResponse, Status>>;

/// Starts serving one watch stream whose requests come from `requests`
/// (gRPC's stream, or the JSON gateway's body): a task serves it until
/// `requests` ends or fails, the member stops, or the receiver of the
/// responses is dropped. `require_leader`: clientv3's WithRequireLeader
/// (metadata `hasleader: true`): refused without a leader, and ended with
/// `etcdserver: no leader` when the member loses its leader. `credential`:
/// the stream's token or certificate name, checked at each watch's
/// creation.
pub fn serve<R>(
    member: Arc<Member>,
    requests: R,
    require_leader: bool,
    credential: Option<crate::auth::Credential>,
) -> Result<Responses, Status>
where
    R: futures::Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + Send + 'static,
{
    if require_leader && member.leader().is_none() {
        return Err(crate::api::EtcdError::NoLeader.status());
    }
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let stream = Stream {
        member,
        tx,
        watchers: BTreeMap::new(),
        next_id: 0,
        progress_asked: false,
        require_leader,
        credential,
    };
    tokio::spawn(stream.serve(requests));
    Ok(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = Responses;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // clientv3's WithRequireLeader (kube-apiserver uses it).
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        let credential = super::access::credential(&request);
        serve(
            self.0.clone(),
            request.into_inner(),
            require_leader,
            credential,
        )
        .map(Response::new)
    }
}

struct Watcher {
    key: Vec<u8>,
    /// As the client sent it (routing), and as the store reads it.
    range_end: Vec<u8>,
    end: RangeEnd,
    /// The next revision to send.
    next: i64,
    /// Reads the hub's log; false: reads the histories first.
    synced: bool,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Sent something since the last progress tick.
    sent: bool,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        !(e.delete && self.no_delete || !e.delete && self.no_put)
            && self.end.contains(&self.key, &e.kv.key)
    }
}

/// The stream closed (the client went away): stop serving it.
struct Closed;

struct Stream {
    member: Arc<Member>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// A progress request waits for its answer.
    progress_asked: bool,
    /// The stream ends with `etcdserver: no leader` when the member loses
    /// its leader.
    require_leader: bool,
    credential: Option<crate::auth::Credential>,
}

impl Stream {
    async fn serve<R>(mut self, mut requests: R)
    where
        R: futures::Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
    {
        use futures::StreamExt;
        let mut committed = self.member.seq.subscribe();
        let mut leadership = self.member.peers.board.subscribe();
        // A silent leader shows as none only as time passes: looked at
        // every half election timeout too.
        let mut leader_check = tokio::time::interval(std::time::Duration::from_millis(
            (self.member.peers.timing.election_ms / 2).max(10),
        ));
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + PROGRESS_INTERVAL,
            PROGRESS_INTERVAL,
        );
        loop {
            let c = *committed.borrow_and_update();
            if self.deliver(c).await.is_err() || self.answer_progress(c).await.is_err() {
                return;
            }
            let r = tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(req)) => self.handle(req, c).await,
                    None | Some(Err(_)) => return,
                },
                changed = committed.changed() => match changed {
                    Ok(()) => Ok(()),
                    Err(_) => return, // the member is stopping
                },
                _ = tick.tick() => self.progress_tick(c).await,
                _ = async {
                    tokio::select! {
                        _ = leadership.changed() => {}
                        _ = leader_check.tick() => {}
                    }
                }, if self.require_leader => {
                    if self.member.leader().is_none() {
                        let _ = self.tx.send(Err(crate::api::EtcdError::NoLeader.status())).await;
                        return;
                    }
                    Ok(())
                }
            };
            if r.is_err() {
                return;
            }
        }
    }

    /// Drops watcher `id`; false if there is none.
    fn remove(&mut self, id: i64) -> bool {
        let found = self.watchers.remove(&id).is_some();
        if found {
            self.member.hub.remove_watcher();
        }
        found
    }

    async fn send(&self, resp: pb::WatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(resp)).await.map_err(|_| Closed)
    }

    /// etcd's check at a watch's creation: read on what it watches (an
    /// empty key is `\0`, as etcd rewrites it first); the cancel reason if
    /// refused.
    async fn permitted(&self, create: &pb::WatchCreateRequest) -> Result<(), &'static str> {
        use crate::auth::AuthFail;
        let member = &self.member;
        if self.credential.is_none() && !member.auth.view.enabled() {
            return Ok(());
        }
        let key: &[u8] = if create.key.is_empty() {
            &[0]
        } else {
            &create.key
        };
        // etcd 3.4.23 also dropped a range end of `\0` here, so a watch
        // "from a key on" was checked as that key alone and saw every key
        // after it (GHSA-xg4h-6gfc-h4m8, fixed in later etcd): here it is
        // checked as the range it watches.
        let end: &[u8] = &create.range_end;
        // etcd 3.4 writes the gRPC error's Go text as the reason.
        let reason = |f| match f {
            AuthFail::InvalidAuthToken => {
                "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
            }
            AuthFail::AuthOldRevision => {
                "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old"
            }
            AuthFail::UserEmpty => {
                "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
            }
            _ => "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        };
        let caller = member
            .caller(self.credential.as_ref())
            .await
            .map_err(reason)?;
        member
            .auth
            .view
            .permitted(caller.as_ref(), crate::auth::PermKind::Read, key, end)
            .map_err(reason)
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.member.header(revision, self.member.raft_term()))
    }

    async fn handle(&mut self, req: pb::WatchRequest, c: i64) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create, c).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.remove(cancel.watch_id) {
                    self.send(pb::WatchResponse {
                        header: self.header(c),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_asked = true;
                self.answer_progress(c).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: pb::WatchCreateRequest, c: i64) -> Result<(), Closed> {
        let end = RangeEnd::from_request(&create.range_end);
        let refused = |reason: &str| pb::WatchResponse {
            header: self.header(c),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if let Err(reason) = self.permitted(&create).await {
            return self.send(refused(reason)).await;
        }
        if matches!(&end, RangeEnd::Until(e) if e.as_slice() <= create.key.as_slice()) {
            return self.send(refused(ERR_EMPTY_RANGE)).await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self.send(refused(ERR_DUPLICATE_ID)).await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        use pb::watch_create_request::FilterType;
        let filter = |f: FilterType| create.filters.contains(&(f as i32));
        let start = create.start_revision;
        let seq = &self.member.seq;
        self.member.hub.add_watcher(|| seq.last_stamped());
        self.watchers.insert(
            id,
            Watcher {
                no_put: filter(FilterType::Noput),
                no_delete: filter(FilterType::Nodelete),
                key: create.key,
                range_end: create.range_end,
                end,
                next: if start > 0 { start } else { c + 1 },
                synced: start <= 0 || start > c,
                prev_kv: create.prev_kv,
                progress_notify: create.progress_notify,
                sent: false,
            },
        );
        self.send(pb::WatchResponse {
            header: self.header(c),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Sends every watcher its events up to `c`.
    async fn deliver(&mut self, c: i64) -> Result<(), Closed> {
        // The log once for every synced watcher, from the oldest position.
        let from = self
            .watchers
            .values()
            .filter(|w| w.synced && w.next <= c)
            .map(|w| w.next)
            .min();
        let log = from.map(|from| self.member.hub.read(from, c));
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let w = &self.watchers[&id];
            if w.next > c {
                continue;
            }
            if w.synced {
                match &log {
                    Some(Read::Events(batches, upto)) => {
                        let upto = *upto;
                        let events: Vec<Event> = batches
                            .iter()
                            .filter(|b| b.0 >= w.next && b.0 <= upto)
                            .flat_map(|b| b.1.iter().filter(|e| w.wants(e)).cloned())
                            .collect();
                        self.send_events(id, events, c).await?;
                        if let Some(w) = self.watchers.get_mut(&id) {
                            w.next = w.next.max(upto + 1);
                        }
                        continue;
                    }
                    _ => self.watchers.get_mut(&id).expect("listed").synced = false,
                }
            }
            self.catch_up(id, c).await?;
        }
        Ok(())
    }

    /// Reads a watcher's events up to `c` from the histories, a bounded
    /// piece at a time; it reads the log from then on. Cancels it if the
    /// history it needs was compacted.
    async fn catch_up(&mut self, id: i64, c: i64) -> Result<(), Closed> {
        loop {
            let w = &self.watchers[&id];
            if w.next > c {
                break;
            }
            match self.history(w, c).await {
                Ok((events, reached)) => {
                    let events = events.into_iter().filter(|e| w.wants(e)).collect();
                    self.send_events(id, events, c).await?;
                    self.watchers.get_mut(&id).expect("listed").next = reached + 1;
                }
                Err(Some(compacted)) => {
                    self.remove(id);
                    return self
                        .send(pb::WatchResponse {
                            header: self.header(c),
                            watch_id: id,
                            canceled: true,
                            compact_revision: compacted,
                            cancel_reason: ERR_COMPACTED.to_string(),
                            ..Default::default()
                        })
                        .await;
                }
                Err(None) => return Err(Closed), // the member is stopping
            }
        }
        self.watchers.get_mut(&id).expect("listed").synced = true;
        Ok(())
    }

    /// A watcher's events from its next revision to at most `c`, from the
    /// shards it covers (see [`Member::history`]).
    async fn history(&self, w: &Watcher, c: i64) -> Result<(Vec<Event>, i64), Option<i64>> {
        self.member
            .history(&w.key, &w.range_end, &w.end, w.next, c)
            .await
    }

    /// Sends `events` (in revision order) to watcher `id`, in responses of
    /// at most about [`RESPONSE_BYTES_MAX`] that never split a revision.
    async fn send_events(&mut self, id: i64, events: Vec<Event>, c: i64) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        w.sent = true;
        let prev_kv = w.prev_kv;
        let mut out: Vec<mvccpb::Event> = Vec::new();
        let mut bytes = 0;
        let mut last_rev = 0;
        for e in events {
            if bytes >= RESPONSE_BYTES_MAX && e.kv.mod_revision != last_rev {
                self.send(self.events_response(id, std::mem::take(&mut out), c))
                    .await?;
                bytes = 0;
            }
            last_rev = e.kv.mod_revision;
            bytes += e.kv.key.len() + e.kv.value.len() + 32;
            out.push(mvccpb::Event {
                r#type: if e.delete {
                    mvccpb::event::EventType::Delete
                } else {
                    mvccpb::event::EventType::Put
                } as i32,
                kv: Some(super::convert::kv(e.kv)),
                prev_kv: e.prev.filter(|_| prev_kv).map(super::convert::kv),
            });
        }
        self.send(self.events_response(id, out, c)).await
    }

    fn events_response(&self, id: i64, events: Vec<mvccpb::Event>, c: i64) -> pb::WatchResponse {
        let last = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(0, |kv| kv.mod_revision);
        pb::WatchResponse {
            header: self.header(c.max(last)),
            watch_id: id,
            events,
            ..Default::default()
        }
    }

    /// Answers a progress request once every watcher has had its events up
    /// to `c`: one response for the stream, watch ID -1, at revision `c`.
    async fn answer_progress(&mut self, c: i64) -> Result<(), Closed> {
        if !self.progress_asked || self.watchers.values().any(|w| w.next <= c) {
            return Ok(());
        }
        self.progress_asked = false;
        self.send(pb::WatchResponse {
            header: self.header(c),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }

    /// etcd's periodic progress notification: an empty response to each
    /// `progress_notify` watcher that is caught up and got nothing since.
    async fn progress_tick(&mut self, c: i64) -> Result<(), Closed> {
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(id, w)| {
                let due = w.progress_notify && w.synced && w.next > c && !w.sent;
                w.sent = false;
                due.then_some(*id)
            })
            .collect();
        for id in due {
            self.send(pb::WatchResponse {
                header: self.header(c),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for Stream {
    /// The stream ended (client gone, member stopping): its watchers go.
    fn drop(&mut self) {
        for _ in 0..self.watchers.len() {
            self.member.hub.remove_watcher();
        }
    }
}
