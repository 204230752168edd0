//! What a shard core answers when it cannot do what it was asked. The shard
//! knows nothing of etcd's codes and messages: the API edge maps these
//! (`crate::api::errors`).

use crate::mvcc::txn::EvalError;
use crate::mvcc::MvccError;

/// See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardError {
    /// The request fails on this shard's state (a compacted or future
    /// revision, no such key or lease): nothing changed.
    Eval(EvalError),
    /// One write's changes on this shard cannot fit one log entry: nothing
    /// changed.
    TooLarge,
    /// No room on the data dir's device for the WAL's next segment: the
    /// write was not evaluated; writes resume once there is room.
    NoSpace,
    /// This member does not stamp writes (it is not the write leader, or
    /// its leadership is changing): nothing changed.
    NotLeader,
    /// The write was proposed, and this member stopped leading before it
    /// committed: it may still commit under the next leader, or not.
    LeaderChanged,
    /// The shard is stopping, or the member stopped after a fatal error;
    /// a write answered so may or may not have been logged.
    Stopped,
}

impl From<EvalError> for ShardError {
    fn from(e: EvalError) -> Self {
        ShardError::Eval(e)
    }
}

impl From<MvccError> for ShardError {
    fn from(e: MvccError) -> Self {
        ShardError::Eval(EvalError::Mvcc(e))
    }
}
