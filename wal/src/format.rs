//! Byte layout of segments and records (see `wal/FORMAT.md`).
//!
//! Pure functions: encode into a buffer, decode from a slice. No IO.

/// Alignment and size of every write the WAL issues.
pub const PAGE: usize = 4096;
/// Records start at this offset in a segment (page 0 holds the header).
pub const FIRST_RECORD_OFFSET: u64 = PAGE as u64;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Size of the CRC after a record's payload.
pub const RECORD_CRC_BYTES: usize = 4;
/// Records start at offsets that are multiples of this.
pub const RECORD_ALIGN: usize = 8;

pub const MAGIC: &[u8; 8] = b"CAIRNWAL";
pub const FORMAT_VERSION: u32 = 1;
const SEGMENT_HEADER_CRC_OFFSET: usize = 48;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A log entry of a group: `index` is the entry's index.
    Entry = 1,
    /// Removes a group's entries `>= index`.
    Truncate = 2,
    /// Removes a group's entries `<= index`; payload is caller metadata.
    Purge = 3,
    /// Sets a group's metadata value under key `index` (0 = vote).
    Meta = 4,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Entry),
            2 => Some(Self::Truncate),
            3 => Some(Self::Purge),
            4 => Some(Self::Meta),
            _ => None,
        }
    }
}

/// The fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub kind: RecordKind,
    pub group: u64,
    pub index: u64,
    pub lsn: u64,
}

/// Bytes a record with `payload_len` bytes occupies on disk, padding included.
pub fn record_bytes(payload_len: usize) -> usize {
    align_up(
        RECORD_HEADER_BYTES + payload_len + RECORD_CRC_BYTES,
        RECORD_ALIGN,
    )
}

pub fn align_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

pub fn align_down_u64(v: u64, to: u64) -> u64 {
    v / to * to
}

/// The CRC seed of a segment: records from another segment (a recycled file)
/// do not verify under it.
pub fn segment_salt(seq: u64) -> u32 {
    (seq as u32) ^ ((seq >> 32) as u32) ^ 0x9E37_79B9
}

/// Appends one encoded record (header, payload, CRC, padding) to `out`.
pub fn encode_record(out: &mut Vec<u8>, salt: u32, header: &RecordHeader, payload: &[u8]) {
    assert_eq!(
        header.len as usize,
        payload.len(),
        "record len must match payload"
    );
    let start = out.len();
    debug_assert_eq!(start % RECORD_ALIGN, 0);
    out.extend_from_slice(&header.len.to_le_bytes());
    out.push(header.kind as u8);
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&header.group.to_le_bytes());
    out.extend_from_slice(&header.index.to_le_bytes());
    out.extend_from_slice(&header.lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let mut hasher = crc32fast::Hasher::new_with_initial(salt);
    hasher.update(&out[start..]);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    let end = start + record_bytes(payload.len());
    out.resize(end, 0);
}

/// Why the bytes at an offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordDefect {
    /// The 32 header bytes are all zero: nothing was ever written here.
    ZeroHeader,
    /// Fewer than a header's bytes remain before the segment end.
    NoRoomForHeader,
    UnknownKind(u8),
    ReservedNotZero,
    /// `len` exceeds `record_bytes_max` or the record passes the segment end.
    BadLength {
        len: u32,
    },
    /// The LSN is not the next expected one.
    LsnMismatch {
        expected: u64,
        found: u64,
    },
    /// The CRC does not verify (torn write, bit flip, or another segment's record).
    BadCrc,
}

impl std::fmt::Display for RecordDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ZeroHeader => write!(f, "zero record header"),
            Self::NoRoomForHeader => write!(f, "no room for a record header"),
            Self::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            Self::ReservedNotZero => write!(f, "reserved header bytes not zero"),
            Self::BadLength { len } => write!(f, "record length {len} out of bounds"),
            Self::LsnMismatch { expected, found } => {
                write!(f, "lsn {found} where {expected} was expected")
            }
            Self::BadCrc => write!(f, "record checksum mismatch"),
        }
    }
}

/// Decodes the header at `bytes[offset..]` without checking LSN or CRC.
pub fn decode_header(
    bytes: &[u8],
    offset: usize,
    record_bytes_max: usize,
) -> Result<RecordHeader, RecordDefect> {
    let Some(h) = bytes.get(offset..offset + RECORD_HEADER_BYTES) else {
        return Err(RecordDefect::NoRoomForHeader);
    };
    if h.iter().all(|&b| b == 0) {
        return Err(RecordDefect::ZeroHeader);
    }
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
    let kind = RecordKind::from_u8(h[4]).ok_or(RecordDefect::UnknownKind(h[4]))?;
    if h[5..8] != [0, 0, 0] {
        return Err(RecordDefect::ReservedNotZero);
    }
    if len as usize > record_bytes_max || offset + record_bytes(len as usize) > bytes.len() {
        return Err(RecordDefect::BadLength { len });
    }
    Ok(RecordHeader {
        len,
        kind,
        group: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        index: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        lsn: u64::from_le_bytes(h[24..32].try_into().expect("8 bytes")),
    })
}

/// Verifies the CRC of a record whose header decoded at `offset`.
pub fn crc_ok(bytes: &[u8], offset: usize, header: &RecordHeader, salt: u32) -> bool {
    let body_end = offset + RECORD_HEADER_BYTES + header.len as usize;
    let mut hasher = crc32fast::Hasher::new_with_initial(salt);
    hasher.update(&bytes[offset..body_end]);
    let stored = u32::from_le_bytes(
        bytes[body_end..body_end + RECORD_CRC_BYTES]
            .try_into()
            .expect("4 bytes"),
    );
    hasher.finalize() == stored
}

/// Payload of a record whose header decoded at `offset`.
pub fn payload<'a>(bytes: &'a [u8], offset: usize, header: &RecordHeader) -> &'a [u8] {
    let start = offset + RECORD_HEADER_BYTES;
    &bytes[start..start + header.len as usize]
}

/// Page 0 of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub first_lsn: u64,
    pub segment_bytes: u64,
    pub torn_window_bytes: u64,
}

impl SegmentHeader {
    /// One full page: header fields, CRC, zeros.
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE];
        page[0..8].copy_from_slice(MAGIC);
        page[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        page[12..16].copy_from_slice(&(PAGE as u32).to_le_bytes());
        page[16..24].copy_from_slice(&self.seq.to_le_bytes());
        page[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        page[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        page[40..48].copy_from_slice(&self.torn_window_bytes.to_le_bytes());
        let crc = crc32fast::hash(&page[0..SEGMENT_HEADER_CRC_OFFSET]);
        page[48..52].copy_from_slice(&crc.to_le_bytes());
        page
    }

    /// Decodes and checks page 0; the error says what is wrong.
    pub fn decode(page: &[u8]) -> Result<Self, String> {
        if page.len() < PAGE {
            return Err(format!(
                "segment shorter than its header page ({} bytes)",
                page.len()
            ));
        }
        if &page[0..8] != MAGIC {
            return Err("bad segment magic".into());
        }
        let crc = u32::from_le_bytes(page[48..52].try_into().expect("4 bytes"));
        if crc32fast::hash(&page[0..SEGMENT_HEADER_CRC_OFFSET]) != crc {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32::from_le_bytes(page[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(format!("unsupported segment format version {version}"));
        }
        let page_bytes = u32::from_le_bytes(page[12..16].try_into().expect("4 bytes"));
        if page_bytes as usize != PAGE {
            return Err(format!("unsupported page size {page_bytes}"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(page[o..o + 8].try_into().expect("8 bytes"));
        Ok(Self {
            seq: u64_at(16),
            first_lsn: u64_at(24),
            segment_bytes: u64_at(32),
            torn_window_bytes: u64_at(40),
        })
    }
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// File name of spare `n`.
pub fn spare_name(n: u64) -> String {
    format!("spare-{n:016x}.wal")
}

/// `Some(seq)` if `name` is a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `Some(n)` if `name` is a spare file name.
pub fn parse_spare_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("spare-")?.strip_suffix(".wal")?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_is_aligned() {
        let mut buf = Vec::new();
        let h = RecordHeader {
            len: 5,
            kind: RecordKind::Entry,
            group: 7,
            index: 9,
            lsn: 11,
        };
        encode_record(&mut buf, segment_salt(3), &h, b"hello");
        assert_eq!(buf.len(), record_bytes(5));
        assert_eq!(buf.len() % RECORD_ALIGN, 0);
        let got = decode_header(&buf, 0, 1 << 20).unwrap();
        assert_eq!(got, h);
        assert!(crc_ok(&buf, 0, &got, segment_salt(3)));
        assert!(
            !crc_ok(&buf, 0, &got, segment_salt(4)),
            "another segment's salt must not verify"
        );
        assert_eq!(payload(&buf, 0, &got), b"hello");
    }

    #[test]
    fn zero_header_is_end_marker() {
        let buf = vec![0u8; 64];
        assert_eq!(decode_header(&buf, 0, 1024), Err(RecordDefect::ZeroHeader));
    }

    #[test]
    fn segment_header_round_trips_and_detects_flips() {
        let h = SegmentHeader {
            seq: 42,
            first_lsn: 1000,
            segment_bytes: 1 << 20,
            torn_window_bytes: 65536,
        };
        let mut page = h.encode();
        assert_eq!(SegmentHeader::decode(&page).unwrap(), h);
        page[20] ^= 1;
        assert!(SegmentHeader::decode(&page)
            .unwrap_err()
            .contains("checksum"));
    }

    #[test]
    fn names_parse() {
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert_eq!(parse_spare_name(&spare_name(5)), Some(5));
        assert_eq!(parse_segment_name("spare-0000000000000005.wal"), None);
        assert_eq!(parse_segment_name("x.tmp"), None);
    }
}
