//! Shutdown: every connection closes, wills published unless switched off,
//! outboxes kept for the shell to flush.

use bytes::Bytes;

use crate::mqtt::broker::world_tests::{publish, World};
use crate::mqtt::broker::CloseReason;
use crate::mqtt::codec::{LastWill, Packet};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

fn will(topic: &str) -> LastWill {
    LastWill {
        topic: TopicName::from_string(topic.into()).unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    }
}

/// Shuts shard 0 down with a client holding a will; returns the wills a
/// watcher on shard 1 got.
fn wills_after_shutdown(publish_wills: bool) -> Vec<String> {
    let mut w = World::new(2);
    let watcher = w.connect(&w.id_on(1, "w"));
    w.subscribe(watcher, "will/#", QoS::AtMostOnce);
    w.received(watcher);
    let dev = w.connect_with(&w.id_on(0, "dev"), true, 0, Some(will("will/dev")));
    w.shards[0].shut_down(publish_wills);
    w.settle();
    assert_eq!(
        w.shards[0].closing(dev.conn),
        Some(CloseReason::Shutdown {
            will: publish_wills
        })
    );
    assert_eq!(w.shards[1].closing(watcher.conn), None, "shard 1 runs on");
    w.publishes(watcher)
        .iter()
        .map(|p| p.topic.as_str().to_string())
        .collect()
}

#[test]
fn a_clean_shutdown_publishes_the_wills_mqtt_3_1_2_8() {
    // The connection closes without the client's DISCONNECT: the will
    // MUST be published [MQTT-3.1.2-8], whoever closed it.
    assert_eq!(wills_after_shutdown(true), ["will/dev"]);
}

#[test]
fn will_on_shutdown_false_keeps_them() {
    assert!(wills_after_shutdown(false).is_empty());
}

#[test]
fn shutdown_closes_every_connection_and_keeps_their_outboxes() {
    let mut w = World::new(1);
    let sub = w.connect(&w.id_on(0, "sub"));
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    w.received(sub);
    let publisher = w.connect(&w.id_on(0, "pub"));
    w.send(publisher, publish("t", "last", QoS::AtMostOnce, false, 0));
    assert_eq!(w.shards[0].connections(), 2);
    w.shards[0].shut_down(false);
    for c in [sub, publisher] {
        assert!(w.shards[0].closing(c.conn).is_some());
    }
    // What was queued before the stop is still there to be written.
    let got = w.received(sub);
    assert!(
        matches!(got.as_slice(), [Packet::Publish(p)] if &p.payload[..] == b"last"),
        "{got:?}"
    );
    // Released by the shell as their sockets close.
    w.shards[0].release(sub.conn);
    w.shards[0].release(publisher.conn);
    assert_eq!(w.shards[0].connections(), 0);
    // A second call finds nothing left to close.
    w.shards[0].shut_down(true);
}

#[test]
fn quiesce_waits_until_the_other_shards_have_the_wills() {
    let mut w = World::new(2);
    let mut retained = will("will/dev");
    retained.retain = true;
    let dev = w.connect_with(&w.id_on(0, "dev"), true, 0, Some(retained));
    w.shards[0].shut_down(true);
    w.shards[0].release(dev.conn);
    w.shards[0].quiesce();
    assert!(!w.shards[0].quiesced(), "shard 1 has not answered yet");
    w.settle();
    assert!(w.shards[0].quiesced());
    // Shard 1 handled the will's copy before its answer: its replica of
    // the retained store has it.
    let reader = w.connect(&w.id_on(1, "reader"));
    w.subscribe(reader, "will/#", QoS::AtMostOnce);
    let got: Vec<String> = w
        .publishes(reader)
        .iter()
        .map(|p| p.topic.as_str().to_string())
        .collect();
    assert_eq!(got, ["will/dev"]);
}

#[test]
fn one_shard_is_quiesced_at_once() {
    let mut w = World::new(1);
    w.shards[0].shut_down(true);
    w.shards[0].quiesce();
    assert!(w.shards[0].quiesced());
}
