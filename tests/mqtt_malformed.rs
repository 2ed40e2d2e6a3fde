//! Malformed input and misbehaving clients: the offender is disconnected,
//! everyone else carries on.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    malformed_packets_close_connection,
    oversized_packet_closed,
    control_characters_in_connect_close_it,
    malformed_filters_are_counted,
    topic_with_bom_is_an_ordinary_topic,
    garbage_client_does_not_affect_others,
    slow_subscriber_does_not_stall_others,
);

/// Packets that must get a connected client disconnected.
fn malformed_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut subscribe_qos3 = subscribe(1, &[("s/t", 0)]);
    *subscribe_qos3.last_mut().unwrap() = 3;
    vec![
        // 0xff 0xff 0xff 0xff 0x01: a fifth length byte is never valid.
        (
            "remaining length of 5 bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("reserved packet type 0", vec![0x00, 0x00]),
        ("reserved packet type 15", vec![0xf0, 0x00]),
        ("CONNACK from a client", connack(false, 0).to_vec()),
        ("QoS 1 PUBLISH with packet id 0", publish("m/t", 1, 0, b"x")),
        ("PUBLISH with QoS 3", publish_raw(0x06, b"m/t", 1, b"x")),
        ("empty topic name", publish("", 0, 0, b"x")),
        ("topic not UTF-8", publish_raw(0, b"m/\xff", 0, b"x")),
        (
            "topic with overlong UTF-8",
            publish_raw(0, b"m/\xc0\xaf", 0, b"x"),
        ),
        (
            "topic with UTF-16 surrogate",
            publish_raw(0, b"m/\xed\xa0\x80", 0, b"x"),
        ),
        ("topic with U+0000", publish_raw(0, b"m/\x00/t", 0, b"x")),
        ("filter with U+0000", subscribe(1, &[("s/\0", 0)])),
        ("SUBSCRIBE without filters", frame(0x82, &[0x00, 0x01])),
        (
            "SUBSCRIBE with flags 0000",
            frame(0x80, &subscribe(1, &[("s/t", 0)])[2..]),
        ),
        ("SUBSCRIBE requesting QoS 3", subscribe_qos3),
        (
            "UNSUBSCRIBE with flags 0000",
            frame(0xa0, &unsubscribe(1, &["s/t"])[2..]),
        ),
        ("PUBREL with flags 0000", vec![0x60, 0x02, 0x00, 0x01]),
        // §1.5.3: U+0001-U+001F and U+007F-U+009F in a topic or filter.
        (
            "topic with U+0001",
            vec![0x30, 0x06, 0x00, 0x03, b'm', b'/', 0x01, b'x'],
        ),
        (
            "topic with U+0085",
            vec![0x30, 0x07, 0x00, 0x04, b'm', b'/', 0xc2, 0x85, b'x'],
        ),
        (
            "SUBSCRIBE filter with U+001F",
            vec![0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b's', b'/', 0x1f, 0x00],
        ),
        (
            "UNSUBSCRIBE filter with U+007F",
            vec![0xa2, 0x07, 0x00, 0x01, 0x00, 0x03, b's', b'/', 0x7f],
        ),
    ]
    .into_iter()
    .chain(malformed_filter_cases())
    .collect()
}

/// Malformed topic filters are protocol violations (§4.7, §4.8): the
/// connection is closed, with no SUBACK or UNSUBACK.
fn malformed_filter_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // [MQTT-4.7.3-1]: topic filters are at least one character long.
        (
            "SUBSCRIBE empty filter",
            vec![0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
        ),
        (
            "UNSUBSCRIBE empty filter",
            vec![0xa2, 0x04, 0x00, 0x01, 0x00, 0x00],
        ),
        // [MQTT-4.7.1-2]: `#` alone in the last level.
        (
            "SUBSCRIBE a/#/b",
            vec![
                0x82, 0x0a, 0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
            ],
        ),
        (
            "SUBSCRIBE a#",
            vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x01],
        ),
        (
            "UNSUBSCRIBE #/",
            vec![0xa2, 0x06, 0x00, 0x01, 0x00, 0x02, b'#', b'/'],
        ),
        // [MQTT-4.7.1-3]: `+` alone in its level.
        (
            "SUBSCRIBE a/b+",
            vec![
                0x82, 0x09, 0x00, 0x01, 0x00, 0x04, b'a', b'/', b'b', b'+', 0x02,
            ],
        ),
        (
            "UNSUBSCRIBE +a",
            vec![0xa2, 0x06, 0x00, 0x01, 0x00, 0x02, b'+', b'a'],
        ),
        // A valid filter before the bad one does not save the packet.
        (
            "SUBSCRIBE ok/1 then a+",
            vec![
                0x82, 0x0e, 0x00, 0x01, 0x00, 0x04, b'o', b'k', b'/', b'1', 0x01, 0x00, 0x02, b'a',
                b'+', 0x00,
            ],
        ),
    ]
}

async fn malformed_filters_are_counted(shards: usize) {
    if shardmq_only() {
        return;
    }
    let broker = Broker::start_with(shards, "[mqtt]\nsys_interval_s = 1\n");
    let (mut errors, before) = watch_protocol_errors(&broker).await;
    let cases = malformed_filter_cases();
    for (i, (case, bytes)) in cases.iter().enumerate() {
        eprintln!("case: {case}");
        let mut raw = Raw::connect(&broker, &format!("filter-{i}")).await;
        raw.send(bytes).await;
        raw.expect_closed().await;
    }
    let want = before + cases.len() as u64;
    while number(&errors.recv().await.payload) < want {}
}

/// CONNECTs whose client id, user name or will topic holds a control
/// character (§1.5.3): closed without a CONNACK, and counted.
fn control_character_connects() -> Vec<(&'static str, Vec<u8>)> {
    // "MQTT", level 4, then the flags byte and keep alive 60 s.
    let header = |flags: u8| vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3c];
    let connect =
        |flags: u8, payload: &[u8]| frame(0x10, &[header(flags), payload.to_vec()].concat());
    vec![
        ("client id U+0001", connect(0x02, &[0x00, 0x02, b'c', 0x01])),
        (
            "client id U+009F",
            connect(0x02, &[0x00, 0x03, b'c', 0xc2, 0x9f]),
        ),
        (
            "user name U+001F",
            connect(0x82, &[0x00, 0x01, b'c', 0x00, 0x02, b'u', 0x1f]),
        ),
        (
            "will topic U+007F",
            connect(
                0x06,
                &[0x00, 0x01, b'c', 0x00, 0x02, b'w', 0x7f, 0x00, 0x01, b'm'],
            ),
        ),
    ]
}

async fn control_characters_in_connect_close_it(shards: usize) {
    let broker = Broker::start_with(shards, "[mqtt]\nsys_interval_s = 1\n");
    let watch = if is_mosquitto() {
        None
    } else {
        Some(watch_protocol_errors(&broker).await)
    };
    let cases = control_character_connects();
    for (case, bytes) in &cases {
        eprintln!("case: {case} {bytes:02x?}");
        let mut raw = Raw::open(&broker).await;
        raw.send(bytes).await;
        raw.expect_closed().await;
    }
    // The same CONNECT without the control character is accepted.
    Raw::connect(&broker, "c").await.ping().await;
    if let Some((mut errors, before)) = watch {
        let want = before + cases.len() as u64;
        while number(&errors.recv().await.payload) < want {}
    }
}

/// Subscribes to the protocol error counter (shardmq's `$SYS`) and returns
/// the client with the first value.
async fn watch_protocol_errors(broker: &Broker) -> (Client, u64) {
    let mut c = Client::connect(broker, "sys-errors").await;
    c.subscribe("$SYS/broker/clients/protocol_errors", QoS::AtMostOnce)
        .await;
    let first = number(&c.recv().await.payload);
    (c, first)
}

async fn malformed_packets_close_connection(shards: usize) {
    let broker = Broker::start(shards);
    for (i, (case, bytes)) in malformed_cases().into_iter().enumerate() {
        eprintln!("case: {case}");
        let mut raw = Raw::connect(&broker, &format!("bad-{i}")).await;
        raw.send(&bytes).await;
        raw.expect_closed().await;
    }
    // And the broker is still there for well-behaved clients.
    Raw::connect(&broker, "good").await.ping().await;
}

async fn oversized_packet_closed(shards: usize) {
    let broker = Broker::start_with(shards, "[mqtt]\nmax_packet_size = 1024\n");
    let mut raw = Raw::connect(&broker, "big").await;
    // Under the limit: fine.
    raw.send(&publish("big/t", 1, 1, &[b'x'; 900])).await;
    raw.expect(&puback(1)).await;
    // Over it: disconnected.
    raw.send(&publish("big/t", 1, 2, &[b'x'; 2000])).await;
    raw.expect_closed().await;

    // A header announcing a huge body is refused without waiting for it.
    let mut raw = Raw::connect(&broker, "huge").await;
    raw.send(&[0x30, 0xc0, 0x84, 0x3d]).await; // remaining length 1_000_000
    raw.expect_closed().await;
}

async fn topic_with_bom_is_an_ordinary_topic(shards: usize) {
    let broker = Broker::start(shards);
    // U+FEFF is a valid character; it must neither be stripped nor refused.
    let bom_topic = "\u{feff}bom/t";
    let mut sub = Client::connect(&broker, "sub").await;
    sub.subscribe(bom_topic, QoS::AtLeastOnce).await;
    sub.subscribe("bom/end", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("bom/t", QoS::AtLeastOnce, false, b"plain")
        .await;
    publisher
        .publish(bom_topic, QoS::AtLeastOnce, false, b"bom")
        .await;
    publisher
        .publish("bom/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got: Vec<_> = sub
        .recv_until("bom/end")
        .await
        .into_iter()
        .map(|p| (p.topic, text(&p.payload)))
        .collect();
    assert_eq!(got, [(bom_topic.to_string(), "bom".to_string())]);
}

async fn garbage_client_does_not_affect_others(shards: usize) {
    let broker = Broker::start(shards);
    let mut a = Client::connect(&broker, "iso-a").await;
    let mut b = Client::connect(&broker, "iso-b").await;
    a.subscribe("iso/b", QoS::AtLeastOnce).await;
    b.subscribe("iso/a", QoS::AtLeastOnce).await;

    // Enough offenders that, with 4 shards, every shard sees some.
    for i in 0..8u8 {
        // Not MQTT at all.
        let mut raw = Raw::open(&broker).await;
        raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        raw.expect_closed().await;
        // A valid session followed by noise.
        let mut raw = Raw::connect(&broker, &format!("noisy-{i}")).await;
        raw.send(&[0xff; 64]).await;
        raw.expect_closed().await;
        // Half a packet, then gone.
        let mut raw = Raw::connect(&broker, &format!("cut-{i}")).await;
        raw.send(&publish("iso/a", 1, 1, &[i; 100])[..50]).await;
        drop(raw);
    }

    a.publish("iso/a", QoS::AtLeastOnce, false, b"from a").await;
    b.publish("iso/b", QoS::AtLeastOnce, false, b"from b").await;
    assert_eq!(text(&b.recv().await.payload), "from a");
    assert_eq!(text(&a.recv().await.payload), "from b");
}

async fn slow_subscriber_does_not_stall_others(shards: usize) {
    const COUNT: usize = 400;
    const SIZE: usize = 16 * 1024;
    let broker = Broker::start_with(
        shards,
        "[mqtt]\nmax_outbox_bytes = 65536\nsys_interval_s = 1\n",
    );
    // Subscribers that never read: their socket buffers fill up quickly
    // (COUNT × SIZE is several MB).
    let mut slow0 = Raw::connect(&broker, "slow-qos0").await;
    slow0.subscribe(1, &[("flood/t", 0)], &[0]).await;
    let mut slow1 = Raw::connect(&broker, "slow-qos1").await;
    slow1.subscribe(1, &[("flood/t", 1)], &[1]).await;

    let mut fast = Client::connect(&broker, "fast").await;
    fast.subscribe("flood/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&broker, "flooder").await;

    let publish_all = async {
        for i in 0..COUNT {
            let mut payload = vec![0u8; SIZE];
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            publisher
                .publish_nowait("flood/t", QoS::AtLeastOnce, false, &payload)
                .await;
        }
        publisher.wait_acks(COUNT).await;
    };
    let receive_all = async {
        for i in 0..COUNT {
            let p = fast.recv().await;
            assert_eq!(p.payload[..8], (i as u64).to_be_bytes(), "out of order");
        }
    };
    tokio::join!(publish_all, receive_all);

    // The slow QoS 0 subscriber's connection still works once it reads, and
    // what it gets is whole packets (the broker dropped, not truncated).
    slow0.send(&PINGREQ).await;
    let mut delivered = 0;
    loop {
        let packet = slow0.read_packet().await;
        if packet.header == PINGRESP[0] {
            break;
        }
        assert_eq!(packet.publish().payload.len(), SIZE);
        delivered += 1;
    }

    if !is_mosquitto() {
        // A bounded outbox means the slow QoS 0 subscriber lost messages,
        // and the broker counted them.
        assert!(delivered < COUNT, "no QoS 0 message dropped");
        let mut sys = Client::connect(&broker, "sys").await;
        sys.subscribe("$SYS/broker/messages/dropped", QoS::AtMostOnce)
            .await;
        while number(&sys.recv().await.payload) == 0 {}
    }
}

fn number(payload: &[u8]) -> u64 {
    text(payload)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {:?}", text(payload)))
}
