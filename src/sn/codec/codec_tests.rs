//! Byte vectors written from the MQTT-SN 1.2 specification's tables
//! (§5.2 header, §5.3.4 flags, §5.4 one table per message, §5.5
//! encapsulation), each checked both ways: the vector decodes to the
//! message and the message encodes to the vector. Then the error reasons
//! the gateway counts, one by one.

use super::msg_type as t;
use super::*;

/// `vector` decodes to `message`, alone and through `decode_frame`, and
/// `message` encodes to `vector`, appended after what `out` already holds.
#[track_caller]
fn both_ways(vector: &[u8], message: Message<'_>) {
    assert_eq!(
        decode(vector),
        Ok(message.clone()),
        "decoding {vector:02x?}"
    );
    let frame = Frame {
        forwarder: None,
        message: message.clone(),
    };
    assert_eq!(decode_frame(vector), Ok(frame));
    let mut out = vec![0xAA];
    assert!(message.encode(&mut out), "encoding {message:?}");
    assert_eq!(out[0], 0xAA, "what was in the buffer stays");
    assert_eq!(&out[1..], vector, "encoding {message:?}");
}

/// `vector` is refused with `error`, alone and through `decode_frame`.
#[track_caller]
fn refused(vector: &[u8], error: SnDecodeError) {
    assert_eq!(decode(vector), Err(error), "decoding {vector:02x?}");
    assert_eq!(
        decode_frame(vector),
        Err(error),
        "decoding {vector:02x?} as a frame"
    );
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn flags(qos: SnQoS, topic_id_type: TopicIdType) -> Flags {
    Flags::new(qos, topic_id_type)
}

const QOS0: Flags = Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal);

#[test]
fn a_publish_round_trips_through_the_short_length_form() {
    let msg = Message::Publish {
        flags: Flags::new(SnQoS::AtLeastOnce, TopicIdType::Normal),
        topic_id: 1,
        msg_id: 2,
        data: b"hi",
    };
    let mut out = Vec::new();
    assert!(msg.encode(&mut out));
    assert_eq!(out, [9, 0x0C, 0x20, 0, 1, 0, 2, b'h', b'i']);
    assert_eq!(decode(&out), Ok(msg));
}

// ---- §5.4: every message type, both ways ----

/// MQTT-SN 1.2 §5.4.1 ADVERTISE: Length, MsgType, GwId, Duration (2).
#[test]
fn advertise_5_4_1() {
    both_ways(
        &[0x05, 0x00, 0x07, 0x03, 0x84],
        Message::Advertise {
            gw_id: 7,
            duration_s: 900,
        },
    );
}

/// MQTT-SN 1.2 §5.4.2 SEARCHGW: Length, MsgType, Radius.
#[test]
fn searchgw_5_4_2() {
    both_ways(&[0x03, 0x01, 0x01], Message::SearchGw { radius: 1 });
}

/// MQTT-SN 1.2 §5.4.3 GWINFO: GwId, and GwAdd only when a client sends it.
#[test]
fn gwinfo_5_4_3() {
    both_ways(
        &[0x03, 0x02, 0x01],
        Message::GwInfo {
            gw_id: 1,
            gw_add: b"",
        },
    );
    both_ways(
        &[0x07, 0x02, 0x01, 192, 168, 0, 9],
        Message::GwInfo {
            gw_id: 1,
            gw_add: &[192, 168, 0, 9],
        },
    );
}

/// MQTT-SN 1.2 §5.4.4 CONNECT: Flags (Will, CleanSession), ProtocolId
/// 0x01 (§5.3.8), Duration (keepalive), ClientId.
#[test]
fn connect_5_4_4() {
    let mut clean = QOS0;
    clean.clean_session = true;
    both_ways(
        &cat(&[&[0x0D, 0x04, 0x04, 0x01, 0x00, 0x3C], b"sensor1"]),
        Message::Connect {
            flags: clean,
            protocol_id: PROTOCOL_ID,
            duration_s: 60,
            client_id: b"sensor1",
        },
    );
    let mut will = clean;
    will.will = true;
    both_ways(
        &cat(&[&[0x08, 0x04, 0x0C, 0x01, 0x01, 0x2C], b"id"]),
        Message::Connect {
            flags: will,
            protocol_id: PROTOCOL_ID,
            duration_s: 300,
            client_id: b"id",
        },
    );
}

/// MQTT-SN 1.2 §5.4.5 CONNACK and §5.3.10 return codes: 0x00 accepted,
/// 0x01 congestion, 0x02 invalid topic id, 0x03 not supported, the rest
/// reserved.
#[test]
fn connack_5_4_5_with_every_return_code() {
    both_ways(&[0x03, 0x05, 0x00], Message::ConnAck(ReturnCode::Accepted));
    both_ways(
        &[0x03, 0x05, 0x01],
        Message::ConnAck(ReturnCode::Congestion),
    );
    both_ways(
        &[0x03, 0x05, 0x02],
        Message::ConnAck(ReturnCode::InvalidTopicId),
    );
    both_ways(
        &[0x03, 0x05, 0x03],
        Message::ConnAck(ReturnCode::NotSupported),
    );
    for reserved in 0x04..=0xFF {
        both_ways(
            &[0x03, 0x05, reserved],
            Message::ConnAck(ReturnCode::Reserved(reserved)),
        );
    }
}

/// MQTT-SN 1.2 §5.4.6 WILLTOPICREQ and §5.4.8 WILLMSGREQ: header only.
#[test]
fn willtopicreq_5_4_6_and_willmsgreq_5_4_8() {
    both_ways(&[0x02, 0x06], Message::WillTopicReq);
    both_ways(&[0x02, 0x08], Message::WillMsgReq);
}

/// MQTT-SN 1.2 §5.4.7 WILLTOPIC: Flags (QoS, Retain), WillTopic; the
/// empty WILLTOPIC is exactly 2 octets.
#[test]
fn willtopic_5_4_7() {
    let mut will = flags(SnQoS::AtLeastOnce, TopicIdType::Normal);
    will.retain = true;
    both_ways(
        &cat(&[&[0x09, 0x07, 0x30], b"a/will"]),
        Message::WillTopic(Some((will, b"a/will"))),
    );
    both_ways(
        &cat(&[&[0x04, 0x07, 0x40], b"w"]),
        Message::WillTopic(Some((flags(SnQoS::ExactlyOnce, TopicIdType::Normal), b"w"))),
    );
    both_ways(&[0x02, 0x07], Message::WillTopic(None));
}

/// MQTT-SN 1.2 §5.4.9 WILLMSG: the will message, any bytes.
#[test]
fn willmsg_5_4_9() {
    both_ways(&cat(&[&[0x06, 0x09], b"gone"]), Message::WillMsg(b"gone"));
    both_ways(&[0x02, 0x09], Message::WillMsg(b""));
}

/// MQTT-SN 1.2 §5.4.10 REGISTER: TopicId (0x0000 from a client), MsgId,
/// TopicName.
#[test]
fn register_5_4_10() {
    both_ways(
        &cat(&[&[0x0B, 0x0A, 0x00, 0x00, 0x00, 0x01], b"a/b/c"]),
        Message::Register {
            topic_id: 0,
            msg_id: 1,
            topic_name: b"a/b/c",
        },
    );
    both_ways(
        &cat(&[&[0x09, 0x0A, 0x01, 0x02, 0xBE, 0xEF], b"x/y"]),
        Message::Register {
            topic_id: 0x0102,
            msg_id: 0xBEEF,
            topic_name: b"x/y",
        },
    );
}

/// MQTT-SN 1.2 §5.4.11 REGACK: TopicId, MsgId, ReturnCode.
#[test]
fn regack_5_4_11() {
    both_ways(
        &[0x07, 0x0B, 0x00, 0x05, 0x00, 0x01, 0x00],
        Message::RegAck {
            topic_id: 5,
            msg_id: 1,
            code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x07, 0x0B, 0x00, 0x00, 0x12, 0x34, 0x02],
        Message::RegAck {
            topic_id: 0,
            msg_id: 0x1234,
            code: ReturnCode::InvalidTopicId,
        },
    );
}

/// MQTT-SN 1.2 §5.4.12 PUBLISH: Flags, TopicId, MsgId, Data.
#[test]
fn publish_5_4_12() {
    both_ways(
        &cat(&[&[0x0C, 0x0C, 0x00, 0x00, 0x05, 0x00, 0x00], b"22.5C"]),
        Message::Publish {
            flags: QOS0,
            topic_id: 5,
            msg_id: 0,
            data: b"22.5C",
        },
    );
    // QoS 2, DUP, retained, to predefined id 0x0101.
    let mut dup = flags(SnQoS::ExactlyOnce, TopicIdType::Predefined);
    dup.dup = true;
    dup.retain = true;
    both_ways(
        &[0x08, 0x0C, 0xD1, 0x01, 0x01, 0xAB, 0xCD, 0x2A],
        Message::Publish {
            flags: dup,
            topic_id: 0x0101,
            msg_id: 0xABCD,
            data: &[0x2A],
        },
    );
    // QoS -1 to the short name "tt": the name in the TopicId field.
    both_ways(
        &cat(&[&[0x09, 0x0C, 0x62, b't', b't', 0x00, 0x00], b"on"]),
        Message::Publish {
            flags: flags(SnQoS::MinusOne, TopicIdType::Short),
            topic_id: u16::from_be_bytes(*b"tt"),
            msg_id: 0,
            data: b"on",
        },
    );
    // Empty data.
    both_ways(
        &[0x07, 0x0C, 0x20, 0x00, 0x01, 0x00, 0x09],
        Message::Publish {
            flags: flags(SnQoS::AtLeastOnce, TopicIdType::Normal),
            topic_id: 1,
            msg_id: 9,
            data: b"",
        },
    );
}

/// MQTT-SN 1.2 §5.4.13 PUBACK: TopicId, MsgId, ReturnCode.
#[test]
fn puback_5_4_13() {
    both_ways(
        &[0x07, 0x0D, 0x00, 0x05, 0x00, 0x09, 0x00],
        Message::PubAck {
            topic_id: 5,
            msg_id: 9,
            code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x07, 0x0D, 0x00, 0x63, 0x00, 0x0A, 0x02],
        Message::PubAck {
            topic_id: 99,
            msg_id: 10,
            code: ReturnCode::InvalidTopicId,
        },
    );
    both_ways(
        &[0x07, 0x0D, 0x00, 0x01, 0x00, 0x0B, 0x01],
        Message::PubAck {
            topic_id: 1,
            msg_id: 11,
            code: ReturnCode::Congestion,
        },
    );
}

/// MQTT-SN 1.2 §5.4.14 PUBREC, PUBREL, PUBCOMP: MsgId only.
#[test]
fn pubrec_pubrel_pubcomp_5_4_14() {
    both_ways(&[0x04, 0x0F, 0x12, 0x34], Message::PubRec(0x1234));
    both_ways(&[0x04, 0x10, 0x12, 0x34], Message::PubRel(0x1234));
    both_ways(&[0x04, 0x0E, 0x12, 0x34], Message::PubComp(0x1234));
}

/// MQTT-SN 1.2 §5.4.15 SUBSCRIBE: Flags (DUP, QoS, TopicIdType), MsgId,
/// then a topic name (0b00), a predefined id (0b01) or a short name (0b10).
#[test]
fn subscribe_5_4_15_by_name_predefined_id_and_short_name() {
    both_ways(
        &cat(&[&[0x0A, 0x12, 0x20, 0x00, 0x01], b"a/+/#"]),
        Message::Subscribe {
            flags: flags(SnQoS::AtLeastOnce, TopicIdType::Normal),
            msg_id: 1,
            topic: TopicRef::Name(b"a/+/#"),
        },
    );
    both_ways(
        &[0x07, 0x12, 0x41, 0x00, 0x02, 0x00, 0x01],
        Message::Subscribe {
            flags: flags(SnQoS::ExactlyOnce, TopicIdType::Predefined),
            msg_id: 2,
            topic: TopicRef::Predefined(1),
        },
    );
    let mut dup = flags(SnQoS::AtMostOnce, TopicIdType::Short);
    dup.dup = true;
    both_ways(
        &[0x07, 0x12, 0x82, 0x00, 0x03, b't', b't'],
        Message::Subscribe {
            flags: dup,
            msg_id: 3,
            topic: TopicRef::Short(*b"tt"),
        },
    );
}

/// MQTT-SN 1.2 §5.4.16 SUBACK: Flags (granted QoS), TopicId, MsgId,
/// ReturnCode.
#[test]
fn suback_5_4_16() {
    both_ways(
        &[0x08, 0x13, 0x20, 0x00, 0x05, 0x00, 0x01, 0x00],
        Message::SubAck {
            flags: flags(SnQoS::AtLeastOnce, TopicIdType::Normal),
            topic_id: 5,
            msg_id: 1,
            code: ReturnCode::Accepted,
        },
    );
    both_ways(
        &[0x08, 0x13, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03],
        Message::SubAck {
            flags: QOS0,
            topic_id: 0,
            msg_id: 2,
            code: ReturnCode::NotSupported,
        },
    );
}

/// MQTT-SN 1.2 §5.4.17 UNSUBSCRIBE: as SUBSCRIBE, QoS not used.
#[test]
fn unsubscribe_5_4_17() {
    both_ways(
        &cat(&[&[0x08, 0x14, 0x00, 0x00, 0x04], b"a/#"]),
        Message::Unsubscribe {
            flags: QOS0,
            msg_id: 4,
            topic: TopicRef::Name(b"a/#"),
        },
    );
    both_ways(
        &[0x07, 0x14, 0x01, 0x00, 0x05, 0x00, 0x02],
        Message::Unsubscribe {
            flags: flags(SnQoS::AtMostOnce, TopicIdType::Predefined),
            msg_id: 5,
            topic: TopicRef::Predefined(2),
        },
    );
    both_ways(
        &[0x07, 0x14, 0x02, 0x00, 0x06, b'a', b'b'],
        Message::Unsubscribe {
            flags: flags(SnQoS::AtMostOnce, TopicIdType::Short),
            msg_id: 6,
            topic: TopicRef::Short(*b"ab"),
        },
    );
}

/// MQTT-SN 1.2 §5.4.17: the QoS bits of an UNSUBSCRIBE are "not used",
/// so even the `11` that means -1 elsewhere does not refuse it.
#[test]
fn unsubscribe_5_4_17_ignores_its_qos_bits() {
    both_ways(
        &[0x07, 0x14, 0x61, 0x00, 0x05, 0x00, 0x02],
        Message::Unsubscribe {
            flags: flags(SnQoS::MinusOne, TopicIdType::Predefined),
            msg_id: 5,
            topic: TopicRef::Predefined(2),
        },
    );
}

/// MQTT-SN 1.2 §5.4.18 UNSUBACK: MsgId.
#[test]
fn unsuback_5_4_18() {
    both_ways(&[0x04, 0x15, 0x00, 0x04], Message::UnsubAck(4));
}

/// MQTT-SN 1.2 §5.4.19 PINGREQ: the ClientId only when a sleeping client
/// wakes (§6.14); §5.4.20 PINGRESP: header only.
#[test]
fn pingreq_5_4_19_and_pingresp_5_4_20() {
    both_ways(&[0x02, 0x16], Message::PingReq(None));
    both_ways(
        &cat(&[&[0x09, 0x16], b"sensor1"]),
        Message::PingReq(Some(b"sensor1")),
    );
    both_ways(&[0x02, 0x17], Message::PingResp);
}

/// MQTT-SN 1.2 §5.4.21 DISCONNECT: the Duration only when the client goes
/// to sleep.
#[test]
fn disconnect_5_4_21() {
    both_ways(&[0x02, 0x18], Message::Disconnect(None));
    both_ways(&[0x04, 0x18, 0x0E, 0x10], Message::Disconnect(Some(3600)));
}

/// MQTT-SN 1.2 §5.4.22 WILLTOPICUPD: as WILLTOPIC; the empty one (2
/// octets) deletes the will.
#[test]
fn willtopicupd_5_4_22() {
    let mut will = flags(SnQoS::AtMostOnce, TopicIdType::Normal);
    will.retain = true;
    both_ways(
        &cat(&[&[0x06, 0x1A, 0x10], b"a/b"]),
        Message::WillTopicUpd(Some((will, b"a/b"))),
    );
    both_ways(&[0x02, 0x1A], Message::WillTopicUpd(None));
}

/// MQTT-SN 1.2 §5.4.23 WILLMSGUPD: the new will message.
#[test]
fn willmsgupd_5_4_23() {
    both_ways(&cat(&[&[0x05, 0x1C], b"bye"]), Message::WillMsgUpd(b"bye"));
}

/// MQTT-SN 1.2 §5.4.24 WILLTOPICRESP and §5.4.25 WILLMSGRESP: ReturnCode.
#[test]
fn willtopicresp_5_4_24_and_willmsgresp_5_4_25() {
    both_ways(
        &[0x03, 0x1B, 0x00],
        Message::WillTopicResp(ReturnCode::Accepted),
    );
    both_ways(
        &[0x03, 0x1B, 0x03],
        Message::WillTopicResp(ReturnCode::NotSupported),
    );
    both_ways(
        &[0x03, 0x1D, 0x00],
        Message::WillMsgResp(ReturnCode::Accepted),
    );
    both_ways(
        &[0x03, 0x1D, 0x01],
        Message::WillMsgResp(ReturnCode::Congestion),
    );
}

/// MQTT-SN 1.2 §5.2.2: every message type of the table has its octet.
#[test]
fn message_types_5_2_2() {
    let wire = [
        (t::ADVERTISE, 0x00),
        (t::SEARCHGW, 0x01),
        (t::GWINFO, 0x02),
        (t::CONNECT, 0x04),
        (t::CONNACK, 0x05),
        (t::WILLTOPICREQ, 0x06),
        (t::WILLTOPIC, 0x07),
        (t::WILLMSGREQ, 0x08),
        (t::WILLMSG, 0x09),
        (t::REGISTER, 0x0A),
        (t::REGACK, 0x0B),
        (t::PUBLISH, 0x0C),
        (t::PUBACK, 0x0D),
        (t::PUBCOMP, 0x0E),
        (t::PUBREC, 0x0F),
        (t::PUBREL, 0x10),
        (t::SUBSCRIBE, 0x12),
        (t::SUBACK, 0x13),
        (t::UNSUBSCRIBE, 0x14),
        (t::UNSUBACK, 0x15),
        (t::PINGREQ, 0x16),
        (t::PINGRESP, 0x17),
        (t::DISCONNECT, 0x18),
        (t::WILLTOPICUPD, 0x1A),
        (t::WILLTOPICRESP, 0x1B),
        (t::WILLMSGUPD, 0x1C),
        (t::WILLMSGRESP, 0x1D),
        (t::ENCAPSULATED, 0xFE),
    ];
    for (constant, octet) in wire {
        assert_eq!(constant, octet);
    }
    assert_eq!(PROTOCOL_ID, 0x01);
}

// ---- §5.2.1: the length field ----

/// MQTT-SN 1.2 §5.2.1: from 256 octets on, the length is `0x01` and two
/// octets, most significant first. A PUBLISH of 300 octets: 3 + 1 + 5 +
/// 291 of data.
#[test]
fn three_octet_length_5_2_1_publish_of_300() {
    let data = vec![0x5A; 291];
    let vector = cat(&[
        &[0x01, 0x01, 0x2C, 0x0C, 0x20, 0x00, 0x07, 0x00, 0x08],
        &data,
    ]);
    assert_eq!(vector.len(), 300);
    both_ways(
        &vector,
        Message::Publish {
            flags: flags(SnQoS::AtLeastOnce, TopicIdType::Normal),
            topic_id: 7,
            msg_id: 8,
            data: &data,
        },
    );
}

/// MQTT-SN 1.2 §5.2.1: 255 octets is the longest one-octet length; one
/// more octet of data needs the three-octet form (258 octets then).
#[test]
fn length_form_boundary_5_2_1() {
    let data = vec![1; 249];
    let msg = |n| Message::Publish {
        flags: QOS0,
        topic_id: 1,
        msg_id: 0,
        data: &data[..n],
    };
    let short = cat(&[&[0xFF, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00], &data[..248]]);
    both_ways(&short, msg(248));
    let long = cat(&[
        &[0x01, 0x01, 0x02, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00],
        &data,
    ]);
    assert_eq!(long.len(), 258);
    both_ways(&long, msg(249));
}

/// MQTT-SN 1.2 §5.2.1: shorter messages "may use" the one-octet form, so
/// the three-octet form is accepted for them too; the encoder writes the
/// short form.
#[test]
fn three_octet_form_of_a_short_message_5_2_1() {
    assert_eq!(decode(&[0x01, 0x00, 0x04, 0x17]), Ok(Message::PingResp));
    assert_eq!(
        decode(&[0x01, 0x00, 0x06, 0x18, 0x00, 0x3C]),
        Ok(Message::Disconnect(Some(60)))
    );
    let mut out = Vec::new();
    assert!(Message::PingResp.encode(&mut out));
    assert_eq!(out, [0x02, 0x17]);
}

/// MQTT-SN 1.2 §5.2.1: 65,535 octets is the most the length can say;
/// longer is not encoded, and nothing is appended.
#[test]
fn longest_message_5_2_1() {
    let data = vec![7; MAX_MESSAGE - 9];
    let msg = Message::Publish {
        flags: QOS0,
        topic_id: 1,
        msg_id: 0,
        data: &data,
    };
    let mut out = Vec::new();
    assert!(msg.encode(&mut out));
    assert_eq!(out.len(), MAX_MESSAGE);
    assert_eq!(out[..3], [0x01, 0xFF, 0xFF]);
    assert_eq!(decode(&out), Ok(msg));

    let data = vec![7; MAX_MESSAGE - 8];
    let msg = Message::Publish {
        flags: QOS0,
        topic_id: 1,
        msg_id: 0,
        data: &data,
    };
    let mut out = vec![0xAA];
    assert!(!msg.encode(&mut out));
    assert_eq!(out, [0xAA]);
    assert!(!encode_frame(Some((0, b"n")), &msg, &mut out));
    assert_eq!(out, [0xAA]);
}

// ---- §5.3.4: flags, bit by bit ----

/// MQTT-SN 1.2 §5.3.4: DUP bit 7, QoS bits 6-5, Retain bit 4, Will bit 3,
/// CleanSession bit 2, TopicIdType bits 1-0; `11` of TopicIdType is
/// reserved.
#[test]
fn flags_bit_by_bit_5_3_4() {
    let f = |b| Flags::from_byte(b).unwrap();
    assert_eq!(f(0x00), QOS0);
    assert!(f(0x80).dup);
    assert_eq!(f(0x00).qos, SnQoS::AtMostOnce);
    assert_eq!(f(0x20).qos, SnQoS::AtLeastOnce);
    assert_eq!(f(0x40).qos, SnQoS::ExactlyOnce);
    assert_eq!(f(0x60).qos, SnQoS::MinusOne);
    assert!(f(0x10).retain);
    assert!(f(0x08).will);
    assert!(f(0x04).clean_session);
    assert_eq!(f(0x00).topic_id_type, TopicIdType::Normal);
    assert_eq!(f(0x01).topic_id_type, TopicIdType::Predefined);
    assert_eq!(f(0x02).topic_id_type, TopicIdType::Short);
    assert_eq!(Flags::from_byte(0x03), Err(SnDecodeError::BadFlags));
    // Each bit alone sets only its own field.
    for bit in [0x80, 0x10, 0x08, 0x04] {
        let one = f(bit);
        let set = [one.dup, one.retain, one.will, one.clean_session];
        assert_eq!(set.iter().filter(|b| **b).count(), 1, "{bit:#04x}");
        assert_eq!(
            (one.qos, one.topic_id_type),
            (SnQoS::AtMostOnce, TopicIdType::Normal)
        );
    }
    // Every octet: refused exactly when its type is reserved, and written
    // back bit for bit otherwise.
    for b in 0..=u8::MAX {
        match Flags::from_byte(b) {
            Ok(flags) => assert_eq!(flags.to_byte(), b),
            Err(e) => assert_eq!((b & 0b11, e), (0b11, SnDecodeError::BadFlags)),
        }
    }
}

/// MQTT-SN 1.2 §5.3.4 through PUBLISH (§5.4.12): every QoS, retain, DUP and
/// each topic id type as the vector's flags octet.
#[test]
fn publish_flags_5_3_4() {
    let cases: [(u8, Flags); 9] = [
        (0x00, QOS0),
        (0x20, flags(SnQoS::AtLeastOnce, TopicIdType::Normal)),
        (0x40, flags(SnQoS::ExactlyOnce, TopicIdType::Normal)),
        (0x60, flags(SnQoS::MinusOne, TopicIdType::Normal)),
        (
            0x10,
            Flags {
                retain: true,
                ..QOS0
            },
        ),
        (
            0xA0,
            Flags {
                dup: true,
                ..flags(SnQoS::AtLeastOnce, TopicIdType::Normal)
            },
        ),
        (
            0xC0,
            Flags {
                dup: true,
                ..flags(SnQoS::ExactlyOnce, TopicIdType::Normal)
            },
        ),
        (0x01, flags(SnQoS::AtMostOnce, TopicIdType::Predefined)),
        (0x02, flags(SnQoS::AtMostOnce, TopicIdType::Short)),
    ];
    for (octet, flags) in cases {
        both_ways(
            &[0x07, 0x0C, octet, 0x00, 0x01, 0x00, 0x02],
            Message::Publish {
                flags,
                topic_id: 1,
                msg_id: 2,
                data: b"",
            },
        );
    }
}

/// MQTT-SN 1.2 §5.3.4 through CONNECT (§5.4.4): Will and CleanSession.
#[test]
fn connect_flags_5_3_4() {
    for (octet, will, clean_session) in [
        (0x00, false, false),
        (0x04, false, true),
        (0x08, true, false),
        (0x0C, true, true),
    ] {
        both_ways(
            &[0x07, 0x04, octet, 0x01, 0x00, 0x0A, b'c'],
            Message::Connect {
                flags: Flags {
                    will,
                    clean_session,
                    ..QOS0
                },
                protocol_id: PROTOCOL_ID,
                duration_s: 10,
                client_id: b"c",
            },
        );
    }
}

/// MQTT-SN 1.2 §5.3.4: TopicIdType `11` is reserved, in every message
/// with a flags octet.
#[test]
fn reserved_topic_id_type_is_bad_flags_5_3_4() {
    for vector in [
        &[0x07, 0x0C, 0x03, 0x00, 0x01, 0x00, 0x00][..],
        &[0x07, 0x12, 0x23, 0x00, 0x01, 0x00, 0x01],
        &[0x07, 0x14, 0x03, 0x00, 0x01, 0x00, 0x01],
        &[0x07, 0x04, 0x07, 0x01, 0x00, 0x0A, b'c'],
        &[0x04, 0x07, 0x03, b'w'],
        &[0x04, 0x1A, 0x03, b'w'],
        &[0x08, 0x13, 0x23, 0x00, 0x05, 0x00, 0x01, 0x00],
    ] {
        refused(vector, SnDecodeError::BadFlags);
    }
}

/// MQTT-SN 1.2 §5.3.4: DUP is for a retransmission, and a QoS 0 or -1
/// PUBLISH is never retransmitted.
#[test]
fn dup_on_qos_0_or_minus_1_publish_is_bad_flags_5_3_4() {
    refused(
        &[0x07, 0x0C, 0x80, 0x00, 0x01, 0x00, 0x00],
        SnDecodeError::BadFlags,
    );
    refused(
        &[0x07, 0x0C, 0xE2, b'a', b'b', 0x00, 0x00],
        SnDecodeError::BadFlags,
    );
}

/// MQTT-SN 1.2 §5.3.4: QoS -1 is "only relevant within PUBLISH messages
/// sent by a client": a SUBSCRIBE or a will asking for it is refused.
#[test]
fn qos_minus_1_outside_publish_is_bad_flags_5_3_4() {
    refused(
        &cat(&[&[0x06, 0x12, 0x60, 0x00, 0x01], b"a"]),
        SnDecodeError::BadFlags,
    );
    refused(
        &[0x07, 0x12, 0x62, 0x00, 0x01, b'a', b'b'],
        SnDecodeError::BadFlags,
    );
    refused(&[0x04, 0x07, 0x60, b'w'], SnDecodeError::BadFlags);
    refused(&[0x04, 0x1A, 0x70, b'w'], SnDecodeError::BadFlags);
}

/// The encoder writes the TopicIdType of a SUBSCRIBE or UNSUBSCRIBE from
/// the topic it carries (§5.4.15, §5.4.17), so that the bytes always say
/// what follows them.
#[test]
fn subscribe_topic_id_type_follows_the_topic_5_4_15() {
    let mut out = Vec::new();
    let msg = Message::Subscribe {
        flags: QOS0,
        msg_id: 1,
        topic: TopicRef::Predefined(0x6162),
    };
    assert!(msg.encode(&mut out));
    assert_eq!(out, [0x07, 0x12, 0x01, 0x00, 0x01, 0x61, 0x62]);
    out.clear();
    let msg = Message::Unsubscribe {
        flags: flags(SnQoS::AtMostOnce, TopicIdType::Predefined),
        msg_id: 1,
        topic: TopicRef::Short(*b"ab"),
    };
    assert!(msg.encode(&mut out));
    assert_eq!(out, [0x07, 0x14, 0x02, 0x00, 0x01, 0x61, 0x62]);
    out.clear();
    let msg = Message::Subscribe {
        flags: flags(SnQoS::AtLeastOnce, TopicIdType::Short),
        msg_id: 1,
        topic: TopicRef::Name(b"ab"),
    };
    assert!(msg.encode(&mut out));
    assert_eq!(out, [0x07, 0x12, 0x20, 0x00, 0x01, 0x61, 0x62]);
}

// ---- §5.5: forwarder encapsulation ----

/// MQTT-SN 1.2 §5.5: Length (up to the end of the node id), 0xFE, Ctrl,
/// Wireless Node Id, then the message, unchanged.
#[test]
fn encapsulated_connect_and_answer_5_5() {
    let vector = cat(&[
        &[0x05, 0xFE, 0x00, 0x12, 0x34],
        &[0x0D, 0x04, 0x04, 0x01, 0x00, 0x3C],
        b"sensor1",
    ]);
    let frame = decode_frame(&vector).unwrap();
    assert_eq!(frame.forwarder, Some((0x00, &[0x12, 0x34][..])));
    assert_eq!(
        frame.message,
        Message::Connect {
            flags: Flags {
                clean_session: true,
                ..QOS0
            },
            protocol_id: PROTOCOL_ID,
            duration_s: 60,
            client_id: b"sensor1",
        }
    );
    let mut out = Vec::new();
    assert!(encode_frame(frame.forwarder, &frame.message, &mut out));
    assert_eq!(out, vector);

    // The answer goes back through the forwarder with the same node id;
    // Ctrl bits 1-0 carry a broadcast radius towards the forwarder.
    out.clear();
    let node = [0x12, 0x34];
    assert!(encode_frame(
        Some((0x01, &node)),
        &Message::ConnAck(ReturnCode::Accepted),
        &mut out
    ));
    assert_eq!(out, [0x05, 0xFE, 0x01, 0x12, 0x34, 0x03, 0x05, 0x00]);
    assert_eq!(
        decode_frame(&out),
        Ok(Frame {
            forwarder: Some((0x01, &node[..])),
            message: Message::ConnAck(ReturnCode::Accepted),
        })
    );
}

/// MQTT-SN 1.2 §5.5 with §5.2.1: the encapsulation's length is one octet,
/// the message inside may use three.
#[test]
fn encapsulated_three_octet_message_5_5() {
    let data = vec![0x33; 291];
    let message = Message::Publish {
        flags: QOS0,
        topic_id: 3,
        msg_id: 0,
        data: &data,
    };
    let vector = cat(&[
        &[0x04, 0xFE, 0x00, 0x2A],
        &[0x01, 0x01, 0x2C, 0x0C, 0x00, 0x00, 0x03, 0x00, 0x00],
        &data,
    ]);
    let frame = Frame {
        forwarder: Some((0x00, &[0x2A][..])),
        message,
    };
    assert_eq!(decode_frame(&vector), Ok(frame.clone()));
    let mut out = Vec::new();
    assert!(encode_frame(frame.forwarder, &frame.message, &mut out));
    assert_eq!(out, vector);
}

/// MQTT-SN 1.2 §5.5: without a forwarder, `encode_frame` is `encode`; a
/// node id longer than the one-octet length can say is not encoded.
#[test]
fn encode_frame_without_forwarder_and_with_too_long_a_node_id_5_5() {
    let mut out = Vec::new();
    assert!(encode_frame(None, &Message::PingResp, &mut out));
    assert_eq!(out, [0x02, 0x17]);

    let node = vec![9; 252];
    out.clear();
    assert!(encode_frame(Some((0, &node)), &Message::PingResp, &mut out));
    assert_eq!(out[..3], [0xFF, 0xFE, 0x00]);
    assert_eq!(out[255..], [0x02, 0x17]);
    assert_eq!(decode_frame(&out).unwrap().forwarder, Some((0, &node[..])));

    let node = vec![9; 253];
    let mut out = vec![0xAA];
    assert!(!encode_frame(
        Some((0, &node)),
        &Message::PingResp,
        &mut out
    ));
    assert_eq!(out, [0xAA]);
}

/// MQTT-SN 1.2 §5.5: the encapsulation's own length against the
/// datagram, and the message inside it checked like any other.
#[test]
fn bad_encapsulations_5_5() {
    let e = decode_frame;
    // Cut before the Ctrl octet.
    assert_eq!(e(&[0x03, 0xFE]), Err(SnDecodeError::TooShort));
    // A length below its own three octets, or past the datagram.
    assert_eq!(
        e(&[0x02, 0xFE, 0x00, 0x02, 0x17]),
        Err(SnDecodeError::LengthMismatch)
    );
    assert_eq!(
        e(&[0x00, 0xFE, 0x00, 0x02, 0x17]),
        Err(SnDecodeError::LengthMismatch)
    );
    assert_eq!(
        e(&[0x09, 0xFE, 0x00, 0x01, 0x02, 0x17]),
        Err(SnDecodeError::LengthMismatch)
    );
    // Nothing wrapped.
    assert_eq!(e(&[0x04, 0xFE, 0x00, 0x01]), Err(SnDecodeError::TooShort));
    assert_eq!(
        e(&[0x04, 0xFE, 0x00, 0x01, 0x02]),
        Err(SnDecodeError::TooShort)
    );
    // The wrapped message's own errors.
    assert_eq!(
        e(&[0x04, 0xFE, 0x00, 0x01, 0x03, 0x17]),
        Err(SnDecodeError::LengthMismatch)
    );
    assert_eq!(
        e(&[0x04, 0xFE, 0x00, 0x01, 0x02, 0x03]),
        Err(SnDecodeError::UnknownType(0x03))
    );
    assert_eq!(
        e(&[0x04, 0xFE, 0x00, 0x01, 0x07, 0x0C, 0x80, 0, 1, 0, 0]),
        Err(SnDecodeError::BadFlags)
    );
    assert_eq!(
        e(&[0x04, 0xFE, 0x00, 0x01, 0x03, 0x17, 0x00]),
        Err(SnDecodeError::Malformed)
    );
    // `decode` alone does not unwrap: 0xFE is not a message of its own.
    assert_eq!(
        decode(&[0x04, 0xFE, 0x00, 0x01]),
        Err(SnDecodeError::UnknownType(0xFE))
    );
}

/// MQTT-SN 1.2 §5.5: a forwarder wraps a client's message; a wrapped
/// wrapping is nobody's message.
#[test]
fn nested_encapsulation_is_malformed_5_5() {
    let nested = [0x04, 0xFE, 0x00, 0x07, 0x04, 0xFE, 0x00, 0x08, 0x02, 0x17];
    assert_eq!(decode_frame(&nested), Err(SnDecodeError::Malformed));
}

// ---- error reasons ----

/// MQTT-SN 1.2 §5.2: a header is a length (1 or 3 octets) and a type.
#[test]
fn too_short_5_2() {
    refused(&[], SnDecodeError::TooShort);
    refused(&[0x02], SnDecodeError::TooShort);
    refused(&[0x17], SnDecodeError::TooShort);
    // The three-octet form cut inside the length or before the type.
    refused(&[0x01], SnDecodeError::TooShort);
    refused(&[0x01, 0x00], SnDecodeError::TooShort);
    refused(&[0x01, 0x00, 0x04], SnDecodeError::TooShort);
    refused(&[0x01, 0x01, 0x2C], SnDecodeError::TooShort);
}

/// MQTT-SN 1.2 §5.2.1: the length counts every octet of the message, and
/// a datagram carries one message: longer or shorter than the datagram is
/// refused.
#[test]
fn length_against_datagram_5_2_1() {
    // Longer than the datagram.
    refused(&[0x03, 0x17], SnDecodeError::LengthMismatch);
    refused(
        &[0xFF, 0x0C, 0x00, 0x00, 0x01, 0x00, 0x00],
        SnDecodeError::LengthMismatch,
    );
    refused(&[0x01, 0x00, 0x05, 0x17], SnDecodeError::LengthMismatch);
    refused(
        &[0x01, 0x01, 0x2C, 0x0C, 0x00],
        SnDecodeError::LengthMismatch,
    );
    // Shorter than the datagram.
    refused(&[0x02, 0x17, 0x00], SnDecodeError::LengthMismatch);
    refused(&[0x03, 0x16, b'a', b'b'], SnDecodeError::LengthMismatch);
    refused(
        &[0x01, 0x00, 0x04, 0x17, 0x00],
        SnDecodeError::LengthMismatch,
    );
    // Lengths that cannot even hold their own header.
    refused(&[0x00, 0x17], SnDecodeError::LengthMismatch);
    refused(&[0x01, 0x00, 0x03, 0x17], SnDecodeError::LengthMismatch);
    refused(&[0x01, 0x00, 0x00, 0x17], SnDecodeError::LengthMismatch);
}

/// MQTT-SN 1.2 §5.2.2: 0x03, 0x11, 0x19, 0x1E-0xFD and 0xFF are reserved.
#[test]
fn unknown_types_5_2_2() {
    let reserved = [0x03, 0x11, 0x19]
        .into_iter()
        .chain(0x1E..=0xFD)
        .chain([0xFF]);
    for kind in reserved {
        refused(&[0x02, kind], SnDecodeError::UnknownType(kind));
        refused(&[0x04, kind, 0x00, 0x01], SnDecodeError::UnknownType(kind));
        refused(&[0x01, 0x00, 0x04, kind], SnDecodeError::UnknownType(kind));
    }
    assert_eq!(SnDecodeError::UnknownType(0x03).reason(), "unknown_type");
}

/// MQTT-SN 1.2 §5.4: fixed fields cut short.
#[test]
fn fields_missing_are_malformed_5_4() {
    for vector in [
        &[0x04, 0x00, 0x01, 0x03][..],               // ADVERTISE, Duration cut
        &[0x02, 0x01],                               // SEARCHGW, no Radius
        &[0x02, 0x02],                               // GWINFO, no GwId
        &[0x02, 0x04],                               // CONNECT, no Flags
        &[0x04, 0x04, 0x04, 0x01],                   // CONNECT, no Duration
        &[0x05, 0x04, 0x04, 0x01, 0x00],             // CONNECT, Duration cut
        &[0x02, 0x05],                               // CONNACK, no ReturnCode
        &[0x05, 0x0A, 0x00, 0x00, 0x00],             // REGISTER, MsgId cut
        &[0x06, 0x0B, 0x00, 0x01, 0x00, 0x01],       // REGACK, no ReturnCode
        &[0x02, 0x0C],                               // PUBLISH, no Flags
        &[0x06, 0x0C, 0x00, 0x00, 0x01, 0x00],       // PUBLISH, MsgId cut
        &[0x06, 0x0D, 0x00, 0x01, 0x00, 0x01],       // PUBACK, no ReturnCode
        &[0x03, 0x0E, 0x00],                         // PUBCOMP, MsgId cut
        &[0x03, 0x0F, 0x00],                         // PUBREC
        &[0x02, 0x10],                               // PUBREL
        &[0x04, 0x12, 0x00, 0x00],                   // SUBSCRIBE, MsgId cut
        &[0x05, 0x12, 0x00, 0x00, 0x01],             // SUBSCRIBE, no topic name
        &[0x06, 0x12, 0x01, 0x00, 0x01, 0x00],       // SUBSCRIBE, predefined id cut
        &[0x05, 0x12, 0x02, 0x00, 0x01],             // SUBSCRIBE, no short name
        &[0x07, 0x13, 0x00, 0x00, 0x01, 0x00, 0x01], // SUBACK, no ReturnCode
        &[0x05, 0x14, 0x00, 0x00, 0x01],             // UNSUBSCRIBE, no topic name
        &[0x06, 0x14, 0x02, 0x00, 0x01, b'a'],       // UNSUBSCRIBE, short name cut
        &[0x03, 0x15, 0x00],                         // UNSUBACK, MsgId cut
        &[0x03, 0x18, 0x00],                         // DISCONNECT, Duration cut
        &[0x02, 0x1B],                               // WILLTOPICRESP
        &[0x02, 0x1D],                               // WILLMSGRESP
    ] {
        refused(vector, SnDecodeError::Malformed);
    }
}

/// MQTT-SN 1.2 §5.4: bytes after the last field of a message that has no
/// variable part.
#[test]
fn trailing_bytes_are_malformed_5_4() {
    for vector in [
        &[0x06, 0x00, 0x01, 0x00, 0x3C, 0x00][..], // ADVERTISE
        &[0x04, 0x01, 0x01, 0x00],                 // SEARCHGW
        &[0x04, 0x05, 0x00, 0x00],                 // CONNACK
        &[0x03, 0x06, 0x00],                       // WILLTOPICREQ
        &[0x03, 0x08, 0x00],                       // WILLMSGREQ
        &[0x08, 0x0B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00], // REGACK
        &[0x08, 0x0D, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00], // PUBACK
        &[0x05, 0x0E, 0x00, 0x01, 0x00],           // PUBCOMP
        &[0x05, 0x0F, 0x00, 0x01, 0x00],           // PUBREC
        &[0x05, 0x10, 0x00, 0x01, 0x00],           // PUBREL
        &[0x08, 0x12, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00], // SUBSCRIBE predefined
        &[0x08, 0x12, 0x02, 0x00, 0x01, b'a', b'b', b'c'], // SUBSCRIBE short
        &[0x09, 0x13, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00], // SUBACK
        &[0x08, 0x14, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00], // UNSUBSCRIBE predefined
        &[0x05, 0x15, 0x00, 0x01, 0x00],           // UNSUBACK
        &[0x03, 0x17, 0x00],                       // PINGRESP
        &[0x05, 0x18, 0x00, 0x3C, 0x00],           // DISCONNECT
        &[0x04, 0x1B, 0x00, 0x00],                 // WILLTOPICRESP
        &[0x04, 0x1D, 0x00, 0x00],                 // WILLMSGRESP
    ] {
        refused(vector, SnDecodeError::Malformed);
    }
}

#[test]
fn every_reason_has_its_metric_label() {
    let labels = [
        (SnDecodeError::TooShort, "too_short"),
        (SnDecodeError::LengthMismatch, "length_mismatch"),
        (SnDecodeError::UnknownType(0xFF), "unknown_type"),
        (SnDecodeError::BadFlags, "bad_flags"),
        (SnDecodeError::Malformed, "malformed"),
    ];
    for (error, label) in labels {
        assert_eq!(error.reason(), label);
    }
}

#[test]
fn kind_is_the_type_octet_of_the_encoding() {
    let messages = [
        Message::WillTopicReq,
        Message::PingReq(None),
        Message::PubRel(1),
        Message::WillMsgUpd(b"x"),
        Message::SearchGw { radius: 0 },
    ];
    for message in messages {
        let mut out = Vec::new();
        assert!(message.encode(&mut out));
        assert_eq!(out[1], message.kind());
    }
}
