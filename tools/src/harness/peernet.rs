//! The links between the members of a cluster run, each through a UDP
//! [`Relay`], so that the nemesis can cut them (both ways or one way) and
//! make them slow and lossy.
//!
//! Member `i` listens for peers on its peer port `P_i` but advertises the
//! port `R_i` of relay `i` (`--initial-advertise-peer-urls`, and every
//! member's `--initial-cluster` lists the `R_i`), which forwards to `P_i`.
//! cairn keeps one QUIC connection per pair of members, dialed by one of
//! them to the other's advertised address and used both ways; quinn sends
//! everything from the member's one UDP socket, so relay `j` sees member
//! `i`'s datagrams come from `127.0.0.1:P_i` and tells the members apart by
//! that source address ([`RelayControl::set_client`]). Which member of a
//! pair dials (today the one with the lower id) does not matter here: a cut
//! from `a` to `b` blocks `a`'s datagrams on relay `b` (towards `b`, if `a`
//! dialed) and on relay `a` (its replies, if `b` dialed).
//!
//! Clients reach the members directly (TCP), never through the relays: a
//! partition separates members from each other, not from clients.
//!
//! Bounds: one relay per member (see [`super::relay`] for each one's), every
//! change takes effect at once (datagrams in flight on a cut link are
//! dropped too), and [`PeerNet::heal`] takes every fault back.

use super::relay::{Direction, Faults, Relay, RelayControl, Stats};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// See the module docs.
pub struct PeerNet {
    relays: Vec<Relay>,
    /// Member `i`'s peer socket: where relay `i` forwards to, and the
    /// source address of its datagrams.
    peers: Vec<SocketAddr>,
}

fn lo(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

impl PeerNet {
    /// Starts relay `i` on loopback port `routes[i].0`, forwarding to member
    /// `i`'s peer port `routes[i].1`. Its tasks run on the calling tokio
    /// runtime (call it inside one).
    pub async fn start(routes: &[(u16, u16)], seed: u64) -> io::Result<PeerNet> {
        let mut relays = Vec::with_capacity(routes.len());
        let mut peers = Vec::with_capacity(routes.len());
        for (i, (relay_port, peer_port)) in routes.iter().enumerate() {
            let relay_seed = seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            relays.push(Relay::start(lo(*relay_port), lo(*peer_port), relay_seed).await?);
            peers.push(lo(*peer_port));
        }
        Ok(PeerNet { relays, peers })
    }

    pub fn len(&self) -> usize {
        self.relays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Where relay `i` listens (member `i`'s advertised peer address).
    pub fn relay_addr(&self, i: usize) -> SocketAddr {
        self.relays[i].local_addr()
    }

    fn control(&self, i: usize) -> RelayControl {
        self.relays[i].control()
    }

    /// Blocks `client`'s datagrams in `dir` on relay `relay`, keeping its
    /// other faults.
    fn block(&self, relay: usize, client: SocketAddr, dir: Direction) {
        let ctl = self.control(relay);
        let faults = Faults {
            blocked: true,
            ..ctl.client_faults(client, dir)
        };
        ctl.set_client(client, dir, Some(faults));
    }

    /// Cuts the link from member `from` to member `to`, one way: nothing
    /// `from` sends reaches `to`; `to`'s datagrams still reach `from`.
    pub fn cut(&self, from: usize, to: usize) {
        assert!(from != to && from < self.len() && to < self.len());
        // `from` dialed `to`: its datagrams go through relay `to`.
        self.block(to, self.peers[from], Direction::ToTarget);
        // `to` dialed `from`: `from`'s replies come back through relay `from`.
        self.block(from, self.peers[to], Direction::ToClient);
    }

    /// Cuts every link of member `i`, both ways.
    pub fn isolate(&self, i: usize) {
        for j in (0..self.len()).filter(|j| *j != i) {
            self.cut(i, j);
            self.cut(j, i);
        }
    }

    /// Gives every link, both ways, these faults (delay, jitter, loss...).
    pub fn degrade(&self, faults: Faults) {
        for r in &self.relays {
            r.control().set(faults);
        }
    }

    /// Takes every fault back.
    pub fn heal(&self) {
        for r in &self.relays {
            let ctl = r.control();
            ctl.clear_clients();
            ctl.set(Faults::default());
        }
    }

    /// Each relay's counters.
    pub fn stats(&self) -> Vec<Stats> {
        self.relays.iter().map(|r| r.control().stats()).collect()
    }

    /// Datagrams dropped so far by a cut (both directions, every relay).
    pub fn dropped_blocked(&self) -> u64 {
        self.stats().iter().map(|s| s.total().dropped_blocked).sum()
    }

    /// Datagrams dropped so far as lost (both directions, every relay).
    pub fn dropped_loss(&self) -> u64 {
        self.stats().iter().map(|s| s.total().dropped_loss).sum()
    }

    /// Datagrams forwarded so far (both directions, every relay).
    pub fn forwarded(&self) -> u64 {
        self.stats().iter().map(|s| s.total().forwarded).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::UdpSocket;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(300);

    /// Three "members" (UDP sockets) and their relays on kernel-picked ports.
    async fn net() -> (Vec<UdpSocket>, PeerNet) {
        let mut socks = Vec::new();
        let mut routes = Vec::new();
        for _ in 0..3 {
            let s = UdpSocket::bind(lo(0)).await.unwrap();
            routes.push((0, s.local_addr().unwrap().port()));
            socks.push(s);
        }
        let net = PeerNet::start(&routes, 1).await.unwrap();
        (socks, net)
    }

    /// `from` sends `msg` to `to`'s relay; what `to` got (and from where).
    async fn send(
        socks: &[UdpSocket],
        net: &PeerNet,
        from: usize,
        to: usize,
        msg: &[u8],
    ) -> Option<SocketAddr> {
        socks[from].send_to(msg, net.relay_addr(to)).await.unwrap();
        recv(&socks[to], msg, WAIT).await
    }

    async fn recv(s: &UdpSocket, msg: &[u8], wait: Duration) -> Option<SocketAddr> {
        let mut buf = [0u8; 64];
        match timeout(wait, s.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(&buf[..n], msg);
                Some(from)
            }
            _ => None,
        }
    }

    /// `to` answers `msg` to `back` (the relay's upstream address it saw);
    /// whether `from` gets it.
    async fn reply(
        socks: &[UdpSocket],
        to: usize,
        back: SocketAddr,
        from: usize,
        msg: &[u8],
    ) -> bool {
        socks[to].send_to(msg, back).await.unwrap();
        recv(&socks[from], msg, QUIET).await.is_some()
    }

    #[tokio::test]
    async fn a_one_way_cut_blocks_one_direction_of_either_dialer() {
        let (socks, net) = net().await;
        // Every pair talks both ways, whoever dialed.
        let back_01 = send(&socks, &net, 0, 1, b"0>1").await.expect("0 reaches 1");
        let back_10 = send(&socks, &net, 1, 0, b"1>0").await.expect("1 reaches 0");
        assert!(reply(&socks, 1, back_01, 0, b"1>0 reply").await);
        assert!(reply(&socks, 0, back_10, 1, b"0>1 reply").await);

        net.cut(0, 1);
        // 0 dialed 1: 0's datagrams are gone, 1's replies arrive.
        socks[0].send_to(b"cut", net.relay_addr(1)).await.unwrap();
        assert_eq!(recv(&socks[1], b"cut", QUIET).await, None);
        assert!(reply(&socks, 1, back_01, 0, b"still").await);
        // 1 dialed 0: 1's datagrams arrive, 0's replies are gone.
        let back = send(&socks, &net, 1, 0, b"1>0 again")
            .await
            .expect("1 still reaches 0");
        assert!(!reply(&socks, 0, back, 1, b"lost").await);
        // Member 2 is not touched.
        assert!(send(&socks, &net, 2, 0, b"2>0").await.is_some());
        assert!(send(&socks, &net, 0, 2, b"0>2").await.is_some());
        assert!(net.dropped_blocked() >= 2);

        net.heal();
        assert!(send(&socks, &net, 0, 1, b"healed").await.is_some());
        let back = send(&socks, &net, 1, 0, b"healed too").await.unwrap();
        assert!(reply(&socks, 0, back, 1, b"and back").await);
    }

    #[tokio::test]
    async fn an_isolated_member_neither_sends_nor_hears() {
        let (socks, net) = net().await;
        net.isolate(2);
        for (a, b) in [(0, 2), (2, 0), (1, 2), (2, 1)] {
            socks[a].send_to(b"x", net.relay_addr(b)).await.unwrap();
            assert_eq!(recv(&socks[b], b"x", QUIET).await, None, "{a} -> {b}");
        }
        assert!(send(&socks, &net, 0, 1, b"0>1").await.is_some());
        assert!(send(&socks, &net, 1, 0, b"1>0").await.is_some());
        net.heal();
        assert!(send(&socks, &net, 2, 0, b"2>0").await.is_some());
        assert!(send(&socks, &net, 1, 2, b"1>2").await.is_some());
    }

    #[tokio::test]
    async fn degrade_delays_and_drops_on_every_link() {
        let (socks, net) = net().await;
        net.degrade(Faults {
            delay: Duration::from_millis(150),
            ..Faults::default()
        });
        let t = tokio::time::Instant::now();
        assert!(send(&socks, &net, 0, 2, b"slow").await.is_some());
        assert!(t.elapsed() >= Duration::from_millis(150));
        net.degrade(Faults {
            loss: 1.0,
            ..Faults::default()
        });
        socks[1].send_to(b"lost", net.relay_addr(0)).await.unwrap();
        assert_eq!(recv(&socks[0], b"lost", QUIET).await, None);
        assert!(net.dropped_loss() >= 1);
        net.heal();
        assert!(send(&socks, &net, 1, 0, b"fast").await.is_some());
    }
}
