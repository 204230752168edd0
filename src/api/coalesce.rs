//! Client connections of the front: TCP_NODELAY and coalesced writes
//! ([`cairn_proto::coalesce`] says why).

use cairn_proto::coalesce::Coalesce;
use std::io;
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections have TCP_NODELAY and coalesced writes.
pub struct CoalescingListener(pub TcpListener);

impl axum::serve::Listener for CoalescingListener {
    type Io = Coalesce<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (Coalesce::new(tcp), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A plain connection's peer: its address, no certificate.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CoalescingListener>>
    for super::tls::ClientPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CoalescingListener>) -> Self {
        super::tls::ClientPeer {
            addr: *stream.remote_addr(),
            common_name: None,
        }
    }
}
