//! Shared subscriptions across shards: one member per message and group,
//! the strategies, members that leave with messages unacknowledged.

use std::collections::HashMap;

use super::super::world_tests::{publish, Client, TestAccess, World, LIMITS};
use super::ShareStrategy;
use crate::mqtt::codec::{Packet, Publish};
use crate::mqtt::session::SessionLimits;
use crate::mqtt::QoS;

const GROUP: &str = "$share/workers/tasks/+";

/// Larger queues than the harness's: the load tests publish hundreds of
/// messages before the members read.
const ROOMY: SessionLimits = SessionLimits {
    max_inflight: 1000,
    max_queued_messages: 10_000,
    ..LIMITS
};

fn world(strategy: ShareStrategy) -> World {
    World::with_config(4, ROOMY, strategy)
}

/// Two members on each of the 4 shards.
fn members(w: &mut World) -> Vec<Client> {
    let mut all = Vec::new();
    for shard in 0..4 {
        for n in 0..2 {
            let id = w.id_on(shard, &format!("member{n}"));
            let c = w.connect(&id);
            w.subscribe(c, GROUP, QoS::AtLeastOnce);
            all.push(c);
        }
    }
    for &c in &all {
        assert!(
            w.received(c)
                .iter()
                .any(|p| matches!(p, Packet::SubAck { codes, .. } if codes == &[1])),
            "granted QoS 1"
        );
    }
    all
}

/// The PUBLISHes a client got, each acknowledged.
fn take(w: &mut World, c: Client) -> Vec<Publish> {
    let got = w.publishes(c);
    for p in &got {
        if p.qos == QoS::AtLeastOnce {
            w.send(c, Packet::PubAck(p.pkid));
        }
    }
    got
}

fn payload(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

/// Publishes `n` QoS 1 messages from `publisher` on `tasks/<topic(i)>`,
/// payloads `"<tag>-<i>"`.
fn load(w: &mut World, publisher: Client, tag: &str, n: usize, topic: impl Fn(usize) -> String) {
    for i in 0..n {
        let pkid = (i % 60_000 + 1) as u16;
        w.send(
            publisher,
            publish(
                &format!("tasks/{}", topic(i)),
                &format!("{tag}-{i}"),
                QoS::AtLeastOnce,
                false,
                pkid,
            ),
        );
    }
}

/// Every payload exactly once over `clients`; returns how many each got.
fn exactly_once(w: &mut World, clients: &[Client], expected: usize) -> Vec<usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut counts = Vec::new();
    for &c in clients {
        let got = take(w, c);
        counts.push(got.len());
        for p in got {
            *seen.entry(payload(&p)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), expected, "every message reached the group");
    assert!(seen.values().all(|&n| n == 1), "no message twice: {seen:?}");
    counts
}

#[test]
fn round_robin_gives_each_message_to_one_member_evenly() {
    let mut w = world(ShareStrategy::RoundRobin);
    let all = members(&mut w);
    let plain_id = w.id_on(3, "plain");
    let plain = w.connect(&plain_id);
    w.subscribe(plain, "tasks/#", QoS::AtLeastOnce);
    let _ = w.received(plain);
    let publisher_id = w.id_on(1, "pub");
    let publisher = w.connect(&publisher_id);
    load(&mut w, publisher, "m", 400, |i| format!("t{}", i % 7));
    let counts = exactly_once(&mut w, &all, 400);
    assert_eq!(counts, vec![50; 8], "round robin over the 8 members");
    assert_eq!(
        take(&mut w, plain).len(),
        400,
        "a plain subscriber gets every message"
    );
}

#[test]
fn publishers_on_every_shard_still_deliver_once() {
    let mut w = world(ShareStrategy::RoundRobin);
    let all = members(&mut w);
    for shard in 0..4 {
        let id = w.id_on(shard, "pub");
        let p = w.connect(&id);
        load(&mut w, p, &format!("s{shard}"), 80, |i| format!("{i}"));
    }
    let counts = exactly_once(&mut w, &all, 320);
    assert_eq!(counts, vec![40; 8]);
}

#[test]
fn random_spreads_and_delivers_once() {
    let mut w = world(ShareStrategy::Random);
    let all = members(&mut w);
    let id = w.id_on(2, "pub");
    let p = w.connect(&id);
    load(&mut w, p, "r", 400, |i| format!("{i}"));
    let counts = exactly_once(&mut w, &all, 400);
    assert!(
        counts.iter().all(|&n| n > 10),
        "every member gets some: {counts:?}"
    );
}

#[test]
fn hash_clientid_keeps_a_publisher_on_one_member() {
    let mut w = world(ShareStrategy::HashClientId);
    let all = members(&mut w);
    let mut publishers = Vec::new();
    for n in 0..6 {
        let id = w.id_on(n % 4, &format!("device{n}"));
        publishers.push(w.connect(&id));
    }
    for (n, &p) in publishers.iter().enumerate() {
        load(&mut w, p, &format!("d{n}"), 30, |i| format!("{i}"));
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for (m, &c) in all.iter().enumerate() {
        for p in take(&mut w, c) {
            total += 1;
            let device = payload(&p).split('-').next().unwrap().to_string();
            assert_eq!(
                *owner.entry(device.clone()).or_insert(m),
                m,
                "{device} moved"
            );
        }
    }
    assert_eq!(total, 180);
    assert_eq!(owner.len(), 6);
}

#[test]
fn hash_topic_keeps_a_topic_on_one_member() {
    let mut w = world(ShareStrategy::HashTopic);
    let all = members(&mut w);
    for shard in 0..4 {
        let id = w.id_on(shard, "pub");
        let p = w.connect(&id);
        load(&mut w, p, &format!("s{shard}"), 40, |i| {
            format!("dev{}", i % 5)
        });
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for (m, &c) in all.iter().enumerate() {
        for p in take(&mut w, c) {
            total += 1;
            let topic = p.topic.as_str().to_string();
            assert_eq!(*owner.entry(topic.clone()).or_insert(m), m, "{topic} moved");
        }
    }
    assert_eq!(total, 160);
    assert_eq!(owner.len(), 5);
}

#[test]
fn a_member_that_leaves_with_unacknowledged_qos1_gives_them_to_another() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(2, "b");
    let a = w.connect(&a_id);
    let b = w.connect(&b_id);
    w.subscribe(a, GROUP, QoS::AtLeastOnce);
    w.subscribe(b, GROUP, QoS::AtLeastOnce);
    let _ = (w.received(a), w.received(b));
    let id = w.id_on(0, "pub");
    let p = w.connect(&id);
    load(&mut w, p, "q", 20, |i| format!("{i}"));
    // `a` never acknowledges what it got, then its connection drops.
    let held: Vec<String> = w.publishes(a).iter().map(payload).collect();
    assert_eq!(held.len(), 10);
    w.shards[a.shard].connection_lost(a.conn);
    w.settle();
    let got: Vec<String> = take(&mut w, b).iter().map(payload).collect();
    assert_eq!(got.len(), 20, "b has its own 10 and a's 10: {got:?}");
    for m in &held {
        assert!(got.contains(m), "{m} redelivered");
    }
    // With `a` gone, everything goes to `b`.
    load(&mut w, p, "after", 5, |i| format!("{i}"));
    assert_eq!(take(&mut w, b).len(), 5);
}

#[test]
fn a_member_gone_before_the_news_arrives_is_replaced() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(2, "b");
    let a = w.connect(&a_id);
    let b = w.connect(&b_id);
    w.subscribe(a, GROUP, QoS::AtLeastOnce);
    w.subscribe(b, GROUP, QoS::AtLeastOnce);
    let _ = (w.received(a), w.received(b));
    let id = w.id_on(0, "pub");
    let p = w.connect(&id);
    // `a` leaves; shard 0 publishes before shard 1's news reaches it, so
    // some messages are sent to shard 1, which has no member any more.
    w.shards[a.shard].handle_packet(w.now, a.conn, Packet::Disconnect);
    for i in 0..10u16 {
        let packet = publish("tasks/x", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1);
        w.shards[p.shard].handle_packet(w.now, p.conn, packet);
    }
    w.settle();
    assert!(w.publishes(a).is_empty());
    assert_eq!(take(&mut w, b).len(), 10, "none lost, none twice");
}

#[test]
fn a_client_in_a_group_and_subscribed_plainly_gets_both() {
    let mut w = world(ShareStrategy::RoundRobin);
    let id = w.id_on(2, "both");
    let c = w.connect(&id);
    w.subscribe(c, GROUP, QoS::AtLeastOnce);
    w.subscribe(c, "tasks/#", QoS::AtLeastOnce);
    let _ = w.received(c);
    let pid = w.id_on(0, "pub");
    let p = w.connect(&pid);
    load(&mut w, p, "x", 3, |i| format!("{i}"));
    assert_eq!(take(&mut w, c).len(), 6);
}

#[test]
fn two_groups_on_one_filter_each_get_every_message() {
    let mut w = world(ShareStrategy::RoundRobin);
    let ids: Vec<String> = (0..4).map(|s| w.id_on(s, "g")).collect();
    let cs: Vec<Client> = ids.iter().map(|id| w.connect(id)).collect();
    for (n, &c) in cs.iter().enumerate() {
        let group = if n % 2 == 0 {
            "$share/a/tasks/#"
        } else {
            "$share/b/tasks/#"
        };
        w.subscribe(c, group, QoS::AtMostOnce);
        let _ = w.received(c);
    }
    let pid = w.id_on(3, "pub");
    let p = w.connect(&pid);
    load(&mut w, p, "x", 10, |i| format!("{i}"));
    let a = exactly_once(&mut w, &[cs[0], cs[2]], 10);
    let b = exactly_once(&mut w, &[cs[1], cs[3]], 10);
    assert_eq!((a, b), (vec![5, 5], vec![5, 5]));
}

#[test]
fn retained_messages_are_not_sent_on_a_shared_subscription() {
    let mut w = world(ShareStrategy::RoundRobin);
    let pid = w.id_on(0, "pub");
    let p = w.connect(&pid);
    w.send(p, publish("tasks/r", "kept", QoS::AtLeastOnce, true, 1));
    let id = w.id_on(1, "m");
    let c = w.connect(&id);
    w.subscribe(c, GROUP, QoS::AtLeastOnce);
    assert!(
        w.publishes(c).is_empty(),
        "MQTT 5 §4.8.2: no retained on $share"
    );
    // A live retained publish reaches the group, with retain 0.
    w.send(p, publish("tasks/r", "live", QoS::AtLeastOnce, true, 2));
    let got = take(&mut w, c);
    assert_eq!(got.len(), 1);
    assert!(!got[0].retain);
}

#[test]
fn unsubscribing_leaves_the_group_on_every_shard() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(3, "b");
    let a = w.connect(&a_id);
    let b = w.connect(&b_id);
    w.subscribe(a, GROUP, QoS::AtLeastOnce);
    w.subscribe(b, GROUP, QoS::AtLeastOnce);
    w.send(
        a,
        Packet::Unsubscribe(crate::mqtt::codec::Unsubscribe {
            pkid: 2,
            filters: vec![GROUP.to_string()],
        }),
    );
    let _ = (w.received(a), w.received(b));
    let pid = w.id_on(0, "pub");
    let p = w.connect(&pid);
    load(&mut w, p, "x", 6, |i| format!("{i}"));
    assert!(w.publishes(a).is_empty());
    assert_eq!(take(&mut w, b).len(), 6);
    w.send(
        b,
        Packet::Unsubscribe(crate::mqtt::codec::Unsubscribe {
            pkid: 3,
            filters: vec![GROUP.to_string()],
        }),
    );
    for s in &w.shards {
        assert_eq!(s.shares.len(), 0, "the group is forgotten everywhere");
    }
}

#[test]
fn offline_persistent_members_queue_only_when_no_member_is_online() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(2, "b");
    let a = w.connect_with(&a_id, false, 0, None);
    let b = w.connect(&b_id);
    w.subscribe(a, GROUP, QoS::AtLeastOnce);
    w.subscribe(b, GROUP, QoS::AtLeastOnce);
    let _ = (w.received(a), w.received(b));
    w.send(a, Packet::Disconnect);
    let pid = w.id_on(0, "pub");
    let p = w.connect(&pid);
    load(&mut w, p, "on", 4, |i| format!("{i}"));
    assert_eq!(take(&mut w, b).len(), 4, "the online member takes all");
    w.send(b, Packet::Disconnect);
    load(&mut w, p, "off", 3, |i| format!("{i}"));
    let a = w.connect_with(&a_id, false, 0, None);
    let got: Vec<String> = take(&mut w, a).iter().map(payload).collect();
    assert_eq!(
        got,
        vec!["off-0", "off-1", "off-2"],
        "queued for the session"
    );
}

#[test]
fn acl_decides_on_the_filter_not_the_group() {
    let mut w = world(ShareStrategy::RoundRobin);
    let id = w.id_on(1, "m");
    let access = TestAccess {
        read: vec!["tasks/#"],
        ..TestAccess::default()
    };
    let c = w.connect_access(&id, access);
    w.subscribe(c, GROUP, QoS::AtLeastOnce);
    w.subscribe(c, "$share/workers/other/#", QoS::AtLeastOnce);
    let codes: Vec<Vec<u8>> = w
        .received(c)
        .into_iter()
        .filter_map(|p| match p {
            Packet::SubAck { codes, .. } => Some(codes),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec![vec![1], vec![0x80]]);
}

#[test]
fn qos2_before_pubrec_goes_to_another_member_but_not_after() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(3, "b");
    let a = w.connect(&a_id);
    w.subscribe(a, GROUP, QoS::ExactlyOnce);
    let _ = w.received(a);
    let id = w.id_on(0, "pub");
    let p = w.connect(&id);
    for i in 0..2u16 {
        w.send(
            p,
            publish("tasks/x", &format!("m{i}"), QoS::ExactlyOnce, false, i + 1),
        );
        w.send(p, Packet::PubRel(i + 1));
    }
    let held = w.publishes(a);
    assert_eq!(held.len(), 2);
    // The client has m0 (PUBREC sent), not m1.
    w.send(a, Packet::PubRec(held[0].pkid));
    let b = w.connect(&b_id);
    w.subscribe(b, GROUP, QoS::ExactlyOnce);
    let _ = w.received(b);
    w.shards[a.shard].connection_lost(a.conn);
    w.settle();
    let got: Vec<String> = w.publishes(b).iter().map(payload).collect();
    assert_eq!(got, vec!["m1"]);
}

/// A member in the churn test: what it acknowledged, and what it holds.
struct Member {
    client: Client,
    alive: bool,
    acked: Vec<String>,
    held: Vec<(u16, String)>,
}

/// Random joins, leaves (lost connection, DISCONNECT, UNSUBSCRIBE) and
/// publishes on 4 shards, with cross-shard messages delivered late: every
/// message is acknowledged by exactly one member in the end.
#[test]
fn churn_with_late_news_loses_nothing_and_duplicates_nothing() {
    let strategies = [
        ShareStrategy::RoundRobin,
        ShareStrategy::Random,
        ShareStrategy::HashClientId,
        ShareStrategy::HashTopic,
    ];
    for strategy in strategies {
        for seed in 1..=10u64 {
            churn(strategy, seed);
        }
    }
}

fn churn(strategy: ShareStrategy, seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut w = world(strategy);
    let mut publishers = Vec::new();
    for shard in 0..4 {
        let id = w.id_on(shard, "pub");
        publishers.push(w.connect(&id));
    }
    let mut members: Vec<Member> = Vec::new();
    let join = |w: &mut World, members: &mut Vec<Member>, shard: usize| {
        let id = w.id_on(shard, &format!("m{}", members.len()));
        let client = w.connect(&id);
        w.subscribe(client, GROUP, QoS::AtLeastOnce);
        let _ = w.received(client);
        members.push(Member {
            client,
            alive: true,
            acked: Vec::new(),
            held: Vec::new(),
        });
    };
    // Member 0 stays to the end, so the group is never empty.
    join(&mut w, &mut members, 0);
    let mut published = 0usize;
    let mut pkid = 0u16;
    for _ in 0..600 {
        match next(10) {
            0..=3 => {
                let p = publishers[next(4) as usize];
                pkid = pkid % 60_000 + 1;
                let topic = format!("tasks/{}", next(3));
                let packet = publish(
                    &topic,
                    &format!("m{published}"),
                    QoS::AtLeastOnce,
                    false,
                    pkid,
                );
                published += 1;
                w.shards[p.shard].handle_packet(w.now, p.conn, packet);
            }
            4 => join(&mut w, &mut members, next(4) as usize),
            5 => {
                let alive: Vec<usize> = (1..members.len()).filter(|&i| members[i].alive).collect();
                if let Some(&i) = alive.get(next(alive.len().max(1) as u64) as usize) {
                    let c = members[i].client;
                    match next(3) {
                        0 => w.shards[c.shard].connection_lost(c.conn),
                        1 => w.shards[c.shard].handle_packet(w.now, c.conn, Packet::Disconnect),
                        _ => {
                            let leave = Packet::Unsubscribe(crate::mqtt::codec::Unsubscribe {
                                pkid: 9,
                                filters: vec![GROUP.to_string()],
                            });
                            w.shards[c.shard].handle_packet(w.now, c.conn, leave);
                            w.shards[c.shard].handle_packet(w.now, c.conn, Packet::Disconnect);
                        }
                    }
                    members[i].alive = false;
                }
            }
            6..=7 => {
                let i = next(members.len() as u64) as usize;
                if members[i].alive {
                    let c = members[i].client;
                    for p in w.publishes(c) {
                        members[i].held.push((p.pkid, payload(&p)));
                    }
                    let n = next(members[i].held.len() as u64 + 1) as usize;
                    for (pkid, m) in members[i].held.drain(..n).collect::<Vec<_>>() {
                        w.shards[c.shard].handle_packet(w.now, c.conn, Packet::PubAck(pkid));
                        members[i].acked.push(m);
                    }
                }
            }
            _ => w.settle(),
        }
    }
    w.settle();
    for _ in 0..5 {
        for m in members.iter_mut().filter(|m| m.alive) {
            for p in take(&mut w, m.client) {
                m.acked.push(payload(&p));
            }
            for (pkid, held) in m.held.drain(..) {
                w.send(m.client, Packet::PubAck(pkid));
                m.acked.push(held);
            }
        }
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &members {
        for p in &m.acked {
            *counts.entry(p.as_str()).or_default() += 1;
        }
    }
    assert_eq!(
        counts.len(),
        published,
        "{strategy:?} seed {seed}: none lost"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "{strategy:?} seed {seed}: none twice"
    );
}

#[test]
fn a_member_that_may_not_read_the_topic_passes_it_to_one_that_may() {
    let mut w = world(ShareStrategy::RoundRobin);
    let a_id = w.id_on(1, "a");
    let b_id = w.id_on(1, "b");
    let a = w.connect_access(
        &a_id,
        TestAccess {
            read: vec!["tasks/#"],
            deny: vec!["tasks/secret"],
            ..TestAccess::default()
        },
    );
    let b = w.connect(&b_id);
    w.subscribe(a, GROUP, QoS::AtLeastOnce);
    w.subscribe(b, GROUP, QoS::AtLeastOnce);
    let _ = (w.received(a), w.received(b));
    let pid = w.id_on(0, "pub");
    let p = w.connect(&pid);
    load(&mut w, p, "s", 4, |_| "secret".to_string());
    assert!(w.publishes(a).is_empty());
    assert_eq!(take(&mut w, b).len(), 4);
}
