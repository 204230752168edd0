//! TLS material for the client port and the peer transport: PEM files read
//! with their paths in the errors, and the one crypto provider cairn uses
//! (ring: with two providers compiled in, rustls would have to be told which
//! one anyway, so every configuration names it).
//!
//! A member's own certificate and key ([`ReloadingCert`]) are read again
//! when their files change, so a rotated certificate is used from the next
//! handshake on without a restart (as etcd reads them at each handshake).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The CommonName of a DER certificate's subject, if it has one (a peer's
/// under `--peer-cert-allowed-cn`, a client's as its auth user).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

/// The crypto provider of every TLS configuration.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The CA certificates of a PEM file as a root store.
pub fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// What a file looked like when it was read: its modification time and
/// length (a rewrite changes one or the other).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A certificate chain and its key from two PEM files, read again when
/// either file changes (checked at each handshake: two `stat`s). A new
/// pair that does not load (a half-written file, a key that does not match)
/// is logged once and the last good pair stays in use.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// Which flags named them, for messages.
    what: &'static str,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The files' stamps when last looked at, and the pair in use.
    current: Mutex<((Stamp, Stamp), Arc<rustls::sign::CertifiedKey>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    /// Loads the pair (an error names `what`, e.g. "--cert-file/--key-file").
    pub fn new(cert: &Path, key: &Path, what: &'static str) -> Result<Arc<Self>, String> {
        let provider = provider();
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_pair(cert, key, &provider).map_err(|e| format!("{what}: {e}"))?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            what,
            provider,
            current: Mutex::new((stamps, Arc::new(loaded))),
        }))
    }

    /// The pair to present now.
    pub fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamps {
            // Looked at once per change, loaded or not.
            current.0 = stamps;
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    current.1 = Arc::new(pair);
                    eprintln!(
                        "cairn: {}: reloaded {} and {}",
                        self.what,
                        self.cert.display(),
                        self.key.display()
                    );
                }
                Err(e) => eprintln!(
                    "cairn: {}: changed files do not load, still using the last good pair: {e}",
                    self.what
                ),
            }
        }
        current.1.clone()
    }
}

fn load_pair(
    cert: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    rustls::sign::CertifiedKey::from_der(certs(cert)?, key(key_path)?, provider)
        .map_err(|e| e.to_string())
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh self-signed pair as PEM (certificate, key).
    fn pair(name: &str) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    /// Writes `text` to `path` and moves its modification time on, so the
    /// change shows even within one clock tick.
    fn write(path: &Path, text: &str, tick: u64) {
        std::fs::write(path, text).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + tick))
            .unwrap();
    }

    #[test]
    fn a_changed_pair_is_used_and_a_bad_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (a, b, c) = (pair("a"), pair("b"), pair("c"));
        write(&cert, &a.0, 1);
        write(&key, &a.1, 1);
        let r = ReloadingCert::new(&cert, &key, "test").unwrap();
        let served = |r: &ReloadingCert| common_name(r.current().cert[0].as_ref());
        // rcgen's simple certificates are named "rcgen self signed cert";
        // tell them apart by their DER instead.
        let der = |r: &ReloadingCert| r.current().cert[0].as_ref().to_vec();
        let first = der(&r);
        assert_eq!(der(&r), first, "unchanged files: the same pair");
        assert!(served(&r).is_some());
        // Rotated: the next look serves it.
        write(&cert, &b.0, 2);
        write(&key, &b.1, 2);
        let second = der(&r);
        assert_ne!(second, first, "the rotated pair is served");
        // Half written (the certificate of c, the key still b's): refused,
        // b stays; then the key lands and c is served.
        write(&cert, &c.0, 3);
        assert_eq!(der(&r), second, "a mismatched pair is not used");
        write(&key, &c.1, 3);
        let third = der(&r);
        assert!(
            third != second && third != first,
            "the completed pair is served"
        );
        // Garbage: the last good pair stays.
        write(&cert, "not a certificate", 4);
        assert_eq!(der(&r), third);
        // A start with files that do not load fails, naming the flags.
        let e = ReloadingCert::new(&cert, &key, "--cert-file/--key-file").unwrap_err();
        assert!(e.starts_with("--cert-file/--key-file"), "{e}");
    }
}
