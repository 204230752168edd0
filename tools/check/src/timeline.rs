//! An SVG picture of part of a history, for reports.
//!
//! One horizontal lane per client that has an op in the time range (labelled
//! `client N`); each op a bar from invocation to completion, labelled
//! compactly (`put r1=c3-17 @42`, `get r1 → c3-17 @42`, `cas r1 @42→c5-2 ✓@45`;
//! `?` unknown outcome, `✗` failed). Ops with an unknown outcome run to the
//! right edge, dashed and hatched (they may take effect any time later);
//! failed ones are grey; ops of the `window` (e.g. a checker's failing window)
//! are red. Faults are shaded vertical bands labelled at the top; a time axis
//! in milliseconds (since the run started) runs along the top. Each bar has a
//! `<title>` tooltip with the op's id, times and error. The SVG is written by
//! hand, XML-escaped; labels are clipped to their bars.

use crate::history::{Call, Entry, Expect, Micro, Op, Outcome};
use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

const LEFT: f64 = 80.0;
const PLOT_W: f64 = 1200.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 40.0;
const LANE_H: f64 = 24.0;
const BAR_H: f64 = 18.0;

/// A time range around the ops of `window`, with a margin of a tenth of its
/// span (at least 0.5 ms) each side. An empty window (or one naming no op)
/// gives the whole history's range.
pub fn window_bounds(entries: &[Entry], window: &[u64]) -> (u64, u64) {
    let wanted: HashSet<u64> = window.iter().copied().collect();
    let span = |all: bool| {
        let ops = entries.iter().filter_map(|e| match e {
            Entry::Op(op) if all || wanted.contains(&op.id) => Some(op),
            _ => None,
        });
        ops.fold(None, |acc: Option<(u64, u64)>, op| {
            let (a, b) = (op.invoke_us, op.complete_us.max(op.invoke_us));
            Some(acc.map_or((a, b), |(x, y)| (x.min(a), y.max(b))))
        })
    };
    let Some((lo, hi)) = span(false).or_else(|| span(true)) else {
        return (0, 1);
    };
    let margin = ((hi - lo) / 10).max(500);
    (lo.saturating_sub(margin), hi.saturating_add(margin))
}

/// The history between `from_us` and `to_us` as an SVG document, the ops
/// whose ids are in `window` highlighted.
pub fn svg(entries: &[Entry], window: &[u64], from_us: u64, to_us: u64) -> String {
    let to_us = to_us.max(from_us.saturating_add(1));
    let highlighted: HashSet<u64> = window.iter().copied().collect();
    let x = |t: u64| {
        let t = t.clamp(from_us, to_us);
        LEFT + (t - from_us) as f64 * PLOT_W / (to_us - from_us) as f64
    };
    let shown: Vec<&Op> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Op(op)
                if op.invoke_us <= to_us && (unknown(op) || op.complete_us >= from_us) =>
            {
                Some(op)
            }
            _ => None,
        })
        .collect();
    let clients: Vec<u32> = shown
        .iter()
        .map(|op| op.client)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let lane = |c: u32| clients.binary_search(&c).unwrap_or(0);
    let width = LEFT + PLOT_W + RIGHT;
    let height = TOP + clients.len() as f64 * LANE_H + 10.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"#
    );
    s.push_str(concat!(
        r#"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"#,
        r##"<rect width="6" height="6" fill="#dde8f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#8aa" stroke-width="2"/></pattern>"##,
        r#"<pattern id="hatch-red" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"#,
        r##"<rect width="6" height="6" fill="#fbb"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c00" stroke-width="2"/></pattern></defs>"##,
        "\n",
        r#"<rect width="100%" height="100%" fill="white"/>"#,
        "\n"
    ));

    // Lanes.
    for (i, c) in clients.iter().enumerate() {
        let y = TOP + i as f64 * LANE_H;
        let fill = if i % 2 == 0 { "#f6f6f6" } else { "#ffffff" };
        let _ = writeln!(
            s,
            r##"<rect x="0" y="{y}" width="{width}" height="{LANE_H}" fill="{fill}"/><text x="4" y="{}" fill="#333">client {c}</text>"##,
            y + 16.0
        );
    }

    // Time axis.
    let step = tick_step(to_us - from_us);
    let mut t = from_us.div_ceil(step).saturating_mul(step);
    while t <= to_us {
        let tx = x(t);
        let label = if step >= 1000 {
            format!("{} ms", t / 1000)
        } else {
            format!("{}.{:03}", t / 1000, t % 1000)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{height}" stroke="#ddd"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#666">{label}</text>"##,
            TOP - 8.0,
            TOP - 11.0
        );
        t = match t.checked_add(step) {
            Some(t) => t,
            None => break,
        };
    }

    // Faults.
    for e in entries {
        let Entry::Fault(f) = e else { continue };
        let until = f.until_us.max(f.at_us);
        if f.at_us > to_us || until < from_us {
            continue;
        }
        let (x0, x1) = (x(f.at_us), x(until));
        let label = esc(&format!("{} {}", f.fault, f.target));
        let title = esc(&format!(
            "{} {} [{} – {}] {}",
            f.fault,
            f.target,
            ms(f.at_us),
            ms(until),
            f.detail
        ));
        let _ = writeln!(
            s,
            r##"<g><title>{title}</title><rect x="{x0:.1}" y="0" width="{:.1}" height="{height}" fill="#f90" fill-opacity="0.25"/><text x="{x0:.1}" y="11" fill="#a50">{label}</text></g>"##,
            (x1 - x0).max(2.0)
        );
    }

    // Ops, the highlighted ones last (on top).
    let mut order: Vec<&&Op> = shown.iter().collect();
    order.sort_by_key(|op| highlighted.contains(&op.id));
    for op in order {
        let y = TOP + lane(op.client) as f64 * LANE_H + (LANE_H - BAR_H) / 2.0;
        let x0 = x(op.invoke_us);
        let x1 = if unknown(op) {
            LEFT + PLOT_W
        } else {
            x(op.complete_us)
        };
        let w = (x1 - x0).max(2.0);
        let hot = highlighted.contains(&op.id);
        let (fill, stroke) = match (&op.outcome, hot) {
            (Outcome::Unknown { .. }, true) => ("url(#hatch-red)", "#c00"),
            (Outcome::Unknown { .. }, false) => ("url(#hatch)", "#58a"),
            (_, true) => ("#f99", "#c00"),
            (Outcome::Failed { .. }, false) => ("#e4e4e4", "#999"),
            (Outcome::Ok(_), false) => ("#cfe0f3", "#58a"),
        };
        let dash = if unknown(op) {
            r#" stroke-dasharray="4 2""#
        } else {
            ""
        };
        let sw = if hot { 2 } else { 1 };
        let label = esc(&label(op));
        let mut title = format!(
            "#{} client {} [{} – {}] {}",
            op.id,
            op.client,
            ms(op.invoke_us),
            ms(op.complete_us),
            self::label(op)
        );
        if let Outcome::Unknown { error } | Outcome::Failed { error } = &op.outcome {
            let _ = write!(title, ": {error}");
        }
        let _ = writeln!(
            s,
            r#"<g><title>{}</title><svg x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{BAR_H}"><rect width="100%" height="100%" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash}/><text x="3" y="13">{label}</text></svg></g>"#,
            esc(&title)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn unknown(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Unknown { .. })
}

/// A tick spacing in µs (1, 2 or 5 × 10^k) giving about ten ticks.
fn tick_step(span_us: u64) -> u64 {
    let target = (span_us / 10).max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let s = step.saturating_mul(m);
            if s >= target {
                return s;
            }
        }
        if step > u64::MAX / 10 {
            return u64::MAX;
        }
        step *= 10;
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// An op's compact label.
pub fn label(op: &Op) -> String {
    let what = match &op.call {
        Call::Put { key, value } => format!("put {key}={value}"),
        Call::Get { key, serializable } => {
            let g = if *serializable { "sget" } else { "get" };
            match &op.outcome {
                Outcome::Ok(d) => match &d.value {
                    Some(v) => format!("{g} {key} → {v} @{}", d.mod_revision),
                    None => format!("{g} {key} → ∅"),
                },
                _ => format!("{g} {key}"),
            }
        }
        Call::Cas { key, expect, value } => {
            let cond = match expect {
                Expect::Value(None) => "∅".to_string(),
                Expect::Value(Some(v)) => format!("={v}"),
                Expect::ModRevision(r) => format!("@{r}"),
            };
            format!("cas {key} {cond}→{value}")
        }
        Call::Txn { ops } => {
            let mut reads = match &op.outcome {
                Outcome::Ok(d) => d.reads.iter(),
                _ => [].iter(),
            };
            let micro: Vec<String> = ops
                .iter()
                .map(|m| match m {
                    Micro::R { key } => match reads.next() {
                        Some(l) => format!("r {key}={l:?}"),
                        None => format!("r {key}"),
                    },
                    Micro::Append { key, element } => format!("app {key} {element}"),
                })
                .collect();
            format!("txn {}", micro.join(", "))
        }
        Call::LeaseGrant { ttl } => match &op.outcome {
            Outcome::Ok(d) => format!("grant {ttl}s → {:x} {}s", d.lease, d.ttl),
            _ => format!("grant {ttl}s"),
        },
        Call::LeasePut { key, value, lease } => format!("put {key}={value} lease {lease:x}"),
        Call::LeaseKeepAlive { lease } => match &op.outcome {
            Outcome::Ok(d) => format!("keepalive {lease:x} → {}s", d.ttl),
            _ => format!("keepalive {lease:x}"),
        },
        Call::LeaseRevoke { lease } => format!("revoke {lease:x}"),
    };
    let outcome = match (&op.outcome, &op.call) {
        (Outcome::Unknown { .. }, _) => " ?".to_string(),
        (Outcome::Failed { .. }, _) => " ✗".to_string(),
        (Outcome::Ok(_), Call::Get { .. }) => String::new(),
        (Outcome::Ok(d), Call::Cas { .. } | Call::Txn { .. }) => match d.succeeded {
            Some(false) => format!(" ✗@{}", d.revision),
            _ => format!(" ✓@{}", d.revision),
        },
        (Outcome::Ok(d), _) => format!(" @{}", d.revision),
    };
    what + &outcome
}

/// XML-escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Done, Fault};

    fn op(id: u64, client: u32, t: (u64, u64), call: Call, outcome: Outcome) -> Entry {
        Entry::Op(Op {
            id,
            client,
            invoke_us: t.0,
            complete_us: t.1,
            call,
            outcome,
        })
    }

    fn history() -> Vec<Entry> {
        let ok = |revision| {
            Outcome::Ok(Done {
                revision,
                ..Done::default()
            })
        };
        vec![
            op(
                1,
                1,
                (1_000, 3_000),
                Call::Put {
                    key: "r<1>".into(),
                    value: "c1-1".into(),
                },
                ok(42),
            ),
            op(
                2,
                2,
                (2_000, 5_000),
                Call::Get {
                    key: "r<1>".into(),
                    serializable: false,
                },
                Outcome::Ok(Done {
                    revision: 43,
                    value: Some("c1-1".into()),
                    mod_revision: 42,
                    ..Done::default()
                }),
            ),
            op(
                3,
                3,
                (4_000, 9_000),
                Call::Cas {
                    key: "r<1>".into(),
                    expect: Expect::ModRevision(42),
                    value: "c3-1".into(),
                },
                Outcome::Unknown {
                    error: "timed out & gone".into(),
                },
            ),
            op(
                4,
                1,
                (6_000, 7_000),
                Call::Put {
                    key: "a".into(),
                    value: "x".into(),
                },
                Outcome::Failed { error: "no".into() },
            ),
            op(
                5,
                4,
                (6_000, 8_000),
                Call::Txn {
                    ops: vec![
                        Micro::R { key: "l".into() },
                        Micro::Append {
                            key: "l".into(),
                            element: 9,
                        },
                    ],
                },
                Outcome::Ok(Done {
                    revision: 46,
                    succeeded: Some(true),
                    reads: vec![vec![1, 4]],
                    ..Done::default()
                }),
            ),
            op(
                6,
                9,
                (50_000, 60_000),
                Call::Put {
                    key: "far".into(),
                    value: "y".into(),
                },
                ok(50),
            ),
            Entry::Fault(Fault {
                at_us: 2_500,
                until_us: 4_500,
                fault: "kill".into(),
                target: "m1".into(),
                detail: "SIGKILL <pid>".into(),
            }),
        ]
    }

    #[test]
    fn labels() {
        let h = history();
        let labels: Vec<String> = crate::history::ops(&h).iter().map(|op| label(op)).collect();
        assert_eq!(
            labels,
            [
                "put r<1>=c1-1 @42",
                "get r<1> → c1-1 @42",
                "cas r<1> @42→c3-1 ?",
                "put a=x ✗",
                "txn r l=[1, 4], app l 9 ✓@46",
                "put far=y @50"
            ]
        );
    }

    #[test]
    fn bounds_around_the_window() {
        let h = history();
        assert_eq!(window_bounds(&h, &[1, 2]), (500, 5_500));
        assert_eq!(window_bounds(&h, &[6]), (49_000, 61_000));
        assert_eq!(window_bounds(&h, &[]), (0, 65_900));
        assert_eq!(window_bounds(&h, &[77]), (0, 65_900));
        assert_eq!(window_bounds(&[], &[1]), (0, 1));
    }

    #[test]
    fn svg_shows_lanes_ops_faults_and_the_window() {
        let h = history();
        let (from, to) = window_bounds(&h, &[1, 2, 3]);
        let s = svg(&h, &[2], from, to);
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        // Clients 1–4 have ops in range; client 9's op is outside it.
        for c in 1..=4 {
            assert_eq!(s.matches(&format!(">client {c}<")).count(), 1, "client {c}");
        }
        assert!(!s.contains("client 9"));
        assert!(!s.contains("far=y"));
        // Keys are escaped, never raw.
        assert!(s.contains("get r&lt;1&gt; → c1-1 @42"));
        assert!(!s.contains("r<1>"));
        assert!(s.contains("timed out &amp; gone"));
        assert!(s.contains("SIGKILL &lt;pid&gt;"));
        // The window's op is red; the unknown op is hatched and dashed.
        assert_eq!(s.matches(r##"fill="#f99""##).count(), 1);
        assert!(s.contains("url(#hatch)") && s.contains("stroke-dasharray"));
        assert!(s.contains(">kill m1<"));
        assert!(s.contains(" ms<") || s.contains(".000<"));
        // Balanced tags, as far as counting goes.
        assert_eq!(s.matches("<svg").count(), s.matches("</svg>").count());
        assert_eq!(s.matches("<g>").count(), s.matches("</g>").count());
    }

    #[test]
    fn degenerate_ranges_do_not_panic() {
        let h = history();
        for (a, b) in [(0, 0), (10, 5), (u64::MAX - 1, u64::MAX), (0, u64::MAX)] {
            let s = svg(&h, &[], a, b);
            assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        }
        assert!(svg(&[], &[], 0, 10).contains("</svg>"));
    }
}
