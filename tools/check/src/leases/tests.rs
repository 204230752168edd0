use super::*;
use crate::history::{Done, Event};

const L: i64 = 0x1d;

struct H {
    entries: Vec<Entry>,
    next: u64,
}

impl H {
    /// A history with a watcher on `l/` from revision 1.
    fn new() -> Self {
        let start = WatchStart {
            watcher: 0,
            at_us: 0,
            key: "l/".into(),
            range_end: "l0".into(),
            start_revision: 1,
        };
        H {
            entries: vec![Entry::WatchStart(start)],
            next: 1,
        }
    }

    fn op(&mut self, t: (u64, u64), call: Call, outcome: Outcome) -> u64 {
        let id = self.next;
        self.next += 1;
        self.entries.push(Entry::Op(Op {
            id,
            client: 7,
            invoke_us: t.0,
            complete_us: t.1,
            call,
            outcome,
        }));
        id
    }

    fn ok(&mut self, t: (u64, u64), call: Call, d: Done) -> u64 {
        self.op(t, call, Outcome::Ok(d))
    }

    fn grant(&mut self, at_s: u64, ttl: i64) -> u64 {
        let d = Done {
            revision: 1,
            lease: L,
            ttl,
            ..Done::default()
        };
        self.ok((s(at_s), s(at_s) + 1000), Call::LeaseGrant { ttl }, d)
    }

    fn put(&mut self, at_us: u64, i: u32, revision: i64) -> u64 {
        let call = Call::LeasePut {
            key: format!("l/{L:x}/{i}"),
            value: format!("v{i}"),
            lease: L,
        };
        let d = Done {
            revision,
            ..Done::default()
        };
        self.ok((at_us, at_us + 1000), call, d)
    }

    fn keepalive(&mut self, at_us: u64, ttl: i64) -> u64 {
        let d = Done {
            revision: 3,
            ttl,
            ..Done::default()
        };
        self.ok((at_us, at_us + 1000), Call::LeaseKeepAlive { lease: L }, d)
    }

    /// Watch responses: the puts of keys 0 and 1 at 2 and 3, and the
    /// given deletes (key, revision) arriving at `at_us`.
    fn watch(&mut self, deletes: &[(u32, i64, u64)]) {
        let ev = |kind, i: u32, rev| Event {
            kind,
            key: format!("l/{L:x}/{i}"),
            value: if kind == EventKind::Put {
                format!("v{i}")
            } else {
                String::new()
            },
            mod_revision: rev,
        };
        let resp = |at_us, events: Vec<Event>| {
            Entry::WatchResponse(WatchResponse {
                watcher: 0,
                at_us,
                header_revision: events.last().map_or(0, |e| e.mod_revision),
                events,
                progress: false,
                canceled: false,
                compact_revision: 0,
            })
        };
        self.entries.push(resp(
            s(1) + 500,
            vec![ev(EventKind::Put, 0, 2), ev(EventKind::Put, 1, 3)],
        ));
        for &(i, rev, at) in deletes {
            self.entries
                .push(resp(at, vec![ev(EventKind::Delete, i, rev)]));
        }
    }
}

fn s(seconds: u64) -> u64 {
    seconds * 1_000_000
}

/// Grant at 0 s (TTL 5), keys 0 and 1 put at 2 and 3.
fn granted() -> H {
    let mut h = H::new();
    h.grant(0, 5);
    h.put(s(1), 0, 2);
    h.put(s(1) + 2000, 1, 3);
    h
}

#[test]
fn an_expiry_deleting_every_key_at_one_revision_after_the_ttl_is_valid() {
    let mut h = granted();
    h.keepalive(s(2), 5);
    h.keepalive(s(4), 5);
    // The last promise: 4 s + 5 s; the deletion arrives at 9.6 s.
    h.watch(&[(0, 9, s(9) + 600_000), (1, 9, s(9) + 600_000)]);
    let r = check(&h.entries);
    assert!(r.valid(), "{r:#?}");
    assert_eq!((r.leases, r.expired, r.revoked, r.renewals), (1, 1, 0, 2));
}

#[test]
fn keys_deleted_at_two_revisions_are_a_split_deletion() {
    let mut h = granted();
    h.watch(&[(0, 9, s(7)), (1, 10, s(7) + 100)]);
    let r = check(&h.entries);
    assert_eq!(r.rules(), ["split-deletion"], "{r:#?}");
    assert_eq!(r.violations[0].events.len(), 2);
    assert_eq!(r.violations[0].ops, [1, 2, 3]);
}

#[test]
fn a_key_a_watcher_should_have_seen_deleted_is_not_deleted() {
    let mut h = granted();
    // Only key 0's delete at 9, and the stream went on to 12.
    h.watch(&[(0, 9, s(7))]);
    h.entries.push(Entry::WatchResponse(WatchResponse {
        watcher: 0,
        at_us: s(8),
        header_revision: 12,
        events: vec![],
        progress: true,
        canceled: false,
        compact_revision: 0,
    }));
    let r = check(&h.entries);
    assert_eq!(r.rules(), ["not-deleted"], "{r:#?}");
    assert!(r.violations[0].message.contains("l/1d/1"), "{r:#?}");
}

#[test]
fn a_deletion_before_a_keepalives_promise_ran_out_is_an_early_expiry() {
    let mut h = granted();
    let k = h.keepalive(s(3), 5);
    // Promised until 8 s; seen deleted at 7 s.
    h.watch(&[(0, 9, s(7)), (1, 9, s(7))]);
    let r = check(&h.entries);
    assert_eq!(r.rules(), ["early-expiry"], "{r:#?}");
    assert_eq!(r.violations[0].ops.last(), Some(&k));
    assert!(
        r.violations[0].message.contains("1000.000 ms early"),
        "{r:#?}"
    );
}

#[test]
fn a_deletion_before_the_grants_promise_ran_out_is_an_early_expiry() {
    let mut h = granted();
    h.watch(&[(0, 9, s(4)), (1, 9, s(4))]);
    assert_eq!(check(&h.entries).rules(), ["early-expiry"]);
}

#[test]
fn a_revoke_invoked_before_the_deletion_explains_it() {
    let mut h = granted();
    h.keepalive(s(3), 5);
    let revoke = Call::LeaseRevoke { lease: L };
    // Unknown outcome: it may still have happened.
    let error = "no answer".to_string();
    h.op((s(4), s(9)), revoke, Outcome::Unknown { error });
    h.watch(&[(0, 9, s(4) + 300_000), (1, 9, s(4) + 300_000)]);
    let r = check(&h.entries);
    assert!(r.valid(), "{r:#?}");
    assert_eq!((r.revoked, r.expired), (1, 0));
}

#[test]
fn a_revoke_invoked_after_the_deletion_does_not_explain_it() {
    let mut h = granted();
    h.keepalive(s(3), 5);
    h.ok(
        (s(5), s(5) + 10),
        Call::LeaseRevoke { lease: L },
        Done::default(),
    );
    h.watch(&[(0, 9, s(4)), (1, 9, s(4))]);
    assert_eq!(check(&h.entries).rules(), ["early-expiry"]);
}

#[test]
fn a_put_acknowledged_after_the_deletion_and_a_renewal_of_a_dead_lease_are_violations() {
    let mut h = granted();
    h.watch(&[(0, 9, s(6)), (1, 9, s(6))]);
    h.put(s(7), 2, 11);
    h.keepalive(s(7), 5);
    let r = check(&h.entries);
    assert_eq!(
        r.rules(),
        ["put-after-deletion", "renewed-after-deletion"],
        "{r:#?}"
    );
}

#[test]
fn an_acknowledged_revoke_deleted_its_keys_by_its_revision() {
    let revoked = |deleted_at: &[(u32, i64, u64)], h: i64| {
        let mut h_ = granted();
        let d = Done {
            revision: h,
            ..Done::default()
        };
        h_.ok((s(2), s(2) + 10), Call::LeaseRevoke { lease: L }, d);
        h_.watch(deleted_at);
        h_.entries.push(Entry::WatchResponse(WatchResponse {
            watcher: 0,
            at_us: s(3),
            header_revision: 12,
            events: vec![],
            progress: true,
            canceled: false,
            compact_revision: 0,
        }));
        check(&h_.entries)
    };
    let fine = revoked(&[(0, 9, s(2) + 5), (1, 9, s(2) + 5)], 9);
    assert!(fine.valid(), "{fine:#?}");
    let late = revoked(&[(0, 11, s(2) + 50), (1, 11, s(2) + 50)], 9);
    assert_eq!(late.rules(), ["revoked-not-deleted"], "{late:#?}");
    let never = revoked(&[], 9);
    assert_eq!(never.rules(), ["revoked-not-deleted"], "{never:#?}");
    assert_eq!(never.violations[0].events.len(), 2, "{never:#?}");
}

#[test]
fn a_lease_whose_keys_were_never_deleted_is_counted_not_a_violation() {
    let mut h = granted();
    h.watch(&[]);
    let r = check(&h.entries);
    assert!(r.valid(), "{r:#?}");
    assert_eq!(r.never_deleted, 1);
}

#[test]
fn a_keepalive_answering_ttl_zero_promises_nothing() {
    let mut h = granted();
    h.keepalive(s(5) + 100_000, 0);
    h.watch(&[(0, 9, s(5) + 50_000), (1, 9, s(5) + 50_000)]);
    let r = check(&h.entries);
    assert!(r.valid(), "{r:#?}");
    assert_eq!(r.renewals, 0);
}
