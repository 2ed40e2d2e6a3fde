//! Persistence on a virtual clock: journals replayed into new shards (a
//! restart), acknowledgements held in `sync` mode, session expiry.

use std::time::Duration;

use bytes::Bytes;

use super::{Durability, Persistence};
use crate::mqtt::broker::world_tests::{connack, publish, Client, World};
use crate::mqtt::broker::ShardId;
use crate::mqtt::codec::{ConnectReturnCode, Packet};
use crate::mqtt::store::{self, state::State};
use crate::mqtt::QoS;

/// A `World` whose shards journal into in-memory logs.
struct Stored {
    w: World,
    logs: Vec<Vec<u8>>,
    durability: Durability,
    expiry: Option<Duration>,
}

impl Stored {
    fn new(shards: usize, durability: Durability) -> Stored {
        let mut s = Stored {
            w: World::new(shards),
            logs: vec![store::header().to_vec(); shards],
            durability,
            expiry: None,
        };
        s.configure();
        s
    }

    fn configure(&mut self) {
        for b in &mut self.w.shards {
            b.set_persistence(Persistence {
                durability: self.durability,
                session_expiry: self.expiry,
                unix_ms_at_start: 1_000_000,
            });
        }
    }

    /// Shard `i`'s writer appends its journal and reports the commit.
    fn commit(&mut self, i: usize) {
        let batch = self.w.shards[i].take_journal(false);
        self.logs[i].extend_from_slice(&batch.bytes);
        self.w.shards[i].handle_committed(batch.end);
        self.w.settle();
    }

    fn commit_all(&mut self) {
        for i in 0..self.logs.len() {
            self.commit(i);
        }
        // Answers to other shards' questions may need one more round.
        for i in 0..self.logs.len() {
            self.commit(i);
        }
    }

    /// A crash: what was not committed is lost; new shards load the logs.
    fn restart(&mut self) {
        let shards = self.logs.len();
        let states: Vec<State> = self
            .logs
            .iter()
            .map(|log| {
                let mut state = State::default();
                for r in store::scan(log).expect("a whole log").records {
                    state.apply(r);
                }
                state
            })
            .collect();
        let routes: Vec<(ShardId, String)> = states
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.filters().into_iter().map(move |f| (ShardId(i as u16), f)))
            .collect();
        let now = self.w.now + Duration::from_secs(1);
        self.w = World::new(shards);
        self.w.now = now;
        self.configure();
        for (b, state) in self.w.shards.iter_mut().zip(states) {
            b.restore(now, state, &routes);
        }
    }

    fn offline(&mut self, c: Client) {
        self.w.shards[c.shard].connection_lost(c.conn);
        self.w.shards[c.shard].release(c.conn);
        self.w.settle();
    }
}

fn payloads(packets: &[Packet]) -> Vec<(u16, bool, Bytes)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.pkid, p.dup, p.payload.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_persistent_session_and_its_queue_survive_a_restart_mqtt_3_1_2_4() {
    let mut s = Stored::new(2, Durability::Periodic);
    let id = s.w.id_on(1, "sub");
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    let c = s.w.connect_with(&id, false, 0, None);
    s.w.subscribe(c, "s/#", QoS::ExactlyOnce);
    s.offline(c);
    s.w.send(p, publish("s/1", "q1", QoS::AtLeastOnce, false, 1));
    s.w.send(p, publish("s/2", "q2", QoS::ExactlyOnce, false, 2));
    s.w.send(p, publish("r/1", "kept", QoS::AtLeastOnce, true, 3));
    s.commit_all();
    // Not committed: lost with the crash, within the stated window.
    s.w.send(p, publish("s/3", "lost", QoS::AtLeastOnce, false, 4));
    s.restart();

    // The session, its filter and its queue are back [MQTT-3.1.2-4]:
    // session present is 1 [MQTT-3.2.2-2].
    let c = s.w.connect_with(&id, false, 0, None);
    let packets = s.w.received(c);
    assert_eq!(connack(&packets), (true, ConnectReturnCode::Accepted));
    assert_eq!(
        payloads(&packets),
        [
            (1, false, Bytes::from_static(b"q1")),
            (2, false, Bytes::from_static(b"q2"))
        ]
    );
    // Its route is known to the publisher's shard from the start.
    let p = s.w.connect(&s.w.id_on(0, "pub2"));
    s.w.send(p, publish("s/4", "after", QoS::AtLeastOnce, false, 1));
    assert_eq!(payloads(&s.w.received(c)).len(), 1);
    // The retained value is back on every shard.
    for b in &s.w.shards {
        assert_eq!(b.retained_len(), 1);
    }
}

#[test]
fn qos2_stays_exactly_once_across_a_restart_mqtt_4_3_3_2() {
    let mut s = Stored::new(1, Durability::Sync);
    let sub_id = s.w.id_on(0, "sub");
    let pub_id = s.w.id_on(0, "pub");
    let sub = s.w.connect_with(&sub_id, false, 0, None);
    s.w.subscribe(sub, "q/#", QoS::ExactlyOnce);
    s.commit_all();
    s.w.received(sub);
    let p = s.w.connect_with(&pub_id, false, 0, None);
    s.w.received(p);
    s.w.send(p, publish("q/1", "once", QoS::ExactlyOnce, false, 9));
    assert!(s.w.received(p).is_empty(), "PUBREC waits for the commit");
    s.commit_all();
    assert_eq!(s.w.received(p), [Packet::PubRec(9)]);
    // The subscriber got it, sent PUBREC, and we answered PUBREL.
    assert_eq!(
        payloads(&s.w.received(sub)),
        [(1, false, Bytes::from_static(b"once"))]
    );
    s.w.send(sub, Packet::PubRec(1));
    assert_eq!(s.w.received(sub), [Packet::PubRel(1)]);
    s.commit_all();
    s.restart();

    // The publisher resends its PUBLISH (DUP): the id is still held, so it
    // is acknowledged and not routed again [MQTT-4.3.3-2].
    let sub = s.w.connect_with(&sub_id, false, 0, None);
    let p = s.w.connect_with(&pub_id, false, 0, None);
    // The subscriber's flow resumes at PUBREL [MQTT-4.4.0-1].
    assert_eq!(&s.w.received(sub)[1..], [Packet::PubRel(1)]);
    s.w.received(p);
    s.w.send(p, publish("q/1", "once", QoS::ExactlyOnce, false, 9));
    s.commit_all();
    assert_eq!(s.w.received(p), [Packet::PubRec(9)]);
    assert!(
        payloads(&s.w.received(sub)).is_empty(),
        "not delivered twice"
    );
    s.w.send(p, Packet::PubRel(9));
    assert_eq!(s.w.received(p), [Packet::PubComp(9)]);
}

#[test]
fn sync_holds_the_puback_until_every_shard_with_a_copy_committed() {
    let mut s = Stored::new(2, Durability::Sync);
    let sub = s.w.connect_with(&s.w.id_on(1, "sub"), false, 0, None);
    s.w.subscribe(sub, "t", QoS::AtLeastOnce);
    s.commit_all();
    s.w.received(sub);
    s.offline(sub);
    s.commit_all();
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.received(p);
    s.w.send(p, publish("t", "1", QoS::AtLeastOnce, false, 5));
    // Later PUBLISHes go on; their acks wait behind the first.
    s.w.send(p, publish("u", "2", QoS::AtLeastOnce, false, 6));
    s.commit(0);
    assert!(
        s.w.received(p).is_empty(),
        "shard 1 holds the copy and has not committed"
    );
    s.commit(1);
    // In PUBLISH order [MQTT-4.6.0-2].
    assert_eq!(s.w.received(p), [Packet::PubAck(5), Packet::PubAck(6)]);
}

#[test]
fn a_publisher_with_too_many_held_acks_is_paused() {
    let mut s = Stored::new(1, Durability::Sync);
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.received(p);
    for pkid in 1..=64 {
        s.w.send(p, publish("r", "x", QoS::AtLeastOnce, true, pkid));
    }
    assert!(s.w.shards[0].is_paused(p.conn));
    s.commit_all();
    assert!(!s.w.shards[0].is_paused(p.conn));
    assert_eq!(s.w.received(p).len(), 64);
}

#[test]
fn sync_holds_a_persistent_suback_until_committed() {
    let mut s = Stored::new(1, Durability::Sync);
    let c = s.w.connect_with(&s.w.id_on(0, "sub"), false, 0, None);
    s.commit_all();
    s.w.received(c);
    s.w.subscribe(c, "t", QoS::AtLeastOnce);
    assert!(s.w.received(c).is_empty());
    s.commit_all();
    assert!(matches!(s.w.received(c)[..], [Packet::SubAck { .. }]));
}

#[test]
fn periodic_and_none_acknowledge_at_once() {
    for durability in [Durability::None, Durability::Periodic] {
        let mut s = Stored::new(2, durability);
        let sub = s.w.connect_with(&s.w.id_on(1, "sub"), false, 0, None);
        s.w.subscribe(sub, "t", QoS::AtLeastOnce);
        s.offline(sub);
        let p = s.w.connect(&s.w.id_on(0, "pub"));
        s.w.received(p);
        s.w.send(p, publish("t", "1", QoS::AtLeastOnce, false, 5));
        assert_eq!(s.w.received(p), [Packet::PubAck(5)], "{durability:?}");
        if durability == Durability::None {
            assert_eq!(s.w.shards[1].journal_len(), 0, "nothing journaled");
        }
    }
}

#[test]
fn clean_session_ends_the_stored_session_mqtt_3_1_2_6() {
    let mut s = Stored::new(1, Durability::Periodic);
    let id = s.w.id_on(0, "c");
    let c = s.w.connect_with(&id, false, 0, None);
    s.w.subscribe(c, "t", QoS::AtLeastOnce);
    s.offline(c);
    let c = s.w.connect_with(&id, true, 0, None);
    s.offline(c);
    s.commit_all();
    s.restart();
    let c = s.w.connect_with(&id, false, 0, None);
    assert!(!connack(&s.w.received(c)).0);
}

#[test]
fn sessions_offline_past_the_expiry_end_and_leave_the_store() {
    let mut s = Stored::new(1, Durability::Periodic);
    s.expiry = Some(Duration::from_secs(60));
    s.configure();
    let gone = s.w.id_on(0, "gone");
    let stays = s.w.id_on(0, "stays");
    let c = s.w.connect_with(&gone, false, 0, None);
    s.w.subscribe(c, "t", QoS::AtLeastOnce);
    s.offline(c);
    s.w.advance(Duration::from_secs(30));
    let c2 = s.w.connect_with(&stays, false, 0, None);
    s.offline(c2);
    s.w.advance(Duration::from_secs(31));
    // `gone` has been away 61 s, `stays` 31 s.
    s.commit_all();
    s.restart();
    let c = s.w.connect_with(&gone, false, 0, None);
    assert!(!connack(&s.w.received(c)).0, "expired");
    let c2 = s.w.connect_with(&stays, false, 0, None);
    assert!(connack(&s.w.received(c2)).0, "kept");
}

#[test]
fn expiry_counts_the_time_away_before_a_restart() {
    let mut s = Stored::new(1, Durability::Periodic);
    s.expiry = Some(Duration::from_secs(60));
    s.configure();
    let id = s.w.id_on(0, "away");
    let c = s.w.connect_with(&id, false, 0, None);
    s.offline(c);
    s.commit_all();
    s.w.now += Duration::from_secs(50);
    // The restart adds 1 s; 10 more after it pass the 60 s.
    s.restart();
    s.w.advance(Duration::from_secs(5));
    s.w.advance(Duration::from_secs(5));
    let c = s.w.connect_with(&id, false, 0, None);
    assert!(!connack(&s.w.received(c)).0);
}

#[test]
fn a_snapshot_rebuilds_the_same_state() {
    let mut s = Stored::new(1, Durability::Periodic);
    let id = s.w.id_on(0, "snap");
    let c = s.w.connect_with(&id, false, 0, None);
    s.w.subscribe(c, "t/#", QoS::ExactlyOnce);
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.send(p, publish("t/1", "a", QoS::ExactlyOnce, false, 1));
    s.w.send(p, publish("t/r", "r", QoS::AtLeastOnce, true, 2));
    s.offline(c);
    s.w.send(p, publish("t/2", "b", QoS::AtLeastOnce, false, 3));
    let batch = s.w.shards[0].take_journal(true);
    assert!(batch.snapshot);
    let mut log = store::header().to_vec();
    log.extend_from_slice(&batch.bytes);
    s.logs[0] = log;
    s.restart();
    let c = s.w.connect_with(&id, false, 0, None);
    let packets = s.w.received(c);
    // The two in flight come again with DUP [MQTT-4.4.0-1], then the
    // queue.
    assert_eq!(
        payloads(&packets),
        [
            (1, true, Bytes::from_static(b"a")),
            (2, true, Bytes::from_static(b"r")),
            (3, false, Bytes::from_static(b"b")),
        ]
    );
}

#[test]
fn a_held_ack_dies_with_its_connection() {
    let mut s = Stored::new(1, Durability::Sync);
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.received(p);
    s.w.send(p, publish("r", "1", QoS::AtLeastOnce, true, 5));
    s.w.shards[0].connection_lost(p.conn);
    s.w.shards[0].release(p.conn);
    // The next connection may take the same id; it must not get the ack.
    let q = s.w.connect(&s.w.id_on(0, "next"));
    assert_eq!(q.conn, p.conn, "the slot is reused");
    s.w.received(q);
    s.commit_all();
    assert!(s.w.received(q).is_empty());
    assert!(!s.w.shards[0].is_paused(q.conn));
}

#[test]
fn a_retained_publish_waits_for_every_shard() {
    let mut s = Stored::new(4, Durability::Sync);
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.received(p);
    s.w.send(p, publish("r", "1", QoS::AtLeastOnce, true, 5));
    for i in 0..3 {
        s.commit(i);
        assert!(s.w.received(p).is_empty(), "shard 3 has not committed");
    }
    s.commit(3);
    assert_eq!(s.w.received(p), [Packet::PubAck(5)]);
}

#[test]
fn shared_members_of_restored_sessions_receive_after_a_restart() {
    let mut s = Stored::new(4, Durability::Periodic);
    let ids = [s.w.id_on(1, "a"), s.w.id_on(2, "b")];
    for id in &ids {
        let c = s.w.connect_with(id, false, 0, None);
        s.w.subscribe(c, "$share/g/jobs/#", QoS::AtLeastOnce);
        s.offline(c);
    }
    s.commit_all();
    s.restart();
    s.w.settle();
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    for i in 0..6u16 {
        s.w.send(
            p,
            publish("jobs/x", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1),
        );
    }
    let mut got = Vec::new();
    for id in &ids {
        let c = s.w.connect_with(id, false, 0, None);
        got.extend(payloads(&s.w.received(c)).into_iter().map(|p| p.2));
    }
    got.sort();
    let expected: Vec<Bytes> = (0..6).map(|i| Bytes::from(format!("m{i}"))).collect();
    assert_eq!(got, expected, "queued for the restored members, each once");
}

#[test]
fn sync_holds_the_puback_until_the_shared_member_shard_committed() {
    let mut s = Stored::new(2, Durability::Sync);
    let sub = s.w.connect_with(&s.w.id_on(1, "member"), false, 0, None);
    s.w.subscribe(sub, "$share/g/t", QoS::AtLeastOnce);
    s.commit_all();
    s.w.received(sub);
    s.offline(sub);
    s.commit_all();
    let p = s.w.connect(&s.w.id_on(0, "pub"));
    s.w.received(p);
    s.w.send(p, publish("t", "1", QoS::AtLeastOnce, false, 5));
    s.commit(0);
    assert!(
        s.w.received(p).is_empty(),
        "shard 1 queued the member's copy and has not committed"
    );
    s.commit(1);
    assert_eq!(s.w.received(p), [Packet::PubAck(5)]);
}
