//! Accepting sockets: read the CONNECT under a deadline, then run the
//! connection here or hand it to the shard that owns its client id.

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::AsyncReadExt;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpListener;

use super::mesh::{Handoff, ShardMsg};
use super::{conn, Shard};
use crate::mqtt::broker::owner_shard;
use crate::mqtt::codec::{self, Connect, ConnectReturnCode, DecodeError, Packet};
use crate::transport::Stream;

/// Bytes asked of the socket per read while waiting for CONNECT.
const CONNECT_READ_CHUNK: usize = 1024;

pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(handshake(shard.clone(), Stream::tcp(stream))).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(shard = shard.id.0, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
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

async fn handshake(shard: Rc<Shard>, mut stream: Stream) {
    let mut rbuf = BytesMut::new();
    let max = shard.settings.max_packet_size;
    let deadline = shard.settings.connect_timeout;
    let first = glommio::timer::timeout(deadline, async {
        Ok(read_first_packet(&mut stream, &mut rbuf, max).await)
    })
    .await
    .unwrap_or(FirstPacket::Gone);
    let mut connect = match first {
        FirstPacket::Connect(c) => c,
        FirstPacket::Refuse(code) => {
            let mut out = BytesMut::new();
            codec::encode_connack(&mut out, false, code);
            let _ = stream.write_all(&out).await;
            shard.broker.borrow_mut().note_protocol_error();
            return;
        }
        FirstPacket::Drop => {
            shard.broker.borrow_mut().note_protocol_error();
            return;
        }
        FirstPacket::Gone => return,
    };
    if connect.client_id.is_empty() && connect.clean_session {
        connect.client_id = local_client_id(&shard);
    }
    let acl = match super::auth::authenticate(&shard, stream.peer_addr(), &connect) {
        Ok(acl) => acl,
        Err(code) => {
            // A refusing CONNACK, then the connection closes [MQTT-3.2.2-5].
            let mut out = BytesMut::new();
            codec::encode_connack(&mut out, false, code);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let owner = owner_shard(&connect.client_id, shard.shards);
    if owner == shard.id || connect.client_id.is_empty() {
        // A task of its own rather than awaited here: this task's future
        // is sized for the CONNECT phase too (about 1 KiB against the
        // driver's 560 B), and an idle connection would carry it for life.
        glommio::spawn_local(conn::run(shard, stream, connect, rbuf, acl)).detach();
        return;
    }
    match stream.into_moving() {
        Ok(stream) => {
            let handoff = Handoff {
                stream,
                connect: *connect,
                unread: rbuf,
                acl,
            };
            shard.stage(owner, ShardMsg::Handoff(Box::new(handoff)));
        }
        Err(e) => tracing::warn!(error = %e, "cannot hand off a connection"),
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
