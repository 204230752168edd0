//! Recovery decisions: scanning one segment's bytes and judging how its
//! record stream ends (FORMAT.md, "Recovery" table). Pure: bytes in, verdict out.

use crate::format::{
    crc_ok, decode_header, segment_salt, RecordDefect, RecordHeader, SegmentHeader,
    FIRST_RECORD_OFFSET, PAGE, RECORD_ALIGN,
};

/// A valid record found by the scan.
#[derive(Clone, Debug)]
pub struct ScannedRecord {
    pub header: RecordHeader,
    pub offset: u64,
}

/// One segment, scanned up to its first invalid record.
#[derive(Debug)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    pub records: Vec<ScannedRecord>,
    /// Offset of the first invalid record (end of valid data).
    pub end_offset: u64,
    /// What was found at `end_offset`.
    pub end: RecordDefect,
    /// A valid record of this segment beyond the torn window, if any (offset).
    pub valid_beyond_window: Option<u64>,
}

impl SegmentScan {
    /// LSN of the last valid record, or `first_lsn - 1` if none.
    pub fn last_lsn(&self) -> u64 {
        self.records
            .last()
            .map_or(self.header.first_lsn - 1, |r| r.header.lsn)
    }
}

/// A refusal: the log is damaged at `offset` of the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// Scans a whole segment file image. `seq` comes from the file name;
/// `expected_first_lsn` from the previous segment (None for the oldest).
pub fn scan_segment(
    bytes: &[u8],
    seq: u64,
    expected_first_lsn: Option<u64>,
) -> Result<SegmentScan, Damage> {
    let header = SegmentHeader::decode(bytes).map_err(|reason| Damage { offset: 0, reason })?;
    if header.seq != seq {
        return Err(Damage {
            offset: 0,
            reason: format!(
                "segment header says seq {} but the file name says {seq}",
                header.seq
            ),
        });
    }
    if header.segment_bytes != bytes.len() as u64 {
        return Err(Damage {
            offset: 0,
            reason: format!(
                "segment header says {} bytes but the file has {}",
                header.segment_bytes,
                bytes.len()
            ),
        });
    }
    if header.first_lsn == 0 {
        return Err(Damage {
            offset: 0,
            reason: "segment first_lsn is 0".into(),
        });
    }
    if let Some(expected) = expected_first_lsn {
        if header.first_lsn != expected {
            return Err(Damage {
                offset: 0,
                reason: format!(
                    "segment starts at lsn {} but the previous segment ends at lsn {}: records are missing",
                    header.first_lsn,
                    expected - 1
                ),
            });
        }
    }
    // The writer never wrote a record larger than its batch bound, which the
    // header records; a larger length is damage (and would make the search costly).
    let record_bytes_max = (header.torn_window_bytes as usize).saturating_sub(2 * PAGE);
    let salt = segment_salt(seq);
    let mut records = Vec::new();
    let mut offset = FIRST_RECORD_OFFSET as usize;
    let mut next_lsn = header.first_lsn;
    let end = loop {
        match check_record(bytes, offset, salt, next_lsn, record_bytes_max) {
            Ok(h) => {
                records.push(ScannedRecord {
                    header: h,
                    offset: offset as u64,
                });
                offset += crate::format::record_bytes(h.len as usize);
                next_lsn += 1;
            }
            Err(defect) => break defect,
        }
    };
    let window_end = offset.saturating_add(header.torn_window_bytes as usize);
    let valid_beyond_window =
        find_valid_record(bytes, window_end, salt, next_lsn, record_bytes_max).map(|o| o as u64);
    Ok(SegmentScan {
        header,
        records,
        end_offset: offset as u64,
        end,
        valid_beyond_window,
    })
}

/// A record at `offset` that is valid in this segment with LSN `lsn`.
fn check_record(
    bytes: &[u8],
    offset: usize,
    salt: u32,
    lsn: u64,
    record_bytes_max: usize,
) -> Result<RecordHeader, RecordDefect> {
    let h = decode_header(bytes, offset, record_bytes_max)?;
    if h.lsn != lsn {
        return Err(RecordDefect::LsnMismatch {
            expected: lsn,
            found: h.lsn,
        });
    }
    if !crc_ok(bytes, offset, &h, salt) {
        return Err(RecordDefect::BadCrc);
    }
    Ok(h)
}

/// The first offset `>= from` (8-byte aligned) holding a record that verifies
/// with `salt` and has an LSN `>= min_lsn`.
pub fn find_valid_record(
    bytes: &[u8],
    from: usize,
    salt: u32,
    min_lsn: u64,
    record_bytes_max: usize,
) -> Option<usize> {
    let mut offset = from.div_ceil(RECORD_ALIGN) * RECORD_ALIGN;
    while offset < bytes.len() {
        if let Ok(h) = decode_header(bytes, offset, record_bytes_max) {
            if h.lsn >= min_lsn && crc_ok(bytes, offset, &h, salt) {
                return Some(offset);
            }
        }
        offset += RECORD_ALIGN;
    }
    None
}

/// How a segment's record stream ended, judged against what follows it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Last segment: new records go at `end_offset`; `zero_to` is where the
    /// damaged or stale bytes after it end (zero them before appending).
    Tail { zero_to: u64 },
    /// Not the last segment; it was closed early and the next one continues it.
    Closed,
}

/// Applies the recovery table to a scanned segment. `next_first_lsn` is the
/// next segment's first LSN, or None if this is the last segment.
pub fn judge(scan: &SegmentScan, next_first_lsn: Option<u64>) -> Result<Verdict, Damage> {
    let at = scan.end_offset;
    if let Some(beyond) = scan.valid_beyond_window {
        return Err(Damage {
            offset: at,
            reason: format!(
                "{} followed by a valid record at offset {beyond}, beyond the torn-write window: corruption in the middle of the log",
                scan.end
            ),
        });
    }
    match next_first_lsn {
        None => {
            let zero_to = at
                .saturating_add(scan.header.torn_window_bytes)
                .min(scan.header.segment_bytes);
            Ok(Verdict::Tail { zero_to })
        }
        Some(next) => {
            // A closed segment may end in zeros or in stale bytes of a recycled
            // file; what proves nothing durable is missing is that the next
            // segment starts right after the last valid record.
            let expected = scan.last_lsn() + 1;
            if next == expected {
                Ok(Verdict::Closed)
            } else {
                Err(Damage {
                    offset: at,
                    reason: format!(
                        "{} at lsn {expected}, and the next segment starts at lsn {next}: records are missing",
                        scan.end
                    ),
                })
            }
        }
    }
}
