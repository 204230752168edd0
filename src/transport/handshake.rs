//! The peer handshake: the [`Hello`] a member sends first on a new peer
//! connection, the protocol version it names, and why a member refuses
//! another's (the exchange itself is in `super::quic`).

use serde::{Deserialize, Serialize};

/// The peer protocol this build speaks; members of other versions are
/// refused at the handshake. Bumped on any change of the frames' encoding.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest handshake message.
pub(super) const HELLO_BYTES_MAX: usize = 4096;

/// What two members check about each other before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub member_id: u64,
    /// The cluster's id (from `--initial-cluster` and its token); empty for
    /// a member that joins and has not learned it yet.
    pub cluster: String,
    /// `--initial-cluster-token`.
    pub token: String,
    pub shards: u32,
}

impl Hello {
    /// Why a member saying `theirs` is not one of ours (None: it is).
    pub(super) fn refuses(&self, theirs: &Hello) -> Option<String> {
        if theirs.protocol != self.protocol {
            return Some(format!(
                "member {:x} speaks peer protocol {}, this member {} (run adjacent cairn versions only)",
                theirs.member_id, theirs.protocol, self.protocol
            ));
        }
        if theirs.token != self.token {
            return Some(format!(
                "member {:x} has --initial-cluster-token {:?}, this member {:?}: not the same cluster",
                theirs.member_id, theirs.token, self.token
            ));
        }
        let joining = theirs.cluster.is_empty() || self.cluster.is_empty();
        if !joining && theirs.cluster != self.cluster {
            return Some(format!(
                "member {:x} is of cluster {}, this member of cluster {}: not the same cluster \
                 (--initial-cluster differs)",
                theirs.member_id, theirs.cluster, self.cluster
            ));
        }
        if theirs.shards != self.shards {
            return Some(format!(
                "member {:x} has {} shards, this member {}: --shards must be the same on every member",
                theirs.member_id, theirs.shards, self.shards
            ));
        }
        None
    }
}
