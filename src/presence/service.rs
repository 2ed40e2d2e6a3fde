//! The presence service on its shard (shell): subscribes to the nodes'
//! topics, feeds the registry, publishes the §7.1 errors and the retained
//! snapshot, and serves `GET /api/nodes`.
//!
//! Only shard 0's instance runs. With the built-in broker it is an
//! in-process client, as the command relay is (see DESIGN.md, "The
//! command relay"): a broker connection with no socket, whose SUBSCRIBE
//! and PUBLISHes go straight to `Broker::handle_packet` and whose outbox
//! this module reads. With an external broker, the same packets go
//! through `crate::external`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::external::{Client, Options, Outbox};
use crate::http::{Handler, Request, Response, ResponseFuture, Route};
use crate::mqtt::broker::{ConnId, ShardId};
use crate::mqtt::codec::{self, Packet, Publish};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;
use crate::presence::config::PresenceConfig;
use crate::presence::envelope::{self, EnvelopeError};
use crate::presence::metrics::{self, Counters};
use crate::presence::registry::{query_param, Cause, Registry, RegistryError, State, Transition};
use crate::presence::{FILTERS, OFFLINE_TYPES, REGISTER_TOPIC};
use crate::shard::{Service, Shard};

/// Bytes of packets waiting for the external broker.
const EXTERNAL_OUTBOX: usize = 4 << 20;

/// The most a packet from the broker to the service can be.
const MAX_PACKET: usize = 1 << 20;

/// Keepalive towards an external broker.
const KEEPALIVE_S: u16 = 60;

/// Refused registrations logged at most this often; the others are
/// counted and summed into the next line.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// How the service reaches the broker.
enum Link {
    /// Not started (shards other than 0).
    Off,
    /// The in-process client of the built-in broker.
    Builtin { conn: ConnId, next_pkid: u16 },
    /// `outbox`, written out by `crate::external`.
    External,
}

pub(crate) struct PresenceService {
    config: PresenceConfig,
    shard: usize,
    external: Vec<SocketAddr>,
    counters: RefCell<Counters>,
    registry: RefCell<Registry>,
    link: RefCell<Link>,
    outbox: RefCell<Outbox>,
    next_local_id: Cell<u64>,
    snapshots: Cell<u64>,
    /// When the next refusal may be logged, and how many were held back.
    warn_next: Cell<Option<Instant>>,
    warn_held: Cell<u64>,
}

impl PresenceService {
    pub(crate) fn new(
        config: PresenceConfig,
        shard: usize,
        external: Vec<SocketAddr>,
    ) -> PresenceService {
        let registry = Registry::new(
            Duration::from_secs(config.health_timeout_s),
            config.max_nodes,
        );
        PresenceService {
            config,
            shard,
            external,
            counters: RefCell::new(Counters::default()),
            registry: RefCell::new(registry),
            link: RefCell::new(Link::Off),
            outbox: RefCell::new(Outbox::new(EXTERNAL_OUTBOX)),
            next_local_id: Cell::new(0),
            snapshots: Cell::new(0),
            warn_next: Cell::new(None),
            warn_held: Cell::new(0),
        }
    }

    // ----- the in-process client ------------------------------------------------

    /// Opens the service's connection on the built-in broker: a client id
    /// this shard owns, a clean session, no keepalive, subscribed to the
    /// nodes' topics.
    fn open_local(&self, shard: &Shard) {
        let conn =
            shard.open_local_client("shardmq-presence-local-", &self.next_local_id, &FILTERS);
        *self.link.borrow_mut() = Link::Builtin { conn, next_pkid: 0 };
        shard.after_input();
    }

    /// Reads the in-process client's outbox: the nodes' messages, and
    /// PUBACKs (dropped). If another client took the client id over,
    /// opens a new connection.
    async fn local_loop(self: Rc<Self>, shard: Rc<Shard>) {
        let mut buf = BytesMut::new();
        loop {
            let conn = match &*self.link.borrow() {
                Link::Builtin { conn, .. } => *conn,
                _ => return,
            };
            let closed = poll_fn(|cx| {
                let closing = {
                    let mut broker = shard.broker().borrow_mut();
                    if let Some(out) = broker.outbox_mut(conn) {
                        buf.extend_from_slice(out);
                        out.clear();
                    }
                    broker.closing(conn).is_some()
                };
                if closing {
                    return Poll::Ready(true);
                }
                if !buf.is_empty() {
                    return Poll::Ready(false);
                }
                shard.set_waker(conn, cx.waker());
                Poll::Pending
            })
            .await;
            loop {
                match codec::decode(&mut buf, MAX_PACKET) {
                    Ok(Some(Packet::Publish(p))) => {
                        self.message(&shard, p.topic.as_str(), &p.payload)
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        // The broker's own encoding: a bug, not a peer's doing.
                        tracing::error!(error = %e, "presence cannot read its broker connection");
                        buf.clear();
                        break;
                    }
                }
            }
            shard.after_input();
            if closed {
                shard.forget(conn);
                shard.broker().borrow_mut().release(conn);
                tracing::warn!("presence's broker connection was taken over; opening another");
                glommio::timer::sleep(Duration::from_secs(1)).await;
                self.open_local(&shard);
                // A new session: its subscriptions bring the retained
                // statuses again, and the snapshot is republished.
                self.registry.borrow_mut().touch();
            }
        }
    }

    /// Publishes QoS 1 in-process or through the external outbox; `false`
    /// when the outbox was full. The in-process caller runs
    /// `shard.after_input`.
    fn publish(&self, shard: &Shard, topic: &str, payload: &[u8], retain: bool) -> bool {
        match &mut *self.link.borrow_mut() {
            Link::Off => true,
            Link::Builtin { conn, next_pkid } => {
                let Ok(name) = TopicName::from_string(topic.to_string()) else {
                    return false;
                };
                *next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                shard.broker().borrow_mut().handle_packet(
                    Instant::now(),
                    *conn,
                    Packet::Publish(Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain,
                        topic: name,
                        pkid: *next_pkid,
                        payload: Bytes::copy_from_slice(payload),
                    }),
                );
                true
            }
            Link::External => {
                self.outbox
                    .borrow_mut()
                    .publish_with(topic, payload, QoS::AtLeastOnce, retain)
            }
        }
    }

    // ----- the nodes' messages --------------------------------------------------

    /// A message on one of `FILTERS`.
    fn message(&self, shard: &Shard, topic: &str, payload: &[u8]) {
        let now = Instant::now();
        if topic == REGISTER_TOPIC {
            self.system_message(shard, now, payload);
            return;
        }
        let Some((node, kind)) = envelope::report_topic(topic) else {
            self.counters.borrow_mut().reports_ignored += 1;
            return;
        };
        let Some(body) = envelope::report_body(payload) else {
            self.counters.borrow_mut().reports_ignored += 1;
            tracing::debug!(node, kind = kind.as_str(), "node report not read");
            return;
        };
        let result = self.registry.borrow_mut().report(now, node, kind, body);
        match result {
            Ok(t) => {
                self.counters.borrow_mut().report(kind);
                if let Some(t) = t {
                    self.transition(&t);
                }
            }
            Err(e) => {
                self.counters.borrow_mut().reports_ignored += 1;
                tracing::debug!(node, kind = kind.as_str(), "node report ignored: {e}");
            }
        }
    }

    /// A message on `/meek/system/nodes`: a registration, or a node's
    /// offline notice.
    fn system_message(&self, shard: &Shard, now: Instant, payload: &[u8]) {
        let parsed = envelope::parse(payload).and_then(|env| {
            if OFFLINE_TYPES.contains(&env.message_type.as_str()) {
                let node = env.payload.get("node_id").and_then(|v| v.as_str());
                let Some(node) = node.filter(|n| envelope::valid_id(n)) else {
                    return Err(EnvelopeError::Missing(envelope::Field::NodeId));
                };
                let body = serde_json::json!({ "status": "offline" });
                let result =
                    self.registry
                        .borrow_mut()
                        .report(now, node, envelope::Report::Status, body);
                if let Ok(Some(t)) = result {
                    self.transition(&t);
                }
                return Ok(None);
            }
            envelope::registration(env).map(Some)
        });
        let registration = match parsed {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                self.counters.borrow_mut().error(e.field());
                if self.warn_next.get().is_some_and(|t| now < t) {
                    self.warn_held.set(self.warn_held.get() + 1);
                } else {
                    self.warn_next.set(Some(now + WARN_EVERY));
                    let suppressed = self.warn_held.replace(0);
                    tracing::warn!(
                        field = e.field().as_str(),
                        suppressed,
                        "node registration refused: {e}"
                    );
                }
                let error = envelope::error_message(&e, payload);
                let bytes = serde_json::to_vec(&error).unwrap_or_default();
                if !self.publish(shard, &self.config.error_topic, &bytes, false) {
                    self.counters.borrow_mut().errors_unpublished += 1;
                }
                return;
            }
        };
        let node = registration.node_id.clone();
        let group = registration.group_id.clone();
        let result = self.registry.borrow_mut().register(now, registration);
        match result {
            Ok(t) => {
                self.counters.borrow_mut().registrations += 1;
                tracing::debug!(node, ?group, "node registered");
                if let Some(t) = t {
                    self.transition(&t);
                }
            }
            Err(RegistryError::Full(max)) => {
                self.counters.borrow_mut().registry_full += 1;
                tracing::warn!(node, max, "node registry full; registration not kept");
            }
            Err(RegistryError::Unknown(_)) => {}
        }
    }

    fn transition(&self, t: &Transition) {
        match (t.state, t.cause) {
            (State::Online, _) => tracing::info!(node = %t.node, "MeekYolo node online"),
            (State::Offline, cause) => {
                let mut c = self.counters.borrow_mut();
                match cause {
                    Some(Cause::HealthTimeout) => c.offline_timeout += 1,
                    _ => c.offline_will += 1,
                }
                let cause = match cause {
                    Some(Cause::HealthTimeout) => "health_timeout",
                    _ => "will",
                };
                tracing::info!(node = %t.node, cause, "MeekYolo node offline");
            }
        }
    }

    /// The retained snapshot: the registry in the seed's envelope, of
    /// type `node_list`.
    fn snapshot_message(&self, now: Instant) -> Vec<u8> {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = self.snapshots.get() + 1;
        self.snapshots.set(n);
        let message = serde_json::json!({
            "version": envelope::PROTOCOL_VERSION,
            "timestamp": unix,
            "trace_id": format!("shardmq-presence-{}-{n}", std::process::id()),
            "message_type": "node_list",
            "payload": self.registry.borrow().snapshot(now, None, None),
        });
        serde_json::to_vec(&message).unwrap_or_default()
    }
}

/// The service as a client of the external broker.
struct PresenceClient(Rc<PresenceService>, Rc<Shard>);

impl Client for PresenceClient {
    fn outbox(&self) -> &RefCell<Outbox> {
        &self.0.outbox
    }

    fn message(&self, topic: &str, payload: &[u8]) {
        self.0.message(&self.1, topic, payload);
    }
}

/// `GET /api/nodes[?group=…&status=…]`: the registry.
struct NodesRoute(Weak<PresenceService>);

impl Handler for NodesRoute {
    fn handle(&self, request: Request) -> ResponseFuture {
        let response = match (request.method.as_str(), self.0.upgrade()) {
            ("GET" | "HEAD", Some(service)) => {
                let group = query_param(&request.query, "group");
                let status = query_param(&request.query, "status");
                let snapshot = service.registry.borrow().snapshot(
                    Instant::now(),
                    group.as_deref(),
                    status.as_deref(),
                );
                Response::json(200, &snapshot)
            }
            ("GET" | "HEAD", None) => Response::error(503, "shutting down"),
            _ => Response::method_not_allowed("GET, HEAD"),
        };
        Box::pin(std::future::ready(response))
    }
}

impl Service for PresenceService {
    type Msg = ();

    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        if self.shard != 0 {
            return;
        }
        if self.config.external_broker.enabled() {
            *self.link.borrow_mut() = Link::External;
            let cfg = &self.config.external_broker;
            let options = Options {
                service: "presence",
                address: cfg.address.clone(),
                client_id: cfg.client_id.clone(),
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                keepalive_s: KEEPALIVE_S,
                // QoS 1 as the seed's node status (§5); health's QoS 0
                // stays 0 whatever the subscription asks.
                subscriptions: FILTERS
                    .iter()
                    .map(|f| (f.to_string(), QoS::AtLeastOnce))
                    .collect(),
            };
            crate::external::spawn(
                Rc::new(PresenceClient(self.clone(), shard.clone())),
                self.external.clone(),
                options,
            );
        } else {
            self.open_local(&shard);
            glommio::spawn_local(self.clone().local_loop(shard)).detach();
        }
    }

    fn on_remote(&self, _shard: &Shard, _from: ShardId, _msg: ()) {}

    fn tick(&self, shard: &Shard, now: Instant) {
        if self.shard != 0 || matches!(*self.link.borrow(), Link::Off) {
            return;
        }
        let mut gone = Vec::new();
        self.registry.borrow_mut().tick(now, &mut gone);
        for t in &gone {
            self.transition(t);
        }
        let interval = Duration::from_millis(self.config.snapshot_interval_ms);
        if self.registry.borrow_mut().snapshot_due(now, interval) {
            let message = self.snapshot_message(now);
            if self.publish(shard, &self.config.snapshot_topic, &message, true) {
                self.counters.borrow_mut().snapshots += 1;
            } else {
                // Try again at the next tick.
                self.registry.borrow_mut().touch();
            }
            shard.after_input();
        }
    }

    fn routes(self: Rc<Self>, _shard: Rc<Shard>) -> Vec<Route> {
        vec![Route::exact(
            "/api/nodes",
            Rc::new(NodesRoute(Rc::downgrade(&self))),
        )]
    }

    fn metrics(&self, out: &mut String) {
        if self.shard != 0 {
            return;
        }
        let (online, offline) = self.registry.borrow().counts();
        out.push_str(&metrics::render(&self.counters.borrow(), online, offline));
    }
}
