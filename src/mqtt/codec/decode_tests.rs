//! Decoder tests: byte vectors for every rule, buffer handling across
//! partial reads, and the size limit.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::mqtt::codec::oracle;
use crate::mqtt::codec::test_support::*;

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
    let bad_wildcard = InvalidFilter(TopicError::BadWildcard);
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
        // Control characters (§1.5.3): U+0001-U+001F, U+007F-U+009F.
        ("topic U+0001", publish(0x30, b"a\x01b", b""), ControlCharacter),
        ("topic U+001F", publish(0x30, b"a/\x1f", b""), ControlCharacter),
        ("topic U+007F", publish(0x32, b"\x7f", &[0, 1]), ControlCharacter),
        ("topic U+0080", publish(0x30, b"a\xc2\x80", b""), ControlCharacter),
        ("topic U+009F", publish(0x30, b"\xc2\x9f/a", b""), ControlCharacter),
        ("will topic U+0085", v4(0x06, &[b"c", b"w\xc2\x85", b"m"]), ControlCharacter),
        ("client id U+0001", v4(0x02, &[b"\x01"]), ControlCharacter),
        ("client id U+009F", v4(0x02, &[b"c\xc2\x9f"]), ControlCharacter),
        ("user name U+001F", v4(0x82, &[b"c", b"u\x1f"]), ControlCharacter),
        ("user name U+007F", v4(0xc2, &[b"c", b"\x7f", b"p"]), ControlCharacter),
        ("SUBSCRIBE U+000A", frame(0x82, &[0, 1, 0, 3, b'a', b'\n', b'b', 0]), ControlCharacter),
        ("SUBSCRIBE U+0080", frame(0x82, &[0, 1, 0, 2, 0xc2, 0x80, 1]), ControlCharacter),
        ("UNSUBSCRIBE U+007F", frame(0xa2, &[0, 1, 0, 2, b'#', 0x7f]), ControlCharacter),
        // Topic filters (§4.7): [MQTT-4.7.3-1] non-empty, [MQTT-4.7.1-2] `#`
        // alone and last, [MQTT-4.7.1-3] `+` alone in its level.
        ("SUBSCRIBE empty filter", frame(0x82, &[0, 1, 0, 0, 0]), InvalidFilter(TopicError::Empty)),
        ("SUBSCRIBE a/#/b", frame(0x82, &[0, 1, 0, 5, b'a', b'/', b'#', b'/', b'b', 0]),
            bad_wildcard.clone()),
        ("SUBSCRIBE a#", frame(0x82, &[0, 1, 0, 2, b'a', b'#', 1]), bad_wildcard.clone()),
        ("SUBSCRIBE #/", frame(0x82, &[0, 1, 0, 2, b'#', b'/', 2]), bad_wildcard.clone()),
        ("SUBSCRIBE a+", frame(0x82, &[0, 1, 0, 2, b'a', b'+', 0]), bad_wildcard.clone()),
        ("SUBSCRIBE +a/b", frame(0x82, &[0, 1, 0, 4, b'+', b'a', b'/', b'b', 0]),
            bad_wildcard.clone()),
        ("SUBSCRIBE ++", frame(0x82, &[0, 1, 0, 2, b'+', b'+', 0]), bad_wildcard.clone()),
        // One bad filter after a good one fails the whole packet.
        ("SUBSCRIBE ok then bad", frame(0x82, &[0, 1, 0, 1, b'a', 0, 0, 2, b'b', b'#', 0]),
            bad_wildcard.clone()),
        ("UNSUBSCRIBE empty filter", frame(0xa2, &[0, 1, 0, 0]), InvalidFilter(TopicError::Empty)),
        ("UNSUBSCRIBE a/#/b", frame(0xa2, &[0, 1, 0, 5, b'a', b'/', b'#', b'/', b'b']),
            bad_wildcard.clone()),
        ("UNSUBSCRIBE a/b+", frame(0xa2, &[0, 1, 0, 4, b'a', b'/', b'b', b'+']), bad_wildcard),
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
        DecodeError::ControlCharacter => 8,
        DecodeError::InvalidFilter(_) => 9,
    }
}

#[test]
fn every_error_variant_is_reached() {
    let mut reached = [false; 10];
    for (_, _, error) in error_vectors() {
        reached[variant_index(&error)] = true;
    }
    assert_eq!(reached, [true; 10]);
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

/// §1.5.3: only U+0001-U+001F and U+007F-U+009F are refused. Their
/// neighbours, and any byte of binary fields (password, will message,
/// payload), are accepted.
#[test]
fn control_character_boundaries_are_exact() {
    let accepted = [
        ("topic U+0020", publish_frame(0x30, b" ", b"")),
        ("topic U+007E", publish_frame(0x30, b"~", b"")),
        ("topic U+00A0", publish_frame(0x30, b"\xc2\xa0", b"")),
        ("topic U+00C2", publish_frame(0x30, b"\xc3\x82", b"")),
        ("topic U+0100", publish_frame(0x30, b"\xc4\x80", b"")),
        (
            "payload controls",
            publish_frame(0x30, b"t", b"\x01\x1f\x7f\xc2\x85"),
        ),
        (
            "password controls",
            connect_frame(b"MQTT", 4, 0xc2, &[b"c", b"u", b"\x01\x7f"]),
        ),
        (
            "will message controls",
            connect_frame(b"MQTT", 4, 0x06, &[b"c", b"w", b"\x01\x1f"]),
        ),
        ("filter U+00A0", frame(0x82, &[0, 1, 0, 2, 0xc2, 0xa0, 0])),
    ];
    for (name, bytes) in accepted {
        assert!(
            matches!(decode_slice(&bytes), Ok(Some(_))),
            "{name}: {bytes:02x?}"
        );
        assert_eq!(oracle::check(&bytes, MAX), Some(bytes.len()), "{name}");
    }
}

/// Every filter form §4.7 allows is decoded, in SUBSCRIBE and UNSUBSCRIBE
/// alike: wildcards alone in their level, `#` last, empty levels.
#[test]
fn valid_filters_are_decoded() {
    let filters = [
        "#", "+", "/", "a/+/b", "+/+", "a/#", "/#", "+/#", "a//+//#", "$SYS/#",
    ];
    for filter in filters {
        let subscribe = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter.into(), QoS::AtLeastOnce)],
        });
        let unsubscribe = Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec![filter.into()],
        });
        for packet in [subscribe, unsubscribe] {
            assert_eq!(
                decode_slice(&encoded(&packet)),
                Ok(Some(packet)),
                "{filter}"
            );
        }
    }
}
