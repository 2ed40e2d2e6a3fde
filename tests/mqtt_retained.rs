//! Retained messages: stored, delivered on subscribe with RETAIN set,
//! replaced, cleared, and not flagged on normal delivery.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    retained_delivered_to_later_subscribers,
    live_delivery_has_retain_flag_clear,
    retained_replaced_by_newer,
    retained_cleared_by_empty_payload,
);

async fn retained_delivered_to_later_subscribers(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = Client::connect(&broker, "pub").await;
    for topic in ["ret/a", "ret/b", "ret/c/d"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, true, topic.as_bytes())
            .await;
    }
    // Several subscriber ids, so that with 4 shards the retained store is
    // read from shards other than the publisher's.
    for i in 0..4 {
        let mut sub = Client::connect(&broker, &format!("late-{i}")).await;
        sub.subscribe("ret/+", QoS::AtMostOnce).await;
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = sub.recv().await;
            assert!(p.retain, "retained delivery without RETAIN flag");
            assert_eq!(p.qos, QoS::AtMostOnce, "QoS is min(publish, subscription)");
            got.push((p.topic, text(&p.payload)));
        }
        got.sort();
        assert_eq!(
            got,
            [
                ("ret/a".into(), "ret/a".into()),
                ("ret/b".into(), "ret/b".into())
            ]
        );
    }
}

async fn live_delivery_has_retain_flag_clear(shards: usize) {
    let broker = Broker::start(shards);
    let mut sub = Client::connect(&broker, "sub").await;
    sub.subscribe("live/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("live/t", QoS::AtLeastOnce, true, b"v")
        .await;
    let p = sub.recv().await;
    assert_eq!(&p.payload[..], b"v");
    assert!(
        !p.retain,
        "RETAIN must be 0 when forwarding to an existing subscriber"
    );
}

async fn retained_replaced_by_newer(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = Client::connect(&broker, "pub").await;
    for v in ["v1", "v2", "v3"] {
        publisher
            .publish("rep/t", QoS::AtLeastOnce, true, v.as_bytes())
            .await;
    }
    let mut raw = Raw::connect(&broker, "sub").await;
    raw.subscribe(1, &[("rep/t", 1)], &[1]).await;
    let p = raw.recv_publish_acked().await;
    assert_eq!((text(&p.payload), p.retain), ("v3".into(), true));
    // Nothing else was retained: the next message is our own live one.
    raw.send(&publish("rep/t", 0, 0, b"live")).await;
    let p = raw.recv_publish_acked().await;
    assert_eq!((text(&p.payload), p.retain), ("live".into(), false));
}

async fn retained_cleared_by_empty_payload(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("clr/t", QoS::AtLeastOnce, true, b"old")
        .await;
    publisher
        .publish("clr/t", QoS::AtLeastOnce, true, b"")
        .await;
    for i in 0..4 {
        let mut raw = Raw::connect(&broker, &format!("sub-{i}")).await;
        raw.subscribe(1, &[("clr/#", 1)], &[1]).await;
        // Our own live message must be the first thing delivered: neither
        // the old value nor an empty retained message may come first.
        raw.send(&publish("clr/t", 0, 0, b"live")).await;
        let p = raw.recv_publish_acked().await;
        assert_eq!(
            (text(&p.payload), p.retain),
            ("live".into(), false),
            "retained message not cleared"
        );
    }
}
