//! A floor to measure shardmq against: the least an MQTT router on one core
//! has to do for `shardmq-bench`'s QoS 0 scenarios (`p2p` and `fanout`),
//! and for the QoS 0 fleet (`latency --rate 20000 --pairs 4000`: 8,000
//! connections, each message its own wake-up). Connections live in a slab
//! and topics in a hash map, so neither costs more per message with
//! thousands of them.
//!
//! ```sh
//! cargo bench --no-run --bench router_baseline
//! taskset -c 0 target/release/deps/router_baseline-<hash> --listen 127.0.0.1:1885
//! taskset -c 1 target/release/shardmq-bench --port 1885 p2p --pairs 50
//! ```
//!
//! One thread, one level-triggered epoll set, non-blocking sockets with
//! TCP_NODELAY. Each readable connection gets one read of up to 64 KiB per
//! `epoll_wait` round; a QoS 0 PUBLISH is appended, as the bytes that came
//! in, to the write buffer of every subscriber of exactly its topic; after
//! the round every buffer with something in it gets one `write`, and EPOLLOUT
//! is asked for only while a buffer stays non-empty. Like shardmq's
//! `max_outbox_bytes`, a subscriber with 1 MiB waiting loses further
//! messages. Nothing is allocated per message once buffers have grown.
//!
//! What it leaves out, on purpose: QoS 1 and 2, wildcards (refused in the
//! SUBACK), UNSUBSCRIBE, retained messages (the RETAIN flag is forwarded as
//! it came), sessions, wills, keepalive timeouts, authentication, client id
//! take-over, `$SYS`, configuration and logging. Any other packet, or a
//! malformed one, closes the connection. It is a yardstick, not a broker.
//!
//! Run without `--listen` (as `cargo bench` does) it prints how to use it and
//! exits.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::mem;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes read from one connection per readiness.
const READ_CHUNK: usize = 64 * 1024;
/// Largest packet accepted (shardmq's default `max_packet_size`).
const MAX_PACKET: usize = 1 << 20;
/// Output a subscriber may have waiting before QoS 0 messages to it are
/// dropped (shardmq's default `max_outbox_bytes`).
const MAX_OUTBOX: usize = 1 << 20;
/// The listener's epoll token; connections use their slot number.
const LISTENER: u64 = u64::MAX;

const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const PINGRESP: [u8; 2] = [0xd0, 0x00];
/// Protocol name "MQTT" and level 4 (3.1.1): how a CONNECT body starts.
const MQTT_311: [u8; 7] = [0, 4, b'M', b'Q', b'T', b'T', 4];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, addr] if flag == "--listen" => {
            if let Err(e) = Router::new(addr).and_then(|mut router| router.run()) {
                eprintln!("router_baseline: {addr}: {e}");
                std::process::exit(1);
            }
        }
        _ => println!(
            "router_baseline: a minimal QoS 0 MQTT router to compare shardmq with; \
             run it with --listen ADDR (e.g. `taskset -c 0 <this binary> --listen 127.0.0.1:1885`)"
        ),
    }
}

/// Why a connection is closed: bad or unsupported input, or its socket failed.
struct Close;

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet a whole packet.
    rbuf: Vec<u8>,
    /// Bytes waiting for the socket.
    wbuf: Vec<u8>,
    connected: bool,
    /// In `Router::dirty`, to be written at the end of this round.
    queued: bool,
    /// The socket was full: EPOLLOUT is registered and says when to write.
    blocked: bool,
    /// Topics this connection subscribed to, to forget it when it closes.
    topics: Vec<Box<[u8]>>,
}

struct Router {
    epoll: Epoll,
    listener: TcpListener,
    /// Connections by slot; a slot is the connection's epoll token.
    conns: Vec<Option<Conn>>,
    /// Slots free for new connections.
    free: Vec<usize>,
    /// Slots closed this round, reused only from the next one so that an
    /// event still pending for a closed connection cannot reach a new one.
    closed: Vec<usize>,
    /// Exact topic -> subscribed slots.
    topics: HashMap<Box<[u8]>, Vec<usize>>,
    /// Slots with output to write at the end of the round.
    dirty: Vec<usize>,
}

impl Router {
    fn new(addr: &str) -> io::Result<Router> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(libc::EPOLL_CTL_ADD, listener.as_raw_fd(), false, LISTENER)?;
        Ok(Router {
            epoll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            closed: Vec::new(),
            topics: HashMap::new(),
            dirty: Vec::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n = self.epoll.wait(&mut events)?;
            for ev in events.iter().take(n) {
                // Copies: the fields of the packed struct cannot be borrowed.
                let (bits, token) = (ev.events, ev.u64);
                if token == LISTENER {
                    self.accept();
                    continue;
                }
                let id = token as usize;
                if bits & (libc::EPOLLOUT as u32) != 0 {
                    if let Some(c) = slot(&mut self.conns, id) {
                        c.blocked = false;
                        queue(&mut self.dirty, c, id);
                    }
                }
                if bits & !(libc::EPOLLOUT as u32) != 0 {
                    // EPOLLIN, or EPOLLHUP/EPOLLERR, which the read reports.
                    self.readable(id);
                }
            }
            self.flush();
            self.free.append(&mut self.closed);
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                // WouldBlock, or out of descriptors: try again next round.
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
                continue;
            }
            let id = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let fd = stream.as_raw_fd();
            if self
                .epoll
                .ctl(libc::EPOLL_CTL_ADD, fd, false, id as u64)
                .is_err()
            {
                self.free.push(id);
                continue;
            }
            let conn = Conn {
                stream,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                connected: false,
                queued: false,
                blocked: false,
                topics: Vec::new(),
            };
            if let Some(slot) = self.conns.get_mut(id) {
                *slot = Some(conn);
            }
        }
    }

    /// One read of up to READ_CHUNK bytes, then every whole packet in the
    /// buffer is handled.
    fn readable(&mut self, id: usize) {
        let Some(c) = slot(&mut self.conns, id) else {
            return;
        };
        let mut rbuf = mem::take(&mut c.rbuf);
        let outcome = match read_some(c.stream.as_raw_fd(), &mut rbuf) {
            Ok(0) => Err(Close),
            Ok(_) => self.packets(id, &rbuf),
            Err(e) if retry(&e) => Ok(0),
            Err(_) => Err(Close),
        };
        match outcome {
            Ok(used) => {
                rbuf.drain(..used.min(rbuf.len()));
                if let Some(c) = slot(&mut self.conns, id) {
                    c.rbuf = rbuf;
                }
            }
            Err(Close) => self.close(id),
        }
    }

    /// Handles the whole packets at the start of `buf`; returns the bytes
    /// they took.
    fn packets(&mut self, id: usize, buf: &[u8]) -> Result<usize, Close> {
        let mut used = 0;
        while let Some(rest) = buf.get(used..) {
            let Some((header, body_len)) = fixed_header(rest)? else {
                break;
            };
            let Some(packet) = rest.get(..header + body_len) else {
                break;
            };
            self.packet(id, packet, header)?;
            used += packet.len();
        }
        Ok(used)
    }

    fn packet(&mut self, id: usize, packet: &[u8], header: usize) -> Result<(), Close> {
        let first = packet.first().copied().ok_or(Close)?;
        let body = packet.get(header..).ok_or(Close)?;
        let c = slot(&mut self.conns, id).ok_or(Close)?;
        if first >> 4 == 1 {
            // CONNECT, once and first.
            if c.connected || !body.starts_with(&MQTT_311) {
                return Err(Close);
            }
            c.connected = true;
            c.wbuf.extend_from_slice(&CONNACK_ACCEPTED);
            queue(&mut self.dirty, c, id);
            return Ok(());
        }
        if !c.connected {
            return Err(Close);
        }
        match first {
            // PUBLISH, QoS 0 (flags DUP and QoS bits clear; RETAIN allowed).
            0x30 | 0x31 => {
                let topic = string(body, 0).ok_or(Close)?;
                let Some(subscribers) = self.topics.get(topic) else {
                    return Ok(());
                };
                for &s in subscribers {
                    if let Some(sub) = slot(&mut self.conns, s) {
                        if sub.wbuf.len() < MAX_OUTBOX {
                            sub.wbuf.extend_from_slice(packet);
                            queue(&mut self.dirty, sub, s);
                        }
                    }
                }
            }
            // SUBSCRIBE: packet id, then (topic filter, QoS) pairs.
            0x82 => {
                let pkid = body.get(..2).ok_or(Close)?;
                let mut codes = Vec::new();
                let mut at = 2;
                while at < body.len() {
                    let topic = string(body, at).ok_or(Close)?;
                    body.get(at + 2 + topic.len()).ok_or(Close)?;
                    at += 2 + topic.len() + 1;
                    if topic.is_empty() || topic.iter().any(|&b| b == b'+' || b == b'#') {
                        codes.push(0x80);
                        continue;
                    }
                    codes.push(0);
                    let subscribers = self.topics.entry(topic.into()).or_default();
                    if !subscribers.contains(&id) {
                        subscribers.push(id);
                        c.topics.push(topic.into());
                    }
                }
                if codes.is_empty() {
                    return Err(Close);
                }
                c.wbuf.push(0x90);
                put_remaining_length(&mut c.wbuf, 2 + codes.len());
                c.wbuf.extend_from_slice(pkid);
                c.wbuf.extend_from_slice(&codes);
                queue(&mut self.dirty, c, id);
            }
            // PINGREQ
            0xc0 => {
                c.wbuf.extend_from_slice(&PINGRESP);
                queue(&mut self.dirty, c, id);
            }
            // DISCONNECT, and everything this router does not do.
            _ => return Err(Close),
        }
        Ok(())
    }

    /// One write for every connection with output, then EPOLLOUT for those
    /// whose socket did not take it all (and no longer for those that did).
    fn flush(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(c) = slot(&mut self.conns, id) else {
                continue;
            };
            c.queued = false;
            match c.stream.write(&c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n.min(c.wbuf.len()));
                }
                Err(e) if retry(&e) => {}
                Err(_) => {
                    self.close(id);
                    continue;
                }
            }
            let blocked = !c.wbuf.is_empty();
            if blocked != c.blocked {
                let fd = c.stream.as_raw_fd();
                c.blocked = blocked;
                if self
                    .epoll
                    .ctl(libc::EPOLL_CTL_MOD, fd, blocked, id as u64)
                    .is_err()
                {
                    self.close(id);
                }
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Forgets a connection's subscriptions and closes its socket (which
    /// also takes it out of the epoll set).
    fn close(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::take) else {
            return;
        };
        for topic in &c.topics {
            if let Some(subscribers) = self.topics.get_mut(topic) {
                subscribers.retain(|&s| s != id);
                if subscribers.is_empty() {
                    self.topics.remove(topic);
                }
            }
        }
        self.closed.push(id);
    }
}

/// The connection in a slot, if it is open.
fn slot(conns: &mut [Option<Conn>], id: usize) -> Option<&mut Conn> {
    conns.get_mut(id).and_then(Option::as_mut)
}

/// Puts a connection on the list written at the end of the round, unless it
/// is there already or waits for EPOLLOUT.
fn queue(dirty: &mut Vec<usize>, c: &mut Conn, id: usize) {
    if !c.queued && !c.blocked {
        c.queued = true;
        dirty.push(id);
    }
}

/// Whether a socket call failed only for now.
fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// The fixed header at the start of `buf`: `Some((header bytes, remaining
/// length))`, `None` while incomplete, `Err` when malformed or too large.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Close> {
    let mut len = 0;
    for i in 1..5 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            let header = i + 1;
            if header + len > MAX_PACKET {
                return Err(Close);
            }
            return Ok(Some((header, len)));
        }
    }
    Err(Close)
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The length-prefixed string at `at` in `buf`.
fn string(buf: &[u8], at: usize) -> Option<&[u8]> {
    let len = buf.get(at..at + 2)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    buf.get(at + 2..at + 2 + len)
}

/// One `read` of up to READ_CHUNK bytes appended to `buf`.
fn read_some(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is the vector's unused capacity, at least READ_CHUNK
    // bytes after `reserve`; read(2) writes at most READ_CHUNK bytes there.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), READ_CHUNK) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: read(2) initialized the first `n` (<= READ_CHUNK) bytes of the
    // spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// An epoll instance.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds or modifies `fd`: readable always, writable too when `out`.
    fn ctl(&self, op: libc::c_int, fd: RawFd, out: bool, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN | if out { libc::EPOLLOUT } else { 0 };
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the
        // call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for events; returns how many were stored in `events` (0 when
    /// interrupted by a signal).
    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is writable for `max` (<= its length) entries.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, -1) };
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) if io::Error::last_os_error().kind() == ErrorKind::Interrupted => Ok(0),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }
}
