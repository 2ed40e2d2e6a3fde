//! The harness of the broker machine's tests: a `World` of shards joined by
//! in-memory FIFO queues, clients as connection ids, and a virtual clock.
//! The tests themselves sit beside each part (`lifecycle_tests.rs`, ...).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{owner_shard, Access, Broker, BrokerConfig, ConnId, RemoteMsg, ShardId};
use crate::mqtt::codec::{
    decode, Connect, ConnectReturnCode, LastWill, Packet, Publish, Subscribe,
};
use crate::mqtt::retained::RetainedLimits;
use crate::mqtt::session::SessionLimits;
use crate::mqtt::topic::{matches, TopicName};
use crate::mqtt::QoS;

pub(super) const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 8,
    max_queued_messages: 16,
    queue_qos0_offline: false,
    max_outbox_bytes: 1 << 16,
    max_subscriptions: 0,
    max_awaiting_pubrel: 0,
    max_queued_bytes: 0,
};

pub(super) struct World {
    pub(super) now: Instant,
    pub(super) shards: Vec<Broker>,
    /// In flight between shards: (from, to, message), FIFO like the mesh.
    wire: VecDeque<(ShardId, ShardId, RemoteMsg)>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Client {
    pub(super) shard: usize,
    pub(super) conn: ConnId,
}

impl World {
    pub(super) fn new(shards: usize) -> World {
        World::with_limits(shards, LIMITS)
    }

    pub(super) fn with_limits(shards: usize, limits: SessionLimits) -> World {
        World::with_config(shards, limits, Default::default())
    }

    pub(super) fn with_config(
        shards: usize,
        limits: SessionLimits,
        share_strategy: super::ShareStrategy,
    ) -> World {
        let now = Instant::now();
        let config = BrokerConfig {
            limits,
            retained: RetainedLimits::default(),
            max_queued_bytes_shard: 0,
            max_queued_messages_shard: 0,
            sys_interval: None,
            share_strategy,
            share_seed: 1,
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
    pub(super) fn id_on(&self, shard: usize, stem: &str) -> String {
        (0..)
            .map(|i| format!("{stem}-{i}"))
            .find(|id| owner_shard(id, self.shards.len()) == ShardId(shard as u16))
            .expect("some id hashes to every shard")
    }

    pub(super) fn connect_with(
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

    /// A client whose requests `access` decides.
    pub(super) fn connect_access(&mut self, id: &str, access: TestAccess) -> Client {
        let shard = usize::from(owner_shard(id, self.shards.len()).0);
        let connect = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive_s: 0,
            client_id: id.to_string(),
            username: None,
            password: None,
            will: None,
        };
        let conn = self.shards[shard].connect_with_acl(self.now, connect, Some(Arc::new(access)));
        self.settle();
        Client { shard, conn }
    }

    pub(super) fn connect(&mut self, id: &str) -> Client {
        self.connect_with(id, true, 0, None)
    }

    pub(super) fn send(&mut self, c: Client, packet: Packet) {
        self.shards[c.shard].handle_packet(self.now, c.conn, packet);
        self.settle();
    }

    /// Puts what the shards sent on the wire, delivering nothing yet.
    pub(super) fn collect(&mut self) {
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
    pub(super) fn settle(&mut self) {
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
    pub(super) fn received(&mut self, c: Client) -> Vec<Packet> {
        let Some(out) = self.shards[c.shard].outbox_mut(c.conn) else {
            return Vec::new();
        };
        let mut packets = Vec::new();
        while let Some(p) = decode(out, 1 << 20).expect("the broker writes valid packets") {
            packets.push(p);
        }
        packets
    }

    pub(super) fn publishes(&mut self, c: Client) -> Vec<Publish> {
        self.received(c)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    pub(super) fn subscribe(&mut self, c: Client, filter: &str, qos: QoS) {
        let packet = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter.to_string(), qos)],
        });
        self.send(c, packet);
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        for b in &mut self.shards {
            b.tick(self.now);
        }
        self.settle();
    }
}

/// A stand-in for a compiled ACL: topics by MQTT matching, a filter is
/// subscribable when a read rule equals it or ends in `#` over it; a deny
/// rule takes a topic it matches, or a filter equal to it.
#[derive(Debug, Clone, Default)]
pub(super) struct TestAccess {
    pub(super) read: Vec<&'static str>,
    pub(super) write: Vec<&'static str>,
    pub(super) deny: Vec<&'static str>,
}

impl TestAccess {
    fn allows(&self, rules: &[&str], topic: &str) -> bool {
        !self.deny.iter().any(|d| matches(d, topic)) && rules.iter().any(|r| matches(r, topic))
    }
}

impl Access for TestAccess {
    fn may_publish(&self, topic: &str) -> bool {
        self.allows(&self.write, topic)
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        let within =
            |r: &&str| *r == filter || r.strip_suffix('#').is_some_and(|p| filter.starts_with(p));
        !self.deny.contains(&filter) && self.read.iter().any(within)
    }

    fn may_receive(&self, topic: &str) -> bool {
        self.allows(&self.read, topic)
    }
}

pub(super) fn publish(topic: &str, payload: &str, qos: QoS, retain: bool, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::from_string(topic.to_string()).unwrap(),
        pkid,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

pub(super) fn connack(packets: &[Packet]) -> (bool, ConnectReturnCode) {
    match packets.first() {
        Some(Packet::ConnAck {
            session_present,
            code,
        }) => (*session_present, *code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
