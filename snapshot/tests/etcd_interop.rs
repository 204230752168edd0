//! Interop with real etcd 3.4 and etcdctl (Debian's `etcd-server` and
//! `etcd-client`; absent tools fail these tests):
//! - a snapshot written by this crate passes `etcdctl snapshot status` (bbolt's
//!   own consistency check included) with the expected numbers, is restored
//!   by `etcdctl snapshot restore`, and the etcd started on it serves the
//!   same keys, revisions, history, compaction point, lease and auth records;
//! - a snapshot saved from a running etcd is read back item by item, its
//!   status matches etcdctl's, and written again by this crate it has the
//!   same status hash (the same records, byte for byte).

mod support;

use std::fs::File;
use std::path::Path;

use cairn_proto::authpb::{permission::Type as PermType, Permission, Role, User};
use cairn_proto::mvccpb::KeyValue;
use cairn_snapshot::bolt::read::{BoltReader, Event};
use cairn_snapshot::bolt::write::WriteOptions;
use cairn_snapshot::{
    write_snapshot, Item, Lease, Member, ReadOptions, Revision, Snapshot, Status,
};
use support::{etcdctl, etcdctl_ok, tmpdir, Etcd};

const LEASE_ID: i64 = 0x1234_abcd;

fn put(main: i64, key: &str, value: &str, create: i64, version: i64, lease: i64) -> Item {
    Item::Put {
        revision: Revision { main, sub: 0 },
        kv: KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: main,
            version,
            value: value.into(),
            lease,
        },
    }
}

/// History: 2 put a=1, 3 put a=2, 4 put b=x (lease), 5 delete a, 6 put c=hello,
/// 7 put a=3; compacted at 3 (so a@2 is gone, as etcd's compaction leaves it).
fn sample_items() -> Vec<Item> {
    let mut items = vec![
        Item::AuthEnabled(false),
        Item::AuthRevision(5),
        Item::Role(Role {
            name: b"reader".to_vec(),
            key_permission: vec![Permission {
                perm_type: PermType::Read as i32,
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
            }],
        }),
        Item::User(User {
            name: b"alice".to_vec(),
            password: b"$2a$10$abcdefghijklmnopqrstuuJ3v0ZTrR7mKkF6D4r2fQyN8e9Q0Hh2".to_vec(),
            roles: vec!["reader".into()],
            options: None,
        }),
        Item::ClusterVersion("3.4.0".into()),
        put(3, "a", "2", 2, 2, 0),
        put(4, "b", "x", 4, 1, LEASE_ID),
        Item::Tombstone {
            revision: Revision { main: 5, sub: 0 },
            key: b"a".to_vec(),
        },
        put(6, "c", "hello", 6, 1, 0),
        put(7, "a", "3", 7, 1, 0),
        Item::Lease(Lease {
            id: LEASE_ID,
            ttl: 3600,
            remaining_ttl: 0,
        }),
        Item::Member(Member {
            id: 0xabc,
            peer_urls: vec!["http://127.0.0.1:1".into()],
            is_learner: false,
            name: "old".into(),
            client_urls: vec![],
        }),
        Item::RemovedMember(0xdef),
        Item::ConsistentIndex(42),
        Item::FinishedCompact(3),
        Item::ScheduledCompact(3),
    ];
    items.sort_by_key(Item::file_order);
    items
}

/// Every (bucket, key, value) of a snapshot's bbolt file, as bytes.
fn raw_records(path: &Path) -> Vec<(String, String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let bolt = BoltReader::open(&bytes, bytes.len() as u64 - 32).unwrap();
    let mut bucket = String::new();
    let mut out = Vec::new();
    for event in bolt.walk() {
        match event.unwrap() {
            Event::BucketBegin { name, .. } => bucket = String::from_utf8_lossy(&name).into(),
            Event::Entry { key, value } => out.push((
                bucket.clone(),
                format!("{:?}", String::from_utf8_lossy(&key)),
                format!("{:?}", String::from_utf8_lossy(&value)),
            )),
            Event::BucketEnd => {}
        }
    }
    out
}

fn status_of(path: &Path) -> Status {
    let out = etcdctl_ok(&["snapshot", "status", path.to_str().unwrap(), "-w", "json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

fn get_json(etcd: &Etcd, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get", "-w", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&etcd.ctl(&all)).expect("get JSON")
}

/// (key, value, create, mod, version, lease) of each kv in a get's JSON.
fn kvs(json: &serde_json::Value) -> Vec<(String, String, i64, i64, i64, i64)> {
    let field = |kv: &serde_json::Value, f: &str| kv[f].as_i64().unwrap_or(0);
    json["kvs"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            let text = |f: &str| {
                String::from_utf8(support::base64_decode(kv[f].as_str().unwrap_or(""))).unwrap()
            };
            (
                text("key"),
                text("value"),
                field(kv, "create_revision"),
                field(kv, "mod_revision"),
                field(kv, "version"),
                field(kv, "lease"),
            )
        })
        .collect()
}

#[test]
fn cairn_snapshot_is_restored_by_etcd() {
    let dir = tmpdir("restore");
    let path = dir.path().join("cairn.db");
    let items = sample_items();
    let summary = {
        let mut file = File::create(&path).unwrap();
        write_snapshot(&mut file, &WriteOptions::default(), &items).unwrap()
    };
    assert_eq!(summary.revision, 7);
    assert_eq!(summary.total_key, items.len() as u64);

    // etcdctl snapshot status (bbolt's tx.Check runs first) agrees with us.
    let status = status_of(&path);
    assert_eq!(status.revision, 7);
    assert_eq!(status.total_key, 16);
    assert_eq!(status.total_size, summary.layout.bytes());
    let ours = Snapshot::open_file(&path, &ReadOptions::default())
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(ours, status);

    // Restore (the hash is checked: no --skip-hash-check) and start etcd on it.
    let data = dir.path().join("m1.etcd");
    let peer = support::free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_ok(&[
        "snapshot",
        "restore",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "m1",
        "--initial-cluster",
        &format!("m1={peer_url}"),
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    let etcd = Etcd::start(&data, "m1", peer, &dir.path().join("etcd.log"));

    let now = get_json(&etcd, &["", "--prefix"]);
    assert_eq!(now["header"]["revision"].as_i64(), Some(7));
    assert_eq!(
        kvs(&now),
        vec![
            ("a".into(), "3".into(), 7, 7, 1, 0),
            ("b".into(), "x".into(), 4, 4, 1, LEASE_ID),
            ("c".into(), "hello".into(), 6, 6, 1, 0),
        ]
    );
    // History above the compaction point, the delete, and the compaction itself.
    let at4 = get_json(&etcd, &["a", "--rev=4"]);
    assert_eq!(kvs(&at4), vec![("a".into(), "2".into(), 2, 3, 2, 0)]);
    assert!(kvs(&get_json(&etcd, &["a", "--rev=5"])).is_empty());
    let compacted = etcd.ctl_output(&["get", "a", "--rev=2"]);
    assert!(!compacted.status.success());
    assert!(
        String::from_utf8_lossy(&compacted.stderr).contains("required revision has been compacted"),
        "{compacted:?}"
    );

    // The lease, with its key attached.
    let leases = etcd.ctl(&["lease", "list"]);
    assert!(leases.contains("1234abcd"), "{leases}");
    let ttl = etcd.ctl(&["lease", "timetolive", "1234abcd", "--keys"]);
    assert!(
        ttl.contains("granted with TTL(3600s)") && ttl.contains("attached keys([b])"),
        "{ttl}"
    );

    // Auth records (auth stays disabled, so anyone may read them).
    assert_eq!(etcd.ctl(&["user", "list"]).trim(), "alice");
    let alice = etcd.ctl(&["user", "get", "alice"]);
    assert!(alice.contains("Roles: reader"), "{alice}");
    let reader = etcd.ctl(&["role", "get", "reader"]);
    assert!(reader.contains("[a, b)"), "{reader}");

    // The cluster is the restored one (m1), not the snapshot's old member.
    let members = etcd.ctl(&["member", "list"]);
    assert!(
        members.contains("m1") && !members.contains("old"),
        "{members}"
    );

    // And it takes writes from there: the next revision is 8.
    etcd.ctl(&["put", "d", "after"]);
    assert_eq!(
        get_json(&etcd, &["d"])["header"]["revision"].as_i64(),
        Some(8)
    );
}

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

#[test]
fn etcdctl_restore_refuses_a_flipped_byte_as_we_do() {
    let dir = tmpdir("flip");
    let path = dir.path().join("flipped.db");
    let mut bytes = Vec::new();
    write_snapshot(&mut bytes, &WriteOptions::default(), &sample_items()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let out = etcdctl(&[
        "snapshot",
        "restore",
        path.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected sha256"),
        "{out:?}"
    );
    let err = Snapshot::open_file(&path, &ReadOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("hash mismatch"), "{err}");
}

/// 8000 revisions of 2000 keys (three levels of bbolt pages in bucket `key`)
/// and a few 20 KB values (overflow pages): bbolt's own check (in `snapshot
/// status`) passes, etcdctl's hash equals ours, and a restored etcd serves it.
#[test]
fn large_cairn_snapshot_passes_bbolts_check_and_restores() {
    let dir = tmpdir("large");
    let path = dir.path().join("large.db");
    let revisions = 8000i64;
    let mut items: Vec<Item> = (1..=revisions)
        .map(|i| {
            let main = i + 1;
            let key = format!("key{:05}", i % 2000);
            let version = (i - 1) / 2000 + 1;
            let create = main - (version - 1) * 2000;
            let value = if i % 2500 == 0 {
                vec![b'Z'; 20_000]
            } else {
                format!("value-{i}").into_bytes()
            };
            Item::Put {
                revision: Revision { main, sub: 0 },
                kv: KeyValue {
                    key: key.into_bytes(),
                    create_revision: create,
                    mod_revision: main,
                    version,
                    value,
                    lease: 0,
                },
            }
        })
        .collect();
    items.push(Item::ConsistentIndex(revisions as u64));
    let summary = write_snapshot(
        &mut File::create(&path).unwrap(),
        &WriteOptions::default(),
        &items,
    )
    .unwrap();

    let status = status_of(&path);
    assert_eq!(status.revision, revisions + 1);
    assert_eq!(status.total_key, revisions as u64 + 1);
    assert_eq!(status.total_size, summary.layout.bytes());
    let snapshot = Snapshot::open_file(&path, &ReadOptions::default()).unwrap();
    assert_eq!(snapshot.status().unwrap(), status);

    let data = dir.path().join("m1.etcd");
    let peer = support::free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_ok(&[
        "snapshot",
        "restore",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "m1",
        "--initial-cluster",
        &format!("m1={peer_url}"),
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    let etcd = Etcd::start(&data, "m1", peer, &dir.path().join("etcd.log"));
    // etcdctl 3.4 has no --count-only: a limit-1 range still reports the count.
    let count = get_json(&etcd, &["key", "--prefix", "--limit=1"]);
    assert_eq!(count["count"].as_i64(), Some(2000));
    assert_eq!(count["header"]["revision"].as_i64(), Some(revisions + 1));
    // key00500's 2nd version (i = 2500) is the 20 KB value, at revision 2501.
    let big = get_json(&etcd, &["key00500", "--rev=2501"]);
    let (_, value, create, modified, version, _) = kvs(&big).remove(0);
    assert_eq!(
        (value.len(), create, modified, version),
        (20_000, 501, 2501, 2)
    );
    let last = get_json(&etcd, &["key01999"]);
    assert_eq!(kvs(&last)[0].1, "value-7999");
}

/// Auth enabled with a root user, and an alarm: the restored etcd refuses
/// anonymous requests, logs root in with the password whose bcrypt hash we
/// wrote, and reports the alarm.
#[test]
fn auth_enabled_and_alarm_survive_restore() {
    use cairn_proto::etcdserverpb::{AlarmMember, AlarmType};
    let dir = tmpdir("auth");
    let path = dir.path().join("auth.db");
    let hash = bcrypt::hash_with_result("rootpw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoA);
    let mut items = vec![
        Item::Alarm(AlarmMember {
            member_id: 0xabc,
            alarm: AlarmType::Nospace as i32,
        }),
        Item::AuthEnabled(true),
        Item::AuthRevision(3),
        Item::User(User {
            name: b"root".to_vec(),
            password: hash.into_bytes(),
            roles: vec!["root".into()],
            options: None,
        }),
        put(2, "k", "v", 2, 1, 0),
    ];
    items.sort_by_key(Item::file_order);
    write_snapshot(
        &mut File::create(&path).unwrap(),
        &WriteOptions::default(),
        &items,
    )
    .unwrap();

    let data = dir.path().join("m1.etcd");
    let peer = support::free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_ok(&[
        "snapshot",
        "restore",
        path.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "m1",
        "--initial-cluster",
        &format!("m1={peer_url}"),
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    let etcd = Etcd::start(&data, "m1", peer, &dir.path().join("etcd.log"));
    let anonymous = etcd.ctl_output(&["get", "k"]);
    assert!(!anonymous.status.success(), "auth is on: {anonymous:?}");
    let wrong = etcd.ctl_output(&["--user", "root:nope", "get", "k"]);
    assert!(!wrong.status.success(), "{wrong:?}");
    assert_eq!(
        etcd.ctl(&["--user", "root:rootpw", "user", "list"]).trim(),
        "root"
    );
    let got = etcd.ctl(&["--user", "root:rootpw", "get", "k", "--print-value-only"]);
    assert_eq!(got.trim(), "v");
    let alarms = etcd.ctl(&["--user", "root:rootpw", "alarm", "list"]);
    assert!(alarms.contains("memberID:2748 alarm:NOSPACE"), "{alarms}");
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
