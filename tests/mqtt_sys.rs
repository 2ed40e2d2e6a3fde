//! `$SYS` statistics topics.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    clients_connected_counts_us,
    version_and_uptime_published,
    message_counters_grow,
    protocol_errors_counted,
);

const SYS_EVERY_SECOND: &str = "[mqtt]\nsys_interval_s = 1\n";

fn number(payload: &[u8]) -> u64 {
    text(payload)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a decimal number: {:?}", text(payload)))
}

/// Subscribes to one `$SYS` topic and returns the client and the first value.
async fn watch(broker: &Broker, id: &str, topic: &str) -> (Client, String) {
    let mut c = Client::connect(broker, id).await;
    c.subscribe(topic, QoS::AtMostOnce).await;
    let p = c.recv().await;
    assert_eq!(p.topic, topic);
    (c, text(&p.payload))
}

/// Waits for a value of the watched counter that satisfies `ok`.
async fn wait_for(c: &mut Client, ok: impl Fn(u64) -> bool) {
    while !ok(number(&c.recv().await.payload)) {}
}

async fn clients_connected_counts_us(shards: usize) {
    let broker = Broker::start_with(shards, SYS_EVERY_SECOND);
    let (mut c, first) = watch(&broker, "sys", "$SYS/broker/clients/connected").await;
    // The first value may predate our connection; a later one includes us.
    if number(first.as_bytes()) == 0 {
        wait_for(&mut c, |n| n >= 1).await;
    }
}

async fn version_and_uptime_published(shards: usize) {
    let broker = Broker::start_with(shards, SYS_EVERY_SECOND);
    let (_, version) = watch(&broker, "v", "$SYS/broker/version").await;
    assert!(!version.trim().is_empty(), "empty version");
    let (_, uptime) = watch(&broker, "u", "$SYS/broker/uptime").await;
    let secs = uptime
        .strip_suffix(" seconds")
        .unwrap_or_else(|| panic!("uptime {uptime:?} is not \"N seconds\""));
    number(secs.as_bytes());
}

async fn message_counters_grow(shards: usize) {
    let broker = Broker::start_with(shards, SYS_EVERY_SECOND);
    let (mut received, r0) = watch(&broker, "r", "$SYS/broker/messages/received").await;
    let (mut sent, s0) = watch(&broker, "s", "$SYS/broker/messages/sent").await;
    let (r0, s0) = (number(r0.as_bytes()), number(s0.as_bytes()));

    let mut sub = Client::connect(&broker, "sub").await;
    sub.subscribe("count/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    for _ in 0..10 {
        publisher
            .publish("count/t", QoS::AtLeastOnce, false, b"x")
            .await;
    }
    for _ in 0..10 {
        sub.recv().await;
    }
    wait_for(&mut received, |n| n >= r0 + 10).await;
    wait_for(&mut sent, |n| n >= s0 + 10).await;
}

async fn protocol_errors_counted(shards: usize) {
    if shardmq_only() {
        return;
    }
    let broker = Broker::start_with(shards, SYS_EVERY_SECOND);
    let (mut errors, e0) = watch(&broker, "e", "$SYS/broker/clients/protocol_errors").await;
    let e0 = number(e0.as_bytes());
    for i in 0..3 {
        let mut raw = Raw::connect(&broker, &format!("bad-{i}")).await;
        raw.send(&[0x00, 0x00]).await;
        raw.expect_closed().await;
    }
    wait_for(&mut errors, |n| n >= e0 + 3).await;
}
