//! `Maintenance.Snapshot` in etcd 3.4's own file format (the
//! `cairn-snapshot` crate): a bbolt database with etcd's buckets, then the
//! SHA-256 trailer, so `etcdctl snapshot status` reads it and `etcdctl
//! snapshot restore` turns it into a data dir a real etcd starts on.
//!
//! What goes in, all at one revision R (the member's C when the snapshot
//! starts; compaction is held off meanwhile):
//! - `key`: every version every shard keeps up to R (the one kept at the
//!   compaction point, and each change after it), keyed by revision. cairn
//!   keeps no order between the changes of one revision (etcd's
//!   sub-revisions, the order of a txn's ops): they are numbered in key
//!   order.
//! - `meta`: the compaction point (finished and scheduled) and a consistent
//!   index (R: etcd's restore replaces it anyway).
//! - `lease`: the lease table (id, TTL), `auth*`: the auth store (users with
//!   their bcrypt hashes, roles, enabled, revision), `members`, `alarm`,
//!   `cluster`: the API version.
//!
//! Not yet streamed: the shards' images and the file are built in memory
//! (as the snapshot before it was), so a snapshot needs about twice the
//! data's size in memory while it runs.

use super::Member;
use crate::api::EtcdError;
use crate::mvcc::StoreImage;
use crate::shard::ShardMsg;
use cairn_proto::authpb;
use cairn_proto::etcdserverpb::AlarmMember;
use cairn_proto::mvccpb::KeyValue;
use cairn_snapshot::{write_snapshot, Item, Lease, Revision};
use tonic::Status;

/// The cluster version a snapshot records (the API level cairn speaks).
const CLUSTER_VERSION: &str = "3.4.0";

impl Member {
    /// The whole snapshot file (bbolt, then the 32-byte SHA-256 of it).
    pub async fn etcd_snapshot(&self) -> Result<Vec<u8>, Status> {
        // No compaction while the images are taken.
        let _no_compaction = self.cross.lock().await;
        let revision = self.seq.committed();
        let mut images = Vec::with_capacity(self.shards.len());
        for shard in 0..self.shards.len() {
            let body = self
                .ask(shard, |reply| ShardMsg::Image {
                    upto: revision,
                    reply,
                })
                .await??;
            let image: StoreImage = postcard::from_bytes(&body)
                .map_err(|e| Status::internal(format!("shard {shard}'s image: {e}")))?;
            images.push(image);
        }
        let members = self.member_list().await?;
        let mut items = key_items(&images, revision);
        let compacted = images.iter().map(|i| i.compacted).max().unwrap_or(0);
        drop(images);
        items.extend(
            self.alarms
                .list()
                .into_iter()
                .map(|(member_id, alarm)| Item::Alarm(AlarmMember { member_id, alarm })),
        );
        items.extend(auth_items(&self.auth.view.store()));
        items.push(Item::ClusterVersion(CLUSTER_VERSION.to_string()));
        items.extend(self.leases.view.leases().into_iter().map(|(id, ttl)| {
            Item::Lease(Lease {
                id,
                ttl,
                remaining_ttl: 0,
            })
        }));
        items.extend(members.into_iter().map(|m| {
            Item::Member(cairn_snapshot::Member {
                id: m.record.id,
                peer_urls: m.record.peer_urls,
                is_learner: m.learner,
                name: m.record.name,
                client_urls: m.record.client_urls,
            })
        }));
        items.push(Item::ConsistentIndex(revision.max(0) as u64));
        if compacted > 0 {
            items.push(Item::FinishedCompact(compacted));
            items.push(Item::ScheduledCompact(compacted));
        }
        items.sort_by_cached_key(Item::file_order);
        let mut out = Vec::new();
        write_snapshot(&mut out, &Default::default(), &items)
            .map_err(|e| Status::internal(format!("writing the snapshot: {e}")))?;
        if out.len() < 32 {
            return Err(EtcdError::Stopped.status());
        }
        Ok(out)
    }
}

/// Bucket `key`: every version up to `revision` of every shard's image,
/// by revision, the changes of one revision numbered in key order.
fn key_items(images: &[StoreImage], revision: i64) -> Vec<Item> {
    let mut versions: Vec<(i64, &[u8], &crate::mvcc::VersionImage)> = images
        .iter()
        .flat_map(|image| image.keys.iter())
        .flat_map(|(key, versions)| {
            versions
                .iter()
                .filter(move |v| v.mod_revision <= revision)
                .map(move |v| (v.mod_revision, key.as_slice(), v))
        })
        .collect();
    versions.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut items = Vec::with_capacity(versions.len());
    let mut sub = 0;
    let mut last = None;
    for (main, key, v) in versions {
        sub = if last == Some(main) { sub + 1 } else { 0 };
        last = Some(main);
        let at = Revision { main, sub };
        items.push(if v.version == 0 {
            Item::Tombstone {
                revision: at,
                key: key.to_vec(),
            }
        } else {
            Item::Put {
                revision: at,
                kv: KeyValue {
                    key: key.to_vec(),
                    create_revision: v.create_revision,
                    mod_revision: v.mod_revision,
                    version: v.version,
                    value: v.value.clone(),
                    lease: v.lease,
                },
            }
        });
    }
    items
}

/// Buckets `auth`, `authUsers` and `authRoles` as etcd 3.4 keeps them.
fn auth_items(store: &crate::auth::AuthStore) -> Vec<Item> {
    let mut items = vec![
        Item::AuthEnabled(store.enabled),
        Item::AuthRevision(store.revision),
    ];
    items.extend(store.users.iter().map(|(name, u)| {
        Item::User(authpb::User {
            name: name.as_bytes().to_vec(),
            password: u.hash.clone().unwrap_or_default().into_bytes(),
            roles: u.roles.clone(),
            options: u
                .no_password
                .then_some(authpb::UserAddOptions { no_password: true }),
        })
    }));
    items.extend(store.roles.iter().map(|(name, r)| {
        Item::Role(authpb::Role {
            name: name.as_bytes().to_vec(),
            key_permission: r.perms.iter().map(crate::auth::Perm::to_pb).collect(),
        })
    }));
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::VersionImage;

    fn v(mod_revision: i64, create_revision: i64, version: i64, value: &[u8]) -> VersionImage {
        VersionImage {
            mod_revision,
            create_revision,
            version,
            value: value.to_vec(),
            lease: 0,
        }
    }

    /// Two shards' histories merge by revision; the changes of one
    /// revision (a txn over both shards) get sub-revisions in key order;
    /// a delete is a tombstone; nothing past the snapshot's revision.
    #[test]
    fn key_bucket_is_every_kept_version_by_revision() {
        let a = StoreImage {
            revision: 5,
            compacted: 0,
            keys: vec![(
                b"b".to_vec(),
                vec![v(2, 2, 1, b"b1"), v(4, 2, 2, b"b2"), v(6, 2, 3, b"late")],
            )],
        };
        let b = StoreImage {
            revision: 5,
            compacted: 0,
            keys: vec![(b"a".to_vec(), vec![v(3, 3, 1, b"a1"), v(4, 0, 0, b"")])],
        };
        let items = key_items(&[a, b], 5);
        let got: Vec<(i64, i64, &[u8], bool)> = items
            .iter()
            .map(|i| match i {
                Item::Put { revision, kv } => {
                    (revision.main, revision.sub, kv.key.as_slice(), false)
                }
                Item::Tombstone { revision, key } => {
                    (revision.main, revision.sub, key.as_slice(), true)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 0, &b"b"[..], false),
                (3, 0, &b"a"[..], false),
                (4, 0, &b"a"[..], true),
                (4, 1, &b"b"[..], false),
            ]
        );
    }
}
