//! A real etcd 3.4 (Debian's `etcd-server`, installed by `tools/test.sh`) for
//! side-by-side tests: started on free loopback ports with a temp data dir,
//! stopped by its PID when dropped.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer after it starts.
const START_MAX: Duration = Duration::from_secs(30);

pub use crate::ports::free_port;

/// A running etcd; killed by its PID when dropped.
pub struct Etcd {
    child: Child,
    /// Its client URL (`http://127.0.0.1:<port>`).
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a single-member etcd with its data under `base` (not tmpfs)
    /// and waits until it answers a KV Range.
    ///
    /// # Panics
    /// If `etcd` is not installed or does not answer within 30 s.
    pub fn start_in(base: &Path) -> Etcd {
        let dir = tempfile::tempdir_in(base).expect("a temp dir for etcd");
        let peer = free_port();
        Self::start_on(dir, peer)
    }

    /// `etcdctl snapshot restore` of `snapshot` into a data dir under
    /// `base` (a one-member cluster), then an etcd started on it.
    ///
    /// # Panics
    /// If the restore fails, or etcd does not answer within 30 s.
    pub fn restore_in(base: &Path, snapshot: &Path) -> Etcd {
        let dir = tempfile::tempdir_in(base).expect("a temp dir for etcd");
        let peer = free_port();
        let peer_url = format!("http://127.0.0.1:{peer}");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--name", "ref", "--initial-cluster"])
            .arg(format!("ref={peer_url}"))
            .args(["--initial-advertise-peer-urls", &peer_url])
            .output()
            .expect("`etcdctl` not found: run tools/test.sh");
        assert!(
            out.status.success(),
            "etcdctl snapshot restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_on(dir, peer)
    }

    /// Starts etcd member `ref` on `dir/etcd` (a data dir, or none yet).
    fn start_on(dir: tempfile::TempDir, peer: u16) -> Etcd {
        let client = free_port();
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "ref", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("ref={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`etcd` not found: run tools/test.sh, which installs Debian's etcd-server");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        wait_serving(&etcd.url, START_MAX, || {});
        etcd
    }
}

/// Waits until `url` (an etcd v3 endpoint: etcd or cairn) answers a KV Range;
/// `check` runs between attempts (it may panic, e.g. when the process died).
///
/// # Panics
/// If nothing answers within `limit`.
pub fn wait_serving(url: &str, limit: Duration, mut check: impl FnMut()) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let deadline = Instant::now() + limit;
    loop {
        let answered = rt.block_on(async {
            let Ok(mut kv) = KvClient::connect(url.to_string()).await else {
                return false;
            };
            kv.range(RangeRequest {
                key: b"ready?".to_vec(),
                ..Default::default()
            })
            .await
            .is_ok()
        });
        if answered {
            return;
        }
        check();
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
