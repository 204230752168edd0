//! Certificates for a secure cluster, made with `rcgen` (the engine of the
//! `cairn-certs` binary): a CA, member certificates and client certificates.
//!
//! Everything lives in one directory:
//!
//! - `ca.pem`, `ca-key.pem`: a self-signed CA (basic constraints CA with path
//!   length 0, key usages keyCertSign + cRLSign).
//! - `NAME.pem`, `NAME-key.pem` for a member: CN = NAME, one SAN per host (IP
//!   addresses as IP SANs, names as DNS SANs), extended key usages serverAuth
//!   AND clientAuth, since a member presents it both as the QUIC server and
//!   the QUIC client on the peer port (`--peer-cert-file`) and as the server
//!   on the client port (`--cert-file`); key usages digitalSignature +
//!   keyEncipherment.
//! - `NAME.pem`, `NAME-key.pem` for a client (`etcdctl --cert --key`): CN =
//!   NAME, extended key usage clientAuth only.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, written with mode 0600. Existing files
//! are never overwritten unless `force` is set, and every error names the
//! file it is about. The validity starts an hour before now (clocks of
//! members differ) and lasts `days` days; a leaf's validity is not clipped to
//! the CA's, so give leaves no more days than the CA has left.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The CA's certificate file in the directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's key file in the directory.
pub const CA_KEY: &str = "ca-key.pem";
/// Default common name of the CA.
pub const DEFAULT_CA_CN: &str = "cairn CA";
/// Default validity of the CA, in days (10 years).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default validity of member and client certificates, in days.
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Longest validity accepted, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// The two files written for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate and key paths of `name` in `dir`: `NAME.pem`, `NAME-key.pem`.
pub fn paths(dir: &Path, name: &str) -> Written {
    Written {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    }
}

/// Writes a self-signed CA to `dir/ca.pem` and `dir/ca-key.pem` (creating
/// `dir` if needed), valid for `days` days.
pub fn make_ca(dir: &Path, cn: &str, days: u32, force: bool) -> Result<Written> {
    if cn.trim().is_empty() {
        bail!("the CA's common name is empty");
    }
    check_days(days)?;
    let out = Written {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    refuse_existing(&out, force)?;

    let mut params = base_params(cn, days)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().context("generating the CA's key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    write_pair(&out, &cert.pem(), &key.serialize_pem(), force)?;
    Ok(out)
}

/// Writes a member certificate for `name` to `dir/NAME.pem` and
/// `dir/NAME-key.pem`, signed by the CA in `dir`, with one SAN per host
/// (IP addresses as IP SANs, anything else as a DNS SAN) and the extended
/// key usages serverAuth and clientAuth.
pub fn make_member<S: AsRef<str>>(
    dir: &Path,
    name: &str,
    hosts: &[S],
    days: u32,
    force: bool,
) -> Result<Written> {
    check_name(name)?;
    check_days(days)?;
    let sans = sans(hosts)?;
    let out = paths(dir, name);
    refuse_existing(&out, force)?;
    let issuer = load_ca(dir)?;

    let mut params = base_params(name, days)?;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_and_write(&params, &issuer, &out, force)?;
    Ok(out)
}

/// Writes a client certificate for `name` (e.g. `root` for etcdctl) to
/// `dir/NAME.pem` and `dir/NAME-key.pem`, signed by the CA in `dir`, with
/// the extended key usage clientAuth only.
pub fn make_client(dir: &Path, name: &str, days: u32, force: bool) -> Result<Written> {
    check_name(name)?;
    check_days(days)?;
    let out = paths(dir, name);
    refuse_existing(&out, force)?;
    let issuer = load_ca(dir)?;

    let mut params = base_params(name, days)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_and_write(&params, &issuer, &out, force)?;
    Ok(out)
}

fn check_days(days: u32) -> Result<()> {
    if days == 0 || days > MAX_DAYS {
        bail!("--days {days}: must be between 1 and {MAX_DAYS}");
    }
    Ok(())
}

/// Parameters shared by every certificate: CN, validity, identifiers.
fn base_params(cn: &str, days: u32) -> Result<CertificateParams> {
    check_days(days)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Member and client names become file names next to the CA's.
fn check_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || !ok_chars || name.starts_with('.') {
        bail!("name {name:?}: use letters, digits, '-', '_' and '.' (not first)");
    }
    if name == "ca" || name == "ca-key" {
        bail!("name {name:?}: taken by the CA's files");
    }
    Ok(())
}

/// One SAN per host: IP addresses as IP SANs, other names as DNS SANs.
fn sans<S: AsRef<str>>(hosts: &[S]) -> Result<Vec<SanType>> {
    let mut out: Vec<SanType> = Vec::new();
    for host in hosts {
        let host = host.as_ref().trim();
        if host.is_empty() {
            continue;
        }
        // "[::1]" as written in URLs.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let san = match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let valid = host.split('.').enumerate().all(|(i, label)| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && (label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                            || (i == 0 && label == "*"))
                });
                if !valid || host.len() > 253 {
                    bail!("--hosts: {host:?} is neither an IP address nor a DNS name");
                }
                SanType::DnsName(
                    host.to_ascii_lowercase()
                        .try_into()
                        .with_context(|| format!("--hosts: {host:?}"))?,
                )
            }
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    if out.is_empty() {
        bail!("--hosts: a member needs at least one host name or IP address");
    }
    Ok(out)
}

/// Reads the CA in `dir`: its key and the name it signs with.
fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert_pem = std::fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "reading {} (make the CA first: cairn-certs ca --dir {})",
            cert_path.display(),
            dir.display()
        )
    })?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("{}: not a PEM certificate", cert_path.display()))
}

fn sign_and_write(
    params: &CertificateParams,
    issuer: &Issuer<'static, KeyPair>,
    out: &Written,
    force: bool,
) -> Result<()> {
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {}", out.cert.display()))?;
    write_pair(out, &cert.pem(), &key.serialize_pem(), force)
}

/// Fails, naming the file, if either file exists and `force` is not set.
fn refuse_existing(out: &Written, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in [&out.cert, &out.key] {
        if path.symlink_metadata().is_ok() {
            bail!("{} exists (--force overwrites it)", path.display());
        }
    }
    Ok(())
}

/// Writes the key (mode 0600) and then the certificate (mode 0644).
fn write_pair(out: &Written, cert_pem: &str, key_pem: &str, force: bool) -> Result<()> {
    write_file(&out.key, key_pem, 0o600, force)?;
    write_file(&out.cert, cert_pem, 0o644, force)
}

/// Creates `path` with `mode` (never following or reusing an existing
/// file: with `force` it is removed first, so an old key's looser mode
/// does not carry over).
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> Result<()> {
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("{} exists (--force overwrites it)", path.display())
            } else {
                anyhow::Error::new(e).context(format!("creating {}", path.display()))
            }
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::RootCertStore;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn roots(dir: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(cert(&dir.join(CA_CERT))).unwrap();
        Arc::new(roots)
    }

    fn server_ok(ca_dir: &Path, leaf: &Path, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_dir), provider())
                .build()
                .unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&cert(leaf), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn client_ok(ca_dir: &Path, leaf: &Path) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_dir), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&cert(leaf), &[], UnixTime::now())
            .map(|_| ())
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn member_and_client_chain_to_their_ca_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let other = tmp.path().join("other");
        let ca = make_ca(&dir, DEFAULT_CA_CN, 30, false).unwrap();
        assert_eq!(mode(&ca.key), 0o600);
        // Another CA, even with the same name, must not do.
        make_ca(&other, DEFAULT_CA_CN, 30, false).unwrap();
        let hosts = ["10.0.0.1", "h1.example", "localhost", "127.0.0.1", "::1"];
        let m1 = make_member(&dir, "m1", &hosts, 30, false).unwrap();
        let root = make_client(&dir, "root", 30, false).unwrap();
        let foreign = make_member(&other, "m1", &hosts, 30, false).unwrap();
        let foreign_client = make_client(&other, "root", 30, false).unwrap();
        assert_eq!(m1, paths(&dir, "m1"));
        assert_eq!(mode(&m1.key), 0o600);
        assert_eq!(mode(&root.key), 0o600);
        for key in [&ca.key, &m1.key, &root.key] {
            PrivateKeyDer::from_pem_file(key).unwrap();
        }

        // The member: a server for each of its SANs, and a client (peers).
        for host in ["h1.example", "localhost", "10.0.0.1", "127.0.0.1", "::1"] {
            server_ok(&dir, &m1.cert, host).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        for host in ["h2.example", "10.0.0.2"] {
            let err = server_ok(&dir, &m1.cert, host).unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{host}: {err:?}"
            );
        }
        client_ok(&dir, &m1.cert).unwrap();

        // The client: accepted as a client, not as a server (no serverAuth).
        client_ok(&dir, &root.cert).unwrap();
        let err = server_ok(&dir, &root.cert, "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::InvalidPurpose
                        | rustls::CertificateError::InvalidPurposeContext { .. }
                )
            ),
            "{err:?}"
        );

        // Certificates of another CA are refused, both ways.
        assert!(server_ok(&dir, &foreign.cert, "h1.example").is_err());
        assert!(client_ok(&dir, &foreign.cert).is_err());
        assert!(client_ok(&dir, &foreign_client.cert).is_err());
        // ...and ours by the other CA.
        assert!(client_ok(&other, &root.cert).is_err());
        server_ok(&other, &foreign.cert, "h1.example").unwrap();
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        make_ca(dir, "CA", 30, false).unwrap();
        let before = std::fs::read(dir.join(CA_CERT)).unwrap();
        let err = make_ca(dir, "CA", 30, false).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains("exists"), "{err}");
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), before);

        make_client(dir, "root", 30, false).unwrap();
        // Only the key left: still refused, naming the key.
        std::fs::remove_file(dir.join("root.pem")).unwrap();
        let err = make_client(dir, "root", 30, false).unwrap_err().to_string();
        assert!(err.contains("root-key.pem"), "{err}");

        // --force replaces, and a loosened key mode does not survive.
        let key = dir.join("root-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        make_client(dir, "root", 30, true).unwrap();
        assert_eq!(mode(&key), 0o600);
        client_ok(dir, &dir.join("root.pem")).unwrap();

        // A new CA with --force: old leaves no longer chain to it.
        make_ca(dir, "CA", 30, true).unwrap();
        assert_ne!(std::fs::read(dir.join(CA_CERT)).unwrap(), before);
        assert!(client_ok(dir, &dir.join("root.pem")).is_err());
    }

    #[test]
    fn errors_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = make_member(dir, "m1", &["h1"], 30, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
        make_ca(dir, "CA", 30, false).unwrap();
        std::fs::write(dir.join(CA_KEY), "garbage").unwrap();
        let err = format!("{:#}", make_client(dir, "root", 30, false).unwrap_err());
        assert!(err.contains("ca-key.pem"), "{err}");

        make_ca(dir, "CA", 30, true).unwrap();
        let no_hosts: [&str; 0] = [];
        for (name, hosts, what) in [
            ("m1", &no_hosts[..], "at least one"),
            ("m1", &["bad host"][..], "bad host"),
            ("m1", &["-x.example"][..], "-x.example"),
            ("ca", &["h1"][..], "CA"),
            ("../m1", &["h1"][..], "../m1"),
        ] {
            let err = make_member(dir, name, hosts, 30, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{name} {hosts:?}: {err}");
        }
        let err = make_client(dir, "root", 0, false).unwrap_err().to_string();
        assert!(err.contains("--days"), "{err}");
        assert!(!dir.join("root.pem").exists());
        // The first problem reported is the bad argument, not existing files.
        make_client(dir, "root", 1, false).unwrap();
        let err = make_client(dir, "root", MAX_DAYS + 1, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--days"), "{err}");
    }
}
