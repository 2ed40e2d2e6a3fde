//! Back-pressure: a subscriber behind slows the publishers down.

use crate::mqtt::broker::world_tests::{publish, World};
use crate::mqtt::codec::Packet;
use crate::mqtt::QoS;

#[test]
fn a_subscriber_behind_throttles_qos1_publishers_until_it_catches_up() {
    let mut w = World::new(2);
    let publisher = w.connect(&w.id_on(0, "pub"));
    let sub = w.connect(&w.id_on(1, "sub"));
    w.subscribe(sub, "bp", QoS::AtLeastOnce);
    w.received(sub);
    // A publisher that respects the throttle, as the shell does.
    let mut sent = 0u16;
    while !w.shards[0].is_throttled(publisher.conn) {
        sent += 1;
        assert!(sent < 100, "never throttled");
        w.send(publisher, publish("bp", "x", QoS::AtLeastOnce, false, sent));
    }
    // Window (8) plus half the queue (16 / 2).
    assert_eq!(sent, 16);
    assert_eq!(w.shards[1].stats().messages_dropped, 0);
    // The subscriber acknowledges what it has: the queue drains and the
    // publisher is let go.
    let mut acked = 0;
    while w.shards[0].is_throttled(publisher.conn) {
        let ids: Vec<u16> = w.publishes(sub).iter().map(|p| p.pkid).collect();
        assert!(!ids.is_empty(), "the subscriber got nothing to acknowledge");
        for id in ids {
            w.send(sub, Packet::PubAck(id));
            acked += 1;
        }
    }
    assert!(acked >= 8);
    assert!(
        !w.shards[1].is_throttled(sub.conn),
        "a subscriber is never throttled"
    );
}
