//! Whether a peer connection still carries answers. QUIC's keep-alives
//! keep a connection open as long as the peer's QUIC stack answers, but a
//! connection can stay open while no call on it is ever answered (the
//! other side no longer serves it: it dropped it, or stopped taking its
//! streams). Such a connection is closed once calls on it have timed out
//! with no answer for [`STALL`], so that it is dialed again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long calls may go unanswered (each one timing out) before the
/// connection is given up.
pub const STALL: Duration = Duration::from_secs(10);

/// Invariant: `answered_ms` only grows (it is the time of the newest
/// answer, in ms since `since`; answers from several threads race, and
/// `fetch_max` keeps the newest).
pub struct Liveness {
    since: Instant,
    answered_ms: AtomicU64,
}

impl Liveness {
    /// A connection just made (counted as answered now).
    pub fn new() -> Self {
        Self {
            since: Instant::now(),
            answered_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.since).as_millis()).unwrap_or(u64::MAX)
    }

    /// A call got an answer at `at`.
    pub fn answered(&self, at: Instant) {
        let ms = self.ms(at);
        let before = self.answered_ms.fetch_max(ms, Ordering::Relaxed);
        debug_assert!(self.answered_ms.load(Ordering::Relaxed) >= before);
    }

    /// A call timed out at `at`: whether the connection is stalled (no
    /// answer for [`STALL`] or more).
    pub fn stalled(&self, at: Instant) -> bool {
        let last = self.answered_ms.load(Ordering::Relaxed);
        self.ms(at).saturating_sub(last) >= STALL.as_millis() as u64
    }

    /// The newest answer's time, in ms since the connection was made.
    #[cfg(test)]
    pub fn last_answer_ms(&self) -> u64 {
        self.answered_ms.load(Ordering::Relaxed)
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stalled_only_after_a_quiet_stall() {
        let l = Liveness::new();
        let t0 = l.since;
        assert!(!l.stalled(t0 + Duration::from_secs(1)));
        assert!(l.stalled(t0 + STALL), "no answer since the start");
        l.answered(t0 + Duration::from_secs(8));
        assert!(!l.stalled(t0 + STALL + Duration::from_secs(1)));
        assert!(l.stalled(t0 + Duration::from_secs(8) + STALL));
        // A late report of an older answer does not move it back.
        l.answered(t0 + Duration::from_secs(2));
        assert_eq!(l.last_answer_ms(), 8000);
    }

    #[test]
    fn answers_from_many_threads_only_move_it_forward() {
        let l = Arc::new(Liveness::new());
        let t0 = l.since;
        let threads: Vec<_> = (0..4u64)
            .map(|k| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    for i in 0..10_000u64 {
                        // Each thread reports times out of order.
                        let ms = (i * 7 + k * 13) % 20_000;
                        l.answered(t0 + Duration::from_millis(ms));
                        let now = l.last_answer_ms();
                        assert!(now >= seen, "went back from {seen} to {now}");
                        seen = now;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.last_answer_ms(), 19_999);
    }
}
