//! The servers: a single etcd 3.4 member or a two-shard cairn member with
//! auth flags, restartable while auth is enabled.

use super::{pb, Kind, PATIENCE};
use crate::common;
use pb::kv_client::KvClient;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A single etcd 3.4 member or a two-shard cairn member, with its flags, on
/// free loopback ports and a temp dir; restartable on the same data and
/// ports; SIGKILLed by its PID when dropped. Unlike `common::Cairn`, it is
/// ready when it answers at all: with auth enabled, a Range without a token
/// is refused, and that answer counts.
pub struct Proc {
    pub kind: Kind,
    child: Option<Child>,
    pub port: u16,
    peer: u16,
    flags: Vec<String>,
    base: tempfile::TempDir,
}

impl Proc {
    pub fn start(kind: Kind, flags: &[&str]) -> Proc {
        let mut p = Proc {
            kind,
            child: None,
            port: common::free_port(),
            peer: common::free_port(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            base: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
        };
        p.spawn();
        common::rt().block_on(p.ready());
        p
    }

    pub fn etcd(flags: &[&str]) -> Proc {
        Self::start(Kind::Etcd, flags)
    }

    pub fn cairn(flags: &[&str]) -> Proc {
        Self::start(Kind::Cairn, flags)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Etcd => "etcd 3.4",
            Kind::Cairn => "cairn (2 shards)",
        }
    }

    /// A file in this process's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    fn spawn(&mut self) {
        let url = self.url();
        let data = self.base.path().join("data");
        let child = match self.kind {
            Kind::Etcd => {
                let peer = format!("http://127.0.0.1:{}", self.peer);
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.file("etcd.log"))
                    .unwrap();
                Command::new("etcd")
                    .args(["--name", "ref", "--data-dir"])
                    .arg(&data)
                    .args([
                        "--listen-client-urls",
                        &url,
                        "--advertise-client-urls",
                        &url,
                    ])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("ref={peer}")])
                    .args(&self.flags)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect(
                        "`etcd` not found: run tools/test.sh, which installs Debian's etcd-server",
                    )
            }
            Kind::Cairn => Command::new(env!("CARGO_BIN_EXE_cairn"))
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &url])
                .args(["--shards", "2"])
                .args(&self.flags)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("starting cairn"),
        };
        self.child = Some(child);
    }

    /// Waits until the member answers a Range without a token: its result,
    /// or one of etcd's errors (auth enabled).
    async fn ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.file("etcd.log")).unwrap_or_default();
                panic!("{} exited while starting: {status}\n{log}", self.name());
            }
            if let Ok(mut kv) = KvClient::connect(self.url()).await {
                let r = kv.range(pb::RangeRequest::default()).await;
                match r {
                    Ok(_) => return,
                    Err(s) if s.message().starts_with("etcdserver: ") => return,
                    Err(_) => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {PATIENCE:?}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the same command again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.kill(libc::SIGTERM);
        self.spawn();
        self.ready().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}

/// What is compared with etcd: a cairn member, or a second etcd with
/// `CAIRN_AUTH_ETCD_TWICE` set.
pub fn other(flags: &[&str]) -> Proc {
    if std::env::var_os("CAIRN_AUTH_ETCD_TWICE").is_some() {
        Proc::etcd(flags)
    } else {
        Proc::cairn(flags)
    }
}
