//! Encoding: appends packets to caller-owned write buffers. The `encode_*`
//! functions are the broker's hot path and build no [`Packet`].

use bytes::{BufMut, BytesMut};

use super::packet_type::*;
use super::*;

impl Packet {
    /// Appends the packet to `out`. `decode` gives back an equal packet for
    /// every packet `decode` can produce.
    ///
    /// # Panics
    ///
    /// If a string or binary field exceeds 65,535 bytes, or the packet
    /// exceeds the 268,435,455-byte Remaining Length limit: such a packet
    /// cannot be put on the wire.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Packet::Connect(connect) => encode_connect(out, connect),
            Packet::Publish(p) => encode_publish(
                out,
                p.topic.as_str(),
                &p.payload,
                p.qos,
                p.retain,
                p.dup,
                p.pkid,
            ),
            Packet::PubAck(pkid) => encode_puback(out, *pkid),
            Packet::PubRec(pkid) => encode_pubrec(out, *pkid),
            Packet::PubRel(pkid) => encode_pubrel(out, *pkid),
            Packet::PubComp(pkid) => encode_pubcomp(out, *pkid),
            Packet::Subscribe(subscribe) => encode_subscribe(out, subscribe),
            Packet::Unsubscribe(unsubscribe) => encode_unsubscribe(out, unsubscribe),
            Packet::PingReq => encode_empty(out, PINGREQ),
            Packet::Disconnect => encode_empty(out, DISCONNECT),
            Packet::ConnAck {
                session_present,
                code,
            } => encode_connack(out, *session_present, *code),
            Packet::SubAck { pkid, codes } => encode_suback(out, *pkid, codes),
            Packet::UnsubAck(pkid) => encode_unsuback(out, *pkid),
            Packet::PingResp => encode_pingresp(out),
        }
    }
}

/// Appends a PUBLISH. `pkid` is written only for QoS 1 and 2, where it
/// must be non-zero; `dup` only for QoS 1 and 2 as well (§3.3.1-2).
///
/// # Panics
///
/// If `topic` exceeds 65,535 bytes or the packet the Remaining Length limit.
pub fn encode_publish(
    out: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    pkid: u16,
) {
    // A zero identifier is a broker bug that costs the client its
    // connection, not a memory-safety problem: checked in debug builds.
    debug_assert!(
        qos == QoS::AtMostOnce || pkid != 0,
        "PUBLISH QoS>0 needs a pkid"
    );
    let has_pkid = qos != QoS::AtMostOnce;
    let remaining_len = 2 + topic.len() + if has_pkid { 2 } else { 0 } + payload.len();
    let mut byte1 = PUBLISH << 4 | (qos as u8) << 1 | u8::from(retain);
    if has_pkid && dup {
        byte1 |= 0b1000;
    }
    put_fixed_header(out, byte1, remaining_len);
    put_binary(out, topic.as_bytes());
    if has_pkid {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// Appends a CONNACK.
pub fn encode_connack(out: &mut BytesMut, session_present: bool, code: ConnectReturnCode) {
    put_fixed_header(out, CONNACK << 4, 2);
    out.put_u8(u8::from(session_present));
    out.put_u8(code as u8);
}

/// Appends a PUBACK.
pub fn encode_puback(out: &mut BytesMut, pkid: u16) {
    encode_pkid_only(out, PUBACK << 4, pkid);
}

/// Appends a PUBREC.
pub fn encode_pubrec(out: &mut BytesMut, pkid: u16) {
    encode_pkid_only(out, PUBREC << 4, pkid);
}

/// Appends a PUBREL (flags 0010, §3.6.1).
pub fn encode_pubrel(out: &mut BytesMut, pkid: u16) {
    encode_pkid_only(out, PUBREL << 4 | FLAGS_RESERVED_0010, pkid);
}

/// Appends a PUBCOMP.
pub fn encode_pubcomp(out: &mut BytesMut, pkid: u16) {
    encode_pkid_only(out, PUBCOMP << 4, pkid);
}

/// Appends an UNSUBACK.
pub fn encode_unsuback(out: &mut BytesMut, pkid: u16) {
    encode_pkid_only(out, UNSUBACK << 4, pkid);
}

/// Appends a SUBACK; `codes` holds one return code per requested filter,
/// in order (§3.9.3).
pub fn encode_suback(out: &mut BytesMut, pkid: u16, codes: &[u8]) {
    debug_assert!(!codes.is_empty(), "SUBACK needs a return code");
    debug_assert!(codes.iter().all(|&c| is_suback_code(c)), "SUBACK code");
    put_fixed_header(out, SUBACK << 4, 2 + codes.len());
    out.put_u16(pkid);
    out.put_slice(codes);
}

/// Appends a PINGRESP.
pub fn encode_pingresp(out: &mut BytesMut) {
    encode_empty(out, PINGRESP);
}

fn encode_pkid_only(out: &mut BytesMut, byte1: u8, pkid: u16) {
    debug_assert!(pkid != 0, "packet identifiers are non-zero");
    put_fixed_header(out, byte1, 2);
    out.put_u16(pkid);
}

fn encode_empty(out: &mut BytesMut, packet_type: u8) {
    put_fixed_header(out, packet_type << 4, 0);
}

fn encode_connect(out: &mut BytesMut, connect: &Connect) {
    let name = if connect.protocol_level == PROTOCOL_LEVEL_V3 {
        PROTOCOL_NAME_V3
    } else {
        PROTOCOL_NAME_V4
    };
    debug_assert!(
        connect.password.is_none() || connect.username.is_some(),
        "CONNECT password without user name"
    );
    // Name, level, flags, keep alive, then the payload fields.
    let mut remaining_len = 2 + name.len() + 1 + 1 + 2 + 2 + connect.client_id.len();
    if let Some(will) = &connect.will {
        remaining_len += 2 + will.topic.as_bytes().len() + 2 + will.payload.len();
    }
    if let Some(username) = &connect.username {
        remaining_len += 2 + username.len();
    }
    if let Some(password) = &connect.password {
        remaining_len += 2 + password.len();
    }
    put_fixed_header(out, CONNECT << 4, remaining_len);
    put_binary(out, name);
    out.put_u8(connect.protocol_level);
    out.put_u8(ConnectFlags::encode(connect));
    out.put_u16(connect.keep_alive_s);
    put_binary(out, connect.client_id.as_bytes());
    if let Some(will) = &connect.will {
        put_binary(out, will.topic.as_bytes());
        put_binary(out, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_binary(out, username.as_bytes());
    }
    if let Some(password) = &connect.password {
        put_binary(out, password);
    }
}

fn encode_subscribe(out: &mut BytesMut, subscribe: &Subscribe) {
    debug_assert!(!subscribe.filters.is_empty(), "SUBSCRIBE needs a filter");
    let filters_len: usize = subscribe.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum();
    put_fixed_header(out, SUBSCRIBE << 4 | FLAGS_RESERVED_0010, 2 + filters_len);
    out.put_u16(subscribe.pkid);
    for (filter, qos) in &subscribe.filters {
        put_binary(out, filter.as_bytes());
        out.put_u8(*qos as u8);
    }
}

fn encode_unsubscribe(out: &mut BytesMut, unsubscribe: &Unsubscribe) {
    debug_assert!(
        !unsubscribe.filters.is_empty(),
        "UNSUBSCRIBE needs a filter"
    );
    let filters_len: usize = unsubscribe.filters.iter().map(|f| 2 + f.len()).sum();
    put_fixed_header(out, UNSUBSCRIBE << 4 | FLAGS_RESERVED_0010, 2 + filters_len);
    out.put_u16(unsubscribe.pkid);
    for filter in &unsubscribe.filters {
        put_binary(out, filter.as_bytes());
    }
}

/// Reserves room for the whole packet, then writes its fixed header; the
/// caller writes exactly `remaining_len` bytes after it.
pub(super) fn put_fixed_header(out: &mut BytesMut, byte1: u8, remaining_len: usize) {
    // A larger length would wrap and let payload bytes be read as packets.
    assert!(
        remaining_len <= REMAINING_LENGTH_MAX,
        "packet exceeds the Remaining Length limit"
    );
    out.reserve(1 + remaining_length_len(remaining_len) + remaining_len);
    out.put_u8(byte1);
    let mut value = remaining_len;
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(low);
            return;
        }
        out.put_u8(low | 0x80);
    }
}

/// Bytes taken by the Remaining Length encoding of `len` (§2.2.3).
fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a 2-byte length prefix and the bytes (§1.5.3).
pub(super) fn put_binary(out: &mut BytesMut, bytes: &[u8]) {
    // A longer field would wrap its prefix and desynchronise the stream.
    let len = u16::try_from(bytes.len()).expect("MQTT string or binary field over 65,535 bytes");
    out.put_u16(len);
    out.put_slice(bytes);
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
