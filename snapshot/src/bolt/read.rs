//! Reads a bbolt file: picks the valid meta page, then walks the root
//! bucket's B+tree (branch and leaf pages, overflow spans, inline and nested
//! buckets) and yields every bucket's keys in order. The freelist is never
//! read: etcd 3.4 runs bbolt with `NoFreelistSync`, so its files usually say
//! `freelist = u64::MAX`, and a reader does not need it.
//!
//! # Why our own reader, not `bbolt-rs`
//! `bbolt-rs` 1.3.10 (crates.io) was tried outside this repository: its
//! `Bolt::open_ro` on a snapshot saved from etcd 3.4.23 (300 keys, a few 3 KB
//! values, a delete) fails with `InvalidDatabase(true)`, with the SHA-256
//! trailer and without it, where bbolt itself (`etcdctl snapshot status`) and
//! this reader open it. Its README also lists "no freelist sync" as not
//! supported, which is how etcd 3.4 writes its files; it needs a file it can
//! lock and memory-map (we also read from memory); and it brings 25
//! dependencies (clap, fake, rand among them) and about 100 `unsafe` sites for
//! what is here a few hundred lines of safe code whose errors name the page at
//! fault. This reader is tested on real etcd 3.4 snapshots
//! (`tests/etcd_save.rs`).
//!
//! # What is refused, and how
//! Bad magic, version or checksum on both meta pages; a page size outside
//! 1024..=65536; a file shorter than the meta's page count; a page id out of
//! range, a page whose header names another id, of the wrong type, or whose
//! elements fall outside it; a page referenced twice (this also catches
//! cycles); keys not strictly increasing; nesting deeper than
//! [`TREE_DEPTH_MAX`] / [`super::write::BUCKET_DEPTH_MAX`].
//!
//! # Memory
//! One page (with its overflow span) per tree level of each open bucket, plus
//! a bitmap of visited pages: one bit per page of the file.

use std::fs::File;
use std::io;

use super::{
    BucketHeader, Meta, PageHeader, ELEMENT_BUCKET, ELEMENT_BYTES, FLAG_BRANCH, FLAG_LEAF, MAGIC,
    META_BYTES, PAGE_HEADER_BYTES, PGID_NO_FREELIST, VERSION,
};
use crate::bolt::write::BUCKET_DEPTH_MAX;

/// Deepest B+tree accepted within one bucket (bbolt trees of any real size
/// are under 10 levels).
pub const TREE_DEPTH_MAX: usize = 64;

/// Random-access bytes: a file or a buffer.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            )),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("reading the bbolt file: {0}")]
    Io(#[from] io::Error),
    #[error("not a bbolt file: {len} bytes is too short for two meta pages")]
    TooShort { len: u64 },
    #[error("not a valid bbolt file: meta page 0: {meta0}; meta page 1: {meta1}")]
    NoValidMeta { meta0: String, meta1: String },
    #[error("bbolt meta: page size {0} not supported (a power of two in 1024..=65536)")]
    PageSize(u32),
    #[error("bbolt meta (txid {txid}): {reason}")]
    MetaFields { txid: u64, reason: String },
    #[error("truncated bbolt file: the meta says {pages} pages of {page_size} bytes ({needed} bytes), the file has {len}")]
    Truncated {
        pages: u64,
        page_size: u32,
        needed: u64,
        len: u64,
    },
    #[error("page {id} (span {span}) is out of range: the file has {pages} pages")]
    PageOutOfRange { id: u64, span: u64, pages: u64 },
    #[error("page {id}: its header says it is page {found}")]
    PageIdMismatch { id: u64, found: u64 },
    #[error("page {id}: flags {flags:#x}, expected a {expected} page")]
    PageType {
        id: u64,
        flags: u16,
        expected: &'static str,
    },
    #[error("page {id} is referenced twice (a cycle or a shared page)")]
    PageTwice { id: u64 },
    #[error("page {id}: element {index}: {reason}")]
    Element {
        id: u64,
        index: usize,
        reason: &'static str,
    },
    #[error("bucket {bucket:?}: key {key:?} after {previous:?}: keys not in increasing order")]
    OutOfOrder {
        bucket: String,
        previous: Vec<u8>,
        key: Vec<u8>,
    },
    #[error(
        "bucket {bucket:?}: a value marked as a bucket is {bytes} bytes (not a bucket header)"
    )]
    BucketValue { bucket: String, bytes: usize },
    #[error("buckets or B+trees nested too deep (page {id})")]
    TooDeep { id: u64 },
}

/// An open bbolt file (cheap to copy: a reference and the meta).
#[derive(Clone, Copy)]
pub struct BoltReader<'s> {
    source: &'s dyn ReadAt,
    /// Bytes of bbolt data (a snapshot's trailer excluded).
    len: u64,
    meta: Meta,
}

/// Checks one meta page's fields as bbolt's `meta.validate` does.
fn check_meta(bytes: &[u8]) -> Result<Meta, String> {
    let meta = Meta::decode(bytes).ok_or("short")?;
    if meta.magic != MAGIC {
        return Err(format!(
            "bad magic {:#010x} (want {MAGIC:#010x})",
            meta.magic
        ));
    }
    if meta.version != VERSION {
        return Err(format!("version {} (want {VERSION})", meta.version));
    }
    if meta.checksum != meta.sum64() {
        return Err(format!(
            "checksum {:#018x}, the fields sum to {:#018x}",
            meta.checksum,
            meta.sum64()
        ));
    }
    Ok(meta)
}

impl<'s> BoltReader<'s> {
    /// Opens the first `len` bytes of `source` as a bbolt file.
    pub fn open(source: &'s dyn ReadAt, len: u64) -> Result<Self, BoltError> {
        let read_meta = |offset: u64| -> Result<Result<Meta, String>, BoltError> {
            let end = offset + (PAGE_HEADER_BYTES + META_BYTES) as u64;
            if end > len {
                return Ok(Err(format!("file ends before offset {end}")));
            }
            let mut buf = [0u8; PAGE_HEADER_BYTES + META_BYTES];
            source.read_exact_at(&mut buf, offset)?;
            Ok(check_meta(&buf[PAGE_HEADER_BYTES..]))
        };
        if len < 2 * u64::from(super::PAGE_SIZE_MIN) {
            return Err(BoltError::TooShort { len });
        }
        let meta0 = read_meta(0)?;
        // As bbolt: the page size comes from meta 0 if it is valid, else it is
        // assumed to be the default (4096) to find meta 1.
        let page_size = match &meta0 {
            Ok(m) => u64::from(m.page_size),
            Err(_) => u64::from(super::DEFAULT_PAGE_SIZE),
        };
        let meta1 = read_meta(page_size)?;
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(meta0), Err(meta1)) => return Err(BoltError::NoValidMeta { meta0, meta1 }),
        };
        if !super::page_size_ok(meta.page_size) {
            return Err(BoltError::PageSize(meta.page_size));
        }
        let fields = |reason: String| BoltError::MetaFields {
            txid: meta.txid,
            reason,
        };
        if meta.pgid < 3 {
            return Err(fields(format!("high water mark {} < 3", meta.pgid)));
        }
        if meta.root.root < 2 || meta.root.root >= meta.pgid {
            return Err(fields(format!(
                "root bucket page {} outside 2..{}",
                meta.root.root, meta.pgid
            )));
        }
        if meta.freelist != PGID_NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(fields(format!(
                "freelist page {} outside 2..{}",
                meta.freelist, meta.pgid
            )));
        }
        let needed = meta.pgid.checked_mul(u64::from(meta.page_size));
        if needed.is_none_or(|n| n > len) {
            return Err(BoltError::Truncated {
                pages: meta.pgid,
                page_size: meta.page_size,
                needed: needed.unwrap_or(u64::MAX),
                len,
            });
        }
        Ok(BoltReader { source, len, meta })
    }

    /// The meta page in use (the valid one with the higher txid).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn page_size(&self) -> u32 {
        self.meta.page_size
    }

    /// Bytes the database uses: page count × page size (bbolt's `tx.Size()`).
    pub fn size_bytes(&self) -> u64 {
        self.meta.pgid * u64::from(self.meta.page_size)
    }

    /// Bytes of the source that were given as bbolt data.
    pub fn source_bytes(&self) -> u64 {
        self.len
    }

    /// Walks every bucket, depth first, keys in order.
    pub fn walk(&self) -> Walk<'s> {
        self.walk_with(true)
    }

    /// Walks only the top-level entries: each bucket gives a
    /// [`Event::BucketBegin`] and at once its [`Event::BucketEnd`].
    pub fn walk_top_level(&self) -> Walk<'s> {
        self.walk_with(false)
    }

    fn walk_with(&self, descend: bool) -> Walk<'s> {
        let words = self.meta.pgid.div_ceil(64) as usize;
        Walk {
            reader: *self,
            descend,
            buckets: Vec::new(),
            visited: vec![0u64; words],
            started: false,
            done: false,
        }
    }

    /// Reads page `id` with its overflow span and checks its header.
    pub(crate) fn page(&self, id: u64) -> Result<Page, BoltError> {
        let pages = self.meta.pgid;
        if id < 2 || id >= pages {
            return Err(BoltError::PageOutOfRange { id, span: 1, pages });
        }
        let page_size = u64::from(self.meta.page_size);
        let mut head = [0u8; PAGE_HEADER_BYTES];
        self.source.read_exact_at(&mut head, id * page_size)?;
        let header = PageHeader::decode(&head).expect("16 bytes");
        if header.id != id {
            return Err(BoltError::PageIdMismatch {
                id,
                found: header.id,
            });
        }
        let span = u64::from(header.overflow) + 1;
        if id + span > pages {
            return Err(BoltError::PageOutOfRange { id, span, pages });
        }
        let mut bytes = vec![0u8; (span * page_size) as usize];
        self.source.read_exact_at(&mut bytes, id * page_size)?;
        Ok(Page { id, header, bytes })
    }
}

/// A page's bytes (its whole span), or an inline bucket's page.
pub(crate) struct Page {
    pub(crate) id: u64,
    pub(crate) header: PageHeader,
    pub(crate) bytes: Vec<u8>,
}

impl Page {
    pub(crate) fn is_leaf(&self) -> bool {
        self.header.flags & FLAG_LEAF != 0
    }

    fn element_header(&self, index: usize) -> Result<&[u8], BoltError> {
        let at = PAGE_HEADER_BYTES + ELEMENT_BYTES * index;
        self.bytes
            .get(at..at + ELEMENT_BYTES)
            .ok_or(BoltError::Element {
                id: self.id,
                index,
                reason: "element header past the end of the page",
            })
    }

    fn slice(&self, index: usize, from: u64, len: u64) -> Result<&[u8], BoltError> {
        let at = (PAGE_HEADER_BYTES + ELEMENT_BYTES * index) as u64;
        let start = at + from;
        self.bytes
            .get(start as usize..(start + len) as usize)
            .ok_or(BoltError::Element {
                id: self.id,
                index,
                reason: "key or value past the end of the page",
            })
    }

    /// A leaf element: (flags, key, value).
    pub(crate) fn leaf(&self, index: usize) -> Result<(u32, &[u8], &[u8]), BoltError> {
        let h = self.element_header(index)?;
        let word = |i: usize| u64::from(u32::from_le_bytes(h[i..i + 4].try_into().expect("4")));
        let (flags, pos, ksize, vsize) = (word(0) as u32, word(4), word(8), word(12));
        let key = self.slice(index, pos, ksize)?;
        let value = self.slice(index, pos + ksize, vsize)?;
        Ok((flags, key, value))
    }

    /// A branch element: (key, child page id).
    pub(crate) fn branch(&self, index: usize) -> Result<(&[u8], u64), BoltError> {
        let h = self.element_header(index)?;
        let pos = u64::from(u32::from_le_bytes(h[0..4].try_into().expect("4")));
        let ksize = u64::from(u32::from_le_bytes(h[4..8].try_into().expect("4")));
        let child = u64::from_le_bytes(h[8..16].try_into().expect("8"));
        Ok((self.slice(index, pos, ksize)?, child))
    }
}

/// One step of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A bucket starts; its entries follow until the matching `BucketEnd`.
    BucketBegin {
        name: Vec<u8>,
        header: BucketHeader,
    },
    /// A key and its value in the current bucket.
    Entry {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    BucketEnd,
}

/// The position inside one open bucket.
struct BucketCursor {
    name: Vec<u8>,
    /// The path from the bucket's root page to the current page, with the next index in each.
    path: Vec<(Page, usize)>,
    last_key: Option<Vec<u8>>,
}

/// A depth-first walk over a bbolt file; see [`BoltReader::walk`]. Stops at the first error.
pub struct Walk<'s> {
    reader: BoltReader<'s>,
    descend: bool,
    buckets: Vec<BucketCursor>,
    visited: Vec<u64>,
    started: bool,
    done: bool,
}

impl Walk<'_> {
    /// Reads a tree page reached from a bucket or branch, refusing a second visit.
    fn visit(&mut self, id: u64) -> Result<Page, BoltError> {
        let page = self.reader.page(id)?;
        for block in id..id + u64::from(page.header.overflow) + 1 {
            let (word, bit) = ((block / 64) as usize, block % 64);
            if self.visited[word] & (1 << bit) != 0 {
                return Err(BoltError::PageTwice { id: block });
            }
            self.visited[word] |= 1 << bit;
        }
        if page.header.flags & (FLAG_BRANCH | FLAG_LEAF) == 0 {
            return Err(BoltError::PageType {
                id,
                flags: page.header.flags,
                expected: "branch or leaf",
            });
        }
        Ok(page)
    }

    fn open_bucket(&mut self, name: Vec<u8>, root: u64) -> Result<(), BoltError> {
        let page = self.visit(root)?;
        self.buckets.push(BucketCursor {
            name,
            path: vec![(page, 0)],
            last_key: None,
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Event>, BoltError> {
        if !self.started {
            self.started = true;
            let root = self.reader.meta.root.root;
            self.open_bucket(Vec::new(), root)?;
        }
        loop {
            let depth = self.buckets.len();
            let Some(bucket) = self.buckets.last_mut() else {
                return Ok(None);
            };
            let Some((page, index)) = bucket.path.last_mut() else {
                self.buckets.pop();
                return Ok(if self.buckets.is_empty() {
                    None
                } else {
                    Some(Event::BucketEnd)
                });
            };
            if *index >= usize::from(page.header.count) {
                bucket.path.pop();
                continue;
            }
            let i = *index;
            *index += 1;
            if !page.is_leaf() {
                let (_, child) = page.branch(i)?;
                let parent = page.id;
                if bucket.path.len() >= TREE_DEPTH_MAX {
                    return Err(BoltError::TooDeep { id: parent });
                }
                let child = self.visit(child)?;
                self.buckets
                    .last_mut()
                    .expect("bucket open")
                    .path
                    .push((child, 0));
                continue;
            }
            let (flags, key, value) = page.leaf(i)?;
            let page_id = page.id;
            if let Some(previous) = &bucket.last_key {
                if key <= previous.as_slice() {
                    return Err(BoltError::OutOfOrder {
                        bucket: String::from_utf8_lossy(&bucket.name).into_owned(),
                        previous: previous.clone(),
                        key: key.to_vec(),
                    });
                }
            }
            bucket.last_key = Some(key.to_vec());
            let (key, value) = (key.to_vec(), value.to_vec());
            if flags & ELEMENT_BUCKET == 0 {
                return Ok(Some(Event::Entry { key, value }));
            }
            // A bucket: its header, then (inline) its leaf page.
            let header = BucketHeader::decode(&value).ok_or_else(|| BoltError::BucketValue {
                bucket: String::from_utf8_lossy(&key).into_owned(),
                bytes: value.len(),
            })?;
            if depth > BUCKET_DEPTH_MAX {
                return Err(BoltError::TooDeep { id: page_id });
            }
            let event = Event::BucketBegin {
                name: key.clone(),
                header,
            };
            if !self.descend {
                self.buckets.push(BucketCursor {
                    name: key,
                    path: Vec::new(),
                    last_key: None,
                });
            } else if header.root == 0 {
                let bytes = value[super::BUCKET_HEADER_BYTES..].to_vec();
                let inline = PageHeader::decode(&bytes).ok_or(BoltError::BucketValue {
                    bucket: String::from_utf8_lossy(&key).into_owned(),
                    bytes: value.len(),
                })?;
                if inline.flags & FLAG_LEAF == 0 {
                    return Err(BoltError::PageType {
                        id: page_id,
                        flags: inline.flags,
                        expected: "inline leaf",
                    });
                }
                let page = Page {
                    id: page_id,
                    header: inline,
                    bytes,
                };
                self.buckets.push(BucketCursor {
                    name: key,
                    path: vec![(page, 0)],
                    last_key: None,
                });
            } else {
                self.open_bucket(key, header.root)?;
            }
            return Ok(Some(event));
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Event, BoltError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
