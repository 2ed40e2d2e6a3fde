//! The connection driver: moves bytes between one socket and the broker.
//!
//! One task per connection polls, in this order: write the outbox, stop if
//! the broker closes the connection, then read — unless the broker paused the
//! connection (a SUBSCRIBE awaiting its barrier) or throttles it (a
//! subscriber somewhere is behind), the peer leaves more than
//! `max_outbox_bytes` unread, or the mesh is congested.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_lite::AsyncWriteExt;

use super::limits::Slot;
use super::mesh::Handoff;
use super::Shard;
use crate::mqtt::broker::{Access, ConnId};
use crate::mqtt::codec::{self, Connect, ConnectReturnCode};
use crate::transport::Stream;

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
    let stream = handoff.stream.attach();
    run(
        shard,
        stream,
        Box::new(handoff.connect),
        handoff.unread,
        handoff.acl,
        handoff.slot,
        handoff.max_packet_size,
    )
    .await;
}

/// Runs a connection whose CONNECT this shard owns, until it ends. The
/// CONNECT comes boxed: the task keeps its arguments' room for life, and a
/// pointer is smaller than the packet.
pub(super) async fn run(
    shard: Rc<Shard>,
    mut stream: Stream,
    connect: Box<Connect>,
    rbuf: BytesMut,
    acl: Option<Arc<dyn Access>>,
    slot: Slot,
    max_packet_size: usize,
) {
    let peer = stream.peer_addr();
    tracing::debug!(shard = shard.id.0, client_id = %connect.client_id, ?peer, "connection runs");
    if shard.draining() {
        // The server stops: this client is told to come back later.
        super::listener::refuse(&mut stream, ConnectReturnCode::ServerUnavailable).await;
        return;
    }
    let address = peer.map(|p| p.ip());
    if let Some(ip) = address {
        if !shard.per_address.borrow_mut().hold(ip) {
            shard.admission.note_refused_address();
            tracing::debug!(%ip, "too many connections from the address");
            super::listener::refuse(&mut stream, ConnectReturnCode::ServerUnavailable).await;
            return;
        }
    }
    let admitted = shard.admit(connect, peer);
    let (conn, max_packet) = match admitted {
        Ok(taken) => taken,
        Err(connect) => {
            let conn = shard
                .broker
                .borrow_mut()
                .connect_with_acl(Instant::now(), *connect, acl);
            (conn, max_packet_size)
        }
    };
    shard.after_input();
    let mut driver = Driver {
        shard,
        conn,
        max_packet,
        rbuf,
        undecoded: true,
        rbuf_owned: true,
    };
    loop {
        match poll_fn(|cx| driver.poll(cx, &mut stream)).await {
            Event::Readable => driver.process(),
            Event::Closed => {
                if driver.shard.draining() {
                    // A clean stop: what the broker queued goes out first.
                    // The process bounds how long that may take.
                    driver.flush(&mut stream).await;
                    let _ = stream.close().await;
                    break;
                }
                // One try, no wait: a WebSocket sends its close frame if the
                // socket takes it now; TCP shuts its write side, as the drop
                // below would anyway.
                let _ = futures_lite::future::poll_once(stream.close()).await;
                break;
            }
            Event::Lost => {
                driver.shard.broker.borrow_mut().connection_lost(conn);
                break;
            }
        }
        driver.shard.after_input();
        // glommio is cooperative: a peer that keeps the socket full would
        // otherwise keep this task running and starve every other
        // connection of the shard, subscribers included. One read (up to
        // `arena::READ_MAX` bytes) per turn.
        futures_lite::future::yield_now().await;
    }
    driver.shard.after_input();
    driver.shard.forget(conn);
    drop(stream);
    driver.shard.broker.borrow_mut().release(conn);
    if let Some(ip) = address {
        driver.shard.per_address.borrow_mut().release(ip);
    }
    drop(slot);
}

struct Driver {
    shard: Rc<Shard>,
    conn: ConnId,
    max_packet: usize,
    rbuf: BytesMut,
    /// The read buffer may hold complete packets not yet decoded.
    undecoded: bool,
    /// The read buffer is an allocation of its own, not an arena slice.
    rbuf_owned: bool,
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>, stream: &mut Stream) -> Poll<Event> {
        let shard = &*self.shard;
        shard.set_waker(self.conn, cx.waker());
        let mut broker = shard.broker.borrow_mut();
        let mut backlog = 0;
        if let Some(outbox) = broker.outbox_mut(self.conn) {
            if let Err(event) = write_outbox(cx, stream, outbox) {
                return Poll::Ready(event);
            }
            backlog = outbox.len();
        }
        if broker.closing(self.conn).is_some() {
            return Poll::Ready(Event::Closed);
        }
        if broker.is_paused(self.conn) || broker.is_throttled(self.conn) {
            // The broker wakes this connection when the pause or the
            // back-pressure ends.
            return Poll::Pending;
        }
        drop(broker);
        if backlog >= shard.settings.limits.max_outbox_bytes {
            // The peer does not read what it asks for (acks, PINGRESP): stop
            // reading it until the socket takes the backlog. The pending
            // write woke registration brings us back.
            return Poll::Pending;
        }
        if self.undecoded {
            return Poll::Ready(Event::Readable);
        }
        if shard.congested(cx.waker()) {
            return Poll::Pending;
        }
        // Reads land in the shard's arena: an idle connection holds no buffer.
        let mut arena = shard.arena.borrow_mut();
        match stream.poll_read(cx, arena.space()) {
            Poll::Ready(Ok(n)) if n > 0 => {
                let chunk = arena.take(n);
                if self.rbuf.is_empty() {
                    self.rbuf = chunk;
                } else {
                    // O(1) when the chunk follows the rest in the same block.
                    self.rbuf.unsplit(chunk);
                }
                self.rbuf_owned = false;
                self.undecoded = true;
                Poll::Ready(Event::Readable)
            }
            Poll::Ready(_) => Poll::Ready(Event::Lost),
            Poll::Pending => {
                if !self.rbuf.is_empty() && !self.rbuf_owned {
                    // A partial packet waits for more bytes: copy it out so a
                    // slow sender pins a few bytes, not a whole arena block.
                    self.rbuf = BytesMut::from(&self.rbuf[..]);
                    self.rbuf_owned = true;
                }
                Poll::Pending
            }
        }
    }

    /// Writes the whole outbox, waiting for the socket; returns early if
    /// the socket fails.
    async fn flush(&self, stream: &mut Stream) {
        poll_fn(|cx| {
            let mut broker = self.shard.broker.borrow_mut();
            let Some(outbox) = broker.outbox_mut(self.conn) else {
                return Poll::Ready(());
            };
            match write_outbox(cx, stream, outbox) {
                Ok(()) if !outbox.is_empty() => Poll::Pending,
                _ => Poll::Ready(()),
            }
        })
        .await;
    }

    /// Decodes and hands over every complete packet, unless the broker
    /// pauses or closes the connection on the way.
    fn process(&mut self) {
        let max = self.max_packet;
        let now = Instant::now();
        let mut broker = self.shard.broker.borrow_mut();
        loop {
            if broker.is_paused(self.conn)
                || broker.is_throttled(self.conn)
                || broker.closing(self.conn).is_some()
            {
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
            // Let go of the arena block: an idle connection keeps nothing.
            self.rbuf = BytesMut::new();
        }
    }
}

/// Writes as much of the outbox as the socket takes now.
fn write_outbox(
    cx: &mut Context<'_>,
    stream: &mut Stream,
    outbox: &mut BytesMut,
) -> Result<(), Event> {
    while !outbox.is_empty() {
        match stream.poll_write(cx, &outbox[..]) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(Event::Lost),
            Poll::Ready(Ok(n)) => outbox.advance(n),
            Poll::Pending => break,
        }
    }
    // A transport may hold bytes it took (TLS records) beyond the last
    // write; with nothing more to write, this is where they go out. Pending
    // registers the waker, which brings the driver back here.
    if outbox.is_empty() {
        if let Poll::Ready(Err(_)) = stream.poll_flush(cx) {
            return Err(Event::Lost);
        }
    }
    if outbox.is_empty() && outbox.capacity() > 64 * 1024 {
        // A burst grew the buffer; don't keep it for an idle connection.
        *outbox = BytesMut::new();
    }
    Ok(())
}
