//! A snapshot saved from a running etcd 3.4 (Debian's `etcd-server` and
//! `etcd-client`; absent tools fail these tests), read by this crate: item
//! by item, its status equal to etcdctl's, and written again by this crate
//! with the same records byte for byte (the same status hash).

mod support;

use std::fs::File;

use cairn_proto::authpb::{permission::Type as PermType, Permission, Role};
use cairn_proto::mvccpb::KeyValue;
use cairn_snapshot::bolt::read::{BoltReader, Event};
use cairn_snapshot::bolt::write::WriteOptions;
use cairn_snapshot::{write_snapshot, Item, Lease, ReadOptions, Revision, Snapshot};
use support::{put, raw_records, status_of, tmpdir, Etcd};

#[test]
fn etcd_snapshot_is_read_by_cairn() {
    let dir = tmpdir("save");
    let etcd = Etcd::start(
        &dir.path().join("m1.etcd"),
        "m1",
        support::free_port(),
        &dir.path().join("etcd.log"),
    );
    etcd.ctl(&["put", "a", "1"]); // 2
    etcd.ctl(&["put", "a", "2"]); // 3
    let grant = etcd.ctl(&["lease", "grant", "3600"]);
    let lease_hex = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let lease_id = i64::from_str_radix(&lease_hex, 16).unwrap();
    etcd.ctl(&["put", "b", "x", "--lease", &lease_hex]); // 4
    etcd.ctl(&["del", "a"]); // 5
    etcd.ctl(&["put", "c", "y"]); // 6
    etcd.ctl(&["compact", "3", "--physical"]);
    etcd.ctl(&["role", "add", "reader"]);
    etcd.ctl(&["role", "grant-permission", "reader", "read", "a", "b"]);
    etcd.ctl(&["user", "add", "alice:secret"]);
    etcd.ctl(&["user", "grant-role", "alice", "reader"]);
    let path = dir.path().join("etcd.db");
    etcd.ctl(&["snapshot", "save", path.to_str().unwrap()]);
    drop(etcd);

    let snapshot = Snapshot::open_file(&path, &ReadOptions::default()).unwrap();
    assert!(snapshot.sha256().is_some(), "etcd appends the sha256");
    let items: Vec<Item> = snapshot.items().unwrap().map(Result::unwrap).collect();

    let key_bucket: Vec<&Item> = items
        .iter()
        .filter(|i| matches!(i, Item::Put { .. } | Item::Tombstone { .. }))
        .collect();
    assert_eq!(
        key_bucket,
        vec![
            &put(3, "a", "2", 2, 2, 0),
            &put(4, "b", "x", 4, 1, lease_id),
            &Item::Tombstone {
                revision: Revision { main: 5, sub: 0 },
                key: b"a".to_vec()
            },
            &put(6, "c", "y", 6, 1, 0),
        ],
        "a@2 was compacted away"
    );
    let find =
        |f: &dyn Fn(&Item) -> bool| items.iter().filter(|i| f(i)).cloned().collect::<Vec<_>>();
    assert_eq!(
        find(&|i| matches!(i, Item::Lease(_))),
        vec![Item::Lease(Lease {
            id: lease_id,
            ttl: 3600,
            remaining_ttl: 0
        })]
    );
    let users = find(&|i| matches!(i, Item::User(_)));
    let [Item::User(alice)] = users.as_slice() else {
        panic!("users: {users:?}")
    };
    assert_eq!(alice.name, b"alice");
    assert_eq!(alice.roles, vec!["reader".to_string()]);
    assert!(alice.password.starts_with(b"$2a$"), "bcrypt hash");
    assert_eq!(
        find(&|i| matches!(i, Item::Role(_))),
        vec![Item::Role(Role {
            name: b"reader".to_vec(),
            key_permission: vec![Permission {
                perm_type: PermType::Read as i32,
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
            }],
        })]
    );
    let members = find(&|i| matches!(i, Item::Member(_)));
    let [Item::Member(m1)] = members.as_slice() else {
        panic!("members: {members:?}")
    };
    assert_eq!(m1.name, "m1");
    assert_eq!(m1.peer_urls.len(), 1);
    assert!(m1.peer_urls[0].starts_with("http://127.0.0.1:"));
    assert_eq!(
        find(&|i| matches!(i, Item::ClusterVersion(_))),
        vec![Item::ClusterVersion("3.4.0".into())]
    );
    assert_eq!(
        find(&|i| matches!(i, Item::FinishedCompact(_) | Item::ScheduledCompact(_))),
        vec![Item::FinishedCompact(3), Item::ScheduledCompact(3)]
    );
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::ConsistentIndex(n) if *n > 0)));
    assert!(items
        .iter()
        .any(|i| matches!(i, Item::AuthRevision(n) if *n > 0)));

    // Our status is etcdctl's.
    let status = status_of(&path);
    assert_eq!(snapshot.status().unwrap(), status);
    assert_eq!(status.revision, 6);

    // Written again by us, the records are the same bytes: same hash and counts.
    let again = dir.path().join("again.db");
    write_snapshot(
        &mut File::create(&again).unwrap(),
        &WriteOptions::default(),
        &items,
    )
    .unwrap();
    assert_eq!(raw_records(&again), raw_records(&path));
    let again_status = status_of(&again);
    assert_eq!(
        (
            again_status.hash,
            again_status.revision,
            again_status.total_key
        ),
        (status.hash, status.revision, status.total_key)
    );
    assert!(
        again_status.total_size <= status.total_size,
        "ours is compact"
    );
}

/// A real etcd's snapshot with pages of every kind: one transaction of 3000
/// puts (one revision, sub revisions 0..2999: leaves under branches), 20 KB
/// values (overflow pages), and its freelist not synced (etcd 3.4's
/// `NoFreelistSync`). Read whole, status as etcdctl's, rewritten identically.
#[test]
fn etcd_snapshot_with_many_pages_is_read_by_cairn() {
    let dir = tmpdir("pages");
    let etcd = Etcd::start_with(
        &dir.path().join("m1.etcd"),
        "m1",
        support::free_port(),
        &dir.path().join("etcd.log"),
        &["--max-txn-ops", "5000"],
    );
    // etcdctl txn reads: compares, a blank line, success ops, a blank line, failure ops.
    let mut txn = String::from("\n");
    for i in 0..3000 {
        let value = if i % 1000 == 999 {
            "Z".repeat(20_000)
        } else {
            format!("v{i}")
        };
        txn.push_str(&format!("put k{i:04} {value}\n"));
    }
    txn.push_str("\n\n");
    let mut args = vec![
        "--endpoints",
        etcd.client_url.as_str(),
        "--command-timeout=20s",
    ];
    args.extend(["txn"]);
    support::etcdctl_stdin(&args, &txn);
    etcd.ctl(&["put", "after", "1"]);
    let path = dir.path().join("etcd.db");
    etcd.ctl(&["snapshot", "save", path.to_str().unwrap()]);
    drop(etcd);

    let bytes = std::fs::read(&path).unwrap();
    let bolt = BoltReader::open(&bytes, bytes.len() as u64 - 32).unwrap();
    assert_eq!(
        bolt.meta().freelist,
        cairn_snapshot::bolt::PGID_NO_FREELIST,
        "etcd 3.4 does not sync its freelist"
    );
    let key_root = bolt
        .walk_top_level()
        .map(Result::unwrap)
        .find_map(|e| match e {
            Event::BucketBegin { name, header } if name == b"key" => Some(header.root),
            _ => None,
        });
    assert!(
        key_root.is_some_and(|r| r != 0),
        "bucket key is on pages of its own"
    );

    let snapshot = Snapshot::open_file(&path, &ReadOptions::default()).unwrap();
    let puts: Vec<(Revision, KeyValue)> = snapshot
        .items()
        .unwrap()
        .map(Result::unwrap)
        .filter_map(|i| match i {
            Item::Put { revision, kv } => Some((revision, kv)),
            _ => None,
        })
        .collect();
    assert_eq!(puts.len(), 3001);
    for (i, (revision, kv)) in puts.iter().take(3000).enumerate() {
        assert_eq!(
            *revision,
            Revision {
                main: 2,
                sub: i as i64
            }
        );
        assert_eq!(kv.key, format!("k{i:04}").into_bytes());
        assert_eq!(kv.mod_revision, 2);
        let want = if i % 1000 == 999 {
            20_000
        } else {
            format!("v{i}").len()
        };
        assert_eq!(kv.value.len(), want);
    }
    assert_eq!(puts[3000].0, Revision { main: 3, sub: 0 });

    let status = status_of(&path);
    assert_eq!(snapshot.status().unwrap(), status);
    assert_eq!(status.revision, 3);

    let items: Vec<Item> = snapshot.items().unwrap().map(Result::unwrap).collect();
    let again = dir.path().join("again.db");
    write_snapshot(
        &mut File::create(&again).unwrap(),
        &WriteOptions::default(),
        &items,
    )
    .unwrap();
    assert_eq!(raw_records(&again), raw_records(&path));
    let again_status = status_of(&again);
    assert_eq!(
        (
            again_status.hash,
            again_status.revision,
            again_status.total_key
        ),
        (status.hash, status.revision, status.total_key)
    );
}
