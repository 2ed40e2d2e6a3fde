//! One shard's MQTT-SN gateway (sans-IO): its clients by address and by
//! client id, the addresses whose clients live on other shards, the
//! per-address limits, and the translation of each client's steps into
//! calls on the broker machine.
//!
//! # Where a client lives
//! A client id belongs to the shard `owner_shard` names, as for MQTT. The
//! kernel spreads datagrams over the shards' sockets by address, so the
//! shard that receives a client's datagrams (its *via* shard) may not own
//! it: the via shard learns the owner from the CONNECT (or a waking
//! PINGREQ's client id), keeps a route for the address, and forwards every
//! later datagram there. The owner answers from its own socket, bound to
//! the same port. When the client goes, the owner tells the via shard to
//! forget the route. The per-address limits are the via shard's.
//!
//! # Broker connections
//! The gateway calls the broker directly; the shell only pumps: it wakes
//! `drain` for the connections whose outbox grew, sends `outgoing`, posts
//! `mesh`, and registers or forgets the wakers of `opened` and `released`.
//! The calls on the broker for each client are in `gateway_broker.rs`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::client::{Client, ClientOut, Shared, State, ToBroker, Will};
use super::codec::{self, msg_type, Message, SnQoS, TopicIdType};
use super::metrics::{DropReason, SnMetrics};
use super::topics::short_name;
use crate::mqtt::broker::{owner_shard, Access, Broker, ConnId, ShardId};
use crate::mqtt::codec::{Connect, ConnectReturnCode, Packet, Publish};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// A client's address: the UDP source, and the wireless node id when a
/// forwarder wraps its messages (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: SocketAddr,
    pub node: Option<Box<[u8]>>,
}

/// What the gateway sends to itself on another shard.
#[derive(Debug)]
pub enum Mesh {
    /// A datagram from `key` for a client the receiver owns; `via` received
    /// it (its routes point to the receiver).
    Datagram {
        key: PeerKey,
        via: ShardId,
        data: Vec<u8>,
    },
    /// The client at `key` is gone: drop its route.
    Forget(PeerKey),
    /// The client at `key` now lives on `to`.
    Reroute { key: PeerKey, to: ShardId },
    /// Another client took the address `key` (a CONNECT or a wake with
    /// another client id): the receiver's client there left silently.
    Gone(PeerKey),
}

/// The gateway's settings beside the clients' `Shared`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub gateway_id: u8,
    pub qos_minus_one: bool,
    pub max_clients_per_address: usize,
    pub max_datagrams_per_second: u32,
    pub max_datagram: usize,
}

/// Checks a client's CONNECT against the broker's users and ACL: the
/// client's ACL, or the CONNACK code that refuses it.
pub type Authorize<'a> =
    &'a mut dyn FnMut(&Connect, SocketAddr) -> Result<Option<Arc<dyn Access>>, ConnectReturnCode>;

struct Entry {
    client: Client,
    key: PeerKey,
    /// The forwarder's Ctrl octet, repeated in answers.
    ctrl: u8,
    conn: Option<ConnId>,
    via: ShardId,
}

/// Datagrams to send, each already wrapped for its forwarder.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub list: Vec<(SocketAddr, std::ops::Range<usize>)>,
}

impl Outgoing {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.list.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.list
            .iter()
            .map(|(to, r)| (&self.bytes[r.clone()], *to))
    }

    fn push(&mut self, key: &PeerKey, ctrl: u8, datagram: &[u8]) {
        let start = self.bytes.len();
        if let Some(node) = &key.node {
            let Ok(len) = u8::try_from(3 + node.len()) else {
                return;
            };
            self.bytes
                .extend_from_slice(&[len, msg_type::ENCAPSULATED, ctrl]);
            self.bytes.extend_from_slice(node);
        }
        self.bytes.extend_from_slice(datagram);
        self.list.push((key.addr, start..self.bytes.len()));
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One shard's gateway. See the module docs.
pub struct Gateway {
    shard: ShardId,
    shards: usize,
    shared: Shared,
    limits: Limits,
    metrics: Arc<SnMetrics>,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_key: HashMap<PeerKey, usize>,
    by_id: HashMap<String, usize>,
    by_conn: HashMap<ConnId, usize>,
    routes: HashMap<PeerKey, ShardId>,
    per_ip: HashMap<IpAddr, usize>,
    rate: HashMap<IpAddr, Bucket>,
    /// The connection QoS -1 messages are published through.
    minus_one: Option<ConnId>,
    next_local_id: u64,
    scratch: ClientOut,
    /// The wills of CleanSession=false clients gone, by client id, for
    /// their next CleanSession=false CONNECT without the Will flag (§6.3);
    /// at most `MAX_KEPT_WILLS`.
    kept_wills: HashMap<String, Will>,
    /// `scratch.broker`'s vector while its steps run (`apply`).
    spare_steps: Vec<ToBroker>,
    mqtt_buf: BytesMut,
    pub outgoing: Outgoing,
    pub mesh: Vec<(ShardId, Mesh)>,
    pub opened: Vec<ConnId>,
    pub released: Vec<ConnId>,
}

/// Wills kept for clients gone (§6.3), per shard; past this a new one is
/// not kept.
const MAX_KEPT_WILLS: usize = 100_000;

/// Rate buckets kept at most; past this, unknown addresses are refused
/// until the idle ones are swept (a flood of forged sources).
const MAX_BUCKETS: usize = 1 << 18;

impl Gateway {
    pub fn new(
        shard: ShardId,
        shards: usize,
        shared: Shared,
        limits: Limits,
        metrics: Arc<SnMetrics>,
    ) -> Gateway {
        Gateway {
            shard,
            shards,
            shared,
            limits,
            metrics,
            entries: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            by_conn: HashMap::new(),
            routes: HashMap::new(),
            per_ip: HashMap::new(),
            rate: HashMap::new(),
            minus_one: None,
            next_local_id: 0,
            scratch: ClientOut::default(),
            spare_steps: Vec::new(),
            kept_wills: HashMap::new(),
            mqtt_buf: BytesMut::new(),
            outgoing: Outgoing::default(),
            mesh: Vec::new(),
            opened: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Whether `conn` is a client's broker connection here.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// A datagram this shard's socket received from `from`.
    pub fn receive(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.metrics
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if data.len() > self.limits.max_datagram {
            return self.metrics.count_drop(DropReason::TooLarge);
        }
        if !self.admit_rate(now, from.ip()) {
            return self.metrics.count_drop(DropReason::RateLimited);
        }
        self.handle(now, broker, auth, from, data, self.shard);
    }

    /// A datagram longer than `max_datagram`, cut by the receive buffer.
    pub fn too_large(&mut self) {
        self.metrics
            .received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.count_drop(DropReason::TooLarge);
    }

    /// A datagram another shard received for a client this one owns.
    pub fn forwarded(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        key: PeerKey,
        via: ShardId,
        data: &[u8],
    ) {
        self.handle(now, broker, auth, key.addr, data, via);
    }

    fn admit_rate(&mut self, now: Instant, ip: IpAddr) -> bool {
        let rate = self.limits.max_datagrams_per_second;
        if rate == 0 {
            return true;
        }
        if !self.rate.contains_key(&ip) && self.rate.len() >= MAX_BUCKETS {
            return false;
        }
        let b = self.rate.entry(ip).or_insert(Bucket {
            tokens: f64::from(rate),
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn handle(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        from: SocketAddr,
        data: &[u8],
        via: ShardId,
    ) {
        let frame = match codec::decode_frame(data) {
            Ok(frame) => frame,
            Err(e) => return self.metrics.count_drop(DropReason::from_decode(e)),
        };
        let (ctrl, node) = match frame.forwarder {
            Some((ctrl, node)) => (ctrl, Some(Box::<[u8]>::from(node))),
            None => (0, None),
        };
        let key = PeerKey { addr: from, node };
        let message = frame.message;
        if let Some(&i) = self.by_key.get(&key) {
            let same_client = match &message {
                Message::Connect { client_id, .. } => self
                    .entry(i)
                    .is_some_and(|e| e.client.client_id().as_bytes() == *client_id),
                _ => true,
            };
            if same_client {
                return self.step(now, broker, auth, i, |c, shared, out| {
                    c.on_message(now, shared, &message, out)
                });
            }
            // Another client at the address: the one there left silently.
            // The address passes to the new one; a route to here that
            // brought it stays (the new CONNECT does not count it again).
            if let Some((old_key, old_via)) = self.remove_client(now, broker, i, true) {
                if old_via == self.shard || old_via != via {
                    self.release_key(old_key, old_via);
                }
            }
        } else if via == self.shard {
            if let Some(&owner) = self.routes.get(&key) {
                let switch = match &message {
                    Message::Connect { client_id, .. } | Message::PingReq(Some(client_id)) => {
                        std::str::from_utf8(client_id)
                            .ok()
                            .map(|id| owner_shard(id, self.shards))
                    }
                    _ => None,
                };
                let to = switch.unwrap_or(owner);
                if to != owner {
                    self.routes.insert(key.clone(), to);
                    // Or its downlink would still come here, and its
                    // `Forget` take the new client's route.
                    self.mesh.push((owner, Mesh::Gone(key.clone())));
                }
                if to != self.shard {
                    self.mesh.push((
                        to,
                        Mesh::Datagram {
                            key,
                            via,
                            data: data.to_vec(),
                        },
                    ));
                    return;
                }
                self.routes.remove(&key);
                self.uncount(key.addr.ip());
            }
        }
        match &message {
            Message::SearchGw { .. } => {
                let mut wire = Vec::new();
                if (Message::GwInfo {
                    gw_id: self.limits.gateway_id,
                    gw_add: &[],
                })
                .encode(&mut wire)
                {
                    self.outgoing.push(&key, ctrl, &wire);
                    self.count_sent(1);
                }
            }
            Message::Connect { client_id, .. } => {
                let Ok(id) = std::str::from_utf8(client_id) else {
                    return self.metrics.count_drop(DropReason::Malformed);
                };
                let owner = owner_shard(id, self.shards);
                if owner != self.shard {
                    self.route(key, via, owner, data);
                    return;
                }
                if via == self.shard && !self.count(key.addr.ip()) {
                    return self.metrics.count_drop(DropReason::TooManyClients);
                }
                let takeover = self.by_id.get(id).copied();
                if let Some(old) = takeover {
                    let asleep = self
                        .entry(old)
                        .is_some_and(|e| matches!(e.client.state(), State::Asleep | State::Awake));
                    if asleep {
                        // The sleeper comes back from a new address.
                        self.rekey(old, key, ctrl, via);
                        return self.step(now, broker, auth, old, |c, shared, out| {
                            c.on_message(now, shared, &message, out)
                        });
                    }
                }
                let clean =
                    matches!(message, Message::Connect { flags, .. } if flags.clean_session);
                let kept = if clean {
                    self.kept_wills.remove(id);
                    None
                } else {
                    self.kept_wills.get(id).cloned()
                };
                self.scratch.clear();
                let client = Client::connect(now, &self.shared, &message, kept, &mut self.scratch);
                let Some(client) = client else {
                    self.flush_scratch(&key, ctrl);
                    if via == self.shard {
                        self.uncount(key.addr.ip());
                    } else {
                        self.mesh.push((via, Mesh::Forget(key)));
                    }
                    return;
                };
                let i = self.insert(Entry {
                    client,
                    key,
                    ctrl,
                    conn: None,
                    via,
                });
                self.apply(now, broker, auth, i);
            }
            Message::PingReq(Some(client_id)) => {
                let Ok(id) = std::str::from_utf8(client_id) else {
                    return self.metrics.count_drop(DropReason::Malformed);
                };
                let owner = owner_shard(id, self.shards);
                if owner != self.shard {
                    if via == self.shard && !self.count(key.addr.ip()) {
                        return self.metrics.count_drop(DropReason::TooManyClients);
                    }
                    self.routes.insert(key.clone(), owner);
                    self.mesh.push((
                        owner,
                        Mesh::Datagram {
                            key,
                            via,
                            data: data.to_vec(),
                        },
                    ));
                    return;
                }
                match self.by_id.get(id).copied() {
                    Some(i)
                        if self.entry(i).is_some_and(|e| {
                            matches!(e.client.state(), State::Asleep | State::Awake)
                        }) =>
                    {
                        if via == self.shard && !self.count(key.addr.ip()) {
                            return self.metrics.count_drop(DropReason::TooManyClients);
                        }
                        self.rekey(i, key, ctrl, via);
                        self.step(now, broker, auth, i, |c, shared, out| {
                            c.on_message(now, shared, &message, out)
                        });
                    }
                    _ => self.unknown(key, via),
                }
            }
            Message::Publish {
                flags,
                topic_id,
                data,
                ..
            } if flags.qos == SnQoS::MinusOne => {
                self.publish_minus_one(
                    now,
                    broker,
                    auth,
                    key.addr,
                    flags.topic_id_type,
                    *topic_id,
                    flags.retain,
                    data,
                );
                if via != self.shard {
                    self.mesh.push((via, Mesh::Forget(key)));
                }
            }
            _ => self.unknown(key, via),
        }
    }

    fn unknown(&mut self, key: PeerKey, via: ShardId) {
        self.metrics.count_drop(DropReason::UnknownClient);
        if via != self.shard {
            self.mesh.push((via, Mesh::Forget(key)));
        }
    }

    /// Forwards a CONNECT to the client id's owner and keeps the route.
    fn route(&mut self, key: PeerKey, via: ShardId, owner: ShardId, data: &[u8]) {
        if via == self.shard {
            if !self.count(key.addr.ip()) {
                return self.metrics.count_drop(DropReason::TooManyClients);
            }
            self.routes.insert(key.clone(), owner);
        } else {
            // Owned elsewhere after all (a new client id at an address
            // routed here): the via shard reroutes.
            self.mesh.push((
                via,
                Mesh::Reroute {
                    key: key.clone(),
                    to: owner,
                },
            ));
        }
        self.mesh.push((
            owner,
            Mesh::Datagram {
                key,
                via,
                data: data.to_vec(),
            },
        ));
    }

    /// Counts a new client of `ip` here; `false` when it has too many.
    fn count(&mut self, ip: IpAddr) -> bool {
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_clients_per_address {
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn uncount(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// The owner says a routed client is gone.
    pub fn forget(&mut self, key: &PeerKey) {
        if self.routes.remove(key).is_some() {
            self.uncount(key.addr.ip());
        }
    }

    /// The via shard gave the address `key` to a client on another
    /// shard: the one here left silently (its will goes out). The via
    /// shard keeps the address's count for the new client.
    pub fn gone(&mut self, now: Instant, broker: &mut Broker, key: &PeerKey) {
        if let Some(&i) = self.by_key.get(key) {
            self.remove_client(now, broker, i, true);
        }
    }

    pub fn reroute(&mut self, key: PeerKey, to: ShardId) {
        if let Some(owner) = self.routes.get_mut(&key) {
            *owner = to;
        }
    }

    fn entry(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i).and_then(Option::as_ref)
    }

    fn insert(&mut self, entry: Entry) -> usize {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        self.by_key.insert(entry.key.clone(), i);
        self.by_id.insert(entry.client.client_id().to_string(), i);
        self.entries[i] = Some(entry);
        i
    }

    /// A sleeping client heard from at another address.
    fn rekey(&mut self, i: usize, key: PeerKey, ctrl: u8, via: ShardId) {
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if e.key == key {
            return;
        }
        let old = std::mem::replace(&mut e.key, key.clone());
        let old_via = std::mem::replace(&mut e.via, via);
        e.ctrl = ctrl;
        self.by_key.remove(&old);
        self.by_key.insert(key, i);
        self.release_key(old, old_via);
    }

    /// The address `key` has no client here any more.
    fn release_key(&mut self, key: PeerKey, via: ShardId) {
        if via == self.shard {
            self.uncount(key.addr.ip());
        } else {
            self.mesh.push((via, Mesh::Forget(key)));
        }
    }

    /// Timers of every client; on shard 0 the caller adds ADVERTISE.
    pub fn tick(&mut self, now: Instant, broker: &mut Broker) {
        let mut gone = Vec::new();
        let (mut active, mut asleep, mut awake, mut topics, mut buffered) = (0, 0, 0, 0, 0);
        for i in 0..self.entries.len() {
            self.scratch.clear();
            let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let alive = e.client.tick(now, &self.shared, &mut self.scratch);
            match e.client.state() {
                State::Active => active += 1,
                State::Asleep => asleep += 1,
                State::Awake => awake += 1,
                _ => {}
            }
            topics += e.client.topics() as u64;
            buffered += e.client.buffered() as u64;
            let held = e.client.holds().then_some(e.conn).flatten();
            let has_output = self.scratch.has_output();
            let mut no_auth =
                |_: &Connect, _: SocketAddr| Err(ConnectReturnCode::ServerUnavailable);
            if has_output {
                self.apply(now, broker, &mut no_auth, i);
            }
            if let Some(conn) = held.filter(|_| alive) {
                // In case the wake at the pressure's end was missed.
                self.drain(now, broker, &mut no_auth, conn);
            }
            if !alive {
                gone.push(i);
            }
        }
        for i in gone {
            self.remove(now, broker, i, true);
        }
        let g = &self.metrics.shards[usize::from(self.shard.0)];
        use std::sync::atomic::Ordering::Relaxed;
        g.active.store(active, Relaxed);
        g.asleep.store(asleep, Relaxed);
        g.awake.store(awake, Relaxed);
        g.topics.store(topics, Relaxed);
        g.buffered.store(buffered, Relaxed);
        // Idle buckets are full: forgetting them changes nothing.
        let rate = f64::from(self.limits.max_datagrams_per_second);
        self.rate.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < rate
        });
        if let Some(conn) = self.minus_one {
            if let Some(out) = broker.outbox_mut(conn) {
                out.clear();
            }
            if broker.closing(conn).is_some() {
                broker.release(conn);
                self.released.push(conn);
                self.minus_one = None;
            }
        }
    }

    /// An ADVERTISE (§5.4.1) for `interval`.
    pub fn advertise(&mut self, to: SocketAddr, interval: Duration) {
        let mut wire = Vec::new();
        let duration_s = u16::try_from(interval.as_secs()).unwrap_or(u16::MAX);
        if (Message::Advertise {
            gw_id: self.limits.gateway_id,
            duration_s,
        })
        .encode(&mut wire)
        {
            self.outgoing.push(
                &PeerKey {
                    addr: to,
                    node: None,
                },
                0,
                &wire,
            );
            self.count_sent(1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish_minus_one(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        from: SocketAddr,
        kind: TopicIdType,
        topic_id: u16,
        retain: bool,
        data: &[u8],
    ) {
        if !self.limits.qos_minus_one {
            return self.metrics.count_drop(DropReason::QosMinusOne);
        }
        // Only ids both sides know without a connection (§6.8).
        let name = match kind {
            TopicIdType::Predefined => self.shared.predefined.name(topic_id).map(|n| n.to_string()),
            TopicIdType::Short => short_name(topic_id.to_be_bytes()),
            TopicIdType::Normal => None,
        };
        let Some(topic) = name.and_then(|n| TopicName::from_string(n).ok()) else {
            return self.metrics.count_drop(DropReason::QosMinusOne);
        };
        let Some(conn) = self.minus_one_conn(now, broker, auth, from) else {
            return self.metrics.count_drop(DropReason::QosMinusOne);
        };
        broker.handle_packet(
            now,
            conn,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain,
                topic,
                pkid: 0,
                payload: bytes::Bytes::copy_from_slice(data),
            }),
        );
        self.metrics
            .published_minus_one
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The broker connection of QoS -1 publishes, opened at the first.
    fn minus_one_conn(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        from: SocketAddr,
    ) -> Option<ConnId> {
        if let Some(conn) = self.minus_one {
            return Some(conn);
        }
        let client_id = loop {
            let n = self.next_local_id;
            self.next_local_id += 1;
            let id = format!("shardmq-sn-minus-one-{n}");
            if owner_shard(&id, self.shards) == self.shard {
                break id;
            }
        };
        let connect = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive_s: 0,
            client_id,
            username: self.shared.username.clone(),
            password: self.shared.password.clone(),
            will: None,
        };
        let acl = auth(&connect, from).ok()?;
        let conn = broker.connect_with_acl(now, connect, acl);
        if broker.closing(conn).is_some() {
            broker.release(conn);
            return None;
        }
        self.minus_one = Some(conn);
        Some(conn)
    }

    pub fn clients(&self) -> usize {
        self.by_id.len()
    }
}

#[path = "gateway_broker.rs"]
mod broker_side;

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
