//! Deterministic tests of the broker machine: a `World` of shards joined by
//! in-memory FIFO queues, clients as connection ids, and a virtual clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::mqtt::codec::{decode, LastWill, Packet, Subscribe, Unsubscribe};

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 8,
    max_queued_messages: 16,
    queue_qos0_offline: false,
    max_outbox_bytes: 1 << 16,
};

struct World {
    now: Instant,
    shards: Vec<Broker>,
    /// In flight between shards: (from, to, message), FIFO like the mesh.
    wire: VecDeque<(ShardId, ShardId, RemoteMsg)>,
}

#[derive(Clone, Copy, Debug)]
struct Client {
    shard: usize,
    conn: ConnId,
}

impl World {
    fn new(shards: usize) -> World {
        let now = Instant::now();
        let config = BrokerConfig {
            limits: LIMITS,
            sys_interval: None,
        };
        World {
            now,
            shards: (0..shards)
                .map(|i| Broker::new(ShardId(i as u16), shards, config.clone(), now))
                .collect(),
            wire: VecDeque::new(),
        }
    }

    /// A client id that shard `shard` owns.
    fn id_on(&self, shard: usize, stem: &str) -> String {
        (0..)
            .map(|i| format!("{stem}-{i}"))
            .find(|id| owner_shard(id, self.shards.len()) == ShardId(shard as u16))
            .expect("some id hashes to every shard")
    }

    fn connect_with(
        &mut self,
        id: &str,
        clean: bool,
        keepalive: u16,
        will: Option<LastWill>,
    ) -> Client {
        let shard = usize::from(owner_shard(id, self.shards.len()).0);
        let connect = Connect {
            protocol_level: 4,
            clean_session: clean,
            keep_alive_s: keepalive,
            client_id: id.to_string(),
            username: None,
            password: None,
            will,
        };
        let conn = self.shards[shard].connect(self.now, connect);
        self.settle();
        Client { shard, conn }
    }

    fn connect(&mut self, id: &str) -> Client {
        self.connect_with(id, true, 0, None)
    }

    fn send(&mut self, c: Client, packet: Packet) {
        self.shards[c.shard].handle_packet(self.now, c.conn, packet);
        self.settle();
    }

    /// Puts what the shards sent on the wire, delivering nothing yet.
    fn collect(&mut self) {
        for (i, b) in self.shards.iter_mut().enumerate() {
            while let Some((to, batch)) = b.poll_remote() {
                for m in batch {
                    self.wire.push_back((ShardId(i as u16), to, m));
                }
            }
            while b.poll_woken().is_some() {}
        }
    }

    /// Delivers every cross-shard message, in order, until none is left.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.collect();
            let Some((from, to, msg)) = self.wire.pop_front() else {
                return;
            };
            self.shards[usize::from(to.0)].handle_remote(self.now, from, msg);
        }
        panic!("the shards did not settle: livelock");
    }

    /// Packets written to the client since the last call.
    fn received(&mut self, c: Client) -> Vec<Packet> {
        let Some(out) = self.shards[c.shard].outbox_mut(c.conn) else {
            return Vec::new();
        };
        let mut packets = Vec::new();
        while let Some(p) = decode(out, 1 << 20).expect("the broker writes valid packets") {
            packets.push(p);
        }
        packets
    }

    fn publishes(&mut self, c: Client) -> Vec<Publish> {
        self.received(c)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn subscribe(&mut self, c: Client, filter: &str, qos: QoS) {
        let packet = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter.to_string(), qos)],
        });
        self.send(c, packet);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        for b in &mut self.shards {
            b.tick(self.now);
        }
        self.settle();
    }
}

fn publish(topic: &str, payload: &str, qos: QoS, retain: bool, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::from_string(topic.to_string()).unwrap(),
        pkid,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

fn connack(packets: &[Packet]) -> (bool, ConnectReturnCode) {
    match packets.first() {
        Some(Packet::ConnAck {
            session_present,
            code,
        }) => (*session_present, *code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

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
fn takeover_closes_the_old_connection_without_will() {
    let mut w = World::new(2);
    let watcher = w.connect(&w.id_on(1, "w"));
    w.subscribe(watcher, "will", QoS::AtMostOnce);
    w.received(watcher);
    let id = w.id_on(0, "dev");
    let will = LastWill {
        topic: TopicName::from_string("will".into()).unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let old = w.connect_with(&id, true, 0, Some(will));
    let new = w.connect(&id);
    assert_eq!(w.shards[0].closing(old.conn), Some(CloseReason::TakenOver));
    assert_eq!(w.shards[0].closing(new.conn), None);
    assert!(w.publishes(watcher).is_empty());
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

#[test]
fn unsubscribe_stops_delivery_and_invalid_filter_gets_0x80() {
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
