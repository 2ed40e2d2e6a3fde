//! Property tests. Strings avoid U+0000 and the control characters of
//! §1.5.3, topics the wildcards, and filters follow §4.7, so that
//! every generated packet is valid and must round-trip; arbitrary and
//! mutated inputs are checked against the mqttbytes oracle.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::decode::check_first_byte;
use super::oracle;
use super::test_support::*;
use super::*;
fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f\\x7f-\\x9f]{0,8}"
}

/// A valid topic filter: levels that are `+` or plain text, possibly empty,
/// and sometimes a last `#`.
fn arb_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("+".to_owned()), "[^\\x00-\\x1f\\x7f-\\x9f+#/]{0,4}"];
    (prop::collection::vec(level, 1..4), any::<bool>())
        .prop_map(|(mut levels, multi_level)| {
            if multi_level {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("non-empty filter", |filter| !filter.is_empty())
}

fn arb_topic() -> impl Strategy<Value = TopicName> {
    "[^\\x00-\\x1f\\x7f-\\x9f+#]{1,8}".prop_map(|name| topic(&name))
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
    let filters = prop::collection::vec((arb_filter(), arb_qos()), 1..4);
    let unsubscribe_filters = prop::collection::vec(arb_filter(), 1..4);
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
