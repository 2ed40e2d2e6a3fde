//! `Ws` over an in-memory inner stream that can refuse or cut writes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Wake, Waker};

use super::frame::{client_frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING};
use super::*;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn cx() -> Context<'static> {
    static WAKER: std::sync::OnceLock<Waker> = std::sync::OnceLock::new();
    Context::from_waker(WAKER.get_or_init(|| Waker::from(Arc::new(Noop))))
}

/// Reads come from `incoming` (Pending when empty, end of stream once
/// `eof`); writes take at most `write_max` bytes, none while `blocked`.
#[derive(Default)]
struct Mem {
    incoming: VecDeque<Vec<u8>>,
    eof: bool,
    written: Vec<u8>,
    write_max: Option<usize>,
    blocked: bool,
}

impl Inner for Mem {
    fn poll_read(&mut self, _cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.incoming.pop_front() {
            Some(mut chunk) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    self.incoming.push_front(chunk.split_off(n));
                }
                Poll::Ready(Ok(n))
            }
            None if self.eof => Poll::Ready(Ok(0)),
            None => Poll::Pending,
        }
    }
    fn poll_write(&mut self, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.blocked {
            return Poll::Pending;
        }
        let n = self.write_max.map_or(buf.len(), |m| m.min(buf.len()));
        self.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn ws(incoming: Vec<Vec<u8>>) -> Ws<Mem> {
    let mem = Mem {
        incoming: incoming.into(),
        ..Mem::default()
    };
    Ws::from_parts(mem, Framing::new(1 << 20, Vec::new()))
}

/// Reads until Pending or the end; returns the payload and the last result.
fn read_all(ws: &mut Ws<Mem>) -> (Vec<u8>, Poll<io::Result<usize>>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match ws.poll_read(&mut cx(), &mut buf) {
            Poll::Ready(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => return (out, other),
        }
    }
}

/// Writes all of `data` through `ws` as the connection driver does: the
/// outbox shrinks by what each call took.
fn write_all(ws: &mut Ws<Mem>, mut data: &[u8]) {
    while !data.is_empty() {
        match ws.poll_write(&mut cx(), data) {
            Poll::Ready(Ok(n)) => {
                assert!(n > 0 && n <= data.len());
                data = &data[n..];
            }
            other => panic!("write stalled: {other:?}"),
        }
    }
}

#[test]
fn reads_yield_the_payload_and_answer_pings() {
    let mut first = client_frame(OP_BINARY, false, b"\x10\x0c", MASK);
    first.extend(client_frame(OP_PING, true, b"hi", MASK));
    let rest = client_frame(OP_CONTINUATION, true, b"\x00\x04MQTT", MASK);
    let mut ws = ws(vec![first, rest]);
    let (payload, last) = read_all(&mut ws);
    assert_eq!(payload, b"\x10\x0c\x00\x04MQTT");
    assert!(last.is_pending());
    // The pong went out from the read path: the driver writes nothing when
    // its outbox is empty.
    assert_eq!(ws.inner.written, [0x8A, 0x02, b'h', b'i']);
}

#[test]
fn a_stream_of_pings_does_not_hold_the_task() {
    // Cooperative scheduling: a read that finds only control frames yields
    // after a few socket reads instead of reading for as long as the peer
    // sends.
    let pings: Vec<Vec<u8>> = (0..100)
        .map(|_| client_frame(OP_PING, true, b"", MASK))
        .collect();
    let mut ws = ws(pings);
    let mut buf = [0u8; 64];
    assert!(ws.poll_read(&mut cx(), &mut buf).is_pending());
    assert_eq!(ws.inner.incoming.len(), 100 - EMPTY_READS_MAX);
}

#[test]
fn a_close_is_answered_with_the_same_code_and_ends_the_stream() {
    let mut input = client_frame(OP_BINARY, true, b"\xE0\x00", MASK);
    input.extend(client_frame(OP_CLOSE, true, &1000u16.to_be_bytes(), MASK));
    let mut ws = ws(vec![input]);
    let (payload, last) = read_all(&mut ws);
    assert_eq!(payload, b"\xE0\x00");
    assert!(matches!(last, Poll::Ready(Ok(0))));
    assert_eq!(ws.inner.written, [0x88, 0x02, 0x03, 0xE8]);
    assert!(matches!(
        ws.poll_write(&mut cx(), b"x"),
        Poll::Ready(Err(_))
    ));
}

#[test]
fn closing_from_this_side_sends_a_close_frame_once() {
    let mut ws = ws(Vec::new());
    write_all(&mut ws, b"\xE0\x00");
    assert!(matches!(ws.poll_close(&mut cx()), Poll::Ready(Ok(()))));
    assert!(matches!(ws.poll_close(&mut cx()), Poll::Ready(Ok(()))));
    assert_eq!(ws.inner.written, b"\x82\x02\xE0\x00\x88\x02\x03\xE8");
    // After the peer's close, the reply is the only close frame.
    let mut ws2 = ws_with_close();
    assert!(matches!(ws2.poll_close(&mut cx()), Poll::Ready(Ok(()))));
    assert_eq!(ws2.inner.written, [0x88, 0x02, 0x0F, 0xA0]);
}

fn ws_with_close() -> Ws<Mem> {
    let mut ws = ws(vec![client_frame(
        OP_CLOSE,
        true,
        &4000u16.to_be_bytes(),
        MASK,
    )]);
    let mut buf = [0u8; 16];
    let _ = ws.poll_read(&mut cx(), &mut buf);
    ws
}

#[test]
fn a_protocol_error_sends_its_close_code_then_fails() {
    // Unmasked: 1002.
    let mut ws1 = ws(vec![vec![0x82, 0x01, 0x00]]);
    let (_, last) = read_all(&mut ws1);
    assert!(matches!(last, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::InvalidData));
    assert_eq!(ws1.inner.written, [0x88, 0x02, 0x03, 0xEA]);
    // Text: 1003.
    let mut ws2 = ws(vec![client_frame(frame::OP_TEXT, true, b"{}", MASK)]);
    let (_, last) = read_all(&mut ws2);
    assert!(matches!(last, Poll::Ready(Err(_))));
    assert_eq!(ws2.inner.written, [0x88, 0x02, 0x03, 0xEB]);
}

#[test]
fn the_peer_closing_the_socket_is_the_end() {
    let mut ws = ws(vec![client_frame(OP_BINARY, true, b"ab", MASK)]);
    ws.inner.eof = true;
    let (payload, last) = read_all(&mut ws);
    assert_eq!(payload, b"ab");
    assert!(matches!(last, Poll::Ready(Ok(0))));
}

#[test]
fn bytes_after_the_upgrade_request_are_read_first() {
    let early = client_frame(OP_BINARY, true, b"early", MASK);
    let late = client_frame(OP_BINARY, true, b"+late", MASK);
    let mem = Mem {
        incoming: vec![late].into(),
        ..Mem::default()
    };
    let mut ws = Ws::from_parts(mem, Framing::new(1 << 20, early));
    assert_eq!(read_all(&mut ws).0, b"early+late");
}

#[test]
fn one_write_batch_is_one_binary_frame() {
    let mut ws = ws(Vec::new());
    // Two MQTT packets, one frame.
    write_all(&mut ws, b"\x20\x02\x00\x00\xD0\x00");
    assert_eq!(ws.inner.written, b"\x82\x06\x20\x02\x00\x00\xD0\x00");
}

#[test]
fn a_large_batch_is_one_frame_with_an_extended_length() {
    let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let mut ws = ws(Vec::new());
    write_all(&mut ws, &data);
    let written = &ws.inner.written;
    assert_eq!(written[..2], [0x82, 127]);
    assert_eq!(written[2..10], 70_000u64.to_be_bytes());
    assert_eq!(&written[10..], &data[..]);
}

#[test]
fn partial_writes_keep_the_frame_whole() {
    for write_max in [1, 2, 3, 5, 100] {
        let mut ws = ws(Vec::new());
        ws.inner.write_max = Some(write_max);
        let data = vec![7u8; 300];
        write_all(&mut ws, &data);
        write_all(&mut ws, b"next");
        let mut expected = vec![0x82, 126, 0x01, 0x2C];
        expected.extend_from_slice(&data);
        expected.extend_from_slice(b"\x82\x04next");
        assert_eq!(ws.inner.written, expected, "write_max {write_max}");
    }
}

#[test]
fn a_refused_write_commits_nothing() {
    let mut ws = ws(Vec::new());
    ws.inner.blocked = true;
    assert!(ws.poll_write(&mut cx(), b"ab").is_pending());
    ws.inner.blocked = false;
    // The outbox grew meanwhile: the frame spans all of it.
    write_all(&mut ws, b"abcd");
    assert_eq!(ws.inner.written, b"\x82\x04abcd");
}

#[test]
fn a_pong_waits_for_the_end_of_the_data_frame_being_written() {
    let mut ws = ws(vec![client_frame(OP_PING, true, b"p", MASK)]);
    ws.inner.write_max = Some(3);
    // The first write sends the header and one payload byte of four.
    assert!(matches!(
        ws.poll_write(&mut cx(), b"wxyz"),
        Poll::Ready(Ok(1))
    ));
    let (_, last) = read_all(&mut ws);
    assert!(last.is_pending());
    assert_eq!(ws.inner.written, b"\x82\x04w");
    write_all(&mut ws, b"xyz");
    ws.inner.write_max = None;
    let _ = read_all(&mut ws);
    assert_eq!(ws.inner.written, b"\x82\x04wxyz\x8A\x01p");
}

#[test]
fn the_framing_state_moves_with_the_connection() {
    // Half a frame is read on one "shard", the rest on another: the moved
    // state carries the header and mask position.
    let frame = client_frame(OP_BINARY, true, b"\x30\x03\x00\x01t", MASK);
    let (a, b) = frame.split_at(8);
    let mut first = ws(vec![a.to_vec()]);
    let (payload_a, _) = read_all(&mut first);
    let (_, framing) = first.into_parts();
    let moved: Box<Framing> = Box::new(framing);
    let mem = Mem {
        incoming: vec![b.to_vec()].into(),
        ..Mem::default()
    };
    let mut second = Ws::from_parts(mem, *moved);
    let (payload_b, _) = read_all(&mut second);
    assert_eq!([payload_a, payload_b].concat(), b"\x30\x03\x00\x01t");
}

#[test]
fn a_tcp_stream_does_not_carry_the_websocket_state() {
    use crate::transport::{tcp::Tcp, Stream};
    // The layered variants are boxed: Stream is the size of its TCP
    // variant plus at most the enum's tag, whatever the framing state or a
    // TLS session weighs.
    assert!(std::mem::size_of::<Stream>() <= std::mem::size_of::<Tcp>() + 8);
}
