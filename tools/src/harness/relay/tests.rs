//! Tests of the relay: 127.0.0.1 sockets on kernel-picked ports, every wait
//! bounded, only lower bounds on time.

use super::*;
use std::collections::BTreeSet;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn lo() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// An echo server; returns its address.
async fn echo() -> (SocketAddr, AbortOnDrop) {
    let s = UdpSocket::bind(lo()).await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    (addr, AbortOnDrop(task))
}

async fn recv(s: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    match timeout(wait, s.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn client(relay: &Relay) -> UdpSocket {
    let s = UdpSocket::bind(lo()).await.unwrap();
    s.connect(relay.local_addr()).await.unwrap();
    s
}

/// Waits (bounded) until `cond` holds for the relay's stats.
async fn until(ctl: &RelayControl, cond: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = ctl.stats();
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out; stats {s:?}");
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn echo_through_relay_with_two_clients() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 1).await.unwrap();
    let (a, b) = (client(&relay).await, client(&relay).await);
    for i in 0..5 {
        a.send(format!("a{i}").as_bytes()).await.unwrap();
        b.send(format!("b{i}").as_bytes()).await.unwrap();
        assert_eq!(recv(&a, WAIT).await.unwrap(), format!("a{i}").as_bytes());
        assert_eq!(recv(&b, WAIT).await.unwrap(), format!("b{i}").as_bytes());
    }
    // The counters are bumped just after the send.
    let s = until(&relay.control(), |s| s.to_client.forwarded == 10).await;
    assert_eq!(s.to_target.forwarded, 10);
    assert_eq!(s.total().in_flight, 0);
}

#[tokio::test]
async fn full_loss_drops_everything() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 2).await.unwrap();
    let ctl = relay.control();
    ctl.set(Faults {
        loss: 1.0,
        ..Faults::default()
    });
    let c = client(&relay).await;
    for i in 0..50u32 {
        c.send(&i.to_be_bytes()).await.unwrap();
    }
    until(&ctl, |s| s.to_target.dropped_loss == 50).await;
    assert_eq!(recv(&c, Duration::from_millis(300)).await, None);
    assert_eq!(ctl.stats().to_target.forwarded, 0);
}

#[tokio::test]
async fn block_drops_everything_and_unblock_restores() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 3).await.unwrap();
    let ctl = relay.control();
    let c = client(&relay).await;
    c.send(b"before").await.unwrap();
    assert_eq!(recv(&c, WAIT).await.unwrap(), b"before");
    ctl.set_blocked(true);
    for _ in 0..20 {
        c.send(b"blocked").await.unwrap();
    }
    until(&ctl, |s| s.to_target.dropped_blocked == 20).await;
    assert_eq!(recv(&c, Duration::from_millis(300)).await, None);
    ctl.set_blocked(false);
    c.send(b"after").await.unwrap();
    assert_eq!(recv(&c, WAIT).await.unwrap(), b"after");
}

#[tokio::test]
async fn block_drops_datagrams_in_flight() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 4).await.unwrap();
    let ctl = relay.control();
    ctl.set(Faults {
        delay: Duration::from_secs(2),
        ..Faults::default()
    });
    let c = client(&relay).await;
    c.send(b"x").await.unwrap();
    until(&ctl, |s| s.to_target.in_flight == 1).await;
    ctl.set_blocked(true);
    let s = until(&ctl, |s| s.to_target.dropped_blocked == 1).await;
    assert_eq!(s.to_target.forwarded, 0);
}

#[tokio::test]
async fn delay_applies_in_both_directions() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 5).await.unwrap();
    relay.control().set(Faults {
        delay: Duration::from_millis(100),
        ..Faults::default()
    });
    let c = client(&relay).await;
    let t = std::time::Instant::now();
    c.send(b"ping").await.unwrap();
    assert_eq!(recv(&c, WAIT).await.unwrap(), b"ping");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

/// Sends `n` numbered datagrams through a relay with `faults` to a sink;
/// returns the numbers of those forwarded, in arrival order.
async fn numbered(seed: u64, faults: Faults, n: u32) -> Vec<u32> {
    let sink = UdpSocket::bind(lo()).await.unwrap();
    let relay = Relay::start(lo(), sink.local_addr().unwrap(), seed)
        .await
        .unwrap();
    let ctl = relay.control();
    ctl.set(faults);
    let c = client(&relay).await;
    for i in 0..n {
        c.send(&i.to_be_bytes()).await.unwrap();
    }
    let s = until(&ctl, |s| {
        let t = s.to_target;
        t.received == n as u64 && t.forwarded + t.dropped_loss == n as u64
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..s.to_target.forwarded {
        let d = recv(&sink, WAIT).await.expect("a forwarded datagram");
        got.push(u32::from_be_bytes(d[..4].try_into().unwrap()));
    }
    assert_eq!(recv(&sink, Duration::from_millis(50)).await, None);
    got
}

#[tokio::test]
async fn jitter_reorders_but_delivers_all() {
    let faults = Faults {
        jitter: Duration::from_millis(20),
        ..Faults::default()
    };
    let got = numbered(6, faults, 200).await;
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>().len(), 200);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "never reordered");
}

#[tokio::test]
async fn reorder_holds_back_and_delivers_all() {
    let faults = Faults {
        reorder: 1.0,
        ..Faults::default()
    };
    // 11: the last one is held alone and released after HOLD_LIMIT.
    let got = numbered(7, faults, 11).await;
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>().len(), 11);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "never reordered");
}

#[tokio::test]
async fn seeded_loss_reproduces() {
    let faults = Faults {
        loss: 0.5,
        ..Faults::default()
    };
    // The same seed drops the same datagrams.
    let x = numbered(9, faults, 100).await;
    let y = numbered(9, faults, 100).await;
    assert!(!x.is_empty() && x.len() < 100, "{}", x.len());
    assert_eq!(x, y);
}

#[tokio::test]
async fn overflow_is_bounded_and_counted() {
    let sink = UdpSocket::bind(lo()).await.unwrap();
    let limits = Limits {
        max_in_flight: 16,
        max_clients: 64,
    };
    let relay = Relay::start_with(lo(), sink.local_addr().unwrap(), 10, limits)
        .await
        .unwrap();
    let ctl = relay.control();
    ctl.set(Faults {
        delay: Duration::from_secs(60),
        ..Faults::default()
    });
    let c = client(&relay).await;
    for i in 0..100u32 {
        c.send(&i.to_be_bytes()).await.unwrap();
    }
    // Waits for the expected counts (a timeout shows the actual ones).
    let s = until(&ctl, |s| {
        let t = s.to_target;
        t.received == 100 && t.in_flight == 16 && t.dropped_overflow == 84
    })
    .await;
    assert_eq!(s.to_target.forwarded, 0);
}

#[tokio::test]
async fn nat_map_is_bounded() {
    let (target, _echo) = echo().await;
    let limits = Limits {
        max_in_flight: 64,
        max_clients: 2,
    };
    let relay = Relay::start_with(lo(), target, 11, limits).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client(&relay).await);
    }
    // Each client in turn: the newest ones evict the oldest, and every
    // client still gets its answer (a fresh upstream socket).
    for round in 0..2 {
        for (i, c) in clients.iter().enumerate() {
            let msg = format!("{round}-{i}");
            c.send(msg.as_bytes()).await.unwrap();
            assert_eq!(recv(c, WAIT).await.unwrap(), msg.as_bytes());
        }
    }
}

#[tokio::test]
async fn stop_and_drop_end_forwarding() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 12).await.unwrap();
    let ctl = relay.control();
    let c = client(&relay).await;
    c.send(b"one").await.unwrap();
    assert_eq!(recv(&c, WAIT).await.unwrap(), b"one");
    ctl.stop();
    sleep(Duration::from_millis(50)).await;
    let _ = c.send(b"two").await;
    assert_eq!(recv(&c, Duration::from_millis(300)).await, None);
    assert_eq!(ctl.stats().to_target.forwarded, 1);

    let relay = Relay::start(lo(), target, 13).await.unwrap();
    let (ctl, addr) = (relay.control(), relay.local_addr());
    drop(relay);
    sleep(Duration::from_millis(50)).await;
    let c = UdpSocket::bind(lo()).await.unwrap();
    let _ = c.send_to(b"three", addr).await;
    sleep(Duration::from_millis(100)).await;
    assert_eq!(ctl.stats().to_target.received, 0);
}

/// A client's own faults apply to it alone: blocking one client leaves the
/// other's traffic through, and taking the faults back restores it.
#[tokio::test]
async fn a_client_blocked_alone_leaves_the_others_through() {
    let (target, _echo) = echo().await;
    let relay = Relay::start(lo(), target, 14).await.unwrap();
    let ctl = relay.control();
    let (a, b) = (client(&relay).await, client(&relay).await);
    let blocked = Faults {
        blocked: true,
        ..Faults::default()
    };
    ctl.set_client(a.local_addr().unwrap(), Direction::ToTarget, Some(blocked));
    for i in 0..5 {
        a.send(b"a").await.unwrap();
        b.send(format!("b{i}").as_bytes()).await.unwrap();
        assert_eq!(recv(&b, WAIT).await.unwrap(), format!("b{i}").as_bytes());
    }
    until(&ctl, |s| s.to_target.dropped_blocked == 5).await;
    assert_eq!(recv(&a, Duration::from_millis(300)).await, None);
    ctl.set_client(a.local_addr().unwrap(), Direction::ToTarget, None);
    a.send(b"again").await.unwrap();
    assert_eq!(recv(&a, WAIT).await.unwrap(), b"again");
}

/// A block of one direction of one client is a one-way cut: its datagrams
/// reach the target, the replies do not come back; the other direction
/// blocked instead, nothing reaches the target.
#[tokio::test]
async fn one_direction_blocked_is_a_one_way_cut() {
    // A target that counts what it gets and answers.
    let target = UdpSocket::bind(lo()).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let got2 = got.clone();
    let _server = AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((n, from)) = target.recv_from(&mut buf).await {
            got2.fetch_add(1, Relaxed);
            let _ = target.send_to(&buf[..n], from).await;
        }
    }));
    let relay = Relay::start(lo(), target_addr, 15).await.unwrap();
    let ctl = relay.control();
    let c = client(&relay).await;
    let me = c.local_addr().unwrap();
    let blocked = Some(Faults {
        blocked: true,
        ..Faults::default()
    });
    ctl.set_client(me, Direction::ToClient, blocked);
    for _ in 0..5 {
        c.send(b"x").await.unwrap();
    }
    until(&ctl, |s| s.to_client.dropped_blocked == 5).await;
    assert_eq!(got.load(Relaxed), 5, "the client's datagrams got through");
    assert_eq!(recv(&c, Duration::from_millis(300)).await, None);

    ctl.clear_clients();
    ctl.set_client(me, Direction::ToTarget, blocked);
    for _ in 0..5 {
        c.send(b"y").await.unwrap();
    }
    until(&ctl, |s| s.to_target.dropped_blocked == 5).await;
    assert_eq!(got.load(Relaxed), 5, "nothing more reached the target");
    ctl.clear_clients();
    c.send(b"z").await.unwrap();
    assert_eq!(recv(&c, WAIT).await.unwrap(), b"z");
}
