//! The fault injector: on a seeded schedule, one fault at a time on one
//! member, each recorded in the history (`Entry::Fault`) with when it began
//! and when it was healed.
//!
//! Faults of one member (all of them run on a single member):
//! - `kill`: SIGKILL, a pause, restart;
//! - `pause`: SIGSTOP for longer than the election timeout, then SIGCONT;
//! - `disk-error`: a failpoint makes the WAL's writes (all shards', or one
//!   shard's) or the apply of committed entries fail: the member must stop
//!   with an error (it exits non-zero), and is restarted;
//! - `slow-disk`: every WAL write sleeps a while, for a few seconds;
//! - `power-loss` (needs a loop disk): SIGKILL, then the file system is shut
//!   down without flushing, unmounted and mounted again, then restart;
//! - `disk-full` (needs a loop disk): the data dir's file system is filled;
//!   the member either keeps serving or stops with an error; the space is
//!   given back and a stopped member restarted.
//!
//! A member may also stop on its own, after a fault (e.g. a snapshot that
//! hit ENOSPC after a disk-full spell is a fatal error): [`restart_stopped`]
//! restarts it, as after a kill, and records a `recovery` in the history.
//! When the request that injects a fault (a failpoint) gets no answer
//! because the member is stopping that way, the fault is not injected: the
//! nemesis waits for the exit (at most [`GONE_MAX`]) and the member is
//! restarted ([`Injected::MemberStopped`]). Only a member that is still
//! running and did not take the fault is a nemesis error.
//!
//! Faults of a cluster ([`inject_cluster`]), each on one member or link
//! chosen with the seed, the write leader half the time:
//! - `kill`: SIGKILL a member, restart it after a few seconds;
//! - `pause`, `disk-error`, `slow-disk`: as above, on one member;
//! - `partition`: one member cut off from the others (both ways) for a few
//!   seconds, then healed;
//! - `one-way`: the link from one member to another cut one way;
//! - `slow-net`: every link delayed (with jitter) and lossy for a few
//!   seconds.
//!
//! The network faults act on the relays between the members
//! ([`super::peernet`]); clients reach every member all along.

use super::cluster::Cluster;
use super::members::{LoopDisk, Member, NoAnswer};
use super::recorder::Recorder;
use super::relay::Faults;
use anyhow::{anyhow, bail, Result};
use cairn_check::history::{Entry, Fault};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::RngExt;
use std::process::ExitStatus;
use std::time::Duration;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Kill,
    Pause,
    DiskError,
    SlowDisk,
    PowerLoss,
    DiskFull,
    Partition,
    OneWay,
    SlowNet,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Pause,
        Kind::DiskError,
        Kind::SlowDisk,
        Kind::PowerLoss,
        Kind::DiskFull,
        Kind::Partition,
        Kind::OneWay,
        Kind::SlowNet,
    ];

    /// The faults of one member: the default of a one-member run.
    pub const SINGLE: [Kind; 6] = [
        Kind::Kill,
        Kind::Pause,
        Kind::DiskError,
        Kind::SlowDisk,
        Kind::PowerLoss,
        Kind::DiskFull,
    ];

    /// The faults of a cluster: the default of a cluster run.
    pub const CLUSTER: [Kind; 7] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::OneWay,
        Kind::SlowNet,
        Kind::DiskError,
        Kind::SlowDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::DiskError => "disk-error",
            Kind::SlowDisk => "slow-disk",
            Kind::PowerLoss => "power-loss",
            Kind::DiskFull => "disk-full",
            Kind::Partition => "partition",
            Kind::OneWay => "one-way",
            Kind::SlowNet => "slow-net",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        match Kind::ALL.iter().find(|k| k.name() == s) {
            Some(k) => Ok(*k),
            None => bail!(
                "unknown fault {s:?}; known: {}",
                Kind::ALL.map(Kind::name).join(", ")
            ),
        }
    }

    /// Whether the fault needs the data dir on a loop disk.
    pub fn needs_disk(self) -> bool {
        matches!(self, Kind::PowerLoss | Kind::DiskFull)
    }

    /// Whether a one-member run can inject it.
    pub fn single(self) -> bool {
        Kind::SINGLE.contains(&self)
    }

    /// Whether a cluster run can inject it.
    pub fn cluster(self) -> bool {
        Kind::CLUSTER.contains(&self)
    }
}

/// How long a member stays paused: above etcd's default election timeout
/// (1 s), below the clients' request timeout.
const PAUSE: (u64, u64) = (1200, 3000);
/// How long a killed member stays down (ms).
const DOWN: (u64, u64) = (100, 1500);
/// How long a member that must stop on its own may take (disk error).
const STOP_MAX: Duration = Duration::from_secs(60);
/// How long a fault that lasts lasts (slow disk), ms.
const SPELL: (u64, u64) = (1000, 3000);
/// How long the disk stays full, ms.
const FULL_SPELL: (u64, u64) = (3000, 8000);
/// How long a member that did not answer the request that injects a fault
/// may take to exit (it was stopping on its own) before that is an error.
pub const GONE_MAX: Duration = Duration::from_secs(30);
/// The history's name of a restart of a member that stopped on its own.
pub const RECOVERY: &str = "recovery";
/// How long a killed member of a cluster stays down (ms).
const CLUSTER_DOWN: (u64, u64) = (1000, 3000);
/// How long a partition or a slow network lasts (ms).
const NET_SPELL: (u64, u64) = (2000, 4000);
/// A slow network's delay (ms), jitter (ms) and loss (percent).
const NET_DELAY: (u64, u64) = (20, 80);
const NET_JITTER: (u64, u64) = (0, 20);
const NET_LOSS: (u64, u64) = (1, 8);
/// How long the members may take to agree on the leader a fault aims at.
const LEADER_WAIT: Duration = Duration::from_secs(10);

fn ms(rng: &mut StdRng, (lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// The order of faults: every kind once per round, shuffled per round, so
/// a short run still injects each kind.
pub struct Schedule {
    kinds: Vec<Kind>,
    round: Vec<Kind>,
}

impl Schedule {
    pub fn new(kinds: Vec<Kind>) -> Self {
        Schedule {
            kinds,
            round: Vec::new(),
        }
    }

    pub fn next(&mut self, rng: &mut StdRng) -> Option<Kind> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(rng);
        }
        self.round.pop()
    }
}

/// What [`inject`] did.
#[derive(Debug)]
pub enum Injected {
    /// The fault was injected and healed: a line for the log.
    Done(String),
    /// The fault was not injected: the member did not answer the request
    /// that injects it and exited on its own (`status`) within
    /// [`GONE_MAX`]; it was stopping already. Not a finding by itself: the
    /// caller restarts it with [`restart_stopped`] and goes on.
    MemberStopped {
        status: ExitStatus,
        /// When the fault was tried (the recovery's start in the history).
        since_us: u64,
        /// Why it was not injected, for the log.
        why: String,
    },
}

/// After a failpoint that injects a fault was not set (`e`): when the
/// member did not answer ([`NoAnswer`]), `wait_exit` waits (bounded) for it
/// to exit on its own, and an exit makes [`Injected::MemberStopped`]. A
/// member that answered and refused, or did not answer and did not exit
/// either, is an error.
fn not_set(
    e: anyhow::Error,
    since_us: u64,
    wait_exit: impl FnOnce() -> Option<ExitStatus>,
) -> Result<Injected> {
    if !e.is::<NoAnswer>() {
        return Err(e);
    }
    match wait_exit() {
        Some(status) => Ok(Injected::MemberStopped {
            status,
            since_us,
            why: format!("{e:#}"),
        }),
        None => Err(anyhow!(
            "{e:#}, and the member did not exit within {GONE_MAX:?} either"
        )),
    }
}

/// Restarts a member that stopped on its own with `status`, as after a
/// kill ([`Member::start`]), and records the restart in the history as a
/// [`RECOVERY`] from `since_us`, with how it was found (`found`). A member
/// stops on its own only on a fatal error, so non-zero: a zero status is a
/// nemesis error (it is restarted all the same), and so is a restart that
/// failed. Errors go to `errors`; returns whether the member is up again.
pub fn restart_stopped(
    member: &mut Member,
    status: ExitStatus,
    since_us: u64,
    found: &str,
    recorder: &Recorder,
    errors: &mut Vec<String>,
) -> bool {
    eprintln!(
        "cairn-harness: {} had stopped on its own ({status}; {found}); restarting",
        member.name
    );
    if status.success() {
        errors.push(format!("{} exited with {status} on its own", member.name));
    }
    if let Err(e) = member.start() {
        errors.push(format!("restart: {e:#}"));
        return false;
    }
    recorder.record(Entry::Fault(Fault {
        at_us: since_us,
        until_us: recorder.now_us(),
        fault: RECOVERY.into(),
        target: member.name.clone(),
        detail: format!("stopped on its own ({status}; {found}), restarted"),
    }));
    true
}

/// Injects one fault of `kind` into `member` and heals it; records it.
/// See [`Injected`] for a member that was stopping on its own.
pub fn inject(
    kind: Kind,
    member: &mut Member,
    disk: Option<&mut LoopDisk>,
    rng: &mut StdRng,
    recorder: &Recorder,
) -> Result<Injected> {
    inject_with(kind, member, disk, rng, recorder, "")
}

/// [`inject`], with `note` after the recorded detail (e.g. the member's
/// role in a cluster).
fn inject_with(
    kind: Kind,
    member: &mut Member,
    disk: Option<&mut LoopDisk>,
    rng: &mut StdRng,
    recorder: &Recorder,
    note: &str,
) -> Result<Injected> {
    let at_us = recorder.now_us();
    let detail = match kind {
        Kind::Kill => {
            let pid = member.pid();
            member.kill();
            let down = ms(rng, DOWN);
            std::thread::sleep(down);
            member.start()?;
            format!("SIGKILL pid {pid:?}, down {down:?}")
        }
        Kind::Pause => {
            let pause = ms(rng, PAUSE);
            member.signal(libc::SIGSTOP);
            std::thread::sleep(pause);
            member.signal(libc::SIGCONT);
            format!("SIGSTOP for {pause:?}")
        }
        Kind::DiskError => {
            // Every shard's WAL, one shard's (the others go on writing until
            // the member stops), or applying committed entries.
            let (name, action) = [
                ("wal::write", "return"),
                ("wal::write", "return(shard-0/)"),
                ("wal::write", "return(shard-1/)"),
                ("raft::apply", "return"),
            ][rng.random_range(0..4)];
            if let Err(e) = member.failpoint(name, action) {
                return not_set(e, at_us, || member.wait_exit(GONE_MAX));
            }
            // It fails on its next WAL write or apply (the clients keep writing).
            match member.wait_exit(STOP_MAX) {
                Some(status) if !status.success() => {}
                Some(status) => bail!("{} exited with {status} after a disk error", member.name),
                None => bail!(
                    "{} still running {STOP_MAX:?} after {name}={action}",
                    member.name
                ),
            }
            member.start()?;
            format!("{name}={action}: the member stopped non-zero and was restarted")
        }
        Kind::SlowDisk => {
            let spell = ms(rng, SPELL);
            let delay = rng.random_range(20..=200);
            if let Err(e) = member.failpoint("wal::write", &format!("sleep({delay})")) {
                return not_set(e, at_us, || member.wait_exit(GONE_MAX));
            }
            std::thread::sleep(spell);
            member.clear_failpoint("wal::write");
            format!("each WAL write {delay} ms slower for {spell:?}")
        }
        Kind::PowerLoss => {
            let Some(disk) = disk else {
                bail!("power-loss needs --loop-disk");
            };
            member.kill();
            disk.power_cut()?;
            member.start()?;
            "SIGKILL, file system shut down without flushing, remounted".into()
        }
        Kind::DiskFull => {
            let Some(disk) = disk else {
                bail!("disk-full needs --loop-disk");
            };
            disk.fill(0)?;
            // Long enough for the WAL to need a new segment under load.
            let spell = ms(rng, FULL_SPELL);
            let until = std::time::Instant::now() + spell;
            let mut said_full = false;
            let mut stopped = None;
            while std::time::Instant::now() < until {
                if let Some(status) = member.wait_exit(Duration::from_millis(200)) {
                    stopped = Some(status);
                    break;
                }
                if let Some((503, body)) = member.http("GET", "/health", "") {
                    said_full |= body.contains("no space");
                }
            }
            disk.unfill()?;
            match stopped {
                Some(status) if status.success() => {
                    bail!("{} exited with {status} on a full disk", member.name)
                }
                Some(status) => {
                    member.start()?;
                    format!("disk full: the member stopped ({status}); space back, restarted")
                }
                None if said_full => {
                    format!("disk full for {spell:?}: the member refused writes (no space), then took them again")
                }
                None => format!("disk full for {spell:?}: the member kept running"),
            }
        }
        Kind::Partition | Kind::OneWay | Kind::SlowNet => {
            bail!("{} needs a cluster (--members 3)", kind.name())
        }
    };
    let detail = format!("{detail}{note}");
    recorder.record(Entry::Fault(Fault {
        at_us,
        until_us: recorder.now_us(),
        fault: kind.name().into(),
        target: member.name.clone(),
        detail: detail.clone(),
    }));
    Ok(Injected::Done(detail))
}

/// A member of `cluster` to hit, and its role: the write leader half the
/// time, another member else (any member when they do not agree on a
/// leader within [`LEADER_WAIT`]).
fn pick(cluster: &Cluster, rng: &mut StdRng) -> (usize, &'static str) {
    // Drawn first, so the schedule's draws do not depend on the answers.
    let want_leader = rng.random_bool(0.5);
    let any = rng.random_range(0..cluster.len());
    match cluster.leader(LEADER_WAIT) {
        Some(leader) if want_leader => (leader, "the write leader"),
        Some(leader) => {
            let others: Vec<usize> = (0..cluster.len()).filter(|i| *i != leader).collect();
            (others[any % others.len()], "a follower")
        }
        None => (any, "no agreed leader: any member"),
    }
}

/// Another member than `i`.
fn other(cluster: &Cluster, i: usize, rng: &mut StdRng) -> usize {
    let k = rng.random_range(0..cluster.len() - 1);
    if k >= i {
        k + 1
    } else {
        k
    }
}

/// Injects one fault of `kind` into `cluster` and heals it; records it.
/// Returns the member it was on (for a link, its first end) with what
/// happened: see [`Injected`] for a member that was stopping on its own.
pub fn inject_cluster(
    kind: Kind,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    recorder: &Recorder,
) -> Result<(usize, Injected)> {
    let at_us = recorder.now_us();
    let net = || {
        let net = cluster.net.as_ref();
        net.ok_or_else(|| anyhow!("{} needs the relays between the members", kind.name()))
    };
    let (on, target, detail) = match kind {
        Kind::Kill => {
            let (i, role) = pick(cluster, rng);
            let down = ms(rng, CLUSTER_DOWN);
            let m = &mut cluster.members[i];
            let pid = m.pid();
            m.kill();
            std::thread::sleep(down);
            let detail = format!("SIGKILL pid {pid:?} ({role}), down {down:?}");
            if let Err(e) = m.start() {
                // In the history all the same: the timeline shows it.
                recorder.record(Entry::Fault(Fault {
                    at_us,
                    until_us: recorder.now_us(),
                    fault: kind.name().into(),
                    target: m.name.clone(),
                    detail: format!("{detail}; the restart failed: {e:#}"),
                }));
                return Err(e);
            }
            (i, m.name.clone(), format!("{detail}, restarted"))
        }
        Kind::Pause | Kind::DiskError | Kind::SlowDisk => {
            let (i, role) = pick(cluster, rng);
            let note = format!(" ({role})");
            let m = &mut cluster.members[i];
            return Ok((i, inject_with(kind, m, None, rng, recorder, &note)?));
        }
        Kind::Partition => {
            let (i, role) = pick(cluster, rng);
            let spell = ms(rng, NET_SPELL);
            let net = net()?;
            let before = net.dropped_blocked();
            net.isolate(i);
            std::thread::sleep(spell);
            net.heal();
            let dropped = net.dropped_blocked() - before;
            let name = cluster.members[i].name.clone();
            let detail = format!(
                "{name} ({role}) cut off from the others for {spell:?}: {dropped} datagrams dropped"
            );
            (i, name, detail)
        }
        Kind::OneWay => {
            let (a, role) = pick(cluster, rng);
            let b = other(cluster, a, rng);
            let (from, to) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
            let spell = ms(rng, NET_SPELL);
            let net = net()?;
            let before = net.dropped_blocked();
            net.cut(from, to);
            std::thread::sleep(spell);
            net.heal();
            let dropped = net.dropped_blocked() - before;
            let (f, t) = (&cluster.members[from].name, &cluster.members[to].name);
            let detail = format!(
                "{f} -> {t} cut one way for {spell:?} ({} is {role}): {dropped} datagrams dropped",
                cluster.members[a].name
            );
            (from, format!("{f}->{t}"), detail)
        }
        Kind::SlowNet => {
            let faults = Faults {
                delay: ms(rng, NET_DELAY),
                jitter: ms(rng, NET_JITTER),
                loss: rng.random_range(NET_LOSS.0..=NET_LOSS.1) as f64 / 100.0,
                ..Faults::default()
            };
            let spell = ms(rng, NET_SPELL);
            let net = net()?;
            let before = net.dropped_loss();
            net.degrade(faults);
            std::thread::sleep(spell);
            net.heal();
            let lost = net.dropped_loss() - before;
            let detail = format!(
                "every link {:?} slower (jitter up to {:?}), {:.0}% loss, for {spell:?}: {lost} datagrams lost",
                faults.delay,
                faults.jitter,
                faults.loss * 100.0
            );
            (0, "all".to_string(), detail)
        }
        Kind::PowerLoss | Kind::DiskFull => {
            bail!(
                "{} needs one member on a loop disk (--members 1)",
                kind.name()
            )
        }
    };
    recorder.record(Entry::Fault(Fault {
        at_us,
        until_us: recorder.now_us(),
        fault: kind.name().into(),
        target,
        detail: detail.clone(),
    }));
    Ok((on, Injected::Done(detail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_kind_comes_once_per_round() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = Schedule::new(Kind::ALL.to_vec());
        let mut round: Vec<Kind> = (0..Kind::ALL.len())
            .filter_map(|_| s.next(&mut rng))
            .collect();
        round.sort();
        assert_eq!(round, Kind::ALL.to_vec());
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut s = Schedule::new(Kind::ALL.to_vec());
            (0..20).filter_map(|_| s.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    fn exit(code: i32) -> ExitStatus {
        std::os::unix::process::ExitStatusExt::from_raw(code << 8)
    }

    /// A member that is never started, on a port nothing listens on.
    fn member(port: u16) -> Member {
        let dir = std::env::temp_dir();
        Member::new(
            std::path::Path::new("/nonexistent/cairn"),
            "m0",
            port,
            dir.join("m0-not-started"),
            dir.join("m0-not-started.log"),
            Vec::new(),
        )
    }

    #[test]
    fn a_failpoint_nothing_answers_is_no_answer() {
        let m = member(crate::ports::free_port());
        let e = m.failpoint("wal::write", "return").unwrap_err();
        assert!(e.is::<NoAnswer>(), "{e:#}");
        assert_eq!(
            format!("{e:#}"),
            "setting failpoint wal::write on m0: no answer"
        );
    }

    #[test]
    fn a_failpoint_refused_is_not_no_answer() {
        use std::io::{Read, Write};
        let port = crate::ports::free_port();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request (head and its 6-byte body) before
            // answering, so closing does not reset the connection.
            let mut req = Vec::new();
            let mut buf = [0; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") || !req.ends_with(b"return") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
                .unwrap();
        });
        let m = member(port);
        let e = m.failpoint("wal::write", "return").unwrap_err();
        server.join().unwrap();
        assert!(!e.is::<NoAnswer>(), "{e:#}");
        // An alive member that refuses the fault: an error at once, without
        // waiting for an exit.
        let e = not_set(e, 0, || panic!("waited for a member that answered")).unwrap_err();
        assert!(format!("{e:#}").contains("500"), "{e:#}");
    }

    #[test]
    fn a_member_that_did_not_answer_and_exited_is_restarted_not_an_error() {
        let e = member(crate::ports::free_port())
            .failpoint("wal::write", "sleep(50)")
            .unwrap_err();
        match not_set(e, 42, || Some(exit(1))).unwrap() {
            Injected::MemberStopped {
                status,
                since_us,
                why,
            } => {
                assert_eq!(status.code(), Some(1));
                assert_eq!(since_us, 42);
                assert_eq!(why, "setting failpoint wal::write on m0: no answer");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_member_that_did_not_answer_and_runs_on_is_an_error() {
        let e = member(crate::ports::free_port())
            .failpoint("raft::apply", "return")
            .unwrap_err();
        let e = not_set(e, 0, || None).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "setting failpoint raft::apply on m0: no answer, and the member did not exit within {GONE_MAX:?} either"
            )
        );
    }

    #[test]
    fn the_single_and_cluster_sets_cover_every_kind() {
        for k in Kind::ALL {
            assert!(k.single() || k.cluster(), "{k:?}");
        }
        assert!(Kind::SINGLE.iter().all(|k| k.single()));
        assert!(Kind::CLUSTER.iter().all(|k| k.cluster() && !k.needs_disk()));
    }

    #[test]
    fn names_parse_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()).unwrap(), k);
        }
        assert!(Kind::parse("meteor").is_err());
    }
}
