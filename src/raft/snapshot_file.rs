//! The snapshot file: its format (encoding, reading and verifying it) and
//! how it and the files beside it are written durably (O_DIRECT for large
//! ones). Shared by the shards' state machines (`super::state_machine`) and
//! the meta group's (`super::meta`).
//!
//! Snapshot file: `CAIRNSNP` (8 bytes), format version (u32 LE), body length
//! (u64 LE), CRC-32 of the body (u32 LE), body (postcard: the snapshot meta and
//! the store image). A file that does not verify refuses the start, naming it.

use super::types::ShardRaft;
use openraft::alias::SnapshotMetaOf;
use std::io;
use std::path::Path;

/// What a snapshot file holds: openraft's snapshot meta (`M`) and the image.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile<M> {
    meta: M,
    data: Vec<u8>,
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 24;
pub(crate) const SNAPSHOT_FILE: &str = "current.snap";

/// The file's header and the body's beginning (the meta and the data's length);
/// the data follows as is. Together they are the header and the postcard
/// encoding of [`SnapshotFile`], without copying the data into it.
pub(crate) fn encode_snapshot_file<M: serde::Serialize>(
    meta: &M,
    data: &[u8],
) -> io::Result<([u8; SNAPSHOT_HEADER_BYTES], Vec<u8>)> {
    let mut prefix = postcard::to_stdvec(meta).map_err(io::Error::other)?;
    // postcard encodes a byte vector as its length (varint) and the bytes.
    let mut len = data.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefix.push(byte);
            break;
        }
        prefix.push(byte | 0x80);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix);
    crc.update(data);
    let body_len = (prefix.len() + data.len()) as u64;
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&body_len.to_le_bytes());
    header[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok((header, prefix))
}

/// Reads and verifies the snapshot file at `path`; `None` if there is none.
pub(crate) fn read_snapshot_file<M: serde::de::DeserializeOwned>(
    path: &Path,
) -> io::Result<Option<(M, Vec<u8>)>> {
    match std::fs::read(path) {
        Ok(bytes) => decode_snapshot_file(path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn decode_snapshot_file<M: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> io::Result<(M, Vec<u8>)> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {}: {why}", path.display()),
        )
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a cairn snapshot"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SNAPSHOT_VERSION {
        return Err(bad(&format!("unsupported format version {version}")));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let body = bytes
        .get(SNAPSHOT_HEADER_BYTES..SNAPSHOT_HEADER_BYTES + len)
        .ok_or_else(|| bad("truncated"))?;
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    let file: SnapshotFile<M> = postcard::from_bytes(body).map_err(|e| bad(&e.to_string()))?;
    Ok((file.meta, file.data))
}

/// Writes `bytes` as `dir/name` durably: temp file, fsync, rename, fsync dir.
pub(crate) fn write_durably(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    use std::io::Write;
    // Tests only: `fs::no_sync` leaves out the fsyncs of small files, the bug
    // the correctness harness's power-loss fault must be able to catch.
    #[cfg(feature = "failpoints")]
    let sync = fail::eval("fs::no_sync", |_| ()).is_none();
    #[cfg(not(feature = "failpoints"))]
    let sync = true;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total < DIRECT_WRITE_MIN || write_direct(&tmp, parts, total).is_err() {
        let mut f = std::fs::File::create(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, dir.join(name))?;
    if sync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Files at least this large are written with O_DIRECT.
const DIRECT_WRITE_MIN: usize = 4 << 20;
/// Bytes per O_DIRECT write.
const DIRECT_WRITE_BYTES: usize = 1 << 20;

/// Writes `parts` to `path` with O_DIRECT, 1 MiB at a time, then sets the
/// exact length and syncs. A large snapshot written through the page cache
/// is flushed in bulk, and every WAL fdatasync on the same disk waits behind
/// it (hundreds of ms); O_DIRECT keeps at most one 1 MiB write ahead of them.
fn write_direct(path: &Path, parts: &[&[u8]], total: usize) -> io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let layout =
        std::alloc::Layout::from_size_align(DIRECT_WRITE_BYTES, 4096).map_err(io::Error::other)?;
    struct Aligned(*mut u8, std::alloc::Layout);
    impl Drop for Aligned {
        fn drop(&mut self) {
            // SAFETY: allocated below with this layout.
            unsafe { std::alloc::dealloc(self.0, self.1) }
        }
    }
    // SAFETY: a non-zero-size layout; checked for null.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(io::Error::other("out of memory for the snapshot buffer"));
    }
    let buf = Aligned(ptr, layout);
    // SAFETY: `buf` owns DIRECT_WRITE_BYTES bytes for the rest of this function.
    let chunk = unsafe { std::slice::from_raw_parts_mut(buf.0, DIRECT_WRITE_BYTES) };
    // (part, offset in it) of the next byte to copy.
    let (mut part, mut at) = (0usize, 0usize);
    let mut offset = 0u64;
    let mut left = total;
    while left > 0 {
        let n = left.min(DIRECT_WRITE_BYTES);
        let mut filled = 0;
        while filled < n {
            let src = &parts[part][at..];
            let k = src.len().min(n - filled);
            chunk[filled..filled + k].copy_from_slice(&src[..k]);
            filled += k;
            at += k;
            if at == parts[part].len() {
                part += 1;
                at = 0;
            }
        }
        // The last write is padded to the page; the length is set below.
        let padded = n.next_multiple_of(4096);
        chunk[n..padded].fill(0);
        f.write_all_at(&chunk[..padded], offset)?;
        offset += n as u64;
        left -= n;
    }
    f.set_len(total as u64)?;
    f.sync_all()
}

/// Writes the snapshot file durably. (Its encoding buffers are as large as
/// the store; mimalloc, the server's allocator, hands such large blocks back
/// to the OS when they are freed.)
pub(super) fn write_snapshot_file(
    dir: &Path,
    meta: &SnapshotMetaOf<ShardRaft>,
    data: &[u8],
) -> io::Result<()> {
    // Tests: a failed (`return`: EIO) or slow (`sleep(ms)`) snapshot write.
    fail::fail_point!("snapshot::write", |_| Err(io::Error::from_raw_os_error(
        libc::EIO
    )));
    let (header, prefix) = encode_snapshot_file(meta, data)?;
    write_durably(dir, SNAPSHOT_FILE, &[&header, &prefix, data])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_are_written_directly_and_read_back_exactly() {
        // Under target/ (ext4 here), not /tmp: tmpfs has no O_DIRECT (the
        // buffered fallback would be tested instead).
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = tempfile::tempdir_in(&target).unwrap();
        let a: Vec<u8> = (0..(5 << 20) + 123).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = vec![7; 4095];
        for (name, parts) in [
            ("big", vec![&a[..10], &[][..], &a[10..], &b[..]]),
            ("small", vec![&b[..], &b[..10]]),
        ] {
            write_durably(dir.path(), name, &parts).unwrap();
            let back = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(back, parts.concat(), "{name}");
            assert!(!dir.path().join(format!("{name}.tmp")).exists());
        }
    }

    #[test]
    fn the_file_written_in_pieces_reads_back_and_is_checked() {
        let meta = SnapshotMetaOf::<ShardRaft>::default();
        for len in [0usize, 5, 127, 128, 300, 20_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (header, prefix) = encode_snapshot_file(&meta, &data).unwrap();
            let mut file = header.to_vec();
            file.extend_from_slice(&prefix);
            file.extend_from_slice(&data);
            let path = Path::new("test.snap");
            let (m, d): (SnapshotMetaOf<ShardRaft>, Vec<u8>) =
                decode_snapshot_file(path, &file).unwrap();
            assert_eq!((m, d), (meta.clone(), data.clone()), "{len} bytes");
            let last = file.len() - 1;
            file[last] ^= 1;
            let err = decode_snapshot_file::<SnapshotMetaOf<ShardRaft>>(path, &file).unwrap_err();
            assert!(err.to_string().contains("checksum mismatch"), "{err}");
        }
    }
}
