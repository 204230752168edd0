//! A real 3-member etcd 3.4 cluster (Debian's etcd-server) on loopback, for
//! side-by-side tests of what a cluster answers: members `m0`..`m2`, each on
//! its own free client and peer ports, with a data dir under the caller's
//! temp dir and its log there (`<name>.log`, printed on a failed start).
//! Every process is SIGKILLed by its PID when the cluster is dropped,
//! however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the members may take to elect a leader and answer (a loaded
/// machine is slow).
const START_MAX: Duration = Duration::from_secs(60);

/// One etcd member.
pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    log: PathBuf,
    child: Option<Child>,
}

/// See the module docs.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts `n` members under `base` with `--initial-cluster-state new`
    /// and etcd's default timing (heartbeat 100 ms, election 1 s), then
    /// waits until each answers a linearizable Range (it has a leader).
    pub fn start(base: &Path, n: usize) -> EtcdCluster {
        let mut members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", super::free_port()),
                peer_url: format!("http://127.0.0.1:{}", super::free_port()),
                log: base.join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let log = std::fs::File::create(&m.log).expect("an etcd log file");
            let child = Command::new("etcd")
                .args(["--name", &m.name, "--data-dir"])
                .arg(base.join(&m.name))
                .args(["--listen-client-urls", &m.client_url])
                .args(["--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "shapes-cluster"])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("`etcd` not found: run tools/test.sh, which installs Debian's etcd-server");
            m.child = Some(child);
        }
        let mut c = EtcdCluster { members };
        for i in 0..n {
            let url = c.members[i].client_url.clone();
            let log = c.members[i].log.clone();
            let child = c.members[i].child.as_mut().expect("started");
            super::wait_serving(&url, START_MAX, || {
                if let Some(status) = child.try_wait().ok().flatten() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    panic!("etcd {url} exited while starting: {status}: {tail:#?}");
                }
            });
        }
        c
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // SAFETY: kill(2) on the PID of a child this struct started
                // and has not reaped yet.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGKILL);
                }
                let _ = child.wait();
            }
        }
    }
}
