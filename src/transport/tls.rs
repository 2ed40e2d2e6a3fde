//! TLS over a TCP socket: a rustls `ServerConnection` over an accepted
//! socket (MQTT over TLS, `wss`), or a `ClientConnection` over one this
//! server dialled ([`super::client`]). One adapter drives either side.
//!
//! rustls is driven through its buffered sans-IO calls: `read_tls` takes
//! ciphertext from the socket, `process_new_packets` decrypts it into the
//! session's plaintext buffer, `reader()` hands that out; `writer()` takes
//! plaintext and encrypts it into the session's record buffer, `write_tls`
//! pushes records to the socket. The socket's `poll_*` calls are wrapped as
//! `io::Read`/`io::Write` that answer `WouldBlock` where the socket is
//! pending (having registered the task's waker).
//!
//! # Writes
//! 1. [`Tls::poll_write`] first pushes every record still buffered from
//!    earlier writes, and is `Pending` until it has: a peer that does not
//!    read stops the writer here, with at most one write's records held.
//! 2. Plaintext taken is encrypted at once; its records go out as far as the
//!    socket takes them, and the rest stays in the session.
//! 3. So records can be left over after the last write; [`Tls::poll_flush`]
//!    pushes them, and the connection driver calls it whenever its outbox is
//!    empty.
//!
//! # Hand-off
//! The session (keys, sequence numbers, plaintext decrypted but not yet
//! returned) is `Send` and moves to the owner shard boxed, beside the
//! socket's descriptor.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::DerefMut;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

use super::counters::HandshakeFailure;
use super::tcp::Tcp;

/// Socket reads one `poll_read` or `poll_handshake` makes before it yields:
/// a peer sending records with no application data (handshake messages,
/// empty records) must not keep the shard's thread.
const READS_PER_POLL: usize = 8;

/// Boxed whole in [`super::Stream`]: a TLS connection costs one
/// allocation, and a plain TCP one carries nothing of it. `S` is the
/// session's side: the server's unless named.
pub struct Tls<S = ServerConnection> {
    tcp: Tcp,
    session: S,
}

/// Why a handshake did not complete, with rustls's own error kept for the
/// caller to sort ([`HandshakeFailure::of`]) or to log.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer closed, or the socket failed, mid-handshake.
    Closed,
    Tls(rustls::Error),
}

impl HandshakeError {
    pub fn failure(&self) -> HandshakeFailure {
        match self {
            HandshakeError::Closed => HandshakeFailure::Closed,
            HandshakeError::Tls(e) => HandshakeFailure::of(e),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("connection closed during the TLS handshake"),
            HandshakeError::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl Tls<ClientConnection> {
    /// A client session towards `name` over a socket just connected; the
    /// handshake starts with the first poll.
    pub(super) fn connect(
        tcp: Tcp,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Box<Self>, rustls::Error> {
        let session = ClientConnection::new(config, name)?;
        Ok(Box::new(Tls { tcp, session }))
    }
}

impl Tls<ServerConnection> {
    /// A session over a socket just accepted; `early` is what was read from
    /// the socket already (after a PROXY header) and belongs to TLS.
    pub(super) fn accept(
        tcp: Tcp,
        config: Arc<ServerConfig>,
        mut early: &[u8],
    ) -> Result<Box<Tls>, HandshakeFailure> {
        let mut session = ServerConnection::new(config).map_err(|e| HandshakeFailure::of(&e))?;
        while !early.is_empty() {
            match session.read_tls(&mut early) {
                Ok(0) | Err(_) => return Err(HandshakeFailure::Protocol),
                Ok(_) => {}
            }
            session
                .process_new_packets()
                .map_err(|e| HandshakeFailure::of(&e))?;
        }
        Ok(Box::new(Tls { tcp, session }))
    }

    pub(super) fn attach(tcp: Tcp, session: Box<ServerConnection>) -> Box<Tls> {
        Box::new(Tls {
            tcp,
            session: *session,
        })
    }

    pub(super) fn into_parts(self: Box<Self>) -> (Tcp, Box<ServerConnection>) {
        let Tls { tcp, session } = *self;
        (tcp, Box::new(session))
    }

    pub(super) fn tcp(&self) -> &Tcp {
        &self.tcp
    }

    pub(super) fn tcp_mut(&mut self) -> &mut Tcp {
        &mut self.tcp
    }

    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp.peer_addr()
    }

    /// The verified client certificate's identity, if one was presented.
    pub(super) fn identity(&self) -> Option<String> {
        let leaf = self.session.peer_certificates()?.first()?;
        super::identity::of_certificate(leaf)
    }
}

/// Either side: `S` derefs to rustls's buffered connection of its side.
impl<S, D> Tls<S>
where
    S: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Drives the handshake until it is complete and every handshake record
    /// is on the wire.
    pub(super) fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), HandshakeError>> {
        for _ in 0..READS_PER_POLL {
            match self.poll_flush_records(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(HandshakeError::Closed)),
                Poll::Pending => return Poll::Pending,
            }
            if !self.session.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.read_records(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(HandshakeError::Closed)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(ReadError::Io(_))) => {
                    return Poll::Ready(Err(HandshakeError::Closed))
                }
                Poll::Ready(Err(ReadError::Tls(e))) => {
                    return Poll::Ready(Err(HandshakeError::Tls(e)))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        for _ in 0..READS_PER_POLL {
            match self.session.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match self.read_records(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(ReadError::Io(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Err(ReadError::Tls(e))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.poll_flush_records(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let taken = self.session.writer().write(buf)?;
        if taken == 0 && !buf.is_empty() {
            // Cannot happen with the record buffer just emptied; never
            // report it as a write of nothing, which reads as a lost peer.
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        if let Poll::Ready(Err(e)) = self.poll_flush_records(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    /// Pushes every buffered record to the socket.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_records(cx)
    }

    /// Sends close_notify, pushes it, then closes the socket.
    pub(super) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.session.send_close_notify();
        match self.poll_flush_records(cx) {
            Poll::Ready(Ok(())) => self.tcp.poll_close(cx),
            other => other,
        }
    }

    fn poll_flush_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            let mut socket = SocketIo {
                tcp: &mut self.tcp,
                cx,
            };
            match self.session.write_tls(&mut socket) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// One socket read into the session, then decryption. `Ok(0)`: the
    /// socket's end of stream.
    fn read_records(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ReadError>> {
        let mut socket = SocketIo {
            tcp: &mut self.tcp,
            cx,
        };
        let n = match self.session.read_tls(&mut socket) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(ReadError::Io(e))),
        };
        if let Err(e) = self.session.process_new_packets() {
            // The session queued an alert saying why; it goes out if the
            // socket takes it now, never waited for.
            let mut socket = SocketIo {
                tcp: &mut self.tcp,
                cx,
            };
            let _ = self.session.write_tls(&mut socket);
            return Poll::Ready(Err(ReadError::Tls(e)));
        }
        if self.session.wants_write() {
            // Records the peer's records called for (a key update's answer):
            // out now, or when the socket wakes the task for writing.
            let _ = self.poll_flush_records(cx);
        }
        Poll::Ready(Ok(n))
    }
}

enum ReadError {
    Io(io::Error),
    Tls(rustls::Error),
}

/// The socket as the blocking-style `Read`/`Write` rustls takes, for the
/// length of one call: pending is `WouldBlock`, with the waker registered.
struct SocketIo<'a, 'b> {
    tcp: &'a mut Tcp,
    cx: &'a mut Context<'b>,
}

impl Read for SocketIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tcp.poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SocketIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tcp.poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `wss`: the WebSocket framing over a TLS session whose handshake is done.
impl super::ws::Inner for Tls<ServerConnection> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Tls::poll_read(self, cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Tls::poll_write(self, cx, buf)
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Tls::poll_flush(self, cx)
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Tls::poll_close(self, cx)
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        Tls::peer_addr(self)
    }
}
