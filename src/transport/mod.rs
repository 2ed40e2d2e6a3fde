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
//! Plain TCP, TLS, WebSocket over TCP (`ws`) and WebSocket over TLS (`wss`)
//! are the transports. [`client`] is the other direction: a stream this
//! server dials (TCP, or TLS through the same adapter), for services that
//! reach out, such as the voice gateway's chat backends.
//! A PROXY protocol header ([`proxy`]) comes before any of them; the
//! address it gives is the stream's [`Stream::peer_addr`] from then on,
//! wherever the stream moves.

pub mod client;
pub mod counters;
mod identity;
pub mod proxy;
mod tcp;
mod tls;
pub mod tls_config;
pub mod udp;
pub mod ws;

pub use counters::{Counters, HandshakeFailure};
pub use tls_config::{ServerConfigHolder, TlsConfig, TlsError};

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
    Tls(Box<tls::Tls>),
    /// WebSocket over TLS: the TLS session inside the framing's box.
    Wss(Box<ws::Ws<tls::Tls>>),
}

/// A stream between shards: the socket and the transport's state.
pub struct Moving {
    fd: std::os::fd::OwnedFd,
    /// The client's address from a PROXY header.
    proxied: Option<SocketAddr>,
    state: MovingState,
}

/// The part of a transport's state that is not the socket.
enum MovingState {
    Tcp,
    Ws(Box<ws::Framing>),
    /// The whole session: keys, sequence numbers, and plaintext decrypted
    /// but not yet read.
    Tls(Box<rustls::ServerConnection>),
    Wss(Box<WssState>),
}

/// A `wss` connection's state apart from the socket.
struct WssState {
    session: rustls::ServerConnection,
    framing: ws::Framing,
}

impl Stream {
    /// A TCP connection just accepted.
    pub fn tcp(stream: glommio::net::TcpStream) -> Stream {
        Stream::Tcp(tcp::Tcp::accepted(stream))
    }

    /// A TCP connection just accepted on a WebSocket listener, once its
    /// upgrade request is answered; data frames are bounded by `max_frame`.
    /// `proxied` and `early`: the client's address and the bytes read past
    /// a PROXY header, which are the start of the upgrade request.
    pub async fn websocket(
        stream: glommio::net::TcpStream,
        proxied: Option<SocketAddr>,
        early: &[u8],
        policy: &ws::Policy,
        max_frame: usize,
    ) -> Result<Stream, ws::UpgradeError> {
        let mut tcp = tcp::Tcp::accepted(stream);
        if let Some(peer) = proxied {
            tcp.set_proxied_peer(peer);
        }
        let ws = ws::upgrade(tcp, early.to_vec(), policy, max_frame).await?;
        Ok(Stream::Ws(Box::new(ws)))
    }

    /// A TLS stream, its handshake done, once its WebSocket upgrade request
    /// is answered (`wss`); data frames are bounded by `max_frame`.
    pub async fn websocket_over_tls(
        self,
        policy: &ws::Policy,
        max_frame: usize,
    ) -> Result<Stream, ws::UpgradeError> {
        match self {
            Stream::Tls(tls) => {
                let ws = ws::upgrade(*tls, Vec::new(), policy, max_frame).await?;
                Ok(Stream::Wss(Box::new(ws)))
            }
            _ => Err(ws::UpgradeError::Io(io::ErrorKind::InvalidInput.into())),
        }
    }

    /// A TLS session, not yet handshaken, over a TCP connection just
    /// accepted; `early` holds bytes already read from the socket (behind
    /// a PROXY header), which are the start of the TLS stream.
    pub fn tls(
        stream: glommio::net::TcpStream,
        config: std::sync::Arc<rustls::ServerConfig>,
        early: &[u8],
    ) -> Result<Stream, HandshakeFailure> {
        tls::Tls::accept(tcp::Tcp::accepted(stream), config, early).map(Stream::Tls)
    }

    /// Completes a TLS handshake, pushing its last records out; a stream
    /// with no handshake is ready at once.
    pub async fn handshake(&mut self) -> Result<(), HandshakeFailure> {
        match self {
            // A wss stream is made from a handshaken TLS one.
            Stream::Tcp(_) | Stream::Ws(_) | Stream::Wss(_) => Ok(()),
            Stream::Tls(s) => std::future::poll_fn(|cx| s.poll_handshake(cx))
                .await
                .map_err(|e| e.failure()),
        }
    }

    /// The client is at `peer`, as a PROXY protocol header said.
    pub fn set_proxied_peer(&mut self, peer: SocketAddr) {
        match self {
            Stream::Tcp(s) => s.set_proxied_peer(peer),
            Stream::Ws(s) => s.inner_mut().set_proxied_peer(peer),
            Stream::Tls(s) => s.tcp_mut().set_proxied_peer(peer),
            Stream::Wss(s) => s.inner_mut().tcp_mut().set_proxied_peer(peer),
        }
    }

    fn proxied_peer(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.proxied_peer(),
            Stream::Ws(s) => s.inner().proxied_peer(),
            Stream::Tls(s) => s.tcp().proxied_peer(),
            Stream::Wss(s) => s.inner().tcp().proxied_peer(),
        }
    }

    /// The identity of the client's verified certificate (its CN, else its
    /// first DNS name); `None` for a transport without one.
    pub fn identity(&self) -> Option<String> {
        match self {
            Stream::Tcp(_) | Stream::Ws(_) => None,
            Stream::Tls(s) => s.identity(),
            Stream::Wss(s) => s.inner().identity(),
        }
    }

    /// Reads what the transport has for the peer's byte stream into `buf`;
    /// `Ok(0)` is the end of the stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_read(cx, buf),
            Stream::Ws(s) => s.poll_read(cx, buf),
            Stream::Tls(s) => s.poll_read(cx, buf),
            Stream::Wss(s) => s.poll_read(cx, buf),
        }
    }

    /// Writes a prefix of `buf`; the count says how much was taken.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => s.poll_write(cx, buf),
            Stream::Ws(s) => s.poll_write(cx, buf),
            Stream::Tls(s) => s.poll_write(cx, buf),
            Stream::Wss(s) => s.poll_write(cx, buf),
        }
    }

    /// Pushes what the transport still holds of earlier writes (TLS
    /// records); the connection driver calls it when its outbox is empty.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            Stream::Ws(s) => s.poll_flush(cx),
            Stream::Tls(s) => s.poll_flush(cx),
            Stream::Wss(s) => s.poll_flush(cx),
        }
    }

    /// The peer's address, as far as the transport knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::Ws(s) => s.peer_addr(),
            Stream::Tls(s) => s.peer_addr(),
            Stream::Wss(s) => s.peer_addr(),
        }
    }

    /// Detaches the stream from this shard for another one. Anything read
    /// from the socket but not yet returned by `poll_read` must be inside
    /// the transport's state, never lost.
    pub fn into_moving(self) -> io::Result<Moving> {
        let proxied = self.proxied_peer();
        match self {
            Stream::Tcp(s) => Ok(Moving {
                fd: s.into_fd()?,
                proxied,
                state: MovingState::Tcp,
            }),
            Stream::Ws(s) => {
                let (tcp, framing) = s.into_parts();
                Ok(Moving {
                    fd: tcp.into_fd()?,
                    proxied,
                    state: MovingState::Ws(Box::new(framing)),
                })
            }
            Stream::Tls(s) => {
                let (tcp, session) = s.into_parts();
                Ok(Moving {
                    fd: tcp.into_fd()?,
                    proxied,
                    state: MovingState::Tls(session),
                })
            }
            Stream::Wss(s) => {
                let (tls, framing) = s.into_parts();
                let (tcp, session) = Box::new(tls).into_parts();
                Ok(Moving {
                    fd: tcp.into_fd()?,
                    proxied,
                    state: MovingState::Wss(Box::new(WssState {
                        session: *session,
                        framing,
                    })),
                })
            }
        }
    }
}

impl Moving {
    /// Attaches the stream to the shard this is called on.
    pub fn attach(self) -> Stream {
        let tcp = tcp::Tcp::from_fd(self.fd, self.proxied);
        match self.state {
            MovingState::Tcp => Stream::Tcp(tcp),
            MovingState::Ws(framing) => Stream::Ws(Box::new(ws::Ws::from_parts(tcp, *framing))),
            MovingState::Tls(session) => Stream::Tls(tls::Tls::attach(tcp, session)),
            MovingState::Wss(state) => {
                let WssState { session, framing } = *state;
                let tls = *tls::Tls::attach(tcp, Box::new(session));
                Stream::Wss(Box::new(ws::Ws::from_parts(tls, framing)))
            }
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_flush(self.get_mut(), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => s.poll_close(cx),
            Stream::Ws(s) => s.poll_close(cx),
            Stream::Tls(s) => s.poll_close(cx),
            Stream::Wss(s) => s.poll_close(cx),
        }
    }
}
