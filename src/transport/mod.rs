//! A client connection's byte stream, whatever carries it.
//!
//! The connection driver (`shard::conn`) and the CONNECT reader
//! (`shard::listener`) see only [`Stream`]: read into a caller's buffer,
//! write from one, and [`Stream::into_moving`] for the hand-off to the shard
//! that owns the client id. What moves is a [`Moving`]: the socket plus the
//! transport's own state, `Send`, so that a stream with protocol state of
//! its own (TLS records, WebSocket frames) reaches its owner shard like a
//! plain TCP one.
//!
//! Plain TCP is the only transport today; TLS and WebSocket are variants of
//! the same two enums.

mod tcp;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A connection's byte stream on the shard that runs it. Not `Send`: it is
/// registered with this shard's io_uring.
pub enum Stream {
    Tcp(tcp::Tcp),
}

/// A stream between shards: the socket and the transport's state.
pub struct Moving {
    fd: std::os::fd::OwnedFd,
    state: MovingState,
}

/// The part of a transport's state that is not the socket.
enum MovingState {
    Tcp,
}

impl Stream {
    /// A TCP connection just accepted.
    pub fn tcp(stream: glommio::net::TcpStream) -> Stream {
        Stream::Tcp(tcp::Tcp::accepted(stream))
    }

    /// Reads what the transport has for the peer's byte stream into `buf`;
    /// `Ok(0)` is the end of the stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_read(cx, buf),
        }
    }

    /// Writes a prefix of `buf`; the count says how much was taken.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_write(cx, buf),
        }
    }

    /// The peer's address, as far as the transport knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
        }
    }

    /// Detaches the stream from this shard for another one. Anything read
    /// from the socket but not yet returned by `poll_read` must be inside
    /// the transport's state, never lost.
    pub fn into_moving(self) -> io::Result<Moving> {
        match self {
            Stream::Tcp(s) => Ok(Moving {
                fd: s.into_fd()?,
                state: MovingState::Tcp,
            }),
        }
    }
}

impl Moving {
    /// Attaches the stream to the shard this is called on.
    pub fn attach(self) -> Stream {
        match self.state {
            MovingState::Tcp => Stream::Tcp(tcp::Tcp::from_fd(self.fd)),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_read(self.get_mut(), cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every transport writes through to its socket.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => s.poll_close(cx),
        }
    }
}
