//! A snapshot written by this crate, given to real etcd 3.4 tools (Debian's
//! `etcd-server` and `etcd-client`; absent tools fail these tests): it passes
//! `etcdctl snapshot status` (bbolt's own consistency check included) with
//! the expected numbers, `etcdctl snapshot restore` takes it, and the etcd
//! started on it serves the same keys, revisions, history, compaction point,
//! lease, auth records and alarm.

mod support;

use cairn_proto::authpb::{permission::Type as PermType, Permission, Role, User};
use cairn_proto::mvccpb::KeyValue;
use cairn_snapshot::bolt::write::WriteOptions;
use cairn_snapshot::{write_snapshot, Item, Lease, Member, ReadOptions, Revision, Snapshot};
use support::{etcdctl, get_json, kvs, put, restore_and_start, status_of, tmpdir, write_file};

const LEASE_ID: i64 = 0x1234_abcd;

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

#[test]
fn cairn_snapshot_is_restored_by_etcd() {
    let dir = tmpdir("restore");
    let path = dir.path().join("cairn.db");
    let items = sample_items();
    let summary = write_file(&path, &items);
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

    // Restore (the hash is checked) and start etcd on it.
    let etcd = restore_and_start(&path, dir.path());

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
    let summary = write_file(&path, &items);

    let status = status_of(&path);
    assert_eq!(status.revision, revisions + 1);
    assert_eq!(status.total_key, revisions as u64 + 1);
    assert_eq!(status.total_size, summary.layout.bytes());
    let snapshot = Snapshot::open_file(&path, &ReadOptions::default()).unwrap();
    assert_eq!(snapshot.status().unwrap(), status);

    let etcd = restore_and_start(&path, dir.path());
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
    write_file(&path, &items);

    let etcd = restore_and_start(&path, dir.path());
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
