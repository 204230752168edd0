//! Real etcd 3.4 and etcdctl for the interop tests: processes started on free
//! loopback ports with their own temp dirs (under the crate's target tmpdir),
//! stopped by PID, every wait bounded. A missing tool fails the test loudly.

#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::mvccpb::KeyValue;
use cairn_snapshot::bolt::read::{BoltReader, Event};
use cairn_snapshot::{Item, Revision, Status};

/// How long a started etcd may take to answer.
const START_WAIT_MAX: Duration = Duration::from_secs(30);

/// Panics (fails the test) if `tool` is not installed.
pub fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed: these tests need etcd 3.4's etcd and etcdctl \
             (Debian: apt-get install -y etcd-server etcd-client; see snapshot/README.md)"
        )
    })
}

pub fn tmpdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Runs `etcdctl` (API v3) with `args`; returns its output, whatever the exit status.
pub fn etcdctl(args: &[&str]) -> Output {
    Command::new(require("etcdctl"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl")
}

/// Runs `etcdctl` with `input` on its standard input; requires success.
pub fn etcdctl_stdin(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(require("etcdctl"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("etcdctl output");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs `etcdctl`, requires success, returns stdout.
pub fn etcdctl_ok(args: &[&str]) -> String {
    let out = etcdctl(args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One etcd member on loopback; killed by PID when dropped.
pub struct Etcd {
    child: Child,
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub log: PathBuf,
}

impl Etcd {
    pub fn peer(name: &str) -> (String, u16) {
        (name.to_string(), free_port())
    }

    /// Starts etcd on `data_dir` as the single member `name` with peer port `peer_port`.
    pub fn start(data_dir: &Path, name: &str, peer_port: u16, log: &Path) -> Etcd {
        Etcd::start_with(data_dir, name, peer_port, log, &[])
    }

    /// [`Etcd::start`] with extra flags.
    pub fn start_with(
        data_dir: &Path,
        name: &str,
        peer_port: u16,
        log: &Path,
        extra: &[&str],
    ) -> Etcd {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log_file = std::fs::File::create(log).expect("etcd log");
        let child = Command::new(require("etcd"))
            .args(["--name", name, "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start etcd");
        let mut etcd = Etcd {
            child,
            name: name.to_string(),
            client_url,
            peer_url,
            log: log.to_path_buf(),
        };
        etcd.wait_ready();
        etcd
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "etcd exited with {status}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            // Ready = it answers Status and knows a leader. (Not `endpoint
            // health`: with auth on, its anonymous Get is refused.)
            let out = etcdctl(&[
                "--endpoints",
                &self.client_url,
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "status",
                "-w",
                "json",
            ]);
            let leader = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v[0]["Status"]["leader"].as_u64());
            if out.status.success() && leader.is_some_and(|l| l != 0) {
                return;
            }
            assert!(
                start.elapsed() < START_WAIT_MAX,
                "etcd not healthy after {START_WAIT_MAX:?}: {}{}\netcd's log ends:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last few KiB of the member's log (the temp dir goes when the test fails).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(3000)..]).into_owned()
    }

    /// `etcdctl --endpoints <this member> args…`, required to succeed.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["--endpoints", &self.client_url, "--command-timeout=10s"];
        all.extend_from_slice(args);
        etcdctl_ok(&all)
    }

    /// Same, but returns the whole output (for expected failures).
    pub fn ctl_output(&self, args: &[&str]) -> Output {
        let mut all = vec!["--endpoints", &self.client_url, "--command-timeout=10s"];
        all.extend_from_slice(args);
        etcdctl(&all)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL to our own child's PID, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn put(main: i64, key: &str, value: &str, create: i64, version: i64, lease: i64) -> Item {
    Item::Put {
        revision: Revision { main, sub: 0 },
        kv: KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: main,
            version,
            value: value.into(),
            lease,
        },
    }
}

/// Every (bucket, key, value) of a snapshot's bbolt file, as bytes.
pub fn raw_records(path: &Path) -> Vec<(String, String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let bolt = BoltReader::open(&bytes, bytes.len() as u64 - 32).unwrap();
    let mut bucket = String::new();
    let mut out = Vec::new();
    for event in bolt.walk() {
        match event.unwrap() {
            Event::BucketBegin { name, .. } => bucket = String::from_utf8_lossy(&name).into(),
            Event::Entry { key, value } => out.push((
                bucket.clone(),
                format!("{:?}", String::from_utf8_lossy(&key)),
                format!("{:?}", String::from_utf8_lossy(&value)),
            )),
            Event::BucketEnd => {}
        }
    }
    out
}

pub fn status_of(path: &Path) -> Status {
    let out = etcdctl_ok(&["snapshot", "status", path.to_str().unwrap(), "-w", "json"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

pub fn get_json(etcd: &Etcd, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get", "-w", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&etcd.ctl(&all)).expect("get JSON")
}

/// (key, value, create, mod, version, lease) of each kv in a get's JSON.
pub fn kvs(json: &serde_json::Value) -> Vec<(String, String, i64, i64, i64, i64)> {
    let field = |kv: &serde_json::Value, f: &str| kv[f].as_i64().unwrap_or(0);
    json["kvs"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            let text =
                |f: &str| String::from_utf8(base64_decode(kv[f].as_str().unwrap_or(""))).unwrap();
            (
                text("key"),
                text("value"),
                field(kv, "create_revision"),
                field(kv, "mod_revision"),
                field(kv, "version"),
                field(kv, "lease"),
            )
        })
        .collect()
}

/// `etcdctl snapshot restore` of `snapshot` into `dir`/m1.etcd as the single
/// member m1 (the hash is checked: no --skip-hash-check), then etcd started on it.
pub fn restore_and_start(snapshot: &Path, dir: &Path) -> Etcd {
    restore_and_start_with(snapshot, dir, &[])
}

pub fn restore_and_start_with(snapshot: &Path, dir: &Path, extra: &[&str]) -> Etcd {
    let data = dir.join("m1.etcd");
    let peer = free_port();
    let peer_url = format!("http://127.0.0.1:{peer}");
    etcdctl_ok(&[
        "snapshot",
        "restore",
        snapshot.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        "m1",
        "--initial-cluster",
        &format!("m1={peer_url}"),
        "--initial-advertise-peer-urls",
        &peer_url,
    ]);
    Etcd::start_with(&data, "m1", peer, &dir.join("etcd.log"), extra)
}

/// Writes `items` as a snapshot file with the default options.
#[allow(clippy::ptr_arg)] // `&dyn SnapshotSource` needs a sized `Vec`
pub fn write_file(path: &Path, items: &Vec<Item>) -> cairn_snapshot::WriteSummary {
    let mut file = File::create(path).unwrap();
    cairn_snapshot::write_snapshot(
        &mut file,
        &cairn_snapshot::bolt::write::WriteOptions::default(),
        items,
    )
    .unwrap()
}

/// Standard base64 (etcdctl's JSON keys and values).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {s}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("Zm9vYmFy"), b"foobar");
    assert_eq!(base64_decode("Zm9vYg=="), b"foob");
}
