//! TLS: the client port over `https://` (etcdctl with --cacert/--cert/--key;
//! with --client-cert-auth, no client certificate, no connection), and
//! members over `https://` peer URLs (mutual TLS over QUIC: a member whose
//! certificate chains to another CA is refused, and under
//! `--peer-cert-allowed-cn` one whose certificate has another CommonName).
//! A rotated certificate file is served from the next connection on.

mod common;

use cairn_tools::certs::{make_ca, make_client, make_member};
use cairn_tools::cluster::LocalCluster;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn etcdctl_tls(endpoint: &str, pki: &Path, client: bool, args: &[&str]) -> std::process::Output {
    etcdctl_as(endpoint, pki, client.then_some("root"), args)
}

/// etcdctl over TLS with client certificate `<client>.pem` (none: None).
fn etcdctl_as(
    endpoint: &str,
    pki: &Path,
    client: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    etcdctl_trusting(endpoint, &pki.join("ca.pem"), pki, client, args)
}

/// [`etcdctl_as`], trusting the server certificates of CA `ca`.
fn etcdctl_trusting(
    endpoint: &str,
    ca: &Path,
    pki: &Path,
    client: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--command-timeout",
            "5s",
            "--dial-timeout",
            "3s",
        ])
        .arg(format!("--cacert={}", ca.display()));
    if let Some(name) = client {
        cmd.arg(format!(
            "--cert={}",
            pki.join(format!("{name}.pem")).display()
        ))
        .arg(format!(
            "--key={}",
            pki.join(format!("{name}-key.pem")).display()
        ));
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("`etcdctl` not found: run tools/test.sh")
}

#[test]
fn etcdctl_talks_tls_and_a_client_without_a_certificate_is_refused() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pki = base.path().join("pki");
    make_ca(&pki, "test CA", 30, false).unwrap();
    make_member(&pki, "m", &["127.0.0.1", "localhost"], 30, false).unwrap();
    make_client(&pki, "root", 30, false).unwrap();
    make_client(&pki, "alice", 30, false).unwrap();
    let port = common::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(base.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .arg(format!("--cert-file={}", pki.join("m.pem").display()))
        .arg(format!("--key-file={}", pki.join("m-key.pem").display()))
        .arg(format!(
            "--trusted-ca-file={}",
            pki.join("ca.pem").display()
        ))
        .arg("--client-cert-auth")
        .args(["--shards", "2"])
        .stdout(Stdio::null())
        .spawn()
        .expect("cairn");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl_tls(&url, &pki, true, &["put", "secret", "1"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no TLS put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = etcdctl_tls(&url, &pki, true, &["get", "secret", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let out = etcdctl_tls(&url, &pki, true, &["endpoint", "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No client certificate: refused.
    let out = etcdctl_tls(&url, &pki, false, &["get", "secret"]);
    assert!(
        !out.status.success(),
        "answered a client without a certificate"
    );
    // With auth on, a request without a token is its certificate's
    // CommonName's (etcd's AuthInfoFromTLS): root's certificate is root,
    // alice's is alice, who may read `pub` only.
    let ok = |client: &str, args: &[&str]| {
        let out = etcdctl_as(&url, &pki, Some(client), args);
        assert!(
            out.status.success(),
            "{client}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for args in [
        &["user", "add", "root:pw", "--interactive=false"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:pw", "--interactive=false"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "pub"],
        &["user", "grant-role", "alice", "reader"],
        &["put", "pub", "p"],
        &["auth", "enable"],
    ] {
        ok("root", args);
    }
    ok("root", &["put", "secret", "2"]);
    assert_eq!(ok("alice", &["get", "pub", "--print-value-only"]), "p");
    let out = etcdctl_as(&url, &pki, Some("alice"), &["get", "secret"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("etcdserver: permission denied"),
        "alice read secret: {err}"
    );
    // A token wins over the certificate: alice logged in as root may.
    assert_eq!(
        ok(
            "alice",
            &["--user", "root:pw", "get", "secret", "--print-value-only"]
        ),
        "2"
    );
    // The member's certificate rotates on disk (here to one of another
    // CA): the next connection gets the new one, without a restart.
    let rotated = base.path().join("rotated");
    make_ca(&rotated, "rotated CA", 30, false).unwrap();
    make_member(&rotated, "m", &["127.0.0.1", "localhost"], 30, false).unwrap();
    for file in ["m.pem", "m-key.pem"] {
        std::fs::copy(rotated.join(file), pki.join(file)).unwrap();
    }
    let new_ca = rotated.join("ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl_trusting(&url, &new_ca, &pki, Some("root"), &["get", "pub"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate is not served: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = etcdctl_as(&url, &pki, Some("root"), &["get", "pub"]);
    assert!(
        !out.status.success(),
        "still served the certificate of the old CA"
    );
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

#[test]
fn members_authenticate_each_other_and_refuse_another_cas_member() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (pki, other) = (base.path().join("pki"), base.path().join("other"));
    make_ca(&pki, "cluster CA", 30, false).unwrap();
    make_member(&pki, "member", &["127.0.0.1", "localhost"], 30, false).unwrap();
    make_ca(&other, "another CA", 30, false).unwrap();
    make_member(&other, "member", &["127.0.0.1", "localhost"], 30, false).unwrap();
    // m2 trusts the cluster's CA but presents a certificate of another CA.
    let flags = [
        peer_flags(&pki, &pki, "member"),
        peer_flags(&pki, &pki, "member"),
        peer_flags(&other, &pki, "member"),
    ];
    an_outsider_is_kept_out(base.path(), flags);
}

/// `--peer-cert-allowed-cn`: a member whose certificate chains to the
/// cluster's CA but has another CommonName is refused, whichever end of
/// the connection it is (the lower id dials).
#[test]
fn a_member_with_another_cn_is_refused_under_peer_cert_allowed_cn() {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pki = base.path().join("pki");
    make_ca(&pki, "cluster CA", 30, false).unwrap();
    make_member(&pki, "member", &["127.0.0.1", "localhost"], 30, false).unwrap();
    make_member(&pki, "intruder", &["127.0.0.1", "localhost"], 30, false).unwrap();
    let allowed = |mut f: Vec<String>| {
        f.push("--peer-cert-allowed-cn=member".into());
        f
    };
    let flags = [
        allowed(peer_flags(&pki, &pki, "member")),
        allowed(peer_flags(&pki, &pki, "member")),
        allowed(peer_flags(&pki, &pki, "intruder")),
    ];
    let logs = an_outsider_is_kept_out(base.path(), flags);
    assert!(
        logs.contains("CommonName authentication failed"),
        "no member logged the refusal:\n{logs}"
    );
}

/// A member's peer TLS flags: its certificate `name` in `dir`, the CA of
/// `ca_dir`.
fn peer_flags(dir: &Path, ca_dir: &Path, name: &str) -> Vec<String> {
    vec![
        format!(
            "--peer-cert-file={}",
            dir.join(format!("{name}.pem")).display()
        ),
        format!(
            "--peer-key-file={}",
            dir.join(format!("{name}-key.pem")).display()
        ),
        format!("--peer-trusted-ca-file={}", ca_dir.join("ca.pem").display()),
        "--peer-client-cert-auth".into(),
    ]
}

/// Three members over https:// peer URLs with `flags`; m0 and m1 form the
/// cluster and take a write, m2 must stay out (no leader, no write).
/// Returns the members' logs.
fn an_outsider_is_kept_out(base: &Path, flags: [Vec<String>; 3]) -> String {
    let extra: Vec<String> = [
        "--shards",
        "2",
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = LocalCluster::new(Path::new(env!("CARGO_BIN_EXE_cairn")), base, 3, &extra);
    c.https_peers();
    for (m, f) in c.members.iter_mut().zip(flags) {
        m.flags = f;
    }
    let log = |i: usize| base.join(format!("m{i}.log"));
    for i in 0..3 {
        c.start(i, Some(&log(i))).unwrap();
    }
    // m0 and m1 are a majority: they elect a leader and take writes.
    c.wait_ready(0, Duration::from_secs(60))
        .expect("m0 has a leader");
    let url0 = c.members[0].client_url();
    // Retried as etcd's clients do while the members settle who leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = common::etcdctl(&url0, &["put", "k", "v"], None);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // m2 never joins: no leader, and it does not hold the write.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.leader_seen_by(2), None, "m2 was let in");
    let url2 = c.members[2].client_url();
    let out = common::etcdctl(
        &url2,
        &["get", "k", "--consistency=s", "--print-value-only"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "m2 got the write"
    );
    c.stop_all();
    (0..3)
        .map(|i| std::fs::read_to_string(log(i)).unwrap_or_default())
        .collect()
}
