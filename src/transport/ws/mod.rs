//! MQTT over WebSocket (RFC 6455, MQTT 3.1.1 §6), server side, over any
//! inner byte stream: TCP for `ws`, a TLS session for `wss`.
//!
//! After the upgrade ([`upgrade`], [`handshake`]) a [`Ws`] reads frames
//! and yields their binary payload as one byte stream, and writes each
//! buffer it is given as one binary frame: the connection driver writes
//! its whole outbox at once, so a batch of MQTT packets costs one frame
//! header, not one per packet. Pings are answered, a close frame is
//! answered and ends the stream, and a protocol error sends the close code
//! of [`frame::FrameError`] before the stream fails.
//!
//! Everything but the inner stream is in [`Framing`], which is `Send`: it
//! travels with the socket when the connection is handed to its owner shard.

#![forbid(unsafe_code)]

pub mod config;
pub mod frame;
pub mod handshake;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};

use frame::{Decoder, FrameError};
pub use handshake::{Policy, Refusal};

/// Bytes of a new frame written together with its header: one write for a
/// whole batch of small packets.
const WRITE_CHUNK: usize = 8 * 1024;
/// Bytes asked of the inner stream per read during the upgrade.
const UPGRADE_READ_CHUNK: usize = 2048;
/// Reads of the inner stream per `poll_read` that may yield no payload
/// (control frames, empty frames) before the task yields: a peer sending
/// only pings must not keep a shard's other connections waiting.
const EMPTY_READS_MAX: usize = 4;
/// Control frames queued for the peer beyond which pongs are not queued:
/// a peer pinging a connection that cannot write must not grow memory.
const CONTROL_OUT_MAX: usize = 1024;

/// The byte stream under the WebSocket framing.
pub trait Inner {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Pushes what the stream still holds of earlier writes (TLS records).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl Inner for super::tcp::Tcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        super::tcp::Tcp::poll_read(self, cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        super::tcp::Tcp::poll_write(self, cx, buf)
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        super::tcp::Tcp::poll_close(self, cx)
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        super::tcp::Tcp::peer_addr(self)
    }
}

/// How the stream ends, once it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// A close frame came from the peer, or this side ends the
    /// connection; ours is queued.
    Closed,
    /// The peer broke the protocol; our close frame is queued.
    Failed(FrameError),
}

/// A WebSocket connection's state apart from its inner stream.
#[derive(Debug, Clone)]
pub struct Framing {
    rx: Decoder,
    /// Raw bytes read with the upgrade request, not yet decoded.
    unread: Vec<u8>,
    /// Pong and close frames waiting for the end of the data frame being
    /// written.
    control_out: Vec<u8>,
    /// The header of the data frame being written, and how much of it is.
    head: [u8; frame::SERVER_HEAD_MAX],
    head_len: u8,
    head_written: u8,
    /// Payload bytes the data frame being written still needs.
    owed: u64,
    end: End,
}

impl Framing {
    /// The state right after the upgrade; `unread` are bytes that followed
    /// the request.
    pub fn new(max_frame: usize, unread: Vec<u8>) -> Framing {
        Framing {
            rx: Decoder::new(max_frame),
            unread,
            control_out: Vec::new(),
            head: [0; frame::SERVER_HEAD_MAX],
            head_len: 0,
            head_written: 0,
            owed: 0,
            end: End::Open,
        }
    }

    /// Between two data frames: a control frame may go out.
    fn at_frame_boundary(&self) -> bool {
        self.owed == 0 && self.head_written >= self.head_len
    }

    fn queue_control(&mut self, bytes: &[u8]) {
        self.control_out.extend_from_slice(bytes);
    }
}

/// A WebSocket stream over `S`.
pub struct Ws<S> {
    inner: S,
    framing: Framing,
}

impl<S: Inner> Ws<S> {
    pub fn from_parts(inner: S, framing: Framing) -> Ws<S> {
        Ws { inner, framing }
    }

    pub fn into_parts(self) -> (S, Framing) {
        (self.inner, self.framing)
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Pushes queued control frames (when no data frame is half written)
    /// and whatever the inner stream holds of earlier writes.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing.at_frame_boundary() {
            ready!(self.poll_flush_control(cx))?;
        }
        self.inner.poll_flush(cx)
    }

    /// Writes queued control frames if no data frame is half written.
    /// `Pending` without a registered waker only in the middle of a data
    /// frame, whose completion (`poll_write`) comes first anyway.
    fn poll_flush_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing.control_out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if !self.framing.at_frame_boundary() {
            return Poll::Pending;
        }
        while !self.framing.control_out.is_empty() {
            let n = ready!(self.inner.poll_write(cx, &self.framing.control_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.framing
                .control_out
                .drain(..n.min(self.framing.control_out.len()));
        }
        self.framing.control_out = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Reads the binary payload of the peer's frames into `buf`; `Ok(0)`
    /// after a close handshake, an error after a protocol error.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut reads = 0;
        loop {
            let flushed = self.poll_flush_control(cx)?;
            match self.framing.end {
                End::Open => {}
                End::Closed => return flushed.map(|()| Ok(0)),
                End::Failed(e) => {
                    return flushed.map(|()| Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                }
            }
            if reads == EMPTY_READS_MAX {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let n = if self.framing.unread.is_empty() {
                ready!(self.inner.poll_read(cx, buf))?
            } else {
                let n = self.framing.unread.len().min(buf.len());
                buf[..n].copy_from_slice(&self.framing.unread[..n]);
                self.framing.unread.drain(..n);
                if self.framing.unread.is_empty() {
                    self.framing.unread = Vec::new();
                }
                n
            };
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            match self.framing.rx.decode(&mut buf[..n]) {
                Ok(decoded) => {
                    if let Some(payload) = self.framing.rx.take_pong() {
                        if self.framing.control_out.len() < CONTROL_OUT_MAX {
                            self.framing
                                .queue_control(&frame::server_control(frame::OP_PONG, &payload));
                        }
                    }
                    if let Some(code) = decoded.close {
                        // [RFC 6455 §5.5.1]: answer with a close, echoing the code.
                        self.framing.queue_control(&frame::server_close(code));
                        self.framing.end = End::Closed;
                    }
                    if decoded.payload > 0 {
                        return Poll::Ready(Ok(decoded.payload));
                    }
                }
                Err(e) => {
                    self.framing
                        .queue_control(&frame::server_close(Some(e.close_code())));
                    self.framing.end = End::Failed(e);
                }
            }
        }
    }

    /// Writes a prefix of `buf` as (part of) one binary frame; a new frame
    /// spans the whole of `buf`.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let f = &mut self.framing;
            if f.head_written < f.head_len {
                let head = &f.head[usize::from(f.head_written)..usize::from(f.head_len)];
                let n = ready!(self.inner.poll_write(cx, head))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                f.head_written += n.min(head.len()) as u8;
                continue;
            }
            if f.owed > 0 {
                let m = usize::try_from(f.owed).map_or(buf.len(), |o| o.min(buf.len()));
                let n = ready!(self.inner.poll_write(cx, &buf[..m]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                f.owed -= n.min(m) as u64;
                return Poll::Ready(Ok(n.min(m)));
            }
            ready!(self.poll_flush_control(cx))?;
            if self.framing.end != End::Open {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let mut head = [0; frame::SERVER_HEAD_MAX];
            let head_len = frame::server_head(frame::OP_BINARY, true, buf.len() as u64, &mut head);
            let mut chunk = [0u8; WRITE_CHUNK];
            let first = buf.len().min(WRITE_CHUNK - head_len);
            chunk[..head_len].copy_from_slice(&head[..head_len]);
            chunk[head_len..head_len + first].copy_from_slice(&buf[..first]);
            // Pending here commits nothing: the next call frames whatever
            // buffer it is given.
            let n = ready!(self.inner.poll_write(cx, &chunk[..head_len + first]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let f = &mut self.framing;
            if n < head_len {
                f.head = head;
                f.head_len = head_len as u8;
                f.head_written = n as u8;
                f.owed = buf.len() as u64;
                continue;
            }
            let sent = (n - head_len).min(first);
            f.head_len = 0;
            f.head_written = 0;
            f.owed = (buf.len() - sent) as u64;
            if sent > 0 {
                return Poll::Ready(Ok(sent));
            }
        }
    }

    /// Ends the connection from this side: a close frame (1000) unless
    /// one is already queued, then the inner stream's close.
    pub fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.framing.end == End::Open {
            self.framing
                .queue_control(&frame::server_close(Some(frame::CLOSE_NORMAL)));
            self.framing.end = End::Closed;
        }
        let _ = ready!(self.poll_flush_control(cx));
        self.inner.poll_close(cx)
    }
}

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade refused: {0}")]
    Refused(Refusal),
    #[error("closed before the upgrade request was complete")]
    Closed,
    #[error("upgrade failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads the upgrade request from `inner` and answers it; data frames of
/// at most `max_frame` bytes are accepted afterwards. `early` is the start
/// of the request, read from the socket already (behind a PROXY header).
/// The caller bounds the time it takes.
pub async fn upgrade<S: Inner>(
    mut inner: S,
    early: Vec<u8>,
    policy: &Policy,
    max_frame: usize,
) -> Result<Ws<S>, UpgradeError> {
    let peer = inner
        .peer_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut request = early;
    let mut chunk = vec![0u8; UPGRADE_READ_CHUNK];
    loop {
        match handshake::respond(&request, peer, policy) {
            Ok(Some(accepted)) => {
                write_all(&mut inner, &accepted.response).await?;
                let unread = request
                    .get(accepted.consumed..)
                    .unwrap_or_default()
                    .to_vec();
                return Ok(Ws::from_parts(inner, Framing::new(max_frame, unread)));
            }
            Ok(None) => {}
            Err(refusal) => {
                // Best effort: the connection closes either way.
                let _ = write_all(&mut inner, &refusal.response()).await;
                return Err(UpgradeError::Refused(refusal));
            }
        }
        let n = poll_fn(|cx| inner.poll_read(cx, &mut chunk)).await?;
        match chunk.get(..n) {
            Some(read) if n > 0 => request.extend_from_slice(read),
            _ => return Err(UpgradeError::Closed),
        }
    }
}

async fn write_all<S: Inner>(inner: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| inner.poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}

/// The `reason` labels of `shardmq_ws_upgrade_failures_total`: every
/// [`UpgradeError::label`], and `timeout` for an upgrade the listener's
/// deadline ended.
pub const UPGRADE_FAILURE_LABELS: [&str; 11] = [
    "malformed",
    "method",
    "path",
    "not_upgrade",
    "version",
    "key",
    "subprotocol",
    "origin",
    "closed",
    "io",
    "timeout",
];

impl UpgradeError {
    /// The `reason` label this failure is counted under.
    pub fn label(&self) -> &'static str {
        match self {
            UpgradeError::Refused(r) => r.label(),
            UpgradeError::Closed => "closed",
            UpgradeError::Io(_) => "io",
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod stream_tests;
