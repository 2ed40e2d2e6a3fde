//! One simulated device, as firmware behaves (protocol reference §4–§6):
//! at its turn it publishes the hello on `device-server`, reads the UDP
//! offer from the reply, opens a connected UDP socket to the advertised
//! address and streams (the thread's sender sends its frames). Its task
//! then reads the echoes and keeps the MQTT connection alive until the run
//! stops, when it closes UDP, says goodbye and disconnects.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use glommio::net::UdpSocket;
use socket2::{Domain, Socket, Type};

use super::frame::{self, Template};
use super::hello::{self, Offer, Reply};
use super::tally::DeviceTally;
use super::thread::Local;
use crate::client::{within, Conn};
use crate::clock;
use crate::control::{bump, drop_one};
use crate::stats::{Problem, SeqTracker};
use shardmq::mqtt::codec::{self, Packet};
use shardmq::mqtt::QoS;
use shardmq::voice::audio::AudioChannel;
use shardmq::voice::control;
use shardmq::voice::packet::{AudioKey, DropReason, HEADER_LEN, MAX_DATAGRAM};

/// A device's audio: its socket and channel, shared by its task (which
/// reads) and the thread's sender (which sends).
pub struct Stream {
    device: u32,
    frame_ms: u32,
    socket: UdpSocket,
    channel: RefCell<AudioChannel>,
    /// The channel's key, to read late datagrams the channel refuses.
    key: AudioKey,
    template: RefCell<Template>,
    /// Frames sent so far, hence the next sequence number.
    sent: Cell<u32>,
    /// Sequence numbers sent in the measured window.
    window: Cell<(u32, u32)>,
    tracker: RefCell<SeqTracker>,
}

impl Stream {
    /// Seals and sends the next frame, stamped `now`, through `out`;
    /// `in_window` when `now` is in the measured window.
    pub async fn send(&self, now: u64, in_window: bool, out: &mut Vec<u8>) -> Result<(), Problem> {
        let seq = self.sent.get();
        if in_window {
            let (first, end) = self.window.get();
            self.window.set(if first == end {
                (seq, seq + 1)
            } else {
                (first, seq + 1)
            });
        }
        {
            let mut template = self.template.borrow_mut();
            let frame = template.stamp(seq, now / 1000);
            // The frame's place in the stream in ms, non-zero as from a
            // device with server-side AEC; the gateway passes it through.
            let ms = seq.wrapping_mul(self.frame_ms);
            let sealed = self.channel.borrow_mut().seal(ms, frame, out);
            sealed.map_err(|_| Problem::UdpError)?;
        }
        self.sent.set(seq.wrapping_add(1));
        match self.socket.send(out).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Problem::UdpError),
        }
    }

    /// Takes one datagram from the gateway, received at `now`.
    fn receive(&self, local: &Local, now: u64, from: SocketAddr, datagram: &mut [u8]) {
        let accepted = self.channel.borrow_mut().receive(from, datagram);
        let payload = match accepted {
            Ok(received) => datagram.get(received.payload),
            // Not above the last sequence: firmware would drop it. Read it
            // anyway, to tell a duplicate from a late frame.
            Err(DropReason::Replayed) => match datagram.split_first_chunk_mut::<HEADER_LEN>() {
                Some((iv, payload)) => {
                    self.key.apply(iv, payload);
                    Some(&*payload)
                }
                None => None,
            },
            Err(_) => {
                local.problem(Problem::BadDatagram, false);
                return;
            }
        };
        let header = payload
            .and_then(frame::read)
            .filter(|h| h.device == self.device);
        let Some(header) = header else {
            local.problem(Problem::ForeignPayload, false);
            return;
        };
        self.tracker.borrow_mut().record(u64::from(header.seq));
        local.count_down();
        let timeline = local.timeline.get();
        let sent_ns = header.sent_us.saturating_mul(1000);
        let mut stats = local.stats.borrow_mut();
        if timeline.in_window(now) {
            stats.down_received_window += 1;
        }
        if timeline.in_window(sent_ns) {
            stats
                .rtt
                .saturating_record(now.saturating_sub(sent_ns).max(1));
        }
    }

    fn tally(&self) -> DeviceTally {
        let (first, end) = self.window.get();
        DeviceTally {
            device: self.device,
            sent: u64::from(self.sent.get()),
            window: u64::from(first)..u64::from(end),
            down: self.tracker.take(),
        }
    }
}

/// Runs device `device` (in `slot` of its thread) from the go at `start`
/// until the run stops.
pub async fn run(local: Rc<Local>, slot: usize, device: u32, start: u64, mut conn: Conn) {
    let hello_at = local.settings.hello_at(start, device);
    let turn = async {
        glommio::timer::sleep(clock::until(hello_at)).await;
        true
    };
    let stopped = async {
        local.stopped(slot).await;
        false
    };
    if !or(turn, stopped).await {
        conn.close().await;
        return;
    }
    let offer = match or(open(&local, &mut conn), async {
        local.stopped(slot).await;
        Err(Problem::HelloTimeout)
    })
    .await
    {
        Ok(offer) => offer,
        Err(problem) => {
            local.problem(problem, true);
            conn.close().await;
            return;
        }
    };
    let stream = match stream(&offer, device, &local) {
        Ok(stream) => Rc::new(stream),
        Err(problem) => {
            local.problem(problem, true);
            conn.close().await;
            return;
        }
    };
    local.stats.borrow_mut().conversations += 1;
    let progress = local.control.progress(local.index);
    bump(&progress.conversations, 1);
    // Firmware sends first: the gateway learns the device's address from
    // its first datagram.
    local.sender.start(slot, stream.clone(), clock::now_ns());
    let outcome = or(
        or(receive(&local, &stream), keep_alive(&local, &mut conn)),
        async {
            local.stopped(slot).await;
            Ok(())
        },
    )
    .await;
    local.sender.stop(slot);
    drop_one(&progress.conversations);
    local.stats.borrow_mut().devices.push(stream.tally());
    // Firmware closes its UDP socket before the goodbye.
    drop(stream);
    match outcome {
        Ok(()) => {
            let bye = control::goodbye(offer.session_id.as_deref());
            publish(&mut conn, bye.as_bytes());
            conn.close().await;
        }
        Err(problem) => {
            local.problem(problem, true);
            conn.close().await;
        }
    }
}

/// Publishes the hello and waits for the reply, within the hello timeout.
async fn open(local: &Local, conn: &mut Conn) -> Result<Offer, Problem> {
    let settings = &local.settings;
    let began = clock::now_ns();
    publish(conn, hello::hello(settings.frame_ms).as_bytes());
    conn.flush().await?;
    let deadline = glommio::timer::sleep(settings.hello_timeout);
    let offer = within(deadline, Problem::HelloTimeout, async {
        loop {
            match conn.read_packet().await? {
                Packet::Publish(publish) => match hello::parse_reply(&publish.payload) {
                    Reply::Hello(offer) => return Ok(offer),
                    Reply::BadHello(_) | Reply::Error(_) | Reply::Goodbye => {
                        return Err(Problem::HelloRefused)
                    }
                    Reply::Other => {}
                },
                Packet::PingResp => {}
                _ => local.problem(Problem::UnexpectedPacket, false),
            }
        }
    })
    .await?;
    local
        .stats
        .borrow_mut()
        .hello
        .saturating_record((clock::now_ns() - began).max(1));
    Ok(offer)
}

/// A connected UDP socket to the offered address and the channel of the
/// offered key.
fn stream(offer: &Offer, device: u32, local: &Local) -> Result<Stream, Problem> {
    let server = server_addr(&offer.server, offer.port).ok_or(Problem::HelloRefused)?;
    let mut socket = connected_udp(server).map_err(|_| Problem::UdpError)?;
    // The default staging buffer is 8 KiB per pending receive; a datagram
    // is at most 1500 bytes (one more shows a truncation).
    socket.set_buffer_size(MAX_DATAGRAM + 1);
    Ok(Stream {
        device,
        frame_ms: local.settings.frame_ms,
        socket,
        channel: RefCell::new(AudioChannel::new(offer.key, offer.conn_id)),
        key: AudioKey::new(offer.key),
        template: RefCell::new(Template::new(device, local.settings.frame_bytes)),
        sent: Cell::new(0),
        window: Cell::new((0, 0)),
        tracker: RefCell::new(SeqTracker::default()),
    })
}

/// A UDP socket on a port of its own, connected to `server`, as firmware
/// opens one per conversation.
///
/// Not `glommio::net::UdpSocket::bind`: it sets `SO_REUSEPORT`, and Linux
/// may then give two sockets binding port 0 the same port. Two devices on
/// one port connected to the one gateway address share a 4-tuple, and the
/// kernel hands one device's audio to the other.
pub fn connected_udp(server: SocketAddr) -> std::io::Result<UdpSocket> {
    // Left in blocking mode, as glommio leaves its own sockets: its direct
    // attempts pass MSG_DONTWAIT, and an io_uring receive on a descriptor
    // marked non-blocking may fail with EAGAIN instead of waiting.
    let socket = Socket::new(Domain::for_address(server), Type::DGRAM, None)?;
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&any.into())?;
    socket.connect(&server.into())?;
    // SAFETY: `socket` is an open, bound and connected UDP socket whose
    // ownership `into_raw_fd` passes to the glommio socket, which closes it.
    Ok(unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) })
}

/// `udp.server` is an address or, as firmware allows, an IPv4 host name.
fn server_addr(server: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (server, port)
        .to_socket_addrs()
        .ok()?
        .find(SocketAddr::is_ipv4)
}

/// Reads the echoes until the socket fails.
async fn receive(local: &Local, stream: &Stream) -> Result<(), Problem> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = stream
            .socket
            .recv_from(&mut buf)
            .await
            .map_err(|_| Problem::UdpError)?;
        let now = clock::now_ns();
        // One byte more than any valid datagram: a longer one was cut.
        match buf.get_mut(..n).filter(|_| n <= MAX_DATAGRAM) {
            Some(datagram) => stream.receive(local, now, from, datagram),
            None => local.problem(Problem::BadDatagram, false),
        }
    }
}

/// Answers the keepalive with PINGREQ and reads what the gateway sends
/// during the conversation; a goodbye or error from it ends the device.
async fn keep_alive(local: &Local, conn: &mut Conn) -> Result<(), Problem> {
    let half = Duration::from_secs(u64::from(local.settings.keepalive_s).div_ceil(2));
    let mut next_ping = clock::now_ns() + clock::ns(half);
    loop {
        let read = async { Some(conn.read_packet().await) };
        let due = async {
            glommio::timer::sleep(clock::until(next_ping)).await;
            None
        };
        match or(read, due).await {
            Some(packet) => match packet? {
                Packet::Publish(publish) => match hello::parse_reply(&publish.payload) {
                    Reply::Goodbye | Reply::Error(_) => return Err(Problem::ConversationEnded),
                    _ => {}
                },
                Packet::PingResp => {}
                _ => local.problem(Problem::UnexpectedPacket, false),
            },
            None => {
                Packet::PingReq.encode(&mut conn.wbuf);
                conn.flush().await?;
                next_ping = clock::now_ns() + clock::ns(half);
            }
        }
    }
}

/// Queues a QoS 0 PUBLISH on the firmware's topic; the caller flushes (or
/// `close` does).
fn publish(conn: &mut Conn, payload: &[u8]) {
    codec::encode_publish(
        &mut conn.wbuf,
        hello::PUBLISH_TOPIC,
        payload,
        QoS::AtMostOnce,
        false,
        false,
        0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_resolve() {
        assert_eq!(
            server_addr("127.0.0.1", 8884),
            Some(SocketAddr::from(([127, 0, 0, 1], 8884)))
        );
        assert_eq!(server_addr("::1", 8884).map(|a| a.is_ipv6()), Some(true));
        assert!(server_addr("localhost", 8884).is_some_and(|a| a.is_ipv4()));
    }
}
