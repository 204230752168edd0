//! Peer TLS: how members authenticate each other ([`PeerTls`]), the
//! `--peer-cert-allowed-cn` check, and the TLS configurations the QUIC
//! transport (`super::quic`) is built on. `https://` peer URLs use mutual
//! TLS with the given CA; `http://` ones an ephemeral self-signed
//! certificate that peers do not verify (encrypted, not authenticated).

use std::path::PathBuf;
use std::sync::Arc;

const ALPN: &[u8] = b"cairn-peer";

/// How members authenticate each other.
#[derive(Clone, Debug)]
pub enum PeerTls {
    /// `http://` peer URLs: encrypted with a self-signed certificate made at
    /// start; peers' certificates are not checked.
    Unauthenticated,
    /// `https://` peer URLs: each side presents `cert` and checks the
    /// other's against `ca`.
    Mutual {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        /// `--peer-cert-allowed-cn`: the CommonName a peer's certificate
        /// must have (checked at both ends of a connection, since one
        /// connection serves a pair both ways).
        allowed_cn: Option<String>,
    },
}

/// The CommonName of the certificate `conn`'s peer presented, if any.
fn peer_common_name(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<rustls::pki_types::CertificateDer<'static>>>()?;
    crate::tls::common_name(chain.first()?.as_ref())
}

/// Why `conn`'s peer is refused under `--peer-cert-allowed-cn`, if it is
/// (etcd's log says "CommonName authentication failed").
pub(super) fn cn_refusal(allowed: Option<&str>, conn: &quinn::Connection) -> Option<String> {
    let allowed = allowed?;
    match peer_common_name(conn) {
        Some(cn) if cn == allowed => None,
        cn => Some(format!(
            "CommonName authentication failed: the certificate's CN is {cn:?}, \
             --peer-cert-allowed-cn is {allowed:?}"
        )),
    }
}

/// Accepts any server certificate: `http://` peer URLs (see the module docs).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS server and client configurations for `tls`, speaking the peer
/// protocol's ALPN (`super::quic` makes them QUIC configurations).
pub(super) fn rustls_configs(
    tls: &PeerTls,
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), String> {
    let provider = crate::tls::provider();
    let versions = rustls::DEFAULT_VERSIONS;
    let (mut server, mut client) = match tls {
        PeerTls::Unauthenticated => {
            let made = rcgen::generate_simple_self_signed(vec!["cairn-peer".to_string()])
                .map_err(|e| format!("making a peer certificate: {e}"))?;
            let cert = made.cert.der().clone();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .map_err(|e| format!("peer certificate: {e}"))?;
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider.clone())))
                .with_no_client_auth();
            (server, client)
        }
        PeerTls::Mutual {
            cert, key: k, ca, ..
        } => {
            use crate::tls::roots;
            let roots = roots(ca).map_err(|e| format!("--peer-trusted-ca-file {e}"))?;
            // Read again when the files change (a rotated certificate),
            // for both directions of the handshake.
            let pair = crate::tls::ReloadingCert::new(cert, k, "--peer-cert-file/--peer-key-file")?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.clone(),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("--peer-trusted-ca-file: {e}"))?;
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(pair.clone());
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_client_cert_resolver(pair);
            (server, client)
        }
    };
    server.alpn_protocols = vec![ALPN.to_vec()];
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}
