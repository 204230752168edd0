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
//! Cluster faults (partitions, a UDP relay with delay and loss) come with
//! clusters.

use super::members::{LoopDisk, Member};
use super::recorder::Recorder;
use anyhow::{bail, Result};
use cairn_check::history::{Entry, Fault};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::RngExt;
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
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Kill,
        Kind::Pause,
        Kind::DiskError,
        Kind::SlowDisk,
        Kind::PowerLoss,
        Kind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::DiskError => "disk-error",
            Kind::SlowDisk => "slow-disk",
            Kind::PowerLoss => "power-loss",
            Kind::DiskFull => "disk-full",
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

/// Injects one fault of `kind` into `member` and heals it; records it.
/// Returns a line for the log.
pub fn inject(
    kind: Kind,
    member: &mut Member,
    disk: Option<&mut LoopDisk>,
    rng: &mut StdRng,
    recorder: &Recorder,
) -> Result<String> {
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
            member.failpoint(name, action)?;
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
            member.failpoint("wal::write", &format!("sleep({delay})"))?;
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
    };
    recorder.record(Entry::Fault(Fault {
        at_us,
        until_us: recorder.now_us(),
        fault: kind.name().into(),
        target: member.name.clone(),
        detail: detail.clone(),
    }));
    Ok(detail)
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

    #[test]
    fn names_parse_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()).unwrap(), k);
        }
        assert!(Kind::parse("meteor").is_err());
    }
}
