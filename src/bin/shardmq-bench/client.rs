//! One MQTT client connection on a glommio socket.
//!
//! Set-up (`open`, `subscribe`) is plain async code under a deadline. After
//! it, the drivers poll the connection themselves: `poll_read` appends a
//! large chunk of socket bytes to the read buffer, `next_packet` decodes
//! from it with the crate's codec, and `poll_flush` writes everything the
//! driver appended to the write buffer in as few syscalls as the socket
//! allows. Buffers keep their capacity, so the steady state allocates
//! nothing.
//!
//! Over TLS or WebSocket the same buffers hold MQTT bytes: the socket
//! side goes through the connection's [`Layers`], which decrypt and
//! deframe after a read and frame and encrypt before a write.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::stats::Problem;
use super::transport::{check_upgrade, Endpoint, Layers};
use shardmq::mqtt::codec::{self, Connect, ConnectReturnCode, Packet, Subscribe};
use shardmq::mqtt::QoS;

/// Read sizes adapt between these: small for quiet connections (the buffer
/// is zeroed before each read), large when a read fills the whole chunk.
const READ_CHUNK_MIN: usize = 4 * 1024;
const READ_CHUNK_MAX: usize = 256 * 1024;

/// See `Conn::small_reads`.
const READ_CHUNK_SMALL: usize = 256;

/// Largest packet accepted from a broker: payloads are at most 16 MiB.
const MAX_PACKET: usize = 17 * 1024 * 1024;

/// Packet id of the one SUBSCRIBE each subscriber sends.
const SUBSCRIBE_PKID: u16 = 1;

/// How long `close` waits for the broker to close after DISCONNECT, so
/// that the broker side, not ours, keeps the TIME_WAIT state.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Who a client says it is in CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    /// Sent only with a user name, as MQTT 3.1.1 requires.
    pub password: Option<&'a str>,
}

/// A connected MQTT client.
pub struct Conn {
    stream: TcpStream,
    /// TLS and WebSocket state; `None` on plain TCP, whose path stays
    /// as direct as it was.
    layers: Option<Box<Layers>>,
    rbuf: BytesMut,
    /// Bytes queued for the socket; drivers append packets here.
    pub wbuf: BytesMut,
    chunk: usize,
    /// Smallest read size (see `small_reads`).
    min_chunk: usize,
}

impl Conn {
    /// Connects, sends CONNECT (clean session unless the endpoint says
    /// `--persistent`) and waits for a CONNACK
    /// that accepts it, all within `timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        client_id: &str,
        keepalive_s: u16,
        timeout: Duration,
    ) -> Result<Conn, Problem> {
        let login = Login {
            client_id,
            username: None,
            password: None,
        };
        Conn::open_as(endpoint, &login, keepalive_s, timeout).await
    }

    /// [`open`](Self::open) with a user name and password in CONNECT.
    pub async fn open_as(
        endpoint: &Endpoint,
        login: &Login<'_>,
        keepalive_s: u16,
        timeout: Duration,
    ) -> Result<Conn, Problem> {
        let deadline = glommio::timer::sleep(timeout);
        let stream = match TcpStream::connect_timeout(endpoint.addr, timeout).await {
            Ok(stream) => stream,
            Err(e) if is_timeout(&e) => return Err(Problem::ConnectTimeout),
            Err(_) => return Err(Problem::ConnectError),
        };
        // Writes are coalesced here already; Nagle would only delay acks.
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            layers: endpoint.layers()?,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::with_capacity(256),
            chunk: READ_CHUNK_MIN,
            min_chunk: READ_CHUNK_MIN,
        };
        let handshake = async {
            conn.transport_handshake(endpoint).await?;
            conn.connect_handshake(login, keepalive_s, endpoint.clean_session)
                .await
        };
        within(deadline, Problem::ConnectTimeout, handshake).await?;
        Ok(conn)
    }

    /// The TLS handshake, then the WebSocket upgrade, as the endpoint
    /// asks.
    async fn transport_handshake(&mut self, endpoint: &Endpoint) -> Result<(), Problem> {
        while self.layers.as_ref().is_some_and(|l| l.handshaking()) {
            self.flush().await?;
            poll_fn(|cx| self.poll_pull(cx)).await?;
        }
        let Some((request, accept)) = endpoint.upgrade_request() else {
            return Ok(());
        };
        self.wbuf.extend_from_slice(&request);
        self.flush().await?;
        loop {
            if let Some(len) = check_upgrade(&self.rbuf, &accept)? {
                let rest = self.rbuf.split_off(len);
                self.rbuf.clear();
                if let Some(layers) = &mut self.layers {
                    layers.start_framing(&rest);
                }
                return Ok(());
            }
            poll_fn(|cx| self.poll_pull(cx)).await?;
        }
    }

    async fn connect_handshake(
        &mut self,
        login: &Login<'_>,
        keepalive_s: u16,
        clean_session: bool,
    ) -> Result<(), Problem> {
        let connect = Connect {
            protocol_level: 4,
            clean_session,
            keep_alive_s: keepalive_s,
            client_id: login.client_id.to_string(),
            username: login.username.map(str::to_string),
            password: login.password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            will: None,
        };
        Packet::Connect(Box::new(connect)).encode(&mut self.wbuf);
        self.flush().await?;
        match self.read_packet().await? {
            Packet::ConnAck {
                code: ConnectReturnCode::Accepted,
                ..
            } => Ok(()),
            Packet::ConnAck { .. } => Err(Problem::ConnackRefused),
            _ => Err(Problem::ProtocolError),
        }
    }

    /// Subscribes to one filter and returns the granted QoS, within
    /// `timeout`. A broker may deliver retained messages right after the
    /// SUBACK; they stay in the read buffer for the driver.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        timeout: Duration,
    ) -> Result<QoS, Problem> {
        let deadline = glommio::timer::sleep(timeout);
        within(
            deadline,
            Problem::SubscribeTimeout,
            self.subscribe_now(filter, qos),
        )
        .await
    }

    async fn subscribe_now(&mut self, filter: &str, qos: QoS) -> Result<QoS, Problem> {
        let subscribe = Subscribe {
            pkid: SUBSCRIBE_PKID,
            filters: vec![(filter.to_string(), qos)],
        };
        Packet::Subscribe(subscribe).encode(&mut self.wbuf);
        self.flush().await?;
        match self.read_packet().await? {
            Packet::SubAck { pkid, codes } if pkid == SUBSCRIBE_PKID => {
                match codes.first().and_then(|&c| QoS::from_u8(c)) {
                    Some(granted) => Ok(granted),
                    None => Err(Problem::SubscribeRefused),
                }
            }
            _ => Err(Problem::ProtocolError),
        }
    }

    /// Sends DISCONNECT and waits briefly for the broker to close.
    pub async fn close(mut self) {
        Packet::Disconnect.encode(&mut self.wbuf);
        let goodbye = async {
            self.flush().await?;
            loop {
                poll_fn(|cx| self.poll_read(cx)).await?;
                self.rbuf.clear();
                // A broker with a backlog for us could keep this loop busy
                // forever: give the deadline (and other clients) a turn.
                futures_lite::future::yield_now().await;
            }
        };
        let _: Result<(), Problem> = within(
            glommio::timer::sleep(CLOSE_GRACE),
            Problem::IoError,
            goodbye,
        )
        .await;
    }

    /// Reads until one whole packet is buffered and returns it.
    pub async fn read_packet(&mut self) -> Result<Packet, Problem> {
        loop {
            if let Some(packet) = self.next_packet()? {
                return Ok(packet);
            }
            poll_fn(|cx| self.poll_read(cx)).await?;
        }
    }

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> Result<(), Problem> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Decodes the next buffered packet, if a whole one is there.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, Problem> {
        codec::decode(&mut self.rbuf, MAX_PACKET).map_err(|_| Problem::ProtocolError)
    }

    /// Appends what the socket has to the read buffer: `Ready(Ok(n))`
    /// with `n > 0`, or the reason the connection is over. `Pending`
    /// registers the task to be woken when bytes arrive.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Problem>> {
        if self.layers.is_some() {
            // A read may complete a record or a frame header only.
            loop {
                match self.poll_pull(cx) {
                    Poll::Ready(Ok(0)) => continue,
                    other => return other,
                }
            }
        }
        let filled = self.rbuf.len();
        self.rbuf.resize(filled + self.chunk, 0);
        let read = Pin::new(&mut self.stream).poll_read(cx, &mut self.rbuf[filled..]);
        let n = match read {
            Poll::Pending => 0,
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                self.rbuf.truncate(filled);
                return Poll::Ready(Err(io_problem(&e)));
            }
        };
        self.rbuf.truncate(filled + n);
        if read.is_pending() {
            return Poll::Pending;
        }
        if n == 0 {
            return Poll::Ready(Err(Problem::ClosedByBroker));
        }
        adapt_chunk(&mut self.chunk, self.min_chunk, n);
        Poll::Ready(Ok(n))
    }

    /// One socket read through the layers: `Ready(Ok(n))` with the MQTT
    /// bytes it gave, maybe none.
    fn poll_pull(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Problem>> {
        let Conn {
            stream,
            layers: Some(layers),
            rbuf,
            chunk,
            min_chunk,
            ..
        } = self
        else {
            return self.poll_read(cx);
        };
        let raw = layers.socket_in();
        let filled = raw.len();
        raw.resize(filled + *chunk, 0);
        let read = Pin::new(stream).poll_read(cx, &mut raw[filled..]);
        let n = match read {
            Poll::Pending => 0,
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                raw.truncate(filled);
                return Poll::Ready(Err(io_problem(&e)));
            }
        };
        raw.truncate(filled + n);
        if read.is_pending() {
            return Poll::Pending;
        }
        if n == 0 {
            return Poll::Ready(Err(Problem::ClosedByBroker));
        }
        adapt_chunk(chunk, *min_chunk, n);
        Poll::Ready(layers.decode(rbuf))
    }

    /// Starts reads at `READ_CHUNK_SMALL` bytes, for a connection that is
    /// polled far more often than it receives: each poll zeroes a read
    /// chunk, and a voice device's task is woken by every UDP echo while
    /// its MQTT connection carries a packet a minute.
    pub fn small_reads(&mut self) {
        self.min_chunk = READ_CHUNK_SMALL;
        self.chunk = READ_CHUNK_SMALL;
    }

    /// Writes the write buffer until it is empty (`Ready(Ok)`) or the
    /// socket is full (`Pending`, woken when it drains).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Problem>> {
        if let Some(layers) = &mut self.layers {
            return poll_flush_layers(&mut self.stream, layers, &mut self.wbuf, cx);
        }
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Problem::ClosedByBroker)),
                Poll::Ready(Ok(n)) => self.wbuf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_problem(&e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Gives back the read buffer's memory when it holds nothing: an idle
    /// connection should not keep a read chunk.
    pub fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if let Some(layers) = &mut self.layers {
            layers.shrink_idle();
        }
    }
}

/// [`Conn::poll_flush`] through the layers: the socket bytes already
/// made go first, and `wbuf` is framed and encrypted only once they are
/// out, so a full socket still holds the MQTT bytes back in `wbuf`.
fn poll_flush_layers(
    stream: &mut TcpStream,
    layers: &mut Layers,
    wbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Problem>> {
    loop {
        let out = layers.out();
        while !out.is_empty() {
            match Pin::new(&mut *stream).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Problem::ClosedByBroker)),
                Poll::Ready(Ok(n)) => out.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_problem(&e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        if wbuf.is_empty() && !layers.owes() {
            return Poll::Ready(Ok(()));
        }
        if let Err(problem) = layers.encode(wbuf) {
            return Poll::Ready(Err(problem));
        }
    }
}

/// Doubles the read size when a read filled it, halves it when a read
/// used little of it.
fn adapt_chunk(chunk: &mut usize, min_chunk: usize, n: usize) {
    if n == *chunk {
        *chunk = (*chunk * 2).min(READ_CHUNK_MAX);
    } else if n < *chunk / 8 {
        *chunk = (*chunk / 2).max(min_chunk);
    }
}

/// Sends PINGREQ when a client wrote nothing for half its keepalive.
pub struct Keepalive {
    half_ns: u64,
    last_write_ns: u64,
}

impl Keepalive {
    pub fn new(keepalive_s: u16) -> Keepalive {
        Keepalive {
            half_ns: u64::from(keepalive_s) * 1_000_000_000 / 2,
            last_write_ns: super::clock::now_ns(),
        }
    }

    /// Call before flushing: notes that bytes are going out, or queues a
    /// PINGREQ if none went out for half the keepalive.
    pub fn check(&mut self, now: u64, conn: &mut Conn) {
        if !conn.wbuf.is_empty() {
            self.last_write_ns = now;
        } else if now.saturating_sub(self.last_write_ns) >= self.half_ns {
            Packet::PingReq.encode(&mut conn.wbuf);
            self.last_write_ns = now;
        }
    }
}

/// Runs `work` unless `deadline` passes first.
pub async fn within<T>(
    deadline: impl Future<Output = ()>,
    expired: Problem,
    work: impl Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    futures_lite::future::or(work, async {
        deadline.await;
        Err(expired)
    })
    .await
}

fn is_timeout(error: &glommio::GlommioError<()>) -> bool {
    match error {
        glommio::GlommioError::IoError(e) => e.kind() == std::io::ErrorKind::TimedOut,
        glommio::GlommioError::TimedOut(_) => true,
        _ => false,
    }
}

/// A reset or broken pipe means the broker closed on us.
fn io_problem(error: &std::io::Error) -> Problem {
    use std::io::ErrorKind::*;
    match error.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Problem::ClosedByBroker,
        _ => Problem::IoError,
    }
}
