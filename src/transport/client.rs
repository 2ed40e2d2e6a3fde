//! Streams this server dials: plain TCP, or TLS over TCP with a rustls
//! `ClientConnection` driven by the adapter the TLS listener's sessions use
//! (`tls::Tls`). Services that reach out (the voice gateway's chat
//! backends) read and write them through `futures` `AsyncRead` and
//! `AsyncWrite`.
//!
//! Name resolution is the caller's: [`ClientStream::connect`] takes an
//! address, never a host name, so nothing here waits on DNS on a shard.
//! Connecting and the handshake are two steps, so that a caller can bound
//! and count each on its own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::tcp::Tcp;
pub use super::tls::HandshakeError;
use super::tls::Tls;

/// Who the server at the other end must prove to be, and what it is
/// checked against.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    /// Sent as SNI, and the name the certificate must carry.
    pub name: ServerName<'static>,
}

/// A connection this server opened. Not `Send`: registered with the
/// shard's io_uring.
pub enum ClientStream {
    Tcp(Tcp),
    /// Boxed: the session is over a kilobyte.
    Tls(Box<Tls<ClientConnection>>),
}

impl ClientStream {
    /// A TCP connection to `addr`, with Nagle off (requests and frames are
    /// small and written whole).
    pub async fn connect(addr: SocketAddr) -> io::Result<ClientStream> {
        let stream = glommio::net::TcpStream::connect(addr).await?;
        Ok(ClientStream::Tcp(Tcp::accepted(stream)))
    }

    /// Runs a TLS handshake over this TCP connection, verifying the server
    /// as `target` says; the stream then carries plaintext through it.
    pub async fn start_tls(self, target: &TlsTarget) -> Result<ClientStream, HandshakeError> {
        let ClientStream::Tcp(tcp) = self else {
            // Already TLS: a second layer is not something any caller asks.
            return Err(HandshakeError::Closed);
        };
        let mut tls = Tls::connect(tcp, target.config.clone(), target.name.clone())
            .map_err(HandshakeError::Tls)?;
        std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(ClientStream::Tls(tls))
    }

    /// True when the bytes go through TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => s.poll_read(cx, buf),
            ClientStream::Tls(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => s.poll_write(cx, buf),
            ClientStream::Tls(s) => s.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(_) => Poll::Ready(Ok(())),
            ClientStream::Tls(s) => s.poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Tcp(s) => s.poll_close(cx),
            ClientStream::Tls(s) => s.poll_close(cx),
        }
    }
}
