//! A userspace UDP relay that injects network faults on one link: this
//! machine's kernel has no netem qdisc, so the harness puts a [`Relay`] in
//! front of a member's QUIC (UDP) port and points the other members at it.
//!
//! The relay listens on one address and forwards every datagram to a target.
//! Like a NAT it keeps, for each distinct client source address, one upstream
//! socket connected to the target (bound on loopback when the target is a
//! loopback address), so replies go back to the client that caused them. The
//! map is bounded ([`Limits::max_clients`], least recently used evicted).
//!
//! Faults ([`Faults`]) change at runtime through the cloneable
//! [`RelayControl`]: a fixed delay plus uniform jitter (each datagram is
//! released at arrival + delay + jitter, which also reorders), random loss,
//! explicit reordering (a datagram held back and sent after the next one in
//! its direction, or after [`HOLD_LIMIT`] if none comes), and a full block
//! (every datagram dropped, in flight ones too: a partition of the link).
//! Randomness comes from a [`StdRng`] seeded per direction from the seed, so a
//! run with a seed and the same arrivals makes the same decisions.
//!
//! Faults apply to every client unless one client's traffic in one
//! [`Direction`] has faults of its own ([`RelayControl::set_client`]): that
//! is how the harness cuts one link of a cluster, or one way of it, when
//! several members reach a member through its relay (each member sends from
//! its one peer socket, so its source address names it).
//!
//! Bounds: at most [`Limits::max_in_flight`] datagrams (default 4096) are
//! queued per direction; beyond that they are dropped and counted
//! ([`Counters::dropped_overflow`]). Datagrams are at most 64 KiB.
//!
//! Threads: everything runs as tasks on the caller's tokio runtime
//! ([`Relay::start`] must be called inside one): one reader of the listening
//! socket, one reader per upstream socket, and one scheduler task per
//! direction that applies the faults and sends. [`RelayControl::stop`] or
//! dropping the [`Relay`] aborts them all.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{sleep, sleep_until, Instant};

/// How long a datagram held back for reordering waits for a successor
/// before it is sent anyway (so a lone datagram is delayed, not lost).
pub const HOLD_LIMIT: Duration = Duration::from_millis(200);

const MAX_DATAGRAM: usize = 65536;
/// Delay + jitter beyond this is cut to it (an hour is forever here).
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The faults of a link, applied to both directions (or, set per client and
/// direction with [`RelayControl::set_client`], to one).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Added to every datagram's release time.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]` per datagram.
    pub jitter: Duration,
    /// Probability (0..=1) that a datagram is dropped.
    pub loss: f64,
    /// Probability (0..=1) that a datagram is held back and sent after the
    /// next one.
    pub reorder: f64,
    /// Drop everything, including datagrams already in flight.
    pub blocked: bool,
}

/// One direction of a relay's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to the target.
    ToTarget,
    /// From the target back to a client.
    ToClient,
}

/// Sizes of the relay's bounded state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Datagrams queued per direction before new ones are dropped.
    pub max_in_flight: u64,
    /// Client addresses with their own upstream socket.
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 4096,
            max_clients: 64,
        }
    }
}

/// Defines [`Counters`] and its atomic twin for the tasks.
macro_rules! counters {
    ($($(#[$doc:meta])* $f:ident),* $(,)?) => {
        /// What happened to the datagrams of one direction.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $f: u64,)*
        }

        impl std::ops::Add for Counters {
            type Output = Counters;
            fn add(self, o: Counters) -> Counters {
                Counters { $($f: self.$f + o.$f,)* }
            }
        }

        #[derive(Default)]
        struct LaneCounters {
            $($f: AtomicU64,)*
        }

        impl LaneCounters {
            fn snapshot(&self) -> Counters {
                Counters { $($f: self.$f.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Datagrams read from a socket.
    received,
    forwarded,
    dropped_loss,
    dropped_blocked,
    dropped_overflow,
    /// Sending failed (e.g. the destination is gone).
    send_errors,
    /// Queued now (a gauge, not a total).
    in_flight,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client → target.
    pub to_target: Counters,
    /// Target → client.
    pub to_client: Counters,
}

impl Stats {
    /// Both directions summed.
    pub fn total(&self) -> Counters {
        self.to_target + self.to_client
    }
}

struct Shared {
    faults: Mutex<Faults>,
    /// Faults of one client's traffic in one direction, instead of `faults`
    /// (as many entries as [`RelayControl::set_client`] made).
    per_client: Mutex<HashMap<(SocketAddr, Direction), Faults>>,
    up: Arc<LaneCounters>,
    down: Arc<LaneCounters>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    /// The faults of `client`'s datagrams in direction `dir`.
    fn faults_for(&self, client: SocketAddr, dir: Direction) -> Faults {
        let own = self.per_client.lock().unwrap().get(&(client, dir)).copied();
        own.unwrap_or_else(|| *self.faults.lock().unwrap())
    }
}

/// A cloneable handle to a running relay: faults, counters, stop.
#[derive(Clone)]
pub struct RelayControl {
    shared: Arc<Shared>,
}

impl RelayControl {
    /// Replaces the faults (datagrams already queued keep their release
    /// time; a block also drops them).
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn faults(&self) -> Faults {
        *self.shared.faults.lock().unwrap()
    }

    /// Blocks or unblocks the link, keeping the other faults.
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.faults.lock().unwrap().blocked = blocked;
    }

    /// Gives the datagrams of `client` (a source address of datagrams to
    /// the relay) in direction `dir` faults of their own, instead of the
    /// relay's ([`RelayControl::set`]); `None` takes them back. Datagrams
    /// already queued keep their release time; a block drops them too.
    pub fn set_client(&self, client: SocketAddr, dir: Direction, faults: Option<Faults>) {
        let mut map = self.shared.per_client.lock().unwrap();
        match faults {
            Some(f) => map.insert((client, dir), f),
            None => map.remove(&(client, dir)),
        };
    }

    /// The faults that apply to `client`'s datagrams in direction `dir`:
    /// its own, or else the relay's.
    pub fn client_faults(&self, client: SocketAddr, dir: Direction) -> Faults {
        self.shared.faults_for(client, dir)
    }

    /// Takes back every client's own faults.
    pub fn clear_clients(&self) {
        self.shared.per_client.lock().unwrap().clear();
    }

    pub fn stats(&self) -> Stats {
        Stats {
            to_target: self.shared.up.snapshot(),
            to_client: self.shared.down.snapshot(),
        }
    }

    /// Stops the relay: its tasks are aborted and its sockets closed.
    pub fn stop(&self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A running relay; dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    control: RelayControl,
}

impl Relay {
    /// Listens on `listen` (port 0: the kernel picks) and forwards to
    /// `target`, with the default [`Limits`].
    pub async fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> io::Result<Relay> {
        Relay::start_with(listen, target, seed, Limits::default()).await
    }

    pub async fn start_with(
        listen: SocketAddr,
        target: SocketAddr,
        seed: u64,
        limits: Limits,
    ) -> io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            per_client: Mutex::new(HashMap::new()),
            up: Arc::default(),
            down: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let max = limits.max_in_flight;
        let inlet = |counters: &Arc<LaneCounters>| {
            let (tx, rx) = mpsc::channel(max.clamp(1, 1 << 20) as usize);
            let counters = counters.clone();
            (Inlet { tx, counters, max }, rx)
        };
        let ((up, up_rx), (down, down_rx)) = (inlet(&shared.up), inlet(&shared.down));
        let down_seed = seed ^ 0x9e37_79b9_7f4a_7c15;
        let tasks = [
            tokio::spawn(lane(
                up_rx,
                shared.clone(),
                Direction::ToTarget,
                shared.up.clone(),
                seed,
            )),
            tokio::spawn(lane(
                down_rx,
                shared.clone(),
                Direction::ToClient,
                shared.down.clone(),
                down_seed,
            )),
            tokio::spawn(front_reader(front, target, up, down, limits.max_clients)),
        ];
        let tasks = tasks.iter().map(|t| t.abort_handle()).collect();
        *shared.tasks.lock().unwrap() = tasks;
        Ok(Relay {
            addr,
            control: RelayControl { shared },
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> RelayControl {
        self.control.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.stop();
    }
}

/// A datagram on its way: sent on `via`, to `to` (or to `via`'s peer).
struct Packet {
    data: Vec<u8>,
    via: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    /// The client it comes from or goes to (whose faults apply).
    client: SocketAddr,
    arrival: Instant,
}

/// The entrance of one direction's queue, enforcing the in-flight bound.
#[derive(Clone)]
struct Inlet {
    tx: mpsc::Sender<Packet>,
    counters: Arc<LaneCounters>,
    max: u64,
}

impl Inlet {
    fn offer(&self, packet: Packet) {
        let c = &self.counters;
        c.received.fetch_add(1, Relaxed);
        if c.in_flight.fetch_add(1, Relaxed) >= self.max || self.tx.try_send(packet).is_err() {
            c.in_flight.fetch_sub(1, Relaxed);
            c.dropped_overflow.fetch_add(1, Relaxed);
        }
    }
}

/// Aborts its task when dropped (the upstream readers live as long as their
/// NAT entry).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Upstream {
    socket: Arc<UdpSocket>,
    last_used: u64,
    _reader: AbortOnDrop,
}

/// Reads the listening socket: each datagram goes to the client's upstream
/// socket (created on first sight, least recently used evicted).
async fn front_reader(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    up: Inlet,
    down: Inlet,
    max_clients: usize,
) {
    let mut nat: HashMap<SocketAddr, Upstream> = HashMap::new();
    let mut tick = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => {
                sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let arrival = Instant::now();
        tick += 1;
        if !nat.contains_key(&from) {
            if nat.len() >= max_clients.max(1) {
                let oldest = nat.iter().min_by_key(|(_, u)| u.last_used).map(|(a, _)| *a);
                if let Some(a) = oldest {
                    nat.remove(&a);
                }
            }
            let socket = match upstream_socket(target).await {
                Ok(s) => Arc::new(s),
                Err(_) => {
                    let c = &up.counters;
                    c.received.fetch_add(1, Relaxed);
                    c.send_errors.fetch_add(1, Relaxed);
                    continue;
                }
            };
            let reader = tokio::spawn(upstream_reader(
                socket.clone(),
                front.clone(),
                from,
                down.clone(),
            ));
            nat.insert(
                from,
                Upstream {
                    socket,
                    last_used: tick,
                    _reader: AbortOnDrop(reader),
                },
            );
        }
        let entry = nat.get_mut(&from).expect("inserted above");
        entry.last_used = tick;
        up.offer(Packet {
            data: buf[..n].to_vec(),
            via: entry.socket.clone(),
            to: None,
            client: from,
            arrival,
        });
    }
}

async fn upstream_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match (target, target.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Reads replies from the target on one upstream socket, for one client.
async fn upstream_reader(
    socket: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    down: Inlet,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Errors are e.g. ECONNREFUSED after the target's port was closed.
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => {
                sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        down.offer(Packet {
            data: buf[..n].to_vec(),
            via: front.clone(),
            to: Some(client),
            client,
            arrival: Instant::now(),
        });
    }
}

/// The scheduler of one direction: applies the faults on admission, holds
/// the datagrams until their release time, sends them.
async fn lane(
    mut rx: mpsc::Receiver<Packet>,
    shared: Arc<Shared>,
    dir: Direction,
    c: Arc<LaneCounters>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Min-heap by (release time, sequence); the packets by sequence.
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut packets: HashMap<u64, Packet> = HashMap::new();
    // A datagram held back for reordering: (sequence, own release, deadline).
    let mut held: Option<(u64, Instant, Instant)> = None;
    let mut seq = 0u64;
    loop {
        let next_heap = heap.peek().map(|Reverse((at, _))| *at);
        let next = match (next_heap, held.map(|h| h.2)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                if let Some((s, _, deadline)) = held {
                    if deadline <= now {
                        heap.push(Reverse((deadline, s)));
                        held = None;
                    }
                }
                while let Some(Reverse((at, s))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    let p = packets.remove(&s).expect("queued packet");
                    c.in_flight.fetch_sub(1, Relaxed);
                    if shared.faults_for(p.client, dir).blocked {
                        c.dropped_blocked.fetch_add(1, Relaxed);
                        continue;
                    }
                    let sent = match p.to {
                        Some(to) => p.via.send_to(&p.data, to).await,
                        None => p.via.send(&p.data).await,
                    };
                    match sent {
                        Ok(_) => c.forwarded.fetch_add(1, Relaxed),
                        Err(_) => c.send_errors.fetch_add(1, Relaxed),
                    };
                }
            }
            packet = rx.recv() => {
                let Some(p) = packet else { return };
                let f = shared.faults_for(p.client, dir);
                if f.blocked {
                    c.in_flight.fetch_sub(1, Relaxed);
                    c.dropped_blocked.fetch_add(1, Relaxed);
                    continue;
                }
                if f.loss > 0.0 && rng.random::<f64>() < f.loss {
                    c.in_flight.fetch_sub(1, Relaxed);
                    c.dropped_loss.fetch_add(1, Relaxed);
                    continue;
                }
                let jitter = f.jitter.as_nanos().min(u64::MAX as u128) as u64;
                let jitter = if jitter > 0 { rng.random_range(0..=jitter) } else { 0 };
                let extra = f.delay.saturating_add(Duration::from_nanos(jitter));
                let at = p.arrival + extra.min(MAX_DELAY);
                seq += 1;
                let s = seq;
                packets.insert(s, p);
                if held.is_none() && f.reorder > 0.0 && rng.random::<f64>() < f.reorder {
                    held = Some((s, at, at + HOLD_LIMIT));
                    continue;
                }
                heap.push(Reverse((at, s)));
                if let Some((h, h_at, _)) = held.take() {
                    // After this one: a later sequence at the same or a
                    // later time.
                    seq += 1;
                    let p = packets.remove(&h).expect("held packet");
                    packets.insert(seq, p);
                    heap.push(Reverse((at.max(h_at), seq)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
