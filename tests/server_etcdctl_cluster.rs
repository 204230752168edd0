//! `etcdctl endpoint status --cluster` and `endpoint health --cluster` with
//! the real etcdctl (Debian's etcd-client 3.4), on a member that advertises
//! its own client URL. `status --cluster` lists the members, then asks each
//! advertised client URL over a connection it dials as
//! `passthrough:///http://127.0.0.1:<port>`, so the HTTP/2 `:authority` is
//! `http://127.0.0.1:<port>`, not a bare host:port. etcd accepts that; the
//! h2 crate resets the stream with PROTOCOL_ERROR, hence the patched h2 in
//! third_party/h2 (see its README). `health --cluster` dials host:port and
//! worked before; it is checked here too.

mod common;

use common::{free_port, ok, wait_serving};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A member that advertises its own client URL (`Cairn::start` picks the
/// port itself, so it can't pass it to `--advertise-client-urls`).
struct Member(Child);

impl Member {
    fn start(dir: &std::path::Path, url: &str) -> Member {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen-client-urls", url])
            .args(["--advertise-client-urls", url])
            .args(["--shards", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cairn");
        wait_serving(url, Duration::from_secs(60), || {
            if let Some(status) = child.try_wait().ok().flatten() {
                panic!("cairn exited while starting: {status}");
            }
        });
        Member(child)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn endpoint_status_and_health_across_the_cluster() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _member = Member::start(&base.path().join("member"), &url);
    let e = format!("127.0.0.1:{port}");

    let members: serde_json::Value =
        serde_json::from_str(&ok(&e, &["member", "list", "-w", "json"])).unwrap();
    assert_eq!(
        members["members"][0]["clientURLs"],
        serde_json::json!([url]),
        "{members}"
    );

    let st: serde_json::Value =
        serde_json::from_str(&ok(&e, &["endpoint", "status", "--cluster", "-w", "json"])).unwrap();
    let all = st.as_array().expect("one entry per endpoint");
    assert_eq!(all.len(), 1, "{st}");
    assert_eq!(all[0]["Endpoint"], url.as_str(), "{st}");
    let s = &all[0]["Status"];
    assert_eq!(s["leader"], s["header"]["member_id"], "the member leads");
    assert_eq!(s["version"], "3.4.0");

    let out = common::etcdctl(&e, &["endpoint", "health", "--cluster"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "endpoint health failed: {text}");
    assert!(text.contains(&format!("{url} is healthy")), "{text}");
}
