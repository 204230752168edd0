//! Tests of the namespaces. They need root and `ip`: without them they print
//! a notice and pass, unless `CAIRN_NETNS_TESTS=1` (CI), where they fail.

use super::*;
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Whether to run: panics if the namespaces are required but unavailable.
fn enabled() -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var("CAIRN_NETNS_TESTS").as_deref() == Ok("1") => {
            panic!("CAIRN_NETNS_TESTS=1 but network namespaces are unavailable: {why}")
        }
        Err(why) => {
            eprintln!(
                "skipping network namespace test: {why} (CAIRN_NETNS_TESTS=1 makes this fail)"
            );
            false
        }
    }
}

/// A socket in namespace `i`, bound to `ip` (port picked by the kernel).
fn socket(net: &Net, i: usize, ip: Ipv4Addr) -> UdpSocket {
    let s = net
        .run_in(i, || UdpSocket::bind((ip, 0)))
        .expect("enter namespace")
        .expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Whether `msg` from `from` reaches `to` within `wait` (sent again every
/// 100 ms, as a link just brought up may take a moment; send errors such as
/// "network unreachable" count as not arriving).
fn arrives(from: &UdpSocket, to: &UdpSocket, msg: &str, wait: Duration) -> bool {
    let dest = to.local_addr().unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let _ = from.send_to(msg.as_bytes(), dest);
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            match to.recv(&mut buf) {
                Ok(n) if &buf[..n] == msg.as_bytes() => return true,
                // An older datagram: must not be one sent while cut.
                Ok(n) => assert!(
                    !buf[..n].starts_with(b"cut"),
                    "a datagram sent over a cut link arrived"
                ),
                Err(_) => break,
            }
        }
    }
    false
}

const YES: Duration = Duration::from_secs(5);
const NO: Duration = Duration::from_millis(500);

#[test]
fn address_plan_is_point_to_point_and_distinct() {
    let n = 5;
    let mut seen = BTreeSet::new();
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (a, b) = (link_addr(n, i, j), link_addr(n, j, i));
            assert!(seen.insert(a), "{a} twice");
            // Same /30, the two host addresses of it.
            assert_eq!(u32::from(a) >> 2, u32::from(b) >> 2);
            assert!(matches!(u32::from(a) & 3, 1 | 2));
            assert_eq!(a.octets()[..2], [10, 200]);
        }
    }
    assert_eq!(seen.len(), n * (n - 1));
    let max = MAX_NAMESPACES;
    assert_eq!(link_addr(max, max - 1, max - 2).octets()[..2], [10, 200]);
}

#[test]
fn home_addresses_are_distinct_and_on_no_link() {
    let links: BTreeSet<Ipv4Addr> = (0..MAX_NAMESPACES)
        .flat_map(|i| {
            (0..MAX_NAMESPACES)
                .filter(move |&j| j != i)
                .map(move |j| (i, j))
        })
        .map(|(i, j)| link_addr(MAX_NAMESPACES, i, j))
        .collect();
    let homes: BTreeSet<Ipv4Addr> = (0..MAX_NAMESPACES).map(home_addr).collect();
    assert_eq!(homes.len(), MAX_NAMESPACES);
    assert!(homes.is_disjoint(&links));
    assert!(homes.iter().all(|h| h.octets()[..3] == [10, 201, 0]));
}

/// A home address is reached from every other namespace (from a socket
/// bound to its own home address too, so the answer has a route back),
/// until the link to it is cut; healing brings the route back.
#[test]
fn home_address_is_reached_over_its_link_and_cut_with_it() {
    if !enabled() {
        return;
    }
    let net = Net::create(3).unwrap();
    let h: Vec<UdpSocket> = (0..3).map(|i| socket(&net, i, net.home(i))).collect();
    let any2 = socket(&net, 2, Ipv4Addr::UNSPECIFIED);
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        let msg = format!("up-{from}-{to}");
        assert!(arrives(&h[from], &h[to], &msg, YES), "{from} -> home {to}");
    }
    assert!(
        arrives(&any2, &h[0], "up-any-2-0", YES),
        "2 (any source) -> home 0"
    );

    net.cut(0, 1).unwrap();
    assert!(
        !arrives(&h[1], &h[0], "cut-1-0", NO),
        "1 -> home 0 through a cut"
    );
    assert!(
        !arrives(&h[0], &h[1], "cut-0-1", NO),
        "0 -> home 1 through a cut"
    );
    assert!(
        arrives(&h[2], &h[0], "during-2-0", YES),
        "2 -> home 0 while 0-1 is cut"
    );
    assert!(
        arrives(&h[2], &h[1], "during-2-1", YES),
        "2 -> home 1 while 0-1 is cut"
    );

    net.heal(0, 1).unwrap();
    assert!(
        arrives(&h[1], &h[0], "healed-1-0", YES),
        "1 -> home 0 after healing"
    );
    assert!(
        arrives(&h[0], &h[1], "healed-0-1", YES),
        "0 -> home 1 after healing"
    );

    net.isolate(2).unwrap();
    assert!(
        !arrives(&h[0], &h[2], "cut-0-2", NO),
        "0 -> home 2 while 2 is isolated"
    );
    assert!(
        !arrives(&any2, &h[1], "cut-any-2-1", NO),
        "2 -> home 1 while 2 is isolated"
    );
    assert!(
        arrives(&h[0], &h[1], "other-0-1", YES),
        "0 -> home 1 while 2 is isolated"
    );

    net.heal_all().unwrap();
    assert!(
        arrives(&h[0], &h[2], "healed-0-2", YES),
        "0 -> home 2 after heal_all"
    );
    assert!(
        arrives(&h[2], &h[1], "healed-2-1", YES),
        "2 -> home 1 after heal_all"
    );
}

#[test]
fn cut_and_heal_one_link() {
    if !enabled() {
        return;
    }
    let net = Net::create(3).unwrap();
    let s0 = socket(&net, 0, Ipv4Addr::UNSPECIFIED);
    let r1 = socket(&net, 1, net.addr_of(1, 0));
    let r2 = socket(&net, 2, net.addr_of(2, 0));
    assert!(arrives(&s0, &r1, "up-1", YES), "0 -> 1 before the cut");
    assert!(arrives(&s0, &r2, "up-2", YES), "0 -> 2 before the cut");

    net.cut(0, 1).unwrap();
    assert!(!arrives(&s0, &r1, "cut-1", NO), "0 -> 1 through a cut");
    assert!(
        arrives(&s0, &r2, "during-2", YES),
        "0 -> 2 while 0-1 is cut"
    );

    net.heal(0, 1).unwrap();
    assert!(arrives(&s0, &r1, "healed-1", YES), "0 -> 1 after healing");
}

#[test]
fn isolate_and_heal_all() {
    if !enabled() {
        return;
    }
    let net = Net::create(3).unwrap();
    let s0 = socket(&net, 0, Ipv4Addr::UNSPECIFIED);
    let s1 = socket(&net, 1, Ipv4Addr::UNSPECIFIED);
    let r1 = socket(&net, 1, net.addr_of(1, 0));
    let r2_0 = socket(&net, 2, net.addr_of(2, 0));
    let r2_1 = socket(&net, 2, net.addr_of(2, 1));

    net.isolate(0).unwrap();
    assert!(
        !arrives(&s0, &r1, "cut-1", NO),
        "0 -> 1 while 0 is isolated"
    );
    assert!(
        !arrives(&s0, &r2_0, "cut-2", NO),
        "0 -> 2 while 0 is isolated"
    );
    assert!(
        arrives(&s1, &r2_1, "other", YES),
        "1 -> 2 while 0 is isolated"
    );

    net.heal_all().unwrap();
    assert!(arrives(&s0, &r1, "healed-1", YES), "0 -> 1 after heal_all");
    assert!(
        arrives(&s0, &r2_0, "healed-2", YES),
        "0 -> 2 after heal_all"
    );
}

#[test]
fn exec_runs_inside_the_namespace() {
    if !enabled() {
        return;
    }
    let net = Net::create(3).unwrap();
    let out = net
        .exec(0, "ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}/30", net.addr_of(0, 1))),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}/30", net.addr_of(0, 2))),
        "{text}"
    );
    assert!(
        !text.contains(&format!("{}/30", net.addr_of(1, 0))),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "lo is up: {text}");
}

#[test]
fn dropped_on_panic_removes_the_namespaces() {
    if !enabled() {
        return;
    }
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = Net::create(2).unwrap();
        names = (0..2).map(|i| net.name(i).to_string()).collect();
        assert!(names.iter().all(|n| Path::new(NETNS_DIR).join(n).exists()));
        panic!("a failing test");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(!Path::new(NETNS_DIR).join(name).exists(), "{name} left");
    }
}
