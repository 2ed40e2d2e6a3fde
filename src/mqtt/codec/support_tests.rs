//! Fixtures shared by the codec's tests: frame builders, one sample packet
//! of every kind, and the round-trip check.

use bytes::{BufMut, Bytes, BytesMut};

use super::encode::{put_binary, put_fixed_header};
use super::oracle;
use super::*;

/// Large enough for every vector; the size limit has its own tests.
pub(super) const MAX: usize = 1 << 24;

pub(super) fn topic(name: &str) -> TopicName {
    TopicName::from_string(name.to_owned()).expect("valid test topic")
}

pub(super) fn encoded(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    out.to_vec()
}

pub(super) fn decode_slice(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), MAX)
}

/// A frame with a correct Remaining Length around `body`.
pub(super) fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_fixed_header(&mut out, byte1, body.len());
    out.put_slice(body);
    out.to_vec()
}

/// An MQTT string or binary field: 2-byte length, then the bytes.
pub(super) fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_binary(&mut out, bytes);
    out.to_vec()
}

pub(super) fn publish_frame(byte1: u8, topic: &[u8], rest: &[u8]) -> Vec<u8> {
    frame(byte1, &[field(topic), rest.to_vec()].concat())
}

/// A CONNECT frame: protocol name, level, flags, keep alive 60 s, then
/// the payload fields given.
pub(super) fn connect_frame(name: &[u8], level: u8, flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = field(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    for bytes in payload {
        body.extend_from_slice(&field(bytes));
    }
    frame(0x10, &body)
}

/// One packet of every kind, with the fields that change the encoding.
pub(super) fn samples() -> Vec<Packet> {
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

pub(super) fn assert_round_trip(packet: &Packet) {
    let bytes = encoded(packet);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, MAX), Ok(Some(packet.clone())));
    assert!(buf.is_empty(), "{packet:?} left {buf:?}");
    assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()));
}
