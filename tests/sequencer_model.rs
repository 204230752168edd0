//! Property test of the committed prefix C: stamps, commits in any order and
//! abandons, against a model that knows which revisions are done.

use cairn::sequencer::Sequencer;
use proptest::prelude::*;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
enum Op {
    Stamp,
    /// Commit (or abandon) the pending revision at this position.
    Finish {
        pick: usize,
        abandon: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Stamp),
        3 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(pick, abandon)| Op::Finish { pick, abandon }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn committed_prefix_is_the_largest_finished_prefix(start in 0i64..1000, ops in prop::collection::vec(op(), 1..200)) {
        let mut s = Sequencer::new(start);
        let mut pending: Vec<i64> = Vec::new();
        let mut done: BTreeSet<i64> = (0..=start).collect();
        let mut last_c = start;
        for op in ops {
            match op {
                Op::Stamp => {
                    let r = s.stamp();
                    prop_assert_eq!(r, s.last_stamped());
                    prop_assert!(pending.iter().all(|p| *p < r) && !done.contains(&r));
                    pending.push(r);
                }
                Op::Finish { pick, abandon } => {
                    if pending.is_empty() { continue; }
                    let r = pending.remove(pick % pending.len());
                    if abandon { s.abandon(r); } else { s.commit(r); }
                    done.insert(r);
                }
            }
            let c = s.committed();
            // Every revision up to C is done, and C+1 is not (unless not yet stamped).
            prop_assert!((start..=c).all(|r| done.contains(&r)));
            prop_assert!(c + 1 > s.last_stamped() || !done.contains(&(c + 1)));
            prop_assert!(c >= last_c, "C went back");
            last_c = c;
            s.check_invariants();
        }
    }
}
