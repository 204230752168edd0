//! Starting real `cairn` processes for integration tests: free loopback
//! ports, temp data dirs, stopped by PID (SIGTERM, or SIGKILL for crashes).
#![allow(dead_code)]

pub mod cluster;
pub mod etcd_cluster;
pub mod shapes_cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use cairn_tools::etcd::{free_port, wait_serving, Etcd};

/// A running cairn member.
pub struct Cairn {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub shards: usize,
    pub extra: Vec<String>,
}

impl Cairn {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An HTTP/1.1 request on the client port: status code and body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_with(method, path, "")
    }

    /// Sets a failpoint of this (failpoints) build: `action` in the fail
    /// crate's syntax, `off` to lift it.
    pub fn failpoint(&self, name: &str, action: &str) {
        let (code, body) = self.http_with("PUT", &format!("/failpoints/{name}"), action);
        assert_eq!(code, 200, "failpoint {name}={action}: {body}");
    }

    /// An HTTP/1.1 request with a body.
    pub fn http_with(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_request(&self.endpoint(), method, path, body)
    }

    /// A gRPC channel to this member.
    pub async fn channel(&self) -> tonic::transport::Channel {
        channel(&self.url()).await
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(dir: &Path, port: u16, shards: usize, extra: &[String]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
            .args(["--shards", &shards.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cairn")
    }

    /// Starts a member on a new data dir under `base`.
    pub fn start(base: &Path, shards: usize) -> Cairn {
        Self::start_with(base, shards, &[])
    }

    /// Starts a member with extra flags.
    pub fn start_with(base: &Path, shards: usize, extra: &[&str]) -> Cairn {
        let dir = base.join(format!("member-{}", free_port()));
        let port = free_port();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut c = Cairn {
            child: Some(Self::spawn(&dir, port, shards, &extra)),
            port,
            dir,
            shards,
            extra,
        };
        c.wait_ready();
        c
    }

    /// Starts the member again on the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.child = Some(Self::spawn(&self.dir, self.port, self.shards, &self.extra));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let url = self.url();
        let child = self.child.as_mut().expect("running");
        wait_serving(&url, Duration::from_secs(60), || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!("cairn exited while starting: {status}");
            }
        });
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for the process to exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGTERM, then wait at most `limit` for the exit; true if it exited.
    pub fn stop_within(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL: a crash.
    pub fn crash(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Runs cairn on an existing data dir with `args`, expecting it to refuse to
/// start; returns its stderr.
pub fn cairn_refuses(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "cairn started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the real etcdctl (v3 API) against `endpoint`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout", "20s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`etcdctl` not found: run tools/test.sh, which installs Debian's etcd-client");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// etcdctl that must succeed; its stdout.
pub fn ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A real etcd 3.4 (Debian's etcd-server) for side-by-side checks, with its
/// data under this crate's target tmp dir.
pub fn etcd() -> Etcd {
    Etcd::start_in(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// A random seed from `var` if set (to replay a failure), else from the
/// clock; printed either way.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{var}={seed}");
    seed
}

/// Puts `key` = `value`; the revision the put got.
pub async fn put(
    kv: &mut cairn_proto::etcdserverpb::kv_client::KvClient<tonic::transport::Channel>,
    key: impl Into<Vec<u8>>,
    value: impl Into<Vec<u8>>,
) -> i64 {
    kv.put(cairn_proto::etcdserverpb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

/// A gRPC channel to `url`.
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// An HTTP/1.1 request with a body to `endpoint` (host:port): the status
/// code and the body.
#[allow(dead_code)] // not every test binary uses it
pub fn http_request(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    // A request that is never answered fails the test, never hangs it.
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let code = out
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("code");
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Standard base64 with padding (etcdctl's JSON keys and values).
#[allow(dead_code)] // not every test binary uses it
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {s:?}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}
