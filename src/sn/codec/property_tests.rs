//! Property tests. Generated messages keep to what the wire can say (no
//! DUP on a QoS 0 or -1 PUBLISH, no QoS -1 in a SUBSCRIBE or a will, a
//! SUBSCRIBE's topic id type matching its topic, a PINGREQ's client id
//! absent rather than empty), so each must round-trip; arbitrary, framed
//! and mutated datagrams must never panic, and whatever of them decodes
//! must round-trip too.

use proptest::prelude::*;

use super::*;

/// What a message is built from: it borrows `bytes`.
#[derive(Debug, Clone)]
struct Seed {
    kind: u8,
    a: u16,
    b: u16,
    c: u8,
    flags: Flags,
    bytes: Vec<u8>,
}

fn arb_flags() -> impl Strategy<Value = Flags> {
    // Any octet but a reserved topic id type.
    any::<u8>().prop_map(|b| {
        let b = if b & 0b11 == 0b11 { b & !0b01 } else { b };
        Flags::from_byte(b).unwrap()
    })
}

fn arb_seed() -> impl Strategy<Value = Seed> {
    let bytes = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..16),
        1 => prop::collection::vec(any::<u8>(), 240..320),
    ];
    (
        0u8..27,
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        arb_flags(),
        bytes,
    )
        .prop_map(|(kind, a, b, c, flags, bytes)| Seed {
            kind,
            a,
            b,
            c,
            flags,
            bytes,
        })
}

/// A valid will or subscription QoS: -1 becomes 0.
fn no_minus_one(mut flags: Flags) -> Flags {
    if flags.qos == SnQoS::MinusOne {
        flags.qos = SnQoS::AtMostOnce;
    }
    flags
}

fn topic(seed: &Seed) -> TopicRef<'_> {
    match seed.flags.topic_id_type {
        TopicIdType::Normal if seed.bytes.is_empty() => TopicRef::Name(b"#"),
        TopicIdType::Normal => TopicRef::Name(&seed.bytes),
        TopicIdType::Predefined => TopicRef::Predefined(seed.b),
        TopicIdType::Short => TopicRef::Short(seed.b.to_be_bytes()),
    }
}

fn message(seed: &Seed) -> Message<'_> {
    let (a, b, c, flags, bytes) = (seed.a, seed.b, seed.c, seed.flags, &seed.bytes[..]);
    let code = ReturnCode::from_byte(c);
    let will = (c & 1 == 1).then_some((no_minus_one(flags), bytes));
    match seed.kind {
        0 => Message::Advertise {
            gw_id: c,
            duration_s: a,
        },
        1 => Message::SearchGw { radius: c },
        2 => Message::GwInfo {
            gw_id: c,
            gw_add: bytes,
        },
        3 => Message::Connect {
            flags,
            protocol_id: c,
            duration_s: a,
            client_id: bytes,
        },
        4 => Message::ConnAck(code),
        5 => Message::WillTopicReq,
        6 => Message::WillTopic(will),
        7 => Message::WillMsgReq,
        8 => Message::WillMsg(bytes),
        9 => Message::Register {
            topic_id: a,
            msg_id: b,
            topic_name: bytes,
        },
        10 => Message::RegAck {
            topic_id: a,
            msg_id: b,
            code,
        },
        11 => {
            let mut flags = flags;
            flags.dup &= flags.qos > SnQoS::AtMostOnce;
            Message::Publish {
                flags,
                topic_id: a,
                msg_id: b,
                data: bytes,
            }
        }
        12 => Message::PubAck {
            topic_id: a,
            msg_id: b,
            code,
        },
        13 => Message::PubRec(a),
        14 => Message::PubRel(a),
        15 => Message::PubComp(a),
        16 => Message::Subscribe {
            flags: no_minus_one(flags),
            msg_id: a,
            topic: topic(seed),
        },
        17 => Message::SubAck {
            flags,
            topic_id: a,
            msg_id: b,
            code,
        },
        18 => Message::Unsubscribe {
            flags,
            msg_id: a,
            topic: topic(seed),
        },
        19 => Message::UnsubAck(a),
        20 => Message::PingReq((!bytes.is_empty()).then_some(bytes)),
        21 => Message::PingResp,
        22 => Message::Disconnect((c & 1 == 1).then_some(a)),
        23 => Message::WillTopicUpd(will),
        24 => Message::WillTopicResp(code),
        25 => Message::WillMsgUpd(bytes),
        _ => Message::WillMsgResp(code),
    }
}

/// A forwarder's Ctrl octet and a node id the one-octet length can hold.
fn arb_forwarder() -> impl Strategy<Value = Option<(u8, Vec<u8>)>> {
    prop::option::of((any::<u8>(), prop::collection::vec(any::<u8>(), 0..=252)))
}

/// `bytes` decodes; if it does, the frame encodes, decodes to itself,
/// and its encoding is no longer than `bytes` (the shortest length form).
fn check_datagram(bytes: &[u8]) {
    let plain = decode(bytes);
    let Ok(frame) = decode_frame(bytes) else {
        return;
    };
    if frame.forwarder.is_none() {
        assert_eq!(plain.as_ref(), Ok(&frame.message));
    }
    let mut out = Vec::new();
    assert!(encode_frame(frame.forwarder, &frame.message, &mut out));
    assert!(out.len() <= bytes.len());
    assert_eq!(decode_frame(&out), Ok(frame));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn messages_round_trip(seed in arb_seed()) {
        let message = message(&seed);
        let mut out = Vec::new();
        prop_assert!(message.encode(&mut out));
        // §5.2.1: the one-octet length up to 255, the three-octet one after.
        match out.len() {
            n if n <= 255 => prop_assert_eq!(usize::from(out[0]), n),
            n => {
                prop_assert_eq!(out[0], 0x01);
                prop_assert_eq!(usize::from(u16::from_be_bytes([out[1], out[2]])), n);
            }
        }
        prop_assert_eq!(decode(&out), Ok(message.clone()));
        prop_assert_eq!(
            decode_frame(&out),
            Ok(Frame { forwarder: None, message })
        );
    }

    #[test]
    fn wrapped_messages_round_trip(seed in arb_seed(), forwarder in arb_forwarder()) {
        let frame = Frame {
            forwarder: forwarder.as_ref().map(|(ctrl, node)| (*ctrl, &node[..])),
            message: message(&seed),
        };
        let mut out = Vec::new();
        prop_assert!(encode_frame(frame.forwarder, &frame.message, &mut out));
        prop_assert_eq!(decode_frame(&out), Ok(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_datagram(&bytes);
    }

    /// A right length and a known or unknown type, then anything: only the
    /// body's reasons can refuse it.
    #[test]
    fn framed_bodies_never_panic(kind in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..24)) {
        let mut bytes = vec![u8::try_from(body.len() + 2).unwrap(), kind];
        bytes.extend_from_slice(&body);
        check_datagram(&bytes);
        if kind != msg_type::ENCAPSULATED {
            let refused = decode(&bytes).err();
            prop_assert!(!matches!(
                refused,
                Some(SnDecodeError::TooShort | SnDecodeError::LengthMismatch)
            ));
        }
    }

    /// Valid datagrams, wrapped or not, with an octet changed and cut short.
    #[test]
    fn mutated_datagrams_never_panic(
        seed in arb_seed(),
        forwarder in arb_forwarder(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let forwarder = forwarder.as_ref().map(|(ctrl, node)| (*ctrl, &node[..]));
        let mut out = Vec::new();
        prop_assert!(encode_frame(forwarder, &message(&seed), &mut out));
        let i = at.index(out.len());
        out[i] ^= xor;
        check_datagram(&out);
        out.truncate(cut.index(out.len()));
        check_datagram(&out);
    }
}
