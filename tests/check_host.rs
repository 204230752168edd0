//! `cairn check-host`: passes on this machine's ext4 data dir; fails, naming
//! the problem, on a RAM filesystem.

use std::process::Command;

fn check_host(dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("check-host")
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_host_passes_on_a_disk_filesystem() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (ok, out) = check_host(dir.path());
    assert!(ok, "{out}");
    for name in [
        "kernel >= 5.8",
        "RLIMIT_MEMLOCK",
        "io_uring usable",
        "persistent filesystem",
        "O_DIRECT",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(name)),
            "{name}: {out}"
        );
    }
}

#[test]
fn check_host_fails_on_tmpfs() {
    // /dev/shm is tmpfs on Debian.
    let dir = std::path::Path::new("/dev/shm").join(format!("cairn-check-{}", std::process::id()));
    let (ok, out) = check_host(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("tmpfs")),
        "{out}"
    );
}

#[test]
fn check_host_refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["check-host", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
