//! The services seam: what runs on every shard beside the broker (the voice
//! gateway; the command relay, fleet presence and the MQTT-SN gateway
//! next). The shell imports none of them; each plugs in through
//! [`Service`], and the shell gives it, on its own shard:
//!
//! 1. **CONNECT admission**: every CONNECT this shard runs is offered to
//!    the services in order before the broker takes it; the first that
//!    takes it owns the connection as a *service connection*, and alone
//!    gets its events.
//! 2. **Mesh messages** of its own type, [`Service::Msg`], tagged with the
//!    service's place in the shard's list: a message reaches the same
//!    service on the other shard and is never mistaken for another's.
//! 3. **Ticks** with the broker's timer.
//! 4. **HTTP routes** on the shard-0 HTTP listener, and its lines of
//!    `/metrics`.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::Shard;
use crate::http::Route;
use crate::mqtt::broker::{owner_shard, ConnId, ServiceEvent, ShardId};
use crate::mqtt::codec::{Connect, Packet, Subscribe};
use crate::mqtt::QoS;

/// A service on one shard. All calls come from the shard's own thread.
pub trait Service: 'static {
    /// What the service sends to itself on other shards.
    type Msg: Send + 'static;

    /// Spawns the service's tasks on the shard; called once, first.
    fn start(self: Rc<Self>, shard: Rc<Shard>);

    /// A CONNECT this shard runs. `Ok` when the service took it (the
    /// connection is a service connection, or refused), with the packet
    /// size limit of the connection; `Err` gives it back.
    fn admit(
        &self,
        _shard: &Shard,
        connect: Box<Connect>,
        _peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>> {
        Err(connect)
    }

    /// Whether the service checks this CONNECT's credentials itself (it
    /// will take it in `admit`): the broker's password file and ACL then
    /// do not apply. Asked on the shard that read the CONNECT.
    fn authenticates(&self, _connect: &Connect) -> bool {
        false
    }

    /// Events of the service connections it admitted.
    fn on_events(&self, _shard: &Shard, _events: Vec<ServiceEvent>) {}

    /// A message this service sent from shard `from`.
    fn on_remote(&self, shard: &Shard, from: ShardId, msg: Self::Msg);

    /// Called with every broker tick.
    fn tick(&self, _shard: &Shard, _now: Instant) {}

    /// HTTP routes served on shard 0 when `http.listen` is set; asked once,
    /// on shard 0, after `start`.
    fn routes(self: Rc<Self>, _shard: Rc<Shard>) -> Vec<Route> {
        Vec::new()
    }

    /// Appends the service's Prometheus lines to `/metrics` (on shard 0).
    fn metrics(&self, _out: &mut String) {}
}

/// A [`Service`] with its message type erased, as the shard holds it.
pub(crate) trait AnyService {
    fn start(self: Rc<Self>, shard: Rc<Shard>);
    fn admit(
        &self,
        shard: &Shard,
        connect: Box<Connect>,
        peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>>;
    fn authenticates(&self, connect: &Connect) -> bool;
    fn on_events(&self, shard: &Shard, events: Vec<ServiceEvent>);
    fn on_remote(&self, shard: &Shard, from: ShardId, msg: Box<dyn Any + Send>);
    fn tick(&self, shard: &Shard, now: Instant);
    fn routes(self: Rc<Self>, shard: Rc<Shard>) -> Vec<Route>;
    fn metrics(&self, out: &mut String);
    /// Which service this is, to tag its mesh messages.
    fn kind(&self) -> TypeId;
}

impl<S: Service> AnyService for S {
    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        Service::start(self, shard);
    }

    fn admit(
        &self,
        shard: &Shard,
        connect: Box<Connect>,
        peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>> {
        Service::admit(self, shard, connect, peer)
    }

    fn authenticates(&self, connect: &Connect) -> bool {
        Service::authenticates(self, connect)
    }

    fn on_events(&self, shard: &Shard, events: Vec<ServiceEvent>) {
        Service::on_events(self, shard, events);
    }

    fn on_remote(&self, shard: &Shard, from: ShardId, msg: Box<dyn Any + Send>) {
        match msg.downcast::<S::Msg>() {
            Ok(msg) => Service::on_remote(self, shard, from, *msg),
            // The tag is the sender's own place in the same list, so this is
            // a shell bug, not a peer's doing; say so rather than drop it.
            Err(_) => tracing::error!(
                service = std::any::type_name::<S>(),
                "mesh message of another service's type"
            ),
        }
    }

    fn tick(&self, shard: &Shard, now: Instant) {
        Service::tick(self, shard, now);
    }

    fn routes(self: Rc<Self>, shard: Rc<Shard>) -> Vec<Route> {
        Service::routes(self, shard)
    }

    fn metrics(&self, out: &mut String) {
        Service::metrics(self, out);
    }

    fn kind(&self) -> TypeId {
        TypeId::of::<S>()
    }
}

/// Makes one service's instance for each shard, given the shard index;
/// called on the shard's own thread.
#[derive(Clone)]
pub struct ServiceFactory(Arc<dyn Fn(usize) -> Rc<dyn AnyService> + Send + Sync>);

impl ServiceFactory {
    pub fn new<S: Service>(make: impl Fn(usize) -> Rc<S> + Send + Sync + 'static) -> Self {
        ServiceFactory(Arc::new(move |shard| make(shard) as Rc<dyn AnyService>))
    }

    pub(crate) fn make(&self, shard: usize) -> Rc<dyn AnyService> {
        (self.0)(shard)
    }
}

/// A service's message on the mesh, tagged with the service's place in the
/// shard's list (the same on every shard).
pub struct Tagged {
    pub(crate) service: u8,
    pub(crate) msg: Box<dyn Any + Send>,
}

impl Shard {
    /// Opens a service's in-process client on the built-in broker: an
    /// ordinary broker connection with no socket behind it, whose client id
    /// (`{prefix}{n}`, the first `n` from `next_id` this shard owns) keeps
    /// its session here; clean session, no keepalive, subscribed at QoS 0
    /// to `filters` (in-process nothing is lost on the way, and the service
    /// then owes the broker no acknowledgements). The service reads the
    /// connection's outbox; the broker treats it like any client, ACL and
    /// flow control included.
    pub fn open_local_client(&self, prefix: &str, next_id: &Cell<u64>, filters: &[&str]) -> ConnId {
        let client_id = loop {
            let n = next_id.get();
            next_id.set(n + 1);
            let id = format!("{prefix}{n}");
            if owner_shard(&id, self.shards()) == self.id() {
                break id;
            }
        };
        let now = Instant::now();
        let mut broker = self.broker().borrow_mut();
        let conn = broker.connect(
            now,
            Connect {
                protocol_level: 4,
                clean_session: true,
                keep_alive_s: 0,
                client_id,
                username: None,
                password: None,
                will: None,
            },
        );
        if !filters.is_empty() {
            broker.handle_packet(
                now,
                conn,
                Packet::Subscribe(Subscribe {
                    pkid: 1,
                    filters: filters
                        .iter()
                        .map(|f| (f.to_string(), QoS::AtMostOnce))
                        .collect(),
                }),
            );
        }
        conn
    }
}
