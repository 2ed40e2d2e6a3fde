//! Will messages and keepalive.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

shard_tests!(
    will_on_keepalive_expiry,
    keepalive_kept_by_pings,
    will_on_socket_close,
    will_on_protocol_violation,
    no_will_after_disconnect,
    retained_will,
);

/// A raw CONNECT for `id` carrying a QoS 1 will on `will/<id>`.
fn with_will<'a>(id: &'a str, topic: &'a str) -> Connect<'a> {
    Connect {
        will: Some((topic, b"gone", 1, false)),
        ..Connect::new(id)
    }
}

/// A client watching `will/#`.
async fn watcher(broker: &Broker) -> Client {
    let mut w = Client::connect(broker, "watcher").await;
    w.subscribe("will/#", QoS::AtLeastOnce).await;
    w
}

async fn expect_will(watcher: &mut Client, topic: &str) {
    let p = watcher.recv().await;
    assert_eq!(
        (p.topic.as_str(), text(&p.payload).as_str(), p.qos),
        (topic, "gone", QoS::AtLeastOnce)
    );
}

async fn will_on_keepalive_expiry(shards: usize) {
    let broker = Broker::start(shards);
    let mut watcher = watcher(&broker).await;
    let connect = Connect {
        keepalive: 1,
        ..with_will("sleepy-raw", "will/sleepy-raw")
    };
    let mut raw = Raw::connect_with(&broker, &connect).await;
    // A rumqttc client is silent too while its event loop is not polled.
    let opts = options(&broker, "sleepy-rumqttc").keepalive_secs(1).will(
        "will/sleepy-rumqttc",
        "gone",
        QoS::AtLeastOnce,
        false,
    );
    let _idle = Client::connect_with(opts).await;
    // Silent past 1.5 × keepalive: the broker must drop both and send wills.
    raw.expect_closed().await;
    let mut topics = [watcher.recv().await.topic, watcher.recv().await.topic];
    topics.sort();
    assert_eq!(topics, ["will/sleepy-raw", "will/sleepy-rumqttc"]);
}

async fn keepalive_kept_by_pings(shards: usize) {
    let broker = Broker::start(shards);
    let connect = Connect {
        keepalive: 1,
        ..Connect::new("pinger")
    };
    let mut raw = Raw::connect_with(&broker, &connect).await;
    // Well past 1.5 s in total, but never more than 0.4 s silent.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        raw.ping().await;
    }
}

async fn will_on_socket_close(shards: usize) {
    let broker = Broker::start(shards);
    let mut watcher = watcher(&broker).await;
    for i in 0..4 {
        let id = format!("vanish-{i}");
        let topic = format!("will/{id}");
        if i % 2 == 0 {
            drop(Raw::connect_with(&broker, &with_will(&id, &topic)).await);
        } else {
            let opts = options(&broker, &id).will(&topic, "gone", QoS::AtLeastOnce, false);
            Client::connect_with(opts).await.drop_connection();
        }
        expect_will(&mut watcher, &topic).await;
    }
}

async fn will_on_protocol_violation(shards: usize) {
    let broker = Broker::start(shards);
    let mut watcher = watcher(&broker).await;
    let mut violations = vec![
        ("reserved-type", vec![0x00, 0x00]),
        ("qos3", vec![0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]),
    ];
    // mosquitto drops the will when the violation is a second CONNECT.
    if !is_mosquitto() {
        violations.push(("second-connect", Connect::new("x").encode()));
    }
    for (name, bytes) in violations {
        let id = format!("rude-{name}");
        let topic = format!("will/{id}");
        let mut raw = Raw::connect_with(&broker, &with_will(&id, &topic)).await;
        raw.send(&bytes).await;
        raw.expect_closed().await;
        expect_will(&mut watcher, &topic).await;
    }
}

async fn no_will_after_disconnect(shards: usize) {
    let broker = Broker::start(shards);
    let mut watcher = watcher(&broker).await;
    for i in 0..4 {
        let id = format!("polite-{i}");
        let topic = format!("will/{id}");
        let mut raw = Raw::connect_with(&broker, &with_will(&id, &topic)).await;
        raw.send(&DISCONNECT).await;
        raw.expect_closed().await;
        // The same id connects again and publishes on the will topic: a will
        // from the first connection would have been sent before this.
        let mut again = Raw::connect(&broker, &id).await;
        again.send(&publish(&topic, 1, 1, b"sentinel")).await;
        again.expect(&puback(1)).await;
        let p = watcher.recv().await;
        assert_eq!(
            text(&p.payload),
            "sentinel",
            "will published after DISCONNECT"
        );
    }
}

async fn retained_will(shards: usize) {
    let broker = Broker::start(shards);
    let mut watcher = watcher(&broker).await;
    let connect = Connect {
        will: Some(("will/kept", b"gone", 1, true)),
        ..Connect::new("retainer")
    };
    drop(Raw::connect_with(&broker, &connect).await);
    let live = watcher.recv().await;
    assert_eq!((live.topic.as_str(), live.retain), ("will/kept", false));
    // A later subscriber gets it as a retained message.
    let mut late = Client::connect(&broker, "late").await;
    late.subscribe("will/kept", QoS::AtLeastOnce).await;
    let p = late.recv().await;
    assert_eq!((text(&p.payload).as_str(), p.retain), ("gone", true));
}
