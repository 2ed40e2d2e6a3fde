//! The publish path: delivery across shards, QoS handshakes, retained
//! messages and overlapping subscriptions.

use std::time::Duration;

use crate::mqtt::broker::world_tests::{publish, Client, World, LIMITS};
use crate::mqtt::broker::CloseReason;
use crate::mqtt::codec::Packet;
use crate::mqtt::retained::RetainedLimits;
use crate::mqtt::session::SessionLimits;
use crate::mqtt::QoS;

#[test]
fn publish_reaches_subscriber_on_another_shard() {
    let mut w = World::new(2);
    let sub_id = w.id_on(0, "sub");
    let pub_id = w.id_on(1, "pub");
    let sub = w.connect(&sub_id);
    let publisher = w.connect(&pub_id);
    w.received(sub);
    w.received(publisher);
    w.subscribe(sub, "a/+", QoS::AtLeastOnce);
    assert_eq!(
        w.received(sub),
        vec![Packet::SubAck {
            pkid: 1,
            codes: vec![1]
        }]
    );
    w.send(publisher, publish("a/b", "hi", QoS::AtLeastOnce, false, 7));
    assert_eq!(w.received(publisher), vec![Packet::PubAck(7)]);
    let got = w.publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].pkid, got[0].qos, got[0].retain),
        (1, QoS::AtLeastOnce, false)
    );
    assert_eq!(&got[0].payload[..], b"hi");
}

#[test]
fn retained_is_replaced_and_cleared_everywhere() {
    let mut w = World::new(2);
    let p = w.connect(&w.id_on(0, "p"));
    w.send(p, publish("t", "1", QoS::AtMostOnce, true, 0));
    w.send(p, publish("t", "2", QoS::AtMostOnce, true, 0));
    assert_eq!(w.shards[1].retained_len(), 1);
    w.send(p, publish("t", "", QoS::AtMostOnce, true, 0));
    assert_eq!(w.shards[0].retained_len(), 0);
    assert_eq!(w.shards[1].retained_len(), 0);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let mut w = World::new(1);
    let c = w.connect("c");
    w.subscribe(c, "a/#", QoS::ExactlyOnce);
    w.subscribe(c, "a/+", QoS::AtLeastOnce);
    w.received(c);
    w.send(c, publish("a/b", "x", QoS::ExactlyOnce, false, 3));
    let got = w.publishes(c);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

#[test]
fn qos2_inbound_is_routed_once_until_pubrel() {
    let mut w = World::new(1);
    let s = w.connect("s");
    let p = w.connect("p");
    w.subscribe(s, "q", QoS::AtMostOnce);
    w.received(s);
    w.send(p, publish("q", "x", QoS::ExactlyOnce, false, 5));
    w.send(p, publish("q", "x", QoS::ExactlyOnce, false, 5));
    assert_eq!(w.publishes(s).len(), 1);
    w.received(p);
    w.send(p, Packet::PubRel(5));
    assert_eq!(w.received(p), vec![Packet::PubComp(5)]);
    w.send(p, publish("q", "y", QoS::ExactlyOnce, false, 5));
    assert_eq!(w.publishes(s).len(), 1, "the id is free again after PUBREL");
}

#[test]
fn qos2_ids_beyond_the_limit_close_the_connection_unacknowledged() {
    let limits = SessionLimits {
        max_awaiting_pubrel: 2,
        ..LIMITS
    };
    let mut w = World::with_limits(1, limits);
    let s = w.connect("s");
    let p = w.connect("p");
    w.subscribe(s, "q", QoS::AtMostOnce);
    w.received(s);
    w.received(p);
    w.send(p, publish("q", "1", QoS::ExactlyOnce, false, 1));
    w.send(p, publish("q", "2", QoS::ExactlyOnce, false, 2));
    // A resend of a held id is not a new one [MQTT-4.3.3-2].
    w.send(p, publish("q", "2", QoS::ExactlyOnce, false, 2));
    assert_eq!(
        w.received(p),
        vec![Packet::PubRec(1), Packet::PubRec(2), Packet::PubRec(2)]
    );
    assert!(w.shards[0].closing(p.conn).is_none());
    // A released id makes room.
    w.send(p, Packet::PubRel(1));
    w.send(p, publish("q", "3", QoS::ExactlyOnce, false, 3));
    assert_eq!(w.received(p), vec![Packet::PubComp(1), Packet::PubRec(3)]);
    // A third id awaiting PUBREL: closed, neither acknowledged nor routed.
    w.send(p, publish("q", "4", QoS::ExactlyOnce, false, 4));
    assert_eq!(
        w.shards[0].closing(p.conn),
        Some(CloseReason::LimitExceeded)
    );
    assert!(w.received(p).is_empty());
    assert_eq!(w.publishes(s).len(), 3);
    assert_eq!(w.shards[0].stats().limit_awaiting_pubrel_closed, 1);
}

#[test]
fn dollar_sys_is_not_writable_by_clients() {
    let mut w = World::new(1);
    let c = w.connect("c");
    w.subscribe(c, "$SYS/#", QoS::AtMostOnce);
    w.received(c);
    w.send(
        c,
        publish("$SYS/broker/fake", "1", QoS::AtMostOnce, false, 0),
    );
    assert!(w.publishes(c).is_empty());
}

/// A subscriber on shard 0 holding one delivery at `qos` (packet id 1),
/// published from shard 1.
fn one_delivery_in_flight(qos: QoS) -> (World, Client) {
    let mut w = World::new(2);
    let sub = w.connect(&w.id_on(0, "sub"));
    let publisher = w.connect(&w.id_on(1, "pub"));
    w.subscribe(sub, "acks", qos);
    w.received(sub);
    w.send(publisher, publish("acks", "x", qos, false, 9));
    let got = w.publishes(sub);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].pkid, got[0].qos), (1, qos));
    (w, sub)
}

/// Sends `acks` in order and checks that the last one, and only it, closed
/// the connection as a counted protocol violation.
fn assert_violation(qos: QoS, acks: &[Packet]) {
    let (mut w, sub) = one_delivery_in_flight(qos);
    let (last, before) = acks.split_last().expect("at least one ack");
    for ack in before {
        w.send(sub, ack.clone());
        assert_eq!(w.shards[0].closing(sub.conn), None, "{ack:?}");
    }
    w.send(sub, last.clone());
    assert_eq!(
        w.shards[0].closing(sub.conn),
        Some(CloseReason::ProtocolError),
        "{acks:?} at {qos:?}"
    );
    assert_eq!(w.shards[0].stats().protocol_errors, 1);
}

#[test]
fn pubrec_or_pubcomp_for_a_qos1_delivery_closes_mqtt_4_3_2_1() {
    assert_violation(QoS::AtLeastOnce, &[Packet::PubRec(1)]);
    assert_violation(QoS::AtLeastOnce, &[Packet::PubComp(1)]);
}

#[test]
fn puback_for_a_qos2_delivery_closes_mqtt_4_3_3_1() {
    assert_violation(QoS::ExactlyOnce, &[Packet::PubAck(1)]);
}

#[test]
fn pubcomp_before_pubrec_closes_mqtt_4_3_3_1() {
    assert_violation(QoS::ExactlyOnce, &[Packet::PubComp(1)]);
}

#[test]
fn puback_after_pubrec_closes_mqtt_4_3_3_1() {
    assert_violation(QoS::ExactlyOnce, &[Packet::PubRec(1), Packet::PubAck(1)]);
}

#[test]
fn acknowledgements_of_the_right_kind_keep_the_connection() {
    let (mut w, sub) = one_delivery_in_flight(QoS::ExactlyOnce);
    w.send(sub, Packet::PubRec(1));
    assert_eq!(w.received(sub), vec![Packet::PubRel(1)]);
    // A repeated PUBREC gets PUBREL again: ours may have been lost.
    w.send(sub, Packet::PubRec(1));
    assert_eq!(w.received(sub), vec![Packet::PubRel(1)]);
    w.send(sub, Packet::PubComp(1));
    // Late duplicates of finished flows are ignored.
    w.send(sub, Packet::PubComp(1));
    w.send(sub, Packet::PubAck(1));
    w.advance(Duration::from_secs(1));
    assert_eq!(w.shards[0].closing(sub.conn), None);
    assert!(w.received(sub).is_empty());
    assert_eq!(w.shards[0].stats().protocol_errors, 0);
}

#[test]
fn unsolicited_pubrec_is_answered_with_pubrel() {
    // The client finishes a flow this broker no longer knows: it gets the
    // PUBREL it waits for, and the connection stays.
    let mut w = World::new(1);
    let c = w.connect("c");
    w.received(c);
    w.send(c, Packet::PubRec(0x1234));
    assert_eq!(w.received(c), vec![Packet::PubRel(0x1234)]);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.shards[0].closing(c.conn), None);
    assert_eq!(w.shards[0].stats().protocol_errors, 0);
}

#[test]
fn retained_store_limits_refuse_new_topics_but_deliver() {
    let mut w = World::new(2);
    for shard in &mut w.shards {
        shard.config.retained = RetainedLimits {
            max_messages: 2,
            max_bytes: 20,
        };
    }
    let sub = w.connect(&w.id_on(0, "sub"));
    let publisher = w.connect(&w.id_on(1, "pub"));
    w.subscribe(sub, "r/#", QoS::AtMostOnce);
    w.received(sub);
    // Bytes are topic names and payloads: 3 + 5, then 3 + 1.
    w.send(publisher, publish("r/a", "11111", QoS::AtMostOnce, true, 0));
    w.send(publisher, publish("r/b", "2", QoS::AtMostOnce, true, 0));
    // A third topic: delivered, not retained anywhere.
    w.send(publisher, publish("r/c", "3", QoS::AtMostOnce, true, 0));
    let got = w.publishes(sub);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|p| !p.retain), "live deliveries");
    assert!(w.shards.iter().all(|s| s.retained_len() == 2));
    // A replacement within the bytes is retained (12 - 4 + 8 = 16).
    w.send(publisher, publish("r/b", "22222", QoS::AtMostOnce, true, 0));
    // One beyond them (16 - 8 + 16 = 24) is delivered, and the older
    // message goes too [MQTT-3.3.1-7]: no stale value stays retained.
    w.send(
        publisher,
        publish("r/a", "1111111111111", QoS::AtMostOnce, true, 0),
    );
    assert_eq!(w.publishes(sub).len(), 2);
    for shard in &w.shards {
        assert_eq!(shard.retained_len(), 1);
        assert!(shard.retained.get("r/a").is_none());
        assert_eq!(
            shard.retained.get("r/b").map(|m| &m.payload[..]),
            Some(&b"22222"[..])
        );
    }
    assert_eq!(w.shards[1].stats().limit_retained_refused, 2);
    // Clearing is always allowed, and makes room for a new topic.
    w.send(publisher, publish("r/b", "", QoS::AtMostOnce, true, 0));
    w.send(publisher, publish("r/c", "3", QoS::AtMostOnce, true, 0));
    assert!(w.shards.iter().all(|s| s.retained.get("r/c").is_some()));
}

#[test]
fn an_offline_queue_past_its_bytes_drops_and_counts() {
    let limits = SessionLimits {
        max_queued_bytes: 10,
        ..LIMITS
    };
    let mut w = World::with_limits(2, limits);
    let sub_id = w.id_on(0, "sub");
    let sub = w.connect_with(&sub_id, false, 0, None);
    w.subscribe(sub, "q/1", QoS::AtLeastOnce);
    w.shards[0].connection_lost(sub.conn);
    let publisher = w.connect(&w.id_on(1, "pub"));
    // "q/1" and 3 bytes: 6 a message, so only the first is queued.
    for pkid in 1..=3 {
        w.send(
            publisher,
            publish("q/1", "abc", QoS::AtLeastOnce, false, pkid),
        );
    }
    let stats = w.shards[0].stats();
    assert_eq!(stats.limit_queued_bytes_dropped, 2);
    assert_eq!(stats.messages_dropped, 2);
    let sub = w.connect_with(&sub_id, false, 0, None);
    assert_eq!(w.publishes(sub).len(), 1);
}

#[test]
fn the_shard_bound_on_queued_bytes_spans_sessions() {
    let mut w = World::new(1);
    w.shards[0].config.max_queued_bytes_shard = 10;
    let a = w.connect_with("a", false, 0, None);
    let b = w.connect_with("b", false, 0, None);
    w.subscribe(a, "q/1", QoS::AtLeastOnce);
    w.subscribe(b, "q/1", QoS::AtLeastOnce);
    w.shards[0].connection_lost(a.conn);
    w.shards[0].connection_lost(b.conn);
    let publisher = w.connect("pub");
    // 6 bytes a message: a's copy fits, b's would pass 10.
    w.send(publisher, publish("q/1", "abc", QoS::AtLeastOnce, false, 1));
    assert_eq!(w.shards[0].queued.bytes, 6);
    assert_eq!(w.shards[0].stats().limit_queued_bytes_dropped, 1);
    // a comes back: its queue drains and frees the shard's bytes.
    let a = w.connect_with("a", false, 0, None);
    assert_eq!(w.publishes(a).len(), 1);
    assert_eq!(w.shards[0].queued.bytes, 0);
    w.send(publisher, publish("q/1", "def", QoS::AtLeastOnce, false, 2));
    assert_eq!(w.shards[0].queued.bytes, 6, "b's copy is queued now");
    // A session that ends takes its bytes with it.
    let b = w.connect_with("b", true, 0, None);
    assert!(w.publishes(b).is_empty());
    assert_eq!(w.shards[0].queued.bytes, 0);
}

#[test]
fn the_shard_bound_on_queued_messages_spans_sessions() {
    let mut w = World::new(1);
    w.shards[0].config.max_queued_messages_shard = 3;
    let a = w.connect_with("a", false, 0, None);
    let b = w.connect_with("b", false, 0, None);
    w.subscribe(a, "q/1", QoS::AtLeastOnce);
    w.subscribe(b, "q/1", QoS::AtLeastOnce);
    w.shards[0].connection_lost(a.conn);
    w.shards[0].connection_lost(b.conn);
    let publisher = w.connect("pub");
    // Two copies each: the fourth finds the shard's three taken.
    for pkid in 1..=2 {
        w.send(
            publisher,
            publish("q/1", "m", QoS::AtLeastOnce, false, pkid),
        );
    }
    assert_eq!(w.shards[0].queued.messages, 3);
    let stats = w.shards[0].stats();
    assert_eq!(stats.limit_queued_messages_dropped, 1);
    assert_eq!(stats.messages_dropped, 1);
    let a = w.connect_with("a", false, 0, None);
    assert_eq!(w.publishes(a).len(), 2);
    assert_eq!(w.shards[0].queued.messages, 1);
}
