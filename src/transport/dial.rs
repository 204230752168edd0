//! The dialing side of [`super::quic::QuicTransport`]: a member keeps one
//! connection up to each member with a higher id (at most one dial task
//! per member, so one connection per pair), and dials seeds (peer URLs of
//! unknown members) once, to learn who they are.

use super::handshake::{Hello, HELLO_BYTES_MAX};
use super::peer_tls::cn_refusal;
use super::quic::Shared;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Dials a seed (a peer URL whose member is not known yet) until it
/// answers: a member with a higher id is dialed from then on (its
/// connection kept, unless a dial of it already runs), one with a lower id
/// dials this member itself.
pub(super) async fn learn(shared: Arc<Shared>, url: String) {
    let Some((addr, name)) = resolve(&url) else {
        return;
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(&shared, None, addr, &name).await {
            Ok((id, conn)) => {
                if id < shared.me {
                    conn.close(0u32.into(), b"the lower id dials");
                } else {
                    shared.dial_from(tokio::runtime::Handle::current(), id, url, Some(conn));
                }
                return;
            }
            Err(Dial::Refused(why)) => {
                eprintln!("cairn: refusing peer at {addr}: {why}");
                return;
            }
            Err(Dial::Failed(_)) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Keeps a connection to `peer` (a member with a higher id) up, starting
/// with `first` if it is given (a seed's, just made).
async fn dial(
    shared: Arc<Shared>,
    peer: u64,
    (addr, name): (SocketAddr, String),
    first: Option<quinn::Connection>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut refused_before = false;
    if let Some(conn) = first {
        shared.clone().adopt(peer, conn).await;
    }
    loop {
        match connect(&shared, Some(peer), addr, &name).await {
            Ok((id, conn)) => {
                backoff = Duration::from_millis(50);
                refused_before = false;
                shared.clone().adopt(id, conn).await;
            }
            Err(Dial::Refused(why)) => {
                if !refused_before {
                    eprintln!("cairn: refusing peer {peer:x} at {addr}: {why}");
                }
                refused_before = true;
                backoff = Duration::from_secs(5);
            }
            Err(Dial::Failed(why)) => {
                if !refused_before && why.contains("certificate") {
                    eprintln!("cairn: refusing peer {peer:x} at {addr}: {why}");
                    refused_before = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

enum Dial {
    /// Reached, and not one of ours (or it refused us).
    Refused(String),
    /// Not reached (yet: it is redialed), and why.
    Failed(String),
}

async fn connect(
    shared: &Shared,
    peer: Option<u64>,
    addr: SocketAddr,
    name: &str,
) -> Result<(u64, quinn::Connection), Dial> {
    let failed = |e: &dyn std::fmt::Display| Dial::Failed(e.to_string());
    let conn = shared
        .endpoint
        .connect(addr, name)
        .map_err(|e| failed(&e))?
        .await
        .map_err(|e| match e {
            quinn::ConnectionError::TransportError(t) => Dial::Refused(format!("TLS: {t}")),
            quinn::ConnectionError::ConnectionClosed(c) => Dial::Refused(format!("TLS: {c}")),
            e => failed(&e),
        })?;
    if let Some(why) = cn_refusal(shared.allowed_cn.as_deref(), &conn) {
        conn.close(1u32.into(), b"CommonName authentication failed");
        return Err(Dial::Refused(why));
    }
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(&e))?;
    let hello = postcard::to_stdvec(&shared.hello).map_err(|e| failed(&e))?;
    send.write_all(&hello).await.map_err(|e| failed(&e))?;
    send.finish().map_err(|e| failed(&e))?;
    let answer = recv
        .read_to_end(HELLO_BYTES_MAX)
        .await
        .map_err(|e| failed(&e))?;
    let theirs: Result<Hello, String> = postcard::from_bytes(&answer).map_err(|e| failed(&e))?;
    let (id, refused) = match theirs {
        Err(why) => (0, Some(format!("it refuses this member: {why}"))),
        Ok(h) if peer.is_some_and(|p| p != h.member_id) => (
            h.member_id,
            Some(format!(
                "it is member {:x}, not {:x}",
                h.member_id,
                peer.unwrap_or(0)
            )),
        ),
        Ok(h) => (h.member_id, shared.hello.refuses(&h)),
    };
    if let Some(why) = refused {
        conn.close(1u32.into(), why.as_bytes());
        return Err(Dial::Refused(why));
    }
    Ok((id, conn))
}

impl Shared {
    /// The members are now `peers` (id → peer URL; this member may be
    /// among them): members with higher ids that are new, or whose URL
    /// changed, are dialed; members gone (or moved) are not dialed any more,
    /// and their connection is closed (the task that served it is gone).
    pub(super) fn dial_peers(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        peers: &BTreeMap<u64, String>,
    ) {
        let mut dials = self.dials.lock().unwrap_or_else(|e| e.into_inner());
        dials.retain(|id, (url, task)| {
            let keep = peers.get(id) == Some(url);
            if !keep {
                task.abort();
                let conn = self
                    .conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                if let Some((conn, _)) = conn {
                    conn.close(0u32.into(), b"no longer a member at this URL");
                }
            }
            keep
        });
        for (id, url) in peers {
            if *id > self.me && !dials.contains_key(id) {
                self.spawn_dial(runtime, &mut dials, *id, url.clone(), None);
            }
        }
    }

    /// Dials `id` at `url` (a seed's answer) unless a dial of it runs;
    /// `conn` is that seed's connection, kept if it is the first.
    fn dial_from(
        self: &Arc<Self>,
        runtime: tokio::runtime::Handle,
        id: u64,
        url: String,
        conn: Option<quinn::Connection>,
    ) {
        let mut dials = self.dials.lock().unwrap_or_else(|e| e.into_inner());
        if dials.contains_key(&id) {
            if let Some(conn) = conn {
                conn.close(0u32.into(), b"already connected");
            }
            return;
        }
        self.spawn_dial(&runtime, &mut dials, id, url, conn);
    }

    fn spawn_dial(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        dials: &mut BTreeMap<u64, (String, tokio::task::JoinHandle<()>)>,
        id: u64,
        url: String,
        first: Option<quinn::Connection>,
    ) {
        let Some(target) = resolve(&url) else {
            eprintln!("cairn: member {id:x}: cannot resolve peer URL {url}");
            return;
        };
        let task = runtime.spawn(dial(self.clone(), id, target, first));
        dials.insert(id, (url, task));
    }
}

/// The address and certificate name of a peer URL.
pub fn resolve(url: &str) -> Option<(SocketAddr, String)> {
    use std::net::ToSocketAddrs;
    let host_port = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?
        .trim_end_matches('/');
    let addr = host_port.to_socket_addrs().ok()?.next()?;
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string();
    Some((addr, host))
}
