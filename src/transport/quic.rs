//! [`QuicTransport`]: members over QUIC (quinn on its own small tokio
//! runtime), the peer port being UDP (DESIGN §2.1.1, §2.2).
//!
//! - **One connection per member pair**, dialed by the member with the lower
//!   id (redialed with backoff while the peer is away) and used both ways:
//!   each call is a bidirectional stream of its own, so a large snapshot is
//!   flow-controlled on its stream and never holds heartbeats back, and the
//!   small frames of every group that are sent together travel in the same
//!   UDP packets (QUIC packs the frames of many streams into one packet:
//!   that is how heartbeats of all groups to one member are coalesced).
//! - **Handshake**: the dialer's first stream carries its [`Hello`]
//!   (protocol version, member id, cluster token, shard count); the other
//!   side checks it against its own and answers with its own Hello or the
//!   reason it refuses. Both sides log a refusal and close the connection.
//!   (The Hello and its checks are in `super::handshake`.)
//! - **TLS**: `https://` peer URLs use mutual TLS with the given CA;
//!   `http://` ones an ephemeral self-signed certificate that peers do not
//!   verify (encrypted, not authenticated: a warning at start). See
//!   [`PeerTls`] (in `super::peer_tls`).
//! - **Bounded**: at most [`STREAMS_MAX`] streams at once per connection
//!   (QUIC flow control makes the sender wait), frames of at most
//!   [`FRAME_BYTES_MAX`].
//!
//! Wire format of a call: request = kind (u8), group (u64 LE), body; the
//! stream's end ends it. Reply = status (u8: 0 ok, 1 refused), then the
//! body or the reason (UTF-8).

use super::dial::learn;
pub use super::dial::resolve;
use super::handshake::HELLO_BYTES_MAX;
pub use super::handshake::{Hello, PROTOCOL_VERSION};
use super::liveness::Liveness;
pub use super::peer_tls::PeerTls;
use super::peer_tls::{cn_refusal, rustls_configs};
use super::{CallError, Frame, Inbox, Kind, Transport};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Streams open at once on one connection, each way.
pub const STREAMS_MAX: u32 = 1024;
/// The largest frame (a snapshot travels as one).
pub const FRAME_BYTES_MAX: usize = 1 << 30;

/// Bound on the refusals remembered so as to log each once.
const REFUSALS_REMEMBERED: usize = 1024;

/// How to start a [`QuicTransport`].
pub struct QuicConfig {
    pub me: u64,
    /// The UDP address to listen on (`--listen-peer-urls`).
    pub listen: SocketAddr,
    /// Every other member's peer URL, by id.
    pub peers: BTreeMap<u64, String>,
    /// Members known by peer URL alone (a member that joins knows its
    /// cluster's members from `--initial-cluster`, not their ids): dialed
    /// once each, to learn who they are.
    pub seeds: Vec<String>,
    pub tls: PeerTls,
    pub hello: Hello,
}

pub(super) struct Shared {
    pub(super) hello: Hello,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) inbox: Arc<dyn Inbox>,
    /// The connection to each member, and whether it still answers.
    pub(super) conns: Mutex<BTreeMap<u64, (quinn::Connection, Arc<Liveness>)>>,
    /// Refusals already logged (each address and reason is logged once; at
    /// most [`REFUSALS_REMEMBERED`], then forgotten and logged anew).
    refused: Mutex<std::collections::BTreeSet<(SocketAddr, String)>>,
    /// `--peer-cert-allowed-cn` (https:// peer URLs only).
    pub(super) allowed_cn: Option<String>,
    pub(super) me: u64,
    /// The members this one dials (those with higher ids), by id: the peer
    /// URL and the task that keeps the connection up. At most one task per
    /// member (a second would make a second connection, and each one's
    /// adoption would replace the other's).
    pub(super) dials: Mutex<BTreeMap<u64, (String, tokio::task::JoinHandle<()>)>>,
}

impl Shared {
    /// Logs a refused peer, once per address.
    fn refuse(&self, addr: SocketAddr, why: &str) {
        let first = {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.len() >= REFUSALS_REMEMBERED {
                refused.clear();
            }
            refused.insert((addr, why.to_string()))
        };
        if first {
            eprintln!("cairn: refusing peer at {addr}: {why}");
        }
    }
}

/// See the module docs.
pub struct QuicTransport {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shared.endpoint.close(0u32.into(), b"member stopping");
        // May be dropped on a runtime's thread: no blocking shutdown.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The QUIC server and client configurations for `tls`.
fn quic_configs(tls: &PeerTls) -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let (server, client) = rustls_configs(tls)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(STREAMS_MAX.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(
            Duration::from_secs(10)
                .try_into()
                .map_err(|e| format!("{e}"))?,
        ));
    let transport = Arc::new(transport);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| e.to_string())?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| e.to_string())?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

impl QuicTransport {
    /// Listens on `cfg.listen`, dials the members with higher ids, and
    /// hands incoming frames to `inbox`.
    pub fn start(cfg: QuicConfig, inbox: Arc<dyn Inbox>) -> Result<Arc<Self>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cairn-peer")
            .enable_all()
            .build()
            .map_err(|e| format!("peer runtime: {e}"))?;
        let (server, client) = quic_configs(&cfg.tls)?;
        let endpoint = {
            let _guard = runtime.enter();
            let mut endpoint = quinn::Endpoint::server(server, cfg.listen)
                .map_err(|e| format!("--listen-peer-urls {} (UDP): {e}", cfg.listen))?;
            endpoint.set_default_client_config(client);
            endpoint
        };
        let shared = Arc::new(Shared {
            hello: cfg.hello,
            endpoint,
            inbox,
            conns: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(Default::default()),
            allowed_cn: match &cfg.tls {
                PeerTls::Mutual { allowed_cn, .. } => allowed_cn.clone(),
                PeerTls::Unauthenticated => None,
            },
            me: cfg.me,
            dials: Mutex::new(BTreeMap::new()),
        });
        for url in cfg.peers.values().chain(&cfg.seeds) {
            resolve(url)
                .ok_or_else(|| format!("peer URL {url}: not an http(s):// URL that resolves"))?;
        }
        runtime.spawn(accept(shared.clone()));
        shared.dial_peers(runtime.handle(), &cfg.peers);
        for url in cfg.seeds {
            runtime.spawn(learn(shared.clone(), url));
        }
        Ok(Arc::new(Self {
            shared,
            runtime: Some(runtime),
        }))
    }

    /// The UDP address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.local_addr().ok()
    }
}

impl Shared {
    #[cfg(test)]
    pub(super) fn conn(&self, to: u64) -> Option<quinn::Connection> {
        self.peer(to).map(|(conn, _)| conn)
    }

    fn peer(&self, to: u64) -> Option<(quinn::Connection, Arc<Liveness>)> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned()
    }

    /// `conn` is the connection to `peer` now; served until it closes.
    pub(super) async fn adopt(self: Arc<Self>, peer: u64, conn: quinn::Connection) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, (conn.clone(), Arc::new(Liveness::new())));
        // One line per connection up and down (etcd's "peer became
        // active/inactive"), not one per failed message.
        eprintln!(
            "cairn: peer {peer:x} became active ({})",
            conn.remote_address()
        );
        let why = loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    tokio::spawn(serve_stream(self.clone(), peer, send, recv));
                }
                Err(e) => break e,
            }
        };
        eprintln!("cairn: peer {peer:x} became inactive: {why}");
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns
            .get(&peer)
            .is_some_and(|(c, _)| c.stable_id() == conn.stable_id())
        {
            conns.remove(&peer);
        }
    }
}

/// Accepts connections from members with lower ids.
async fn accept(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    shared.refuse(remote, &format!("TLS: {e}"));
                    return;
                }
            };
            if let Some(why) = cn_refusal(shared.allowed_cn.as_deref(), &conn) {
                shared.refuse(remote, &why);
                conn.close(1u32.into(), b"CommonName authentication failed");
                return;
            }
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let Ok(bytes) = recv.read_to_end(HELLO_BYTES_MAX).await else {
                return;
            };
            let theirs: Option<Hello> = postcard::from_bytes(&bytes).ok();
            let verdict: Result<Hello, String> = match &theirs {
                None => Err("an unreadable hello".into()),
                Some(h) => match shared.hello.refuses(h) {
                    Some(why) => Err(why),
                    None => Ok(shared.hello.clone()),
                },
            };
            if let Err(why) = &verdict {
                shared.refuse(remote, why);
            }
            let Ok(answer) = postcard::to_stdvec(&verdict) else {
                return;
            };
            if send.write_all(&answer).await.is_err() || send.finish().is_err() {
                return;
            }
            match (verdict, theirs) {
                // Kept only from a member with a lower id: a higher one
                // (a joiner asking a seed who it is) closes it itself.
                (Ok(_), Some(h)) if h.member_id < shared.me => {
                    shared.adopt(h.member_id, conn).await
                }
                (Ok(_), Some(_)) => {
                    conn.closed().await;
                }
                _ => {
                    // Let the answer reach it before closing.
                    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                    conn.close(1u32.into(), b"refused");
                }
            }
        });
    }
}

fn kind_of(byte: u8) -> Option<Kind> {
    Some(match byte {
        1 => Kind::Append,
        2 => Kind::Vote,
        3 => Kind::Snapshot,
        4 => Kind::Forward,
        5 => Kind::ReadIndex,
        6 => Kind::Transfer,
        7 => Kind::PreVote,
        8 => Kind::Removed,
        _ => return None,
    })
}

/// Answers one call from `peer`.
async fn serve_stream(
    shared: Arc<Shared>,
    peer: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Ok(bytes) = recv.read_to_end(FRAME_BYTES_MAX).await else {
        return;
    };
    let reply = match (bytes.first().copied().and_then(kind_of), bytes.get(1..9)) {
        (Some(kind), Some(group)) => {
            let frame = Frame {
                kind,
                group: u64::from_le_bytes(group.try_into().expect("8 bytes")),
                body: bytes[9..].to_vec(),
            };
            shared.inbox.deliver(peer, frame).await
        }
        _ => Err("a malformed frame".into()),
    };
    let (status, body) = match reply {
        Ok(body) => (0u8, body),
        Err(why) => (1u8, why.into_bytes()),
    };
    if send.write_all(&[status]).await.is_ok() && send.write_all(&body).await.is_ok() {
        let _ = send.finish();
    }
}

impl Transport for QuicTransport {
    fn set_peers(&self, peers: &BTreeMap<u64, String>) {
        if let Some(runtime) = self.runtime.as_ref() {
            self.shared.dial_peers(runtime.handle(), peers);
        }
    }

    /// QUIC's own smoothed RTT of each open connection.
    fn round_trips(&self) -> Vec<(u64, Duration)> {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .iter()
            .filter(|(_, (conn, _))| conn.close_reason().is_none())
            .map(|(id, (conn, _))| (*id, conn.rtt()))
            .collect()
    }

    fn call(
        &self,
        to: u64,
        frame: Frame,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let Some((conn, live)) = self.shared.peer(to) else {
            return Box::pin(futures::future::ready(Err(CallError::Unreachable(
                format!("no connection to member {to:x}"),
            ))));
        };
        let Some(runtime) = self.runtime.as_ref() else {
            return Box::pin(futures::future::ready(Err(CallError::Unreachable(
                "stopping".into(),
            ))));
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        runtime.spawn(async move {
            let call = async {
                let (mut send, mut recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| CallError::Unreachable(e.to_string()))?;
                let mut head = [0u8; 9];
                head[0] = frame.kind as u8;
                head[1..].copy_from_slice(&frame.group.to_le_bytes());
                let sent: Result<(), quinn::WriteError> = async {
                    send.write_all(&head).await?;
                    send.write_all(&frame.body).await?;
                    Ok(())
                }
                .await;
                sent.map_err(|e| CallError::Unreachable(e.to_string()))?;
                send.finish()
                    .map_err(|e| CallError::Unreachable(e.to_string()))?;
                let reply = recv
                    .read_to_end(FRAME_BYTES_MAX)
                    .await
                    .map_err(|e| CallError::Unreachable(e.to_string()))?;
                match reply.split_first() {
                    Some((0, body)) => Ok(body.to_vec()),
                    Some((_, why)) => Err(CallError::Remote(String::from_utf8_lossy(why).into())),
                    None => Err(CallError::Unreachable("an empty reply".into())),
                }
            };
            let outcome = tokio::time::timeout(ttl, call)
                .await
                .unwrap_or(Err(CallError::Timeout));
            let now = std::time::Instant::now();
            match &outcome {
                Ok(_) | Err(CallError::Remote(_)) => live.answered(now),
                Err(CallError::Timeout) if live.stalled(now) => {
                    eprintln!(
                        "cairn: peer {to:x}: no call answered for {} s: closing the connection",
                        super::liveness::STALL.as_secs()
                    );
                    conn.close(2u32.into(), b"no call answered");
                }
                Err(_) => {}
            }
            let _ = tx.send(outcome);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(CallError::Unreachable("peer runtime stopped".into())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Inbox for Echo {
        fn deliver(&self, from: u64, frame: Frame) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            let mut body = frame.body;
            body.extend_from_slice(&from.to_le_bytes());
            body.push(frame.kind as u8);
            Box::pin(futures::future::ready(Ok(body)))
        }
    }

    fn hello(id: u64, token: &str, shards: u32) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            member_id: id,
            cluster: token.into(),
            token: "t".into(),
            shards,
        }
    }

    fn free_udp() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
    }

    /// Answers a frame whose body is "mute" never, any other as Echo does.
    struct MuteOnAsk;

    impl Inbox for MuteOnAsk {
        fn deliver(&self, from: u64, frame: Frame) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            if frame.body == b"mute" {
                return Box::pin(futures::future::pending());
            }
            Echo.deliver(from, frame)
        }
    }

    /// Two members; `b` says `b_hello` about itself.
    fn pair(b_hello: Hello) -> (Arc<QuicTransport>, Arc<QuicTransport>) {
        pair_with(b_hello, Arc::new(Echo))
    }

    /// Two members; `b`'s frames go to `b_inbox`.
    fn pair_with(
        b_hello: Hello,
        b_inbox: Arc<dyn Inbox>,
    ) -> (Arc<QuicTransport>, Arc<QuicTransport>) {
        let (a_addr, b_addr) = (free_udp(), free_udp());
        let a = QuicTransport::start(
            QuicConfig {
                me: 1,
                listen: a_addr,
                peers: BTreeMap::from([(2, format!("http://{b_addr}"))]),
                seeds: Vec::new(),
                tls: PeerTls::Unauthenticated,
                hello: hello(1, "t", 2),
            },
            Arc::new(Echo),
        )
        .expect("a starts");
        let b = QuicTransport::start(
            QuicConfig {
                me: 2,
                listen: b_addr,
                peers: BTreeMap::from([(1, format!("http://{a_addr}"))]),
                seeds: Vec::new(),
                tls: PeerTls::Unauthenticated,
                hello: b_hello,
            },
            b_inbox,
        )
        .expect("b starts");
        (a, b)
    }

    fn call(t: &QuicTransport, to: u64, body: &[u8]) -> Result<Vec<u8>, CallError> {
        futures::executor::block_on(t.call(
            to,
            Frame {
                kind: Kind::Vote,
                group: 3,
                body: body.to_vec(),
            },
            Duration::from_secs(5),
        ))
    }

    /// Calls until the connection is up (bounded).
    fn call_when_up(t: &QuicTransport, to: u64, body: &[u8]) -> Result<Vec<u8>, CallError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = call(t, to, body);
            if !matches!(r, Err(CallError::Unreachable(_))) || std::time::Instant::now() > deadline
            {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn one_connection_carries_calls_both_ways() {
        let (a, b) = pair(hello(2, "t", 2));
        let mut want = b"ping".to_vec();
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(Kind::Vote as u8);
        assert_eq!(call_when_up(&a, 2, b"ping"), Ok(want));
        // b never dials (its id is higher): it calls over a's connection.
        let reply = call_when_up(&b, 1, b"pong").expect("b calls a");
        assert_eq!(&reply[..4], b"pong");
        assert_eq!(&reply[4..12], &2u64.to_le_bytes());
        // A large frame (a snapshot) arrives whole.
        let big = vec![7u8; 8 << 20];
        assert_eq!(call(&a, 2, &big).expect("big").len(), big.len() + 9);
    }

    #[test]
    fn the_membership_naming_the_same_urls_keeps_the_connection_and_a_moved_member_loses_it() {
        let (a, b) = pair(hello(2, "t", 2));
        call_when_up(&a, 2, b"x").expect("up");
        let first = a.shared.conn(2).expect("a connection").stable_id();
        let b_url = format!("http://{}", b.local_addr().expect("bound"));
        let a_url = format!("http://{}", a.local_addr().expect("bound"));
        // As the controller does once the meta group names the members.
        a.set_peers(&BTreeMap::from([(1, a_url.clone()), (2, b_url)]));
        b.set_peers(&BTreeMap::from([
            (1, a_url.clone()),
            (2, "http://x".into()),
        ]));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            call(&a, 2, b"y").map(|r| r[..1].to_vec()),
            Ok(b"y".to_vec())
        );
        assert_eq!(
            a.shared.conn(2).map(|c| c.stable_id()),
            Some(first),
            "not redialed"
        );
        assert_eq!(a.shared.dials.lock().unwrap().len(), 1);
        // Member 2 moved to another port: its old connection goes with its dial.
        let moved = format!("http://{}", free_udp());
        a.set_peers(&BTreeMap::from([(1, a_url), (2, moved)]));
        assert!(
            a.shared.conn(2).is_none_or(|c| c.stable_id() != first),
            "the old connection is dropped"
        );
    }

    #[test]
    fn a_connection_whose_calls_go_unanswered_is_closed_and_dialed_again() {
        let (a, _b) = pair_with(hello(2, "t", 2), Arc::new(MuteOnAsk));
        call_when_up(&a, 2, b"x").expect("up");
        let first = a.shared.conn(2).expect("a connection").stable_id();
        // The connection stays open (QUIC answers its keep-alives) while
        // no call on it is answered.
        let deadline = std::time::Instant::now() + super::super::liveness::STALL * 3;
        let mut timeouts = 0;
        while a.shared.conn(2).is_some_and(|c| c.stable_id() == first) {
            assert!(std::time::Instant::now() < deadline, "never given up");
            let r = futures::executor::block_on(a.call(
                2,
                Frame {
                    kind: Kind::Append,
                    group: 0,
                    body: b"mute".to_vec(),
                },
                Duration::from_millis(500),
            ));
            if r == Err(CallError::Timeout) {
                timeouts += 1;
            }
        }
        assert!(timeouts >= 10, "closed after calls timed out: {timeouts}");
        // Dialed again: calls are answered on the new connection.
        assert_eq!(
            call_when_up(&a, 2, b"y").map(|r| r[..1].to_vec()),
            Ok(b"y".to_vec())
        );
        assert_ne!(a.shared.conn(2).map(|c| c.stable_id()), Some(first));
    }

    #[test]
    fn members_of_another_cluster_or_shard_count_are_refused() {
        for theirs in [hello(2, "other", 2), hello(2, "t", 4)] {
            let (a, b) = pair(theirs);
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                matches!(call(&a, 2, b"x"), Err(CallError::Unreachable(_))),
                "a holds no connection to a refused member"
            );
            assert!(matches!(call(&b, 1, b"x"), Err(CallError::Unreachable(_))));
        }
    }
}
