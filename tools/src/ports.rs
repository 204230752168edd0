//! Loopback ports for tests and the harness that no two test processes can
//! share.
//!
//! Asking the kernel for a free port (bind to port 0, read it, close) leaves
//! a window in which another test process on the same machine gets the same
//! port before the server under test binds it. Here a port is taken only
//! while holding an exclusive `flock` on `/tmp/cairn-test-ports/PORT.lock`,
//! kept until the process exits (the kernel drops the lock then, also after
//! a crash), so concurrent test processes never hand out the same port. The
//! ports come from below the kernel's ephemeral range (32768–60999 by
//! default), so outgoing connections do not take them either.

use std::fs::{File, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// Where the lock files live.
const LOCK_DIR: &str = "/tmp/cairn-test-ports";
/// The ports handed out: [FIRST, FIRST + COUNT).
const FIRST: u16 = 20000;
const COUNT: u16 = 12000;

/// The locks this process holds: released when it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A loopback port no other process that uses this function holds, and
/// which nothing listens on (TCP or UDP) right now. Kept by this process
/// until it exits.
///
/// # Panics
/// If no port in the range can be had.
pub fn free_port() -> u16 {
    std::fs::create_dir_all(LOCK_DIR).expect("the port lock dir");
    // Start somewhere different in each process, then walk the range.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (std::process::id() ^ nanos) % u32::from(COUNT);
    let mut held = HELD.lock().expect("port locks");
    for i in 0..u32::from(COUNT) {
        let port = FIRST + ((start + i) % u32::from(COUNT)) as u16;
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{LOCK_DIR}/{port}.lock"))
        else {
            continue;
        };
        // SAFETY: a plain flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // another process holds it
        }
        // Held by this process already (a flock by the same process on a new
        // descriptor of the same file conflicts, so this cannot happen), or
        // in use by something that does not take the locks:
        let bindable = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if !bindable {
            continue;
        }
        held.push(file);
        return port;
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "a port handed out twice");
        for p in ports {
            assert!((FIRST..FIRST + COUNT).contains(&p));
            TcpListener::bind(("127.0.0.1", p)).expect("bindable");
        }
    }

    /// Another process (here: another open file description, as another
    /// process would have) cannot lock a port this process holds.
    #[test]
    fn a_held_port_is_locked_for_others() {
        let port = free_port();
        let other = File::open(format!("{LOCK_DIR}/{port}.lock")).expect("lock file");
        // SAFETY: as above.
        let r = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(r, 0, "port {port} could be locked again");
    }
}
