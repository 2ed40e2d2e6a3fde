//! MQTT-SN 1.2 wire codec (sans-IO): one datagram in, one [`Message`] out,
//! and back.
//!
//! # Role
//!
//! The gateway's UDP shell hands every datagram to [`decode_frame`], which
//! takes off a forwarder's encapsulation (§5.5) and decodes the message
//! inside; the client machine answers with [`Message`]s the shell encodes
//! with [`Message::encode`] (wrapped again by [`encode_frame`] when they go
//! back through a forwarder).
//!
//! # Zero-copy
//!
//! A decoded message borrows the datagram: client ids, topic names and
//! payloads are slices of the receive buffer, so decoding allocates
//! nothing. The caller copies only what it keeps.
//!
//! # Strictness
//!
//! The length field must match the datagram exactly (§5.2.1): a datagram
//! carries one message. Every field must fit; a message whose fields end
//! before the length is refused, and so is one with bytes after its last
//! fixed field where the specification has no variable part. Flags are
//! checked against what each message may carry (§5.3.4): a reserved topic
//! id type, QoS -1 in a SUBSCRIBE or a will, or DUP on a QoS 0 or -1
//! PUBLISH are errors; bits a message does not use are kept, not judged.
//! What a field means (whether a topic id is registered, a client id is
//! acceptable) is the machine's call, not the codec's.

mod decode;
mod encode;

pub use decode::{decode, decode_frame};
pub use encode::encode_frame;

/// The largest message the gateway encodes or accepts: the three-octet
/// length form (§5.2.1) allows 65,535.
pub const MAX_MESSAGE: usize = 65_535;

/// The message types of §5.2.2.
pub mod msg_type {
    pub const ADVERTISE: u8 = 0x00;
    pub const SEARCHGW: u8 = 0x01;
    pub const GWINFO: u8 = 0x02;
    pub const CONNECT: u8 = 0x04;
    pub const CONNACK: u8 = 0x05;
    pub const WILLTOPICREQ: u8 = 0x06;
    pub const WILLTOPIC: u8 = 0x07;
    pub const WILLMSGREQ: u8 = 0x08;
    pub const WILLMSG: u8 = 0x09;
    pub const REGISTER: u8 = 0x0A;
    pub const REGACK: u8 = 0x0B;
    pub const PUBLISH: u8 = 0x0C;
    pub const PUBACK: u8 = 0x0D;
    pub const PUBCOMP: u8 = 0x0E;
    pub const PUBREC: u8 = 0x0F;
    pub const PUBREL: u8 = 0x10;
    pub const SUBSCRIBE: u8 = 0x12;
    pub const SUBACK: u8 = 0x13;
    pub const UNSUBSCRIBE: u8 = 0x14;
    pub const UNSUBACK: u8 = 0x15;
    pub const PINGREQ: u8 = 0x16;
    pub const PINGRESP: u8 = 0x17;
    pub const DISCONNECT: u8 = 0x18;
    pub const WILLTOPICUPD: u8 = 0x1A;
    pub const WILLTOPICRESP: u8 = 0x1B;
    pub const WILLMSGUPD: u8 = 0x1C;
    pub const WILLMSGRESP: u8 = 0x1D;
    pub const ENCAPSULATED: u8 = 0xFE;
}

/// The protocol id of a CONNECT (§5.3.8).
pub const PROTOCOL_ID: u8 = 0x01;

/// QoS of the flags field (§5.3.4): -1 is "no connection" (bits `11`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnQoS {
    MinusOne,
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// TopicIdType of the flags field (§5.3.4, bits 1-0); `11` is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicIdType {
    /// An id given by REGISTER/REGACK or SUBACK (`00`), or, in SUBSCRIBE
    /// and UNSUBSCRIBE, a topic name (§5.4.15).
    Normal,
    /// An id both sides know in advance (`01`).
    Predefined,
    /// A two-character topic name carried in the id field (`10`).
    Short,
}

/// The flags octet (§5.3.4), decoded. Which bits mean something depends on
/// the message; all are kept and written back as they are, so a message
/// round-trips bit for bit. Only a SUBSCRIBE's or UNSUBSCRIBE's topic id
/// type is written from its [`TopicRef`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub dup: bool,
    pub qos: SnQoS,
    pub retain: bool,
    pub will: bool,
    pub clean_session: bool,
    pub topic_id_type: TopicIdType,
}

impl Flags {
    pub const fn new(qos: SnQoS, topic_id_type: TopicIdType) -> Flags {
        Flags {
            dup: false,
            qos,
            retain: false,
            will: false,
            clean_session: false,
            topic_id_type,
        }
    }

    pub fn to_byte(self) -> u8 {
        let qos = match self.qos {
            SnQoS::AtMostOnce => 0b00,
            SnQoS::AtLeastOnce => 0b01,
            SnQoS::ExactlyOnce => 0b10,
            SnQoS::MinusOne => 0b11,
        };
        let tid = match self.topic_id_type {
            TopicIdType::Normal => 0b00,
            TopicIdType::Predefined => 0b01,
            TopicIdType::Short => 0b10,
        };
        (u8::from(self.dup) << 7)
            | (qos << 5)
            | (u8::from(self.retain) << 4)
            | (u8::from(self.will) << 3)
            | (u8::from(self.clean_session) << 2)
            | tid
    }

    pub fn from_byte(b: u8) -> Result<Flags, SnDecodeError> {
        let qos = match (b >> 5) & 0b11 {
            0b00 => SnQoS::AtMostOnce,
            0b01 => SnQoS::AtLeastOnce,
            0b10 => SnQoS::ExactlyOnce,
            _ => SnQoS::MinusOne,
        };
        let topic_id_type = match b & 0b11 {
            0b00 => TopicIdType::Normal,
            0b01 => TopicIdType::Predefined,
            0b10 => TopicIdType::Short,
            _ => return Err(SnDecodeError::BadFlags),
        };
        Ok(Flags {
            dup: b & 0x80 != 0,
            qos,
            retain: b & 0x10 != 0,
            will: b & 0x08 != 0,
            clean_session: b & 0x04 != 0,
            topic_id_type,
        })
    }
}

/// A topic as SUBSCRIBE and UNSUBSCRIBE carry it (§5.4.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRef<'a> {
    /// A topic name or filter (may hold wildcards), not yet validated.
    Name(&'a [u8]),
    Predefined(u16),
    /// Two characters.
    Short([u8; 2]),
}

/// Return codes (§5.3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnCode {
    Accepted,
    Congestion,
    InvalidTopicId,
    NotSupported,
    /// 0x04-0xFF are reserved; kept so that a client's ack still decodes.
    Reserved(u8),
}

impl ReturnCode {
    pub fn to_byte(self) -> u8 {
        match self {
            ReturnCode::Accepted => 0x00,
            ReturnCode::Congestion => 0x01,
            ReturnCode::InvalidTopicId => 0x02,
            ReturnCode::NotSupported => 0x03,
            ReturnCode::Reserved(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> ReturnCode {
        match b {
            0x00 => ReturnCode::Accepted,
            0x01 => ReturnCode::Congestion,
            0x02 => ReturnCode::InvalidTopicId,
            0x03 => ReturnCode::NotSupported,
            other => ReturnCode::Reserved(other),
        }
    }
}

/// One MQTT-SN message (§5.4), borrowing the datagram it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Advertise {
        gw_id: u8,
        duration_s: u16,
    },
    SearchGw {
        radius: u8,
    },
    /// `gw_add` is empty when a gateway sends it (§5.4.3).
    GwInfo {
        gw_id: u8,
        gw_add: &'a [u8],
    },
    Connect {
        flags: Flags,
        protocol_id: u8,
        duration_s: u16,
        client_id: &'a [u8],
    },
    ConnAck(ReturnCode),
    WillTopicReq,
    /// `None`: the empty WILLTOPIC, no will (§5.4.7).
    WillTopic(Option<(Flags, &'a [u8])>),
    WillMsgReq,
    WillMsg(&'a [u8]),
    Register {
        topic_id: u16,
        msg_id: u16,
        topic_name: &'a [u8],
    },
    RegAck {
        topic_id: u16,
        msg_id: u16,
        code: ReturnCode,
    },
    Publish {
        flags: Flags,
        /// The topic id, or a short name's two characters big-endian.
        topic_id: u16,
        msg_id: u16,
        data: &'a [u8],
    },
    PubAck {
        topic_id: u16,
        msg_id: u16,
        code: ReturnCode,
    },
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        flags: Flags,
        msg_id: u16,
        topic: TopicRef<'a>,
    },
    SubAck {
        flags: Flags,
        topic_id: u16,
        msg_id: u16,
        code: ReturnCode,
    },
    Unsubscribe {
        flags: Flags,
        msg_id: u16,
        topic: TopicRef<'a>,
    },
    UnsubAck(u16),
    /// With a client id when a sleeping client wakes (§6.14).
    PingReq(Option<&'a [u8]>),
    PingResp,
    /// With a duration when the client goes to sleep (§6.14).
    Disconnect(Option<u16>),
    /// `None`: the empty WILLTOPICUPD, delete the will (§5.4.22).
    WillTopicUpd(Option<(Flags, &'a [u8])>),
    WillTopicResp(ReturnCode),
    WillMsgUpd(&'a [u8]),
    WillMsgResp(ReturnCode),
}

/// A datagram, with the forwarder's wrapping if it came through one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The forwarder's Ctrl octet and the wireless node id (§5.5).
    pub forwarder: Option<(u8, &'a [u8])>,
    pub message: Message<'a>,
}

/// Why a datagram was not a message; each is a reason the gateway counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnDecodeError {
    #[error("datagram shorter than its header")]
    TooShort,
    #[error("length field does not match the datagram")]
    LengthMismatch,
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("flags not allowed in this message")]
    BadFlags,
    #[error("fields inconsistent with the message type")]
    Malformed,
}

impl SnDecodeError {
    /// The metric label of the reason.
    pub fn reason(self) -> &'static str {
        match self {
            SnDecodeError::TooShort => "too_short",
            SnDecodeError::LengthMismatch => "length_mismatch",
            SnDecodeError::UnknownType(_) => "unknown_type",
            SnDecodeError::BadFlags => "bad_flags",
            SnDecodeError::Malformed => "malformed",
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "property_tests.rs"]
mod property_tests;
