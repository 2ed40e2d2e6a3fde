//! The gateway with real broker machines on a virtual clock: each shard a
//! `Gateway` and a `Broker`, the mesh and the brokers' remote batches
//! delivered by hand, MQTT clients as broker connections. Section numbers
//! are those of MQTT-SN 1.2 (a test named `..._6_8` pins §6.8).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Gateway, Limits, Mesh, PeerKey};
use crate::mqtt::broker::{owner_shard, Access, Broker, BrokerConfig, ConnId, ShardId};
use crate::mqtt::codec::{
    decode as mqtt_decode, Connect, ConnectReturnCode, Packet, Publish, Subscribe,
};
use crate::mqtt::retained::RetainedLimits;
use crate::mqtt::session::SessionLimits;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;
use crate::sn::client::Shared;
use crate::sn::codec::{
    decode, decode_frame, Flags, Message, ReturnCode, SnQoS, TopicIdType, TopicRef,
};
use crate::sn::config::Predefined as PredefinedEntry;
use crate::sn::metrics::{DropReason, SnMetrics};
use crate::sn::topics::Predefined;

const PREDEFINED_ID: u16 = 5;
const PREDEFINED: &str = "sensors/predefined/five";

fn limits() -> Limits {
    Limits {
        gateway_id: 9,
        qos_minus_one: true,
        max_clients_per_address: 8,
        max_datagrams_per_second: 1000,
        max_datagram: 1024,
    }
}

fn shared() -> Shared {
    Shared {
        retry: Duration::from_secs(10),
        max_retries: 3,
        max_topics: 100,
        sleep_buffer: 100,
        predefined: Predefined::new(&[PredefinedEntry {
            id: PREDEFINED_ID,
            topic: PREDEFINED.into(),
        }]),
        username: None,
        password: None,
    }
}

fn broker_config() -> BrokerConfig {
    BrokerConfig {
        limits: SessionLimits {
            max_inflight: 8,
            max_queued_messages: 16,
            queue_qos0_offline: false,
            max_outbox_bytes: 1 << 16,
            max_subscriptions: 0,
            max_awaiting_pubrel: 0,
            max_queued_bytes: 0,
        },
        retained: RetainedLimits::default(),
        max_queued_bytes_shard: 0,
        max_queued_messages_shard: 0,
        sys_interval: None,
        share_strategy: Default::default(),
        share_seed: 1,
    }
}

type AuthResult = Result<Option<Arc<dyn Access>>, ConnectReturnCode>;

fn auth_result(refuse: bool) -> AuthResult {
    if refuse {
        Err(ConnectReturnCode::BadUserNamePassword)
    } else {
        Ok(None)
    }
}

struct Node {
    gw: Gateway,
    broker: Broker,
}

/// An MQTT client: its shard and connection.
#[derive(Clone, Copy, Debug)]
struct Mqtt {
    shard: usize,
    conn: ConnId,
}

/// Every shard, the clock, and the datagrams the gateways sent.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    metrics: Arc<SnMetrics>,
    /// The `Authorize` answer: refuse every CONNECT.
    refuse: bool,
    /// (sending shard, destination, datagram), oldest first.
    sent: Vec<(usize, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn new(shards: usize) -> Net {
        Net::with_limits(shards, limits())
    }

    fn with_limits(shards: usize, limits: Limits) -> Net {
        let now = Instant::now();
        let metrics = Arc::new(SnMetrics::new(shards));
        let nodes = (0..shards)
            .map(|i| Node {
                gw: Gateway::new(
                    ShardId(i as u16),
                    shards,
                    shared(),
                    limits.clone(),
                    metrics.clone(),
                ),
                broker: Broker::new(ShardId(i as u16), shards, broker_config(), now),
            })
            .collect();
        Net {
            now,
            nodes,
            metrics,
            refuse: false,
            sent: Vec::new(),
        }
    }

    /// A client id that shard `shard` owns.
    fn id_on(&self, shard: usize, stem: &str) -> String {
        (0..)
            .map(|i| format!("{stem}-{i}"))
            .find(|id| owner_shard(id, self.nodes.len()) == ShardId(shard as u16))
            .expect("some id hashes to every shard")
    }

    /// A datagram from `from` reaches the socket of `shard`.
    fn datagram(&mut self, shard: usize, from: SocketAddr, data: &[u8]) {
        let (now, refuse) = (self.now, self.refuse);
        let node = &mut self.nodes[shard];
        let mut auth = |_: &Connect, _: SocketAddr| auth_result(refuse);
        node.gw
            .receive(now, &mut node.broker, &mut auth, from, data);
        self.settle();
    }

    fn send(&mut self, shard: usize, from: SocketAddr, message: Message<'_>) {
        self.datagram(shard, from, &enc(&message));
    }

    /// Delivers the mesh, the brokers' batches and the woken connections
    /// until nothing moves; collects what the gateways sent.
    fn settle(&mut self) {
        let (now, refuse) = (self.now, self.refuse);
        let mut auth = |_: &Connect, _: SocketAddr| auth_result(refuse);
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                for (d, to) in node.gw.outgoing.iter() {
                    self.sent.push((i, to, d.to_vec()));
                }
                node.gw.outgoing.clear();
                node.gw.opened.clear();
                node.gw.released.clear();
                let woken: Vec<ConnId> = std::iter::from_fn(|| node.broker.poll_woken()).collect();
                for conn in woken {
                    if node.gw.owns(conn) {
                        node.gw.drain(now, &mut node.broker, &mut auth, conn);
                        moved = true;
                    }
                }
                let mesh = std::mem::take(&mut node.gw.mesh);
                let remote: Vec<_> = std::iter::from_fn(|| node.broker.poll_remote()).collect();
                for (to, m) in mesh {
                    moved = true;
                    let t = &mut self.nodes[usize::from(to.0)];
                    match m {
                        Mesh::Datagram { key, via, data } => {
                            t.gw.forwarded(now, &mut t.broker, &mut auth, key, via, &data)
                        }
                        Mesh::Forget(key) => t.gw.forget(&key),
                        Mesh::Reroute { key, to } => t.gw.reroute(key, to),
                        Mesh::Gone(key) => t.gw.gone(now, &mut t.broker, &key),
                    }
                }
                for (to, batch) in remote {
                    moved = true;
                    for m in batch {
                        self.nodes[usize::from(to.0)].broker.handle_remote(
                            now,
                            ShardId(i as u16),
                            m,
                        );
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the shards did not settle");
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for node in &mut self.nodes {
            node.broker.tick(now);
            node.gw.tick(now, &mut node.broker);
        }
        self.settle();
    }

    /// What the gateways sent to `to` since the last call: (sending
    /// shard, datagram).
    fn to(&mut self, to: SocketAddr) -> Vec<(usize, Vec<u8>)> {
        let (mine, rest) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(_, a, _)| *a == to);
        self.sent = rest;
        mine.into_iter().map(|(s, _, d)| (s, d)).collect()
    }

    /// The messages sent to `to` since the last call, unwrapped.
    fn replies(&mut self, to: SocketAddr) -> Vec<Vec<u8>> {
        self.to(to).into_iter().map(|(_, d)| d).collect()
    }

    fn mqtt(&mut self, id: &str) -> Mqtt {
        let shard = usize::from(owner_shard(id, self.nodes.len()).0);
        let conn = self.nodes[shard].broker.connect(
            self.now,
            Connect {
                protocol_level: 4,
                clean_session: true,
                keep_alive_s: 0,
                client_id: id.into(),
                username: None,
                password: None,
                will: None,
            },
        );
        self.settle();
        let c = Mqtt { shard, conn };
        assert!(matches!(
            self.received(c).first(),
            Some(Packet::ConnAck {
                code: ConnectReturnCode::Accepted,
                ..
            })
        ));
        c
    }

    fn mqtt_send(&mut self, c: Mqtt, packet: Packet) {
        self.nodes[c.shard]
            .broker
            .handle_packet(self.now, c.conn, packet);
        self.settle();
    }

    fn subscribe(&mut self, c: Mqtt, filter: &str, qos: QoS) {
        self.mqtt_send(
            c,
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![(filter.into(), qos)],
            }),
        );
        assert!(matches!(
            self.received(c).as_slice(),
            [Packet::SubAck { .. }]
        ));
    }

    fn received(&mut self, c: Mqtt) -> Vec<Packet> {
        let Some(out) = self.nodes[c.shard].broker.outbox_mut(c.conn) else {
            return Vec::new();
        };
        std::iter::from_fn(|| mqtt_decode(out, 1 << 20).expect("valid packets")).collect()
    }

    fn publishes(&mut self, c: Mqtt) -> Vec<(String, Bytes)> {
        self.received(c)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((p.topic.as_str().to_string(), p.payload)),
                _ => None,
            })
            .collect()
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.metrics.dropped[reason as usize].load(Relaxed)
    }

    /// An MQTT-SN client `id` connected from `from` through `shard`.
    fn sn_connect(&mut self, shard: usize, from: SocketAddr, id: &str, duration_s: u16) {
        self.send(shard, from, connect(id, false, duration_s));
        assert_eq!(
            self.replies(from),
            [enc(&Message::ConnAck(ReturnCode::Accepted))]
        );
    }

    /// REGISTERs `name` for the client at `from`; its id.
    fn sn_register(&mut self, shard: usize, from: SocketAddr, name: &str) -> u16 {
        self.send(
            shard,
            from,
            Message::Register {
                topic_id: 0,
                msg_id: 1,
                topic_name: name.as_bytes(),
            },
        );
        let replies = self.replies(from);
        match replies
            .iter()
            .map(|d| decode(d))
            .collect::<Vec<_>>()
            .as_slice()
        {
            [Ok(Message::RegAck {
                topic_id,
                code: ReturnCode::Accepted,
                ..
            })] => *topic_id,
            other => panic!("expected REGACK, got {other:?}"),
        }
    }
}

fn enc(message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(message.encode(&mut out));
    out
}

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

fn connect(id: &str, will: bool, duration_s: u16) -> Message<'_> {
    let mut flags = Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal);
    flags.clean_session = true;
    flags.will = will;
    Message::Connect {
        flags,
        protocol_id: 0x01,
        duration_s,
        client_id: id.as_bytes(),
    }
}

fn sn_publish(
    qos: SnQoS,
    kind: TopicIdType,
    topic_id: u16,
    msg_id: u16,
    data: &[u8],
) -> Message<'_> {
    Message::Publish {
        flags: Flags::new(qos, kind),
        topic_id,
        msg_id,
        data,
    }
}

fn mqtt_publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::from_string(topic.into()).unwrap(),
        pkid,
        payload: Bytes::from_static(payload),
    })
}

fn no_state(g: &Gateway) -> bool {
    g.clients() == 0 && g.routes.is_empty() && g.per_ip.is_empty() && g.by_key.is_empty()
}

#[test]
fn searchgw_is_answered_with_gwinfo_6_1() {
    let mut net = Net::new(1);
    let from = addr(1, 4000);
    net.send(0, from, Message::SearchGw { radius: 1 });
    assert_eq!(
        net.replies(from),
        [enc(&Message::GwInfo {
            gw_id: 9,
            gw_add: &[]
        })]
    );
    assert!(no_state(&net.nodes[0].gw));
}

#[test]
fn an_sn_publish_reaches_an_mqtt_subscriber_and_back_6_6_6_10() {
    let mut net = Net::new(1);
    let sensor = addr(1, 4000);
    net.sn_connect(0, sensor, "sensor", 30);
    assert_eq!(net.nodes[0].gw.clients(), 1);
    let app = net.mqtt("app");
    net.subscribe(app, "up/#", QoS::AtLeastOnce);

    let id = net.sn_register(0, sensor, "up/temp");
    net.send(
        0,
        sensor,
        sn_publish(SnQoS::AtLeastOnce, TopicIdType::Normal, id, 7, b"21.5"),
    );
    assert_eq!(
        net.replies(sensor),
        [enc(&Message::PubAck {
            topic_id: id,
            msg_id: 7,
            code: ReturnCode::Accepted
        })]
    );
    assert_eq!(
        net.publishes(app),
        [("up/temp".to_string(), Bytes::from_static(b"21.5"))]
    );

    // The other way: SUBSCRIBE by a wildcard name, REGISTER, PUBLISH.
    net.send(
        0,
        sensor,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            msg_id: 3,
            topic: TopicRef::Name(b"down/#"),
        },
    );
    assert_eq!(
        net.replies(sensor),
        [enc(&Message::SubAck {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            topic_id: 0,
            msg_id: 3,
            code: ReturnCode::Accepted
        })]
    );
    net.mqtt_send(app, mqtt_publish("down/led", QoS::AtMostOnce, 0, b"on"));
    let replies = net.replies(sensor);
    let (topic_id, msg_id) = match decode(&replies[0]) {
        Ok(Message::Register {
            topic_id,
            msg_id,
            topic_name: b"down/led",
        }) => (topic_id, msg_id),
        other => panic!("expected REGISTER, got {other:?}"),
    };
    assert_eq!(replies.len(), 1);
    net.send(
        0,
        sensor,
        Message::RegAck {
            topic_id,
            msg_id,
            code: ReturnCode::Accepted,
        },
    );
    assert_eq!(
        net.replies(sensor),
        [enc(&sn_publish(
            SnQoS::AtMostOnce,
            TopicIdType::Normal,
            topic_id,
            0,
            b"on"
        ))]
    );
}

#[test]
fn a_client_at_the_non_owner_shard_is_forwarded_and_its_route_forgotten_when_it_goes() {
    let mut net = Net::new(2);
    let id = net.id_on(1, "sensor");
    let sensor = addr(1, 4000);
    // The kernel hands the client's datagrams to shard 0; shard 1 owns it.
    net.send(0, sensor, connect(&id, false, 30));
    assert_eq!(
        net.to(sensor),
        [(1, enc(&Message::ConnAck(ReturnCode::Accepted)))],
        "the owner answers"
    );
    assert_eq!(net.nodes[0].gw.clients(), 0);
    assert_eq!(net.nodes[1].gw.clients(), 1);
    assert_eq!(net.nodes[0].gw.routes.len(), 1);

    let app = net.mqtt(&net.id_on(0, "app"));
    net.subscribe(app, "up/#", QoS::AtMostOnce);
    let topic = net.sn_register(0, sensor, "up/temp");
    net.send(
        0,
        sensor,
        sn_publish(SnQoS::AtMostOnce, TopicIdType::Normal, topic, 0, b"20"),
    );
    assert_eq!(
        net.publishes(app),
        [("up/temp".to_string(), Bytes::from_static(b"20"))]
    );

    // MQTT to MQTT-SN across the shards, by short name (§6.7).
    net.send(
        0,
        sensor,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Short),
            msg_id: 4,
            topic: TopicRef::Short(*b"cm"),
        },
    );
    assert_eq!(
        net.to(sensor),
        [(
            1,
            enc(&Message::SubAck {
                flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Short),
                topic_id: 0x636d,
                msg_id: 4,
                code: ReturnCode::Accepted
            })
        )]
    );
    net.mqtt_send(app, mqtt_publish("cm", QoS::AtMostOnce, 0, b"go"));
    assert_eq!(
        net.to(sensor),
        [(
            1,
            enc(&sn_publish(
                SnQoS::AtMostOnce,
                TopicIdType::Short,
                0x636d,
                0,
                b"go"
            ))
        )]
    );

    net.send(0, sensor, Message::Disconnect(None));
    assert_eq!(net.to(sensor), [(1, enc(&Message::Disconnect(None)))]);
    assert!(no_state(&net.nodes[0].gw), "the via shard forgot the route");
    assert!(no_state(&net.nodes[1].gw));
    // Later datagrams from the address are an unknown client's.
    let before = net.dropped(DropReason::UnknownClient);
    net.send(0, sensor, Message::PingReq(None));
    assert_eq!(net.dropped(DropReason::UnknownClient), before + 1);
    assert!(net.to(sensor).is_empty());
}

/// `message` wrapped by a forwarder (§5.5).
fn wrapped(ctrl: u8, node: &[u8], message: &Message<'_>) -> Vec<u8> {
    let mut out = vec![(3 + node.len()) as u8, 0xFE, ctrl];
    out.extend_from_slice(node);
    out.extend_from_slice(&enc(message));
    out
}

#[test]
fn a_forwarded_client_is_answered_through_its_forwarder_with_its_node_id_5_5() {
    let mut net = Net::new(1);
    let forwarder = addr(1, 5000);
    net.datagram(
        0,
        forwarder,
        &wrapped(0x01, &[0xAB, 0xCD], &connect("node-a", false, 30)),
    );
    assert_eq!(
        net.replies(forwarder),
        [wrapped(
            0x01,
            &[0xAB, 0xCD],
            &Message::ConnAck(ReturnCode::Accepted)
        )]
    );
    // Another node behind the same forwarder is another client.
    net.datagram(
        0,
        forwarder,
        &wrapped(0x01, &[0x01], &connect("node-b", false, 30)),
    );
    let replies = net.replies(forwarder);
    assert_eq!(
        replies,
        [wrapped(
            0x01,
            &[0x01],
            &Message::ConnAck(ReturnCode::Accepted)
        )]
    );
    assert_eq!(net.nodes[0].gw.clients(), 2);
    let frame = decode_frame(&replies[0]).unwrap();
    assert_eq!(frame.forwarder, Some((0x01, &[0x01][..])));

    net.datagram(
        0,
        forwarder,
        &wrapped(0x01, &[0xAB, 0xCD], &Message::PingReq(None)),
    );
    assert_eq!(
        net.replies(forwarder),
        [wrapped(0x01, &[0xAB, 0xCD], &Message::PingResp)]
    );
    // The bare address is neither.
    net.send(0, forwarder, Message::PingReq(None));
    assert!(net.replies(forwarder).is_empty());
    assert_eq!(net.dropped(DropReason::UnknownClient), 1);
}

#[test]
fn clients_per_address_are_bounded_and_counted() {
    let mut net = Net::with_limits(
        1,
        Limits {
            max_clients_per_address: 2,
            ..limits()
        },
    );
    net.sn_connect(0, addr(1, 1), "a", 30);
    net.sn_connect(0, addr(1, 2), "b", 30);
    net.send(0, addr(1, 3), connect("c", false, 30));
    assert!(net.replies(addr(1, 3)).is_empty());
    assert_eq!(net.dropped(DropReason::TooManyClients), 1);
    assert_eq!(net.nodes[0].gw.clients(), 2);
    // Another address is not bound by it; a client leaving frees a place.
    net.sn_connect(0, addr(2, 3), "d", 30);
    net.send(0, addr(1, 1), Message::Disconnect(None));
    net.sn_connect(0, addr(1, 3), "c", 30);
}

#[test]
fn datagrams_per_address_are_rate_limited_and_counted() {
    let mut net = Net::with_limits(
        1,
        Limits {
            max_datagrams_per_second: 4,
            ..limits()
        },
    );
    let from = addr(1, 1);
    for _ in 0..4 {
        net.send(0, from, Message::SearchGw { radius: 0 });
    }
    assert_eq!(net.replies(from).len(), 4);
    net.send(0, from, Message::SearchGw { radius: 0 });
    assert!(net.replies(from).is_empty());
    assert_eq!(net.dropped(DropReason::RateLimited), 1);
    // Another address has its own bucket; time refills this one.
    net.send(0, addr(2, 1), Message::SearchGw { radius: 0 });
    assert_eq!(net.replies(addr(2, 1)).len(), 1);
    net.now += Duration::from_millis(250);
    net.send(0, from, Message::SearchGw { radius: 0 });
    assert_eq!(net.replies(from).len(), 1);
    net.send(0, from, Message::SearchGw { radius: 0 });
    assert_eq!(net.dropped(DropReason::RateLimited), 2);
}

#[test]
fn garbage_is_dropped_by_reason_and_leaves_no_state() {
    let mut net = Net::new(2);
    let from = addr(1, 1);
    let cases: [(DropReason, Vec<u8>); 7] = [
        (DropReason::TooShort, vec![0x05]),
        (DropReason::LengthMismatch, vec![0x05, 0x18, 0x00]),
        (DropReason::UnknownType, vec![0x02, 0x03]),
        // A CONNECT whose TopicIdType is the reserved 0b11.
        (
            DropReason::BadFlags,
            vec![0x07, 0x04, 0x07, 0x01, 0x00, 0x0a, b'a'],
        ),
        // A PUBACK one octet short of its fields.
        (
            DropReason::Malformed,
            vec![0x06, 0x0D, 0x00, 0x01, 0x00, 0x02],
        ),
        // A client that never connected.
        (
            DropReason::UnknownClient,
            enc(&sn_publish(
                SnQoS::AtMostOnce,
                TopicIdType::Normal,
                1,
                0,
                b"x",
            )),
        ),
        (DropReason::TooLarge, vec![0u8; 1025]),
    ];
    for (reason, data) in cases {
        for shard in 0..2 {
            let before = net.dropped(reason);
            net.datagram(shard, from, &data);
            assert_eq!(
                net.dropped(reason),
                before + 1,
                "{reason:?} on shard {shard}"
            );
        }
    }
    assert!(net.sent.is_empty(), "garbage is not answered");
    for node in &net.nodes {
        assert!(no_state(&node.gw));
    }
    assert_eq!(net.metrics.received.load(Relaxed), 14);
    assert_eq!(net.metrics.sent.load(Relaxed), 0);
}

#[test]
fn qos_minus_one_publishes_to_predefined_ids_and_short_names_only_6_8() {
    let mut net = Net::new(2);
    let app = net.mqtt(&net.id_on(1, "app"));
    net.subscribe(app, "#", QoS::AtMostOnce);
    let sensor = addr(1, 1);
    for shard in 0..2 {
        net.send(
            shard,
            sensor,
            sn_publish(
                SnQoS::MinusOne,
                TopicIdType::Predefined,
                PREDEFINED_ID,
                0,
                b"p",
            ),
        );
        net.send(
            shard,
            sensor,
            sn_publish(
                SnQoS::MinusOne,
                TopicIdType::Short,
                u16::from_be_bytes(*b"t1"),
                0,
                b"s",
            ),
        );
    }
    let got = net.publishes(app);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], (PREDEFINED.to_string(), Bytes::from_static(b"p")));
    assert_eq!(got[1], ("t1".to_string(), Bytes::from_static(b"s")));
    assert_eq!(net.metrics.published_minus_one.load(Relaxed), 4);

    // A normal id means nothing without a connection; an unknown
    // predefined id neither.
    net.send(
        0,
        sensor,
        sn_publish(SnQoS::MinusOne, TopicIdType::Normal, 1, 0, b"n"),
    );
    net.send(
        0,
        sensor,
        sn_publish(SnQoS::MinusOne, TopicIdType::Predefined, 77, 0, b"n"),
    );
    assert!(net.publishes(app).is_empty());
    assert_eq!(net.dropped(DropReason::QosMinusOne), 2);
    assert!(net.sent.is_empty(), "QoS -1 is never answered");
    for node in &net.nodes {
        assert!(no_state(&node.gw));
    }
}

#[test]
fn qos_minus_one_can_be_switched_off_6_8() {
    let mut net = Net::with_limits(
        1,
        Limits {
            qos_minus_one: false,
            ..limits()
        },
    );
    let app = net.mqtt("app");
    net.subscribe(app, "#", QoS::AtMostOnce);
    net.send(
        0,
        addr(1, 1),
        sn_publish(
            SnQoS::MinusOne,
            TopicIdType::Short,
            u16::from_be_bytes(*b"t1"),
            0,
            b"s",
        ),
    );
    assert!(net.publishes(app).is_empty());
    assert_eq!(net.dropped(DropReason::QosMinusOne), 1);
}

#[test]
fn the_will_is_published_when_the_keepalive_expires_6_3_6_11() {
    for shards in [1, 2] {
        let mut net = Net::new(shards);
        let watcher = net.mqtt(&net.id_on(0, "watcher"));
        net.subscribe(watcher, "will/#", QoS::AtMostOnce);
        let id = net.id_on(shards - 1, "dev");
        let dev = addr(1, 1);
        net.send(0, dev, connect(&id, true, 10));
        assert_eq!(net.replies(dev), [enc(&Message::WillTopicReq)]);
        net.send(
            0,
            dev,
            Message::WillTopic(Some((
                Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
                b"will/dev",
            ))),
        );
        assert_eq!(net.replies(dev), [enc(&Message::WillMsgReq)]);
        net.send(0, dev, Message::WillMsg(b"lost"));
        assert_eq!(
            net.replies(dev),
            [enc(&Message::ConnAck(ReturnCode::Accepted))]
        );

        net.advance(Duration::from_secs(15));
        assert!(net.publishes(watcher).is_empty(), "within 1.5 x Duration");
        assert_eq!(net.nodes[shards - 1].gw.clients(), 1);
        net.advance(Duration::from_secs(1));
        assert_eq!(
            net.publishes(watcher),
            [("will/dev".to_string(), Bytes::from_static(b"lost"))],
            "{shards} shards"
        );
        for node in &net.nodes {
            assert!(no_state(&node.gw), "{shards} shards");
        }
    }
}

#[test]
fn a_clean_disconnect_publishes_no_will_6_12() {
    let mut net = Net::new(1);
    let watcher = net.mqtt("watcher");
    net.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let dev = addr(1, 1);
    net.send(0, dev, connect("dev", true, 10));
    net.send(
        0,
        dev,
        Message::WillTopic(Some((
            Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            b"will/dev",
        ))),
    );
    net.send(0, dev, Message::WillMsg(b"lost"));
    net.send(0, dev, Message::Disconnect(None));
    net.advance(Duration::from_secs(60));
    assert!(net.publishes(watcher).is_empty());
    assert!(no_state(&net.nodes[0].gw));
}

#[test]
fn an_mqtt_client_taking_the_id_over_disconnects_the_sn_client() {
    for shards in [1, 2] {
        let mut net = Net::new(shards);
        let id = net.id_on(shards - 1, "dev");
        let dev = addr(1, 1);
        net.sn_connect(0, dev, &id, 30);
        net.mqtt(&id);
        assert_eq!(
            net.replies(dev),
            [enc(&Message::Disconnect(None))],
            "{shards} shards"
        );
        for node in &net.nodes {
            assert!(no_state(&node.gw), "{shards} shards");
        }
    }
}

#[test]
fn a_refused_connect_is_connack_not_supported_and_leaves_no_state_5_3_10() {
    for shards in [1, 2] {
        let mut net = Net::new(shards);
        net.refuse = true;
        let id = net.id_on(shards - 1, "dev");
        let dev = addr(1, 1);
        net.send(0, dev, connect(&id, false, 30));
        assert_eq!(
            net.replies(dev),
            [enc(&Message::ConnAck(ReturnCode::NotSupported))]
        );
        for node in &net.nodes {
            assert!(no_state(&node.gw), "{shards} shards");
        }
    }
}

#[test]
fn a_sleeping_client_gets_what_was_published_while_it_slept_6_14() {
    let mut net = Net::new(2);
    let id = net.id_on(1, "sleeper");
    let dev = addr(1, 1);
    net.sn_connect(0, dev, &id, 30);
    net.send(
        0,
        dev,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtLeastOnce, TopicIdType::Short),
            msg_id: 1,
            topic: TopicRef::Short(*b"cm"),
        },
    );
    net.replies(dev);
    net.send(0, dev, Message::Disconnect(Some(600)));
    assert_eq!(net.replies(dev), [enc(&Message::Disconnect(None))]);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.metrics.shards[1].asleep.load(Relaxed), 1);

    let app = net.mqtt(&net.id_on(0, "app"));
    net.mqtt_send(app, mqtt_publish("cm", QoS::AtLeastOnce, 1, b"wake"));
    assert!(net.replies(dev).is_empty());
    net.advance(Duration::from_secs(300));
    assert_eq!(net.metrics.shards[1].buffered.load(Relaxed), 1);

    net.send(0, dev, Message::PingReq(Some(id.as_bytes())));
    let replies = net.replies(dev);
    let msg_id = match replies
        .iter()
        .map(|d| decode(d))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [Ok(Message::Publish {
            topic_id: 0x636d,
            msg_id,
            data: b"wake",
            ..
        })] => *msg_id,
        other => panic!("expected the buffered PUBLISH alone, got {other:?}"),
    };
    net.send(
        0,
        dev,
        Message::PubAck {
            topic_id: 0x636d,
            msg_id,
            code: ReturnCode::Accepted,
        },
    );
    assert_eq!(net.replies(dev), [enc(&Message::PingResp)]);
    // Asleep past 1.5 x 600 s: lost.
    net.advance(Duration::from_secs(901));
    for node in &net.nodes {
        assert!(no_state(&node.gw));
    }
}

#[test]
fn a_sleeping_client_back_from_another_address_keeps_its_session_6_14() {
    let mut net = Net::new(2);
    let id = net.id_on(1, "roamer");
    let (old, new) = (addr(1, 1), addr(2, 2));
    net.sn_connect(0, old, &id, 30);
    net.send(0, old, Message::Disconnect(Some(600)));
    net.replies(old);
    net.send(1, new, Message::PingReq(Some(id.as_bytes())));
    assert_eq!(net.replies(new), [enc(&Message::PingResp)]);
    assert_eq!(net.nodes[1].gw.clients(), 1);
    assert!(
        no_state(&net.nodes[0].gw),
        "the old address's route and count are gone"
    );
    let g = &net.nodes[1].gw;
    assert_eq!(g.by_key.len(), 1);
    assert!(g.by_key.contains_key(&PeerKey {
        addr: new,
        node: None
    }));
}

#[test]
fn a_new_client_id_at_a_forwarded_address_replaces_the_old_client_and_keeps_the_route() {
    let mut net = Net::new(2);
    let watcher = net.mqtt(&net.id_on(0, "watcher"));
    net.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let (a, c) = (net.id_on(1, "a"), net.id_on(1, "c"));
    let dev = addr(1, 1);
    net.send(0, dev, connect(&a, true, 30));
    net.send(
        0,
        dev,
        Message::WillTopic(Some((
            Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            b"will/a",
        ))),
    );
    net.send(0, dev, Message::WillMsg(b"gone"));
    net.replies(dev);
    // Another client id from the same address: the first left silently.
    net.sn_connect(0, dev, &c, 30);
    assert_eq!(
        net.publishes(watcher),
        [("will/a".to_string(), Bytes::from_static(b"gone"))]
    );
    assert_eq!(net.nodes[1].gw.clients(), 1);
    // The address still reaches its (new) client through shard 0.
    assert_eq!(net.sn_register(0, dev, "x/y"), 1);
    assert_eq!(net.nodes[0].gw.per_ip.values().sum::<usize>(), 1);
    net.send(0, dev, Message::Disconnect(None));
    for node in &net.nodes {
        assert!(no_state(&node.gw));
    }
}

#[test]
fn a_new_client_id_at_a_local_address_replaces_the_old_client_once_counted() {
    let mut net = Net::new(1);
    let dev = addr(1, 1);
    net.sn_connect(0, dev, "a", 30);
    net.sn_connect(0, dev, "c", 30);
    assert_eq!(net.nodes[0].gw.clients(), 1);
    assert_eq!(net.nodes[0].gw.per_ip.values().sum::<usize>(), 1);
    net.send(0, dev, Message::Disconnect(None));
    assert!(no_state(&net.nodes[0].gw));
}

#[test]
fn a_new_client_id_owned_by_a_third_shard_drops_the_old_client_at_once() {
    let mut net = Net::new(3);
    let watcher = net.mqtt(&net.id_on(0, "watcher"));
    net.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let (a, c) = (net.id_on(1, "a"), net.id_on(2, "c"));
    let dev = addr(1, 1);
    net.send(0, dev, connect(&a, true, 10));
    net.send(
        0,
        dev,
        Message::WillTopic(Some((
            Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            b"will/a",
        ))),
    );
    net.send(0, dev, Message::WillMsg(b"gone"));
    net.replies(dev);
    net.send(0, dev, connect(&c, false, 60));
    assert_eq!(
        net.to(dev),
        [(2, enc(&Message::ConnAck(ReturnCode::Accepted)))]
    );
    // The first client left silently: its will, and no more datagrams
    // of its to the address.
    assert_eq!(
        net.publishes(watcher),
        [("will/a".to_string(), Bytes::from_static(b"gone"))]
    );
    assert_eq!(net.nodes[1].gw.clients(), 0);
    // Past the first client's keepalive, the route still leads to the new.
    net.advance(Duration::from_secs(16));
    assert_eq!(net.sn_register(0, dev, "x/y"), 1);
    assert_eq!(net.nodes[0].gw.per_ip.values().sum::<usize>(), 1);
}

#[test]
fn the_same_client_id_from_another_address_takes_the_session_over() {
    for shards in [1, 2] {
        let mut net = Net::new(shards);
        let id = net.id_on(shards - 1, "dev");
        let (old, new) = (addr(1, 1), addr(2, 2));
        net.sn_connect(0, old, &id, 30);
        net.sn_connect(0, new, &id, 30);
        assert_eq!(
            net.replies(old),
            [enc(&Message::Disconnect(None))],
            "{shards} shards"
        );
        let owner = &net.nodes[shards - 1].gw;
        assert_eq!(owner.clients(), 1);
        assert_eq!(owner.by_key.len(), 1);
        assert_eq!(net.nodes[0].gw.per_ip.len(), 1, "{shards} shards");
        net.send(0, new, Message::Disconnect(None));
        for node in &net.nodes {
            assert!(no_state(&node.gw), "{shards} shards");
        }
    }
}

/// The messages of `replies`, decoded.
fn decoded(replies: &[Vec<u8>]) -> Vec<Message<'_>> {
    replies.iter().map(|d| decode(d).expect("valid")).collect()
}

#[test]
fn subscribe_by_name_and_predefined_id_gets_retained_messages_then_unsubscribe_6_9() {
    let mut net = Net::new(2);
    let app = net.mqtt(&net.id_on(0, "app"));
    let retained = |topic: &str, payload: &'static [u8]| {
        let Packet::Publish(mut p) = mqtt_publish(topic, QoS::AtMostOnce, 0, payload) else {
            unreachable!()
        };
        p.retain = true;
        Packet::Publish(p)
    };
    let (exact, pre) = (retained("room/temp", b"19"), retained(PREDEFINED, b"p"));
    net.mqtt_send(app, exact);
    net.mqtt_send(app, pre);
    let id = net.id_on(1, "dev");
    let dev = addr(1, 1);
    net.sn_connect(0, dev, &id, 30);

    // A name without wildcards gets its id in the SUBACK, and the retained
    // message comes on it without a REGISTER.
    net.send(
        0,
        dev,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtLeastOnce, TopicIdType::Normal),
            msg_id: 1,
            topic: TopicRef::Name(b"room/temp"),
        },
    );
    let replies = net.replies(dev);
    let mut retained_flags = Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal);
    retained_flags.retain = true;
    assert_eq!(
        decoded(&replies),
        [
            Message::SubAck {
                flags: Flags::new(SnQoS::AtLeastOnce, TopicIdType::Normal),
                topic_id: 1,
                msg_id: 1,
                code: ReturnCode::Accepted
            },
            Message::Publish {
                flags: retained_flags,
                topic_id: 1,
                msg_id: 0,
                data: b"19"
            }
        ]
    );
    net.send(
        0,
        dev,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Predefined),
            msg_id: 2,
            topic: TopicRef::Predefined(PREDEFINED_ID),
        },
    );
    let replies = net.replies(dev);
    retained_flags.topic_id_type = TopicIdType::Predefined;
    assert_eq!(
        decoded(&replies),
        [
            Message::SubAck {
                flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Predefined),
                topic_id: PREDEFINED_ID,
                msg_id: 2,
                code: ReturnCode::Accepted
            },
            Message::Publish {
                flags: retained_flags,
                topic_id: PREDEFINED_ID,
                msg_id: 0,
                data: b"p"
            }
        ]
    );
    // An unknown predefined id is refused.
    net.send(
        0,
        dev,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Predefined),
            msg_id: 3,
            topic: TopicRef::Predefined(99),
        },
    );
    assert!(matches!(
        decoded(&net.replies(dev)).as_slice(),
        [Message::SubAck {
            code: ReturnCode::InvalidTopicId,
            msg_id: 3,
            ..
        }]
    ));

    net.send(
        0,
        dev,
        Message::Unsubscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            msg_id: 4,
            topic: TopicRef::Name(b"room/temp"),
        },
    );
    assert_eq!(net.replies(dev), [enc(&Message::UnsubAck(4))]);
    net.mqtt_send(app, mqtt_publish("room/temp", QoS::AtMostOnce, 0, b"20"));
    assert!(net.replies(dev).is_empty());
    net.mqtt_send(app, mqtt_publish(PREDEFINED, QoS::AtMostOnce, 0, b"q"));
    assert_eq!(net.replies(dev).len(), 1, "the other subscription stays");
}

#[test]
fn advertise_carries_the_gateway_id_and_interval_5_4_1() {
    let mut net = Net::new(1);
    let to = SocketAddr::from(([255, 255, 255, 255], 1884));
    net.nodes[0].gw.advertise(to, Duration::from_secs(900));
    net.settle();
    assert_eq!(
        net.replies(to),
        [enc(&Message::Advertise {
            gw_id: 9,
            duration_s: 900
        })]
    );
}

#[test]
fn the_gauges_follow_the_clients_states_at_each_tick() {
    let mut net = Net::new(1);
    let (a, b) = (addr(1, 1), addr(1, 2));
    net.sn_connect(0, a, "a", 0);
    net.sn_connect(0, b, "b", 0);
    net.sn_register(0, a, "x/y");
    net.send(0, b, Message::Disconnect(Some(600)));
    net.send(
        0,
        a,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Short),
            msg_id: 1,
            topic: TopicRef::Short(*b"zz"),
        },
    );
    let app = net.mqtt("app");
    net.mqtt_send(app, mqtt_publish("zz", QoS::AtMostOnce, 0, b"m"));
    net.advance(Duration::from_secs(1));
    let g = &net.metrics.shards[0];
    assert_eq!(g.active.load(Relaxed), 1);
    assert_eq!(g.asleep.load(Relaxed), 1);
    assert_eq!(g.topics.load(Relaxed), 1);
    let mut text = String::new();
    net.metrics.render(&mut text);
    assert!(
        text.contains("shardmq_sn_clients{state=\"asleep\"} 1"),
        "{text}"
    );
    assert!(text.contains("shardmq_sn_registered_topics 1"), "{text}");
}

#[test]
fn a_behind_subscriber_holds_qos1_publishes_back_unacknowledged_rather_than_dropping_them_6_9() {
    let mut net = Net::new(1);
    let sub = net.mqtt("slow-sub");
    net.subscribe(sub, "load/#", QoS::AtLeastOnce);
    let from = addr(1, 4000);
    net.sn_connect(0, from, "sn-pub", 60);
    let topic = net.sn_register(0, from, "load/a");
    let (mut accepted, mut congested) = (0u32, 0u32);
    let mut unacked: Vec<u16> = Vec::new();
    // The subscriber reads but never acknowledges: its window (8) fills,
    // then its queue (16) passes half, and the broker throttles publishers.
    for msg_id in 1..=200u16 {
        net.send(
            0,
            from,
            sn_publish(SnQoS::AtLeastOnce, TopicIdType::Normal, topic, msg_id, b"x"),
        );
        for reply in net.replies(from) {
            match decode(&reply).unwrap() {
                Message::PubAck {
                    code: ReturnCode::Accepted,
                    ..
                } => accepted += 1,
                Message::PubAck {
                    code: ReturnCode::Congestion,
                    ..
                } => congested += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        unacked.extend(net.received(sub).into_iter().filter_map(|p| match p {
            Packet::Publish(p) => Some(p.pkid),
            _ => None,
        }));
    }
    assert!(
        net.metrics.held.load(Relaxed) > 0,
        "publishes were held back"
    );
    assert!(
        congested > 0,
        "past what one client may have open: congestion"
    );
    // Whatever was acknowledged reaches the subscriber once it catches up.
    let mut delivered = unacked.len() as u32;
    while !unacked.is_empty() {
        for pkid in std::mem::take(&mut unacked) {
            net.mqtt_send(sub, Packet::PubAck(pkid));
        }
        unacked.extend(net.received(sub).into_iter().filter_map(|p| match p {
            Packet::Publish(p) => Some(p.pkid),
            _ => None,
        }));
        delivered += unacked.len() as u32;
    }
    // The held ones were acknowledged once the subscriber caught up.
    for reply in net.replies(from) {
        if let Ok(Message::PubAck {
            code: ReturnCode::Accepted,
            ..
        }) = decode(&reply)
        {
            accepted += 1;
        }
    }
    assert_eq!(delivered, accepted, "every acknowledged message delivered");
    assert_eq!(accepted + congested, 200);
}

#[test]
fn qos0_messages_past_a_sleepers_buffer_are_dropped_and_counted_6_14() {
    let mut net = Net::new(1);
    let dev = addr(1, 1);
    net.sn_connect(0, dev, "sleeper", 30);
    net.send(
        0,
        dev,
        Message::Subscribe {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Short),
            msg_id: 1,
            topic: TopicRef::Short(*b"cm"),
        },
    );
    net.replies(dev);
    net.send(0, dev, Message::Disconnect(Some(600)));
    net.replies(dev);
    let app = net.mqtt("app");
    // `shared()` keeps 100 for a sleeper.
    for _ in 0..130 {
        net.mqtt_send(app, mqtt_publish("cm", QoS::AtMostOnce, 0, b"x"));
    }
    assert!(net.replies(dev).is_empty());
    assert_eq!(net.metrics.buffer_dropped.load(Relaxed), 30);
    net.send(0, dev, Message::PingReq(Some(b"sleeper")));
    let replies = net.replies(dev);
    assert_eq!(replies.len(), 101, "the buffer, then PINGRESP");
    assert_eq!(replies.last(), Some(&enc(&Message::PingResp)));
}

fn connect_keeping(id: &str, will: bool, duration_s: u16) -> Message<'_> {
    let mut flags = Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal);
    flags.will = will;
    Message::Connect {
        flags,
        protocol_id: 0x01,
        duration_s,
        client_id: id.as_bytes(),
    }
}

#[test]
fn clean_session_false_keeps_the_will_for_the_next_connect_without_the_will_flag_6_3() {
    let mut net = Net::new(1);
    let watcher = net.mqtt("watcher");
    net.subscribe(watcher, "wills/#", QoS::AtMostOnce);
    let dev = addr(1, 1);
    net.send(0, dev, connect_keeping("keeper", true, 10));
    assert_eq!(net.replies(dev), [enc(&Message::WillTopicReq)]);
    let flags = Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal);
    net.send(0, dev, Message::WillTopic(Some((flags, b"wills/keeper"))));
    assert_eq!(net.replies(dev), [enc(&Message::WillMsgReq)]);
    net.send(0, dev, Message::WillMsg(b"gone"));
    assert_eq!(
        net.replies(dev),
        [enc(&Message::ConnAck(ReturnCode::Accepted))]
    );
    net.send(0, dev, Message::Disconnect(None));
    net.replies(dev);
    assert!(net.publishes(watcher).is_empty(), "DISCONNECT: no will");

    // CleanSession=false, Will=false: the stored will, no dialogue.
    net.send(0, dev, connect_keeping("keeper", false, 10));
    assert_eq!(
        net.replies(dev),
        [enc(&Message::ConnAck(ReturnCode::Accepted))]
    );
    net.advance(Duration::from_secs(16));
    assert_eq!(
        net.publishes(watcher),
        [("wills/keeper".to_string(), Bytes::from_static(b"gone"))]
    );

    // CleanSession=true, Will=false: the will is deleted.
    net.sn_connect(0, dev, "keeper", 10);
    net.advance(Duration::from_secs(16));
    assert!(
        net.publishes(watcher).is_empty(),
        "no will after a clean CONNECT"
    );
}
