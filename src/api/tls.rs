//! TLS on the client port (`https://` in `--listen-client-urls`): gRPC and
//! HTTP (`/health`, `/metrics`, the JSON gateway) on the same TLS port, as
//! etcd serves them. `--cert-file` and `--key-file` are the member's
//! certificate (read again when the files change); with
//! `--client-cert-auth` a client must present a certificate that chains to
//! `--trusted-ca-file`, or the handshake fails.
//!
//! Handshakes run as tasks of their own (bounded by [`HANDSHAKES_MAX`] and
//! a deadline), so a slow or silent client never holds up other
//! connections.

use cairn_proto::coalesce::Coalesce;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Handshakes under way at once; more connections wait in the kernel's
/// backlog.
pub const HANDSHAKES_MAX: usize = 256;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client port's TLS configuration.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use crate::tls::{provider, roots};
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots(ca).map_err(|e| format!("--trusted-ca-file {e}"))?,
                provider,
            )
            .build()
            .map_err(|e| format!("--trusted-ca-file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // Read again when the files change (a rotated certificate).
    let mut config = builder.with_cert_resolver(crate::tls::ReloadingCert::new(
        cert,
        key,
        "--cert-file/--key-file",
    )?);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is at the other end of a client connection: its address (logins
/// take turns by it), and, on TLS, the CommonName of the client
/// certificate it presented (with `--client-cert-auth`), which auth takes
/// as the user when a request sends no token (as etcd's
/// `AuthInfoFromTLS`). Requests find it in their extensions as
/// `axum::extract::ConnectInfo<ClientPeer>`.
#[derive(Clone, Debug)]
pub struct ClientPeer {
    pub addr: SocketAddr,
    pub common_name: Option<Arc<str>>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for ClientPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A listener whose connections are TLS over TCP_NODELAY, coalesced
/// sockets (see `super::coalesce`).
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<Coalesce<TcpStream>>, ClientPeer)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(HANDSHAKES_MAX);
        let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let mut listener = listener;
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = axum::serve::Listener::accept(&mut listener).await;
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let handshake = acceptor.accept(Coalesce::new(tcp));
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let common_name = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(|cert| crate::tls::common_name(cert))
                                .map(Arc::from);
                            let _ = tx.send((tls, ClientPeer { addr, common_name })).await;
                        }
                        Ok(Err(e)) => eprintln!("cairn: TLS handshake with {addr} failed: {e}"),
                        Err(_) => {}
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Coalesce<TcpStream>>;
    type Addr = ClientPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ClientPeer {
            addr: self.local,
            common_name: None,
        })
    }
}
