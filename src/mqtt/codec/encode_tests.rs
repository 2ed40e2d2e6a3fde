//! Encoder tests: hot-path encoders against `Packet::encode`, byte vectors,
//! and mqttbytes writing the same bytes.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::mqtt::codec::test_support::*;

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
