//! The per-shard broker machine: connections, sessions, the local
//! subscription index, the replicated routing table and retained store.
//!
//! One `Broker` runs on each shard. It is sans-IO: packets and remote
//! messages come in through `handle_*` calls with the current time, and the
//! shell pulls out what to do with `poll_*` calls, in this order after each
//! batch of inputs:
//!
//! 1. `poll_woken` — connections whose outbox grew or that must close;
//! 2. `poll_remote` — batches for other shards, one per destination;
//! 3. `poll_service` — events of connections a service above the broker
//!    terminates (the voice gateway's devices).
//!
//! # Service connections
//! A connection opened with `connect_service` is a protocol peer of a
//! service, not a pub/sub client: its PUBLISHes are acknowledged as usual
//! but handed to the service (`ServiceEvent::Published`) instead of routed,
//! and the service answers with `push`, which writes a QoS 0 PUBLISH to that
//! connection whether or not it subscribed. Its subscriptions work as for
//! any client, so a message pushed once arrives once.
//!
//! # Ownership
//! 1. A client id belongs to shard `owner_shard(id, shards)`; only that
//!    shard holds its session, so takeover and resume are local decisions.
//! 2. Other shards learn of this shard's filters through `RouteAdd` and
//!    `RouteRemove`, sent when a filter gains its first or loses its last
//!    local subscriber; publishes are forwarded only to shards whose routes
//!    match, retained publishes to every shard (the store is replicated).
//! 3. A subscription becomes active (enters the local index) and its SUBACK
//!    is sent only when every other shard has answered a `Barrier` sent
//!    after the route updates. The channels are FIFO, so by then every shard
//!    routes to us, and every message acknowledged before the SUBSCRIBE has
//!    reached us: retained ones are in the store and go out as retained, and
//!    none is delivered a second time as a live copy.
//! 4. Routes follow `filter_refs`, the number of sessions on this shard that
//!    hold each filter, pending or active.
//! 5. Shared subscriptions (`$share/<group>/<filter>`, `share.rs`) are not
//!    routes: shards announce their members' numbers per group
//!    (`ShareCount`), and only the shard a message is published on gives
//!    it to a group, one member each (`SharedPublish`).
//!
//! # Back-pressure
//! A QoS 1/2 message is acknowledged to its publisher before subscribers on
//! other shards have it, so publishers must be slowed down when a connected
//! subscriber falls behind, or its queue would overflow and acknowledged
//! messages be dropped. When an online session's queue passes half of
//! `max_queued_messages`, its shard is under pressure and tells the others
//! (`Pressure`); while any shard is, connections that publish at QoS 1/2 are
//! not read from (`is_throttled`), except those whose own session is behind,
//! which must keep reading their acknowledgements. Pressure ends when the
//! queues are below a quarter of the limit.//!
//! # Files
//! `mod.rs` holds the types, the state and the input and output calls;
//! `lifecycle.rs` opens, takes over, resumes and closes connections and
//! sessions; `subscribe.rs` runs SUBSCRIBE, UNSUBSCRIBE and the barrier;
//! `routing.rs` runs the publish path between clients and shards and the
//! acknowledgement flows; `share.rs` the shared subscriptions;
//! `pressure.rs` the back-pressure; `sys.rs` the counters and `$SYS`.
//!
//! Two decision points take every client request that access control will
//! check: `routing::admit_publish` (a PUBLISH, before it is routed) and
//! `subscribe::grant` (each filter, before a session holds it; a refusal is
//! SUBACK 0x80). Both ask the session's compiled ACL (`crate::auth`), which
//! the shell hands over with the CONNECT (`connect_with_acl`, an
//! [`Access`]); delivery
//! asks it too (`routing::deliver_local`, and the retained messages of a
//! new subscription), so a message the client may not receive is not
//! delivered. The broker reads no file: the ACL arrives compiled. The state that persistence will record changes only
//! through `lifecycle::open_session` and `end_session` (sessions),
//! `subscribe::add_subscription` and `remove_subscription` (filters, all
//! of which `end_session` drops with the session),
//! `routing::store_retained` (retained messages) and the session's own
//! QoS flows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::mqtt::codec::{self, DecodeError, Packet};
use crate::mqtt::index::SubscriptionIndex;
use crate::mqtt::retained::{RetainedLimits, RetainedStore};
use crate::mqtt::session::{Message, QueueSize, Session, SessionLimits};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

mod lifecycle;
mod persist;
mod pressure;
mod routing;
mod share;
mod shutdown;
mod subscribe;
mod sys;

pub use lifecycle::CloseReason;
pub use persist::{Durability, JournalBatch, Persistence};
pub use share::ShareStrategy;
pub use sys::{AuthRefusal, ShardStats};

use subscribe::PendingSuback;

/// Index of a shard, below `shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// A connection on this shard; valid until `release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u32);

/// A session on this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SessionId(u32);

/// The shard that owns `client_id`: FNV-1a, stable across runs and builds so
/// that operators and load generators can predict placement.
pub fn owner_shard(client_id: &str, shards: usize) -> ShardId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let shards = shards.max(1) as u64;
    ShardId((hash % shards) as u16)
}

/// What one client may do. The broker only asks; the rules are compiled
/// above it (`crate::auth` at CONNECT) and handed over with the connect
/// (`connect_with_acl`). `Send` because it travels with a hand-off.
pub trait Access: Send + Sync + std::fmt::Debug {
    /// May PUBLISH to `topic`.
    fn may_publish(&self, topic: &str) -> bool;
    /// May hold the (valid) filter `filter`.
    fn may_subscribe(&self, filter: &str) -> bool;
    /// May be delivered a message on `topic`.
    fn may_receive(&self, topic: &str) -> bool;
}

/// Settings of the broker machine.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub limits: SessionLimits,
    /// Bounds of the retained store, checked by the shard a message is
    /// published on (see `routing::route`).
    pub retained: RetainedLimits,
    /// Bytes queued over all sessions of this shard; 0 is no limit. The
    /// shell gives each shard its part of the broker-wide bound.
    pub max_queued_bytes_shard: usize,
    /// Messages queued over all sessions of this shard; 0 is no limit.
    pub max_queued_messages_shard: usize,
    pub sys_interval: Option<Duration>,
    /// How a shared subscription's member is chosen (`share`).
    pub share_strategy: ShareStrategy,
    /// Seeds `ShareStrategy::Random`: the shell's randomness.
    pub share_seed: u64,
}

/// Messages between shards. The sending shard is known to the receiver.
#[derive(Debug, Clone)]
pub enum RemoteMsg {
    /// Deliver to local subscribers; store if retained.
    Publish(Message),
    /// Drop the topic's retained message: a replacement was refused by the
    /// store's limits on the shard it was published on.
    ClearRetained(TopicName),
    /// The sender has a first local subscriber on this filter.
    RouteAdd(String),
    /// The sender has no local subscriber on this filter any more.
    RouteRemove(String),
    /// Answer with `BarrierAck` of the same token.
    Barrier(u64),
    BarrierAck(u64),
    /// Answer with `DurableAck` of the same token once what came before
    /// is durable here (`persist`, held acknowledgements).
    Durable(u64),
    DurableAck(u64),
    /// Counters for `$SYS`, sent to shard 0.
    Stats(ShardStats),
    /// The sender has (or no longer has) a connected subscriber behind.
    Pressure(bool),
    /// The sender's members of a shared group now number `online` online
    /// and `total` in all (`share`).
    ShareCount {
        key: Arc<str>,
        online: u32,
        total: u32,
    },
    /// Deliver to the receiver's member of a shared group at `slot`;
    /// `hops` counts the forwards after the first.
    SharedPublish {
        key: Arc<str>,
        message: Message,
        slot: u64,
        hops: u8,
    },
}

#[derive(Debug)]
struct Conn {
    session: Option<SessionId>,
    outbox: BytesMut,
    keepalive: Option<Duration>,
    last_packet: Instant,
    will: Option<Message>,
    closing: Option<CloseReason>,
    /// A SUBSCRIBE waits for its barrier: no further packet is processed.
    paused: bool,
    /// Has published at QoS 1/2: throttled under back-pressure.
    publisher: bool,
    /// A service connection (see the module docs).
    service: bool,
}

/// What happened to a service connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// It published; QoS 1/2 duplicates are already filtered out.
    Published {
        conn: ConnId,
        topic: TopicName,
        payload: Bytes,
    },
    /// It is closing; `push` to it is a no-op from now on.
    Closed { conn: ConnId, reason: CloseReason },
}

/// The broker machine of one shard. See the module docs.
pub struct Broker {
    shard: ShardId,
    shards: usize,
    config: BrokerConfig,
    started: Instant,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<u32>,
    sessions: Vec<Option<Session>>,
    session_conn: Vec<Option<ConnId>>,
    /// The compiled ACL of each session's latest connection (`None`: no
    /// ACL); kept while the session is offline, for what it queues.
    session_acl: Vec<Option<Arc<dyn Access>>>,
    free_sessions: Vec<u32>,
    by_client_id: HashMap<String, SessionId>,
    index: SubscriptionIndex<SessionId>,
    filter_refs: HashMap<String, u32>,
    routes: SubscriptionIndex<ShardId>,
    retained: RetainedStore,
    pending_subacks: HashMap<u64, PendingSuback>,
    /// The shutdown's barrier: its token and the shards yet to answer.
    quiesce: Option<(u64, usize)>,
    next_token: u64,
    woken: Vec<ConnId>,
    remote_out: Vec<Vec<RemoteMsg>>,
    stats: ShardStats,
    shard_stats: Vec<ShardStats>,
    next_sys: Option<Instant>,
    scratch: Vec<(SessionId, QoS)>,
    /// Online sessions whose queue is past the high-water mark.
    behind: HashSet<SessionId>,
    /// Shards (bit per shard, this one included) under pressure.
    pressure: u64,
    service_events: VecDeque<ServiceEvent>,
    /// What all sessions queue (`Session::queue_size`).
    queued: QueueSize,
    /// The latest `now` an input brought: the time of closes that come
    /// without one.
    last_now: Instant,
    persist: persist::Persist,
    shares: share::Shares,
}

impl Broker {
    pub fn new(shard: ShardId, shards: usize, config: BrokerConfig, now: Instant) -> Broker {
        assert!((1..=64).contains(&shards), "shard sets are u64 bitmaps");
        assert!(usize::from(shard.0) < shards);
        let next_sys = Some(now + config.sys_interval.unwrap_or(sys::STATS_INTERVAL));
        let shares = share::Shares::new(config.share_seed);
        Broker {
            shard,
            shards,
            config,
            started: now,
            conns: Vec::new(),
            free_conns: Vec::new(),
            sessions: Vec::new(),
            session_conn: Vec::new(),
            session_acl: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: HashMap::new(),
            index: SubscriptionIndex::new(),
            filter_refs: HashMap::new(),
            routes: SubscriptionIndex::new(),
            retained: RetainedStore::new(),
            pending_subacks: HashMap::new(),
            quiesce: None,
            next_token: 0,
            woken: Vec::new(),
            remote_out: (0..shards).map(|_| Vec::new()).collect(),
            stats: ShardStats::default(),
            shard_stats: vec![ShardStats::default(); shards],
            next_sys,
            scratch: Vec::new(),
            behind: HashSet::new(),
            pressure: 0,
            service_events: VecDeque::new(),
            queued: QueueSize::default(),
            last_now: now,
            persist: persist::Persist::default(),
            shares,
        }
    }

    pub fn retained_len(&self) -> usize {
        self.retained.len()
    }

    /// A SUBSCRIBE of this connection waits for its barrier.
    pub fn is_paused(&self, conn: ConnId) -> bool {
        self.conn(conn).is_some_and(|c| c.paused)
    }

    pub fn outbox_mut(&mut self, conn: ConnId) -> Option<&mut BytesMut> {
        self.conn_mut(conn).map(|c| &mut c.outbox)
    }

    fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(conn.0 as usize).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(conn.0 as usize).and_then(Option::as_mut)
    }

    // ----- inputs -----------------------------------------------------------

    /// A socket failed before its CONNECT was complete (bad first packet).
    pub fn note_protocol_error(&mut self) {
        self.stats.protocol_errors += 1;
    }

    /// The peer sent bytes that are not a valid packet.
    pub fn handle_decode_error(&mut self, conn: ConnId, error: &DecodeError) {
        tracing::debug!(?conn, %error, "malformed packet");
        if matches!(error, DecodeError::PacketTooLarge { .. }) {
            self.stats.limit_packet_too_large += 1;
        }
        self.close(conn, CloseReason::ProtocolError);
    }

    /// One packet from a connected client.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.closing.is_some() {
            return;
        }
        c.last_packet = now;
        let Some(sid) = c.session else { return };
        self.last_now = now;
        match packet {
            Packet::Publish(p) => self.handle_publish(conn, sid, p),
            Packet::PubAck(pkid) => self.handle_ack(conn, sid, |s, _| s.handle_puback(pkid)),
            Packet::PubRec(pkid) => self.handle_ack(conn, sid, |s, out| s.handle_pubrec(pkid, out)),
            Packet::PubComp(pkid) => self.handle_ack(conn, sid, |s, _| s.handle_pubcomp(pkid)),
            Packet::PubRel(pkid) => self.handle_pubrel(conn, sid, pkid),
            Packet::Subscribe(s) => self.handle_subscribe(conn, sid, s.pkid, s.filters),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn, sid, u.pkid, u.filters),
            Packet::PingReq => self.write(conn, codec::encode_pingresp),
            Packet::Disconnect => self.close(conn, CloseReason::Disconnect),
            // A second CONNECT (§3.1.0-2) and server-to-client packets.
            _ => self.close(conn, CloseReason::ProtocolError),
        }
    }

    /// Timers: keepalive expiry and `$SYS`. Call at least every
    /// `TICK_INTERVAL`.
    pub fn tick(&mut self, now: Instant) {
        self.last_now = now;
        self.expire_keepalives(now);
        self.expire_sessions(now);
        self.tick_sys(now);
    }

    /// The limits for a session whose queue holds `queued`: its own bounds
    /// on queued bytes and messages, lowered to what the shard's leave.
    fn limits_for(&self, queued: QueueSize) -> SessionLimits {
        let mut limits = self.config.limits;
        let shard_max = self.config.max_queued_bytes_shard;
        if shard_max > 0 {
            let room = shard_max.saturating_sub(self.queued.bytes);
            // At least 1: 0 would mean no limit.
            let cap = queued.bytes.saturating_add(room).max(1);
            limits.max_queued_bytes = match limits.max_queued_bytes {
                0 => cap,
                own => own.min(cap),
            };
        }
        let shard_max = self.config.max_queued_messages_shard;
        if shard_max > 0 {
            let room = shard_max.saturating_sub(self.queued.messages);
            let cap = queued.messages.saturating_add(room);
            limits.max_queued_messages = limits.max_queued_messages.min(cap);
        }
        limits
    }

    /// Counts a drop, and whether the shard's bound on queued messages
    /// made it: `limits` came from `limits_for`, the queue holds `len`.
    fn note_dropped(&mut self, limits: &SessionLimits, len: usize) {
        self.stats.messages_dropped += 1;
        if limits.max_queued_messages < self.config.limits.max_queued_messages
            && len >= limits.max_queued_messages
        {
            self.stats.limit_queued_messages_dropped += 1;
        }
    }

    fn write(&mut self, conn: ConnId, encode: impl FnOnce(&mut BytesMut)) {
        if let Some(c) = self.conn_mut(conn) {
            encode(&mut c.outbox);
            self.woken.push(conn);
        }
    }

    fn broadcast(&mut self, msg: RemoteMsg) {
        for shard in 0..self.shards {
            if shard != usize::from(self.shard.0) {
                self.remote_out[shard].push(msg.clone());
            }
        }
    }

    fn send(&mut self, to: ShardId, msg: RemoteMsg) {
        self.remote_out[usize::from(to.0)].push(msg);
    }

    // ----- outputs ------------------------------------------------------------

    /// The next event of a service connection.
    #[must_use]
    pub fn poll_service(&mut self) -> Option<ServiceEvent> {
        self.service_events.pop_front()
    }

    /// A connection to wake: its outbox grew, its pause ended, or it closes.
    /// May repeat a connection; waking twice is harmless.
    #[must_use]
    pub fn poll_woken(&mut self) -> Option<ConnId> {
        self.woken.pop()
    }

    /// The next non-empty batch for another shard.
    #[must_use]
    pub fn poll_remote(&mut self) -> Option<(ShardId, Vec<RemoteMsg>)> {
        let shard = self.remote_out.iter().position(|b| !b.is_empty())?;
        let batch = std::mem::take(&mut self.remote_out[shard]);
        Some((ShardId(shard as u16), batch))
    }
}

#[cfg(test)]
mod world_tests;

#[cfg(test)]
mod acl_tests;
