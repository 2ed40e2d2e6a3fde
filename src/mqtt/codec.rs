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
//! 6. CONNECT follows §3.1.2 (protocol name and level, reserved flag, will
//!    flags, password only with user name).
//!
//! What the codec leaves to the broker: the client id rules (§3.1.3-5),
//! topic filter syntax (answered with SUBACK 0x80), and which packets a
//! client may send when.
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
//! require them to agree whenever both accept (see `oracle` below).

// cargo-fuzz builds with `--cfg fuzzing`, which Cargo.toml does not declare.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::mqtt::topic::{TopicError, TopicName};
use crate::mqtt::QoS;

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

/// A SUBSCRIBE (§3.8): at least one filter with its requested QoS. Filters
/// are UTF-8 strings whose wildcard syntax the codec does not check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    pub filters: Vec<(String, QoS)>,
}

/// An UNSUBSCRIBE (§3.10): at least one filter.
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
    /// A PUBLISH or will topic that is not a valid topic name.
    #[error("invalid topic name")]
    InvalidTopic(#[source] TopicError),
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

use packet_type::*;

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
const SUBACK_FAILURE: u8 = 0x80;

/// Decodes one packet from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed and `buf` is untouched;
/// `Ok(Some(p))` consumes exactly one packet. The total size (fixed header
/// plus Remaining Length) is checked against `max_packet_size` as soon as
/// the fixed header is complete, before the body has arrived, so the caller
/// can close without buffering it. See the module doc for what an error
/// leaves in `buf`.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::read(buf)? else {
        return Ok(None);
    };
    let size = header.frame_len();
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.header_len);
    read_body(header.byte1, Reader::new(frame)).map(Some)
}

/// The first byte and the Remaining Length of a packet (§2.2).
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    byte1: u8,
    /// 1 byte of type and flags plus 1 to 4 bytes of Remaining Length.
    header_len: usize,
    remaining_len: usize,
}

impl FixedHeader {
    /// `Ok(None)` while the header is incomplete. Type and flags are checked
    /// on the first byte alone, so garbage is refused as early as possible.
    fn read(bytes: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some((&byte1, rest)) = bytes.split_first() else {
            return Ok(None);
        };
        check_first_byte(byte1)?;
        let Some((remaining_len, length_len)) = read_remaining_length(rest)? else {
            return Ok(None);
        };
        Ok(Some(FixedHeader {
            byte1,
            header_len: 1 + length_len,
            remaining_len,
        }))
    }

    fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Decodes the variable-length Remaining Length (§2.2.3): `Ok(Some((value,
/// bytes used)))`, or `Ok(None)` if it continues past the bytes at hand.
fn read_remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation byte adds nothing: a
            // longer form than needed, which would not re-encode the same.
            if index > 0 && byte == 0 {
                return Err(DecodeError::MalformedLength);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    // Four continuation bits set: a fifth byte would be needed, so there is
    // no point waiting for it.
    if bytes.len() >= 4 {
        return Err(DecodeError::MalformedLength);
    }
    Ok(None)
}

/// Checks the packet type and the fixed-header flags (§2.2.2).
fn check_first_byte(byte1: u8) -> Result<(), DecodeError> {
    let flags = byte1 & 0x0f;
    match byte1 >> 4 {
        PUBLISH => PublishFlags::parse(flags).map(drop),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags == FLAGS_RESERVED_0010 => Ok(()),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Err(DecodeError::Malformed(
            "fixed-header flags of PUBREL/SUBSCRIBE/UNSUBSCRIBE must be 0010",
        )),
        CONNECT..=DISCONNECT if flags == 0 => Ok(()),
        CONNECT..=DISCONNECT => Err(DecodeError::Malformed("fixed-header flags must be 0000")),
        reserved => Err(DecodeError::UnexpectedPacket(reserved)),
    }
}

/// The flags nibble of a PUBLISH (§3.3.1).
#[derive(Debug, Clone, Copy)]
struct PublishFlags {
    dup: bool,
    qos: QoS,
    retain: bool,
}

impl PublishFlags {
    fn parse(flags: u8) -> Result<PublishFlags, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11)
            .ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
        let dup = flags & 0b1000 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Malformed("PUBLISH with DUP set and QoS 0"));
        }
        Ok(PublishFlags {
            dup,
            qos,
            retain: flags & 0b0001 != 0,
        })
    }
}

/// Parses the body of a frame whose first byte passed `check_first_byte`.
fn read_body(byte1: u8, mut reader: Reader) -> Result<Packet, DecodeError> {
    let packet = match byte1 >> 4 {
        CONNECT => Packet::Connect(Box::new(read_connect(&mut reader)?)),
        CONNACK => read_connack(&mut reader)?,
        PUBLISH => Packet::Publish(read_publish(byte1, &mut reader)?),
        PUBACK => Packet::PubAck(reader.pkid()?),
        PUBREC => Packet::PubRec(reader.pkid()?),
        PUBREL => Packet::PubRel(reader.pkid()?),
        PUBCOMP => Packet::PubComp(reader.pkid()?),
        SUBSCRIBE => Packet::Subscribe(read_subscribe(&mut reader)?),
        SUBACK => read_suback(&mut reader)?,
        UNSUBSCRIBE => Packet::Unsubscribe(read_unsubscribe(&mut reader)?),
        UNSUBACK => Packet::UnsubAck(reader.pkid()?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        reserved => return Err(DecodeError::UnexpectedPacket(reserved)),
    };
    reader.expect_empty()?;
    Ok(packet)
}

fn read_publish(byte1: u8, reader: &mut Reader) -> Result<Publish, DecodeError> {
    let flags = PublishFlags::parse(byte1 & 0x0f)?;
    let topic = reader.topic()?;
    // The packet identifier exists only for QoS 1 and 2 (§3.3.2.2).
    let pkid = match flags.qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce | QoS::ExactlyOnce => reader.pkid()?,
    };
    Ok(Publish {
        dup: flags.dup,
        qos: flags.qos,
        retain: flags.retain,
        topic,
        pkid,
        payload: reader.rest(),
    })
}

fn read_connect(reader: &mut Reader) -> Result<Connect, DecodeError> {
    let protocol_level = read_protocol(reader)?;
    let flags = ConnectFlags::parse(reader.u8()?)?;
    let keep_alive_s = reader.u16()?;
    // Payload order is fixed by §3.1.3: client id, will, user name, password.
    let client_id = reader.string()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(LastWill {
            topic: reader.topic()?,
            payload: reader.binary()?,
            qos,
            retain,
        }),
        None => None,
    };
    let username = if flags.username {
        Some(reader.string()?)
    } else {
        None
    };
    let password = if flags.password {
        Some(reader.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol_level,
        clean_session: flags.clean_session,
        keep_alive_s,
        client_id,
        username,
        password,
        will,
    })
}

/// Protocol name and level (§3.1.2.1-2). A known name with an unknown level
/// stops here: the rest of the packet may follow another version's layout,
/// and the broker only needs to answer CONNACK 0x01.
fn read_protocol(reader: &mut Reader) -> Result<u8, DecodeError> {
    let name = reader.binary()?;
    let name = name.as_ref();
    if name != PROTOCOL_NAME_V4 && name != PROTOCOL_NAME_V3 {
        return Err(DecodeError::BadProtocolName);
    }
    let level = reader.u8()?;
    let expected = if name == PROTOCOL_NAME_V4 {
        PROTOCOL_LEVEL_V4
    } else {
        PROTOCOL_LEVEL_V3
    };
    if level != expected {
        return Err(DecodeError::UnsupportedProtocolLevel(level));
    }
    Ok(level)
}

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

fn read_connack(reader: &mut Reader) -> Result<Packet, DecodeError> {
    // Bits 7-1 of the acknowledge flags are reserved (§3.2.2.1).
    let session_present = match reader.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::Malformed("CONNACK reserved flags set")),
    };
    let code = ConnectReturnCode::from_u8(reader.u8()?)
        .ok_or(DecodeError::Malformed("CONNACK reserved return code"))?;
    Ok(Packet::ConnAck {
        session_present,
        code,
    })
}

fn read_subscribe(reader: &mut Reader) -> Result<Subscribe, DecodeError> {
    let pkid = reader.pkid()?;
    let mut filters = Vec::new();
    while reader.any_left() {
        let filter = reader.string()?;
        // The upper 6 bits of the requested QoS byte are reserved (§3.8.3-4).
        let qos = QoS::from_u8(reader.u8()?)
            .ok_or(DecodeError::Malformed("SUBSCRIBE requested QoS invalid"))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed("SUBSCRIBE without filter"));
    }
    Ok(Subscribe { pkid, filters })
}

fn read_suback(reader: &mut Reader) -> Result<Packet, DecodeError> {
    let pkid = reader.pkid()?;
    let codes = reader.rest();
    if codes.is_empty() {
        return Err(DecodeError::Malformed("SUBACK without return code"));
    }
    if !codes.iter().all(|&code| is_suback_code(code)) {
        return Err(DecodeError::Malformed("SUBACK reserved return code"));
    }
    Ok(Packet::SubAck {
        pkid,
        codes: codes.to_vec(),
    })
}

fn is_suback_code(code: u8) -> bool {
    code <= QoS::ExactlyOnce as u8 || code == SUBACK_FAILURE
}

fn read_unsubscribe(reader: &mut Reader) -> Result<Unsubscribe, DecodeError> {
    let pkid = reader.pkid()?;
    let mut filters = Vec::new();
    while reader.any_left() {
        filters.push(reader.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed("UNSUBSCRIBE without filter"));
    }
    Ok(Unsubscribe { pkid, filters })
}

/// A cursor over the body of one frame. Every read checks the bytes left
/// first, so a body shorter than its fields claim ends in `Malformed`,
/// never in a panic.
#[derive(Debug)]
struct Reader {
    rest: Bytes,
}

impl Reader {
    const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

    fn new(body: Bytes) -> Reader {
        Reader { rest: body }
    }

    fn any_left(&self) -> bool {
        !self.rest.is_empty()
    }

    fn expect_empty(&self) -> Result<(), DecodeError> {
        if self.any_left() {
            return Err(DecodeError::Malformed(
                "trailing bytes after the last field",
            ));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.rest.is_empty() {
            return Err(Self::TRUNCATED);
        }
        Ok(self.rest.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.rest.len() < 2 {
            return Err(Self::TRUNCATED);
        }
        Ok(self.rest.get_u16())
    }

    /// A packet identifier, which is never 0 (§2.3.1-1).
    fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Malformed("packet identifier 0")),
            pkid => Ok(pkid),
        }
    }

    /// The next `len` bytes, sharing the frame's memory.
    fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.rest.len() < len {
            return Err(Self::TRUNCATED);
        }
        Ok(self.rest.split_to(len))
    }

    /// Everything left, sharing the frame's memory.
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }

    /// Binary data with a 2-byte length prefix (§1.5.3, §3.1.3.5).
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// An MQTT UTF-8 encoded string (§1.5.3).
    fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        // In valid UTF-8 a 0x00 byte can only be U+0000 itself.
        if raw.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(text.to_owned())
    }

    /// A topic name, validated once and kept as a slice of the frame.
    fn topic(&mut self) -> Result<TopicName, DecodeError> {
        TopicName::new(self.binary()?).map_err(topic_error)
    }
}

/// Encoding problems are reported as such whatever the string; only the
/// topic-specific rules become `InvalidTopic`.
fn topic_error(error: TopicError) -> DecodeError {
    match error {
        TopicError::InvalidUtf8 | TopicError::NulChar => DecodeError::InvalidUtf8,
        other => DecodeError::InvalidTopic(other),
    }
}

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
fn put_fixed_header(out: &mut BytesMut, byte1: u8, remaining_len: usize) {
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
fn put_binary(out: &mut BytesMut, bytes: &[u8]) {
    // A longer field would wrap its prefix and desynchronise the stream.
    let len = u16::try_from(bytes.len()).expect("MQTT string or binary field over 65,535 bytes");
    out.put_u16(len);
    out.put_slice(bytes);
}

/// Differential checking against `mqttbytes::v4`, shared by the unit tests
/// and the fuzz target (`tests/fuzz`), which builds with `--cfg fuzzing`.
#[cfg(any(test, fuzzing))]
pub mod oracle {
    use bytes::BytesMut;
    use mqttbytes::v4 as reference;

    use super::{decode, Connect, Packet};

    /// Decodes the front of `data` with both codecs and panics on any
    /// disagreement; returns the bytes our codec consumed, if it decoded a
    /// packet. Checked:
    ///
    /// 1. what we decode re-encodes to exactly the bytes consumed;
    /// 2. `Ok(None)` leaves the buffer untouched, and mqttbytes also waits;
    /// 3. what both accept, they agree on field by field and in length;
    /// 4. what we accept, mqttbytes accepts too, except for the intentional
    ///    extensions in [`accepted_only_by_us`].
    ///
    /// Where mqttbytes accepts and we refuse is not checked: that is our
    /// stricter reading of the specification (flags, trailing bytes, zero
    /// packet identifiers, U+0000, empty SUBSCRIBE/UNSUBSCRIBE, wildcard or
    /// empty topic names, non-minimal lengths, protocol level 5, ...).
    pub fn check(data: &[u8], max_packet_size: usize) -> Option<usize> {
        let mut ours_buf = BytesMut::from(data);
        let ours = decode(&mut ours_buf, max_packet_size);
        let consumed = data.len() - ours_buf.len();
        let mut theirs_buf = BytesMut::from(data);
        let theirs = reference::read(&mut theirs_buf, max_packet_size);
        match (&ours, &theirs) {
            (Ok(Some(packet)), _) => check_reencode(packet, &data[..consumed]),
            (Ok(None), _) => assert_eq!(&ours_buf[..], data, "Ok(None) consumed bytes"),
            (Err(_), _) => {}
        }
        match (&ours, &theirs) {
            (Ok(Some(packet)), Ok(reference)) => {
                assert_eq!(ours_buf.len(), theirs_buf.len(), "frame lengths differ");
                assert_agree(packet, reference);
            }
            (Ok(Some(packet)), Err(error)) => assert!(
                accepted_only_by_us(packet),
                "mqttbytes refused {packet:?}: {error:?}"
            ),
            (Ok(None), theirs) => assert!(
                matches!(theirs, Err(mqttbytes::Error::InsufficientBytes(_))),
                "we wait for more bytes, mqttbytes says {theirs:?}"
            ),
            (Err(_), _) => {}
        }
        match ours {
            Ok(Some(_)) => Some(consumed),
            _ => None,
        }
    }

    fn check_reencode(packet: &Packet, frame: &[u8]) {
        let mut out = BytesMut::new();
        packet.encode(&mut out);
        assert_eq!(&out[..], frame, "re-encoding {packet:?} differs");
    }

    /// The intentional extensions: MQTT 3.1 ("MQIsdp", level 3), and a
    /// password that is binary data rather than UTF-8 (§3.1.3.5).
    pub fn accepted_only_by_us(packet: &Packet) -> bool {
        match packet {
            Packet::Connect(connect) => {
                connect.protocol_level == 3
                    || connect
                        .password
                        .as_ref()
                        .is_some_and(|p| std::str::from_utf8(p).is_err())
            }
            _ => false,
        }
    }

    /// Panics unless both decodings say the same.
    pub fn assert_agree(ours: &Packet, theirs: &reference::Packet) {
        use reference::Packet as R;
        match (ours, theirs) {
            (Packet::Connect(c), R::Connect(r)) => assert_connect_agree(c, r),
            (Packet::Publish(p), R::Publish(r)) => {
                assert_eq!(p.dup, r.dup);
                assert_eq!(p.qos as u8, r.qos as u8);
                assert_eq!(p.retain, r.retain);
                assert_eq!(p.topic.as_str(), r.topic);
                assert_eq!(p.pkid, r.pkid);
                assert_eq!(p.payload, r.payload);
            }
            (Packet::PubAck(pkid), R::PubAck(r)) => assert_eq!(*pkid, r.pkid),
            (Packet::PubRec(pkid), R::PubRec(r)) => assert_eq!(*pkid, r.pkid),
            (Packet::PubRel(pkid), R::PubRel(r)) => assert_eq!(*pkid, r.pkid),
            (Packet::PubComp(pkid), R::PubComp(r)) => assert_eq!(*pkid, r.pkid),
            (Packet::Subscribe(s), R::Subscribe(r)) => {
                assert_eq!(s.pkid, r.pkid);
                let theirs: Vec<_> = r.filters.iter().map(|f| (&*f.path, f.qos as u8)).collect();
                let ours: Vec<_> = s.filters.iter().map(|(f, q)| (&**f, *q as u8)).collect();
                assert_eq!(ours, theirs);
            }
            (Packet::Unsubscribe(u), R::Unsubscribe(r)) => {
                assert_eq!(u.pkid, r.pkid);
                assert_eq!(u.filters, r.topics);
            }
            (Packet::PingReq, R::PingReq)
            | (Packet::Disconnect, R::Disconnect)
            | (Packet::PingResp, R::PingResp) => {}
            (
                Packet::ConnAck {
                    session_present,
                    code,
                },
                R::ConnAck(r),
            ) => {
                assert_eq!(*session_present, r.session_present);
                assert_eq!(*code as u8, r.code as u8);
            }
            (Packet::SubAck { pkid, codes }, R::SubAck(r)) => {
                assert_eq!(*pkid, r.pkid);
                let theirs: Vec<u8> = r.return_codes.iter().map(|c| suback_code(*c)).collect();
                assert_eq!(*codes, theirs);
            }
            (Packet::UnsubAck(pkid), R::UnsubAck(r)) => assert_eq!(*pkid, r.pkid),
            _ => panic!("packet kinds differ: {ours:?} / {theirs:?}"),
        }
    }

    fn assert_connect_agree(ours: &Connect, theirs: &reference::Connect) {
        assert_eq!(ours.protocol_level, 4);
        assert_eq!(theirs.protocol, mqttbytes::Protocol::V4);
        assert_eq!(ours.keep_alive_s, theirs.keep_alive);
        assert_eq!(ours.client_id, theirs.client_id);
        assert_eq!(ours.clean_session, theirs.clean_session);
        match (&ours.will, &theirs.last_will) {
            (None, None) => {}
            (Some(w), Some(r)) => {
                assert_eq!(w.topic.as_str(), r.topic);
                assert_eq!(w.payload, r.message);
                assert_eq!(w.qos as u8, r.qos as u8);
                assert_eq!(w.retain, r.retain);
            }
            (ours, theirs) => panic!("wills differ: {ours:?} / {theirs:?}"),
        }
        // mqttbytes folds absent and empty credentials into one `Login`,
        // and `None` when both are empty.
        let username = ours.username.clone().unwrap_or_default();
        let password = ours.password.as_deref().unwrap_or_default();
        let password = String::from_utf8(password.to_vec()).expect("checked by the caller");
        let login = theirs.login.as_ref();
        if username.is_empty() && password.is_empty() {
            assert!(login.is_none(), "mqttbytes login {login:?}");
        } else {
            let login = login.expect("mqttbytes lost the login");
            assert_eq!(username, login.username);
            assert_eq!(password, login.password);
        }
    }

    fn suback_code(code: reference::SubscribeReasonCode) -> u8 {
        match code {
            reference::SubscribeReasonCode::Success(qos) => qos as u8,
            reference::SubscribeReasonCode::Failure => super::SUBACK_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Large enough for every vector; the size limit has its own tests.
    const MAX: usize = 1 << 24;

    fn topic(name: &str) -> TopicName {
        TopicName::from_string(name.to_owned()).expect("valid test topic")
    }

    fn encoded(packet: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.encode(&mut out);
        out.to_vec()
    }

    fn decode_slice(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), MAX)
    }

    /// A frame with a correct Remaining Length around `body`.
    fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_fixed_header(&mut out, byte1, body.len());
        out.put_slice(body);
        out.to_vec()
    }

    /// An MQTT string or binary field: 2-byte length, then the bytes.
    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_binary(&mut out, bytes);
        out.to_vec()
    }

    fn publish_frame(byte1: u8, topic: &[u8], rest: &[u8]) -> Vec<u8> {
        frame(byte1, &[field(topic), rest.to_vec()].concat())
    }

    /// A CONNECT frame: protocol name, level, flags, keep alive 60 s, then
    /// the payload fields given.
    fn connect_frame(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
        let mut body = field(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        for bytes in payload {
            body.extend_from_slice(&field(bytes));
        }
        frame(0x10, &body)
    }

    /// One packet of every kind, with the fields that change the encoding.
    fn samples() -> Vec<Packet> {
        let connect = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive_s: 30,
            client_id: "dev-1".into(),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"\x00\xffsecret")),
            will: Some(LastWill {
                topic: topic("devices/dev-1/status"),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        };
        let mqtt31 = Connect {
            protocol_level: 3,
            clean_session: false,
            keep_alive_s: 0,
            client_id: String::new(),
            username: None,
            password: None,
            will: None,
        };
        vec![
            Packet::Connect(Box::new(connect)),
            Packet::Connect(Box::new(mqtt31)),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: topic("a/b"),
                pkid: 0,
                payload: Bytes::from_static(b"hello"),
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: topic("\u{feff}a/b"),
                pkid: 0xbeef,
                payload: Bytes::from(vec![7u8; 300]),
            }),
            Packet::PubAck(1),
            Packet::PubRec(2),
            Packet::PubRel(3),
            Packet::PubComp(u16::MAX),
            Packet::Subscribe(Subscribe {
                pkid: 10,
                filters: vec![
                    ("a/+".into(), QoS::AtMostOnce),
                    ("#".into(), QoS::ExactlyOnce),
                ],
            }),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 11,
                filters: vec!["a/+".into(), "b".into()],
            }),
            Packet::PingReq,
            Packet::Disconnect,
            Packet::ConnAck {
                session_present: true,
                code: ConnectReturnCode::Accepted,
            },
            Packet::ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized,
            },
            Packet::SubAck {
                pkid: 10,
                codes: vec![0, 1, 2, 0x80],
            },
            Packet::UnsubAck(11),
            Packet::PingResp,
        ]
    }

    fn assert_round_trip(packet: &Packet) {
        let bytes = encoded(packet);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(packet.clone())));
        assert!(buf.is_empty(), "{packet:?} left {buf:?}");
        assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()));
    }

    #[test]
    fn every_sample_round_trips_and_agrees_with_mqttbytes() {
        for packet in samples() {
            assert_round_trip(&packet);
        }
    }

    #[test]
    fn every_connect_return_code_round_trips() {
        for value in 0..=u8::MAX {
            let Some(code) = ConnectReturnCode::from_u8(value) else {
                assert!(value > 5);
                continue;
            };
            assert_eq!(code as u8, value);
            assert_round_trip(&Packet::ConnAck {
                session_present: false,
                code,
            });
        }
    }

    #[test]
    fn hot_path_encoders_match_packet_encode() {
        let mut out = BytesMut::new();
        encode_publish(&mut out, "t", b"p", QoS::AtLeastOnce, true, true, 9);
        encode_connack(&mut out, true, ConnectReturnCode::Accepted);
        encode_puback(&mut out, 1);
        encode_pubrec(&mut out, 2);
        encode_pubrel(&mut out, 3);
        encode_pubcomp(&mut out, 4);
        encode_suback(&mut out, 5, &[0x80, 1]);
        encode_unsuback(&mut out, 6);
        encode_pingresp(&mut out);
        let packets = [
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic("t"),
                pkid: 9,
                payload: Bytes::from_static(b"p"),
            }),
            Packet::ConnAck {
                session_present: true,
                code: ConnectReturnCode::Accepted,
            },
            Packet::PubAck(1),
            Packet::PubRec(2),
            Packet::PubRel(3),
            Packet::PubComp(4),
            Packet::SubAck {
                pkid: 5,
                codes: vec![0x80, 1],
            },
            Packet::UnsubAck(6),
            Packet::PingResp,
        ];
        let expected: Vec<u8> = packets.iter().flat_map(encoded).collect();
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn qos0_publish_encodes_without_pkid_and_dup() {
        let mut out = BytesMut::new();
        encode_publish(&mut out, "a", b"x", QoS::AtMostOnce, false, true, 77);
        assert_eq!(&out[..], &[0x30, 4, 0, 1, b'a', b'x']);
    }

    /// The same packets written by mqttbytes: our encoder must produce the
    /// same bytes, and our decoder must read them.
    #[test]
    fn encoding_matches_mqttbytes() {
        use mqttbytes::v4 as reference;
        let mut connect = reference::Connect::new("dev-1");
        connect.keep_alive = 30;
        connect.set_login("user", "pass");
        connect.last_will = Some(reference::LastWill::new(
            "will/t",
            "bye",
            mqttbytes::QoS::ExactlyOnce,
            false,
        ));
        let mut publish = reference::Publish::new("a/b", mqttbytes::QoS::AtLeastOnce, "payload");
        publish.pkid = 42;
        publish.retain = true;
        let mut subscribe = reference::Subscribe::new("a/#", mqttbytes::QoS::AtLeastOnce);
        subscribe.pkid = 7;
        subscribe.add("b/+".into(), mqttbytes::QoS::ExactlyOnce);
        let mut theirs = BytesMut::new();
        connect.write(&mut theirs).unwrap();
        publish.write(&mut theirs).unwrap();
        subscribe.write(&mut theirs).unwrap();
        reference::PubRel::new(42).write(&mut theirs).unwrap();
        let mut unsubscribe = reference::Unsubscribe::new("a/#");
        unsubscribe.pkid = 8;
        unsubscribe.write(&mut theirs).unwrap();

        let mut ours = BytesMut::new();
        let mut stream = theirs.clone();
        while !stream.is_empty() {
            let packet = decode(&mut stream, MAX).unwrap().unwrap();
            packet.encode(&mut ours);
        }
        assert_eq!(ours, theirs);
    }

    /// mqttbytes' own CONNECT vector, with username, password and will.
    #[test]
    fn decodes_reference_connect_vector() {
        let mut bytes = vec![
            0x10,
            39,
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            0x04,
            0b1100_1110,
        ];
        bytes.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, b't', b'e', b's', b't']);
        bytes.extend_from_slice(&[0x00, 0x02, b'/', b'a']);
        bytes.extend_from_slice(&field(b"offline"));
        bytes.extend_from_slice(&field(b"rumq"));
        bytes.extend_from_slice(&field(b"mq"));
        let expected = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive_s: 10,
            client_id: "test".into(),
            username: Some("rumq".into()),
            password: Some(Bytes::from_static(b"mq")),
            will: Some(LastWill {
                topic: topic("/a"),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: false,
            }),
        };
        assert_eq!(
            decode_slice(&bytes),
            Ok(Some(Packet::Connect(Box::new(expected))))
        );
        assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()));
    }

    /// An MQTT 3.1 client (e.g. `mosquitto_pub -V mqttv31`).
    #[test]
    fn decodes_mqisdp_level_3() {
        let bytes = connect_frame(b"MQIsdp", 3, 0x02, &[b"abc"]);
        let Ok(Some(Packet::Connect(connect))) = decode_slice(&bytes) else {
            panic!("MQIsdp refused");
        };
        assert_eq!((connect.protocol_level, &*connect.client_id), (3, "abc"));
        assert!(connect.clean_session);
        assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()));
    }

    /// Regression: U+FEFF is a character like any other (§1.5.3-3).
    #[test]
    fn topic_starting_with_bom_is_kept() {
        let bytes = publish_frame(0x30, "\u{feff}a/b".as_bytes(), b"x");
        let Ok(Some(Packet::Publish(publish))) = decode_slice(&bytes) else {
            panic!("BOM topic refused");
        };
        assert_eq!(publish.topic.as_str(), "\u{feff}a/b");
        assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()));
    }

    #[test]
    fn publish_shares_the_read_buffer() {
        let bytes = publish_frame(0x32, b"a/b", &[0, 1, b'p', b'q']);
        let mut buf = BytesMut::from(&bytes[..]);
        let start = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, MAX) else {
            panic!("PUBLISH refused");
        };
        assert_eq!(publish.topic.as_bytes().as_ptr() as usize, start + 4);
        assert_eq!(publish.payload.as_ptr() as usize, start + 9);
        assert_eq!(&publish.payload[..], b"pq");
    }

    #[test]
    fn remaining_length_boundaries_round_trip() {
        // A 1-byte topic: remaining length = 3 + payload length.
        for remaining_len in [127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let payload = vec![0xa5; remaining_len - 3];
            let mut out = BytesMut::new();
            encode_publish(&mut out, "t", &payload, QoS::AtMostOnce, false, false, 0);
            let header_len = remaining_length_len(remaining_len) + 1;
            assert_eq!(out.len(), header_len + remaining_len);
            let mut buf = out.clone();
            let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, MAX) else {
                panic!("{remaining_len}-byte PUBLISH refused");
            };
            assert_eq!(publish.payload.len(), payload.len());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn remaining_length_decoding() {
        type Expected = Result<Option<(usize, usize)>, DecodeError>;
        let cases: [(&[u8], Expected); 10] = [
            (&[], Ok(None)),
            (&[0x00], Ok(Some((0, 1)))),
            (&[0x7f], Ok(Some((127, 1)))),
            (&[0x80, 0x01], Ok(Some((128, 2)))),
            (&[0xff, 0x7f], Ok(Some((16_383, 2)))),
            (
                &[0xff, 0xff, 0xff, 0x7f],
                Ok(Some((REMAINING_LENGTH_MAX, 4))),
            ),
            (&[0x80, 0x80, 0x80], Ok(None)),
            (&[0x80, 0x80, 0x80, 0x80], Err(DecodeError::MalformedLength)),
            (&[0x80, 0x00], Err(DecodeError::MalformedLength)),
            (&[0xff, 0xff, 0x80, 0x00], Err(DecodeError::MalformedLength)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(read_remaining_length(bytes), expected, "{bytes:02x?}");
        }
    }

    #[test]
    fn every_prefix_waits_and_leaves_the_buffer_untouched() {
        for packet in samples() {
            let bytes = encoded(&packet);
            for split in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..split]);
                assert_eq!(decode(&mut buf, MAX), Ok(None), "{packet:?} at {split}");
                assert_eq!(&buf[..], &bytes[..split]);
                buf.extend_from_slice(&bytes[split..]);
                assert_eq!(decode(&mut buf, MAX), Ok(Some(packet.clone())));
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn byte_at_a_time_stream_yields_every_packet_in_order() {
        let packets = samples();
        let stream: Vec<u8> = packets.iter().flat_map(encoded).collect();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &byte in &stream {
            buf.put_u8(byte);
            while let Some(packet) = decode(&mut buf, MAX).unwrap() {
                decoded.push(packet);
            }
        }
        assert_eq!(decoded, packets);
        assert!(buf.is_empty());
    }

    #[test]
    fn max_size_is_checked_before_the_body_arrives() {
        // PUBLISH announcing 16,384 bytes; only the fixed header is here.
        let header = [0x30, 0x80, 0x80, 0x01];
        let mut buf = BytesMut::from(&header[..]);
        let too_large = DecodeError::PacketTooLarge {
            size: 16_388,
            max: 1000,
        };
        assert_eq!(decode(&mut buf, 1000), Err(too_large));
        assert_eq!(&buf[..], &header[..], "header errors leave the buffer");
        // Still incomplete before the length ends: nothing to refuse yet.
        assert_eq!(decode(&mut BytesMut::from(&header[..3]), 1000), Ok(None));
    }

    #[test]
    fn max_size_counts_the_fixed_header() {
        let bytes = publish_frame(0x30, b"t", b"12345");
        assert_eq!(bytes.len(), 10);
        assert!(decode(&mut BytesMut::from(&bytes[..]), 10)
            .unwrap()
            .is_some());
        let too_large = DecodeError::PacketTooLarge { size: 10, max: 9 };
        assert_eq!(decode(&mut BytesMut::from(&bytes[..]), 9), Err(too_large));
    }

    #[test]
    fn decodes_one_packet_at_a_time() {
        let mut buf = BytesMut::new();
        encode_puback(&mut buf, 1);
        encode_pingresp(&mut buf);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::PubAck(1))));
        assert_eq!(&buf[..], &[0xd0, 0x00]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, MAX), Ok(None));
    }

    #[test]
    fn first_byte_errors_need_no_more_bytes() {
        let cases: [(u8, DecodeError); 5] = [
            (0x00, DecodeError::UnexpectedPacket(0)),
            (0xf0, DecodeError::UnexpectedPacket(15)),
            (0x36, DecodeError::Malformed("PUBLISH with QoS 3")),
            (
                0x38,
                DecodeError::Malformed("PUBLISH with DUP set and QoS 0"),
            ),
            (
                0x41,
                DecodeError::Malformed("fixed-header flags must be 0000"),
            ),
        ];
        for (byte1, expected) in cases {
            let mut buf = BytesMut::from(&[byte1][..]);
            assert_eq!(decode(&mut buf, MAX), Err(expected));
            assert_eq!(buf.len(), 1);
        }
    }

    fn malformed(reason: &'static str) -> DecodeError {
        DecodeError::Malformed(reason)
    }

    /// Every rule the decoder enforces, one vector each. A table, kept as
    /// one row per vector.
    #[rustfmt::skip]
    fn error_vectors() -> Vec<(&'static str, Vec<u8>, DecodeError)> {
        use DecodeError::*;
        let short = Reader::TRUNCATED;
        let trailing = malformed("trailing bytes after the last field");
        let pkid_zero = malformed("packet identifier 0");
        let flags_0000 = malformed("fixed-header flags must be 0000");
        let flags_0010 =
            malformed("fixed-header flags of PUBREL/SUBSCRIBE/UNSUBSCRIBE must be 0010");
        let sub_qos = malformed("SUBSCRIBE requested QoS invalid");
        let no_will = malformed("will QoS or retain without will");
        let v4 = |flags: u8, payload: &[&[u8]]| connect_frame(b"MQTT", 4, flags, payload);
        let named = |name: &[u8], level: u8| connect_frame(name, level, 0x02, &[b"c"]);
        let publish = publish_frame;
        let huge = PacketTooLarge { size: 268_435_460, max: MAX };
        vec![
            // Fixed header.
            ("type 0", vec![0x00, 0x00], UnexpectedPacket(0)),
            ("type 15", vec![0xf0, 0x00], UnexpectedPacket(15)),
            ("5-byte length", vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01], MalformedLength),
            ("long-form length", vec![0xc0, 0x80, 0x00], MalformedLength),
            ("too large", vec![0x30, 0xff, 0xff, 0xff, 0x7f], huge),
            ("PUBACK flags", vec![0x42, 0x02, 0x00, 0x01], flags_0000.clone()),
            ("PINGREQ flags", vec![0xc8, 0x00], flags_0000.clone()),
            ("CONNECT flags", vec![0x11, 0x00], flags_0000),
            ("PUBREL flags 0000", vec![0x60, 0x02, 0x00, 0x01], flags_0010.clone()),
            ("SUBSCRIBE flags 0000", frame(0x80, &[0, 1, 0, 1, b'a', 0]), flags_0010.clone()),
            ("UNSUBSCRIBE flags 0011", frame(0xa3, &[0, 1, 0, 1, b'a']), flags_0010),
            ("PUBLISH QoS 3", publish(0x36, b"a", &[0, 1]), malformed("PUBLISH with QoS 3")),
            ("PUBLISH DUP QoS 0", publish(0x38, b"a", b""),
                malformed("PUBLISH with DUP set and QoS 0")),
            // Lengths that lie about the fields.
            ("PUBACK short", vec![0x40, 0x01, 0x00], short.clone()),
            ("PUBACK long", vec![0x40, 0x03, 0x00, 0x01, 0x00], trailing.clone()),
            ("PUBCOMP empty", vec![0x70, 0x00], short.clone()),
            ("PINGREQ body", vec![0xc0, 0x01, 0x00], trailing.clone()),
            ("DISCONNECT body", vec![0xe0, 0x01, 0x00], trailing.clone()),
            ("PUBLISH empty", vec![0x30, 0x00], short.clone()),
            ("PUBLISH topic past end", vec![0x30, 0x03, 0x00, 0x05, b'a'], short.clone()),
            ("PUBLISH QoS 1 no pkid", publish(0x32, b"a", &[0]), short.clone()),
            ("CONNACK long", vec![0x20, 0x03, 0x00, 0x00, 0x00], trailing.clone()),
            ("UNSUBACK long", vec![0xb0, 0x03, 0x00, 0x01, 0x00], trailing.clone()),
            ("CONNECT empty", vec![0x10, 0x00], short.clone()),
            ("CONNECT no client id", v4(0x02, &[]), short.clone()),
            ("CONNECT no will message", v4(0x06, &[b"c", b"t"]), short.clone()),
            ("CONNECT no password", v4(0xc2, &[b"c", b"u"]), short.clone()),
            ("CONNECT trailing", v4(0x02, &[b"c", b"x"]), trailing),
            ("SUBSCRIBE no QoS", frame(0x82, &[0, 1, 0, 1, b'a']), short),
            // Packet identifiers (§2.3.1-1).
            ("PUBACK 0", vec![0x40, 0x02, 0x00, 0x00], pkid_zero.clone()),
            ("PUBREC 0", vec![0x50, 0x02, 0x00, 0x00], pkid_zero.clone()),
            ("PUBREL 0", vec![0x62, 0x02, 0x00, 0x00], pkid_zero.clone()),
            ("UNSUBACK 0", vec![0xb0, 0x02, 0x00, 0x00], pkid_zero.clone()),
            ("SUBACK 0", vec![0x90, 0x03, 0x00, 0x00, 0x00], pkid_zero.clone()),
            ("PUBLISH QoS 1 pkid 0", publish(0x32, b"a", &[0, 0]), pkid_zero.clone()),
            ("PUBLISH QoS 2 pkid 0", publish(0x34, b"a", &[0, 0]), pkid_zero.clone()),
            ("SUBSCRIBE 0", frame(0x82, &[0, 0, 0, 1, b'a', 0]), pkid_zero.clone()),
            ("UNSUBSCRIBE 0", frame(0xa2, &[0, 0, 0, 1, b'a']), pkid_zero),
            // SUBSCRIBE, UNSUBSCRIBE, SUBACK, CONNACK payloads.
            ("SUBSCRIBE no filter", frame(0x82, &[0, 1]), malformed("SUBSCRIBE without filter")),
            ("SUBSCRIBE QoS 3", frame(0x82, &[0, 1, 0, 1, b'a', 3]), sub_qos.clone()),
            ("SUBSCRIBE upper bits", frame(0x82, &[0, 1, 0, 1, b'a', 0x41]), sub_qos),
            ("UNSUBSCRIBE no filter", frame(0xa2, &[0, 1]),
                malformed("UNSUBSCRIBE without filter")),
            ("SUBACK no code", vec![0x90, 0x02, 0x00, 0x01],
                malformed("SUBACK without return code")),
            ("SUBACK code 3", vec![0x90, 0x03, 0x00, 0x01, 0x03],
                malformed("SUBACK reserved return code")),
            ("CONNACK flags", vec![0x20, 0x02, 0x02, 0x00],
                malformed("CONNACK reserved flags set")),
            ("CONNACK code 6", vec![0x20, 0x02, 0x00, 0x06],
                malformed("CONNACK reserved return code")),
            // CONNECT (§3.1.2).
            ("reserved flag", v4(0x03, &[b"c"]), malformed("CONNECT reserved flag set")),
            ("password only", v4(0x42, &[b"c", b"p"]),
                malformed("CONNECT password without user name")),
            ("will QoS 3", v4(0x1e, &[b"c", b"t", b"m"]), malformed("will QoS 3")),
            ("will QoS no will", v4(0x0a, &[b"c"]), no_will.clone()),
            ("will retain no will", v4(0x22, &[b"c"]), no_will),
            ("name MQTX", named(b"MQTX", 4), BadProtocolName),
            ("name mqtt", named(b"mqtt", 4), BadProtocolName),
            ("name empty", named(b"", 4), BadProtocolName),
            ("MQTT level 5", named(b"MQTT", 5), UnsupportedProtocolLevel(5)),
            ("MQTT level 3", named(b"MQTT", 3), UnsupportedProtocolLevel(3)),
            ("MQIsdp level 4", named(b"MQIsdp", 4), UnsupportedProtocolLevel(4)),
            // An MQTT 5 CONNECT has properties after the keep alive: refused
            // on the level, before its layout matters.
            ("MQTT 5 layout", frame(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0]),
                UnsupportedProtocolLevel(5)),
            // Strings (§1.5.3) and topic names (§4.7).
            ("topic C0 80", publish(0x30, &[b'a', 0xc0, 0x80], b""), InvalidUtf8),
            ("topic FF", publish(0x30, &[0xff], b""), InvalidUtf8),
            ("topic surrogate", publish(0x30, &[0xed, 0xa0, 0x80], b""), InvalidUtf8),
            ("topic NUL", publish(0x30, b"a\0b", b""), InvalidUtf8),
            ("topic empty", publish(0x30, b"", b"x"), InvalidTopic(TopicError::Empty)),
            ("topic +", publish(0x30, b"a/+", b""), InvalidTopic(TopicError::Wildcard)),
            ("topic #", publish(0x32, b"#", &[0, 1]), InvalidTopic(TopicError::Wildcard)),
            ("client id FF", v4(0x02, &[&[0xff]]), InvalidUtf8),
            ("client id NUL", v4(0x02, &[b"a\0"]), InvalidUtf8),
            ("user name NUL", v4(0x82, &[b"c", b"\0"]), InvalidUtf8),
            ("will topic C0 80", v4(0x06, &[b"c", &[0xc0, 0x80], b"m"]), InvalidUtf8),
            ("will topic +", v4(0x06, &[b"c", b"+", b"m"]), InvalidTopic(TopicError::Wildcard)),
            ("filter NUL", frame(0x82, &[0, 1, 0, 1, 0, 0]), InvalidUtf8),
            ("filter FF", frame(0xa2, &[0, 1, 0, 1, 0xff]), InvalidUtf8),
        ]
    }

    #[test]
    fn every_rule_has_its_error() {
        for (name, bytes, expected) in error_vectors() {
            assert_eq!(decode_slice(&bytes), Err(expected), "{name}: {bytes:02x?}");
            // Nothing mqttbytes accepts here may disagree with us.
            assert_eq!(oracle::check(&bytes, MAX), None, "{name}");
        }
    }

    /// Exhaustive in-crate, so a new variant fails to compile here until a
    /// vector reaches it.
    fn variant_index(error: &DecodeError) -> usize {
        match error {
            DecodeError::MalformedLength => 0,
            DecodeError::PacketTooLarge { .. } => 1,
            DecodeError::Malformed(_) => 2,
            DecodeError::InvalidUtf8 => 3,
            DecodeError::InvalidTopic(_) => 4,
            DecodeError::UnsupportedProtocolLevel(_) => 5,
            DecodeError::BadProtocolName => 6,
            DecodeError::UnexpectedPacket(_) => 7,
        }
    }

    #[test]
    fn every_error_variant_is_reached() {
        let mut reached = [false; 8];
        for (_, _, error) in error_vectors() {
            reached[variant_index(&error)] = true;
        }
        assert_eq!(reached, [true; 8]);
    }

    #[test]
    fn only_unsupported_level_earns_a_connack() {
        let level = DecodeError::UnsupportedProtocolLevel(5);
        assert_eq!(
            level.connack_code(),
            Some(ConnectReturnCode::UnacceptableProtocolVersion)
        );
        for (name, _, error) in error_vectors() {
            let expected = matches!(error, DecodeError::UnsupportedProtocolLevel(_));
            assert_eq!(error.connack_code().is_some(), expected, "{name}");
        }
    }

    // Property tests. Strings avoid U+0000 and topics the wildcards, so that
    // every generated packet is valid and must round-trip.

    fn arb_qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[^\\x00]{0,8}"
    }

    fn arb_topic() -> impl Strategy<Value = TopicName> {
        "[^\\x00+#]{1,8}".prop_map(|name| topic(&name))
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
    }

    fn arb_pkid() -> impl Strategy<Value = u16> {
        1..=u16::MAX
    }

    fn arb_publish() -> impl Strategy<Value = Publish> {
        (
            any::<bool>(),
            arb_qos(),
            any::<bool>(),
            arb_topic(),
            arb_pkid(),
            arb_bytes(),
        )
            .prop_map(|(dup, qos, retain, topic, pkid, payload)| {
                let at_most_once = qos == QoS::AtMostOnce;
                Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    pkid: if at_most_once { 0 } else { pkid },
                    payload,
                }
            })
    }

    fn arb_will() -> impl Strategy<Value = LastWill> {
        (arb_topic(), arb_bytes(), arb_qos(), any::<bool>()).prop_map(
            |(topic, payload, qos, retain)| LastWill {
                topic,
                payload,
                qos,
                retain,
            },
        )
    }

    fn arb_connect() -> impl Strategy<Value = Connect> {
        let credentials = (
            prop::option::of(arb_string()),
            prop::option::of(arb_bytes()),
        );
        let header = (
            prop::sample::select(vec![3u8, 4]),
            any::<bool>(),
            any::<u16>(),
        );
        (
            header,
            arb_string(),
            credentials,
            prop::option::of(arb_will()),
        )
            .prop_map(
                |(
                    (protocol_level, clean_session, keep_alive_s),
                    client_id,
                    (username, password),
                    will,
                )| {
                    // A password needs a user name (§3.1.2-22).
                    let password = password.filter(|_| username.is_some());
                    Connect {
                        protocol_level,
                        clean_session,
                        keep_alive_s,
                        client_id,
                        username,
                        password,
                        will,
                    }
                },
            )
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let suback_code = prop::sample::select(vec![0u8, 1, 2, SUBACK_FAILURE]);
        let return_code = (0u8..=5).prop_map(|v| ConnectReturnCode::from_u8(v).unwrap());
        let filters = prop::collection::vec((arb_string(), arb_qos()), 1..4);
        let unsubscribe_filters = prop::collection::vec(arb_string(), 1..4);
        prop_oneof![
            arb_connect().prop_map(|c| Packet::Connect(Box::new(c))),
            arb_publish().prop_map(Packet::Publish),
            arb_pkid().prop_map(Packet::PubAck),
            arb_pkid().prop_map(Packet::PubRec),
            arb_pkid().prop_map(Packet::PubRel),
            arb_pkid().prop_map(Packet::PubComp),
            (arb_pkid(), filters)
                .prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe { pkid, filters })),
            (arb_pkid(), unsubscribe_filters)
                .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters })),
            Just(Packet::PingReq),
            Just(Packet::Disconnect),
            (any::<bool>(), return_code).prop_map(|(session_present, code)| Packet::ConnAck {
                session_present,
                code
            }),
            (arb_pkid(), prop::collection::vec(suback_code, 1..4))
                .prop_map(|(pkid, codes)| Packet::SubAck { pkid, codes }),
            arb_pkid().prop_map(Packet::UnsubAck),
            Just(Packet::PingResp),
        ]
    }

    /// Every first byte that passes the fixed-header checks.
    fn valid_first_bytes() -> Vec<u8> {
        (0..=u8::MAX)
            .filter(|&b| check_first_byte(b).is_ok())
            .collect()
    }

    /// Inputs worth checking: raw bytes, well-framed random bodies, and
    /// valid packets with a few bytes changed or cut.
    fn arb_input() -> impl Strategy<Value = Vec<u8>> {
        let framed = (
            prop::sample::select(valid_first_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(byte1, body)| frame(byte1, &body));
        let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4);
        let mutated = (
            arb_packet(),
            edits,
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(packet, edits, cut, truncate)| {
                let mut bytes = encoded(&packet);
                for (index, value) in edits {
                    let i = index.index(bytes.len());
                    bytes[i] = value;
                }
                if truncate {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            });
        prop_oneof![prop::collection::vec(any::<u8>(), 0..64), framed, mutated]
    }

    /// Chops `bytes` into reads at the given cut points.
    fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]

        /// Never panics, decodes to what re-encodes identically, and agrees
        /// with mqttbytes (`oracle::check` asserts all of it).
        #[test]
        fn any_input_is_checked_against_the_oracle(input in arb_input(), max in 0usize..300) {
            let mut rest = &input[..];
            while let Some(consumed) = oracle::check(rest, max) {
                rest = &rest[consumed..];
            }
        }
    }

    proptest! {
        #[test]
        fn valid_packets_round_trip(packet in arb_packet()) {
            assert_round_trip(&packet);
        }

        #[test]
        fn split_reads_yield_the_same_packets(
            packets in prop::collection::vec(arb_packet(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let stream: Vec<u8> = packets.iter().flat_map(encoded).collect();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for chunk in chunks(&stream, &cuts) {
                buf.extend_from_slice(&chunk);
                while let Some(packet) = decode(&mut buf, MAX).unwrap() {
                    decoded.push(packet);
                }
            }
            prop_assert_eq!(decoded, packets);
            prop_assert!(buf.is_empty());
        }
    }
}
