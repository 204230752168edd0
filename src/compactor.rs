//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`),
//! with etcd 3.4's policies:
//!
//! - `periodic` (retention a duration; a bare number means hours, "0"
//!   disables): every tenth of min(retention, 1h) the current revision is
//!   sampled, and every min(retention, 1h) the member compacts at the oldest
//!   sample kept, the revision of one retention ago.
//! - `revision` (retention a revision count): every 5 minutes the member
//!   compacts at current − retention, if that moved.
//!
//! [`Compactor`] is the clock-free policy; [`run`] drives it on the front
//! runtime.

use crate::api::EtcdError;
use crate::member::Member;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the revision policy checks (etcd's).
pub const REVISION_CHECK: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// A parsed policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Periodic(Duration),
    Revision(i64),
}

impl Policy {
    /// From the two flags; None when auto-compaction is off (retention "0").
    pub fn parse(mode: &str, retention: &str) -> Result<Option<Policy>, String> {
        let retention = retention.trim();
        match mode {
            "periodic" => {
                let d = parse_duration(retention).ok_or_else(|| {
                    format!("--auto-compaction-retention: {retention:?} is not a duration (e.g. 1h, 30m, or a number of hours)")
                })?;
                Ok((!d.is_zero()).then_some(Policy::Periodic(d)))
            }
            "revision" => {
                let n: i64 = retention.parse().map_err(|_| {
                    format!("--auto-compaction-retention: {retention:?} is not a revision count")
                })?;
                if n < 0 {
                    return Err("--auto-compaction-retention: must not be negative".into());
                }
                Ok((n > 0).then_some(Policy::Revision(n)))
            }
            other => Err(format!(
                "--auto-compaction-mode: {other:?} is neither \"periodic\" nor \"revision\""
            )),
        }
    }
}

/// A bare number of hours ("1", "0.5") or a Go duration ("1h30m", "10s", "500ms").
pub fn parse_duration(s: &str) -> Option<Duration> {
    if let Ok(hours) = s.parse::<f64>() {
        return (hours >= 0.0 && hours.is_finite()).then(|| HOUR.mul_f64(hours));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|i| *i > 0)?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "h" => HOUR,
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "us" | "µs" => Duration::from_micros(1),
            "ns" => Duration::from_nanos(1),
            _ => return None,
        };
        total += unit.mul_f64(n);
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// The policy's state. Call [`Compactor::tick`] every [`Compactor::interval`].
#[derive(Debug)]
pub struct Compactor {
    policy: Policy,
    /// Periodic: revisions sampled once per interval, oldest first.
    samples: VecDeque<i64>,
    last_success: Instant,
    /// Revision: the last revision compacted at.
    last_revision: i64,
}

impl Compactor {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            samples: VecDeque::new(),
            last_success: now,
            last_revision: 0,
        }
    }

    /// min(retention, 1h): how often periodic compaction happens.
    fn period(d: Duration) -> Duration {
        d.min(HOUR)
    }

    /// How often to call [`Compactor::tick`].
    pub fn interval(&self) -> Duration {
        match self.policy {
            Policy::Periodic(d) => Self::period(d) / 10,
            Policy::Revision(_) => REVISION_CHECK,
        }
    }

    /// Given the time and the current revision: the revision to compact at
    /// now, if any. Report the outcome with [`Compactor::done`].
    pub fn tick(&mut self, now: Instant, current: i64) -> Option<i64> {
        match self.policy {
            Policy::Periodic(d) => {
                self.samples.push_back(current);
                let keep = (d.as_nanos() / self.interval().as_nanos().max(1)) as usize + 1;
                while self.samples.len() > keep {
                    self.samples.pop_front();
                }
                if now.duration_since(self.last_success) < Self::period(d) {
                    return None;
                }
                self.samples.front().copied().filter(|r| *r > 0)
            }
            Policy::Revision(n) => {
                let at = current - n;
                (at > 0 && at != self.last_revision).then_some(at)
            }
        }
    }

    /// The compaction at `revision` succeeded (or was already done).
    pub fn done(&mut self, now: Instant, revision: i64) {
        self.last_success = now;
        self.last_revision = revision;
    }
}

/// Runs `policy` against `member` until the runtime stops.
pub async fn run(member: Arc<Member>, policy: Policy) {
    let mut c = Compactor::new(policy, Instant::now());
    let mut every = tokio::time::interval(c.interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = Instant::now();
        let Some(at) = c.tick(now, member.seq.committed()) else {
            continue;
        };
        match member.compact(at).await {
            Ok(()) => {
                c.done(now, at);
            }
            Err(s) if s.message() == EtcdError::Compacted.status().message() => c.done(now, at),
            Err(s) => eprintln!(
                "cairn: auto-compaction at revision {at} failed: {}",
                s.message()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_like_etcd() {
        assert_eq!(Policy::parse("periodic", "0"), Ok(None));
        assert_eq!(
            Policy::parse("periodic", "1"),
            Ok(Some(Policy::Periodic(HOUR)))
        );
        assert_eq!(
            Policy::parse("periodic", "1h30m"),
            Ok(Some(Policy::Periodic(Duration::from_secs(5400))))
        );
        assert_eq!(
            Policy::parse("periodic", "500ms"),
            Ok(Some(Policy::Periodic(Duration::from_millis(500))))
        );
        assert_eq!(
            Policy::parse("revision", "1000"),
            Ok(Some(Policy::Revision(1000)))
        );
        assert!(Policy::parse("periodic", "soon").is_err());
        assert!(Policy::parse("revision", "1h").is_err());
        assert!(Policy::parse("hourly", "1").is_err());
    }

    #[test]
    fn periodic_compacts_at_the_revision_of_one_retention_ago() {
        let t0 = Instant::now();
        let mut c = Compactor::new(Policy::Periodic(Duration::from_secs(10)), t0);
        assert_eq!(c.interval(), Duration::from_secs(1));
        let mut compacted = Vec::new();
        for s in 1..=25u64 {
            let now = t0 + Duration::from_secs(s);
            // 100 revisions a second.
            if let Some(at) = c.tick(now, 100 * s as i64) {
                compacted.push((s, at));
                c.done(now, at);
            }
        }
        // Every 10 s, at the revision sampled about 10 s earlier.
        assert_eq!(compacted, vec![(10, 100), (20, 1000)]);
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let t0 = Instant::now();
        let mut c = Compactor::new(Policy::Revision(100), t0);
        assert_eq!(c.interval(), REVISION_CHECK);
        assert_eq!(c.tick(t0, 50), None, "nothing to compact yet");
        assert_eq!(c.tick(t0, 350), Some(250));
        c.done(t0, 250);
        assert_eq!(c.tick(t0, 350), None, "already there");
        assert_eq!(c.tick(t0, 400), Some(300));
    }
}
