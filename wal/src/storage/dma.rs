//! glommio `DmaFile` backend: O_DIRECT reads and writes through io_uring.
//!
//! Runs on a glommio `LocalExecutor` (the shard core that owns the WAL). Data
//! IO goes through the ring; directory operations (list, rename, remove, fsync
//! of the directory) have no io_uring form here and run on glommio's blocking
//! thread pool, so a directory fsync (a journal commit) never stalls the core.
//!
//! On a filesystem without O_DIRECT (tmpfs) glommio falls back to buffered IO.
//!
//! # glommio's poll-ring probe
//! The first time a process opens a DMA file on a block device, glommio reads
//! a block from it through the IOPOLL ring to learn whether the device supports
//! polled IO, and remembers the answer for the device. If that file is empty
//! (a new segment), the read ends at EOF without reaching the device, the probe
//! "succeeds", and later reads through the poll ring fail with EOPNOTSUPP on
//! devices without polling (virtio disks, seen here). So before its first DMA
//! open, this backend opens a file holding one durable block.

use super::std_fs::{list_dir, sync_dir};
use super::Storage;
use glommio::io::{DmaFile, OpenOptions};
use std::io;
use std::path::PathBuf;

/// Files in one directory, O_DIRECT through glommio.
pub struct DmaStorage {
    dir: PathBuf,
    probed: std::cell::Cell<bool>,
    /// Skip fdatasync (unsafe: nothing is durable; for tests and benchmarks).
    no_fsync: bool,
    io: WalIo,
}

/// How segment writes and syncs are issued. Files are O_DIRECT either way,
/// and reads always go through io_uring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WalIo {
    /// io_uring ops: the core stays free while the disk works. The kernel
    /// cannot fsync without blocking, so it hands each fsync to an io-wq
    /// worker thread: a thread wake-up and a completion round trip per sync.
    Ring,
    /// `pwrite(2)` and `fdatasync(2)` called on the core itself, as etcd's
    /// WAL does from its goroutine: the core (and every task on it) waits for
    /// the disk, with no ring round trips and no thread hand-off. Appends made
    /// while it waited cannot exist; the next batch holds what the woken
    /// appenders add before the next flush.
    Blocking,
    /// io_uring writes on files opened `O_DSYNC`: each write returns once its
    /// data is durable (the kernel flushes, or writes FUA, when the write
    /// completes), so `sync` has nothing left to do. One ring round trip per
    /// batch instead of two, and no io-wq hand-off for the fdatasync. The
    /// default: it met the WAL's targets against fio where `ring` did not
    /// (bench/RESULTS.md), and the core stays free while the disk works.
    #[default]
    Dsync,
}

/// `ring`, `blocking` or `dsync`, as the server's `--wal-io` and walbench's `--io` take it.
impl std::str::FromStr for WalIo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(WalIo::Ring),
            "blocking" => Ok(WalIo::Blocking),
            "dsync" => Ok(WalIo::Dsync),
            _ => Err(format!("{s:?}: expected `ring`, `blocking` or `dsync`")),
        }
    }
}

const PROBE_FILE: &str = "iopoll-probe.tmp";

impl DmaStorage {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            probed: std::cell::Cell::new(false),
            no_fsync: false,
            io: WalIo::default(),
        })
    }

    /// Chooses how writes and syncs are issued.
    pub fn io(mut self, io: WalIo) -> Self {
        self.io = io;
        self
    }

    /// Makes `sync` a no-op: acknowledged writes are then lost on a power
    /// failure or a kernel crash. For tests and benchmarks only.
    pub fn unsafe_no_fsync(mut self) -> Self {
        self.no_fsync = true;
        self
    }

    /// Makes glommio's per-device poll-ring probe read a real block (see the
    /// module docs). Once per storage; harmless if glommio already probed.
    async fn ensure_probe(&self) -> io::Result<()> {
        if self.probed.get() {
            return Ok(());
        }
        let path = self.dir.join(PROBE_FILE);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&[0u8; 4096])?;
            f.sync_all()?;
        }
        let file = OpenOptions::new()
            .read(true)
            .dma_open(&path)
            .await
            .map_err(to_io)?;
        let _ = file.close().await;
        std::fs::remove_file(&path)?;
        self.probed.set(true);
        Ok(())
    }
}

impl DmaStorage {
    /// Failpoint `name` (test builds): `return` fails the call on every
    /// shard's WAL with `errno`, `return(TEXT)` only on WALs whose directory
    /// path contains TEXT (e.g. `shard-0/`); `sleep(ms)` delays it.
    fn failpoint(&self, name: &str, errno: i32) -> io::Result<()> {
        #[cfg(feature = "failpoints")]
        if let Some(only) = fail::eval(name, |arg| arg) {
            if only.is_none_or(|text| self.dir.to_string_lossy().contains(text.as_str())) {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let _ = (name, errno);
        Ok(())
    }
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Runs a blocking filesystem call on glommio's blocking thread pool.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

impl Storage for DmaStorage {
    type File = DmaFile;

    async fn list(&self) -> io::Result<Vec<String>> {
        list_dir(&self.dir)
    }

    async fn create_zeroed(&self, name: &str, bytes: u64) -> io::Result<()> {
        self.failpoint("wal::create", libc::ENOSPC)?;
        self.ensure_probe().await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(self.dir.join(name))
            .await
            .map_err(to_io)?;
        let mut offset = 0u64;
        while offset < bytes {
            let n = (bytes - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
            let mut buf = file.alloc_dma_buffer(n);
            buf.as_bytes_mut().fill(0);
            let written = file.write_at(buf, offset).await.map_err(to_io)?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "zero-length write",
                ));
            }
            offset += written as u64;
        }
        file.fdatasync().await.map_err(to_io)?;
        file.close().await.map_err(to_io)
    }

    async fn open(&self, name: &str) -> io::Result<DmaFile> {
        let path = self.dir.join(name);
        if !self.probed.get() && std::fs::metadata(&path).is_ok_and(|m| m.len() >= 4096) {
            // An existing segment holds durable blocks (it was zero-filled
            // and synced before it got its name): glommio's probe of it is
            // a real one, and no probe file has to be written — which a
            // member starting on a full disk could not do.
            self.probed.set(true);
        }
        self.ensure_probe().await?;
        let dsync = if self.io == WalIo::Dsync && !self.no_fsync {
            libc::O_DSYNC
        } else {
            0
        };
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(dsync)
            .dma_open(path)
            .await
            .map_err(to_io)
    }

    async fn file_len(&self, file: &DmaFile) -> io::Result<u64> {
        file.file_size().await.map_err(to_io)
    }

    async fn read_at(&self, file: &DmaFile, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = file.read_at_aligned(offset, len).await.map_err(to_io)?;
        Ok(r.to_vec())
    }

    async fn write_at(&self, file: &DmaFile, offset: u64, data: &[u8]) -> io::Result<()> {
        self.failpoint("wal::write", libc::EIO)?;
        let mut done = 0usize;
        while done < data.len() {
            let rest = &data[done..];
            let mut buf = file.alloc_dma_buffer(rest.len());
            buf.as_bytes_mut().copy_from_slice(rest);
            let at = offset + done as u64;
            let n = match self.io {
                WalIo::Ring | WalIo::Dsync => file.write_at(buf, at).await.map_err(to_io)?,
                WalIo::Blocking => {
                    use std::os::fd::AsRawFd;
                    let at = libc::off_t::try_from(at)
                        .map_err(|_| io::Error::other("offset past off_t"))?;
                    // SAFETY: `buf` is a live, page-aligned allocation of at
                    // least `rest.len()` bytes (O_DIRECT needs the alignment);
                    // the fd belongs to `file`, open for the whole call.
                    let n = unsafe {
                        libc::pwrite(file.as_raw_fd(), buf.as_ptr().cast(), rest.len(), at)
                    };
                    usize::try_from(n).map_err(|_| io::Error::last_os_error())?
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "zero-length write",
                ));
            }
            done += n;
        }
        Ok(())
    }

    async fn sync(&self, file: &DmaFile) -> io::Result<()> {
        self.failpoint("wal::sync", libc::EIO)?;
        if self.no_fsync {
            return Ok(());
        }
        match self.io {
            WalIo::Ring => file.fdatasync().await.map_err(to_io),
            // Every write to a file `open` returned was durable when it returned.
            WalIo::Dsync => Ok(()),
            WalIo::Blocking => {
                use std::os::fd::AsRawFd;
                // SAFETY: the fd belongs to `file`, open for the whole call.
                match unsafe { libc::fdatasync(file.as_raw_fd()) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                }
            }
        }
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.dir.join(from), self.dir.join(to));
        blocking(move || std::fs::rename(from, to)).await
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.dir.join(name);
        blocking(move || std::fs::remove_file(path)).await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let dir = self.dir.clone();
        blocking(move || sync_dir(&dir)).await
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}
