//! Writes a fresh, compact bbolt file as a stream into any [`std::io::Write`].
//!
//! # How (a sequential bulk build)
//! Buckets arrive in name order and keys within a bucket in byte order. Each
//! open bucket is a [`TreeBuilder`] holding one unfinished page per tree
//! level: leaf elements fill the level-0 page until the next one would not
//! fit, then that page is written with the next free page id and its first key
//! and id go up into level 1 (a branch page), which is flushed the same way
//! when full. So pages reach the sink in page-id order, the tree is built
//! bottom-up, and only the current path is in memory. A value too large for a
//! page gets a leaf page of its own that spans several page blocks (bbolt's
//! `overflow`). A bucket that ends with one small leaf (≤ page size / 4, no
//! sub-buckets) is stored inline in its parent, as bbolt does.
//!
//! # Why two passes over the input (a one-pass stream is impossible)
//! The file begins with the two meta pages, and they name the root bucket's
//! page and the high water mark (the page count). Both depend on every key
//! and value that follows, so the first 4 KiB of the stream cannot be known
//! before the last item has been seen, unless the whole file were buffered.
//! The choices were: buffer it (memory grows with the data: refused), write a
//! temporary file and seek back (needs disk, a seekable sink, and a second
//! read for the SHA-256), or run the deterministic build twice. We chose the
//! last: [`write_bolt`] runs the caller's build once into
//! [`std::io::sink`] (pass 1, nothing kept but the resulting [`Layout`]), then
//! again into the real sink with the meta pages written first from that
//! layout (pass 2). Page ids depend only on the sequence of keys and values,
//! so pass 2 reproduces them; if it does not (the input changed between the
//! passes), [`BoltWriter::finish`] fails with [`WriteError::PlanMismatch`] and
//! the output must be discarded. The cost is encoding the input twice.
//!
//! # Memory
//! Per open bucket: one page of pending elements per tree level (about
//! `page_size × depth`, depth ≈ log(keys) / log(elements per page)), plus one
//! copy of the last key (order check). A single element larger than a page
//! is held whole until written. Nothing grows with the number of keys.
//!
//! # Freelist
//! The file has no free pages, so it ends with an empty freelist page, which
//! every bbolt accepts (with or without `NoFreelistSync`: bbolt only scans for
//! free pages when the meta says `freelist = u64::MAX`). Meta page `i` has
//! txid `i`, as bbolt's own `init` writes them.

use std::io::{self, Write};

use super::{
    BucketHeader, Meta, PageHeader, DEFAULT_PAGE_SIZE, ELEMENT_BUCKET, ELEMENT_BYTES, FLAG_BRANCH,
    FLAG_FREELIST, FLAG_LEAF, FLAG_META, KEY_BYTES_MAX, MAGIC, PAGE_HEADER_BYTES, VALUE_BYTES_MAX,
    VERSION,
};

/// Deepest bucket nesting accepted (the root bucket is depth 0).
pub const BUCKET_DEPTH_MAX: usize = 16;

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// bbolt page size; a power of two in 1024..=65536. etcd uses the OS page size (4096).
    pub page_size: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Where pass 1 put the root and how many pages the file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub page_size: u32,
    /// Page id of the root bucket's root page.
    pub root: u64,
    /// Page count (the meta's high water mark); the file is `pages × page_size` bytes.
    pub pages: u64,
}

impl Layout {
    pub fn bytes(&self) -> u64 {
        self.pages * u64::from(self.page_size)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the bbolt stream: {0}")]
    Io(#[from] io::Error),
    #[error("page size {0} not supported (a power of two in 1024..=65536)")]
    PageSize(u32),
    #[error("keys out of order in bucket {bucket:?}: {key:?} after {previous:?} (need strictly increasing byte order)")]
    OutOfOrder {
        bucket: String,
        previous: Vec<u8>,
        key: Vec<u8>,
    },
    #[error("empty key in bucket {bucket:?} (bbolt keys are 1..=32768 bytes)")]
    EmptyKey { bucket: String },
    #[error("key of {bytes} bytes in bucket {bucket:?} (bbolt's limit is 32768)")]
    KeyTooLarge { bucket: String, bytes: usize },
    #[error("value of {bytes} bytes in bucket {bucket:?} (bbolt's limit is 2^31-2)")]
    ValueTooLarge { bucket: String, bytes: usize },
    #[error("buckets nested deeper than {BUCKET_DEPTH_MAX}")]
    TooDeep,
    #[error("put or end_bucket with no bucket open")]
    NoOpenBucket,
    #[error("finish with {0} bucket(s) still open")]
    BucketsOpen(usize),
    #[error("not a layout from pass 1 with these options: {0:?}")]
    BadPlan(Layout),
    #[error("the input changed between the two passes: planned {planned:?}, wrote root {root} and {pages} pages")]
    PlanMismatch {
        planned: Layout,
        root: u64,
        pages: u64,
    },
}

/// One pending element of a page.
struct Element {
    flags: u32,
    key: Vec<u8>,
    /// Leaf: the value. Branch: empty.
    value: Vec<u8>,
    /// Branch: the child page id.
    child: u64,
}

/// The unfinished page of one tree level.
#[derive(Default)]
struct Level {
    elements: Vec<Element>,
    /// Encoded size of the page so far, header included.
    bytes: usize,
    /// Pages already written from this level.
    written: u64,
}

/// One open bucket: its unfinished pages, bottom (leaf) level first.
struct TreeBuilder {
    name: Vec<u8>,
    levels: Vec<Level>,
    last_key: Option<Vec<u8>>,
    has_sub_buckets: bool,
}

/// A finished bucket: where its tree starts.
enum BucketRoot {
    Page(u64),
    /// The bucket's single leaf page, encoded, to store in the parent's value.
    Inline(Vec<u8>),
}

/// Writes one bbolt file; see the module doc. Use [`write_bolt`] unless you
/// drive the two passes yourself.
///
/// After any error the output is incomplete and the writer must be dropped.
pub struct BoltWriter<'a> {
    sink: &'a mut dyn Write,
    page_size: usize,
    next_pgid: u64,
    /// `[0]` is the root bucket; the last is the bucket being filled.
    buckets: Vec<TreeBuilder>,
    planned: Option<Layout>,
    page_buf: Vec<u8>,
}

impl<'a> BoltWriter<'a> {
    /// Starts a file. With `planned` (pass 2), writes the two meta pages from
    /// it at once; without (pass 1), writes zeroed placeholders.
    pub fn new(
        sink: &'a mut dyn Write,
        options: &WriteOptions,
        planned: Option<Layout>,
    ) -> Result<Self, WriteError> {
        if !super::page_size_ok(options.page_size) {
            return Err(WriteError::PageSize(options.page_size));
        }
        if let Some(plan) = planned {
            let root_ok = plan.root >= 2 && plan.root < plan.pages.saturating_sub(1);
            if plan.page_size != options.page_size || !root_ok {
                return Err(WriteError::BadPlan(plan));
            }
        }
        let page_size = options.page_size as usize;
        let w = BoltWriter {
            sink,
            page_size,
            next_pgid: 2,
            buckets: vec![TreeBuilder::new(Vec::new())],
            planned,
            page_buf: Vec::with_capacity(page_size),
        };
        for id in 0..2u64 {
            let mut page = vec![0u8; page_size];
            if let Some(plan) = planned {
                assert_eq!(
                    plan.page_size, options.page_size,
                    "plan from another page size"
                );
                PageHeader {
                    id,
                    flags: FLAG_META,
                    count: 0,
                    overflow: 0,
                }
                .encode(&mut page);
                let mut meta = Meta {
                    magic: MAGIC,
                    version: VERSION,
                    page_size: options.page_size,
                    flags: 0,
                    root: BucketHeader {
                        root: plan.root,
                        sequence: 0,
                    },
                    freelist: plan.pages - 1,
                    pgid: plan.pages,
                    txid: id,
                    checksum: 0,
                };
                meta.checksum = meta.sum64();
                page[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + super::META_BYTES]
                    .copy_from_slice(&meta.encode());
            }
            w.sink.write_all(&page)?;
        }
        Ok(w)
    }

    /// Opens a bucket named `name` inside the current one (the root bucket at
    /// first). Names and keys of one bucket share one strictly increasing order.
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), WriteError> {
        if self.buckets.len() > BUCKET_DEPTH_MAX {
            return Err(WriteError::TooDeep);
        }
        let parent = self.buckets.last_mut().ok_or(WriteError::NoOpenBucket)?;
        parent.check_key(name, 0)?;
        parent.last_key = Some(name.to_vec());
        self.buckets.push(TreeBuilder::new(name.to_vec()));
        Ok(())
    }

    /// Adds `key` = `value` to the current bucket.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
        if self.buckets.len() < 2 {
            // The root bucket holds only buckets.
            return Err(WriteError::NoOpenBucket);
        }
        let depth = self.buckets.len() - 1;
        let bucket = &mut self.buckets[depth];
        bucket.check_key(key, value.len())?;
        bucket.last_key = Some(key.to_vec());
        self.add(
            depth,
            0,
            Element {
                flags: 0,
                key: key.to_vec(),
                value: value.to_vec(),
                child: 0,
            },
        )
    }

    /// Closes the current bucket and records it in its parent.
    pub fn end_bucket(&mut self) -> Result<(), WriteError> {
        if self.buckets.len() < 2 {
            return Err(WriteError::NoOpenBucket);
        }
        let depth = self.buckets.len() - 1;
        let root = self.finish_tree(depth, true)?;
        let bucket = self.buckets.pop().ok_or(WriteError::NoOpenBucket)?;
        let mut value = Vec::with_capacity(super::BUCKET_HEADER_BYTES);
        match root {
            BucketRoot::Page(id) => BucketHeader {
                root: id,
                sequence: 0,
            }
            .encode(&mut value),
            BucketRoot::Inline(page) => {
                BucketHeader::default().encode(&mut value);
                value.extend_from_slice(&page);
            }
        }
        self.buckets[depth - 1].has_sub_buckets = true;
        self.add(
            depth - 1,
            0,
            Element {
                flags: ELEMENT_BUCKET,
                key: bucket.name,
                value,
                child: 0,
            },
        )
    }

    /// Writes the root bucket's pages and the freelist page; returns the
    /// layout written (pass 1: the plan for pass 2).
    pub fn finish(mut self) -> Result<Layout, WriteError> {
        if self.buckets.len() != 1 {
            return Err(WriteError::BucketsOpen(self.buckets.len() - 1));
        }
        let root = match self.finish_tree(0, false)? {
            BucketRoot::Page(id) => id,
            BucketRoot::Inline(_) => unreachable!("the root bucket is never inline"),
        };
        // The freelist: empty, there are no free pages.
        let freelist = self.next_pgid;
        let mut page = vec![0u8; self.page_size];
        PageHeader {
            id: freelist,
            flags: FLAG_FREELIST,
            count: 0,
            overflow: 0,
        }
        .encode(&mut page);
        self.sink.write_all(&page)?;
        self.next_pgid += 1;
        self.sink.flush()?;
        let layout = Layout {
            page_size: self.page_size as u32,
            root,
            pages: self.next_pgid,
        };
        if let Some(planned) = self.planned {
            if planned != layout {
                return Err(WriteError::PlanMismatch {
                    planned,
                    root,
                    pages: layout.pages,
                });
            }
        }
        Ok(layout)
    }

    /// Bytes held for pages not yet written (pending elements of every level
    /// of every open bucket, plus the last keys): bounded by about
    /// `page_size × tree depth` per open bucket, whatever the number of keys.
    pub fn buffered_bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| {
                b.levels.iter().map(|l| l.bytes).sum::<usize>()
                    + b.last_key.as_ref().map_or(0, Vec::len)
                    + b.name.len()
            })
            .sum()
    }

    /// Pages written to the sink so far (the meta pages included).
    pub fn pages_written(&self) -> u64 {
        self.next_pgid
    }

    /// Adds an element to level `level` of bucket `depth`, writing that
    /// level's page first if the element would not fit.
    fn add(&mut self, depth: usize, level: usize, element: Element) -> Result<(), WriteError> {
        let size = element_bytes(&element);
        let tree = &mut self.buckets[depth];
        if tree.levels.len() == level {
            tree.levels.push(Level::default());
        }
        let lv = &tree.levels[level];
        if !lv.elements.is_empty() && lv.bytes + size > self.page_size {
            self.flush(depth, level)?;
        }
        let lv = &mut self.buckets[depth].levels[level];
        if lv.elements.is_empty() {
            lv.bytes = PAGE_HEADER_BYTES;
        }
        lv.bytes += size;
        lv.elements.push(element);
        Ok(())
    }

    /// Writes the pending page of a level and adds it to the level above.
    fn flush(&mut self, depth: usize, level: usize) -> Result<(), WriteError> {
        let lv = &mut self.buckets[depth].levels[level];
        let elements = std::mem::take(&mut lv.elements);
        lv.bytes = PAGE_HEADER_BYTES;
        lv.written += 1;
        let first_key = elements.first().map(|e| e.key.clone()).unwrap_or_default();
        let id = self.write_page(level == 0, &elements)?;
        self.add(
            depth,
            level + 1,
            Element {
                flags: 0,
                key: first_key,
                value: Vec::new(),
                child: id,
            },
        )
    }

    /// Writes the remaining pages of bucket `depth` bottom-up and says where its tree starts.
    fn finish_tree(&mut self, depth: usize, may_inline: bool) -> Result<BucketRoot, WriteError> {
        let tree = &mut self.buckets[depth];
        if tree.levels.is_empty() {
            tree.levels.push(Level::default());
        }
        if tree.levels.len() == 1 && tree.levels[0].written == 0 {
            let bytes = tree.levels[0].bytes.max(PAGE_HEADER_BYTES);
            if may_inline && !tree.has_sub_buckets && bytes <= self.page_size / 4 {
                let elements = std::mem::take(&mut tree.levels[0].elements);
                let mut page = Vec::new();
                encode_page(&mut page, 0, true, &elements, bytes);
                return Ok(BucketRoot::Inline(page));
            }
        }
        let mut level = 0;
        loop {
            let tree = &self.buckets[depth];
            let top = level + 1 == tree.levels.len();
            if top && tree.levels[level].written == 0 {
                let elements = std::mem::take(&mut self.buckets[depth].levels[level].elements);
                let id = self.write_page(level == 0, &elements)?;
                return Ok(BucketRoot::Page(id));
            }
            // Not the root: every level below the top holds at least one element here.
            self.flush(depth, level)?;
            level += 1;
        }
    }

    /// Encodes a leaf or branch page, writes it with the next page id(s) and returns its id.
    fn write_page(&mut self, leaf: bool, elements: &[Element]) -> Result<u64, WriteError> {
        let id = self.next_pgid;
        let bytes = PAGE_HEADER_BYTES + elements.iter().map(element_bytes).sum::<usize>();
        let blocks = bytes.div_ceil(self.page_size).max(1);
        let mut buf = std::mem::take(&mut self.page_buf);
        encode_page(&mut buf, id, leaf, elements, blocks * self.page_size);
        // Overflow is u32 in bbolt; values are at most 2^31 bytes, so it fits.
        let overflow = u32::try_from(blocks - 1).expect("overflow fits u32");
        buf[12..16].copy_from_slice(&overflow.to_le_bytes());
        self.sink.write_all(&buf)?;
        self.next_pgid += blocks as u64;
        // Keep the reused buffer at a few pages; a large value's is dropped.
        if buf.capacity() <= 4 * self.page_size {
            self.page_buf = buf;
        }
        Ok(id)
    }
}

impl TreeBuilder {
    fn new(name: Vec<u8>) -> Self {
        TreeBuilder {
            name,
            levels: Vec::new(),
            last_key: None,
            has_sub_buckets: false,
        }
    }

    fn check_key(&self, key: &[u8], value_bytes: usize) -> Result<(), WriteError> {
        let bucket = || String::from_utf8_lossy(&self.name).into_owned();
        if key.is_empty() {
            return Err(WriteError::EmptyKey { bucket: bucket() });
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(WriteError::KeyTooLarge {
                bucket: bucket(),
                bytes: key.len(),
            });
        }
        if value_bytes > VALUE_BYTES_MAX {
            return Err(WriteError::ValueTooLarge {
                bucket: bucket(),
                bytes: value_bytes,
            });
        }
        if let Some(previous) = &self.last_key {
            if key <= previous.as_slice() {
                return Err(WriteError::OutOfOrder {
                    bucket: bucket(),
                    previous: previous.clone(),
                    key: key.to_vec(),
                });
            }
        }
        Ok(())
    }
}

fn element_bytes(e: &Element) -> usize {
    ELEMENT_BYTES + e.key.len() + e.value.len()
}

/// Encodes a page (header, element headers, then keys and values) into
/// `out`, zero-padded to `len` bytes. `overflow` is left 0.
fn encode_page(out: &mut Vec<u8>, id: u64, leaf: bool, elements: &[Element], len: usize) {
    out.clear();
    out.resize(len, 0);
    // bbolt panics on 0xFFFF or more elements; a page of at most 64 KiB holds
    // at most 4096 elements of 16 bytes, and a larger (overflow) page holds one.
    let count = u16::try_from(elements.len()).expect("element count fits a page");
    assert!(count < 0xFFFF);
    PageHeader {
        id,
        flags: if leaf { FLAG_LEAF } else { FLAG_BRANCH },
        count,
        overflow: 0,
    }
    .encode(out);
    let mut data = PAGE_HEADER_BYTES + ELEMENT_BYTES * elements.len();
    for (i, e) in elements.iter().enumerate() {
        let at = PAGE_HEADER_BYTES + ELEMENT_BYTES * i;
        let pos = (data - at) as u32;
        let header = &mut out[at..at + ELEMENT_BYTES];
        if leaf {
            header[0..4].copy_from_slice(&e.flags.to_le_bytes());
            header[4..8].copy_from_slice(&pos.to_le_bytes());
            header[8..12].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
            header[12..16].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        } else {
            header[0..4].copy_from_slice(&pos.to_le_bytes());
            header[4..8].copy_from_slice(&(e.key.len() as u32).to_le_bytes());
            header[8..16].copy_from_slice(&e.child.to_le_bytes());
        }
        out[data..data + e.key.len()].copy_from_slice(&e.key);
        data += e.key.len();
        out[data..data + e.value.len()].copy_from_slice(&e.value);
        data += e.value.len();
    }
    debug_assert!(data <= len);
}

/// Writes a bbolt file into `sink` by running `build` twice (see the module
/// doc): `build` must make the same calls both times. Returns the layout.
pub fn write_bolt<E: From<WriteError>>(
    sink: &mut dyn Write,
    options: &WriteOptions,
    mut build: impl FnMut(&mut BoltWriter<'_>) -> Result<(), E>,
) -> Result<Layout, E> {
    let mut discard = io::sink();
    let mut planner = BoltWriter::new(&mut discard, options, None)?;
    build(&mut planner)?;
    let plan = planner.finish()?;
    let mut writer = BoltWriter::new(sink, options, Some(plan))?;
    build(&mut writer)?;
    Ok(writer.finish()?)
}
