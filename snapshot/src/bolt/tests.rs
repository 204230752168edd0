//! Page layout of the writer on small hand-built trees, read back by the
//! reader, and the reader's refusals of damaged files.

// `&Vec<u8>`: the reader takes `&dyn ReadAt`, which an unsized `[u8]` cannot be.
#![allow(clippy::ptr_arg)]

use super::read::{BoltError, BoltReader, Event};
use super::write::{write_bolt, BoltWriter, Layout, WriteError, WriteOptions};
use super::*;

/// A tree to write: buckets hold keys and buckets.
#[derive(Clone, Debug)]
enum Node {
    Bucket(Vec<u8>, Vec<Node>),
    Kv(Vec<u8>, Vec<u8>),
}

fn bucket(name: &str, nodes: Vec<Node>) -> Node {
    Node::Bucket(name.as_bytes().to_vec(), nodes)
}

/// `n` keys `k00000…` with values of `value_bytes` bytes.
fn keys(n: usize, value_bytes: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let value = (0..value_bytes).map(|j| (i + j) as u8).collect();
            Node::Kv(format!("k{i:06}").into_bytes(), value)
        })
        .collect()
}

fn build(nodes: &[Node], w: &mut BoltWriter<'_>) -> Result<(), WriteError> {
    for n in nodes {
        match n {
            Node::Bucket(name, inner) => {
                w.begin_bucket(name)?;
                build(inner, w)?;
                w.end_bucket()?;
            }
            Node::Kv(k, v) => w.put(k, v)?,
        }
    }
    Ok(())
}

fn write(page_size: u32, nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::new();
    let layout = write_bolt(&mut out, &WriteOptions { page_size }, |w| build(nodes, w)).unwrap();
    assert_eq!(out.len() as u64, layout.bytes());
    out
}

/// Walk events without bucket headers, for comparing with a spec.
#[derive(Debug, PartialEq)]
enum Ev {
    Begin(Vec<u8>),
    Kv(Vec<u8>, Vec<u8>),
    End,
}

fn expected(nodes: &[Node], out: &mut Vec<Ev>) {
    for n in nodes {
        match n {
            Node::Bucket(name, inner) => {
                out.push(Ev::Begin(name.clone()));
                expected(inner, out);
                out.push(Ev::End);
            }
            Node::Kv(k, v) => out.push(Ev::Kv(k.clone(), v.clone())),
        }
    }
}

fn read_back(bytes: &Vec<u8>) -> Result<Vec<Ev>, BoltError> {
    let reader = BoltReader::open(bytes, bytes.len() as u64)?;
    reader
        .walk()
        .map(|e| {
            e.map(|e| match e {
                Event::BucketBegin { name, .. } => Ev::Begin(name),
                Event::Entry { key, value } => Ev::Kv(key, value),
                Event::BucketEnd => Ev::End,
            })
        })
        .collect()
}

/// Writes, reads back and compares; returns the file.
fn round_trip(page_size: u32, nodes: &[Node]) -> Vec<u8> {
    let bytes = write(page_size, nodes);
    let mut want = Vec::new();
    expected(nodes, &mut want);
    assert_eq!(read_back(&bytes).unwrap(), want);
    bytes
}

/// The header of top-level bucket `name`.
fn header_of(bytes: &Vec<u8>, name: &str) -> BucketHeader {
    let reader = BoltReader::open(bytes, bytes.len() as u64).unwrap();
    for e in reader.walk_top_level() {
        if let Event::BucketBegin { name: n, header } = e.unwrap() {
            if n == name.as_bytes() {
                return header;
            }
        }
    }
    panic!("no bucket {name}");
}

/// Shape of the tree under page `id`: (depth, leaf pages, branch pages, overflow blocks).
fn shape(bytes: &Vec<u8>, id: u64) -> (usize, usize, usize, u64) {
    let reader = BoltReader::open(bytes, bytes.len() as u64).unwrap();
    let page = reader.page(id).unwrap();
    if page.is_leaf() {
        return (1, 1, 0, u64::from(page.header.overflow));
    }
    assert_eq!(page.header.flags, FLAG_BRANCH);
    let mut depths = Vec::new();
    let (mut leaves, mut branches, mut overflow) = (0, 1, 0);
    let mut prev_key: Option<Vec<u8>> = None;
    for i in 0..usize::from(page.header.count) {
        let (key, child) = page.branch(i).unwrap();
        assert!(prev_key.as_deref() < Some(key), "branch keys increase");
        prev_key = Some(key.to_vec());
        // A branch key is the first key of its child's subtree.
        let first = first_key(&reader, child);
        assert_eq!(first, key);
        let (d, l, b, o) = shape(bytes, child);
        depths.push(d);
        leaves += l;
        branches += b;
        overflow += o;
    }
    assert!(
        depths.windows(2).all(|w| w[0] == w[1]),
        "all leaves at one depth"
    );
    (depths[0] + 1, leaves, branches, overflow)
}

fn first_key(reader: &BoltReader<'_>, id: u64) -> Vec<u8> {
    let page = reader.page(id).unwrap();
    if page.is_leaf() {
        page.leaf(0).unwrap().1.to_vec()
    } else {
        first_key(reader, page.branch(0).unwrap().1)
    }
}

fn meta_of(bytes: &Vec<u8>) -> Meta {
    *BoltReader::open(bytes, bytes.len() as u64).unwrap().meta()
}

#[test]
fn empty_file_is_bbolts_initial_layout() {
    let bytes = round_trip(4096, &[]);
    // meta, meta, root leaf, freelist: bbolt's own init has the same four pages.
    assert_eq!(bytes.len(), 4 * 4096);
    let m = meta_of(&bytes);
    assert_eq!((m.root.root, m.freelist, m.pgid), (2, 3, 4));
    let freelist = PageHeader::decode(&bytes[3 * 4096..]).unwrap();
    assert_eq!(
        (freelist.id, freelist.flags, freelist.count),
        (3, FLAG_FREELIST, 0)
    );
    for (i, meta_page) in [0usize, 4096].iter().enumerate() {
        let h = PageHeader::decode(&bytes[*meta_page..]).unwrap();
        assert_eq!((h.id, h.flags), (i as u64, FLAG_META));
        let m = Meta::decode(&bytes[meta_page + 16..]).unwrap();
        assert_eq!(m.txid, i as u64);
        assert_eq!(m.checksum, m.sum64());
    }
}

#[test]
fn one_leaf() {
    // 3 × ~416 bytes: too big to inline (> 1024), fits one page.
    let spec = [bucket("b", keys(3, 400))];
    let bytes = round_trip(4096, &spec);
    let h = header_of(&bytes, "b");
    assert_eq!(h.root, 2, "the bucket's leaf is the first data page");
    assert_eq!(shape(&bytes, h.root), (1, 1, 0, 0));
    // meta ×2, leaf, root bucket leaf, freelist
    assert_eq!(meta_of(&bytes).pgid, 5);
    assert_eq!(meta_of(&bytes).root.root, 3);
}

#[test]
fn many_leaves_under_one_branch() {
    let spec = [bucket("b", keys(300, 100))];
    let bytes = round_trip(4096, &spec);
    let (depth, leaves, branches, _) = shape(&bytes, header_of(&bytes, "b").root);
    assert_eq!((depth, branches), (2, 1));
    // 300 × (16 + 7 + 100) = 36900 bytes, 33 elements of 123 bytes per page: 10 leaves.
    assert_eq!(leaves, 10);
}

#[test]
fn two_branch_levels() {
    let spec = [bucket("b", keys(3000, 40))];
    let bytes = round_trip(1024, &spec);
    let (depth, leaves, branches, _) = shape(&bytes, header_of(&bytes, "b").root);
    assert_eq!(depth, 3);
    assert!(
        leaves > 100 && branches > 3,
        "{leaves} leaves, {branches} branches"
    );
    // Compact: every page except the last of each level is nearly full.
    assert!(bytes.len() < 3000 * (16 + 7 + 40) * 11 / 10 + 20 * 1024);
}

#[test]
fn overflow_values() {
    let mut nodes = keys(5, 10);
    nodes.push(Node::Kv(b"k_big".to_vec(), vec![7u8; 10_000]));
    nodes.push(Node::Kv(b"l_after".to_vec(), b"x".to_vec()));
    let spec = [bucket("b", nodes)];
    let bytes = round_trip(4096, &spec);
    let (depth, leaves, _, overflow) = shape(&bytes, header_of(&bytes, "b").root);
    assert_eq!(depth, 2);
    assert_eq!(leaves, 3, "small keys, the big value alone, then the rest");
    // 16 + 16 + 5 + 10000 bytes = 3 blocks of 4096: overflow 2.
    assert_eq!(overflow, 2);
}

#[test]
fn large_value_in_a_page_size_of_its_own() {
    let spec = [bucket(
        "b",
        vec![Node::Kv(b"only".to_vec(), vec![1u8; 70_000])],
    )];
    let bytes = round_trip(4096, &spec);
    let (depth, leaves, _, overflow) = shape(&bytes, header_of(&bytes, "b").root);
    assert_eq!((depth, leaves, overflow), (1, 1, 17));
}

#[test]
fn empty_bucket_is_inline() {
    let bytes = round_trip(4096, &[bucket("empty", vec![])]);
    assert_eq!(header_of(&bytes, "empty"), BucketHeader::default());
    // meta ×2, root leaf, freelist: nothing else.
    assert_eq!(meta_of(&bytes).pgid, 4);
}

#[test]
fn small_bucket_is_inline_and_a_larger_one_is_not() {
    // Inline up to page_size / 4 = 1024 bytes: 16 + n × (16 + 7 + v).
    let bytes = round_trip(
        4096,
        &[bucket("a", keys(10, 60)), bucket("b", keys(12, 60))],
    );
    assert_eq!(header_of(&bytes, "a").root, 0, "16 + 10 × 83 = 846 ≤ 1024");
    assert_eq!(header_of(&bytes, "b").root, 0, "16 + 12 × 83 = 1012 ≤ 1024");
    let bytes = round_trip(4096, &[bucket("c", keys(13, 60))]);
    assert_ne!(header_of(&bytes, "c").root, 0, "16 + 13 × 83 = 1095 > 1024");
}

#[test]
fn nested_buckets() {
    let spec = [
        bucket(
            "outer",
            vec![
                Node::Kv(b"a".to_vec(), b"1".to_vec()),
                bucket("inner_big", keys(200, 50)),
                bucket("inner_small", keys(2, 5)),
                Node::Kv(b"z".to_vec(), b"2".to_vec()),
            ],
        ),
        bucket("tail", keys(1, 1)),
    ];
    let bytes = round_trip(4096, &spec);
    // A bucket holding a bucket is never inline.
    assert_ne!(header_of(&bytes, "outer").root, 0);
}

#[test]
fn many_top_level_buckets_make_a_branch_root() {
    let spec: Vec<Node> = (0..400)
        .map(|i| bucket(&format!("bucket{i:04}"), keys(1, 1)))
        .collect();
    let bytes = round_trip(4096, &spec);
    let m = meta_of(&bytes);
    assert_eq!(m.freelist, m.pgid - 1);
    assert_eq!(shape(&bytes, m.root.root).0, 2);
}

#[test]
fn page_sizes() {
    for page_size in [1024, 2048, 8192, 65536] {
        let bytes = round_trip(page_size, &[bucket("b", keys(500, 30))]);
        assert_eq!(meta_of(&bytes).page_size, page_size);
    }
}

#[test]
fn pseudo_random_trees_round_trip() {
    // xorshift: deterministic, no dependency.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..30 {
        let buckets = 1 + next(4);
        let spec: Vec<Node> = (0..buckets)
            .map(|b| {
                let n = next(400) as usize;
                let mut nodes: Vec<Node> = (0..n)
                    .map(|i| {
                        let klen = 1 + next(40) as usize;
                        let key: Vec<u8> = format!("{i:08}")
                            .bytes()
                            .chain((0..klen).map(|j| j as u8))
                            .collect();
                        let vlen = match next(20) {
                            0 => next(9000),
                            _ => next(200),
                        } as usize;
                        Node::Kv(key, vec![round as u8; vlen])
                    })
                    .collect();
                nodes.sort_by(|a, b| match (a, b) {
                    (Node::Kv(a, _), Node::Kv(b, _)) => a.cmp(b),
                    _ => unreachable!(),
                });
                bucket(&format!("b{b}"), nodes)
            })
            .collect();
        let page_size = [1024, 4096][next(2) as usize];
        round_trip(page_size, &spec);
    }
}

#[test]
fn keys_out_of_order_are_refused() {
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        w.begin_bucket(b"b")?;
        w.put(b"2", b"")?;
        w.put(b"1", b"")
    })
    .unwrap_err();
    assert!(matches!(err, WriteError::OutOfOrder { .. }), "{err}");
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        w.begin_bucket(b"b")?;
        w.put(b"1", b"")?;
        w.put(b"1", b"")
    })
    .unwrap_err();
    assert!(
        matches!(err, WriteError::OutOfOrder { .. }),
        "duplicate: {err}"
    );
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        w.begin_bucket(b"b")?;
        w.end_bucket()?;
        w.begin_bucket(b"a")
    })
    .unwrap_err();
    assert!(
        matches!(err, WriteError::OutOfOrder { .. }),
        "buckets: {err}"
    );
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        w.begin_bucket(b"b")?;
        w.put(b"", b"")
    })
    .unwrap_err();
    assert!(matches!(err, WriteError::EmptyKey { .. }), "{err}");
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        w.put(b"k", b"")
    })
    .unwrap_err();
    assert!(
        matches!(err, WriteError::NoOpenBucket),
        "root holds buckets only: {err}"
    );
}

#[test]
fn input_that_changes_between_passes_is_refused() {
    let mut calls = 0;
    let err = write_bolt(&mut Vec::new(), &WriteOptions::default(), |w| {
        calls += 1;
        w.begin_bucket(b"b")?;
        for node in keys(if calls == 1 { 100 } else { 200 }, 100) {
            if let Node::Kv(k, v) = node {
                w.put(&k, &v)?;
            }
        }
        w.end_bucket()
    })
    .unwrap_err();
    assert!(matches!(err, WriteError::PlanMismatch { .. }), "{err}");
}

#[test]
fn memory_stays_bounded_and_pages_stream_out_as_keys_arrive() {
    let options = WriteOptions::default();
    let n = 100_000u32;
    type Each<'e> = Box<dyn FnMut(u32, &BoltWriter<'_>) + 'e>;
    let put_all = |w: &mut BoltWriter<'_>, mut each: Each<'_>| {
        w.begin_bucket(b"b").unwrap();
        for i in 0..n {
            w.put(&i.to_be_bytes(), &[i as u8; 50]).unwrap();
            each(i, w);
        }
        w.end_bucket().unwrap();
    };
    let mut discard = std::io::sink();
    let mut planner = BoltWriter::new(&mut discard, &options, None).unwrap();
    put_all(&mut planner, Box::new(|_, _| {}));
    let plan = planner.finish().unwrap();

    let mut discard = std::io::sink();
    let mut writer = BoltWriter::new(&mut discard, &options, Some(plan)).unwrap();
    let (mut buffered_max, mut pages_at_half) = (0, 0);
    put_all(
        &mut writer,
        Box::new(|i, w| {
            buffered_max = buffered_max.max(w.buffered_bytes());
            if i == n / 2 {
                pages_at_half = w.pages_written();
            }
        }),
    );
    assert_eq!(writer.finish().unwrap(), plan);
    // 100k keys of 70 bytes (7 MB) in a 3-level tree: at most one page per level held.
    assert!(buffered_max <= 3 * 4096 + 64, "held {buffered_max} bytes");
    let half = plan.pages / 2;
    assert!(
        pages_at_half > half * 9 / 10 && pages_at_half < half * 11 / 10,
        "{pages_at_half} of {} pages out at half the keys",
        plan.pages
    );
}

#[test]
fn a_plan_that_pass_1_cannot_have_made_is_refused() {
    let bad = [
        Layout {
            page_size: 4096,
            root: 1,
            pages: 4,
        },
        Layout {
            page_size: 4096,
            root: 3,
            pages: 4,
        },
        Layout {
            page_size: 8192,
            root: 2,
            pages: 4,
        },
    ];
    for plan in bad {
        let err = BoltWriter::new(&mut Vec::new(), &WriteOptions::default(), Some(plan)).err();
        assert!(matches!(err, Some(WriteError::BadPlan(_))), "{plan:?}");
    }
}

// ---- the reader refuses damaged files ----

fn sample() -> Vec<u8> {
    write(
        4096,
        &[bucket("b", keys(300, 100)), bucket("c", keys(3, 3))],
    )
}

#[test]
fn bad_meta_pages() {
    let good = sample();
    // Both checksums broken: refused, both reasons given.
    let mut bad = good.clone();
    bad[16 + 20] ^= 1;
    bad[4096 + 16 + 20] ^= 1;
    let err = read_back(&bad).unwrap_err();
    assert!(matches!(err, BoltError::NoValidMeta { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    // Only meta 1 broken: meta 0 serves (and the other way round).
    let mut one = good.clone();
    one[4096 + 16 + 20] ^= 1;
    assert_eq!(read_back(&one).unwrap(), read_back(&good).unwrap());
    let mut zero = good.clone();
    zero[16 + 20] ^= 1;
    assert_eq!(read_back(&zero).unwrap(), read_back(&good).unwrap());
    // Bad magic and version.
    let mut magic = good.clone();
    magic[16] ^= 0xff;
    magic[4096 + 16] ^= 0xff;
    assert!(read_back(&magic)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    let mut version = good.clone();
    version[16 + 4] = 3;
    version[4096 + 16 + 4] = 3;
    assert!(read_back(&version)
        .unwrap_err()
        .to_string()
        .contains("version 3"));
    // Not bbolt at all.
    let err = read_back(&vec![0x55; 3 * 4096]).unwrap_err();
    assert!(matches!(err, BoltError::NoValidMeta { .. }), "{err}");
    let err = read_back(&vec![0; 100]).unwrap_err();
    assert!(matches!(err, BoltError::TooShort { .. }), "{err}");
}

#[test]
fn truncated_file() {
    let mut bytes = sample();
    bytes.truncate(bytes.len() - 4096);
    let err = read_back(&bytes).unwrap_err();
    assert!(matches!(err, BoltError::Truncated { .. }), "{err}");
}

/// Rewrites a branch element's child id of the bucket "b"'s root page.
fn with_child(bytes: &[u8], index: usize, child: u64) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let root = header_of(&bytes, "b").root as usize;
    let at = root * 4096 + PAGE_HEADER_BYTES + ELEMENT_BYTES * index + 8;
    bytes[at..at + 8].copy_from_slice(&child.to_le_bytes());
    bytes
}

#[test]
fn damaged_pages() {
    let good = sample();
    let root = header_of(&good, "b").root;
    // A cycle: the branch points at itself.
    let err = read_back(&with_child(&good, 1, root)).unwrap_err();
    assert!(matches!(err, BoltError::PageTwice { .. }), "{err}");
    // Two references to one page.
    let err = read_back(&with_child(&good, 1, 2)).unwrap_err();
    assert!(matches!(err, BoltError::PageTwice { id: 2 }), "{err}");
    // Out of range.
    let err = read_back(&with_child(&good, 1, 1 << 40)).unwrap_err();
    assert!(matches!(err, BoltError::PageOutOfRange { .. }), "{err}");
    // A meta page as a child.
    let err = read_back(&with_child(&good, 1, 1)).unwrap_err();
    assert!(matches!(err, BoltError::PageOutOfRange { .. }), "{err}");
    // A page whose header names another id.
    let mut moved = good.clone();
    moved[2 * 4096] ^= 1;
    let err = read_back(&moved).unwrap_err();
    assert!(matches!(err, BoltError::PageIdMismatch { .. }), "{err}");
    // The freelist page as a child: wrong type.
    let freelist = meta_of(&good).freelist;
    let err = read_back(&with_child(&good, 1, freelist)).unwrap_err();
    assert!(matches!(err, BoltError::PageType { .. }), "{err}");
    // A leaf element pointing past its page.
    let mut past = good.clone();
    let at = 2 * 4096 + PAGE_HEADER_BYTES + 12; // element 0's vsize
    past[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
    let err = read_back(&past).unwrap_err();
    assert!(matches!(err, BoltError::Element { .. }), "{err}");
    // Keys out of order: swap two leaves.
    let c1 = BoltReader::open(&good, good.len() as u64)
        .unwrap()
        .page(root)
        .unwrap()
        .branch(1)
        .unwrap()
        .1;
    let swapped = with_child(&with_child(&good, 0, c1), 1, 2);
    let err = read_back(&swapped).unwrap_err();
    assert!(matches!(err, BoltError::OutOfOrder { .. }), "{err}");
}
