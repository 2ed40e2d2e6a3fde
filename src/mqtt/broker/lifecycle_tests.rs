//! Connections and sessions: takeover, resume, clean sessions, keepalive,
//! wills and refusals.

use std::time::Duration;

use bytes::Bytes;

use crate::mqtt::broker::world_tests::{connack, publish, World};
use crate::mqtt::broker::CloseReason;
use crate::mqtt::codec::{Connect, ConnectReturnCode, LastWill, Packet};
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

/// Takes the id `dev` over from a connection with clean session
/// `old_clean` and a will by one with `new_clean`; returns the wills a
/// watcher on another shard got, and the new CONNACK's session present.
fn will_topics_after_takeover(old_clean: bool, new_clean: bool) -> (Vec<String>, bool) {
    let mut w = World::new(2);
    let watcher = w.connect(&w.id_on(1, "w"));
    w.subscribe(watcher, "will/#", QoS::AtMostOnce);
    w.received(watcher);
    let id = w.id_on(0, "dev");
    let old = w.connect_with(&id, old_clean, 0, Some(will("will/dev")));
    let new = w.connect_with(&id, new_clean, 0, None);
    assert_eq!(w.shards[0].closing(old.conn), Some(CloseReason::TakenOver));
    assert_eq!(w.shards[0].closing(new.conn), None);
    let (present, _) = connack(&w.received(new));
    let topics = w
        .publishes(watcher)
        .iter()
        .map(|p| p.topic.as_str().to_string())
        .collect();
    (topics, present)
}

#[test]
fn takeover_publishes_the_old_will_mqtt_3_1_2_8() {
    // The old network connection closes without DISCONNECT, so its will
    // goes out, whichever side asked for a clean session.
    for (old_clean, new_clean) in [(true, true), (true, false), (false, true)] {
        let (topics, _) = will_topics_after_takeover(old_clean, new_clean);
        assert_eq!(
            topics,
            ["will/dev"],
            "old clean {old_clean}, new clean {new_clean}"
        );
    }
}

#[test]
fn takeover_of_a_persistent_session_by_a_persistent_one_keeps_the_will() {
    // Both clean session 0: the session goes on, and the will is discarded
    // with the old connection, as mosquitto does.
    let (topics, present) = will_topics_after_takeover(false, false);
    assert!(present, "the session went on");
    assert!(topics.is_empty(), "will published: {topics:?}");
}

#[test]
fn keepalive_expiry_publishes_the_will_and_disconnect_does_not() {
    let mut w = World::new(2);
    let watcher = w.connect(&w.id_on(1, "w"));
    w.subscribe(watcher, "will/+", QoS::AtMostOnce);
    w.received(watcher);
    let will = |t: &str| LastWill {
        topic: TopicName::from_string(t.into()).unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let quiet = w.connect_with(&w.id_on(0, "quiet"), true, 2, Some(will("will/quiet")));
    let polite = w.connect_with(&w.id_on(0, "polite"), true, 2, Some(will("will/polite")));
    w.send(polite, Packet::Disconnect);
    w.advance(Duration::from_millis(2900));
    assert_eq!(
        w.shards[0].closing(quiet.conn),
        None,
        "1.5 × keepalive not yet over"
    );
    w.advance(Duration::from_millis(200));
    assert_eq!(
        w.shards[0].closing(quiet.conn),
        Some(CloseReason::KeepaliveExpired)
    );
    let got = w.publishes(watcher);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "will/quiet");
}

#[test]
fn persistent_session_queues_offline_and_resumes() {
    let mut w = World::new(2);
    let id = w.id_on(1, "persist");
    let p = w.connect(&w.id_on(0, "p"));
    let c = w.connect_with(&id, false, 0, None);
    assert_eq!(
        connack(&w.received(c)),
        (false, ConnectReturnCode::Accepted)
    );
    w.subscribe(c, "s/#", QoS::ExactlyOnce);
    w.shards[1].connection_lost(c.conn);
    w.shards[1].release(c.conn);
    w.send(p, publish("s/1", "q0", QoS::AtMostOnce, false, 0));
    w.send(p, publish("s/2", "q1", QoS::AtLeastOnce, false, 1));
    w.send(p, publish("s/3", "q2", QoS::ExactlyOnce, false, 2));
    let c = w.connect_with(&id, false, 0, None);
    let packets = w.received(c);
    assert_eq!(connack(&packets), (true, ConnectReturnCode::Accepted));
    let payloads: Vec<_> = packets[1..]
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.pkid, p.qos, p.payload.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        payloads,
        vec![
            (1, QoS::AtLeastOnce, Bytes::from_static(b"q1")),
            (2, QoS::ExactlyOnce, Bytes::from_static(b"q2")),
        ]
    );
}

#[test]
fn clean_session_discards_subscriptions_and_routes() {
    let mut w = World::new(2);
    let id = w.id_on(1, "gone");
    let c = w.connect(&id);
    w.subscribe(c, "x/y", QoS::AtMostOnce);
    w.shards[1].connection_lost(c.conn);
    w.settle();
    let mut targets = 0u64;
    w.shards[0]
        .routes
        .for_each_match("x/y", |s, _| targets |= 1 << s.0);
    assert_eq!(targets, 0, "shard 1's route was withdrawn");
    let c = w.connect(&id);
    assert_eq!(
        connack(&w.received(c)),
        (false, ConnectReturnCode::Accepted)
    );
}

#[test]
fn refusals_and_violations() {
    let mut w = World::new(1);
    let c = w.connect_with("", false, 0, None);
    assert_eq!(
        connack(&w.received(c)),
        (false, ConnectReturnCode::IdentifierRejected)
    );
    assert_eq!(w.shards[0].closing(c.conn), Some(CloseReason::Refused));
    let c = w.connect("dup");
    let again = Packet::Connect(Box::new(Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive_s: 0,
        client_id: "dup".into(),
        username: None,
        password: None,
        will: None,
    }));
    w.send(c, again);
    assert_eq!(
        w.shards[0].closing(c.conn),
        Some(CloseReason::ProtocolError)
    );
    assert_eq!(w.shards[0].stats().protocol_errors, 1);
}
