//! Plain TCP: the socket is the whole transport.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

pub struct Tcp(TcpStream);

impl Tcp {
    pub(super) fn accepted(stream: TcpStream) -> Tcp {
        // MQTT packets are small and latency matters more than segment count;
        // the connection driver already writes one batch per flush.
        let _ = stream.set_nodelay(true);
        Tcp(stream)
    }

    pub(super) fn from_fd(fd: OwnedFd) -> Tcp {
        // SAFETY: `fd` is an open TCP socket whose ownership moves into the
        // stream; nothing else closes it.
        Tcp(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
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
        self.0.peer_addr().ok()
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
