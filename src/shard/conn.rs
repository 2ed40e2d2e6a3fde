//! The connection driver: moves bytes between one socket and the broker.
//!
//! One task per connection polls, in this order: write the outbox, stop if
//! the broker closes the connection, then read — unless the broker paused the
//! connection (a SUBSCRIBE awaiting its barrier) or the mesh is congested.

use std::future::poll_fn;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::mesh::Handoff;
use super::Shard;
use crate::mqtt::broker::ConnId;
use crate::mqtt::codec::{self, Connect};

/// Bytes asked of the socket per read. Small enough that an idle connection
/// holds nothing (the buffer is released when empty), large enough that a
/// burst of small publishes costs one syscall per many packets.
const READ_CHUNK: usize = 8 * 1024;

enum Event {
    /// New bytes in the read buffer, or undecoded bytes to resume on.
    Readable,
    /// The broker closed the connection; the outbox got its last write.
    Closed,
    /// The peer closed the socket or it failed.
    Lost,
}

/// Runs a connection handed over by another shard.
pub(super) async fn run_handoff(shard: Rc<Shard>, handoff: Handoff) {
    // SAFETY: the fd was duplicated from a live socket by the sending shard
    // and its ownership moved here with the hand-off; nothing else closes it.
    let stream = unsafe { TcpStream::from_raw_fd(handoff.fd.into_raw_fd()) };
    run(shard, stream, handoff.connect, handoff.unread).await;
}

/// Runs a connection whose CONNECT this shard owns, until it ends.
pub(super) async fn run(shard: Rc<Shard>, mut stream: TcpStream, connect: Connect, rbuf: BytesMut) {
    let conn = shard.broker.borrow_mut().connect(Instant::now(), connect);
    let mut driver = Driver {
        shard,
        conn,
        rbuf,
        undecoded: true,
    };
    loop {
        match poll_fn(|cx| driver.poll(cx, &mut stream)).await {
            Event::Readable => driver.process(),
            Event::Closed => break,
            Event::Lost => {
                driver.shard.broker.borrow_mut().connection_lost(conn);
                break;
            }
        }
        driver.shard.after_input();
    }
    driver.shard.after_input();
    driver.shard.clear_waker(conn);
    drop(stream);
    driver.shard.broker.borrow_mut().release(conn);
}

struct Driver {
    shard: Rc<Shard>,
    conn: ConnId,
    rbuf: BytesMut,
    /// The read buffer may hold complete packets not yet decoded.
    undecoded: bool,
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>, stream: &mut TcpStream) -> Poll<Event> {
        let shard = &*self.shard;
        shard.set_waker(self.conn, cx.waker());
        let mut broker = shard.broker.borrow_mut();
        if let Some(outbox) = broker.outbox_mut(self.conn) {
            if let Err(event) = write_outbox(cx, stream, outbox) {
                return Poll::Ready(event);
            }
        }
        if broker.closing(self.conn).is_some() {
            return Poll::Ready(Event::Closed);
        }
        if broker.is_paused(self.conn) {
            return Poll::Pending;
        }
        drop(broker);
        if self.undecoded {
            return Poll::Ready(Event::Readable);
        }
        if shard.congested(cx.waker()) {
            return Poll::Pending;
        }
        let filled = self.rbuf.len();
        self.rbuf.resize(filled + READ_CHUNK, 0);
        let read = Pin::new(&mut *stream).poll_read(cx, &mut self.rbuf[filled..]);
        match read {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.rbuf.truncate(filled + n);
                self.undecoded = true;
                Poll::Ready(Event::Readable)
            }
            Poll::Ready(_) => Poll::Ready(Event::Lost),
            Poll::Pending => {
                self.rbuf.truncate(filled);
                Poll::Pending
            }
        }
    }

    /// Decodes and hands over every complete packet, unless the broker
    /// pauses or closes the connection on the way.
    fn process(&mut self) {
        let max = self.shard.config.mqtt.max_packet_size;
        let now = Instant::now();
        let mut broker = self.shard.broker.borrow_mut();
        loop {
            if broker.is_paused(self.conn) || broker.closing(self.conn).is_some() {
                return;
            }
            match codec::decode(&mut self.rbuf, max) {
                Ok(Some(packet)) => broker.handle_packet(now, self.conn, packet),
                Ok(None) => break,
                Err(error) => {
                    broker.handle_decode_error(self.conn, &error);
                    return;
                }
            }
        }
        self.undecoded = false;
        if self.rbuf.is_empty() {
            // Decoded packets share the old allocation; an idle connection
            // keeps none.
            self.rbuf = BytesMut::new();
        }
    }
}

/// Writes as much of the outbox as the socket takes now.
fn write_outbox(
    cx: &mut Context<'_>,
    stream: &mut TcpStream,
    outbox: &mut BytesMut,
) -> Result<(), Event> {
    while !outbox.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, &outbox[..]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(Event::Lost),
            Poll::Ready(Ok(n)) => outbox.advance(n),
            Poll::Pending => break,
        }
    }
    if outbox.is_empty() && outbox.capacity() > 64 * 1024 {
        // A burst grew the buffer; don't keep it for an idle connection.
        *outbox = BytesMut::new();
    }
    Ok(())
}
