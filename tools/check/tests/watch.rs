//! The watch checker on hand-made histories: a correct one, then one fault
//! at a time.

use cairn_check::history::{
    Call, Done, Entry, Event, EventKind, Micro, Op, Outcome, WatchResponse, WatchStart,
};
use cairn_check::watch::{check, Report};

fn op(id: u64, call: Call, outcome: Outcome) -> Entry {
    let (invoke_us, complete_us) = (id * 10, id * 10 + 5);
    Entry::Op(Op {
        id,
        client: 1,
        invoke_us,
        complete_us,
        call,
        outcome,
    })
}

fn ok(revision: i64) -> Outcome {
    Outcome::Ok(Done {
        revision,
        succeeded: Some(true),
        ..Done::default()
    })
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        error: "request timed out".into(),
    }
}

fn put(id: u64, key: &str, value: &str, outcome: Outcome) -> Entry {
    op(
        id,
        Call::Put {
            key: key.into(),
            value: value.into(),
        },
        outcome,
    )
}

fn append(id: u64, keys: &[&str], outcome: Outcome) -> Entry {
    let ops = keys
        .iter()
        .map(|k| Micro::Append {
            key: k.to_string(),
            element: id,
        })
        .collect();
    op(id, Call::Txn { ops }, outcome)
}

fn start(watcher: u32, key: &str, range_end: &str, start_revision: i64) -> Entry {
    let (key, range_end) = (key.into(), range_end.into());
    Entry::WatchStart(WatchStart {
        watcher,
        at_us: 0,
        key,
        range_end,
        start_revision,
    })
}

fn ev(key: &str, value: &str, mod_revision: i64) -> Event {
    let (key, value) = (key.into(), value.into());
    Event {
        kind: EventKind::Put,
        key,
        value,
        mod_revision,
    }
}

fn resp(watcher: u32, header_revision: i64, events: Vec<Event>) -> Entry {
    Entry::WatchResponse(WatchResponse {
        watcher,
        at_us: 0,
        header_revision,
        events,
        progress: false,
        canceled: false,
        compact_revision: 0,
    })
}

fn progress(watcher: u32, header_revision: i64) -> Entry {
    let mut r = resp(watcher, header_revision, vec![]);
    if let Entry::WatchResponse(r) = &mut r {
        r.progress = true;
    }
    r
}

/// Writes at revisions 2..=5 (a txn puts a and c at 4); watcher 1 on
/// [a, d) from 2, watcher 2 on a alone from "now" (1), both correct.
fn base() -> Vec<Entry> {
    vec![
        start(1, "a", "d", 2),
        start(2, "a", "", 0),
        resp(2, 1, vec![]),
        put(1, "a", "v1", ok(2)),
        resp(1, 2, vec![ev("a", "v1", 2)]),
        resp(2, 2, vec![ev("a", "v1", 2)]),
        put(2, "b", "v2", ok(3)),
        resp(1, 3, vec![ev("b", "v2", 3)]),
        append(3, &["a", "c"], ok(4)),
        resp(1, 4, vec![ev("a", "3", 4), ev("c", "3", 4)]),
        resp(2, 4, vec![ev("a", "3", 4)]),
        put(4, "a", "v4", ok(5)),
        put(5, "e", "v5", ok(6)),
        resp(1, 5, vec![ev("a", "v4", 5)]),
        resp(2, 6, vec![ev("a", "v4", 5)]),
        progress(1, 6),
        progress(2, 6),
    ]
}

fn kinds(entries: &[Entry]) -> (Report, Vec<String>) {
    let report = check(entries);
    let kinds = report.kinds().iter().map(|k| k.to_string()).collect();
    (report, kinds)
}

/// Exactly these kinds, at these revisions.
fn assert_only(entries: &[Entry], want: &[(&str, i64)]) {
    let report = check(entries);
    let got: Vec<(&str, i64)> = report
        .violations
        .iter()
        .map(|v| (v.kind.as_str(), v.revision))
        .collect();
    assert_eq!(got, want, "{:#?}", report.violations);
}

#[test]
fn a_correct_stream_passes() {
    let (report, kinds) = kinds(&base());
    assert!(report.valid(), "{kinds:?}: {:#?}", report.violations);
    assert_eq!(
        (report.watchers, report.responses, report.events),
        (2, 10, 8)
    );
}

#[test]
fn a_gap_is_missed() {
    let mut h = base();
    h.remove(7); // watcher 1's revision 3
    assert_only(&h, &[("missed", 3)]);
    // Half of revision 4 (the txn's c) missing.
    let mut h = base();
    h[9] = resp(1, 4, vec![ev("a", "3", 4)]);
    assert_only(&h, &[("missed", 4)]);
}

#[test]
fn a_duplicate_is_detected() {
    let mut h = base();
    h.insert(8, resp(1, 3, vec![ev("b", "v2", 3)]));
    assert_only(&h, &[("duplicate", 3)]);
}

#[test]
fn a_split_revision_is_detected() {
    let mut h = base();
    h[9] = resp(1, 4, vec![ev("a", "3", 4)]);
    h.insert(10, resp(1, 4, vec![ev("c", "3", 4)]));
    assert_only(&h, &[("split-revision", 4)]);
}

#[test]
fn out_of_order_is_detected() {
    let mut h = base();
    h.swap(7, 9); // revision 4 before revision 3
    assert_only(&h, &[("out-of-order", 3)]);
    let mut h = base();
    h[9] = resp(
        1,
        4,
        vec![ev("c", "3", 4), ev("b", "v2", 3), ev("a", "3", 4)],
    );
    h.remove(7);
    assert_only(&h, &[("out-of-order", 3)]);
}

#[test]
fn a_wrong_value_or_key_is_detected() {
    let mut h = base();
    h[4] = resp(1, 2, vec![ev("a", "v9", 2)]);
    assert_only(&h, &[("wrong-value", 2), ("cross-watcher", 2)]);
    let mut h = base();
    h[7] = resp(1, 3, vec![ev("c", "v2", 3)]);
    assert_only(&h, &[("wrong-key", 3), ("missed", 3)]);
    // A txn's value is not rebuilt, but watchers must agree on it.
    let mut h = base();
    h[10] = resp(2, 4, vec![ev("a", "other", 4)]);
    assert_only(&h, &[("cross-watcher", 4)]);
}

#[test]
fn an_event_outside_the_range_is_detected() {
    let mut h = base();
    h[10] = resp(2, 4, vec![ev("a", "3", 4), ev("c", "3", 4)]);
    assert_only(&h, &[("out-of-range", 4)]);
    let mut h = base();
    h.push(resp(1, 6, vec![ev("e", "v5", 6)]));
    assert_only(&h, &[("out-of-range", 6), ("progress-lie", 6)]);
}

#[test]
fn an_event_for_a_write_that_never_happened_is_detected() {
    let mut h = base();
    h.push(resp(1, 7, vec![ev("b", "v7", 7)]));
    assert_only(&h, &[("phantom", 7)]);
    let mut h = base();
    h.push(put(
        6,
        "b",
        "v7",
        Outcome::Failed {
            error: "no leader".into(),
        },
    ));
    h.push(resp(1, 7, vec![ev("b", "v7", 7)]));
    let report = check(&h);
    assert!(report.violations[0]
        .explanation
        .contains("op 6 wrote that value and failed"));
    h.pop();
    h.push(resp(
        1,
        7,
        vec![Event {
            kind: EventKind::Delete,
            ..ev("b", "", 7)
        }],
    ));
    assert_only(&h, &[("phantom", 7)]);
    // An Ok put's value at another revision.
    let mut h = base();
    h.push(resp(1, 7, vec![ev("b", "v2", 7)]));
    let report = check(&h);
    assert!(report.violations[0]
        .explanation
        .contains("op 2 wrote that value at revision 3"));
}

#[test]
fn before_start_and_header_behind_are_detected() {
    let mut h = base();
    h[5] = resp(2, 1, vec![ev("a", "v1", 2)]);
    assert_only(&h, &[("header-behind", 2)]);
    let mut h = base();
    h[0] = start(1, "a", "d", 3);
    assert_only(&h, &[("before-start", 2)]);
}

#[test]
fn a_progress_notification_lie_is_detected() {
    let mut h = base();
    h.swap(13, 15); // progress at 6, then revision 5
    assert_only(&h, &[("progress-lie", 5)]);
}

#[test]
fn unknown_writes_that_show_up_are_fine() {
    let mut h = base();
    h.push(put(6, "b", "v7", unknown()));
    h.push(append(7, &["c"], unknown()));
    h.push(resp(1, 8, vec![ev("b", "v7", 7)]));
    h.push(resp(1, 8, vec![ev("c", "7", 8)]));
    let (report, kinds) = kinds(&h);
    assert!(report.valid(), "{kinds:?}: {:#?}", report.violations);
    // A watcher covering revision 7 that does not have it missed it.
    h.push(start(3, "b", "", 7));
    h.push(resp(3, 9, vec![]));
    h.push(progress(3, 9));
    assert_only(&h, &[("missed", 7)]);
    // The same unknown put at two revisions happened twice.
    h.push(resp(3, 9, vec![ev("b", "v7", 9)]));
    assert_only(
        &h,
        &[("progress-lie", 9), ("duplicate-write", 9), ("missed", 7)],
    );
}

#[test]
fn responses_after_cancel_and_without_start_are_reported() {
    let mut h = base();
    if let Entry::WatchResponse(r) = &mut h[15] {
        r.canceled = true;
    }
    h.push(resp(1, 7, vec![]));
    h.push(resp(9, 7, vec![]));
    h.push(start(2, "x", "", 0));
    assert_only(
        &h,
        &[("malformed", 0), ("after-cancel", 7), ("malformed", 0)],
    );
}

#[test]
fn a_lease_keys_delete_is_explained_and_a_plain_keys_is_a_phantom() {
    let lease_put = |id, key: &str, outcome| {
        let call = Call::LeasePut {
            key: key.into(),
            value: format!("v{id}"),
            lease: 7,
        };
        op(id, call, outcome)
    };
    let del = |key: &str, mod_revision| Event {
        kind: EventKind::Delete,
        key: key.into(),
        value: String::new(),
        mod_revision,
    };
    let mut entries = base();
    entries.extend([
        lease_put(6, "b/l0", ok(7)),
        lease_put(7, "b/l1", unknown()),
        resp(1, 7, vec![ev("b/l0", "v6", 7)]),
        // The lease's revoke or expiry: no op names revision 9.
        resp(1, 9, vec![del("b/l0", 9), del("b/l1", 9)]),
    ]);
    assert_only(&entries, &[]);
    // A key no LeasePut attached cannot be deleted.
    entries.push(resp(1, 10, vec![del("b", 10)]));
    assert_only(&entries, &[("phantom", 10)]);
}
