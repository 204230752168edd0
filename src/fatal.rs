//! The member's fatal-error latch: set once, by whichever part of the member
//! first finds that it cannot go on (a shard's log failed, a write could not
//! be committed, a Raft group stopped), never cleared.
//!
//! Who reads it: `/health` (false, with the reason), the write path (etcd's
//! `server stopped` before anything is proposed), and the server's main task,
//! which stops the member and exits non-zero with the reason (as etcd exits
//! on a WAL failure, so a supervisor restarts it). Nothing acknowledged is
//! lost by stopping: an answer is sent only after its entry is durable.
//!
//! Invariant: the latch only moves forward (unset → set), and the first
//! reason stays; `latch` asserts it through `send_if_modified`.

use tokio::sync::watch;

/// See the module docs. Shared by the shard cores and the front threads.
#[derive(Debug)]
pub struct Fatal {
    reason: watch::Sender<Option<String>>,
    /// Set with the reason (the fast check on the write path).
    latched: std::sync::atomic::AtomicBool,
}

impl Default for Fatal {
    fn default() -> Self {
        Self {
            reason: watch::channel(None).0,
            latched: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Fatal {
    /// Latches `reason` unless a reason is latched already (which stays).
    /// Returns whether this call latched it.
    pub fn latch(&self, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        self.reason.send_if_modified(|latched| {
            if latched.is_some() {
                return false;
            }
            eprintln!("cairn: fatal: {reason}");
            *latched = Some(reason);
            self.latched
                .store(true, std::sync::atomic::Ordering::Release);
            true
        })
    }

    /// Whether a reason is latched: a shard stamps nothing more then (a
    /// write that could not commit may have left its effects in the
    /// shard's speculative state, which no later write may build on).
    pub fn is_latched(&self) -> bool {
        self.latched.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The latched reason, if any.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// Resolves with the reason once one is latched.
    pub async fn wait(&self) -> String {
        let mut rx = self.reason.subscribe();
        let latched = rx.wait_for(Option::is_some).await.map(|r| r.clone());
        match latched {
            Ok(reason) => reason.unwrap_or_default(),
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stays() {
        let f = Fatal::default();
        assert_eq!(f.reason(), None);
        assert!(f.latch("shard 0: WAL write failed"));
        assert!(f.is_latched());
        assert!(!f.latch("shard 1: later"));
        assert_eq!(f.reason().as_deref(), Some("shard 0: WAL write failed"));
    }

    /// Several threads latch at once: exactly one wins, every waiter wakes
    /// with the winner's reason.
    #[test]
    fn racing_latches_agree_on_one_reason() {
        let f = std::sync::Arc::new(Fatal::default());
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime")
                    .block_on(f.wait())
            })
        };
        let winners: usize = (0..4)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || f.latch(format!("reason {i}")))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().expect("latcher")))
            .sum();
        assert_eq!(winners, 1);
        let reason = f.reason().expect("latched");
        assert_eq!(waiter.join().expect("waiter"), reason);
    }
}
