//! The recovery decision table of FORMAT.md, one test per row: torn tails at
//! every byte, bit flips in header/payload/CRC, lengths past the end, stale
//! bytes in a recycled segment, zeroed tails, damaged headers, missing and
//! damaged closed segments. Each row states its expected outcome.

mod common;

use cairn_wal::format::{
    self, decode_header, segment_name, SegmentHeader, FIRST_RECORD_OFFSET, PAGE,
};
use cairn_wal::storage::MemStorage;
use cairn_wal::{Config, Wal, WalError};
use common::payload;
use futures::executor::block_on;

const GROUP: u64 = 1;

fn config() -> Config {
    // Torn window = 4 KiB + 2 pages = 12 KiB.
    Config {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 4 * 1024,
        spare_segments_max: 1,
    }
}

/// A WAL holding entries 1..=n of GROUP (payload `len` bytes), all synced.
fn build(n: u64, len: usize) -> MemStorage {
    block_on(async {
        let storage = MemStorage::new();
        let (wal, _) = Wal::open(storage.clone(), config()).await.unwrap();
        for i in 1..=n {
            wal.append(GROUP, [(i, payload(GROUP, i, len, 0).as_slice())])
                .await
                .unwrap();
        }
        wal.sync_all().await.unwrap();
        storage
    })
}

/// (offset, header) of every valid-looking record in a segment image.
fn records(bytes: &[u8]) -> Vec<(usize, format::RecordHeader)> {
    let mut out = Vec::new();
    let mut at = FIRST_RECORD_OFFSET as usize;
    while let Ok(h) = decode_header(bytes, at, usize::MAX) {
        out.push((at, h));
        at += format::record_bytes(h.len as usize);
    }
    out
}

fn reopen(storage: &MemStorage) -> Result<Wal<MemStorage>, WalError> {
    block_on(Wal::open(storage.clone(), config())).map(|(w, _)| w)
}

/// Indexes of GROUP that read back intact.
fn indexes(wal: &Wal<MemStorage>, len: usize) -> Vec<u64> {
    let got = block_on(wal.read(GROUP, ..)).unwrap();
    for (i, p) in &got {
        assert_eq!(p, &payload(GROUP, *i, len, 0), "entry {i} payload");
    }
    got.into_iter().map(|(i, _)| i).collect()
}

fn with_file(storage: &MemStorage, seq: u64, f: impl FnOnce(&mut Vec<u8>)) -> MemStorage {
    let copy = storage.crash(cairn_wal::storage::CrashMode::DropUnsynced);
    let name = segment_name(seq);
    let mut bytes = copy.file_bytes(&name).expect("segment");
    f(&mut bytes);
    copy.set_file_bytes(&name, bytes);
    copy
}

fn expect_corrupt(r: Result<Wal<MemStorage>, WalError>, seq: u64, offset: u64) -> String {
    match r {
        Err(WalError::Corrupt {
            file,
            offset: o,
            reason,
        }) => {
            assert!(file.ends_with(&segment_name(seq)), "names the file: {file}");
            assert_eq!(o, offset, "names the offset ({reason})");
            reason
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, open succeeded"),
    }
}

#[test]
fn torn_last_record_is_truncated_at_every_byte() {
    let len = 100;
    let storage = build(5, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let (last_off, last) = *records(&bytes).last().unwrap();
    assert_eq!(last.index, 5);
    let intact_from = format::RECORD_HEADER_BYTES + len + format::RECORD_CRC_BYTES;
    for fill in [0x00u8, 0xA5] {
        for cut in 0..format::record_bytes(len) {
            let s = with_file(&storage, 1, |b| {
                b[last_off + cut..last_off + format::record_bytes(len)].fill(fill)
            });
            let wal = reopen(&s).unwrap_or_else(|e| panic!("cut {cut} fill {fill:#x}: {e}"));
            let want: Vec<u64> = if cut >= intact_from {
                (1..=5).collect()
            } else {
                (1..=4).collect()
            };
            assert_eq!(
                indexes(&wal, len),
                want,
                "cut at byte {cut} of the last record, fill {fill:#x}"
            );
            // The log stays appendable where it was cut, and the repair is durable.
            let next = *want.last().unwrap() + 1;
            block_on(async {
                wal.append(GROUP, [(next, payload(GROUP, next, len, 0).as_slice())])
                    .await
                    .unwrap();
                wal.sync_all().await.unwrap();
            });
            drop(wal);
            let wal = reopen(&s.crash(cairn_wal::storage::CrashMode::DropUnsynced)).unwrap();
            assert_eq!(indexes(&wal, len), (1..=next).collect::<Vec<_>>());
        }
    }
}

#[test]
fn bit_flips_in_the_last_record_truncate_it() {
    let len = 64;
    let storage = build(6, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let (off, _) = *records(&bytes).last().unwrap();
    let crc_at = format::RECORD_HEADER_BYTES + len;
    // (where, byte offset within the record)
    let rows = [
        ("len", 0),
        ("kind", 4),
        ("reserved", 6),
        ("group", 9),
        ("index", 17),
        ("lsn", 25),
        ("payload", 40),
        ("payload end", crc_at - 1),
        ("crc", crc_at),
        ("crc end", crc_at + 3),
    ];
    for (what, at) in rows {
        for bit in [0, 7] {
            let s = with_file(&storage, 1, |b| b[off + at] ^= 1 << bit);
            let wal = reopen(&s).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                indexes(&wal, len),
                (1..=5).collect::<Vec<_>>(),
                "flip in {what} (bit {bit})"
            );
        }
    }
}

#[test]
fn bit_flip_in_the_middle_is_refused_with_file_and_offset() {
    let len = 200;
    // ~240 B per record: 100 records = 24 KiB, well past the 12 KiB torn window.
    let storage = build(100, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let recs = records(&bytes);
    let (off, _) = recs[10];
    for (what, at) in [
        ("header", 20usize),
        ("payload", 100),
        ("crc", format::RECORD_HEADER_BYTES + len),
    ] {
        let s = with_file(&storage, 1, |b| b[off + at] ^= 0x10);
        let reason = expect_corrupt(reopen(&s), 1, off as u64);
        assert!(reason.contains("middle"), "{what}: {reason}");
    }
}

#[test]
fn damage_within_the_torn_window_of_the_tail_is_truncated() {
    // Documented limit: damage within the last torn window cannot be told from
    // a torn write; the log is cut there.
    let len = 200;
    let storage = build(100, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let recs = records(&bytes);
    let k = recs.len() - 10;
    let (off, h) = recs[k];
    let s = with_file(&storage, 1, |b| b[off + 40] ^= 1);
    let wal = reopen(&s).unwrap();
    assert_eq!(indexes(&wal, len), (1..h.index).collect::<Vec<_>>());
}

#[test]
fn length_past_end_of_file() {
    let len = 200;
    let storage = build(100, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let recs = records(&bytes);
    // In the last record: a torn tail.
    let (last, _) = *recs.last().unwrap();
    let s = with_file(&storage, 1, |b| {
        b[last..last + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes())
    });
    assert_eq!(
        indexes(&reopen(&s).unwrap(), len),
        (1..=99).collect::<Vec<_>>()
    );
    // In a middle record with valid records beyond the window: refused.
    let (mid, _) = recs[3];
    let s = with_file(&storage, 1, |b| {
        b[mid..mid + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes())
    });
    let reason = expect_corrupt(reopen(&s), 1, mid as u64);
    assert!(reason.contains("out of bounds"), "{reason}");
}

#[test]
fn zeroed_tail_loses_only_what_it_covers() {
    let len = 150;
    let storage = build(60, len);
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let recs = records(&bytes);
    let end = recs
        .last()
        .map(|(o, h)| o + format::record_bytes(h.len as usize))
        .unwrap();
    let page_start = end / PAGE * PAGE;
    let s = with_file(&storage, 1, |b| b[page_start..].fill(0));
    let want: Vec<u64> = recs
        .iter()
        .filter(|(o, h)| {
            o + format::RECORD_HEADER_BYTES + h.len as usize + format::RECORD_CRC_BYTES
                <= page_start
        })
        .map(|(_, h)| h.index)
        .collect();
    assert!(want.len() < 60 && !want.is_empty());
    assert_eq!(indexes(&reopen(&s).unwrap(), len), want);
}

#[test]
fn stale_records_in_a_recycled_segment_are_not_read_back() {
    let len = 100;
    let storage = build(40, len);
    let seg1 = storage.file_bytes(&segment_name(1)).unwrap();
    let last_lsn = records(&seg1).last().unwrap().1.lsn;
    // Segment 2 = a recycled copy of segment 1's bytes under a fresh header.
    let mut seg2 = seg1.clone();
    let h = SegmentHeader {
        seq: 2,
        first_lsn: last_lsn + 1,
        segment_bytes: seg2.len() as u64,
        torn_window_bytes: (4096 + 2 * PAGE) as u64,
    };
    seg2[..PAGE].copy_from_slice(&h.encode());
    block_on(async {
        use cairn_wal::storage::Storage;
        storage
            .create_zeroed(&segment_name(2), seg2.len() as u64)
            .await
            .unwrap();
    });
    storage.set_file_bytes(&segment_name(2), seg2);
    let wal = reopen(&storage).unwrap();
    assert_eq!(indexes(&wal, len), (1..=40).collect::<Vec<_>>());
    assert_eq!(wal.last_lsn(), last_lsn);
    // New records go into segment 2 over the stale bytes and read back.
    block_on(async {
        for i in 41..=45 {
            wal.append(GROUP, [(i, payload(GROUP, i, len, 0).as_slice())])
                .await
                .unwrap();
        }
        wal.sync_all().await.unwrap();
    });
    drop(wal);
    assert_eq!(
        indexes(&reopen(&storage).unwrap(), len),
        (1..=45).collect::<Vec<_>>()
    );
}

#[test]
fn damaged_header_of_a_closed_segment_is_refused() {
    let (storage, _) = three_segments(1000);
    for (what, at) in [
        ("magic", 0usize),
        ("version", 8),
        ("seq", 16),
        ("first lsn", 24),
        ("crc", 48),
    ] {
        let s = with_file(&storage, 1, |b| b[at] ^= 0x01);
        let reason = expect_corrupt(reopen(&s), 1, 0);
        assert!(!reason.is_empty(), "{what}");
    }
}

#[test]
fn damaged_header_of_the_last_segment_with_records_beyond_the_window_is_refused() {
    // 100 records of ~240 B = 24 KiB, past the 12 KiB torn window.
    let storage = build(100, 200);
    for at in [0usize, 16, 48] {
        let s = with_file(&storage, 1, |b| b[at] ^= 0x01);
        let reason = expect_corrupt(reopen(&s), 1, 0);
        assert!(reason.contains("valid record follows"), "{reason}");
    }
}

#[test]
fn unwritten_header_of_the_last_segment_means_its_first_batch_never_landed() {
    // The header goes to disk with the segment's first batch, in one write.
    // If it is not there and nothing valid lies beyond the torn window, that
    // write was torn before its fdatasync returned: the segment is empty.
    let len = 10;
    let storage = build(3, len);
    let s = with_file(&storage, 1, |b| b[..PAGE].fill(0));
    let wal = reopen(&s).unwrap();
    assert_eq!(indexes(&wal, len), Vec::<u64>::new());
    // The file is reused as the next segment; the WAL works on.
    block_on(async {
        wal.append(GROUP, [(1, payload(GROUP, 1, len, 0).as_slice())])
            .await
            .unwrap();
        wal.sync_all().await.unwrap();
    });
    drop(wal);
    assert_eq!(indexes(&reopen(&s).unwrap(), len), vec![1]);
}

/// Three segments of GROUP entries (rotation at 64 KiB).
fn three_segments(len: usize) -> (MemStorage, u64) {
    let mut n = 0;
    let storage = block_on(async {
        let storage = MemStorage::new();
        let (wal, _) = Wal::open(storage.clone(), config()).await.unwrap();
        while wal.segment_count() < 3 {
            n += 1;
            wal.append(GROUP, [(n, payload(GROUP, n, len, 0).as_slice())])
                .await
                .unwrap();
            wal.sync_all().await.unwrap();
        }
        storage
    });
    (storage, n)
}

#[test]
fn missing_middle_segment_is_refused() {
    let (storage, _) = three_segments(1000);
    let s = storage.crash(cairn_wal::storage::CrashMode::DropUnsynced);
    block_on(async {
        use cairn_wal::storage::Storage;
        s.remove(&segment_name(2)).await.unwrap();
    });
    let reason = expect_corrupt(reopen(&s), 2, 0);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn damage_at_the_end_of_a_closed_segment_is_refused() {
    let len = 1000;
    let (storage, n) = three_segments(len);
    assert_eq!(
        indexes(&reopen(&storage).unwrap(), len),
        (1..=n).collect::<Vec<_>>()
    );
    let bytes = storage.file_bytes(&segment_name(1)).unwrap();
    let (off, _) = *records(&bytes).last().unwrap();
    let s = with_file(&storage, 1, |b| b[off + 50] ^= 0x04);
    let reason = expect_corrupt(reopen(&s), 1, off as u64);
    assert!(reason.contains("missing"), "{reason}");
}
