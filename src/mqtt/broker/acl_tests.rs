//! Access control in the broker: SUBACK 0x80, denied PUBLISHes
//! acknowledged and dropped, deliveries (retained included) filtered.

use std::sync::Arc;

use crate::mqtt::broker::world_tests::{publish, TestAccess, World};
use crate::mqtt::codec::{LastWill, Packet, Subscribe};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

fn reader() -> TestAccess {
    TestAccess {
        read: vec!["a/#", "test/#"],
        write: vec![],
        deny: vec!["a/secret", "test/nosubscribe"],
    }
}

fn writer() -> TestAccess {
    TestAccess {
        write: vec!["a/#", "test/#"],
        ..TestAccess::default()
    }
}

#[test]
fn denied_filter_gets_0x80_and_the_others_are_granted() {
    let mut w = World::new(2);
    let c = w.connect_access(&w.id_on(1, "r"), reader());
    w.received(c);
    w.send(
        c,
        Packet::Subscribe(Subscribe {
            pkid: 3,
            filters: vec![
                ("a/+".to_string(), QoS::AtLeastOnce),
                ("test/nosubscribe".to_string(), QoS::AtMostOnce),
                ("b/#".to_string(), QoS::AtMostOnce),
                ("#".to_string(), QoS::AtMostOnce),
                ("test/#".to_string(), QoS::ExactlyOnce),
            ],
        }),
    );
    // One code per filter, in order, 0x80 for each refused one
    // [MQTT-3.8.4-5] [MQTT-3.9.3-1].
    assert_eq!(
        w.received(c),
        vec![Packet::SubAck {
            pkid: 3,
            codes: vec![1, 0x80, 0x80, 0x80, 2]
        }]
    );
    assert_eq!(w.shards[1].stats().acl_subscribe_denied, 3);
}

#[test]
fn denied_publish_is_acknowledged_and_dropped_at_every_qos() {
    let mut w = World::new(2);
    let sub = w.connect(&w.id_on(0, "open"));
    w.subscribe(sub, "#", QoS::ExactlyOnce);
    w.received(sub);
    let p = w.connect_access(&w.id_on(1, "w"), reader());
    w.received(p);
    // A PUBLISH the server does not authorize is acknowledged by the
    // normal QoS rules [MQTT-3.3.5-2]: PUBACK at QoS 1 [MQTT-4.3.2-2],
    // PUBREC then PUBCOMP at QoS 2 [MQTT-4.3.3-2].
    w.send(p, publish("a/x", "0", QoS::AtMostOnce, false, 0));
    w.send(p, publish("a/x", "1", QoS::AtLeastOnce, false, 7));
    assert_eq!(w.received(p), vec![Packet::PubAck(7)]);
    w.send(p, publish("a/x", "2", QoS::ExactlyOnce, false, 8));
    assert_eq!(w.received(p), vec![Packet::PubRec(8)]);
    w.send(p, Packet::PubRel(8));
    assert_eq!(w.received(p), vec![Packet::PubComp(8)]);
    // A retained one is not stored either.
    w.send(p, publish("a/kept", "r", QoS::AtLeastOnce, true, 9));
    assert_eq!(w.received(p), vec![Packet::PubAck(9)]);
    assert!(w.publishes(sub).is_empty(), "nothing was routed");
    assert_eq!(w.shards[0].retained_len(), 0);
    assert_eq!(w.shards[1].retained_len(), 0);
    assert_eq!(w.shards[1].stats().acl_publish_denied, 4);
}

#[test]
fn allowed_publish_is_routed() {
    let mut w = World::new(2);
    let sub = w.connect(&w.id_on(0, "open"));
    w.subscribe(sub, "a/#", QoS::AtMostOnce);
    w.received(sub);
    let p = w.connect_access(&w.id_on(1, "w"), writer());
    w.send(p, publish("a/x", "ok", QoS::AtLeastOnce, false, 1));
    let got = w.publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic.as_str(), "a/x");
}

#[test]
fn denied_reads_are_not_delivered_live_or_retained() {
    let mut w = World::new(2);
    let p = w.connect(&w.id_on(0, "open"));
    w.send(p, publish("a/secret", "s", QoS::AtLeastOnce, true, 1));
    w.send(p, publish("a/open", "o", QoS::AtLeastOnce, true, 2));
    // The reader is on the other shard: the filter runs where it lives.
    let r = w.connect_access(&w.id_on(1, "r"), reader());
    w.subscribe(r, "a/#", QoS::AtLeastOnce);
    let packets = w.received(r);
    let topics: Vec<(String, bool)> = packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.as_str().to_string(), p.retain)),
            _ => None,
        })
        .collect();
    assert_eq!(topics, [("a/open".to_string(), true)]);
    w.send(p, publish("a/secret", "s2", QoS::AtMostOnce, false, 0));
    w.send(p, publish("a/open", "o2", QoS::AtMostOnce, false, 0));
    let live: Vec<String> = w
        .publishes(r)
        .iter()
        .map(|p| p.topic.as_str().to_string())
        .collect();
    assert_eq!(live, ["a/open"]);
    assert_eq!(w.shards[1].stats().acl_receive_denied, 2);
}

#[test]
fn a_will_the_client_may_not_publish_is_dropped() {
    let mut w = World::new(1);
    let sub = w.connect("watcher");
    w.subscribe(sub, "#", QoS::AtMostOnce);
    w.received(sub);
    let id = "dying";
    let may_will = TestAccess {
        write: vec!["wills/dying"],
        ..TestAccess::default()
    };
    // The will goes out where the client may publish, and not elsewhere.
    for (topic, published) in [("wills/dying", true), ("elsewhere", false)] {
        let connect = crate::mqtt::codec::Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive_s: 0,
            client_id: id.to_string(),
            username: None,
            password: None,
            will: Some(LastWill {
                topic: TopicName::from_string(topic.to_string()).unwrap(),
                payload: bytes::Bytes::from_static(b"bye"),
                qos: QoS::AtMostOnce,
                retain: false,
            }),
        };
        let now = w.now;
        let conn = w.shards[0].connect_with_acl(now, connect, Some(Arc::new(may_will.clone())));
        w.shards[0].connection_lost(conn);
        w.settle();
        assert_eq!(w.publishes(sub).len(), usize::from(published), "{topic}");
    }
    assert_eq!(w.shards[0].stats().acl_publish_denied, 1);
}

#[test]
fn clients_without_an_acl_are_unaffected() {
    let mut w = World::new(1);
    let sub = w.connect("s");
    w.subscribe(sub, "#", QoS::AtMostOnce);
    let p = w.connect("p");
    w.send(p, publish("a/secret", "x", QoS::AtMostOnce, false, 0));
    assert_eq!(w.publishes(sub).len(), 1);
}

#[test]
fn shard_zero_sums_the_counters_without_sys() {
    let mut w = World::new(2);
    let p = w.connect_access(&w.id_on(1, "w"), reader());
    w.send(p, publish("a/x", "0", QoS::AtMostOnce, false, 0));
    w.shards[1].note_auth_refused(crate::mqtt::broker::AuthRefusal::BadCredentials);
    assert_eq!(w.shards[0].totals().acl_publish_denied, 0);
    w.advance(std::time::Duration::from_secs(6));
    let totals = w.shards[0].totals();
    assert_eq!(totals.acl_publish_denied, 1);
    assert_eq!(totals.auth_bad_credentials, 1);
    let mut text = String::new();
    totals.write_metrics(&mut text);
    assert!(
        text.contains("shardmq_acl_publish_denied_total 1\n"),
        "{text}"
    );
}
