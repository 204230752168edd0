//! Peer transport: how members reach each other (DESIGN §2.1.1 "Peer port").
//!
//! The transport carries [`Frame`]s — a kind, a group and opaque bytes — to a
//! member by id and brings back the reply's bytes. It knows groups and bytes,
//! not keys: the Raft glue (`crate::raft::network`) encodes Raft RPCs into
//! frames, the member encodes forwarded client requests, and the receiving
//! member's [`Inbox`] routes each frame to the shard core that owns its group.
//!
//! Implementations:
//! - [`NoPeers`]: a single-member cluster (every call fails: nobody to call);
//! - [`channel::ChannelNet`]: members in one process over in-memory channels
//!   that can partition, delay and drop (tests, DESIGN's step 1);
//! - [`quic::QuicTransport`]: members over QUIC on the peer (UDP) port.
//!
//! Every call is bounded: the caller gives a deadline, and an implementation
//! holds at most a bounded number of frames per destination.

pub mod channel;
mod dial;
mod handshake;
mod liveness;
mod peer_tls;
pub mod quic;

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Raft AppendEntries (heartbeats included) for `group`.
    Append = 1,
    /// Raft RequestVote for `group`.
    Vote = 2,
    /// A full Raft snapshot for `group`.
    Snapshot = 3,
    /// A client request forwarded to the write leader (`group` unused).
    Forward = 4,
    /// Asks the write leader to confirm its leadership and name C.
    ReadIndex = 5,
    /// Raft TransferLeader for `group`: the leader hands over to the target.
    Transfer = 6,
    /// Raft Pre-Vote for `group`: would the target vote for this candidate?
    PreVote = 7,
    /// The write leader tells a member it was removed from the cluster (it
    /// hears nothing else from the cluster any more).
    Removed = 8,
}

/// One request to a peer.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: Kind,
    /// The Raft group (a data shard's id, or the meta group's).
    pub group: u64,
    pub body: Vec<u8>,
}

/// Why a call brought back no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The peer could not be reached (unknown, partitioned, dropped).
    Unreachable(String),
    /// No reply before the deadline.
    Timeout,
    /// The peer got the frame and could not handle it (its reason).
    Remote(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            CallError::Timeout => write!(f, "peer did not answer in time"),
            CallError::Remote(why) => write!(f, "peer failed: {why}"),
        }
    }
}

/// Sends frames to peers. The returned future does not need any particular
/// runtime (shard cores poll it on glommio, the front on tokio).
pub trait Transport: Send + Sync + 'static {
    /// Sends `frame` to member `to` and resolves to its reply, within `ttl`.
    fn call(
        &self,
        to: u64,
        frame: Frame,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;

    /// The cluster's members are now `peers` (id → peer URL), as the meta
    /// group's membership says (members added, removed, moved).
    fn set_peers(&self, _peers: &std::collections::BTreeMap<u64, String>) {}

    /// The current round-trip estimate to each connected member (none on
    /// a transport that measures none).
    fn round_trips(&self) -> Vec<(u64, Duration)> {
        Vec::new()
    }
}

/// Receives frames for a member and answers them.
pub trait Inbox: Send + Sync + 'static {
    /// Handles `frame` from member `from`; Err(reason) if it cannot.
    fn deliver(&self, from: u64, frame: Frame) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// The transport of a single-member cluster: there is nobody to call
/// (openraft never sends an RPC when this member is the only one).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn call(
        &self,
        to: u64,
        _frame: Frame,
        _ttl: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        Box::pin(futures::future::ready(Err(CallError::Unreachable(
            format!("single-member cluster: no peer {to:x}"),
        ))))
    }
}

/// A transport shared by a member's shard cores and front.
pub type SharedTransport = Arc<dyn Transport>;
