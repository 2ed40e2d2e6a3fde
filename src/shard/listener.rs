//! Accepting sockets: the PROXY header, the TLS handshake and the WebSocket
//! upgrade where the listener asks for them, then the CONNECT under a
//! deadline, then the connection runs here or is handed to the shard that
//! owns its client id. Every listener's connections go through the same
//! CONNECT phase.
//!
//! # Deadlines
//! On the MQTT listener one deadline (`connect_timeout`) covers the PROXY
//! header and the CONNECT. On the TLS listener `handshake_timeout` covers
//! the PROXY header and the handshake, on the WebSocket listener
//! `websocket.handshake_timeout_s` covers the PROXY header, then again the
//! upgrade; on the `wss` listener the TLS deadline covers the PROXY header
//! and the handshake, then the upgrade has its own. The
//! `connect_timeout` starts after them.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::limits::Slot;
use super::mesh::{Handoff, ShardMsg};
use super::{conn, Shard};
use crate::mqtt::broker::owner_shard;
use crate::mqtt::codec::{self, Connect, ConnectReturnCode, DecodeError, Packet};
use crate::transport::{proxy, HandshakeFailure, Stream};

/// Bytes asked of the socket per read while waiting for CONNECT.
const CONNECT_READ_CHUNK: usize = 1024;
/// Bytes asked of the socket per read while waiting for a PROXY header:
/// a v1 line, or a v2 header with a few TLVs, in one read.
const PROXY_READ_CHUNK: usize = 512;

/// Which listener a socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Mqtt,
    Tls,
    /// MQTT over WebSocket over TCP.
    Ws,
    /// MQTT over WebSocket over TLS: the TLS listener's certificate and
    /// handshake, then the WebSocket upgrade.
    Wss,
}

impl Kind {
    /// The largest packet a client of this listener may send.
    fn max_packet_size(self, shard: &Shard) -> usize {
        let settings = &shard.settings;
        match self {
            Kind::Mqtt => settings.max_packet_size,
            Kind::Tls => settings.tls_max_packet_size,
            Kind::Ws | Kind::Wss => settings.websocket_max_packet_size,
        }
    }
}

pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: Kind) {
    loop {
        match listener.accept().await {
            Ok(tcp) => {
                glommio::spawn_local(admit(shard.clone(), tcp, kind)).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(shard = shard.id.0, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Everything before the CONNECT, then the CONNECT phase. The limits on
/// sockets and on the CONNECT rate come first (`limits`): a refused socket
/// is closed before any handshake.
async fn admit(shard: Rc<Shard>, tcp: TcpStream, kind: Kind) {
    let accepted = Instant::now();
    let Some(slot) = shard.admission.open() else {
        tracing::debug!(peer = ?tcp.peer_addr().ok(), "connection limit reached");
        return;
    };
    // Behind a PROXY header the rate is the real client's, checked there.
    if !expects_proxy(&shard, kind) && !connect_allowed(&shard, tcp.peer_addr().ok()) {
        return;
    }
    let connect_timeout = shard.settings.connect_timeout;
    let opened = match kind {
        Kind::Mqtt => open_tcp(&shard, tcp).await.map(|(stream, early)| {
            (
                stream,
                early,
                connect_timeout.saturating_sub(accepted.elapsed()),
            )
        }),
        Kind::Tls => {
            let proxy = shard
                .settings
                .tls
                .as_ref()
                .is_some_and(|t| t.proxy_protocol);
            open_tls(&shard, tcp, proxy)
                .await
                .map(|stream| (stream, BytesMut::new(), connect_timeout))
        }
        Kind::Ws => open_ws(&shard, tcp)
            .await
            .map(|stream| (stream, BytesMut::new(), connect_timeout)),
        Kind::Wss => open_wss(&shard, tcp)
            .await
            .map(|stream| (stream, BytesMut::new(), connect_timeout)),
    };
    if let Some((stream, early, deadline)) = opened {
        connect_phase(shard, stream, early, deadline, kind, slot).await;
    }
}

fn expects_proxy(shard: &Shard, kind: Kind) -> bool {
    let settings = &shard.settings;
    match kind {
        Kind::Mqtt => settings.mqtt_proxy_protocol,
        Kind::Tls => settings.tls.as_ref().is_some_and(|t| t.proxy_protocol),
        Kind::Ws | Kind::Wss => settings
            .websocket
            .as_ref()
            .is_some_and(|w| w.proxy_protocol),
    }
}

/// Whether `peer` is within its CONNECT rate; a refusal is counted.
fn connect_allowed(shard: &Shard, peer: Option<SocketAddr>) -> bool {
    let Some(peer) = peer else { return true };
    if shard
        .connect_rate
        .borrow_mut()
        .allow(peer.ip(), Instant::now())
    {
        return true;
    }
    shard.admission.note_refused_rate();
    tracing::debug!(%peer, "CONNECT rate exceeded");
    false
}

/// A plain TCP stream, after its PROXY header if the listener wants one;
/// with the bytes read past the header.
async fn open_tcp(shard: &Shard, mut tcp: TcpStream) -> Option<(Stream, BytesMut)> {
    if !shard.settings.mqtt_proxy_protocol {
        return Some((Stream::tcp(tcp), BytesMut::new()));
    }
    let (peer, early) = proxy_header(shard, &mut tcp, shard.settings.connect_timeout).await?;
    let mut stream = Stream::tcp(tcp);
    if let Some(peer) = peer {
        stream.set_proxied_peer(peer);
    }
    Some((stream, early))
}

/// Reads a PROXY header within `deadline`, counted; `None` closes the
/// connection.
async fn proxy_header(
    shard: &Shard,
    tcp: &mut TcpStream,
    deadline: Duration,
) -> Option<(Option<SocketAddr>, BytesMut)> {
    let header = glommio::timer::timeout(deadline, async { Ok(read_proxy_header(tcp).await) })
        .await
        .unwrap_or(Err(None));
    proxy_outcome(shard, tcp, header)
}

/// A TLS stream with its handshake done, after a PROXY header when `proxy`
/// says the listener expects one, both under the handshake deadline.
async fn open_tls(shard: &Shard, mut tcp: TcpStream, proxy: bool) -> Option<Stream> {
    let tls = shard.settings.tls.as_ref()?;
    let socket_peer = tcp.peer_addr().ok();
    let opened = glommio::timer::timeout(tls.handshake_timeout, async {
        let (peer, early) = if proxy {
            let header = read_proxy_header(&mut tcp).await;
            match proxy_outcome(shard, &tcp, header) {
                Some(read) => read,
                None => return Ok(Err(None)),
            }
        } else {
            (None, BytesMut::new())
        };
        let mut stream = match Stream::tls(tcp, tls.config.current(), &early) {
            Ok(stream) => stream,
            Err(why) => return Ok(Err(Some(why))),
        };
        if let Some(peer) = peer {
            stream.set_proxied_peer(peer);
        }
        Ok(match stream.handshake().await {
            Ok(()) => Ok(stream),
            Err(why) => Err(Some(why)),
        })
    })
    .await
    .unwrap_or(Err(Some(HandshakeFailure::Timeout)));
    match opened {
        Ok(stream) => {
            shard.transport.tls_handshake_done();
            Some(stream)
        }
        // Refused for its PROXY header: counted there.
        Err(None) => None,
        Err(Some(why)) => {
            shard.transport.tls_handshake_failed(why);
            tracing::debug!(peer = ?socket_peer, reason = why.label(), "TLS handshake failed");
            None
        }
    }
}

/// A WebSocket stream with its upgrade answered, under the upgrade
/// deadline; a PROXY header first when the listener expects one, under a
/// deadline of the same length.
async fn open_ws(shard: &Shard, mut tcp: TcpStream) -> Option<Stream> {
    let ws = shard.settings.websocket.as_ref()?;
    let max_frame = Kind::Ws.max_packet_size(shard);
    let (peer, early) = match ws.proxy_protocol {
        true => proxy_header(shard, &mut tcp, ws.handshake_timeout).await?,
        false => (None, BytesMut::new()),
    };
    let upgrade = Stream::websocket(tcp, peer, &early, &ws.policy, max_frame);
    upgraded(shard, ws, upgrade).await
}

/// A `wss` stream: the PROXY header (if expected) and the TLS handshake
/// under the TLS deadline, then the upgrade under the upgrade deadline.
async fn open_wss(shard: &Shard, tcp: TcpStream) -> Option<Stream> {
    let ws = shard.settings.websocket.as_ref()?;
    let max_frame = Kind::Wss.max_packet_size(shard);
    let tls = open_tls(shard, tcp, ws.proxy_protocol).await?;
    upgraded(shard, ws, tls.websocket_over_tls(&ws.policy, max_frame)).await
}

/// Runs an upgrade under its deadline, counting the outcome.
async fn upgraded(
    shard: &Shard,
    ws: &crate::transport::ws::config::WsSettings,
    upgrade: impl std::future::Future<Output = Result<Stream, crate::transport::ws::UpgradeError>>,
) -> Option<Stream> {
    let upgraded = glommio::timer::timeout(ws.handshake_timeout, async { Ok(upgrade.await) }).await;
    match upgraded {
        Ok(Ok(stream)) => {
            shard.transport.ws_upgraded();
            Some(stream)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            shard.transport.ws_upgrade_failed(&e);
            None
        }
        Err(_) => {
            shard.transport.ws_upgrade_timed_out();
            None
        }
    }
}

/// Counts and logs the outcome of reading a PROXY header; `None` closes the
/// connection.
fn proxy_outcome(
    shard: &Shard,
    tcp: &TcpStream,
    header: Result<(Option<SocketAddr>, BytesMut), Option<proxy::ProxyError>>,
) -> Option<(Option<SocketAddr>, BytesMut)> {
    match header {
        Ok(read) => {
            shard.transport.proxy_header_accepted();
            connect_allowed(shard, read.0.or(tcp.peer_addr().ok())).then_some(read)
        }
        Err(error) => {
            shard.transport.proxy_header_rejected();
            let reason = match error {
                Some(e) => e.to_string(),
                None => "closed or timed out before a whole header".to_string(),
            };
            tracing::debug!(peer = ?tcp.peer_addr().ok(), %reason, "PROXY header refused");
            None
        }
    }
}

/// Reads a PROXY protocol header: the client's address when it gives one,
/// and the bytes read past it. `Err(None)`: the socket ended first.
async fn read_proxy_header(
    tcp: &mut TcpStream,
) -> Result<(Option<SocketAddr>, BytesMut), Option<proxy::ProxyError>> {
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; PROXY_READ_CHUNK];
    loop {
        if let Some(parsed) = proxy::parse(&buf).map_err(Some)? {
            let _ = buf.split_to(parsed.consumed);
            return Ok((parsed.header.source(), buf));
        }
        // `parse` decides within HEADER_MAX bytes; never read past it.
        let room = proxy::HEADER_MAX.saturating_sub(buf.len()).min(chunk.len());
        let Some(space) = chunk.get_mut(..room).filter(|s| !s.is_empty()) else {
            return Err(None);
        };
        match tcp.read(space).await {
            Ok(n) if n > 0 => buf.extend_from_slice(space.get(..n).ok_or(None)?),
            _ => return Err(None),
        }
    }
}

enum FirstPacket {
    Connect(Box<Connect>),
    Refuse(ConnectReturnCode),
    /// Not a CONNECT, or malformed: a protocol error.
    Drop,
    /// Closed or timed out before a whole packet arrived.
    Gone,
}

async fn connect_phase(
    shard: Rc<Shard>,
    mut stream: Stream,
    mut rbuf: BytesMut,
    deadline: Duration,
    kind: Kind,
    slot: Slot,
) {
    let max = kind.max_packet_size(&shard);
    let first = glommio::timer::timeout(deadline, async {
        Ok(read_first_packet(&mut stream, &mut rbuf, max).await)
    })
    .await
    .unwrap_or(FirstPacket::Gone);
    let mut connect = match first {
        FirstPacket::Connect(c) => c,
        FirstPacket::Refuse(code) => {
            refuse(&mut stream, code).await;
            shard.broker.borrow_mut().note_protocol_error();
            return;
        }
        FirstPacket::Drop => {
            shard.broker.borrow_mut().note_protocol_error();
            return;
        }
        FirstPacket::Gone => return,
    };
    let identity_as_username = matches!(kind, Kind::Tls | Kind::Wss)
        && shard
            .settings
            .tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username);
    // With the identity as user name, the certificate is the credential.
    let certified = identity_as_username;
    if identity_as_username {
        match stream.identity() {
            Some(identity) => connect.username = Some(identity),
            None => {
                // A verified certificate without a name to go by.
                refuse(&mut stream, ConnectReturnCode::NotAuthorized).await;
                return;
            }
        }
    }
    tracing::debug!(
        shard = shard.id.0,
        client_id = %connect.client_id,
        peer = ?stream.peer_addr(),
        username = ?connect.username,
        "CONNECT received"
    );
    if connect.client_id.is_empty() && connect.clean_session {
        connect.client_id = local_client_id(&shard);
    }
    let acl = match super::auth::authenticate(&shard, stream.peer_addr(), &connect, certified) {
        Ok(acl) => acl,
        Err(code) => {
            // A refusing CONNACK, then the connection closes [MQTT-3.2.2-5].
            refuse(&mut stream, code).await;
            return;
        }
    };
    let owner = owner_shard(&connect.client_id, shard.shards);
    if owner == shard.id || connect.client_id.is_empty() {
        // A task of its own rather than awaited here: this task's future
        // is sized for the CONNECT phase too (about 1 KiB against the
        // driver's 560 B), and an idle connection would carry it for life.
        glommio::spawn_local(conn::run(shard, stream, connect, rbuf, acl, slot, max)).detach();
        return;
    }
    match stream.into_moving() {
        Ok(stream) => {
            let handoff = Handoff {
                stream,
                connect: *connect,
                unread: rbuf,
                acl,
                slot,
                max_packet_size: max,
            };
            shard.stage(owner, ShardMsg::Handoff(Box::new(handoff)));
        }
        Err(e) => tracing::warn!(error = %e, "cannot hand off a connection"),
    }
}

/// Answers a CONNECT with a refusing CONNACK, pushed out before the
/// connection closes.
pub(super) async fn refuse(stream: &mut Stream, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    codec::encode_connack(&mut out, false, code);
    if stream.write_all(&out).await.is_ok() {
        let _ = stream.flush().await;
    }
}

/// The first byte of a CONNECT's fixed header: type 1, flags 0 [MQTT-2.2.2-2].
const CONNECT_HEADER: u8 = 0x10;

/// Reads until one packet is decoded; only a CONNECT may come first
/// [MQTT-3.1.0-1], and anything else is refused as soon as its first byte
/// is seen, not when its body has arrived or the deadline passed.
async fn read_first_packet(stream: &mut Stream, rbuf: &mut BytesMut, max: usize) -> FirstPacket {
    // On the heap: this future lives as long as the connection's task, and
    // an array here would be part of its size.
    let mut chunk = vec![0u8; CONNECT_READ_CHUNK];
    loop {
        if rbuf.first().is_some_and(|&b| b != CONNECT_HEADER) {
            return FirstPacket::Drop;
        }
        match codec::decode(rbuf, max) {
            Ok(Some(Packet::Connect(c))) => return FirstPacket::Connect(c),
            Ok(Some(_)) => return FirstPacket::Drop,
            Ok(None) => {}
            Err(DecodeError::UnsupportedProtocolLevel(_)) => {
                return FirstPacket::Refuse(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            Err(_) => return FirstPacket::Drop,
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => rbuf.extend_from_slice(&chunk[..n]),
            _ => return FirstPacket::Gone,
        }
    }
}

/// An id for a client that sent none, chosen to hash to this shard so the
/// connection needs no hand-off.
fn local_client_id(shard: &Shard) -> String {
    let started = Instant::now();
    loop {
        let candidate = format!("shardmq-{:016x}", rand::random::<u64>());
        if owner_shard(&candidate, shard.shards) == shard.id {
            return candidate;
        }
        debug_assert!(
            started.elapsed().as_secs() < 1,
            "id search must end quickly"
        );
    }
}
