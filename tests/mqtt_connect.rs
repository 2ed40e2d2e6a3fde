//! CONNECT handling and client-id takeover.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    connack_accepted,
    mqisdp_level_3_accepted,
    unsupported_level_refused,
    bad_protocol_name_closed,
    first_packet_not_connect_closed,
    first_header_not_connect_closed_at_once,
    connect_timeout_closes,
    second_connect_closed,
    empty_client_id_with_clean_session_accepted,
    empty_client_id_without_clean_session_rejected,
    reserved_connect_flag_closed,
    takeover_closes_first_connection,
    takeover_publishes_will,
    persistent_takeover_keeps_will,
);

async fn connack_accepted(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    raw.send(&Connect::new("c1").encode()).await;
    raw.expect(&connack(false, 0)).await;
    raw.ping().await;
}

async fn mqisdp_level_3_accepted(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    let connect = Connect {
        protocol: "MQIsdp",
        level: 3,
        ..Connect::new("old-client")
    };
    raw.send(&connect.encode()).await;
    raw.expect(&connack(false, 0)).await;
    raw.ping().await;
}

async fn unsupported_level_refused(shards: usize) {
    let broker = Broker::start(shards);
    // mosquitto speaks MQTT 5, so level 5 is only "unsupported" for shardmq.
    let levels: &[u8] = if is_mosquitto() { &[6] } else { &[5, 6] };
    for &level in levels {
        let mut raw = Raw::open(&broker).await;
        let connect = Connect {
            level,
            ..Connect::new("future-client")
        };
        raw.send(&connect.encode()).await;
        // 0x01: unacceptable protocol version, then the server closes.
        raw.expect(&connack(false, 0x01)).await;
        raw.expect_closed().await;
    }
}

async fn bad_protocol_name_closed(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    let connect = Connect {
        protocol: "MQTX",
        ..Connect::new("c1")
    };
    raw.send(&connect.encode()).await;
    raw.expect_closed().await;
}

async fn first_packet_not_connect_closed(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    raw.send(&subscribe(1, &[("a/b", 0)])).await;
    raw.expect_closed().await;

    let mut raw = Raw::open(&broker).await;
    raw.send(&PINGREQ).await;
    raw.expect_closed().await;
}

/// [MQTT-3.1.0-1]: the first packet must be a CONNECT. The verdict needs
/// only the first byte, so the connection closes as soon as the fixed header
/// is read: not when a body that may never come is complete, and not at the
/// CONNECT deadline (set far beyond the test's wait here).
async fn first_header_not_connect_closed_at_once(shards: usize) {
    if shardmq_only() {
        return;
    }
    let broker = Broker::start_with(shards, "[mqtt]\nconnect_timeout_s = 3600\n");
    let headers: [&[u8]; 4] = [
        // PUBLISH announcing 127 bytes of body, none sent.
        &[0x30, 0x7f],
        // SUBSCRIBE announcing 2 MiB, more than any packet may be.
        &[0x82, 0xff, 0xff, 0x7f],
        // A lone PINGREQ type byte, remaining length not yet sent.
        &[0xc0],
        // CONNECT's type with reserved flags set [MQTT-2.2.2-2].
        &[0x11, 0x7f],
    ];
    for header in headers {
        let mut raw = Raw::open(&broker).await;
        raw.send(header).await;
        raw.expect_closed().await;
    }
}

async fn connect_timeout_closes(shards: usize) {
    if shardmq_only() {
        return;
    }
    let broker = Broker::start_with(shards, "[mqtt]\nconnect_timeout_s = 1\n");
    // A socket that never sends CONNECT must not hold a connection forever.
    let mut idle = Raw::open(&broker).await;
    idle.expect_closed().await;
    // A slow but complete CONNECT within the timeout is still accepted.
    let mut raw = Raw::open(&broker).await;
    raw.send(&Connect::new("c1").encode()).await;
    raw.expect(&connack(false, 0)).await;
}

async fn second_connect_closed(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect(&broker, "twice").await;
    raw.send(&Connect::new("twice").encode()).await;
    raw.expect_closed().await;
}

async fn empty_client_id_with_clean_session_accepted(shards: usize) {
    let broker = Broker::start(shards);
    // Several at once: each gets its own generated identity, so none of them
    // takes over another.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut raw = Raw::open(&broker).await;
        raw.send(&Connect::new("").encode()).await;
        raw.expect(&connack(false, 0)).await;
        clients.push(raw);
    }
    for raw in &mut clients {
        raw.ping().await;
    }
}

async fn empty_client_id_without_clean_session_rejected(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    let connect = Connect {
        clean: false,
        ..Connect::new("")
    };
    raw.send(&connect.encode()).await;
    // 0x02: identifier rejected, then the server closes.
    raw.expect(&connack(false, 0x02)).await;
    raw.expect_closed().await;
}

async fn reserved_connect_flag_closed(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::open(&broker).await;
    let connect = Connect {
        reserved_flag: true,
        ..Connect::new("c1")
    };
    raw.send(&connect.encode()).await;
    raw.expect_closed().await;
}

async fn takeover_closes_first_connection(shards: usize) {
    let broker = Broker::start(shards);
    // Several ids so that, with 4 shards, owners differ from the accepting
    // listener in at least some cases.
    for i in 0..6 {
        let id = format!("takeover-{i}");
        let mut first = Raw::connect(&broker, &id).await;
        let mut second = Raw::connect(&broker, &id).await;
        first.expect_closed().await;
        second.ping().await;
    }
}

async fn takeover_publishes_will(shards: usize) {
    // [MQTT-3.1.2-8]: the will goes out when the network connection closes
    // without DISCONNECT, and a takeover closes the old one.
    let broker = Broker::start(shards);
    let mut watcher = Client::connect(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    for (i, (old_clean, new_clean)) in [(true, true), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let id = format!("will-owner-{i}");
        let will_topic = format!("will/{id}");
        let connect = Connect {
            clean: old_clean,
            will: Some((&will_topic, b"gone", 1, false)),
            ..Connect::new(&id)
        };
        let mut first = Raw::connect_with(&broker, &connect).await;
        let second = Connect {
            clean: new_clean,
            ..Connect::new(&id)
        };
        let mut second = Raw::connect_with(&broker, &second).await;
        first.expect_closed().await;
        let p = watcher.recv().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            (will_topic.as_str(), &b"gone"[..]),
            "old clean {old_clean}, new clean {new_clean}"
        );
        second.ping().await;
    }
}

async fn persistent_takeover_keeps_will(shards: usize) {
    // Both connections with clean session 0: the session goes on and the
    // will is not published (mosquitto 2.0.12 and later agree).
    let broker = Broker::start(shards);
    let mut watcher = Client::connect(&broker, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    for i in 0..4 {
        let id = format!("will-keeper-{i}");
        let will_topic = format!("will/{id}");
        let connect = Connect {
            clean: false,
            will: Some((&will_topic, b"gone", 1, false)),
            ..Connect::new(&id)
        };
        let mut first = Raw::connect_with(&broker, &connect).await;
        let mut second = Raw::open(&broker).await;
        second
            .send(
                &Connect {
                    clean: false,
                    ..Connect::new(&id)
                }
                .encode(),
            )
            .await;
        second.expect(&connack(true, 0)).await;
        first.expect_closed().await;
        // Published by the new owner of the id after the takeover: if the old
        // connection's will had gone out, it would arrive before this.
        second.send(&publish(&will_topic, 1, 1, b"sentinel")).await;
        second.expect(&puback(1)).await;
        let p = watcher.recv().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            (will_topic.as_str(), &b"sentinel"[..]),
            "will published on a persistent takeover"
        );
    }
}
