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
//! Plain TCP and WebSocket over TCP (`ws`) are the transports; TLS is a
//! variant of the same two enums.

mod tcp;
pub mod ws;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A connection's byte stream on the shard that runs it. Not `Send`: it is
/// registered with this shard's io_uring.
pub enum Stream {
    Tcp(tcp::Tcp),
    /// Boxed: a plain TCP connection must not carry the framing state's size.
    Ws(Box<ws::Ws<tcp::Tcp>>),
}

/// A stream between shards: the socket and the transport's state.
pub struct Moving {
    fd: std::os::fd::OwnedFd,
    state: MovingState,
}

/// The part of a transport's state that is not the socket.
enum MovingState {
    Tcp,
    Ws(Box<ws::Framing>),
}

impl Stream {
    /// A TCP connection just accepted.
    pub fn tcp(stream: glommio::net::TcpStream) -> Stream {
        Stream::Tcp(tcp::Tcp::accepted(stream))
    }

    /// A TCP connection just accepted on a WebSocket listener, once its
    /// upgrade request is answered; data frames are bounded by `max_frame`.
    pub async fn websocket(
        stream: glommio::net::TcpStream,
        policy: &ws::Policy,
        max_frame: usize,
    ) -> Result<Stream, ws::UpgradeError> {
        let ws = ws::upgrade(tcp::Tcp::accepted(stream), policy, max_frame).await?;
        Ok(Stream::Ws(Box::new(ws)))
    }

    /// Reads what the transport has for the peer's byte stream into `buf`;
    /// `Ok(0)` is the end of the stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_read(cx, buf),
            Stream::Ws(s) => s.poll_read(cx, buf),
        }
    }

    /// Writes a prefix of `buf`; the count says how much was taken.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_write(cx, buf),
            Stream::Ws(s) => s.poll_write(cx, buf),
        }
    }

    /// The peer's address, as far as the transport knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::Ws(s) => s.peer_addr(),
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
            Stream::Ws(s) => {
                let (tcp, framing) = s.into_parts();
                Ok(Moving {
                    fd: tcp.into_fd()?,
                    state: MovingState::Ws(Box::new(framing)),
                })
            }
        }
    }
}

impl Moving {
    /// Attaches the stream to the shard this is called on.
    pub fn attach(self) -> Stream {
        match self.state {
            MovingState::Tcp => Stream::Tcp(tcp::Tcp::from_fd(self.fd)),
            MovingState::Ws(framing) => Stream::Ws(Box::new(ws::Ws::from_parts(
                tcp::Tcp::from_fd(self.fd),
                *framing,
            ))),
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
            Stream::Ws(s) => s.poll_close(cx),
        }
    }
}
