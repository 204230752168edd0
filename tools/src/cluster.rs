//! A local cluster: N cairn members on loopback, each with its own client
//! port, peer (UDP) port and data dir, started as processes and stopped by
//! PID. Used by `cairn-cluster` (README's cluster quick start), by the
//! tests with real processes, and by the correctness harness, which plans a
//! cluster here and runs its members itself ([`LocalCluster::member_flags`]).
//!
//! A member may advertise another peer address than the one it listens on
//! ([`LocalCluster::advertise_peers_at`]): the harness puts a UDP relay
//! there, forwarding to the member's peer port, so that it can cut and slow
//! the links between members.

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::StatusRequest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member of a [`LocalCluster`].
pub struct LocalMember {
    pub name: String,
    pub client_port: u16,
    /// The UDP port it listens on for peers (`--listen-peer-urls`).
    pub peer_port: u16,
    /// The UDP port it advertises to the others (`--initial-advertise-peer-urls`
    /// and its `--initial-cluster` entry): `peer_port` unless
    /// [`LocalCluster::advertise_peers_at`] moved it.
    pub advertise_port: u16,
    pub dir: PathBuf,
    /// `https` for mutual TLS between members (see [`LocalCluster::https_peers`]).
    pub peer_scheme: &'static str,
    /// Flags of this member alone.
    pub flags: Vec<String>,
    child: Option<Child>,
}

impl LocalMember {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The peer URL it listens on.
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    /// The peer URL the others reach it at.
    pub fn advertised_peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.advertise_port)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child this struct started and
            // has not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
            let _ = child.wait();
        }
    }
}

/// See the module docs.
pub struct LocalCluster {
    pub members: Vec<LocalMember>,
    bin: PathBuf,
    /// Flags every member gets, after the cluster's own.
    extra: Vec<String>,
    initial: String,
}

impl LocalCluster {
    /// Plans `n` members under `dir` (not started): names m0..m{n-1}, free
    /// loopback ports, `extra` flags for each.
    pub fn new(bin: &Path, dir: &Path, n: usize, extra: &[String]) -> Self {
        let members: Vec<LocalMember> = (0..n)
            .map(|i| {
                let peer_port = crate::ports::free_port();
                LocalMember {
                    name: format!("m{i}"),
                    client_port: crate::ports::free_port(),
                    peer_port,
                    advertise_port: peer_port,
                    dir: dir.join(format!("m{i}")),
                    peer_scheme: "http",
                    flags: Vec::new(),
                    child: None,
                }
            })
            .collect();
        let mut c = LocalCluster {
            members,
            bin: bin.to_path_buf(),
            extra: extra.to_vec(),
            initial: String::new(),
        };
        c.plan_initial();
        c
    }

    fn plan_initial(&mut self) {
        self.initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
            .collect::<Vec<_>>()
            .join(",");
    }

    /// `https://` peer URLs: members authenticate each other with the
    /// `--peer-*` flags each is given (in its `flags`).
    pub fn https_peers(&mut self) {
        for m in &mut self.members {
            m.peer_scheme = "https";
        }
        self.plan_initial();
    }

    /// Member `i` advertises (and `--initial-cluster` lists) port
    /// `ports[i]` instead of its peer port; something there must forward
    /// UDP to its peer port (e.g. the harness's relay). Before any start:
    /// member ids are computed from the advertised URLs.
    pub fn advertise_peers_at(&mut self, ports: &[u16]) {
        assert_eq!(ports.len(), self.members.len(), "one port per member");
        for (m, p) in self.members.iter_mut().zip(ports) {
            m.advertise_port = *p;
        }
        self.plan_initial();
    }

    /// The flags of member `i` besides `--name`, `--data-dir` and its
    /// client URLs: its peer URLs, the cluster's, the flags every member
    /// gets and its own. For a harness that runs the process itself.
    pub fn member_flags(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let mut flags: Vec<String> = [
            "--listen-peer-urls",
            &m.peer_url(),
            "--initial-advertise-peer-urls",
            &m.advertised_peer_url(),
            "--initial-cluster",
            &self.initial,
            "--initial-cluster-token",
            "cairn-local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(self.extra.iter().cloned());
        flags.extend(m.flags.iter().cloned());
        flags
    }

    /// Client URLs, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(LocalMember::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (stderr to `log`, or inherited).
    pub fn start(&mut self, i: usize, log: Option<&Path>) -> Result<()> {
        let m = &self.members[i];
        if m.child.is_some() {
            bail!("{} is running", m.name);
        }
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| path.display().to_string())?,
            ),
            None => Stdio::inherit(),
        };
        let client = m.client_url();
        let child = Command::new(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(self.member_flags(i))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Starts every member, then waits until each answers Status.
    pub fn start_all(&mut self, log_dir: Option<&Path>, limit: Duration) -> Result<()> {
        for i in 0..self.members.len() {
            let log = log_dir.map(|d| d.join(format!("{}.log", self.members[i].name)));
            self.start(i, log.as_deref())?;
        }
        for i in 0..self.members.len() {
            self.wait_ready(i, limit)?;
        }
        Ok(())
    }

    /// Waits until member `i` answers Status with a leader.
    pub fn wait_ready(&mut self, i: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("{} exited while starting: {status}", self.members[i].name);
            }
            if self.leader_seen_by(i).is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} had no leader within {limit:?}", self.members[i].name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The write leader's member id as member `i` reports it (Status).
    pub fn leader_seen_by(&self, i: usize) -> Option<u64> {
        let url = self.members[i].client_url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let mut m =
                tokio::time::timeout(Duration::from_secs(2), MaintenanceClient::connect(url))
                    .await
                    .ok()?
                    .ok()?;
            let s = tokio::time::timeout(Duration::from_secs(2), m.status(StatusRequest {}))
                .await
                .ok()?
                .ok()?
                .into_inner();
            (s.leader != 0).then_some(s.leader)
        })
    }

    /// Member `i`'s id (Status header).
    pub fn member_id(&self, i: usize) -> Option<u64> {
        let url = self.members[i].client_url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            // Bounded: a stopped (SIGSTOP) member accepts and never answers.
            let mut m =
                tokio::time::timeout(Duration::from_secs(2), MaintenanceClient::connect(url))
                    .await
                    .ok()?
                    .ok()?;
            let s = tokio::time::timeout(Duration::from_secs(2), m.status(StatusRequest {}))
                .await
                .ok()?
                .ok()?
                .into_inner();
            s.header.map(|h| h.member_id)
        })
    }

    /// The index of the member that every running member names as leader.
    pub fn agreed_leader(&self, limit: Duration) -> Result<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .collect();
        self.agreed_leader_among(&running, limit)
    }

    /// The index of the member that members `running` (by index) all name
    /// as leader, one of them; for members this struct did not start.
    pub fn agreed_leader_among(&self, running: &[usize], limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let seen: Vec<Option<u64>> = running.iter().map(|i| self.leader_seen_by(*i)).collect();
            if let Some(Some(leader)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*leader)) {
                    if let Some(i) = running
                        .iter()
                        .find(|i| self.member_id(**i) == Some(*leader))
                    {
                        return Ok(*i);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("the members did not agree on a leader within {limit:?}: {seen:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL member `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        self.members[i].signal(libc::SIGKILL);
    }

    /// SIGTERM member `i` and wait for it.
    pub fn stop(&mut self, i: usize) {
        self.members[i].signal(libc::SIGTERM);
    }

    /// Stops every member.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            m.signal(libc::SIGTERM);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.signal(libc::SIGKILL);
        }
    }
}
