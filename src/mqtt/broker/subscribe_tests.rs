//! SUBSCRIBE and UNSUBSCRIBE, and the barrier that orders a SUBACK after
//! every route update and retained message.

use crate::mqtt::broker::world_tests::{publish, World, LIMITS};
use crate::mqtt::codec::{Packet, Subscribe, Unsubscribe};
use crate::mqtt::session::SessionLimits;
use crate::mqtt::QoS;

#[test]
fn suback_waits_for_the_barrier_and_precedes_retained() {
    let mut w = World::new(3);
    let pub_id = w.id_on(2, "pub");
    let sub_id = w.id_on(0, "sub");
    let publisher = w.connect(&pub_id);
    w.send(publisher, publish("r/x", "kept", QoS::AtLeastOnce, true, 1));
    let sub = w.connect(&sub_id);
    w.received(sub);
    // Step by hand: before the barrier answers, nothing is written.
    w.shards[0].handle_packet(
        w.now,
        sub.conn,
        Packet::Subscribe(Subscribe {
            pkid: 9,
            filters: vec![("r/#".to_string(), QoS::ExactlyOnce)],
        }),
    );
    assert!(w.shards[0].is_paused(sub.conn));
    assert!(w.shards[0].outbox_mut(sub.conn).unwrap().is_empty());
    w.settle();
    let packets = w.received(sub);
    assert_eq!(packets.len(), 2, "{packets:?}");
    assert!(matches!(packets[0], Packet::SubAck { pkid: 9, .. }));
    match &packets[1] {
        Packet::Publish(p) => {
            assert!(p.retain);
            assert_eq!(p.qos, QoS::AtLeastOnce, "min(retained QoS 1, granted 2)");
        }
        other => panic!("expected the retained message, got {other:?}"),
    }
    assert!(!w.shards[0].is_paused(sub.conn));
}

#[test]
fn message_acknowledged_before_subscribe_arrives_once_as_retained() {
    let mut w = World::new(2);
    let publisher = w.connect(&w.id_on(1, "pub"));
    let sub = w.connect(&w.id_on(0, "sub"));
    w.received(sub);
    w.received(publisher);
    // The PUBACK is written while the copy for shard 0 is still in flight.
    w.shards[1].handle_packet(
        w.now,
        publisher.conn,
        publish("race/1", "v", QoS::AtLeastOnce, true, 4),
    );
    w.collect();
    assert_eq!(w.received(publisher), vec![Packet::PubAck(4)]);
    w.subscribe(sub, "race/1", QoS::AtLeastOnce);
    let packets = w.received(sub);
    assert_eq!(
        packets.len(),
        2,
        "SUBACK and one retained copy: {packets:?}"
    );
    assert!(matches!(packets[0], Packet::SubAck { .. }));
    assert!(matches!(&packets[1], Packet::Publish(p) if p.retain));
    // Once active, the subscription gets live copies.
    w.send(
        publisher,
        publish("race/1", "w", QoS::AtLeastOnce, false, 5),
    );
    let got = w.publishes(sub);
    assert_eq!(got.len(), 1);
    assert!(!got[0].retain);
}

#[test]
fn unsubscribe_while_the_barrier_is_pending_leaves_nothing_active() {
    let mut w = World::new(2);
    let publisher = w.connect(&w.id_on(1, "pub"));
    let sub = w.connect(&w.id_on(0, "sub"));
    let subscribe = Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![("u/1".to_string(), QoS::AtMostOnce)],
    });
    w.shards[0].handle_packet(w.now, sub.conn, subscribe);
    // The session ends (clean) before the barrier answers.
    w.shards[0].connection_lost(sub.conn);
    w.settle();
    w.send(publisher, publish("u/1", "x", QoS::AtMostOnce, false, 0));
    let mut targets = 0u64;
    w.shards[1]
        .routes
        .for_each_match("u/1", |s, _| targets |= 1 << s.0);
    assert_eq!(targets, 0, "the route was withdrawn");
    assert_eq!(w.shards[0].index.subscription_count(), 0);
}

#[test]
fn unsubscribe_stops_delivery_and_invalid_filter_gets_0x80() {
    // The codec closes a client that sends an invalid filter; a SUBSCRIBE
    // built in process is refused filter by filter, the others granted.
    let mut w = World::new(1);
    let c = w.connect("c");
    w.send(
        c,
        Packet::Subscribe(Subscribe {
            pkid: 2,
            filters: vec![
                ("a/#/b".into(), QoS::AtMostOnce),
                ("a/b".into(), QoS::AtLeastOnce),
            ],
        }),
    );
    let packets = w.received(c);
    assert_eq!(
        packets.last(),
        Some(&Packet::SubAck {
            pkid: 2,
            codes: vec![0x80, 1]
        })
    );
    w.send(
        c,
        Packet::Unsubscribe(Unsubscribe {
            pkid: 3,
            filters: vec!["a/b".into()],
        }),
    );
    assert_eq!(w.received(c), vec![Packet::UnsubAck(3)]);
    w.send(c, publish("a/b", "x", QoS::AtMostOnce, false, 0));
    assert!(w.publishes(c).is_empty());
}

#[test]
fn filters_beyond_the_limit_get_0x80_and_are_counted() {
    // [MQTT-3.9.3-2]: a SUBACK return code may be 0x80 (failure) for a
    // filter the server does not grant; the others are still granted.
    let limits = SessionLimits {
        max_subscriptions: 2,
        ..LIMITS
    };
    let mut w = World::with_limits(2, limits);
    let c = w.connect(&w.id_on(1, "many"));
    let filters = ["a/1", "a/2", "a/3"]
        .iter()
        .map(|f| (f.to_string(), QoS::AtMostOnce))
        .collect();
    w.send(c, Packet::Subscribe(Subscribe { pkid: 5, filters }));
    assert_eq!(
        w.received(c).last(),
        Some(&Packet::SubAck {
            pkid: 5,
            codes: vec![0, 0, 0x80]
        })
    );
    // Re-subscribing a held filter (a new QoS) is not a new filter.
    w.subscribe(c, "a/1", QoS::AtLeastOnce);
    assert!(matches!(w.received(c).last(), Some(Packet::SubAck { codes, .. }) if codes == &[1]));
    w.subscribe(c, "a/4", QoS::AtMostOnce);
    assert!(matches!(w.received(c).last(), Some(Packet::SubAck { codes, .. }) if codes == &[0x80]));
    assert_eq!(w.shards[1].stats().limit_subscriptions_refused, 2);
    // The refused filter was neither held nor routed.
    w.send(c, publish("a/3", "x", QoS::AtMostOnce, false, 0));
    assert!(w.publishes(c).is_empty());
    // Room again after an UNSUBSCRIBE.
    w.send(
        c,
        Packet::Unsubscribe(Unsubscribe {
            pkid: 6,
            filters: vec!["a/2".into()],
        }),
    );
    w.subscribe(c, "a/3", QoS::AtMostOnce);
    assert!(matches!(w.received(c).last(), Some(Packet::SubAck { codes, .. }) if codes == &[0]));
}
