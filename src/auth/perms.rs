//! Which keys a user may read or write: the union of its roles' permissions,
//! checked as etcd 3.4 checks it (`auth/range_perm_cache.go` over
//! `pkg/adt`'s interval tree).
//!
//! etcd's intervals order byte strings with one twist: the empty string is
//! greater than every other (`BytesAffineComparable`), so an empty range end
//! is "to the end of the keyspace". A permission with no range end is the
//! single key (`[key, key\0)`); a range end of `\0` is "from the key on". A
//! request for one key is allowed if some interval holds it; a request for
//! a range if the intervals it meets cover it without a gap.

use super::{Perm, PermKind};
use std::cmp::Ordering;

/// etcd's `BytesAffineComparable`: bytewise, but the empty string is
/// greater than all others (and equal to itself).
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval `[begin, end)` in [`affine_cmp`]'s order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    /// The interval a permission (or a request) names, as etcd builds it.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        if range_end.is_empty() {
            return Interval::point(key);
        }
        let end = if range_end == [0] {
            Vec::new()
        } else {
            range_end.to_vec()
        };
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    fn intersects(&self, other: &Interval) -> bool {
        affine_cmp(&self.begin, &other.end) == Ordering::Less
            && affine_cmp(&other.begin, &self.end) == Ordering::Less
    }
}

/// One user's merged permissions: the intervals it may read and write,
/// each list sorted by begin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unified {
    read: Vec<Interval>,
    write: Vec<Interval>,
}

impl Unified {
    /// Merges the permissions of a user's roles.
    pub fn of<'a>(perms: impl IntoIterator<Item = &'a Perm>) -> Unified {
        let mut u = Unified::default();
        for p in perms {
            let ivl = Interval::of(&p.key, &p.range_end);
            match p.kind {
                PermKind::Read => u.read.push(ivl),
                PermKind::Write => u.write.push(ivl),
                PermKind::ReadWrite => {
                    u.read.push(ivl.clone());
                    u.write.push(ivl);
                }
                PermKind::Other(_) => {}
            }
        }
        for list in [&mut u.read, &mut u.write] {
            list.sort_by(|a, b| affine_cmp(&a.begin, &b.begin).then(affine_cmp(&a.end, &b.end)));
        }
        u
    }

    /// Whether `kind` (Read or Write) is allowed on `key` (one key when
    /// `range_end` is empty, else the range as a request names it).
    pub fn allows(&self, kind: PermKind, key: &[u8], range_end: &[u8]) -> bool {
        let list = match kind {
            PermKind::Read => &self.read,
            PermKind::Write => &self.write,
            // A request asks for one of the two; both must hold.
            PermKind::ReadWrite => {
                return self.allows(PermKind::Read, key, range_end)
                    && self.allows(PermKind::Write, key, range_end)
            }
            PermKind::Other(_) => return false,
        };
        if range_end.is_empty() {
            let point = Interval::point(key);
            return list.iter().any(|i| i.intersects(&point));
        }
        let asked = Interval::of(key, range_end);
        covers(list, &asked)
    }
}

/// etcd's `IntervalTree.Contains`: the intervals meeting `asked`, in order
/// of their begin, chain without a gap, start at or before it and end at
/// or after it.
fn covers(list: &[Interval], asked: &Interval) -> bool {
    let mut span: Option<(&[u8], &[u8])> = None;
    for i in list.iter().filter(|i| i.intersects(asked)) {
        span = match span {
            None => Some((&i.begin, &i.end)),
            Some((begin, end)) => {
                if affine_cmp(end, &i.begin) == Ordering::Less {
                    return false;
                }
                let end = if affine_cmp(&i.end, end) == Ordering::Greater {
                    &i.end[..]
                } else {
                    end
                };
                Some((begin, end))
            }
        };
    }
    match span {
        Some((begin, end)) => {
            affine_cmp(end, &asked.end) != Ordering::Less
                && affine_cmp(begin, &asked.begin) != Ordering::Greater
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermKind, key: &str, end: &[u8]) -> Perm {
        Perm {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    #[test]
    fn a_single_key_permission_allows_that_key_only() {
        let u = Unified::of(&[perm(PermKind::Read, "foo", b"")]);
        assert!(u.allows(PermKind::Read, b"foo", b""));
        assert!(!u.allows(PermKind::Read, b"foo0", b""));
        assert!(!u.allows(PermKind::Read, b"fo", b""));
        assert!(!u.allows(PermKind::Write, b"foo", b""));
        // The range [foo, foo\0) is the key itself.
        assert!(u.allows(PermKind::Read, b"foo", b"foo\0"));
        assert!(!u.allows(PermKind::Read, b"foo", b"fop"));
    }

    #[test]
    fn a_prefix_permission_covers_ranges_inside_it() {
        let u = Unified::of(&[perm(PermKind::ReadWrite, "a/", b"a0")]);
        assert!(u.allows(PermKind::Write, b"a/x", b""));
        assert!(u.allows(PermKind::Read, b"a/", b"a0"));
        assert!(u.allows(PermKind::Read, b"a/b", b"a/c"));
        assert!(!u.allows(PermKind::Read, b"a/", b"a1"));
        assert!(!u.allows(PermKind::Read, b"a", b"a0"));
        assert!(!u.allows(PermKind::Read, b"b", b""));
        // From a key on (range end \0) is past any finite range.
        assert!(!u.allows(PermKind::Read, b"a/", b"\0"));
    }

    #[test]
    fn adjacent_permissions_cover_a_range_together_and_a_gap_does_not() {
        let u = Unified::of(&[
            perm(PermKind::Read, "a", b"c"),
            perm(PermKind::Read, "c", b"e"),
            perm(PermKind::Read, "f", b"g"),
        ]);
        assert!(u.allows(PermKind::Read, b"b", b"d"));
        assert!(u.allows(PermKind::Read, b"a", b"e"));
        assert!(!u.allows(PermKind::Read, b"a", b"f"));
        assert!(!u.allows(PermKind::Read, b"d", b"g"));
        assert!(u.allows(PermKind::Read, b"f", b"g"));
    }

    #[test]
    fn from_key_permissions_reach_the_end_of_the_keyspace() {
        let u = Unified::of(&[perm(PermKind::Write, "m", b"\0")]);
        assert!(u.allows(PermKind::Write, b"zzz", b""));
        assert!(u.allows(PermKind::Write, b"m", b"\0"));
        assert!(u.allows(PermKind::Write, b"n", b"\0"));
        assert!(!u.allows(PermKind::Write, b"l", b"\0"));
        assert!(!u.allows(PermKind::Write, b"a", b""));
    }

    #[test]
    fn read_and_write_are_separate() {
        let u = Unified::of(&[
            perm(PermKind::Read, "k", b""),
            perm(PermKind::Write, "w", b""),
        ]);
        assert!(u.allows(PermKind::Read, b"k", b""));
        assert!(!u.allows(PermKind::Write, b"k", b""));
        assert!(u.allows(PermKind::Write, b"w", b""));
        assert!(!u.allows(PermKind::Read, b"w", b""));
        assert!(!Unified::default().allows(PermKind::Read, b"k", b""));
    }

    #[test]
    fn the_empty_key_sorts_last_as_in_etcd() {
        // etcd's quirk, kept: a permission on [\"\", \\0) is empty, as the
        // empty begin compares greater than every key.
        let u = Unified::of(&[perm(PermKind::Read, "", b"\0")]);
        assert!(!u.allows(PermKind::Read, b"a", b""));
    }
}
