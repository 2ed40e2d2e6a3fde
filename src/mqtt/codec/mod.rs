//! MQTT 3.1.1 wire codec: frames packets out of a read buffer and writes
//! packets into write buffers.
//!
//! # Role
//!
//! The shard shell appends socket bytes to a `BytesMut` and calls [`decode`]
//! until it returns `Ok(None)`; each `Ok(Some(packet))` goes to the session
//! state machine. Outbound, the broker calls the `encode_*` functions, which
//! append one packet to a caller-owned buffer without building a [`Packet`].
//! [`Packet::encode`] covers every packet type, server-to-client ones
//! included, so tests and the load generator can act as clients.
//!
//! # Zero-copy PUBLISH
//!
//! A complete frame is split off the read buffer and frozen; the topic and
//! the payload of a PUBLISH are `Bytes` slices of that frame. Decoding or
//! encoding a PUBLISH copies no payload byte and allocates nothing beyond
//! what the caller's buffers already hold. The topic is validated once, by
//! [`TopicName::new`], and travels as bytes from then on.
//!
//! # Strictness
//!
//! Every "MUST" of the specification that the codec can see is enforced, so
//! the broker never has to re-check the wire format:
//!
//! 1. Fixed-header flags are exactly those of §2.2.2 (PUBLISH: QoS 3 and DUP
//!    with QoS 0 are refused, §3.3.1-2 and §3.3.1-4).
//! 2. The Remaining Length takes at most 4 bytes and its shortest form.
//! 3. The body is exactly as long as its fields: no trailing byte, no field
//!    running past the end.
//! 4. Packet identifiers are non-zero wherever present (§2.3.1-1).
//! 5. Every MQTT string is UTF-8 without U+0000 (§1.5.3); U+FEFF is kept.
//!    Topic names and filters, client ids and user names also refuse the
//!    control characters U+0001–U+001F and U+007F–U+009F, which §1.5.3
//!    allows a server to treat as malformed (mosquitto does too).
//! 6. CONNECT follows §3.1.2 (protocol name and level, reserved flag, will
//!    flags, password only with user name).
//! 7. Topic names follow §4.7 (non-empty, no wildcard) and so do the filters
//!    of SUBSCRIBE and UNSUBSCRIBE (non-empty, `#` alone in the last level,
//!    `+` alone in its level): a malformed filter is a protocol violation
//!    that closes the connection, not a refusal answered with SUBACK 0x80.
//!
//! What the codec leaves to the broker: the client id rules (§3.1.3-5),
//! which filters it grants, and which packets a client may send when.
//!
//! # Buffer management
//!
//! `Ok(None)` leaves the buffer untouched: call again when more bytes have
//! arrived. `Ok(Some(_))` consumes exactly one packet. An error detected in
//! the fixed header (type, flags, length, size) leaves the buffer untouched;
//! one detected in the body has consumed the frame. Either way the stream
//! cannot be resynchronised and the connection must be closed.
//!
//! # mqttbytes as oracle
//!
//! `mqttbytes::v4` copies every topic into a `String`, accepts neither
//! `MQIsdp` nor level 3, and is lax on flags, trailing bytes and packet
//! identifiers, so none of it is on the decode path. It stays the reference:
//! the tests and the fuzz target feed the same bytes to both codecs and
//! require them to agree whenever both accept (see `oracle_tests.rs`).

use bytes::Bytes;

use crate::mqtt::topic::{TopicError, TopicName};
use crate::mqtt::QoS;

mod decode;
mod encode;

pub use decode::decode;
pub use encode::{
    encode_connack, encode_pingresp, encode_puback, encode_pubcomp, encode_publish, encode_pubrec,
    encode_pubrel, encode_suback, encode_unsuback,
};

/// A PUBLISH (§3.3). `pkid` is 0 exactly when `qos` is `AtMostOnce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: TopicName,
    pub pkid: u16,
    pub payload: Bytes,
}

/// The will message of a CONNECT (§3.1.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// A CONNECT (§3.1). Level 4 is MQTT 3.1.1 (name "MQTT"), level 3 is
/// MQTT 3.1 (name "MQIsdp"); the layout is otherwise the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol_level: u8,
    pub clean_session: bool,
    pub keep_alive_s: u16,
    /// May be empty: whether that is accepted is the broker's call (§3.1.3-7).
    pub client_id: String,
    pub username: Option<String>,
    /// Binary data, not a string (§3.1.3.5).
    pub password: Option<Bytes>,
    pub will: Option<LastWill>,
}

/// A SUBSCRIBE (§3.8): at least one filter with its requested QoS. A
/// decoded one holds only valid filters (`topic::validate_filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<(String, QoS)>,
}

/// An UNSUBSCRIBE (§3.10): at least one filter, valid when decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
}

/// One MQTT 3.1.1 control packet, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: a CONNECT is several times larger than any other packet and
    /// arrives once per connection.
    Connect(Box<Connect>),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    PingReq,
    Disconnect,
    ConnAck {
        session_present: bool,
        code: ConnectReturnCode,
    },
    /// `codes` holds 0x00, 0x01, 0x02 (granted QoS) or 0x80 (failure).
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    UnsubAck(u16),
    PingResp,
}

/// CONNACK return code (§3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNamePassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code of a wire value; 6 and above are reserved.
    pub fn from_u8(v: u8) -> Option<ConnectReturnCode> {
        match v {
            0 => Some(ConnectReturnCode::Accepted),
            1 => Some(ConnectReturnCode::UnacceptableProtocolVersion),
            2 => Some(ConnectReturnCode::IdentifierRejected),
            3 => Some(ConnectReturnCode::ServerUnavailable),
            4 => Some(ConnectReturnCode::BadUserNamePassword),
            5 => Some(ConnectReturnCode::NotAuthorized),
            _ => None,
        }
    }
}

/// Why bytes are not an acceptable packet. Every variant means the
/// connection must be closed (§4.8); [`DecodeError::connack_code`] tells
/// which ones deserve a CONNACK first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The Remaining Length runs past 4 bytes or is not in its shortest form.
    #[error("remaining length longer than 4 bytes or not minimally encoded")]
    MalformedLength,
    /// The whole packet (fixed header included) would exceed the limit.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    PacketTooLarge { size: usize, max: usize },
    /// A structural violation; the text names it.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// An MQTT string that is not UTF-8 or contains U+0000 (§1.5.3).
    #[error("string is not UTF-8 or contains U+0000")]
    InvalidUtf8,
    /// An MQTT string (topic name or filter, client id, user name) with a
    /// control character, U+0001–U+001F or U+007F–U+009F (§1.5.3).
    #[error("string contains a control character")]
    ControlCharacter,
    /// A PUBLISH or will topic that is not a valid topic name.
    #[error("invalid topic name")]
    InvalidTopic(#[source] TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE filter that is empty ([MQTT-4.7.3-1]) or
    /// misplaces a wildcard ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
    #[error("invalid topic filter")]
    InvalidFilter(#[source] TopicError),
    /// CONNECT with a known protocol name but another level.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT whose protocol name is neither "MQTT" nor "MQIsdp".
    #[error("protocol name is neither MQTT nor MQIsdp")]
    BadProtocolName,
    /// Packet type 0 or 15, reserved in MQTT 3.1.1.
    #[error("reserved packet type {0}")]
    UnexpectedPacket(u8),
}

impl DecodeError {
    /// The CONNACK to send before closing, when the error is in a CONNECT
    /// that deserves one: only an unsupported level does (§3.1.2-2); every
    /// other error closes silently (§3.1.4-1).
    pub fn connack_code(&self) -> Option<ConnectReturnCode> {
        match self {
            DecodeError::UnsupportedProtocolLevel(_) => {
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            _ => None,
        }
    }
}

/// Control packet types (§2.2.1), the high nibble of the first byte.
mod packet_type {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const CONNACK: u8 = 2;
    pub(super) const PUBLISH: u8 = 3;
    pub(super) const PUBACK: u8 = 4;
    pub(super) const PUBREC: u8 = 5;
    pub(super) const PUBREL: u8 = 6;
    pub(super) const PUBCOMP: u8 = 7;
    pub(super) const SUBSCRIBE: u8 = 8;
    pub(super) const SUBACK: u8 = 9;
    pub(super) const UNSUBSCRIBE: u8 = 10;
    pub(super) const UNSUBACK: u8 = 11;
    pub(super) const PINGREQ: u8 = 12;
    pub(super) const PINGRESP: u8 = 13;
    pub(super) const DISCONNECT: u8 = 14;
}

/// Largest value 4 bytes of Remaining Length can carry (§2.2.3).
const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// Flags of PUBREL, SUBSCRIBE and UNSUBSCRIBE (§2.2.2); all other types but
/// PUBLISH have 0.
const FLAGS_RESERVED_0010: u8 = 0b0010;

/// The wire names of the two supported protocol levels (§3.1.2.1).
const PROTOCOL_NAME_V4: &[u8] = b"MQTT";
const PROTOCOL_NAME_V3: &[u8] = b"MQIsdp";
const PROTOCOL_LEVEL_V4: u8 = 4;
const PROTOCOL_LEVEL_V3: u8 = 3;

/// SUBACK failure return code (§3.9.3).
pub const SUBACK_FAILURE: u8 = 0x80;

/// The connect-flags byte (§3.1.2.3).
#[derive(Debug, Clone, Copy)]
struct ConnectFlags {
    username: bool,
    password: bool,
    /// QoS and retain of the will, when the will flag is set.
    will: Option<(QoS, bool)>,
    clean_session: bool,
}

impl ConnectFlags {
    const USERNAME: u8 = 0x80;
    const PASSWORD: u8 = 0x40;
    const WILL_RETAIN: u8 = 0x20;
    const WILL_QOS_SHIFT: u8 = 3;
    const WILL: u8 = 0x04;
    const CLEAN_SESSION: u8 = 0x02;
    const RESERVED: u8 = 0x01;

    fn parse(byte: u8) -> Result<ConnectFlags, DecodeError> {
        if byte & Self::RESERVED != 0 {
            return Err(DecodeError::Malformed("CONNECT reserved flag set"));
        }
        let username = byte & Self::USERNAME != 0;
        let password = byte & Self::PASSWORD != 0;
        if password && !username {
            return Err(DecodeError::Malformed("CONNECT password without user name"));
        }
        Ok(ConnectFlags {
            username,
            password,
            will: Self::parse_will(byte)?,
            clean_session: byte & Self::CLEAN_SESSION != 0,
        })
    }

    fn parse_will(byte: u8) -> Result<Option<(QoS, bool)>, DecodeError> {
        let qos_bits = (byte >> Self::WILL_QOS_SHIFT) & 0b11;
        let retain = byte & Self::WILL_RETAIN != 0;
        if byte & Self::WILL == 0 {
            // §3.1.2-13 and §3.1.2-15: no will, so no will QoS or retain.
            if qos_bits != 0 || retain {
                return Err(DecodeError::Malformed("will QoS or retain without will"));
            }
            return Ok(None);
        }
        let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::Malformed("will QoS 3"))?;
        Ok(Some((qos, retain)))
    }

    fn encode(connect: &Connect) -> u8 {
        let mut byte = 0;
        if connect.username.is_some() {
            byte |= Self::USERNAME;
        }
        if connect.password.is_some() {
            byte |= Self::PASSWORD;
        }
        if let Some(will) = &connect.will {
            byte |= Self::WILL | (will.qos as u8) << Self::WILL_QOS_SHIFT;
            if will.retain {
                byte |= Self::WILL_RETAIN;
            }
        }
        if connect.clean_session {
            byte |= Self::CLEAN_SESSION;
        }
        byte
    }
}

fn is_suback_code(code: u8) -> bool {
    code <= QoS::ExactlyOnce as u8 || code == SUBACK_FAILURE
}

#[cfg(test)]
#[path = "oracle_tests.rs"]
mod oracle;

#[cfg(test)]
#[path = "support_tests.rs"]
mod test_support;

#[cfg(test)]
#[path = "property_tests.rs"]
mod property_tests;
