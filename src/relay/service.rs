//! The relay on its shard (shell): accepts backend connections, frames and
//! validates their commands (`frame`, `command`), publishes them, and feeds
//! the heartbeat registry.
//!
//! Only shard 0's instance runs (see the module docs of `relay`). With the
//! built-in broker it is an in-process client: a connection of the broker
//! machine with no socket behind it, whose PUBLISHes and SUBSCRIBE go
//! straight to `Broker::handle_packet` and whose outbox (PUBACKs, the
//! heartbeats it subscribed to) this module reads. It is an ordinary
//! client to the broker, so its QoS 1 publishes are routed, throttled
//! under back-pressure and counted like any other. With an external
//! broker, the same packets go through `crate::external`.
//!
//! # Never stalled by a backend
//! Each backend connection is one task that writes pending replies and
//! reads in the same poll. A backend that never reads its replies fills a
//! bounded buffer, past which replies are dropped and counted; its
//! commands keep being read and relayed. A backend is only made to wait
//! when the broker is (a throttled publisher, a full mesh, a full outbox
//! to the external broker): then its reads pause, and TCP pushes back.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::external::{Client, Options, Outbox};
use crate::http::{Handler, Request, Response, ResponseFuture, Route};
use crate::mqtt::broker::{ConnId, ShardId};
use crate::mqtt::codec::{self, Packet, Publish};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;
use crate::relay::command::{self, CommandError, Reason};
use crate::relay::config::RelayConfig;
use crate::relay::frame::{Frame, Splitter};
use crate::relay::metrics::{self, Counters};
use crate::relay::registry::{HeartbeatError, Registry, Transition, HEARTBEAT_FILTER};
use crate::shard::{Service, Shard};

/// Bytes read from a backend at once.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes of packets waiting for the external broker, at least; a backend
/// reads only when what one read can publish fits (see `read_room`).
const EXTERNAL_OUTBOX: usize = 1 << 20;

/// The shortest valid command, `{"type":"SCS","unit":"a"}`, rounded down.
const MIN_COMMAND: usize = 16;

/// The most a packet from the broker to the relay can be.
const MAX_PACKET: usize = 1 << 20;

/// Keepalive towards an external broker.
const KEEPALIVE_S: u16 = 60;

/// Rejections of one connection logged at most this often; the others
/// are counted and summed into the next line.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Time a closing backend gets to read its last replies.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// How commands reach the devices.
enum Sink {
    /// Not started (shards other than 0).
    Off,
    /// The in-process client of the built-in broker.
    Builtin { conn: ConnId, next_pkid: u16 },
    /// `outbox`, written out by `crate::external`.
    External,
}

pub(crate) struct RelayService {
    config: RelayConfig,
    shard: usize,
    listener: RefCell<Option<OwnedFd>>,
    external: Vec<SocketAddr>,
    counters: RefCell<Counters>,
    registry: RefCell<Registry>,
    sink: RefCell<Sink>,
    outbox: RefCell<Outbox>,
    /// Backends waiting for the in-process client to take publishes again.
    waiting: RefCell<Vec<Waker>>,
    next_local_id: Cell<u64>,
}

impl RelayService {
    pub(crate) fn new(
        config: RelayConfig,
        shard: usize,
        listener: Option<OwnedFd>,
        external: Vec<SocketAddr>,
    ) -> RelayService {
        let registry = Registry::new(
            Duration::from_secs(config.device_timeout_s),
            config.max_devices,
        );
        let outbox = Outbox::new(EXTERNAL_OUTBOX.max(4 * read_room(&config)));
        RelayService {
            config,
            shard,
            listener: RefCell::new(listener),
            external,
            counters: RefCell::new(Counters::default()),
            registry: RefCell::new(registry),
            sink: RefCell::new(Sink::Off),
            outbox: RefCell::new(outbox),
            waiting: RefCell::new(Vec::new()),
            next_local_id: Cell::new(0),
        }
    }

    // ----- the in-process client ------------------------------------------------

    /// Opens the relay's connection on the built-in broker: a client id
    /// this shard owns, a clean session, no keepalive, subscribed to the
    /// heartbeats.
    fn open_local(&self, shard: &Shard) -> ConnId {
        let conn = shard.open_local_client(
            "shardmq-relay-local-",
            &self.next_local_id,
            &[HEARTBEAT_FILTER],
        );
        *self.sink.borrow_mut() = Sink::Builtin { conn, next_pkid: 0 };
        shard.after_input();
        conn
    }

    /// Reads the in-process client's outbox: PUBACKs (dropped) and the
    /// heartbeats. Wakes backends waiting for the broker. If another
    /// client took the client id over, opens a new connection.
    async fn local_loop(self: Rc<Self>, shard: Rc<Shard>) {
        let mut buf = BytesMut::new();
        loop {
            let conn = match &*self.sink.borrow() {
                Sink::Builtin { conn, .. } => *conn,
                _ => return,
            };
            let closed = poll_fn(|cx| {
                let (closing, ready) = {
                    let mut broker = shard.broker().borrow_mut();
                    if let Some(out) = broker.outbox_mut(conn) {
                        buf.extend_from_slice(out);
                        out.clear();
                    }
                    let ready = !broker.is_paused(conn) && !broker.is_throttled(conn);
                    (broker.closing(conn).is_some(), ready)
                };
                if ready {
                    for w in self.waiting.borrow_mut().drain(..) {
                        w.wake();
                    }
                }
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
                    Ok(Some(Packet::Publish(p))) => self.heartbeat(p.topic.as_str(), &p.payload),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        // The broker's own encoding: a bug, not a peer's doing.
                        tracing::error!(error = %e, "relay cannot read its broker connection");
                        buf.clear();
                        break;
                    }
                }
            }
            if closed {
                shard.forget(conn);
                shard.broker().borrow_mut().release(conn);
                tracing::warn!("relay's broker connection was taken over; opening another");
                // Against a client that keeps taking the id: the next id
                // differs, but do not spin either way.
                glommio::timer::sleep(Duration::from_secs(1)).await;
                self.open_local(&shard);
            }
        }
    }

    /// Ready when the broker takes publishes: in-process, the relay's
    /// connection is neither paused nor throttled and the mesh is not
    /// congested; external, the outbox has room for a read's commands.
    async fn ready(&self, shard: &Shard) {
        let room = read_room(&self.config);
        poll_fn(|cx| match &*self.sink.borrow() {
            Sink::Off => Poll::Ready(()),
            Sink::External => self.outbox.borrow_mut().poll_room(cx, room),
            Sink::Builtin { conn, .. } => {
                if shard.congested(cx.waker()) {
                    return Poll::Pending;
                }
                let broker = shard.broker().borrow();
                let blocked = broker.is_paused(*conn)
                    || broker.is_throttled(*conn)
                    || broker.closing(*conn).is_some();
                if blocked {
                    self.waiting.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            }
        })
        .await;
    }

    /// Publishes a command's bytes, as sent, QoS 1. The caller runs
    /// `shard.after_input` once per batch.
    fn publish(&self, shard: &Shard, topic: &str, payload: &[u8]) -> Result<(), CommandError> {
        match &mut *self.sink.borrow_mut() {
            Sink::Off => Ok(()),
            Sink::Builtin { conn, next_pkid } => {
                let name = TopicName::from_string(topic.to_string()).map_err(|e| {
                    CommandError::Invalid {
                        field: "unit".to_string(),
                        expected: if matches!(e, crate::mqtt::topic::TopicError::TooLong) {
                            "short enough for a topic"
                        } else {
                            "a valid topic level"
                        },
                    }
                })?;
                *next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                shard.broker().borrow_mut().handle_packet(
                    Instant::now(),
                    *conn,
                    Packet::Publish(Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: name,
                        pkid: *next_pkid,
                        payload: Bytes::copy_from_slice(payload),
                    }),
                );
                Ok(())
            }
            Sink::External => {
                if self
                    .outbox
                    .borrow_mut()
                    .publish(topic, payload, QoS::AtLeastOnce)
                {
                    Ok(())
                } else {
                    self.counters.borrow_mut().publish_dropped += 1;
                    Err(CommandError::Unavailable)
                }
            }
        }
    }

    // ----- heartbeats -----------------------------------------------------------

    fn heartbeat(&self, topic: &str, payload: &[u8]) {
        let result = self
            .registry
            .borrow_mut()
            .heartbeat(Instant::now(), topic, payload);
        let mut counters = self.counters.borrow_mut();
        match result {
            Ok(transition) => {
                counters.heartbeats += 1;
                if let Some(t) = transition {
                    log_transition(&t);
                }
            }
            Err(HeartbeatError::Full(max)) => {
                counters.registry_full += 1;
                tracing::debug!(topic, max, "device registry full; heartbeat not kept");
            }
            Err(e) => {
                counters.heartbeats_invalid += 1;
                tracing::debug!(topic, error = %e, "heartbeat not read");
            }
        }
    }

    // ----- backends -------------------------------------------------------------

    async fn accept_loop(self: Rc<Self>, shard: Rc<Shard>, listener: glommio::net::TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "relay accept failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            {
                let mut c = self.counters.borrow_mut();
                if c.connections_open >= self.config.max_connections as u64 {
                    c.connections_refused += 1;
                    tracing::warn!(
                        max = self.config.max_connections,
                        "relay backend connection refused: relay.max_connections"
                    );
                    continue;
                }
                c.connections_open += 1;
                c.connections_accepted += 1;
            }
            let me = self.clone();
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let peer = stream.peer_addr().ok();
                tracing::debug!(?peer, "relay backend connected");
                me.backend(&shard, stream, peer).await;
                me.counters.borrow_mut().connections_open -= 1;
                tracing::debug!(?peer, "relay backend gone");
            })
            .detach();
        }
    }

    /// One backend connection, until it closes.
    async fn backend(&self, shard: &Shard, mut stream: TcpStream, peer: Option<SocketAddr>) {
        let _ = stream.set_nodelay(true);
        let mut splitter = Splitter::new(self.config.max_command_bytes);
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut replies = BytesMut::new();
        let mut warn = WarnLimit::default();
        loop {
            self.ready(shard).await;
            let read = poll_fn(|cx| {
                while !replies.is_empty() {
                    match Pin::new(&mut stream).poll_write(cx, &replies) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                        Poll::Ready(Ok(n)) => replies.advance(n),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                }
                Pin::new(&mut stream).poll_read(cx, &mut chunk)
            })
            .await;
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(?peer, error = %e, "relay backend connection failed");
                    return;
                }
            };
            let now = Instant::now();
            splitter.feed(chunk.get(..n).unwrap_or_default(), |frame| {
                let outcome = self.command(shard, frame);
                if let Err(e) = &outcome {
                    self.counters.borrow_mut().reject(e.reason());
                    if let Some(suppressed) = warn.allow(now) {
                        tracing::warn!(
                            ?peer,
                            field = e.field(),
                            suppressed,
                            "relay command refused: {e}"
                        );
                    }
                }
                if self.config.reply {
                    let line = command::reply(&outcome);
                    if replies.len() + line.len() > self.config.reply_buffer_bytes {
                        self.counters.borrow_mut().replies_dropped += 1;
                    } else {
                        replies.extend_from_slice(&line);
                    }
                }
            });
            shard.after_input();
        }
        if !splitter.is_idle() {
            self.counters.borrow_mut().reject(Reason::InvalidJson);
            tracing::warn!(
                ?peer,
                "relay backend closed its connection inside a command"
            );
        }
        // The backend finished sending; give it its last replies.
        if !replies.is_empty() {
            let _ = glommio::timer::timeout(FINAL_FLUSH, async {
                futures_lite::AsyncWriteExt::write_all(&mut stream, &replies)
                    .await
                    .map_err(glommio::GlommioError::from)
            })
            .await;
        }
    }

    /// One frame of a backend's stream: the topic it was published to.
    fn command(&self, shard: &Shard, frame: Frame<'_>) -> Result<String, CommandError> {
        let bytes = match frame {
            Frame::Object(bytes) => bytes,
            Frame::Junk { len } => {
                return Err(CommandError::Json(format!(
                    "{len} bytes outside any JSON object"
                )))
            }
            Frame::TooLarge => {
                return Err(CommandError::TooLarge {
                    max: self.config.max_command_bytes,
                })
            }
        };
        let cmd = command::validate(bytes, self.config.max_unit_bytes)?;
        let topic = command::topic(&self.config.topic_template, &cmd.unit);
        self.publish(shard, &topic, bytes)?;
        self.counters.borrow_mut().command(cmd.kind);
        tracing::debug!(r#type = cmd.kind.as_str(), unit = %cmd.unit, %topic, "command relayed");
        Ok(topic)
    }
}

/// The most one read can add to the external outbox: the commands it
/// completes (the read, and one command buffered before it), each with its
/// PUBLISH header, topic and packet id.
fn read_room(config: &RelayConfig) -> usize {
    let per_command = 8 + config.topic_template.len() + config.max_unit_bytes;
    READ_CHUNK + config.max_command_bytes + (READ_CHUNK / MIN_COMMAND + 1) * per_command
}

fn log_transition(t: &Transition) {
    match t.state {
        crate::relay::registry::State::Online => {
            tracing::info!(device = %t.device, "MS500 device online")
        }
        crate::relay::registry::State::Offline => {
            tracing::info!(device = %t.device, "MS500 device offline")
        }
    }
}

/// At most one warning per `WARN_EVERY` per connection.
#[derive(Default)]
struct WarnLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    /// `Some(n)` when a line may be logged now, `n` lines having been
    /// held back since the last.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + WARN_EVERY);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The relay as a client of the external broker.
struct RelayClient(Rc<RelayService>);

impl Client for RelayClient {
    fn outbox(&self) -> &RefCell<Outbox> {
        &self.0.outbox
    }

    fn message(&self, topic: &str, payload: &[u8]) {
        self.0.heartbeat(topic, payload);
    }
}

/// `GET /api/devices`: the heartbeat registry.
struct DevicesRoute(Weak<RelayService>);

impl Handler for DevicesRoute {
    fn handle(&self, request: Request) -> ResponseFuture {
        let response = match (request.method.as_str(), self.0.upgrade()) {
            ("GET" | "HEAD", Some(relay)) => {
                let snapshot = relay.registry.borrow().snapshot(Instant::now());
                Response::json(200, &snapshot)
            }
            ("GET" | "HEAD", None) => Response::error(503, "shutting down"),
            _ => Response::method_not_allowed("GET, HEAD"),
        };
        Box::pin(std::future::ready(response))
    }
}

impl Service for RelayService {
    type Msg = ();

    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        if self.shard != 0 {
            return;
        }
        let Some(fd) = self.listener.borrow_mut().take() else {
            return;
        };
        if self.config.external_broker.enabled() {
            *self.sink.borrow_mut() = Sink::External;
            let cfg = &self.config.external_broker;
            let options = Options {
                service: "relay",
                address: cfg.address.clone(),
                client_id: cfg.client_id.clone(),
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                keepalive_s: KEEPALIVE_S,
                subscriptions: vec![(HEARTBEAT_FILTER.to_string(), QoS::AtMostOnce)],
            };
            crate::external::spawn(
                Rc::new(RelayClient(self.clone())),
                self.external.clone(),
                options,
            );
        } else {
            self.open_local(&shard);
            glommio::spawn_local(self.clone().local_loop(shard.clone())).detach();
        }
        // SAFETY: `fd` is a bound, listening socket (`relay::bind`) whose
        // ownership moves into the listener; nothing else holds it.
        let listener = unsafe {
            <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(
                std::os::fd::IntoRawFd::into_raw_fd(fd),
            )
        };
        glommio::spawn_local(self.clone().accept_loop(shard, listener)).detach();
    }

    fn on_remote(&self, _shard: &Shard, _from: ShardId, _msg: ()) {}

    fn tick(&self, _shard: &Shard, now: Instant) {
        if self.shard != 0 {
            return;
        }
        let mut gone = Vec::new();
        self.registry.borrow_mut().tick(now, &mut gone);
        for t in &gone {
            log_transition(t);
        }
    }

    fn routes(self: Rc<Self>, _shard: Rc<Shard>) -> Vec<Route> {
        // Exact: `/api/devices/status` is the voice gateway's.
        vec![Route::exact(
            "/api/devices",
            Rc::new(DevicesRoute(Rc::downgrade(&self))),
        )]
    }

    fn metrics(&self, out: &mut String) {
        let (online, offline) = self.registry.borrow().counts();
        out.push_str(&metrics::render(&self.counters.borrow(), online, offline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_per_second_and_say_how_many_were_held() {
        let t0 = Instant::now();
        let mut w = WarnLimit::default();
        assert_eq!(w.allow(t0), Some(0));
        assert_eq!(w.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(w.allow(t0 + Duration::from_millis(999)), None);
        assert_eq!(w.allow(t0 + WARN_EVERY), Some(2));
        assert_eq!(w.allow(t0 + WARN_EVERY), None);
    }
}
