//! `cairn check-host`: checks what LINUX_REQUIREMENTS.md lists and says what
//! to fix. Exit status 0 when every check passes.

use std::path::Path;

/// One check's outcome.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn kernel_version() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let ok = (major, minor) >= (5, 8);
    Check {
        name: "kernel >= 5.8",
        ok,
        detail: if ok {
            release.to_string()
        } else {
            format!("{release}: upgrade to Linux 5.8 or later (io_uring features glommio needs)")
        },
    }
}

fn memlock() -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let need = 512 * 1024;
    let ok = rc == 0 && (lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= need);
    Check {
        name: "RLIMIT_MEMLOCK >= 512 KiB",
        ok,
        detail: if lim.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".into()
        } else if ok {
            format!(
                "{} KiB ({} MiB per shard core is registered with io_uring when it fits; \
                 unregistered otherwise, still correct)",
                lim.rlim_cur / 1024,
                crate::raft::runtime::IO_MEMORY_BYTES >> 20
            )
        } else {
            format!(
                "{} KiB: raise it (ulimit -l 8192, LimitMEMLOCK= in a systemd unit)",
                lim.rlim_cur / 1024
            )
        },
    }
}

fn io_uring() -> Check {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let started = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(crate::raft::runtime::IO_MEMORY_BYTES)
        .spawn(|| async {})
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| format!("{e:?}")));
    match started {
        Ok(()) => Check { name: "io_uring usable", ok: true, detail: "a glommio executor started".into() },
        Err(e) => Check {
            name: "io_uring usable",
            ok: false,
            detail: format!(
                "{e}; /proc/sys/kernel/io_uring_disabled = {}; allow io_uring (sysctl, seccomp profile)",
                disabled.as_deref().map_or("?", str::trim)
            ),
        },
    }
}

fn o_direct(dir: &Path) -> Check {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = "O_DIRECT on the data dir";
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check {
            name,
            ok: false,
            detail: format!("{}: {e}", dir.display()),
        };
    }
    let path = dir.join("check-host.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        // A 4 KiB-aligned buffer, as the WAL writes.
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
        // SAFETY: allocated with a non-zero size; freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        // SAFETY: ptr points to 4096 initialized (zeroed) bytes.
        let buf = unsafe { std::slice::from_raw_parts(ptr, 4096) };
        let r = f.write_all(buf).and_then(|_| f.sync_data());
        // SAFETY: same pointer and layout as allocated.
        unsafe { std::alloc::dealloc(ptr, layout) };
        r
    })();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(()) => Check {
            name,
            ok: true,
            detail: format!(
                "{}: aligned O_DIRECT write and fdatasync work",
                dir.display()
            ),
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: format!(
                "{}: {e}; put the data dir on a filesystem with O_DIRECT (ext4, xfs)",
                dir.display()
            ),
        },
    }
}

fn persistent(dir: &Path) -> Check {
    use std::os::unix::ffi::OsStrExt;
    let name = "data dir on a persistent filesystem";
    let _ = std::fs::create_dir_all(dir);
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Check {
            name,
            ok: false,
            detail: format!("{}: not a valid path", dir.display()),
        };
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statfs struct to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Check {
            name,
            ok: false,
            detail: format!("{}: {}", dir.display(), std::io::Error::last_os_error()),
        };
    }
    // tmpfs, and ramfs (0x858458f6, not in libc).
    let ramfs: [i64; 2] = [libc::TMPFS_MAGIC, 0x8584_58f6];
    let on_ram = ramfs.contains(&(st.f_type as i64));
    Check {
        name,
        ok: !on_ram,
        detail: if on_ram {
            format!(
                "{}: tmpfs/ramfs keeps nothing across a reboot; use ext4 or xfs",
                dir.display()
            )
        } else {
            format!("{}: filesystem type {:#x}", dir.display(), st.f_type)
        },
    }
}

/// Runs every check on this host for `data_dir`.
pub fn run(data_dir: &Path) -> Vec<Check> {
    vec![
        kernel_version(),
        memlock(),
        io_uring(),
        persistent(data_dir),
        o_direct(data_dir),
    ]
}
