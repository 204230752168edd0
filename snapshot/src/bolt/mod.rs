//! bbolt's on-disk format (the version etcd 3.4 uses: bbolt 1.3.x, file format
//! version 2), as plain encode/decode functions shared by the writer and the
//! reader. Learned from bbolt's `page.go`, `db.go` (meta), `bucket.go` and
//! `node.go`; all integers are little-endian (bbolt writes its structs in host
//! order, and every platform etcd ships for is little-endian).
//!
//! ```text
//! page header (16 bytes)      id u64 | flags u16 | count u16 | overflow u32
//!   flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist
//!   a page spans 1 + overflow consecutive page-size blocks; page id = offset / page size
//! branch element (16 bytes)   pos u32 | ksize u32 | pgid u64
//! leaf element (16 bytes)     flags u32 | pos u32 | ksize u32 | vsize u32
//!   (flags 0x01: the value is a bucket); `pos` counts from the element's own
//!   first byte to its key; the value follows the key. Elements come first,
//!   then the keys/values in element order.
//! bucket value (16 bytes)     root u64 | sequence u64
//!   root 0 = inline bucket: a leaf page (header + elements) follows in the value
//! meta (64 bytes, at offset 16 of pages 0 and 1)
//!   magic u32 0xED0CDAED | version u32 2 | page_size u32 | flags u32
//!   root bucket (root u64, sequence u64) | freelist u64 | pgid u64 (high water mark)
//!   | txid u64 | checksum u64 = FNV-1a 64 over the 56 bytes before it
//!   freelist u64::MAX = "no freelist synced" (bbolt's NoFreelistSync, etcd 3.4's setting)
//! freelist page               count free page ids (u64 each); count 0xFFFF: the
//!                             real count is the first u64
//! ```
//!
//! [`write`] builds a compact file as a stream; [`read`] walks one.

pub mod read;
#[cfg(test)]
mod tests;
pub mod write;

/// Page header length.
pub const PAGE_HEADER_BYTES: usize = 16;
/// Length of one branch or leaf element header.
pub const ELEMENT_BYTES: usize = 16;
/// Length of a bucket value's header (root + sequence).
pub const BUCKET_HEADER_BYTES: usize = 16;
/// Length of the meta fields including the checksum.
pub const META_BYTES: usize = 64;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket.
pub const ELEMENT_BUCKET: u32 = 0x01;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// Meta `freelist` value meaning "no freelist page was synced".
pub const PGID_NO_FREELIST: u64 = u64::MAX;
/// bbolt's `MaxKeySize`.
pub const KEY_BYTES_MAX: usize = 32768;
/// bbolt's `MaxValueSize`.
pub const VALUE_BYTES_MAX: usize = (1 << 31) - 2;
/// The page size etcd uses on Linux (the OS page size) and our default.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;
/// Page sizes we write and accept: powers of two in this range.
pub const PAGE_SIZE_MIN: u32 = 1024;
pub const PAGE_SIZE_MAX: u32 = 65536;

/// Whether `page_size` is one we write and read.
pub fn page_size_ok(page_size: u32) -> bool {
    page_size.is_power_of_two() && (PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&page_size)
}

/// A bucket's header: its root page (0 = inline) and its sequence counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketHeader {
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<BucketHeader> {
        Some(BucketHeader {
            root: u64_at(bytes, 0)?,
            sequence: u64_at(bytes, 8)?,
        })
    }
}

/// The meta fields of page 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    pub root: BucketHeader,
    pub freelist: u64,
    /// High water mark: the number of pages the file uses.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    /// The 56 bytes the checksum covers.
    fn fields(&self) -> [u8; 56] {
        let mut b = [0u8; 56];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.root.sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        b
    }

    /// bbolt's `meta.sum64`: FNV-1a 64 over the fields before the checksum.
    pub fn sum64(&self) -> u64 {
        fnv1a64(&self.fields())
    }

    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[..56].copy_from_slice(&self.fields());
        b[56..].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Option<Meta> {
        Some(Meta {
            magic: u32_at(bytes, 0)?,
            version: u32_at(bytes, 4)?,
            page_size: u32_at(bytes, 8)?,
            flags: u32_at(bytes, 12)?,
            root: BucketHeader::decode(bytes.get(16..32)?)?,
            freelist: u64_at(bytes, 32)?,
            pgid: u64_at(bytes, 40)?,
            txid: u64_at(bytes, 48)?,
            checksum: u64_at(bytes, 56)?,
        })
    }
}

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(bytes, 0)?,
            flags: u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?),
            count: u16::from_le_bytes(bytes.get(10..12)?.try_into().ok()?),
            overflow: u32_at(bytes, 12)?,
        })
    }
}

/// FNV-1a, 64 bit (Go's `hash/fnv.New64a`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_known_vectors() {
        // Go: fnv.New64a() over "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn meta_round_trips() {
        let mut m = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: BucketHeader {
                root: 7,
                sequence: 3,
            },
            freelist: PGID_NO_FREELIST,
            pgid: 9,
            txid: 42,
            checksum: 0,
        };
        m.checksum = m.sum64();
        assert_eq!(Meta::decode(&m.encode()), Some(m));
    }
}
