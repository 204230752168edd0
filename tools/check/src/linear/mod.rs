//! Per-key linearizability of register histories.
//!
//! **What it checks.** The Put / Get / Cas ops of a history, key by key
//! (P-compositionality: a history is linearizable iff each key's sub-history
//! is). Txn ops belong to [`crate::append`]; serializable Gets need not be
//! linearizable and are ignored; `Failed` ops never happened and are dropped.
//! What only shows across keys (one global revision) is [`crate::revisions`]'.
//!
//! **The model.** A key is a register holding a value (absent at first) and
//! the revision of the write that produced it, where known. Values are unique
//! per history, so a write's revision is its own `Ok` outcome's, or else (an
//! unknown write) the `mod_revision` some Get saw next to its value. A Put
//! sets the value; an `Ok` Get reads the current value and, where known, its
//! revision as `mod_revision`; a Cas compares the value (`Expect::Value`,
//! `None`: absent) or the revision (`Expect::ModRevision`, 0: absent; against
//! an unknown revision either outcome goes) and an `Ok` one wrote iff it
//! `succeeded`. As in etcd, writes take effect in revision order: this is
//! stricter than a bare register (two concurrent puts read back in the wrong
//! order fail here). An `Unknown` Put or Cas may take effect at any point
//! after its invocation, or never (porcupine's return at +infinity); one
//! whose value some Get read did take effect, at that revision. An `Unknown`
//! Get says nothing.
//!
//! **The search.** Wing & Gong's, as porcupine does it: call and return
//! events in a doubly linked list by time (ties count as concurrent), an op
//! linearizable once its call precedes every remaining return, a stack to
//! backtrack, a memo of visited (linearized set, state) pairs (as 128-bit
//! Zobrist fingerprints: a collision, odds about n²/2¹²⁸, could only hide a
//! linearization, never invent one). Then it need not branch much: a read
//! that fits is taken at once; writes of known revision go in revision order;
//! unknown writes whose values nobody needs are alike (the earliest unused
//! one stands for them all) and are tried only right before a compare that
//! cannot do without them.
//!
//! **Bounds.** Each key's search stops after [`Limits::max_steps`] steps or
//! [`Limits::per_key`] of wall time; its verdict is then
//! [`Verdict::TimedOut`], neither a pass nor a violation.
//!
//! **Windows.** A window of a key's ops (by invocation) is checked as part of
//! the whole history: reads outside it are dropped; writes outside it may
//! have set its initial state (the latest acknowledged before it bounds that
//! state's revision) or, if they overlap it, take effect inside it. So a
//! window that fails proves the history is not linearizable. When the search
//! fails (or runs out of budget) it looks for a failing window among the ops
//! just before where it got stuck, growing it 4× at a time, then shrinks that
//! (within [`Limits::shrink`]): binary search for the shortest failing prefix
//! and the latest failing start, then dropping single ops while it fails. The
//! reported window adds the write acknowledged last before it, the writes of
//! the values its reads saw and (if at most 4) the outside writes whose
//! revisions fall inside it.
//!
//! One leniency: an unknown write whose value no op needs is taken to leave
//! "some value nobody reads", so a failed compare against that very value is
//! not held against it.

mod search;
mod window;

use crate::history::{Call, Op};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use window::KeyHistory;

/// How much search to spend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall time for one key's search.
    pub per_key: Duration,
    /// Search steps for one key's search (and for each trial while
    /// shrinking). Also bounds the memo: at most one entry (~40 bytes) a step.
    pub max_steps: u64,
    /// Wall time for shrinking one violation's window.
    pub shrink: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_key: Duration::from_secs(10),
            max_steps: 10_000_000,
            shrink: Duration::from_secs(10),
        }
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable {
        key: String,
    },
    /// `window`: op ids (in invocation order) that admit no linearization.
    Violation {
        key: String,
        window: Vec<u64>,
        explanation: String,
    },
    /// The search ran out of [`Limits`]: no verdict.
    TimedOut {
        key: String,
    },
}

impl Verdict {
    pub fn key(&self) -> &str {
        match self {
            Verdict::Linearizable { key }
            | Verdict::Violation { key, .. }
            | Verdict::TimedOut { key } => key,
        }
    }
}

/// Verdicts for every key with register ops, in key order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Records that were used leniently (e.g. an `Ok` Cas without
    /// `succeeded`, checked as if its outcome were unknown).
    pub errors: Vec<String>,
    /// Register ops that took part (after dropping failed ones etc.).
    pub ops_checked: usize,
}

impl Report {
    /// Every key linearizable (none violating, none timed out).
    pub fn is_linearizable(&self) -> bool {
        self.verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Linearizable { .. }))
    }
    pub fn violations(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Violation { .. }))
    }
    pub fn timed_out(&self) -> impl Iterator<Item = &str> {
        self.verdicts.iter().filter_map(|v| match v {
            Verdict::TimedOut { key } => Some(key.as_str()),
            _ => None,
        })
    }
}

/// Checks every key's Put / Get / Cas ops of `ops` (other ops are ignored).
pub fn check(ops: &[&Op], limits: &Limits) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Put { key, .. } | Call::Get { key, .. } | Call::Cas { key, .. } => {
                by_key.entry(key.as_str()).or_default().push(op)
            }
            // Lease keys are their own (`l/...`), checked by `leases`.
            Call::Txn { .. }
            | Call::LeaseGrant { .. }
            | Call::LeasePut { .. }
            | Call::LeaseKeepAlive { .. }
            | Call::LeaseRevoke { .. } => {}
        }
    }
    let mut report = Report::default();
    for (key, ops) in by_key {
        let h = KeyHistory::build(&ops, &mut report.errors);
        report.ops_checked += h.ops.len();
        report.verdicts.push(h.check(key, limits));
    }
    report
}
