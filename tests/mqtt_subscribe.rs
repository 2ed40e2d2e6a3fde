//! SUBSCRIBE / UNSUBSCRIBE: wildcard matching, invalid filters, ordering of
//! SUBACK and retained messages, and `$SYS` isolation from wildcards.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    wildcard_matching,
    invalid_filter_closes_the_connection,
    suback_precedes_retained_messages,
    sys_topics_not_matched_by_leading_wildcards,
    unsubscribe_stops_delivery,
    resubscribe_replaces_subscription,
);

async fn wildcard_matching(shards: usize) {
    let broker = Broker::start(shards);
    let mut sub = Client::connect(&broker, "sub").await;
    for filter in ["w/+/x", "w/y/#", "+/only", "end"] {
        sub.subscribe(filter, QoS::AtMostOnce).await;
    }
    let topics = [
        ("w/a/x", true),
        ("w/a/x/z", false), // `+` is exactly one level
        ("w//x", true),     // `+` matches an empty level
        ("w/y", true),      // `#` also matches the parent level
        ("w/y/q/r", true),
        ("w/b/z", false),
        ("W/a/x", false), // case sensitive
        ("only", false),  // `+/only` needs two levels
        ("z/only", true),
        ("/only", true),
    ];
    let mut publisher = Client::connect(&broker, "pub").await;
    for (topic, _) in topics {
        publisher.publish(topic, QoS::AtLeastOnce, false, b"").await;
    }
    publisher.publish("end", QoS::AtLeastOnce, false, b"").await;
    let got: Vec<_> = sub
        .recv_until("end")
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    let want: Vec<_> = topics
        .iter()
        .filter(|(_, matches)| *matches)
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(got, want);
}

/// A malformed filter is a protocol violation, not a refusal: the
/// connection is closed with no SUBACK, even for the valid filters beside
/// it ([MQTT-4.7.1-2], [MQTT-4.7.1-3], §4.8). More cases, each with its
/// bytes, are in `mqtt_malformed.rs`.
async fn invalid_filter_closes_the_connection(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect(&broker, "sub").await;
    let filters = [("ok/1", 1), ("a/#/b", 0), ("a+", 2), ("#a", 0), ("ok/2", 2)];
    raw.send(&subscribe(7, &filters)).await;
    raw.expect_closed().await;
    // The same client id connects again and subscribes the valid ones.
    let mut raw = Raw::connect(&broker, "sub").await;
    raw.subscribe(8, &[("ok/1", 1), ("ok/2", 2)], &[1, 2]).await;
}

async fn suback_precedes_retained_messages(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = Client::connect(&broker, "pub").await;
    for topic in ["r/a", "r/b"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, true, topic.as_bytes())
            .await;
    }
    let mut raw = Raw::connect(&broker, "sub").await;
    // `subscribe` requires the SUBACK to be the very next packet.
    raw.subscribe(1, &[("r/+", 1)], &[1]).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = raw.recv_publish_acked().await;
        assert!(p.retain, "retained message without retain flag");
        got.push(text(&p.topic));
    }
    got.sort();
    assert_eq!(got, ["r/a", "r/b"]);
}

async fn sys_topics_not_matched_by_leading_wildcards(shards: usize) {
    let broker = Broker::start_with(shards, "[mqtt]\nsys_interval_s = 1\n");
    let mut wild = Client::connect(&broker, "wild").await;
    for filter in ["#", "+/broker/#", "+/+/uptime"] {
        wild.subscribe(filter, QoS::AtMostOnce).await;
    }
    // Two uptime updates seen by an explicit subscriber prove that $SYS
    // messages were published while the wildcard subscriptions existed.
    let mut sys = Client::connect(&broker, "sys").await;
    sys.subscribe("$SYS/broker/uptime", QoS::AtMostOnce).await;
    let first = sys.recv().await.payload;
    while sys.recv().await.payload == first {}

    wild.publish("sentinel", QoS::AtMostOnce, false, b"").await;
    let got: Vec<_> = wild
        .recv_until("sentinel")
        .await
        .into_iter()
        .map(|p| p.topic)
        .collect();
    assert!(got.is_empty(), "wildcards matched: {got:?}");
}

async fn unsubscribe_stops_delivery(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect(&broker, "sub").await;
    raw.subscribe(1, &[("u/a", 1), ("u/end", 0)], &[1, 0]).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("u/a", QoS::AtLeastOnce, false, b"1")
        .await;
    assert_eq!(raw.recv_publish_acked().await.payload, b"1");

    raw.send(&unsubscribe(2, &["u/a"])).await;
    raw.expect(&unsuback(2)).await;
    // Unsubscribing from something never subscribed is still acknowledged.
    raw.send(&unsubscribe(3, &["never/subscribed"])).await;
    raw.expect(&unsuback(3)).await;

    publisher
        .publish("u/a", QoS::AtLeastOnce, false, b"2")
        .await;
    publisher
        .publish("u/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got = raw.recv_until("u/end").await;
    assert!(got.is_empty(), "delivered after UNSUBACK: {got:?}");
}

async fn resubscribe_replaces_subscription(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect(&broker, "sub").await;
    raw.subscribe(1, &[("rs/t", 0), ("rs/end", 0)], &[0, 0])
        .await;
    // Same filter again: replaces the first one (new QoS), no second copy.
    raw.subscribe(2, &[("rs/t", 1)], &[1]).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("rs/t", QoS::AtLeastOnce, false, b"x")
        .await;
    publisher
        .publish("rs/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got: Vec<_> = raw
        .recv_until("rs/end")
        .await
        .into_iter()
        .map(|p| p.qos)
        .collect();
    assert_eq!(got, [1]);
}
