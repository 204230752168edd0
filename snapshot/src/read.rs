//! Reads an etcd 3.4 snapshot: checks the SHA-256 trailer the way
//! `etcdctl snapshot restore` does, then yields the file's [`Item`]s, and
//! computes `etcdctl snapshot status`'s numbers.
//!
//! # The trailer, as etcdctl 3.4 checks it (`clientv3/snapshot/v3_snapshot.go`)
//! - A file *has* a hash iff its size % 512 == 32 (`hasChecksum`: bbolt files
//!   are whole pages, so a multiple of 512, and the sum adds 32).
//! - With a hash, the hash is the last 32 bytes and the bbolt file is the
//!   rest; unless `--skip-hash-check`, SHA-256 of the first size − 32 bytes
//!   must equal it ("expected sha256 …, got …").
//! - Without one, restore refuses ("snapshot missing hash but
//!   --skip-hash-check=false") unless `--skip-hash-check`; then the whole file
//!   is the bbolt file.
//! - `etcdctl snapshot save` itself only checks that the size has a hash
//!   (size % 512 == 32), and `snapshot status` checks none.
//!
//! # `snapshot status`
//! Opens the file read-only as bbolt (trailer and all: bbolt ignores bytes
//! past its page count), runs bbolt's consistency check, then: `hash` =
//! CRC-32C over, for each top-level bucket in order, its name then each
//! key and value; `revision` = main revision of the last key of bucket `key`;
//! `totalKey` = records in all buckets; `totalSize` = page count × page size.

use std::fs::File;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bolt::read::{BoltError, BoltReader, Event, ReadAt, Walk};
use crate::crc32c::Crc32c;
use crate::etcd::{bucket, Item, SchemaError};

/// Buckets a file must have to be taken for an etcd backend.
pub const REQUIRED_BUCKETS: [&[u8]; 2] = [bucket::KEY, bucket::META];
/// Chunk size of the hash pass.
const HASH_CHUNK_BYTES_MAX: usize = 1 << 16;
const SHA256_BYTES: u64 = 32;

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// As `etcdctl snapshot restore --skip-hash-check`: do not verify the
    /// trailer, and accept a file without one.
    pub skip_hash_check: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot missing hash (size {len} is not 32 past a multiple of 512: truncated, or a plain bbolt file) but skip_hash_check is false")]
    MissingHash { len: u64 },
    #[error("snapshot hash mismatch: the trailer says sha256 {expected}, the {bolt_bytes} bytes before it hash to {computed}")]
    HashMismatch {
        expected: String,
        computed: String,
        bolt_bytes: u64,
    },
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error("not an etcd backend: bucket(s) {missing:?} missing (found {found:?})")]
    NotEtcd {
        missing: Vec<String>,
        found: Vec<String>,
    },
    #[error("top-level key {key:?} is not a bucket")]
    NotABucket { key: Vec<u8> },
    #[error("unexpected nested bucket {name:?} inside bucket {parent:?}")]
    NestedBucket { name: Vec<u8>, parent: String },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("bucket \"key\": key {key:?} is shorter than a revision")]
    ShortRevision { key: Vec<u8> },
}

/// `etcdctl snapshot status -w json`: hash, revision, totalKey, totalSize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// An etcd 3.4 snapshot whose trailer (unless skipped) and meta pages have been checked.
pub struct Snapshot<S: ReadAt> {
    source: S,
    /// Bytes of the whole file.
    len: u64,
    /// Bytes of bbolt data (the trailer excluded).
    bolt_len: u64,
    /// The trailer, if the file has one.
    sha256: Option<[u8; 32]>,
}

impl Snapshot<File> {
    /// Opens a snapshot file.
    pub fn open_file(path: &Path, options: &ReadOptions) -> Result<Self, ReadError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Snapshot::new(file, len, options)
    }
}

impl<S: ReadAt> Snapshot<S> {
    /// Checks the first `len` bytes of `source` as a snapshot: the trailer
    /// (see the module doc), the bbolt meta, and etcd's `key` and `meta` buckets.
    pub fn new(source: S, len: u64, options: &ReadOptions) -> Result<Self, ReadError> {
        let has_hash = len % 512 == SHA256_BYTES;
        let (bolt_len, sha256) = if has_hash {
            let mut sha = [0u8; 32];
            source.read_exact_at(&mut sha, len - SHA256_BYTES)?;
            (len - SHA256_BYTES, Some(sha))
        } else if options.skip_hash_check {
            (len, None)
        } else {
            return Err(ReadError::MissingHash { len });
        };
        if let (Some(expected), false) = (sha256, options.skip_hash_check) {
            let computed = sha256_prefix(&source, bolt_len)?;
            if computed != expected {
                return Err(ReadError::HashMismatch {
                    expected: hex(&expected),
                    computed: hex(&computed),
                    bolt_bytes: bolt_len,
                });
            }
        }
        let snapshot = Snapshot {
            source,
            len,
            bolt_len,
            sha256,
        };
        snapshot.check_buckets()?;
        Ok(snapshot)
    }

    fn bolt(&self) -> Result<BoltReader<'_>, BoltError> {
        BoltReader::open(&self.source, self.bolt_len)
    }

    fn check_buckets(&self) -> Result<(), ReadError> {
        let mut found = Vec::new();
        for event in self.bolt()?.walk_top_level() {
            match event? {
                Event::BucketBegin { name, .. } => found.push(name),
                Event::BucketEnd => {}
                Event::Entry { key, .. } => return Err(ReadError::NotABucket { key }),
            }
        }
        let missing: Vec<String> = REQUIRED_BUCKETS
            .iter()
            .filter(|b| !found.iter().any(|f| f == *b))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        if !missing.is_empty() {
            return Err(ReadError::NotEtcd {
                missing,
                found: found
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            });
        }
        Ok(())
    }

    /// The SHA-256 trailer, if the file has one.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.sha256
    }

    /// Bytes of the whole file and of its bbolt part.
    pub fn file_and_bolt_bytes(&self) -> (u64, u64) {
        (self.len, self.bolt_len)
    }

    /// Every record, bucket by bucket in name order, keys in order.
    pub fn items(&self) -> Result<Items<'_>, ReadError> {
        Ok(Items {
            walk: self.bolt()?.walk(),
            bucket: None,
            done: false,
        })
    }

    /// What `etcdctl snapshot status` reports for this file (see the module
    /// doc). etcdctl's status reads a file without a trailer too: open such a
    /// file with `skip_hash_check` to get its status here.
    pub fn status(&self) -> Result<Status, ReadError> {
        let bolt = self.bolt()?;
        let mut hash = Crc32c::default();
        let (mut revision, mut total_key) = (0i64, 0u64);
        let mut current: Option<Vec<u8>> = None;
        let mut depth = 0usize;
        for event in bolt.walk() {
            match event? {
                Event::BucketBegin { name, .. } => {
                    depth += 1;
                    if depth == 1 {
                        hash.update(&name);
                        current = Some(name);
                    } else if depth == 2 {
                        // etcdctl's ForEach sees a nested bucket as a key with a nil value.
                        hash.update(&name);
                        total_key += 1;
                    }
                }
                Event::BucketEnd => depth -= 1,
                Event::Entry { key, .. } if depth == 0 => {
                    return Err(ReadError::NotABucket { key });
                }
                Event::Entry { key, value } if depth == 1 => {
                    hash.update(&key);
                    hash.update(&value);
                    total_key += 1;
                    if current.as_deref() == Some(bucket::KEY) {
                        let main = key
                            .get(..8)
                            .ok_or_else(|| ReadError::ShortRevision { key: key.clone() })?;
                        revision = u64::from_be_bytes(main.try_into().expect("8")) as i64;
                    }
                }
                Event::Entry { .. } => {}
            }
        }
        Ok(Status {
            hash: hash.sum(),
            revision,
            total_key,
            total_size: bolt.size_bytes(),
        })
    }
}

/// The records of a snapshot; stops at the first error.
pub struct Items<'s> {
    walk: Walk<'s>,
    bucket: Option<Vec<u8>>,
    done: bool,
}

impl Items<'_> {
    fn step(&mut self) -> Result<Option<Item>, ReadError> {
        for event in self.walk.by_ref() {
            match event? {
                Event::BucketBegin { name, .. } => {
                    if let Some(parent) = &self.bucket {
                        return Err(ReadError::NestedBucket {
                            name,
                            parent: String::from_utf8_lossy(parent).into_owned(),
                        });
                    }
                    self.bucket = Some(name);
                }
                Event::BucketEnd => self.bucket = None,
                Event::Entry { key, value } => match &self.bucket {
                    Some(b) => return Ok(Some(Item::decode(b, &key, &value)?)),
                    None => return Err(ReadError::NotABucket { key }),
                },
            }
        }
        Ok(None)
    }
}

impl Iterator for Items<'_> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.step().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

/// SHA-256 of the first `len` bytes, read in bounded chunks.
fn sha256_prefix(source: &dyn ReadAt, len: u64) -> Result<[u8; 32], std::io::Error> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES_MAX];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(HASH_CHUNK_BYTES_MAX as u64) as usize;
        source.read_exact_at(&mut buf[..n], at)?;
        sha.update(&buf[..n]);
        at += n as u64;
    }
    Ok(sha.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
