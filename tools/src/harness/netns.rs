//! Linux network namespaces for partition tests, driven with the `ip`
//! command (iproute2): a [`Net`] of N namespaces, fully meshed with one veth
//! pair per pair of namespaces, so that every link can be cut on its own.
//!
//! Names: namespaces are `cairn-<pid>-<k>` with `k` unique in the process,
//! so concurrent tests and processes never collide (a leftover of a killed
//! process that had our pid is deleted and recreated). In namespace `i` the
//! end of the link to `j` is the device `v<j>`. Each link is its own /30 in
//! 10.200.0.0/16 (the lower index gets `.1`, the higher `.2`); `lo` is up
//! in each.
//!
//! Home addresses: namespace `i` also has [`Net::home`] `10.201.0.(i+1)/32`
//! on its `lo`, and every other namespace `j` a route to it over the `j`–`i`
//! link, so one address of `i` (say a member's peer URL) is reachable from
//! every namespace whose link to `i` is up. Taking a link down deletes the
//! routes over it (the kernel drops them with the device), so a cut also
//! cuts the home addresses; healing a link adds them back. There are no
//! other routes, so traffic never leaves the namespaces.
//!
//! Bounds: at most [`MAX_NAMESPACES`] namespaces per [`Net`]. Every call is
//! a short synchronous `ip` process on the calling thread (no async), and
//! dropping the [`Net`] deletes its namespaces (and so their veths), also
//! while a test unwinds from a panic. [`Net::run_in`] runs a closure on a
//! fresh thread that entered a namespace with `setns`; sockets it creates
//! stay in that namespace wherever they are used afterwards.

use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest [`Net`] (its links must fit in 10.200.0.0/16).
pub const MAX_NAMESPACES: usize = 64;

const NETNS_DIR: &str = "/var/run/netns";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Whether namespaces can be made here; if not, why (not root, no `ip`, or
/// the kernel refuses).
pub fn available() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("no working `ip` command (install iproute2)".into()),
    }
    Net::create(2)
        .map(drop)
        .map_err(|e| format!("cannot create namespaces with veth links: {e:#}"))
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        let line: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!(
            "`ip {}` failed: {}",
            line.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The index of the link between `i` and `j` among the `n(n-1)/2` links.
fn link_index(n: usize, i: usize, j: usize) -> usize {
    let (a, b) = (i.min(j), i.max(j));
    a * n - a * (a + 1) / 2 + (b - a - 1)
}

/// The address of `i` on its link to `j` in a net of `n`.
fn link_addr(n: usize, i: usize, j: usize) -> Ipv4Addr {
    let base = link_index(n, i, j) * 4 + if i < j { 1 } else { 2 };
    Ipv4Addr::new(10, 200, (base >> 8) as u8, (base & 0xff) as u8)
}

/// The home address of namespace `i` (see the module docs).
fn home_addr(i: usize) -> Ipv4Addr {
    assert!(i < MAX_NAMESPACES, "no home address for namespace {i}");
    Ipv4Addr::new(10, 201, 0, (i + 1) as u8)
}

/// N network namespaces, one veth link between every two of them.
pub struct Net {
    n: usize,
    /// The namespaces created so far (all of them once `create` returns).
    names: Vec<String>,
}

impl Net {
    /// Creates `n` namespaces and their links, all up.
    pub fn create(n: usize) -> Result<Net> {
        ensure!(n <= MAX_NAMESPACES, "at most {MAX_NAMESPACES} namespaces");
        // Built up in place: on an error, dropping `net` removes what exists.
        let mut net = Net {
            n,
            names: Vec::with_capacity(n),
        };
        let pid = std::process::id();
        for _ in 0..n {
            let name = format!("cairn-{pid}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            if Path::new(NETNS_DIR).join(&name).exists() {
                // Left by a killed process that had our pid: stale.
                ip(&["netns", "del", &name])?;
            }
            ip(&["netns", "add", &name])?;
            net.names.push(name);
            let name = net.names.last().unwrap();
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            let home = format!("{}/32", home_addr(net.names.len() - 1));
            ip(&["-n", name, "addr", "add", &home, "dev", "lo"])?;
        }
        for i in 0..n {
            for j in i + 1..n {
                let (ni, nj) = (&net.names[i], &net.names[j]);
                let (di, dj) = (net.dev(i, j), net.dev(j, i));
                let (ai, aj) = (net.addr_of(i, j), net.addr_of(j, i));
                ip(&[
                    "-n", ni, "link", "add", &di, "type", "veth", "peer", "name", &dj, "netns", nj,
                ])?;
                ip(&["-n", ni, "addr", "add", &format!("{ai}/30"), "dev", &di])?;
                ip(&["-n", nj, "addr", "add", &format!("{aj}/30"), "dev", &dj])?;
                ip(&["-n", ni, "link", "set", &di, "up"])?;
                ip(&["-n", nj, "link", "set", &dj, "up"])?;
                net.route_homes(i, j)?;
            }
        }
        Ok(net)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The name of namespace `i` (for `ip netns exec`, `ip -n`).
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The device in namespace `i` of its link to `j`.
    pub fn dev(&self, i: usize, j: usize) -> String {
        self.check(i, j);
        format!("v{j}")
    }

    /// The address of namespace `i` on its link to `j` (what `j` sends to).
    pub fn addr_of(&self, i: usize, j: usize) -> Ipv4Addr {
        self.check(i, j);
        link_addr(self.n, i, j)
    }

    /// The home address of namespace `i`: on its `lo`, reachable from every
    /// namespace whose link to `i` is up (see the module docs).
    pub fn home(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.n, "no namespace {i} in a net of {}", self.n);
        home_addr(i)
    }

    /// Routes the home addresses of `i` and `j` to each other over their
    /// link (which must be up: a route is refused over a device that is down).
    fn route_homes(&self, i: usize, j: usize) -> Result<()> {
        for (from, to) in [(i, j), (j, i)] {
            let dest = format!("{}/32", home_addr(to));
            let via = self.addr_of(to, from).to_string();
            let dev = self.dev(from, to);
            ip(&[
                "-n",
                self.name(from),
                "route",
                "replace",
                &dest,
                "via",
                &via,
                "dev",
                &dev,
            ])?;
        }
        Ok(())
    }

    /// `ip netns exec NAME program`: add the arguments and run it.
    pub fn exec(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name(i)]).arg(program);
        cmd
    }

    /// Runs `f` on a fresh thread inside namespace `i` and returns its
    /// result (a panic in `f` is resumed here).
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let ns = File::open(Path::new(NETNS_DIR).join(self.name(i)))?;
        let joined = std::thread::scope(|s| {
            s.spawn(move || {
                // Only this thread moves to the namespace; it ends with `f`.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
        });
        joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn set_link(&self, i: usize, j: usize, state: &str) -> Result<()> {
        ip(&["-n", self.name(i), "link", "set", &self.dev(i, j), state])?;
        ip(&["-n", self.name(j), "link", "set", &self.dev(j, i), state])
    }

    /// Cuts the link between `i` and `j` (both ends down: datagrams between
    /// them are dropped, sends fail with "network unreachable"). The routes
    /// to their home addresses over it go with the devices.
    pub fn cut(&self, i: usize, j: usize) -> Result<()> {
        self.set_link(i, j, "down")
    }

    /// Restores the link between `i` and `j`, and the routes to their home
    /// addresses over it.
    pub fn heal(&self, i: usize, j: usize) -> Result<()> {
        self.set_link(i, j, "up")?;
        self.route_homes(i, j)
    }

    /// Cuts every link of `i`.
    pub fn isolate(&self, i: usize) -> Result<()> {
        (0..self.n)
            .filter(|&j| j != i)
            .try_for_each(|j| self.cut(i, j))
    }

    /// Restores every link.
    pub fn heal_all(&self) -> Result<()> {
        for i in 0..self.n {
            for j in i + 1..self.n {
                self.heal(i, j)?;
            }
        }
        Ok(())
    }

    fn check(&self, i: usize, j: usize) {
        assert!(
            i < self.n && j < self.n && i != j,
            "no link {i}-{j} in a net of {}",
            self.n
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in &self.names {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("netns: cleanup: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
