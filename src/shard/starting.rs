//! Which step of its start a shard core is in, and a watchdog thread that
//! names the step when it takes long: a start that hangs says where (a
//! cluster member once served one shard and never the other, and nothing
//! said why).
//!
//! Invariant: the step only moves forward (`fetch_max`), so the watchdog,
//! reading it from another thread, never sees an older step after a newer
//! one; the shard's thread is the only writer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The steps, in order; the last one means the shard serves (or stopped).
pub const STEPS: &[&str] = &[
    "opening the WAL",
    "loading the snapshot",
    "reading the log's tail",
    "starting raft",
    "joining its group",
    "replaying the log",
    "waiting to be told to serve",
    "writing the start tick",
    "starting the meta group",
    "serving",
];

/// The step the shard is in; clones share it.
#[derive(Clone, Default)]
pub struct StartStep(Arc<AtomicUsize>);

impl StartStep {
    /// Moves to `step` (an entry of [`STEPS`]); never back.
    pub fn at(&self, step: &str) {
        let i = STEPS
            .iter()
            .position(|s| *s == step)
            .expect("a known start step");
        let was = self.0.fetch_max(i, Ordering::AcqRel);
        debug_assert!(was <= i, "start step moved back: {was} -> {i}");
    }

    pub fn current(&self) -> &'static str {
        STEPS[self.0.load(Ordering::Acquire).min(STEPS.len() - 1)]
    }

    /// Done starting (serving, or the start failed): the watchdog ends.
    pub fn done(&self) {
        self.0.fetch_max(STEPS.len() - 1, Ordering::AcqRel);
    }

    fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) >= STEPS.len() - 1
    }

    /// Starts a thread that logs the step after `first`, then after each
    /// doubling of the time, until the shard is done starting.
    pub fn watch(&self, shard: usize, first: Duration) {
        let step = self.clone();
        let started = Instant::now();
        let _ = std::thread::Builder::new()
            .name(format!("shard-{shard}-start"))
            .spawn(move || {
                let mut next = first;
                while !step.is_done() {
                    std::thread::sleep(Duration::from_millis(200));
                    let waited = started.elapsed();
                    if waited >= next && !step.is_done() {
                        eprintln!(
                            "cairn: shard {shard}: still {} after {} s",
                            step.current(),
                            waited.as_secs()
                        );
                        next *= 2;
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_only_moves_forward_seen_from_another_thread() {
        let step = StartStep::default();
        let reader = {
            let step = step.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while !step.is_done() {
                    let i = STEPS.iter().position(|s| *s == step.current()).unwrap();
                    assert!(i >= seen, "saw {i} after {seen}");
                    seen = i;
                }
            })
        };
        for s in STEPS.iter().take(STEPS.len() - 1) {
            step.at(s);
            std::thread::yield_now();
        }
        step.done();
        reader.join().expect("reader");
        assert_eq!(step.current(), "serving");
    }

    #[test]
    fn an_older_step_does_not_undo_a_newer_one() {
        let step = StartStep::default();
        step.at("starting raft");
        step.done();
        assert_eq!(step.current(), "serving");
    }
}
