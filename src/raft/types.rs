//! What a shard's Raft log carries, and the openraft type configuration.

use crate::mvcc::Change;
use crate::raft::GlommioRuntime;
use serde::{Deserialize, Serialize};

/// One entry of a shard's log (DESIGN §2.1): the effects of one request,
/// computed once by the write leader and stamped with its revision.
/// Followers (and a restarting member) apply the effects; nobody re-evaluates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// The changes of one request at `revision`.
    Write { revision: i64, changes: Vec<Change> },
    /// Compact this shard's history at `revision`.
    Compact { revision: i64 },
    /// This shard's part of a request that changed keys on several shards
    /// at one `revision` (DESIGN §2.1 point 4). It takes effect iff every
    /// shard in `participants` holds its part in its own log; see
    /// [`crate::raft::parts`].
    Part {
        revision: i64,
        changes: Vec<Change>,
        participants: Vec<u32>,
    },
    /// Nothing changes; every revision at or below `closed` was decided
    /// when this was proposed (a write leader appends one to each shard when
    /// it starts: parts left incomplete by a crash are dropped in every later
    /// replay).
    Tick { closed: i64 },
    /// Several requests' changes, each at its own revision (ascending): the
    /// writes a shard took off its queue together, in one log entry.
    Writes { writes: Vec<(i64, Vec<Change>)> },
}

impl ShardCommand {
    /// The newest revision this entry carries (a Tick's `closed`); None for
    /// a compaction.
    pub fn newest_revision(&self) -> Option<i64> {
        match self {
            ShardCommand::Write { revision, .. } | ShardCommand::Part { revision, .. } => {
                Some(*revision)
            }
            ShardCommand::Writes { writes } => writes.last().map(|(r, _)| *r),
            ShardCommand::Tick { closed } => Some(*closed),
            ShardCommand::Compact { .. } => None,
        }
    }
}

impl std::fmt::Display for ShardCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCommand::Write { revision, changes } => {
                write!(f, "write@{revision}({} changes)", changes.len())
            }
            ShardCommand::Compact { revision } => write!(f, "compact@{revision}"),
            ShardCommand::Part {
                revision,
                changes,
                participants,
            } => write!(
                f,
                "part@{revision}({} changes, shards {participants:?})",
                changes.len()
            ),
            ShardCommand::Tick { closed } => write!(f, "tick(closed {closed})"),
            ShardCommand::Writes { writes } => match (writes.first(), writes.last()) {
                (Some((first, _)), Some((last, _))) => {
                    write!(f, "writes@{first}..={last}({} requests)", writes.len())
                }
                _ => write!(f, "writes(none)"),
            },
        }
    }
}

openraft::declare_raft_types!(
    /// The type configuration of a shard's Raft group.
    pub ShardRaft:
        D = ShardCommand,
        R = (),
        AsyncRuntime = GlommioRuntime,
);
