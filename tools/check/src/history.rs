//! The history format: one JSON object per line, tagged by `kind`.
//!
//! Times are microseconds since the run started, from one monotonic clock of
//! the recording process. An operation is written once it completes (or is
//! given up on): `invoke_us` is when the request was sent, `complete_us` when
//! its answer arrived or the client stopped waiting.
//!
//! ```text
//! {"kind":"op","id":7,"client":3,"invoke_us":1200,"complete_us":1900,
//!  "call":{"type":"put","key":"r1","value":"c3-17"},
//!  "outcome":{"status":"ok","revision":42}}
//! {"kind":"op",...,"call":{"type":"get","key":"r1"},
//!  "outcome":{"status":"ok","revision":44,"value":"c3-17","mod_revision":42}}
//! {"kind":"op",...,"call":{"type":"cas","key":"r1","expect":{"mod_revision":42},"value":"c5-2"},
//!  "outcome":{"status":"ok","revision":45,"succeeded":true}}
//! {"kind":"op",...,"call":{"type":"txn","ops":[{"f":"r","key":"a"},{"f":"append","key":"b","element":9}]},
//!  "outcome":{"status":"ok","revision":46,"succeeded":true,"reads":[[1,4]]}}
//! {"kind":"op",...,"call":{"type":"lease_grant","ttl":5},
//!  "outcome":{"status":"ok","revision":46,"lease":7587,"ttl":5}}
//! {"kind":"op",...,"call":{"type":"lease_put","key":"l/1da3/0","value":"l4-1","lease":7587},
//!  "outcome":{"status":"ok","revision":47}}
//! {"kind":"op",...,"call":{"type":"lease_keep_alive","lease":7587},
//!  "outcome":{"status":"ok","revision":47,"ttl":5}}
//! {"kind":"op",...,"call":{"type":"lease_revoke","lease":7587},
//!  "outcome":{"status":"ok","revision":48}}
//! {"kind":"op",...,"outcome":{"status":"unknown","error":"etcdserver: request timed out"}}
//! {"kind":"op",...,"outcome":{"status":"failed","error":"..."}}
//! {"kind":"watch_start","watcher":2,"at_us":100,"key":"r","range_end":"s","start_revision":1}
//! {"kind":"watch_response","watcher":2,"at_us":1500,"header_revision":46,
//!  "events":[{"type":"put","key":"r1","value":"c3-17","mod_revision":42}],
//!  "progress":false,"canceled":false,"compact_revision":0}
//! {"kind":"fault","at_us":3000,"until_us":4000,"fault":"kill","target":"m1","detail":"SIGKILL pid 1234"}
//! ```
//!
//! Keys and values are UTF-8 strings: the workloads choose them.

use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Op(Op),
    WatchStart(WatchStart),
    WatchResponse(WatchResponse),
    Fault(Fault),
}

/// One client operation and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// A client runs one operation at a time.
    pub client: u32,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub call: Call,
    pub outcome: Outcome,
}

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// A Put. Values are unique per history (a write is known by its value).
    Put { key: String, value: String },
    /// A linearizable single-key Range (`serializable: true` when it was not).
    Get {
        key: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        serializable: bool,
    },
    /// A txn: if the compare holds, put `value`; no else branch.
    Cas {
        key: String,
        expect: Expect,
        value: String,
    },
    /// A list-append txn over several keys (read and append micro-ops).
    Txn { ops: Vec<Micro> },
    /// A LeaseGrant asking for `ttl` seconds (the server may raise it to its
    /// minimum); the outcome has the granted `lease` id and `ttl`.
    LeaseGrant { ttl: i64 },
    /// A Put attaching `key` to `lease` (each lease's keys are its own:
    /// `l/<lease hex>/<i>`); a write with a revision, like [`Call::Put`].
    LeasePut {
        key: String,
        value: String,
        lease: i64,
    },
    /// One request on a LeaseKeepAlive stream; the outcome's `ttl` is the
    /// TTL answered (≤ 0: the lease is gone).
    LeaseKeepAlive { lease: i64 },
    /// A LeaseRevoke: the lease's keys are deleted at one revision.
    LeaseRevoke { lease: i64 },
}

impl Call {
    /// The lease this call is about (`None`: not a lease call; a grant's
    /// lease is in its outcome).
    pub fn lease(&self) -> Option<i64> {
        match self {
            Call::LeasePut { lease, .. }
            | Call::LeaseKeepAlive { lease }
            | Call::LeaseRevoke { lease } => Some(*lease),
            _ => None,
        }
    }
}

/// A compare-and-set condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// `value(key) == v`; `None`: the key does not exist (`create_revision == 0`).
    Value(Option<String>),
    /// `mod_revision(key) == r` (as Kubernetes does; 0: the key does not exist).
    ModRevision(i64),
}

/// One micro-op of a list-append txn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Micro {
    /// Read the key's list.
    R { key: String },
    /// Append `element` (unique per key in a history) to the key's list.
    Append { key: String, element: u64 },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Answered. `revision` is the response header's revision: for a write
    /// that changed something, its own revision.
    Ok(Done),
    /// Definitely did not take effect (e.g. refused before it was proposed,
    /// or a list-append txn whose compare failed).
    Failed { error: String },
    /// May or may not have taken effect: timed out, connection lost, or
    /// etcd's `request timed out` / `leader changed` / Unavailable.
    Unknown { error: String },
}

/// An answered operation's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub revision: i64,
    /// Get: the value read (`None`: no such key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Get: the key's mod_revision (0: no such key).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mod_revision: i64,
    /// Cas / Txn: whether the compare held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// Txn: the lists its `R` micro-ops read, in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<Vec<u64>>,
    /// LeaseGrant: the granted lease's id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: i64,
    /// LeaseGrant / LeaseKeepAlive: the TTL answered, seconds (≤ 0, or
    /// absent, from a keepalive: the lease is gone).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A watch was created (sent); its responses follow as [`WatchResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchStart {
    pub watcher: u32,
    pub at_us: u64,
    pub key: String,
    /// Empty: the key alone.
    #[serde(default)]
    pub range_end: String,
    /// 0: from the member's current revision.
    pub start_revision: i64,
}

/// One WatchResponse as the watcher received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub watcher: u32,
    pub at_us: u64,
    pub header_revision: i64,
    pub events: Vec<Event>,
    /// A progress notification (no events): every event ≤ header_revision
    /// was delivered.
    #[serde(default)]
    pub progress: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub compact_revision: i64,
}

/// A watch event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub key: String,
    /// Put: the value written; Delete: empty.
    #[serde(default)]
    pub value: String,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// A fault the nemesis injected, for the report and the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_us: u64,
    /// When it was healed (equal to `at_us` for an instant fault).
    pub until_us: u64,
    /// `kill`, `pause`, `partition`, `delay`, `disk_full`, `failpoint`, ...
    pub fault: String,
    /// Which member(s).
    pub target: String,
    #[serde(default)]
    pub detail: String,
}

/// Reads a history file's lines.
pub fn read(reader: impl BufRead) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        entries.push(serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(entries)
}

/// The operations of a history, in the order they were recorded.
pub fn ops(entries: &[Entry]) -> Vec<&Op> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Op(op) => Some(op),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let text = r#"{"kind":"op","id":7,"client":3,"invoke_us":1200,"complete_us":1900,"call":{"type":"put","key":"r1","value":"c3-17"},"outcome":{"status":"ok","revision":42}}
{"kind":"op","id":8,"client":1,"invoke_us":1,"complete_us":2,"call":{"type":"cas","key":"r1","expect":{"mod_revision":42},"value":"x"},"outcome":{"status":"unknown","error":"etcdserver: request timed out"}}
{"kind":"op","id":9,"client":1,"invoke_us":3,"complete_us":4,"call":{"type":"txn","ops":[{"f":"r","key":"a"},{"f":"append","key":"b","element":9}]},"outcome":{"status":"ok","revision":46,"succeeded":true,"reads":[[1,4]]}}
{"kind":"watch_response","watcher":2,"at_us":1500,"header_revision":46,"events":[{"type":"put","key":"r1","value":"c3-17","mod_revision":42}]}
"#;
        let entries = read(text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 4);
        let Entry::Op(op) = &entries[1] else {
            panic!("an op")
        };
        assert_eq!(
            op.call,
            Call::Cas {
                key: "r1".into(),
                expect: Expect::ModRevision(42),
                value: "x".into()
            }
        );
        for e in &entries {
            let again: Entry = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
            assert_eq!(&again, e);
        }
        assert!(read("{\"kind\":\"nope\"}".as_bytes()).is_err());
    }

    #[test]
    fn lease_calls_round_trip() {
        let text = r#"{"kind":"op","id":1,"client":9,"invoke_us":1,"complete_us":2,"call":{"type":"lease_grant","ttl":5},"outcome":{"status":"ok","revision":3,"lease":7587,"ttl":6}}
{"kind":"op","id":2,"client":9,"invoke_us":3,"complete_us":4,"call":{"type":"lease_put","key":"l/1da3/0","value":"v","lease":7587},"outcome":{"status":"ok","revision":4}}
{"kind":"op","id":3,"client":9,"invoke_us":5,"complete_us":6,"call":{"type":"lease_keep_alive","lease":7587},"outcome":{"status":"ok","revision":4}}
{"kind":"op","id":4,"client":9,"invoke_us":7,"complete_us":8,"call":{"type":"lease_revoke","lease":7587},"outcome":{"status":"unknown","error":"x"}}
"#;
        let entries = read(text.as_bytes()).unwrap();
        let ops = ops(&entries);
        let Outcome::Ok(grant) = &ops[0].outcome else {
            panic!("ok")
        };
        assert_eq!((grant.lease, grant.ttl), (7587, 6));
        // A keepalive's TTL 0 is left out, and reads back as 0: gone.
        let Outcome::Ok(keep) = &ops[2].outcome else {
            panic!("ok")
        };
        assert_eq!(keep.ttl, 0);
        assert_eq!(ops[3].call.lease(), Some(7587));
        for e in &entries {
            let again: Entry = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
            assert_eq!(&again, e);
        }
    }
}
