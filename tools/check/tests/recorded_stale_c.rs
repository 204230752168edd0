//! A history recorded by `cairn-harness` against a cairn build with the
//! sequencer defect of issue 11 put back (C published after the lock was
//! released, widened by the `sequencer::publish` failpoint: `20%sleep(2)`),
//! 6 register clients, 3 list-append clients, no faults. The checkers must
//! find what that defect does: a linearizable read that misses an
//! acknowledged write, with a header revision below it.
//!
//! How it was made: `cairn-harness run --cairn <buggy build> --faults none
//! --no-loop-disk --failpoint 'sequencer::publish=20%sleep(2)' --seed 2
//! --seconds 15`, keeping the ops invoked in the first 2 s (the member then
//! deadlocked: a cross-shard txn waited on a C that had gone back).

use cairn_check::{history, linear, revisions};

fn ops() -> Vec<history::Entry> {
    let text = include_str!("fixtures/stale-c.jsonl");
    history::read(text.as_bytes()).expect("the fixture parses")
}

#[test]
fn the_stale_read_is_not_linearizable() {
    let entries = ops();
    let ops = history::ops(&entries);
    let report = linear::check(&ops, &linear::Limits::default());
    let violations: Vec<_> = report.violations().collect();
    assert!(!violations.is_empty(), "{report:?}");
    let linear::Verdict::Violation { key, window, .. } = violations[0] else {
        unreachable!()
    };
    assert_eq!(key, "r0");
    assert!(window.len() <= 4, "a small window: {window:?}");
    assert_eq!(report.timed_out().count(), 0);
}

#[test]
fn the_stale_header_breaks_the_global_revision_order() {
    let entries = ops();
    let report = revisions::check(&history::ops(&entries));
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.rule == revisions::Rule::StaleHeader && v.ops.contains(&472)),
        "{report:?}"
    );
}
