//! The members under test: `cairn` processes on loopback that the harness
//! starts, stops, kills, pauses and restarts by PID, each with its own data
//! dir (optionally on a small loop-mounted ext4, see [`LoopDisk`]) and its
//! stderr appended to `member-N.log`.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a (re)started member may take to answer.
pub const START_MAX: Duration = Duration::from_secs(120);

/// One member process.
pub struct Member {
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    cairn: PathBuf,
    child: Option<Child>,
    /// Exit statuses of earlier incarnations that stopped on their own.
    pub exits: Vec<String>,
    /// Failpoints (name, action) set after every start.
    pub failpoints: Vec<(String, String)>,
}

impl Member {
    /// A member (not started) named `name` on `port`.
    pub fn new(
        cairn: &Path,
        name: &str,
        port: u16,
        data_dir: PathBuf,
        log: PathBuf,
        args: Vec<String>,
    ) -> Self {
        Member {
            name: name.into(),
            port,
            data_dir,
            log,
            args,
            cairn: cairn.into(),
            child: None,
            exits: Vec::new(),
            failpoints: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process and waits until it serves (a cluster member:
    /// until it also knows a leader), then sets its failpoints.
    pub fn start(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_ready()
    }

    /// Starts the process without waiting: the members of a new cluster
    /// are all launched before any can serve (none has a leader alone).
    pub fn launch(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is running already", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("{}", self.log.display()))?;
        let mut command = Command::new(&self.cairn);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(&self.args)
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl(2) only, between fork and exec. The member dies with
        // the thread that started it (the harness's run, whose thread lives
        // until the run ends): a harness that is interrupted or crashes
        // leaves no member behind.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.cairn.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// After [`Member::launch`]: waits until it serves, then sets its
    /// failpoints.
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait_serving()?;
        for (name, action) in &self.failpoints {
            self.failpoint(name, action)?;
        }
        Ok(())
    }

    fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_MAX;
        loop {
            if let Some(status) = self.try_exit() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "{} exited while starting: {status} (its log ends: {:?})",
                    self.name,
                    tail.into_iter().rev().collect::<Vec<_>>()
                );
            }
            if let Some((200, _)) = self.http("GET", "/health", "") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not serve within {START_MAX:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits at most `limit` until the member says it is healthy (`GET
    /// /health` answers 200: it serves, knows a leader, has room for its
    /// log); whether it did.
    pub fn wait_healthy(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((200, _)) = self.http("GET", "/health", "") {
                return true;
            }
            if Instant::now() > deadline || !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (it is then forgotten).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        self.exits.push(status.to_string());
        Some(status)
    }

    /// Waits at most `limit` for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` to the process (by its PID).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the PID of a child this struct still owns
            // (not yet waited for, so the PID cannot have been reused).
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_child(&child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal_child(&self, child: &Child, sig: i32) {
        // SAFETY: as in `signal`.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait (SIGKILL after `limit`).
    pub fn stop(&mut self, limit: Duration) {
        if let Some(child) = &self.child {
            self.signal_child(child, libc::SIGCONT);
            self.signal_child(child, libc::SIGTERM);
        }
        if self.wait_exit(limit).is_none() {
            self.kill();
        }
    }

    /// An HTTP/1.1 request on the client port; None if nothing answered.
    pub fn http(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
    }

    /// Sets a failpoint (the member must be a `failpoints` build). When
    /// nothing answers, the error is a [`NoAnswer`].
    pub fn failpoint(&self, name: &str, action: &str) -> Result<()> {
        match self.http("PUT", &format!("/failpoints/{name}"), action) {
            Some((200, _)) => Ok(()),
            Some((404, _)) => {
                bail!(
                    "{} has no failpoints: build it with --features failpoints",
                    self.name
                )
            }
            Some(other) => bail!("setting failpoint {name} on {}: {other:?}", self.name),
            None => Err(NoAnswer {
                member: self.name.clone(),
                request: format!("setting failpoint {name}"),
            }
            .into()),
        }
    }

    /// Removes a failpoint; fine if the member is gone.
    pub fn clear_failpoint(&self, name: &str) {
        let _ = self.http("DELETE", &format!("/failpoints/{name}"), "");
    }
}

/// A request that got no answer from a member: nothing listened on its
/// port, or the connection broke or timed out before a reply. The member is
/// stopping or gone (or hangs): [`Member::wait_exit`] tells which.
#[derive(Debug)]
pub struct NoAnswer {
    pub member: String,
    /// What was asked, e.g. `setting failpoint wal::write`.
    pub request: String,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: no answer", self.request, self.member)
    }
}

impl std::error::Error for NoAnswer {}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small ext4 file system on a loop device for a member's data dir, so the
/// nemesis can fill it (disk full) and cut power to it: SIGKILL, then the
/// file system shutdown ioctl without flushing the journal or data
/// (`FS_IOC_SHUTDOWN` with `NOLOGFLUSH`, what `xfs_io -x -c 'shutdown'`
/// does and fstests' power-fail tests use), so everything the member did not
/// sync is gone after the remount. Needs root.
pub struct LoopDisk {
    pub image: PathBuf,
    pub mount: PathBuf,
    mounted: bool,
}

/// `_IOR('X', 125, __u32)`.
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Neither the journal nor data are flushed: a power cut.
const FS_SHUTDOWN_FLAGS_NOLOGFLUSH: u32 = 2;

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl LoopDisk {
    /// Makes a `mib` MiB ext4 image in `dir` and mounts it at `dir/mnt`.
    pub fn create(dir: &Path, mib: u64) -> Result<LoopDisk> {
        let image = dir.join("disk.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount)?;
        let f = std::fs::File::create(&image)?;
        f.set_len(mib << 20)?;
        drop(f);
        // No blocks reserved for root (the member runs as root here).
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        let mut disk = LoopDisk {
            image,
            mount,
            mounted: false,
        };
        disk.mount()?;
        Ok(disk)
    }

    pub fn mount(&mut self) -> Result<()> {
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&self.image)
            .arg(&self.mount))?;
        self.mounted = true;
        Ok(())
    }

    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            // A killed member's io_uring requests may hold its files for a
            // moment after it is reaped: retry a busy unmount briefly.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match run(Command::new("umount").arg(&self.mount)) {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e),
                }
            }
            self.mounted = false;
        }
        Ok(())
    }

    /// Cuts power: no unsynced byte survives. The member must be dead.
    pub fn power_cut(&mut self) -> Result<()> {
        let dir = std::fs::File::open(&self.mount)?;
        let flags = FS_SHUTDOWN_FLAGS_NOLOGFLUSH;
        use std::os::fd::AsRawFd;
        // SAFETY: FS_IOC_SHUTDOWN reads one u32 through the pointer, which
        // points at a live local for the whole call.
        let r = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN, &flags) };
        if r != 0 {
            bail!("FS_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
        }
        drop(dir);
        self.unmount()?;
        self.mount()
    }

    /// Fills the file system but for `leave` bytes with a ballast file.
    pub fn fill(&self, leave: u64) -> Result<()> {
        let free = self.free_bytes()?;
        let ballast = self.mount.join("ballast");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ballast)?;
        let len = f.metadata()?.len() + free.saturating_sub(leave);
        // SAFETY: fallocate on a file this function opened.
        use std::os::fd::AsRawFd;
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOSPC) {
                bail!("fallocate ballast: {e}");
            }
        }
        Ok(())
    }

    /// Removes the ballast, durably: a later power cut must not bring it
    /// back (the file system's journal would otherwise replay the disk to
    /// full).
    pub fn unfill(&self) -> Result<()> {
        match std::fs::remove_file(self.mount.join("ballast")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        std::fs::File::open(&self.mount)?.sync_all()?;
        Ok(())
    }

    pub fn free_bytes(&self) -> Result<u64> {
        let path = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes())?;
        // SAFETY: statvfs fills the zeroed struct; `path` is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            bail!("statvfs: {}", std::io::Error::last_os_error());
        }
        // Free for root too (reserved blocks included).
        Ok(st.f_bfree * st.f_frsize)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// Whether loop-mounted file systems can be made here (root, `mkfs.ext4`,
/// `mount`), and why not.
pub fn loop_disks_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for tool in ["mkfs.ext4", "mount", "umount"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).exists()
            || Path::new("/sbin").join(tool).exists();
        if !found {
            return Err(format!("{tool} not found"));
        }
    }
    Ok(())
}
