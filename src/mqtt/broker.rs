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
//! queues are below a quarter of the limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::mqtt::codec::{self, Connect, ConnectReturnCode, DecodeError, Packet, Publish};
use crate::mqtt::index::SubscriptionIndex;
use crate::mqtt::retained::{RetainedMessage, RetainedStore};
use crate::mqtt::session::{Delivery, Message, Session, SessionLimits};
use crate::mqtt::topic::{self, TopicName};
use crate::mqtt::QoS;

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

/// Settings of the broker machine.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub limits: SessionLimits,
    pub sys_interval: Option<Duration>,
}

/// Messages between shards. The sending shard is known to the receiver.
#[derive(Debug, Clone)]
pub enum RemoteMsg {
    /// Deliver to local subscribers; store if retained.
    Publish(Message),
    /// The sender has a first local subscriber on this filter.
    RouteAdd(String),
    /// The sender has no local subscriber on this filter any more.
    RouteRemove(String),
    /// Answer with `BarrierAck` of the same token.
    Barrier(u64),
    BarrierAck(u64),
    /// Counters for `$SYS`, sent to shard 0.
    Stats(ShardStats),
    /// The sender has (or no longer has) a connected subscriber behind.
    Pressure(bool),
}

/// Counters of one shard, summed over shards for `$SYS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub clients_connected: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub protocol_errors: u64,
}

impl ShardStats {
    fn add(&mut self, other: &ShardStats) {
        self.clients_connected += other.clients_connected;
        self.messages_received += other.messages_received;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.protocol_errors += other.protocol_errors;
    }
}

/// Why a connection ends; decides whether the will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// DISCONNECT received: the will is discarded.
    Disconnect,
    /// Socket closed or failed.
    Lost,
    /// Malformed packet or protocol violation.
    ProtocolError,
    /// No packet within 1.5 × keepalive.
    KeepaliveExpired,
    /// Another connection took the client id: the will is discarded.
    TakenOver,
    /// CONNACK with a refusal code.
    Refused,
}

impl CloseReason {
    fn publishes_will(self) -> bool {
        matches!(
            self,
            CloseReason::Lost | CloseReason::ProtocolError | CloseReason::KeepaliveExpired
        )
    }
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

struct PendingSuback {
    conn: ConnId,
    session: SessionId,
    pkid: u16,
    codes: Vec<u8>,
    granted: Vec<(String, QoS)>,
    acks_missing: usize,
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
    free_sessions: Vec<u32>,
    by_client_id: HashMap<String, SessionId>,
    index: SubscriptionIndex<SessionId>,
    filter_refs: HashMap<String, u32>,
    routes: SubscriptionIndex<ShardId>,
    retained: RetainedStore,
    pending_subacks: HashMap<u64, PendingSuback>,
    next_token: u64,
    woken: Vec<ConnId>,
    remote_out: Vec<Vec<RemoteMsg>>,
    stats: ShardStats,
    shard_stats: Vec<ShardStats>,
    next_sys: Option<Instant>,
    scratch: Vec<(SessionId, QoS)>,
    /// Online sessions whose queue is past the high-water mark.
    behind: std::collections::HashSet<SessionId>,
    /// Shards (bit per shard, this one included) under pressure.
    pressure: u64,
    service_events: std::collections::VecDeque<ServiceEvent>,
}

impl Broker {
    pub fn new(shard: ShardId, shards: usize, config: BrokerConfig, now: Instant) -> Broker {
        assert!((1..=64).contains(&shards), "shard sets are u64 bitmaps");
        assert!(usize::from(shard.0) < shards);
        let next_sys = config.sys_interval.map(|i| now + i);
        Broker {
            shard,
            shards,
            config,
            started: now,
            conns: Vec::new(),
            free_conns: Vec::new(),
            sessions: Vec::new(),
            session_conn: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: HashMap::new(),
            index: SubscriptionIndex::new(),
            filter_refs: HashMap::new(),
            routes: SubscriptionIndex::new(),
            retained: RetainedStore::new(),
            pending_subacks: HashMap::new(),
            next_token: 0,
            woken: Vec::new(),
            remote_out: (0..shards).map(|_| Vec::new()).collect(),
            stats: ShardStats::default(),
            shard_stats: vec![ShardStats::default(); shards],
            next_sys,
            scratch: Vec::new(),
            behind: std::collections::HashSet::new(),
            pressure: 0,
            service_events: std::collections::VecDeque::new(),
        }
    }

    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        s.clients_connected = self.conns.iter().filter(|c| c.is_some()).count() as u64;
        s
    }

    pub fn retained_len(&self) -> usize {
        self.retained.len()
    }

    // ----- connection lifecycle -------------------------------------------

    /// A CONNECT arrived on a socket this shard will run. Queues the
    /// CONNACK; a refused connection comes back already closing.
    pub fn connect(&mut self, now: Instant, connect: Connect) -> ConnId {
        self.open(now, connect, false)
    }

    /// As `connect`, for a service connection (see the module docs).
    pub fn connect_service(&mut self, now: Instant, connect: Connect) -> ConnId {
        self.open(now, connect, true)
    }

    /// A CONNECT that a check above the broker refused (credentials, client
    /// id form): the connection only carries the CONNACK with `code`.
    pub fn refuse_connect(&mut self, now: Instant, code: ConnectReturnCode) -> ConnId {
        let conn = self.alloc_conn(now);
        self.refuse(conn, code);
        conn
    }

    fn open(&mut self, now: Instant, connect: Connect, service: bool) -> ConnId {
        let conn = self.alloc_conn(now);
        if connect.client_id.is_empty() && !connect.clean_session {
            // §3.1.3-8: a zero-length id needs clean session 1.
            self.refuse(conn, ConnectReturnCode::IdentifierRejected);
            return conn;
        }
        debug_assert_eq!(owner_shard(&connect.client_id, self.shards), self.shard);
        self.take_over(&connect.client_id);
        let (session, present) = self.open_session(&connect.client_id, connect.clean_session);
        let c = self.conn_mut(conn).expect("just allocated");
        c.session = Some(session);
        c.service = service;
        c.keepalive = (connect.keep_alive_s > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        c.will = connect.will.map(|w| Message {
            topic: w.topic.compact(),
            payload: Bytes::copy_from_slice(&w.payload),
            qos: w.qos,
            retain: w.retain,
        });
        codec::encode_connack(&mut c.outbox, present, ConnectReturnCode::Accepted);
        self.session_conn[session.0 as usize] = Some(conn);
        let limits = self.config.limits;
        let sent = {
            let c = self.conns[conn.0 as usize].as_mut().expect("live");
            let s = self.sessions[session.0 as usize].as_mut().expect("live");
            s.resume(&mut c.outbox, &limits)
        };
        self.stats.messages_sent += sent as u64;
        self.woken.push(conn);
        conn
    }

    fn refuse(&mut self, conn: ConnId, code: ConnectReturnCode) {
        if let Some(c) = self.conn_mut(conn) {
            codec::encode_connack(&mut c.outbox, false, code);
            c.closing = Some(CloseReason::Refused);
        }
        self.woken.push(conn);
    }

    fn alloc_conn(&mut self, now: Instant) -> ConnId {
        let conn = Conn {
            session: None,
            outbox: BytesMut::new(),
            keepalive: None,
            last_packet: now,
            will: None,
            closing: None,
            paused: false,
            publisher: false,
            service: false,
        };
        match self.free_conns.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(conn);
                ConnId(i)
            }
            None => {
                self.conns.push(Some(conn));
                ConnId((self.conns.len() - 1) as u32)
            }
        }
    }

    fn take_over(&mut self, client_id: &str) {
        let Some(&sid) = self.by_client_id.get(client_id) else {
            return;
        };
        if let Some(old) = self.session_conn[sid.0 as usize] {
            tracing::debug!(client_id, "session taken over");
            self.close(old, CloseReason::TakenOver);
        }
    }

    /// Finds or creates the session; returns it and the session-present flag.
    fn open_session(&mut self, client_id: &str, clean: bool) -> (SessionId, bool) {
        if let Some(&sid) = self.by_client_id.get(client_id) {
            if clean {
                self.end_session(sid);
            } else {
                let s = self.sessions[sid.0 as usize].as_mut().expect("indexed");
                let present = !s.is_clean();
                s.set_clean(false);
                return (sid, present);
            }
        }
        let session = Session::new(client_id.to_string(), clean);
        let sid = match self.free_sessions.pop() {
            Some(i) => {
                self.sessions[i as usize] = Some(session);
                self.session_conn[i as usize] = None;
                SessionId(i)
            }
            None => {
                self.sessions.push(Some(session));
                self.session_conn.push(None);
                SessionId((self.sessions.len() - 1) as u32)
            }
        };
        if !client_id.is_empty() {
            self.by_client_id.insert(client_id.to_string(), sid);
        }
        (sid, false)
    }

    fn end_session(&mut self, sid: SessionId) {
        let Some(mut session) = self.sessions[sid.0 as usize].take() else {
            return;
        };
        for (filter, _) in session.take_subscriptions() {
            self.index_unsubscribe(&filter, sid);
        }
        if self.by_client_id.get(session.client_id()) == Some(&sid) {
            self.by_client_id.remove(session.client_id());
        }
        self.session_conn[sid.0 as usize] = None;
        self.free_sessions.push(sid.0);
    }

    /// Ends a connection now: will, session detach, and the shell is woken to
    /// flush what it can and close the socket.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(reason);
        let service = c.service;
        let will = c.will.take();
        let session = c.session.take();
        if service {
            self.service_events
                .push_back(ServiceEvent::Closed { conn, reason });
        }
        if reason == CloseReason::ProtocolError {
            self.stats.protocol_errors += 1;
        }
        if let Some(sid) = session {
            // An offline session's queue is bounded by policy, not pressure.
            self.caught_up(sid);
            self.session_conn[sid.0 as usize] = None;
            let clean = match self.sessions[sid.0 as usize].as_mut() {
                Some(s) => {
                    s.go_offline();
                    s.is_clean()
                }
                None => true,
            };
            if clean {
                self.end_session(sid);
            }
        }
        if reason.publishes_will() {
            if let Some(will) = will {
                self.route(will, false);
            }
        }
        self.woken.push(conn);
    }

    /// The socket closed or failed.
    pub fn connection_lost(&mut self, conn: ConnId) {
        self.close(conn, CloseReason::Lost);
    }

    /// The shell has closed the socket of a closing connection.
    pub fn release(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.get_mut(conn.0 as usize) else {
            return;
        };
        if slot.is_some() {
            *slot = None;
            self.free_conns.push(conn.0);
        }
    }

    /// Whether the connection is closing, and why.
    pub fn closing(&self, conn: ConnId) -> Option<CloseReason> {
        self.conn(conn)
            .map_or(Some(CloseReason::Lost), |c| c.closing)
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
        match packet {
            Packet::Publish(p) => self.handle_publish(conn, sid, p),
            Packet::PubAck(pkid) => self.handle_ack(conn, sid, |s, _| s.handle_puback(pkid)),
            Packet::PubRec(pkid) => self.handle_ack(conn, sid, |s, out| s.handle_pubrec(pkid, out)),
            Packet::PubComp(pkid) => self.handle_ack(conn, sid, |s, _| s.handle_pubcomp(pkid)),
            Packet::PubRel(pkid) => {
                if let Some(s) = self.sessions[sid.0 as usize].as_mut() {
                    s.release_qos2(pkid);
                }
                self.write(conn, |out| codec::encode_pubcomp(out, pkid));
            }
            Packet::Subscribe(s) => self.handle_subscribe(conn, sid, s.pkid, s.filters),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(conn, sid, u.pkid, u.filters),
            Packet::PingReq => self.write(conn, codec::encode_pingresp),
            Packet::Disconnect => self.close(conn, CloseReason::Disconnect),
            // A second CONNECT (§3.1.0-2) and server-to-client packets.
            _ => self.close(conn, CloseReason::ProtocolError),
        }
    }

    fn write(&mut self, conn: ConnId, encode: impl FnOnce(&mut BytesMut)) {
        if let Some(c) = self.conn_mut(conn) {
            encode(&mut c.outbox);
            self.woken.push(conn);
        }
    }

    fn handle_publish(&mut self, conn: ConnId, sid: SessionId, p: Publish) {
        self.stats.messages_received += 1;
        if p.qos != QoS::AtMostOnce {
            if let Some(c) = self.conn_mut(conn) {
                c.publisher = true;
            }
        }
        let fresh = match p.qos {
            QoS::AtMostOnce => true,
            QoS::AtLeastOnce => {
                self.write(conn, |out| codec::encode_puback(out, p.pkid));
                true
            }
            QoS::ExactlyOnce => {
                let fresh = self.sessions[sid.0 as usize]
                    .as_mut()
                    .is_some_and(|s| s.receive_qos2(p.pkid));
                self.write(conn, |out| codec::encode_pubrec(out, p.pkid));
                fresh
            }
        };
        if !fresh {
            return;
        }
        if self.conn(conn).is_some_and(|c| c.service) {
            self.service_events.push_back(ServiceEvent::Published {
                conn,
                topic: p.topic,
                payload: p.payload,
            });
            return;
        }
        // `$SYS` belongs to the broker; clients' publishes there are dropped.
        if p.topic.as_str().starts_with("$SYS/") {
            return;
        }
        let message = Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
        };
        self.route(message, false);
    }

    fn handle_ack(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        ack: impl FnOnce(&mut Session, &mut BytesMut) -> bool,
    ) {
        let limits = self.config.limits;
        let (Some(c), Some(s)) = (
            self.conns[conn.0 as usize].as_mut(),
            self.sessions[sid.0 as usize].as_mut(),
        ) else {
            return;
        };
        let before = c.outbox.len();
        if ack(s, &mut c.outbox) {
            self.stats.messages_sent += s.pump(&mut c.outbox, &limits) as u64;
        }
        let queued = s.queued_len();
        if c.outbox.len() != before {
            self.woken.push(conn);
        }
        if queued <= self.low_water() {
            self.caught_up(sid);
        }
    }

    fn high_water(&self) -> usize {
        self.config.limits.max_queued_messages / 2
    }

    fn low_water(&self) -> usize {
        self.config.limits.max_queued_messages / 4
    }

    /// An online session's queue passed the high-water mark.
    fn fell_behind(&mut self, sid: SessionId) {
        if self.behind.insert(sid) && self.behind.len() == 1 {
            self.set_pressure(true);
        }
    }

    /// A session caught up, went offline or ended.
    fn caught_up(&mut self, sid: SessionId) {
        if self.behind.remove(&sid) && self.behind.is_empty() {
            self.set_pressure(false);
        }
    }

    fn set_pressure(&mut self, on: bool) {
        tracing::debug!(shard = self.shard.0, on, "subscriber back-pressure");
        self.broadcast(RemoteMsg::Pressure(on));
        self.update_pressure(self.shard, on);
    }

    fn update_pressure(&mut self, shard: ShardId, on: bool) {
        let was = self.pressure != 0;
        if on {
            self.pressure |= 1 << shard.0;
        } else {
            self.pressure &= !(1 << shard.0);
        }
        if was && self.pressure == 0 {
            // Throttled publishers wait to be woken.
            for (i, c) in self.conns.iter().enumerate() {
                if c.as_ref().is_some_and(|c| c.publisher) {
                    self.woken.push(ConnId(i as u32));
                }
            }
        }
    }

    /// Whether the shell should stop reading this connection for now.
    pub fn is_throttled(&self, conn: ConnId) -> bool {
        if self.pressure == 0 {
            return false;
        }
        let Some(c) = self.conn(conn) else {
            return false;
        };
        c.publisher && !c.session.is_some_and(|sid| self.behind.contains(&sid))
    }

    fn handle_subscribe(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        pkid: u16,
        filters: Vec<(String, QoS)>,
    ) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::with_capacity(filters.len());
        for (filter, qos) in filters {
            if topic::validate_filter(&filter).is_err() {
                codes.push(0x80);
                continue;
            }
            let replaced = self.sessions[sid.0 as usize]
                .as_mut()
                .and_then(|s| s.subscribe(&filter, qos));
            if replaced.is_none() {
                self.filter_ref(&filter);
            }
            codes.push(qos as u8);
            granted.push((filter, qos));
        }
        let pending = PendingSuback {
            conn,
            session: sid,
            pkid,
            codes,
            granted,
            acks_missing: self.shards - 1,
        };
        if pending.acks_missing == 0 {
            self.finish_subscribe(pending);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.broadcast(RemoteMsg::Barrier(token));
        self.pending_subacks.insert(token, pending);
        if let Some(c) = self.conn_mut(conn) {
            c.paused = true;
        }
    }

    /// Activates the granted filters, then sends the SUBACK and the retained
    /// messages of those filters (§3.3.1.3).
    fn finish_subscribe(&mut self, pending: PendingSuback) {
        self.activate(pending.session, &pending.granted);
        let limits = self.config.limits;
        let Some(c) = self
            .conns
            .get_mut(pending.conn.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        c.paused = false;
        if c.closing.is_some() || c.session != Some(pending.session) {
            self.woken.push(pending.conn);
            return;
        }
        codec::encode_suback(&mut c.outbox, pending.pkid, &pending.codes);
        let Some(s) = self.sessions[pending.session.0 as usize].as_mut() else {
            return;
        };
        let mut sent = 0u64;
        let mut dropped = 0u64;
        for (filter, granted) in &pending.granted {
            self.retained.for_each_match(filter, |r| {
                let message = Message {
                    topic: r.topic.clone(),
                    payload: r.payload.clone(),
                    qos: r.qos,
                    retain: true,
                };
                match s.deliver(&message, r.qos.min(*granted), &mut c.outbox, &limits) {
                    Delivery::Sent => sent += 1,
                    Delivery::Queued => {}
                    Delivery::Dropped => dropped += 1,
                }
            });
        }
        self.stats.messages_sent += sent;
        self.stats.messages_dropped += dropped;
        self.woken.push(pending.conn);
    }

    /// Puts the granted filters in the index, unless the session dropped
    /// them (UNSUBSCRIBE, clean end) while the barrier was pending.
    fn activate(&mut self, sid: SessionId, granted: &[(String, QoS)]) {
        let Some(session) = self.sessions[sid.0 as usize].as_ref() else {
            return;
        };
        for (filter, qos) in granted {
            if session.subscription(filter) == Some(*qos) {
                self.index.subscribe(filter, sid, *qos);
            }
        }
    }

    fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        pkid: u16,
        filters: Vec<String>,
    ) {
        for filter in filters {
            let had = self.sessions[sid.0 as usize]
                .as_mut()
                .is_some_and(|s| s.unsubscribe(&filter));
            if had {
                self.index_unsubscribe(&filter, sid);
            }
        }
        self.write(conn, |out| codec::encode_unsuback(out, pkid));
    }

    /// A session dropped `filter`: out of the index, and the route is
    /// withdrawn with the last holder on this shard.
    fn index_unsubscribe(&mut self, filter: &str, sid: SessionId) {
        self.index.unsubscribe(filter, sid);
        let Some(refs) = self.filter_refs.get_mut(filter) else {
            debug_assert!(false, "every held filter is counted");
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            self.filter_refs.remove(filter);
            self.broadcast(RemoteMsg::RouteRemove(filter.to_string()));
        }
    }

    /// A session took `filter`: the first holder on this shard announces
    /// the route to the others.
    fn filter_ref(&mut self, filter: &str) {
        match self.filter_refs.get_mut(filter) {
            Some(refs) => *refs += 1,
            None => {
                self.filter_refs.insert(filter.to_string(), 1);
                self.broadcast(RemoteMsg::RouteAdd(filter.to_string()));
            }
        }
    }

    /// A message from another shard.
    pub fn handle_remote(&mut self, now: Instant, from: ShardId, msg: RemoteMsg) {
        let _ = now;
        match msg {
            RemoteMsg::Publish(message) => self.route(message, true),
            RemoteMsg::RouteAdd(filter) => {
                self.routes.subscribe(&filter, from, QoS::AtMostOnce);
            }
            RemoteMsg::RouteRemove(filter) => {
                self.routes.unsubscribe(&filter, from);
            }
            RemoteMsg::Barrier(token) => self.send(from, RemoteMsg::BarrierAck(token)),
            RemoteMsg::BarrierAck(token) => {
                let Some(p) = self.pending_subacks.get_mut(&token) else {
                    return;
                };
                p.acks_missing -= 1;
                if p.acks_missing == 0 {
                    let pending = self.pending_subacks.remove(&token).expect("present");
                    self.finish_subscribe(pending);
                }
            }
            RemoteMsg::Pressure(on) => self.update_pressure(from, on),
            RemoteMsg::Stats(stats) => {
                if let Some(slot) = self.shard_stats.get_mut(usize::from(from.0)) {
                    *slot = stats;
                }
            }
        }
    }

    /// Timers: keepalive expiry and `$SYS`. Call at least every
    /// `TICK_INTERVAL`.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let keepalive = c.keepalive?;
                (c.closing.is_none() && now.duration_since(c.last_packet) > keepalive)
                    .then_some(ConnId(i as u32))
            })
            .collect();
        for conn in expired {
            tracing::debug!(?conn, "keepalive expired");
            self.close(conn, CloseReason::KeepaliveExpired);
        }
        if let (Some(at), Some(interval)) = (self.next_sys, self.config.sys_interval) {
            if now >= at {
                self.next_sys = Some(now + interval);
                self.publish_sys(now);
            }
        }
    }

    /// Every shard reports to shard 0, which publishes the sums as retained
    /// `$SYS` messages (so they reach every shard's store).
    fn publish_sys(&mut self, now: Instant) {
        let stats = self.stats();
        if self.shard != ShardId(0) {
            self.send(ShardId(0), RemoteMsg::Stats(stats));
            return;
        }
        self.shard_stats[0] = stats;
        let mut total = ShardStats::default();
        for s in &self.shard_stats {
            total.add(s);
        }
        let uptime = now.duration_since(self.started).as_secs();
        let entries: [(&str, String); 7] = [
            ("version", format!("shardmq {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", total.clients_connected.to_string()),
            ("messages/received", total.messages_received.to_string()),
            ("messages/sent", total.messages_sent.to_string()),
            ("messages/dropped", total.messages_dropped.to_string()),
            ("clients/protocol_errors", total.protocol_errors.to_string()),
        ];
        for (name, value) in entries {
            let Ok(topic) = TopicName::from_string(format!("$SYS/broker/{name}")) else {
                continue;
            };
            let message = Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
            };
            self.route(message, false);
        }
    }

    // ----- routing ------------------------------------------------------------

    /// Routes a message to local subscribers and, when it came from a local
    /// client, to the shards whose routes match.
    fn route(&mut self, message: Message, from_remote: bool) {
        if message.retain {
            // Compact copies: slices would pin whole read buffers for as long
            // as the message stays retained.
            self.retained.set(RetainedMessage {
                topic: message.topic.compact(),
                payload: Bytes::copy_from_slice(&message.payload),
                qos: message.qos,
            });
        }
        if !from_remote && self.shards > 1 {
            self.forward(&message);
        }
        self.deliver_local(&message);
    }

    fn forward(&mut self, message: &Message) {
        let mut targets: u64 = 0;
        if message.retain {
            targets = u64::MAX;
        } else {
            self.routes
                .for_each_match(message.topic.as_str(), |shard, _| targets |= 1 << shard.0);
        }
        targets &= !(1u64 << self.shard.0);
        for shard in 0..self.shards {
            if targets & (1 << shard) != 0 {
                self.remote_out[shard].push(RemoteMsg::Publish(message.clone()));
            }
        }
    }

    fn deliver_local(&mut self, message: &Message) {
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        self.index
            .for_each_match(message.topic.as_str(), |sid, qos| matched.push((sid, qos)));
        if matched.len() > 1 {
            // Overlapping subscriptions: one copy at the highest QoS (§3.3.5).
            matched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            matched.dedup_by_key(|m| m.0);
        }
        // Live deliveries carry retain 0 (§3.3.1.3).
        let live;
        let message = if message.retain {
            live = Message {
                retain: false,
                ..message.clone()
            };
            &live
        } else {
            message
        };
        let limits = self.config.limits;
        let high_water = self.high_water();
        for &(sid, sub_qos) in &matched {
            let Some(session) = self.sessions[sid.0 as usize].as_mut() else {
                continue;
            };
            let conn = self.session_conn[sid.0 as usize];
            let mut offline = BytesMut::new();
            let out = match conn.and_then(|c| self.conns[c.0 as usize].as_mut()) {
                Some(c) => &mut c.outbox,
                None => &mut offline,
            };
            match session.deliver(message, message.qos.min(sub_qos), out, &limits) {
                Delivery::Sent => {
                    self.stats.messages_sent += 1;
                    if let Some(conn) = conn {
                        self.woken.push(conn);
                    }
                }
                Delivery::Queued => {
                    if conn.is_some() && session.queued_len() >= high_water {
                        self.fell_behind(sid);
                    }
                }
                Delivery::Dropped => self.stats.messages_dropped += 1,
            }
        }
        self.scratch = matched;
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

    /// Writes a QoS 0 PUBLISH straight to a connection (see the module
    /// docs). False when the connection is gone or closing, or when its
    /// socket is `max_outbox_bytes` behind (the message is dropped, counted).
    pub fn push(&mut self, conn: ConnId, topic: &str, payload: &[u8]) -> bool {
        let max = self.config.limits.max_outbox_bytes;
        let Some(c) = self.conn_mut(conn) else {
            return false;
        };
        if c.closing.is_some() {
            return false;
        }
        if c.outbox.len() >= max {
            self.stats.messages_dropped += 1;
            return false;
        }
        codec::encode_publish(
            &mut c.outbox,
            topic,
            payload,
            QoS::AtMostOnce,
            false,
            false,
            0,
        );
        self.stats.messages_sent += 1;
        self.woken.push(conn);
        true
    }

    /// Closes a service connection on the service's behalf (its peer broke
    /// the service's protocol); the will is published as for any violation.
    pub fn close_service(&mut self, conn: ConnId) {
        if self.conn(conn).is_some_and(|c| c.service) {
            self.close(conn, CloseReason::ProtocolError);
        }
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
#[path = "broker_tests.rs"]
mod tests;
