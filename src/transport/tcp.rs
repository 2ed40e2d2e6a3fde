//! Plain TCP: the socket is the whole transport, plus the client's address
//! when a PROXY protocol header gave one.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

pub struct Tcp(TcpStream, Option<Box<SocketAddr>>);

impl Tcp {
    pub(super) fn accepted(stream: TcpStream) -> Tcp {
        // MQTT packets are small and latency matters more than segment count;
        // the connection driver already writes one batch per flush.
        let _ = stream.set_nodelay(true);
        Tcp(stream, None)
    }

    /// `proxied`: the client's address from a PROXY header, if any.
    pub(super) fn from_fd(fd: OwnedFd, proxied: Option<SocketAddr>) -> Tcp {
        // SAFETY: `fd` is an open TCP socket whose ownership moves into the
        // stream; nothing else closes it.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        Tcp(stream, proxied.map(Box::new))
    }

    /// The client is at `peer`, not at the socket's far end (a proxy).
    /// Boxed: 8 bytes in every TCP stream rather than 32.
    pub(super) fn set_proxied_peer(&mut self, peer: SocketAddr) {
        self.1 = Some(Box::new(peer));
    }

    pub(super) fn proxied_peer(&self) -> Option<SocketAddr> {
        self.1.as_deref().copied()
    }

    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }

    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    pub(super) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }

    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        self.proxied_peer().or_else(|| self.0.peer_addr().ok())
    }

    /// glommio 0.9 has no `IntoRawFd` for its stream: duplicate the
    /// descriptor, then let the stream close its own.
    pub(super) fn into_fd(self) -> io::Result<OwnedFd> {
        // SAFETY: the stream owns this descriptor and is alive for the whole
        // borrow, which ends with the duplicate made here.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) }.try_clone_to_owned();
        drop(self);
        fd
    }
}
