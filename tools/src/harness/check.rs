//! Runs every checker of `cairn_check` over a recorded history, counts
//! acknowledged writes the final reads do not show (lost), and writes the
//! report (`report.json`) and, for each violation, a timeline picture.

use cairn_check::history::{self, Call, Entry, Micro, Op, Outcome};
use cairn_check::{append, linear, revisions, timeline, watch};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// The client id of the final reads (after the faults, before the stop).
pub const FINAL_CLIENT: u32 = 1_000_000;

/// Every checker's findings.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub ops: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub faults: BTreeMap<String, u64>,
    pub linear: linear::Report,
    pub revisions: revisions::Report,
    pub append: append::Report,
    pub watch: watch::Report,
    /// Acknowledged writes the final reads do not show.
    pub lost: Vec<String>,
}

impl Verdict {
    /// Violations found by all checkers (timed-out searches not counted).
    pub fn violations(&self) -> usize {
        self.linear.violations().count()
            + self.revisions.violations.len()
            + self.revisions.omitted
            + self.append.anomalies.len()
            + self.append.suppressed
            + self.watch.violations.len()
            + self.watch.suppressed
    }

    /// Keys whose linearizability search ran out of its limits.
    pub fn timed_out(&self) -> Vec<String> {
        self.linear.timed_out().map(String::from).collect()
    }

    /// One line per finding, for people.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.linear.violations() {
            if let linear::Verdict::Violation {
                key,
                window,
                explanation,
            } = v
            {
                out.push(format!(
                    "linearizability, key {key}: {explanation} (ops {window:?})"
                ));
            }
        }
        for v in &self.revisions.violations {
            out.push(format!(
                "revisions, {:?}: {} (ops {:?})",
                v.rule, v.message, v.ops
            ));
        }
        for a in &self.append.anomalies {
            out.push(format!(
                "list-append, {}: {} (ops {:?})",
                a.kind, a.explanation, a.ops
            ));
        }
        for v in &self.watch.violations {
            out.push(format!(
                "watch {}, {} at revision {}: {}",
                v.watcher, v.kind, v.revision, v.explanation
            ));
        }
        for l in &self.lost {
            out.push(format!("lost: {l}"));
        }
        out
    }
}

/// Checks `entries`.
pub fn check(entries: &[Entry], limits: &linear::Limits) -> Verdict {
    let ops = history::ops(entries);
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
    let mut faults = BTreeMap::new();
    for e in entries {
        if let Entry::Fault(f) = e {
            *faults.entry(f.fault.clone()).or_insert(0) += 1;
        }
    }
    Verdict {
        ops: ops.len(),
        ok: count(|o| matches!(o, Outcome::Ok(_))),
        failed: count(|o| matches!(o, Outcome::Failed { .. })),
        unknown: count(|o| matches!(o, Outcome::Unknown { .. })),
        faults,
        linear: linear::check(&ops, limits),
        revisions: revisions::check(&ops),
        append: append::check(&ops),
        watch: watch::check(entries),
        lost: lost_writes(&ops),
    }
}

/// Acknowledged writes that the final reads (client [`FINAL_CLIENT`]) do not
/// show: a register write with a revision above the key's final
/// mod_revision, or at it with another value; a list element appended by an
/// acknowledged txn that is not in the key's final list.
pub fn lost_writes(ops: &[&Op]) -> Vec<String> {
    let mut final_registers: HashMap<&str, (Option<&str>, i64)> = HashMap::new();
    let mut final_lists: HashMap<&str, HashSet<u64>> = HashMap::new();
    for op in ops.iter().filter(|o| o.client == FINAL_CLIENT) {
        let Outcome::Ok(done) = &op.outcome else {
            continue;
        };
        match &op.call {
            Call::Get { key, .. } => {
                final_registers.insert(key, (done.value.as_deref(), done.mod_revision));
            }
            Call::Txn { ops: micros } => {
                for (m, list) in micros.iter().zip(&done.reads) {
                    if let Micro::R { key } = m {
                        final_lists.insert(key, list.iter().copied().collect());
                    }
                }
            }
            _ => {}
        }
    }
    let mut lost = Vec::new();
    for op in ops {
        let Outcome::Ok(done) = &op.outcome else {
            continue;
        };
        match &op.call {
            Call::Put { key, value } | Call::Cas { key, value, .. } => {
                if matches!(op.call, Call::Cas { .. }) && done.succeeded != Some(true) {
                    continue;
                }
                let Some((final_value, final_rev)) = final_registers.get(key.as_str()) else {
                    continue;
                };
                let gone = done.revision > *final_rev
                    || (done.revision == *final_rev && *final_value != Some(value.as_str()));
                if gone {
                    lost.push(format!(
                        "op {}: {key}={value} acknowledged at revision {}, final read has {:?} at {}",
                        op.id, done.revision, final_value, final_rev
                    ));
                }
            }
            Call::Txn { ops: micros } if done.succeeded == Some(true) => {
                for m in micros {
                    if let Micro::Append { key, element } = m {
                        if let Some(list) = final_lists.get(key.as_str()) {
                            if !list.contains(element) {
                                lost.push(format!(
                                    "op {}: element {element} appended to {key} at revision {}, not in the final list",
                                    op.id, done.revision
                                ));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    lost
}

/// Writes `report.json` and a timeline SVG per violation window into `dir`;
/// returns the pictures' paths.
pub fn write_report(
    dir: &Path,
    entries: &[Entry],
    verdict: &Verdict,
) -> std::io::Result<Vec<String>> {
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(verdict).map_err(std::io::Error::other)?,
    )?;
    let mut windows: Vec<(String, Vec<u64>)> = Vec::new();
    for v in verdict.linear.violations() {
        if let linear::Verdict::Violation { key, window, .. } = v {
            windows.push((format!("linear-{key}"), window.clone()));
        }
    }
    for (i, v) in verdict.revisions.violations.iter().enumerate().take(5) {
        windows.push((format!("revisions-{i}"), v.ops.clone()));
    }
    for (i, a) in verdict.append.anomalies.iter().enumerate().take(5) {
        windows.push((format!("append-{i}-{}", a.kind), a.ops.clone()));
    }
    let mut pictures = Vec::new();
    for (name, window) in windows {
        let (from, to) = timeline::window_bounds(entries, &window);
        let path = dir.join(format!("timeline-{name}.svg"));
        std::fs::write(&path, timeline::svg(entries, &window, from, to))?;
        pictures.push(path.display().to_string());
    }
    Ok(pictures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_check::history::Done;

    fn op(id: u64, client: u32, call: Call, done: Done) -> Op {
        Op {
            id,
            client,
            invoke_us: id * 10,
            complete_us: id * 10 + 5,
            call,
            outcome: Outcome::Ok(done),
        }
    }

    #[test]
    fn an_acknowledged_put_missing_from_the_final_read_is_lost() {
        let put = |id, value: &str, revision| {
            op(
                id,
                1,
                Call::Put {
                    key: "r0".into(),
                    value: value.into(),
                },
                Done {
                    revision,
                    ..Default::default()
                },
            )
        };
        let get = |value: &str, mod_revision| {
            op(
                9,
                FINAL_CLIENT,
                Call::Get {
                    key: "r0".into(),
                    serializable: false,
                },
                Done {
                    revision: 10,
                    value: Some(value.into()),
                    mod_revision,
                    ..Default::default()
                },
            )
        };
        let (a, b) = (put(1, "a", 2), put(2, "b", 3));
        assert!(lost_writes(&[&a, &b, &get("b", 3)]).is_empty());
        let lost = lost_writes(&[&a, &b, &get("a", 2)]);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with("op 2:"), "{lost:?}");
    }

    #[test]
    fn an_acknowledged_append_missing_from_the_final_list_is_lost() {
        let txn = |id, client, micros: Vec<Micro>, reads: Vec<Vec<u64>>| {
            op(
                id,
                client,
                Call::Txn { ops: micros },
                Done {
                    revision: id as i64,
                    succeeded: Some(true),
                    reads,
                    ..Default::default()
                },
            )
        };
        let append = |e| Micro::Append {
            key: "a0".into(),
            element: e,
        };
        let read = || Micro::R { key: "a0".into() };
        let (a, b) = (
            txn(1, 1, vec![append(1)], vec![]),
            txn(2, 1, vec![append(2)], vec![]),
        );
        let fine = txn(3, FINAL_CLIENT, vec![read()], vec![vec![1, 2]]);
        assert!(lost_writes(&[&a, &b, &fine]).is_empty());
        let short = txn(3, FINAL_CLIENT, vec![read()], vec![vec![1]]);
        assert_eq!(lost_writes(&[&a, &b, &short]).len(), 1);
    }
}
