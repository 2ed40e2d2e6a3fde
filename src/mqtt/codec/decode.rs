//! Decoding: frames one packet off the front of the read buffer and parses
//! its body, enforcing every rule listed in the module doc of `codec`.

use bytes::{Buf, Bytes, BytesMut};

use super::packet_type::*;
use super::*;
use crate::mqtt::topic;

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
pub(super) fn check_first_byte(byte1: u8) -> Result<(), DecodeError> {
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
        let filter = reader.filter()?;
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

fn read_unsubscribe(reader: &mut Reader) -> Result<Unsubscribe, DecodeError> {
    let pkid = reader.pkid()?;
    let mut filters = Vec::new();
    while reader.any_left() {
        filters.push(reader.filter()?);
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
        check_no_control_character(text.as_bytes())?;
        Ok(text.to_owned())
    }

    /// A topic filter of SUBSCRIBE or UNSUBSCRIBE. A malformed one is a
    /// protocol violation, not a refusal: SUBACK 0x80 is for filters the
    /// server does not grant (§4.8, [MQTT-4.7.1-2], [MQTT-4.7.1-3],
    /// [MQTT-4.7.3-1]). So is a malformed shared subscription
    /// (`topic::parse_share`), as in mosquitto.
    fn filter(&mut self) -> Result<String, DecodeError> {
        let filter = self.string()?;
        topic::validate_subscription(&filter).map_err(DecodeError::InvalidFilter)?;
        Ok(filter)
    }

    /// A topic name, validated once and kept as a slice of the frame.
    fn topic(&mut self) -> Result<TopicName, DecodeError> {
        let topic = TopicName::new(self.binary()?).map_err(topic_error)?;
        check_no_control_character(topic.as_bytes())?;
        Ok(topic)
    }
}

/// Refuses U+0001–U+001F and U+007F–U+009F in an MQTT string, as §1.5.3
/// lets a server do: such a string is more likely an attack or a bug than
/// a topic, client id or user name. `bytes` are valid UTF-8, checked
/// before: the first range and U+007F are single bytes, U+0080–U+009F are
/// `C2 80`–`C2 9F`, and in valid UTF-8 `C2` is always a lead byte.
fn check_no_control_character(bytes: &[u8]) -> Result<(), DecodeError> {
    let found = bytes.iter().enumerate().any(|(index, &byte)| match byte {
        0x01..=0x1f | 0x7f => true,
        0xc2 => bytes.get(index + 1).is_some_and(|&next| next <= 0x9f),
        _ => false,
    });
    if found {
        return Err(DecodeError::ControlCharacter);
    }
    Ok(())
}

/// Encoding problems are reported as such whatever the string; only the
/// topic-specific rules become `InvalidTopic`.
fn topic_error(error: TopicError) -> DecodeError {
    match error {
        TopicError::InvalidUtf8 | TopicError::NulChar => DecodeError::InvalidUtf8,
        other => DecodeError::InvalidTopic(other),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
