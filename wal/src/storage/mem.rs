//! In-memory backend with fault injection, for tests.
//!
//! Every file keeps two images: `current` (what reads see, like the page
//! cache) and `durable` (what survives a crash). `sync` copies current to
//! durable. [`MemStorage::crash`] returns the storage a restarted process would
//! see: the durable images, plus some or all of the unsynced writes as chosen by
//! [`CrashMode`] — dropped, kept, torn at any byte, or applied sector by sector
//! in any subset (a disk that reorders writes).
//!
//! Directory operations (create, rename, remove) are durable at once in this model.

use super::Storage;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

type FileRef = Rc<RefCell<MemFile>>;

#[derive(Default)]
pub struct MemFile {
    durable: Vec<u8>,
    current: Vec<u8>,
}

/// Faults to inject. Counters start at 1 for the first call after they are set.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The Nth `write_at` fails with EIO (writing nothing).
    pub fail_write_nth: Option<u64>,
    /// The Nth `sync` fails with EIO (nothing becomes durable).
    pub fail_sync_nth: Option<u64>,
    /// `create_zeroed` fails with ENOSPC once total file bytes would exceed this.
    pub space_bytes: Option<u64>,
}

/// What of the unsynced writes survives [`MemStorage::crash`].
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Only synced data survives.
    DropUnsynced,
    /// Everything written survives (a process crash, not a power loss).
    KeepUnsynced,
    /// Unsynced writes are applied in order, `n` bytes in total: the last one torn.
    TearAt(u64),
    /// Each 512-byte sector of each unsynced write survives or not, chosen by `seed`.
    Sectors { seed: u64 },
}

#[derive(Default)]
struct MemState {
    files: BTreeMap<String, FileRef>,
    faults: Faults,
    writes: u64,
    syncs: u64,
    /// Unsynced writes in issue order.
    unsynced: Vec<(FileRef, u64, Vec<u8>)>,
    yield_on_sync: bool,
}

/// A directory in memory. Clones share it.
#[derive(Clone, Default)]
pub struct MemStorage {
    state: Rc<RefCell<MemState>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the faults to inject and restarts the call counters.
    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.state.borrow_mut();
        s.faults = faults;
        s.writes = 0;
        s.syncs = 0;
    }

    /// Makes `sync` yield to the executor once, so concurrent appenders can
    /// queue up behind an in-flight sync (as they do with real IO).
    pub fn set_yield_on_sync(&self, on: bool) {
        self.state.borrow_mut().yield_on_sync = on;
    }

    /// Number of successful syncs since the last `set_faults`.
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// The storage a restarted process sees after a crash now.
    pub fn crash(&self, mode: CrashMode) -> MemStorage {
        let s = self.state.borrow();
        // Start from the durable images, keyed by file identity.
        let mut images: Vec<(FileRef, Vec<u8>)> = s
            .files
            .values()
            .map(|f| (f.clone(), f.borrow().durable.clone()))
            .collect();
        let image_of = |images: &mut Vec<(FileRef, Vec<u8>)>, f: &FileRef| -> Option<usize> {
            images.iter().position(|(g, _)| Rc::ptr_eq(g, f))
        };
        let mut rng = match mode {
            CrashMode::Sectors { seed } => seed | 1,
            _ => 1,
        };
        let mut budget = match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::KeepUnsynced | CrashMode::Sectors { .. } => u64::MAX,
            CrashMode::TearAt(n) => n,
        };
        for (f, offset, data) in &s.unsynced {
            let Some(i) = image_of(&mut images, f) else {
                continue;
            }; // file was removed
            let img = &mut images[i].1;
            match mode {
                CrashMode::Sectors { .. } => {
                    for (k, sector) in data.chunks(512).enumerate() {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        if rng & 1 == 1 {
                            apply(img, offset + (k * 512) as u64, sector);
                        }
                    }
                }
                _ => {
                    let n = (data.len() as u64).min(budget) as usize;
                    apply(img, *offset, &data[..n]);
                    budget -= n as u64;
                }
            }
        }
        let files = s
            .files
            .iter()
            .map(|(name, f)| {
                let i = image_of(&mut images, f).expect("image of every file");
                let img = images[i].1.clone();
                (
                    name.clone(),
                    Rc::new(RefCell::new(MemFile {
                        durable: img.clone(),
                        current: img,
                    })),
                )
            })
            .collect();
        MemStorage {
            state: Rc::new(RefCell::new(MemState {
                files,
                yield_on_sync: s.yield_on_sync,
                ..MemState::default()
            })),
        }
    }

    /// The current (page-cache) bytes of `name`, for tests that corrupt files.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.state
            .borrow()
            .files
            .get(name)
            .map(|f| f.borrow().current.clone())
    }

    /// Replaces the bytes of `name`, durable at once (a test's corruption).
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let s = self.state.borrow();
        let f = s.files.get(name).expect("file exists");
        let mut f = f.borrow_mut();
        f.durable = bytes.clone();
        f.current = bytes;
    }

    /// Names of all files.
    pub fn names(&self) -> Vec<String> {
        self.state.borrow().files.keys().cloned().collect()
    }
}

fn apply(img: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[offset as usize..end].copy_from_slice(data);
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure (EIO)"))
}

impl Storage for MemStorage {
    type File = FileRef;

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    async fn create_zeroed(&self, name: &str, bytes: u64) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        if let Some(space) = s.faults.space_bytes {
            let used: u64 = s
                .files
                .values()
                .map(|f| f.borrow().current.len() as u64)
                .sum();
            if used + bytes > space {
                return Err(io::Error::from_raw_os_error(libc_enospc()));
            }
        }
        let zeros = vec![0u8; bytes as usize];
        s.files.insert(
            name.to_string(),
            Rc::new(RefCell::new(MemFile {
                durable: zeros.clone(),
                current: zeros,
            })),
        );
        Ok(())
    }

    async fn open(&self, name: &str) -> io::Result<FileRef> {
        self.state
            .borrow()
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file")))
    }

    async fn file_len(&self, file: &FileRef) -> io::Result<u64> {
        Ok(file.borrow().current.len() as u64)
    }

    async fn read_at(&self, file: &FileRef, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = file.borrow();
        let start = (offset as usize).min(f.current.len());
        let end = (offset as usize + len).min(f.current.len());
        Ok(f.current[start..end].to_vec())
    }

    async fn write_at(&self, file: &FileRef, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        s.writes += 1;
        if s.faults.fail_write_nth == Some(s.writes) {
            return Err(eio("write"));
        }
        apply(&mut file.borrow_mut().current, offset, data);
        s.unsynced.push((file.clone(), offset, data.to_vec()));
        Ok(())
    }

    async fn sync(&self, file: &FileRef) -> io::Result<()> {
        let yield_first = self.state.borrow().yield_on_sync;
        if yield_first {
            crate::yield_once::yield_now().await;
        }
        let mut s = self.state.borrow_mut();
        if s.faults.fail_sync_nth == Some(s.syncs + 1) {
            s.syncs += 1;
            return Err(eio("fsync"));
        }
        s.syncs += 1;
        let mut f = file.borrow_mut();
        f.durable = f.current.clone();
        drop(f);
        s.unsynced.retain(|(g, _, _)| !Rc::ptr_eq(g, file));
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        let f = s.files.remove(from).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{from}: no such file"))
        })?;
        s.files.insert(to.to_string(), f);
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        let f = s.files.remove(name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
        })?;
        s.unsynced.retain(|(g, _, _)| !Rc::ptr_eq(g, &f));
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("mem:{name}")
    }
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}
