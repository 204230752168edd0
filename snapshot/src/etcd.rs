//! etcd 3.4's backend schema: the bbolt buckets and how each key and value
//! is encoded, checked against etcd release-3.4's source:
//!
//! | bucket | key | value | etcd 3.4 source |
//! |---|---|---|---|
//! | `alarm` | `etcdserverpb.AlarmMember` (protobuf) | empty | `etcdserver/api/v3alarm/alarms.go` |
//! | `auth` | `authEnabled` | one byte, 1 or 0 | `auth/store.go` |
//! | `auth` | `authRevision` | u64 big-endian (8 bytes: `auth`'s own `revBytesLen`) | `auth/store.go` `commitRevision` |
//! | `authRoles` | role name | `authpb.Role` | `auth/store.go` |
//! | `authUsers` | user name | `authpb.User` | `auth/store.go` |
//! | `cluster` | `clusterVersion` | e.g. `3.4.0` | `etcdserver/api/membership/store.go` |
//! | `key` | revision: main u64 BE, `_`, sub u64 BE (17 bytes), + `t` for a tombstone | `mvccpb.KeyValue` (a tombstone's has only `key`) | `mvcc/revision.go`, `mvcc/kvstore_txn.go` |
//! | `lease` | lease id, 8 bytes BE | `leasepb.Lease` {ID, TTL, RemainingTTL} | `lease/lessor.go` |
//! | `members` | member id in hex, no padding (`types.ID.String`) | JSON {id, peerURLs, isLearner?, name?, clientURLs?} | `etcdserver/api/membership/store.go` |
//! | `members_removed` | member id in hex | `removed` | same |
//! | `meta` | `consistent_index` | u64 BE | `mvcc/kvstore.go` `saveIndex` |
//! | `meta` | `finishedCompactRev`, `scheduledCompactRev` | revision {main: rev, sub: 0}, 17 bytes | `mvcc/kvstore.go`, `kvstore_compaction.go` |
//!
//! Anything else (another bucket, or an unknown key in a known bucket, e.g.
//! from etcd 3.5) is an [`Item::Raw`], kept as bytes.

use cairn_proto::authpb::{Role, User};
use cairn_proto::etcdserverpb::AlarmMember;
use cairn_proto::mvccpb::KeyValue;
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize};

/// Bucket names, in bbolt's (byte) order.
pub mod bucket {
    pub const ALARM: &[u8] = b"alarm";
    pub const AUTH: &[u8] = b"auth";
    pub const AUTH_ROLES: &[u8] = b"authRoles";
    pub const AUTH_USERS: &[u8] = b"authUsers";
    pub const CLUSTER: &[u8] = b"cluster";
    pub const KEY: &[u8] = b"key";
    pub const LEASE: &[u8] = b"lease";
    pub const MEMBERS: &[u8] = b"members";
    pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
    pub const META: &[u8] = b"meta";
    /// Every bucket etcd 3.4 creates, in byte order.
    pub const ALL: [&[u8]; 10] = [
        ALARM,
        AUTH,
        AUTH_ROLES,
        AUTH_USERS,
        CLUSTER,
        KEY,
        LEASE,
        MEMBERS,
        MEMBERS_REMOVED,
        META,
    ];
}

pub const AUTH_ENABLED_KEY: &[u8] = b"authEnabled";
pub const AUTH_REVISION_KEY: &[u8] = b"authRevision";
pub const CLUSTER_VERSION_KEY: &[u8] = b"clusterVersion";
pub const CONSISTENT_INDEX_KEY: &[u8] = b"consistent_index";
pub const FINISHED_COMPACT_KEY: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT_KEY: &[u8] = b"scheduledCompactRev";
/// The value etcd stores for a removed member.
pub const REMOVED_VALUE: &[u8] = b"removed";
/// Length of a revision key (`revBytesLen`); a tombstone's has one more byte.
pub const REVISION_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

/// An MVCC revision: `main` is the store revision, `sub` the change within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// etcd's `revToBytes`, plus the tombstone mark when `tombstone`.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut key = Vec::with_capacity(REVISION_BYTES + 1);
        key.extend_from_slice(&(self.main as u64).to_be_bytes());
        key.push(b'_');
        key.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            key.push(TOMBSTONE_MARK);
        }
        key
    }

    /// Parses a revision key: the revision and whether it marks a tombstone.
    pub fn from_key(key: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match key.len() {
            REVISION_BYTES => false,
            n if n == REVISION_BYTES + 1 && key[REVISION_BYTES] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if key[8] != b'_' {
            return None;
        }
        let main = u64::from_be_bytes(key[0..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(key[9..17].try_into().ok()?) as i64;
        Some((Revision { main, sub }, tombstone))
    }
}

/// `leasepb.Lease` (etcd's `lease/leasepb/lease.proto`; not in `cairn-proto`).
#[derive(Clone, PartialEq, Message)]
pub struct Lease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// A cluster member as etcd 3.4 stores it in the `members` bucket (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    #[serde(rename = "peerURLs", default, deserialize_with = "null_as_empty")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        rename = "clientURLs",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub client_urls: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Go marshals a nil slice as `null`.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// One record of an etcd 3.4 backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Alarm(AlarmMember),
    AuthEnabled(bool),
    AuthRevision(u64),
    Role(Role),
    User(User),
    ClusterVersion(String),
    /// A key's value at a revision (bucket `key`).
    Put {
        revision: Revision,
        kv: KeyValue,
    },
    /// A key's deletion at a revision (bucket `key`, marked `t`).
    Tombstone {
        revision: Revision,
        key: Vec<u8>,
    },
    Lease(Lease),
    Member(Member),
    RemovedMember(u64),
    ConsistentIndex(u64),
    /// The compaction etcd finished (main revision).
    FinishedCompact(i64),
    /// The compaction etcd scheduled (main revision); etcd resumes it on start if unfinished.
    ScheduledCompact(i64),
    /// Anything this schema does not name, as bytes.
    Raw {
        bucket: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bucket {bucket:?}, key {key:?}: {reason}")]
pub struct SchemaError {
    pub bucket: String,
    pub key: Vec<u8>,
    pub reason: String,
}

impl Item {
    /// The bucket the item lives in.
    pub fn bucket(&self) -> &[u8] {
        match self {
            Item::Alarm(_) => bucket::ALARM,
            Item::AuthEnabled(_) | Item::AuthRevision(_) => bucket::AUTH,
            Item::Role(_) => bucket::AUTH_ROLES,
            Item::User(_) => bucket::AUTH_USERS,
            Item::ClusterVersion(_) => bucket::CLUSTER,
            Item::Put { .. } | Item::Tombstone { .. } => bucket::KEY,
            Item::Lease(_) => bucket::LEASE,
            Item::Member(_) => bucket::MEMBERS,
            Item::RemovedMember(_) => bucket::MEMBERS_REMOVED,
            Item::ConsistentIndex(_) | Item::FinishedCompact(_) | Item::ScheduledCompact(_) => {
                bucket::META
            }
            Item::Raw { bucket, .. } => bucket,
        }
    }

    /// The bbolt key.
    pub fn key(&self) -> Vec<u8> {
        match self {
            Item::Alarm(a) => a.encode_to_vec(),
            Item::AuthEnabled(_) => AUTH_ENABLED_KEY.to_vec(),
            Item::AuthRevision(_) => AUTH_REVISION_KEY.to_vec(),
            Item::Role(r) => r.name.clone(),
            Item::User(u) => u.name.clone(),
            Item::ClusterVersion(_) => CLUSTER_VERSION_KEY.to_vec(),
            Item::Put { revision, .. } => revision.to_key(false),
            Item::Tombstone { revision, .. } => revision.to_key(true),
            Item::Lease(l) => (l.id as u64).to_be_bytes().to_vec(),
            Item::Member(m) => format!("{:x}", m.id).into_bytes(),
            Item::RemovedMember(id) => format!("{id:x}").into_bytes(),
            Item::ConsistentIndex(_) => CONSISTENT_INDEX_KEY.to_vec(),
            Item::FinishedCompact(_) => FINISHED_COMPACT_KEY.to_vec(),
            Item::ScheduledCompact(_) => SCHEDULED_COMPACT_KEY.to_vec(),
            Item::Raw { key, .. } => key.clone(),
        }
    }

    /// The bbolt value.
    pub fn value(&self) -> Vec<u8> {
        match self {
            Item::Alarm(_) => Vec::new(),
            Item::AuthEnabled(on) => vec![u8::from(*on)],
            Item::AuthRevision(rev) => rev.to_be_bytes().to_vec(),
            Item::Role(r) => r.encode_to_vec(),
            Item::User(u) => u.encode_to_vec(),
            Item::ClusterVersion(v) => v.as_bytes().to_vec(),
            Item::Put { kv, .. } => kv.encode_to_vec(),
            Item::Tombstone { key, .. } => KeyValue {
                key: key.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
            Item::Lease(l) => l.encode_to_vec(),
            Item::Member(m) => serde_json::to_vec(m).expect("a member serializes"),
            Item::RemovedMember(_) => REMOVED_VALUE.to_vec(),
            Item::ConsistentIndex(i) => i.to_be_bytes().to_vec(),
            Item::FinishedCompact(rev) | Item::ScheduledCompact(rev) => {
                Revision { main: *rev, sub: 0 }.to_key(false)
            }
            Item::Raw { value, .. } => value.clone(),
        }
    }

    /// Where the item goes in the file: (bucket, key). A snapshot's items
    /// must come in this order; sort small sets with it.
    pub fn file_order(&self) -> (Vec<u8>, Vec<u8>) {
        (self.bucket().to_vec(), self.key())
    }

    /// Decodes one record of bucket `bucket`.
    pub fn decode(bucket_name: &[u8], key: &[u8], value: &[u8]) -> Result<Item, SchemaError> {
        let fail = |reason: String| SchemaError {
            bucket: String::from_utf8_lossy(bucket_name).into_owned(),
            key: key.to_vec(),
            reason,
        };
        let proto = |e: prost::DecodeError| fail(format!("bad protobuf: {e}"));
        let u64_be = |v: &[u8], what: &str| -> Result<u64, SchemaError> {
            v.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| fail(format!("{what}: {} bytes, need 8", v.len())))
        };
        let raw = || Item::Raw {
            bucket: bucket_name.to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        };
        Ok(match bucket_name {
            bucket::ALARM => Item::Alarm(AlarmMember::decode(key).map_err(proto)?),
            bucket::AUTH => match key {
                AUTH_ENABLED_KEY => Item::AuthEnabled(value == [1]),
                AUTH_REVISION_KEY => Item::AuthRevision(u64_be(value, "auth revision")?),
                _ => raw(),
            },
            bucket::AUTH_ROLES => Item::Role(Role::decode(value).map_err(proto)?),
            bucket::AUTH_USERS => Item::User(User::decode(value).map_err(proto)?),
            bucket::CLUSTER if key == CLUSTER_VERSION_KEY => Item::ClusterVersion(
                String::from_utf8(value.to_vec()).map_err(|_| fail("not UTF-8".into()))?,
            ),
            bucket::KEY => {
                let (revision, tombstone) =
                    Revision::from_key(key).ok_or_else(|| fail("not a revision key".into()))?;
                let kv = KeyValue::decode(value).map_err(proto)?;
                if tombstone {
                    Item::Tombstone {
                        revision,
                        key: kv.key,
                    }
                } else {
                    Item::Put { revision, kv }
                }
            }
            bucket::LEASE => Item::Lease(Lease::decode(value).map_err(proto)?),
            bucket::MEMBERS => Item::Member(
                serde_json::from_slice(value).map_err(|e| fail(format!("bad member JSON: {e}")))?,
            ),
            bucket::MEMBERS_REMOVED => Item::RemovedMember(
                std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| u64::from_str_radix(k, 16).ok())
                    .ok_or_else(|| fail("not a hex member id".into()))?,
            ),
            bucket::META => match key {
                CONSISTENT_INDEX_KEY => Item::ConsistentIndex(u64_be(value, "consistent index")?),
                FINISHED_COMPACT_KEY | SCHEDULED_COMPACT_KEY => {
                    let main = u64_be(value, "compaction revision")? as i64;
                    if key == FINISHED_COMPACT_KEY {
                        Item::FinishedCompact(main)
                    } else {
                        Item::ScheduledCompact(main)
                    }
                }
                _ => raw(),
            },
            _ => raw(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_in_byte_order() {
        assert!(bucket::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn revision_keys_match_etcd() {
        let r = Revision { main: 5, sub: 2 };
        let k = r.to_key(false);
        assert_eq!(k, b"\0\0\0\0\0\0\0\x05_\0\0\0\0\0\0\0\x02");
        assert_eq!(Revision::from_key(&k), Some((r, false)));
        let t = r.to_key(true);
        assert_eq!(t.len(), 18);
        assert_eq!(Revision::from_key(&t), Some((r, true)));
        assert_eq!(Revision::from_key(b"short"), None);
    }

    #[test]
    fn items_round_trip_through_key_and_value() {
        let items = vec![
            Item::AuthEnabled(true),
            Item::AuthRevision(7),
            Item::ClusterVersion("3.4.0".into()),
            Item::Put {
                revision: Revision { main: 3, sub: 0 },
                kv: KeyValue {
                    key: b"a".to_vec(),
                    create_revision: 2,
                    mod_revision: 3,
                    version: 2,
                    value: b"v".to_vec(),
                    lease: 0,
                },
            },
            Item::Tombstone {
                revision: Revision { main: 4, sub: 0 },
                key: b"a".to_vec(),
            },
            Item::Lease(Lease {
                id: 0x1234,
                ttl: 60,
                remaining_ttl: 0,
            }),
            Item::Member(Member {
                id: 0x8e9e05c52164694d,
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                is_learner: false,
                name: "m1".into(),
                client_urls: vec![],
            }),
            Item::RemovedMember(0xabc),
            Item::ConsistentIndex(99),
            Item::FinishedCompact(3),
            Item::ScheduledCompact(3),
        ];
        for item in items {
            let back = Item::decode(item.bucket(), &item.key(), &item.value()).unwrap();
            assert_eq!(back, item);
        }
    }

    #[test]
    fn member_json_is_etcds() {
        let m = Member {
            id: 10276657743932975437,
            peer_urls: vec!["http://localhost:2380".into()],
            is_learner: false,
            name: "default".into(),
            client_urls: vec!["http://localhost:2379".into()],
        };
        assert_eq!(
            String::from_utf8(Item::Member(m.clone()).value()).unwrap(),
            r#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default","clientURLs":["http://localhost:2379"]}"#
        );
        assert_eq!(Item::Member(m).key(), b"8e9e05c52164694d");
        // Go writes a nil slice as null.
        let back: Member = serde_json::from_str(r#"{"id":1,"peerURLs":null}"#).unwrap();
        assert!(back.peer_urls.is_empty());
    }
}
