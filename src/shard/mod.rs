//! The shard shell: one pinned glommio executor per shard, each with its own
//! `SO_REUSEPORT` listener, its `Broker` machine, and its ends of the mesh.
//!
//! The shell only does I/O and wakes tasks; every protocol decision is the
//! broker's. After any input reaches the broker, `Shard::after_input` wakes
//! the connections it named and stages its batches for other shards.
//!
//! # Ownership
//! 1. Everything in `Shard` is touched only by its executor's thread.
//! 2. Between shards only `ShardMsg` values travel, over bounded channels.
//!
//! # Services
//! Services above the broker (the voice gateway, and those to come) plug in
//! through [`Service`] (see `service`); the shell imports none of them.

mod arena;
mod auth;
mod conn;
mod control;
mod drain;
mod limits;
mod listener;
pub mod mesh;
mod metrics;
pub mod reload;
mod service;
mod settings;
pub mod store;

pub use control::{late_shards, Control};
pub use limits::ConnectionLimits;
pub use service::{Service, ServiceFactory};
pub use settings::{Settings, TlsListener};

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::http::{Route, Router};
use crate::mqtt::broker::{
    Broker, BrokerConfig, ConnId, Durability, Persistence, ServiceEvent, ShardId,
};
use mesh::{Endpoints, ShardMsg, STAGED_BATCHES_MAX};
use service::{AnyService, Tagged};

/// Period of the broker's timer tick: keepalive is checked to within this.
const TICK_INTERVAL: Duration = Duration::from_millis(250);

/// Submission queue entries of each io_uring (glommio's default is 128).
///
/// Every connection keeps a readiness poll armed, and the kernel finds a
/// poll to cancel or update in a hash table of `cq_entries / 32` buckets,
/// at most 256. At 128 entries that is 8 buckets, so with thousands of
/// connections each lookup walks a chain of hundreds (`io_poll_find` was
/// 5% of the broker's CPU at 8,000 connections); 4096 entries reach the
/// 256-bucket maximum. A deeper queue also lets a busy turn's submissions
/// go in one `io_uring_enter` rather than several. Measured at 8,000
/// connections and 20k msg/s (DESIGN.md, "Fleet shape"): broker CPU per
/// message 7% lower on an idle machine, a third lower on a loaded one
/// (where each wake-up finds more to submit). 16 shards still start
/// under an 8 MiB `RLIMIT_MEMLOCK` (Linux 5.12 and later charge ring memory
/// to the memory cgroup instead).
const RING_DEPTH: usize = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {message}")]
    Executor { shard: usize, message: String },
    #[error(transparent)]
    Auth(#[from] reload::LoadError),
    #[error(transparent)]
    Store(#[from] store::LoadError),
}

/// A running server: its shard threads and the address it listens on.
pub struct Server {
    /// The MQTT listener's address (port 0 resolved); `None` without it.
    pub listen: Option<SocketAddr>,
    /// The MQTT-over-WebSocket listener's address, likewise.
    pub ws_listen: Option<SocketAddr>,
    /// The MQTT-over-WebSocket-over-TLS (`wss`) listener's address.
    pub wss_listen: Option<SocketAddr>,
    /// The TLS listener's address (port 0 resolved); `None` without it.
    pub tls_listen: Option<SocketAddr>,
    /// The TLS listeners' configuration, shared with every shard.
    tls_config: Option<crate::transport::ServerConfigHolder>,
    /// Sends every shard what a reload read (`reload`).
    pub reloader: reload::Reloader,
    /// Health pings and the drain, for the process's control threads.
    pub control: Arc<Control>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    /// The lock on the store directory, held while the server runs.
    _store_lock: Option<std::fs::File>,
}

impl Server {
    /// Starts every shard and returns once all listen, or the first error.
    /// Starts every shard, each with its instance of every service (in
    /// this order), and returns once all listen, or the first error.
    pub fn start(settings: Settings, services: Vec<ServiceFactory>) -> Result<Server, StartError> {
        let shards = settings.shards;
        let mut settings = settings;
        if let Some(addr) = settings.mqtt_listen {
            settings.mqtt_listen = Some(probe_listen(addr)?);
        }
        if let Some(ws) = &mut settings.websocket {
            ws.listen = probe_listen(ws.listen)?;
            if let Some(addr) = ws.tls_listen {
                ws.tls_listen = Some(probe_listen(addr)?);
            }
        }
        if let Some(tls) = settings.tls.as_mut() {
            tls.listen = probe_listen(tls.listen)?;
        }
        if let Some(addr) = settings.http_listen {
            // Shard 0 binds it once running; a port held by another process
            // must fail the start, not just log from the shard.
            std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
        }
        let listen = settings.mqtt_listen;
        let ws_listen = settings.websocket.as_ref().map(|ws| ws.listen);
        let wss_listen = settings.websocket.as_ref().and_then(|ws| ws.tls_listen);
        let tls_listen = settings.tls.as_ref().map(|t| t.listen);
        let tls_config = settings.tls.as_ref().map(|t| t.config.clone());
        let counters = Arc::new(crate::transport::Counters::default());
        let admission = Arc::new(limits::Admission::new(&settings.connection_limits));
        let control = Arc::new(Control::new(shards));
        let snapshot = Arc::new(reload::load_auth(&settings.auth)?);
        let (reloader, receivers) = reload::channels(shards, tls_config.clone());
        let mut receivers = receivers.into_iter();
        let services = Arc::new(services);
        // Stores load before any shard runs, so no listener accepts before
        // every shard holds its sessions and retained messages.
        let (mut stores, routes, store_lock) = match &settings.persistence {
            Some(p) => {
                let loaded = store::load(p, shards)?;
                let stores: Vec<_> = loaded.shards.into_iter().map(Some).collect();
                (stores, loaded.routes, Some(loaded.lock))
            }
            None => ((0..shards).map(|_| None).collect(), Vec::new(), None),
        };
        let routes = Arc::new(routes);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
        let mut handles = Vec::with_capacity(shards);
        for (i, endpoints) in mesh::full_mesh(shards).into_iter().enumerate() {
            let placement = if settings.pin_cores {
                Placement::Fixed(i % cores)
            } else {
                Placement::Unbound
            };
            let settings = settings.clone();
            let ready = ready_tx.clone();
            let services = services.clone();
            let counters = counters.clone();
            let admission = admission.clone();
            let control = control.clone();
            let auth = (snapshot.clone(), receivers.next());
            let restored = stores
                .get_mut(i)
                .and_then(Option::take)
                .map(|(state, log)| store::Restored {
                    state,
                    log,
                    routes: routes.clone(),
                });
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{i}"))
                .ring_depth(RING_DEPTH)
                .spawn(move || {
                    let shared = (counters, admission, control, restored);
                    run_shard(i, settings, endpoints, services, shared, auth, ready)
                })
                .map_err(|e| StartError::Executor {
                    shard: i,
                    message: e.to_string(),
                })?;
            handles.push(handle);
        }
        drop(ready_tx);
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(StartError::Executor {
                        shard: 0,
                        message: "a shard stopped during start-up".to_string(),
                    })
                }
            }
        }
        Ok(Server {
            listen,
            ws_listen,
            wss_listen,
            tls_listen,
            tls_config,
            reloader,
            control,
            handles,
            _store_lock: store_lock,
        })
    }

    /// Reloads the TLS certificates and keys (the reload entry point for
    /// SIGHUP): the files of `config` are read on the calling thread, and
    /// only when all are good do new connections get them; otherwise the
    /// configuration in force stays and the error says why. Connections
    /// already established are not touched. `Ok` without a TLS listener.
    pub fn reload_tls(
        &self,
        config: &crate::transport::TlsConfig,
    ) -> Result<(), crate::transport::TlsError> {
        match &self.tls_config {
            Some(holder) => holder.reload(config),
            None => Ok(()),
        }
    }

    /// Asks every shard to drain (see `control`): stop accepting, flush
    /// and close every connection, then end. Returns at once.
    pub fn drain(&self, publish_wills: bool) {
        self.control.drain(publish_wills);
    }

    /// Waits for the shards; they run until the process ends or a drain
    /// ends them.
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// Binds once without `SO_REUSEPORT`, so a port held by anyone else fails
/// here with a clear error instead of being silently shared, and port 0
/// becomes one concrete port for every shard. The probe never listens, so no
/// client can connect to it and be reset when it closes.
fn probe_listen(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_error)?;
    // Allowed over TIME_WAIT leftovers of a previous run, refused (on Linux)
    // where another socket listens.
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    let local = socket.local_addr().map_err(bind_error)?;
    local
        .as_socket()
        .ok_or_else(|| bind_error(std::io::Error::other("not an IP address")))
}

/// Backlog of each shard's listener.
const LISTEN_BACKLOG: i32 = 1024;

/// One shard's listener: `SO_REUSEPORT` so every shard binds the same
/// address, and `SO_REUSEADDR` (which glommio's own `bind` leaves out) so the
/// accepted sockets carry it too: their TIME_WAIT remains must not keep the
/// next start's probe from binding, e.g. on a service restart.
/// Binds this shard's listener on `addr`, if there is one to bind.
fn bind_if(addr: Option<SocketAddr>) -> Result<Option<glommio::net::TcpListener>, StartError> {
    addr.map(|addr| bind_listener(addr).map_err(|source| StartError::Bind { addr, source }))
        .transpose()
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
    // SAFETY: `fd` is a bound, listening socket whose ownership moves into
    // the listener; nothing else holds it.
    Ok(unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The state of one shard, shared by its tasks.
pub struct Shard {
    pub(crate) id: ShardId,
    pub(crate) shards: usize,
    pub(crate) settings: Settings,
    pub(crate) broker: RefCell<Broker>,
    pub(crate) arena: RefCell<arena::ReadArena>,
    wakers: RefCell<Vec<Option<Waker>>>,
    staging: RefCell<Vec<VecDeque<ShardMsg>>>,
    flusher_wakers: RefCell<Vec<Option<Waker>>>,
    staged: Cell<usize>,
    congestion_waiters: RefCell<Vec<Waker>>,
    services: Vec<Rc<dyn AnyService>>,
    /// Which service admitted each service connection, by `ConnId`: its
    /// place in `services` plus one; 0 for the broker's own connections.
    service_of: RefCell<Vec<u8>>,
    /// What the transports refused, for every shard of the server.
    pub(crate) transport: Arc<crate::transport::Counters>,
    /// Sockets in total and the limits' counters, for every shard.
    pub(crate) admission: Arc<limits::Admission>,
    /// Connections per address running on this shard.
    pub(crate) per_address: RefCell<limits::PerAddress>,
    /// CONNECTs per second per address accepted by this shard.
    pub(crate) connect_rate: RefCell<limits::ConnectRate>,
    /// Users and ACL for new connections (`auth`).
    pub(crate) gate: RefCell<crate::auth::Gate>,
    /// Reloads sent to this shard (`reload`).
    reloads: Option<reload::ReloadReceiver>,
    /// The shard's store (`store`); `None` keeps state in memory only.
    store: Option<store::ShardStore>,
    /// Health pings and the drain, shared with the process.
    control: Arc<Control>,
    /// The drain has begun on this shard: no new connection runs.
    draining: Cell<bool>,
    /// The shard's main task, waiting for a drain to be asked.
    drain_waker: RefCell<Option<Waker>>,
}

impl Shard {
    /// Whether a service checks this CONNECT's credentials itself.
    fn authenticates_itself(&self, connect: &crate::mqtt::codec::Connect) -> bool {
        self.services.iter().any(|s| s.authenticates(connect))
    }

    /// Wakes the connections the broker named, stages its remote batches,
    /// and gives the events of service connections to the service (whose
    /// answers may wake connections again).
    pub fn after_input(&self) {
        loop {
            let mut events: Vec<(usize, ServiceEvent)> = Vec::new();
            {
                let mut broker = self.broker.borrow_mut();
                {
                    let mut wakers = self.wakers.borrow_mut();
                    while let Some(conn) = broker.poll_woken() {
                        if let Some(w) = wakers.get_mut(conn.0 as usize).and_then(Option::take) {
                            w.wake();
                        }
                    }
                }
                while let Some((to, batch)) = broker.poll_remote() {
                    self.stage(to, ShardMsg::Batch(batch));
                }
                while let Some(event) = broker.poll_service() {
                    let conn = match &event {
                        ServiceEvent::Published { conn, .. }
                        | ServiceEvent::Closed { conn, .. } => *conn,
                    };
                    if let Some(service) = self.service_index(conn) {
                        events.push((service, event));
                    }
                }
            }
            if events.is_empty() {
                if let Some(store) = &self.store {
                    store.after_input(self.broker.borrow().uncommitted());
                }
                return;
            }
            let mut by_service: Vec<Vec<ServiceEvent>> =
                self.services.iter().map(|_| Vec::new()).collect();
            for (i, event) in events {
                if let Some(list) = by_service.get_mut(i) {
                    list.push(event);
                }
            }
            for (service, events) in self.services.iter().zip(by_service) {
                if !events.is_empty() {
                    service.on_events(self, events);
                }
            }
        }
    }

    /// Sends service `S` on shard `to` a message from its instance here.
    pub fn send_service<S: Service>(&self, to: ShardId, msg: S::Msg) {
        let kind = std::any::TypeId::of::<S>();
        let Some(service) = self.services.iter().position(|s| s.kind() == kind) else {
            tracing::error!(
                service = std::any::type_name::<S>(),
                "message for a service this shard does not run"
            );
            return;
        };
        self.stage(
            to,
            ShardMsg::Service(Tagged {
                service: service as u8,
                msg: Box::new(msg),
            }),
        );
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The broker machine; never borrowed across an await.
    pub fn broker(&self) -> &RefCell<Broker> {
        &self.broker
    }

    /// Offers a CONNECT to each service in turn; `Err` gives it back for
    /// the broker.
    pub(crate) fn admit(
        &self,
        connect: Box<crate::mqtt::codec::Connect>,
        peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<crate::mqtt::codec::Connect>> {
        let mut connect = connect;
        for (i, service) in self.services.iter().enumerate() {
            match service.admit(self, connect, peer) {
                Ok((conn, max_packet)) => {
                    let mut owners = self.service_of.borrow_mut();
                    let slot = conn.0 as usize;
                    if owners.len() <= slot {
                        owners.resize(slot + 1, 0);
                    }
                    owners[slot] = i as u8 + 1;
                    return Ok((conn, max_packet));
                }
                Err(back) => connect = back,
            }
        }
        Err(connect)
    }

    fn service_index(&self, conn: ConnId) -> Option<usize> {
        match self.service_of.borrow().get(conn.0 as usize) {
            Some(&i) if i > 0 => Some(usize::from(i) - 1),
            _ => None,
        }
    }

    /// The connection is gone: its id may be reused for another.
    pub(crate) fn forget(&self, conn: ConnId) {
        self.clear_waker(conn);
        if let Some(slot) = self.service_of.borrow_mut().get_mut(conn.0 as usize) {
            *slot = 0;
        }
    }

    pub(crate) fn stage(&self, to: ShardId, msg: ShardMsg) {
        let to = usize::from(to.0);
        self.staging.borrow_mut()[to].push_back(msg);
        self.staged.set(self.staged.get() + 1);
        if let Some(w) = self.flusher_wakers.borrow_mut()[to].take() {
            w.wake();
        }
    }

    /// True when connections should stop reading; registers `waker` to be
    /// woken when the staged batches drain.
    pub(crate) fn congested(&self, waker: &Waker) -> bool {
        if self.staged.get() < STAGED_BATCHES_MAX {
            return false;
        }
        self.congestion_waiters.borrow_mut().push(waker.clone());
        true
    }

    pub(crate) fn set_waker(&self, conn: ConnId, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        let i = conn.0 as usize;
        if wakers.len() <= i {
            wakers.resize(i + 1, None);
        }
        match &wakers[i] {
            Some(w) if w.will_wake(waker) => {}
            _ => wakers[i] = Some(waker.clone()),
        }
    }

    pub(crate) fn clear_waker(&self, conn: ConnId) {
        if let Some(slot) = self.wakers.borrow_mut().get_mut(conn.0 as usize) {
            *slot = None;
        }
    }
}

async fn run_shard(
    index: usize,
    settings: Settings,
    endpoints: Endpoints,
    services: Arc<Vec<ServiceFactory>>,
    (transport, admission, control, restored): (
        Arc<crate::transport::Counters>,
        Arc<limits::Admission>,
        Arc<Control>,
        Option<store::Restored>,
    ),
    auth: (
        Arc<crate::auth::AuthSnapshot>,
        Option<reload::ReloadReceiver>,
    ),
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let id = ShardId(index as u16);
    let shards = settings.shards;
    let broker_config = BrokerConfig {
        limits: settings.limits,
        retained: settings.retained,
        max_queued_bytes_shard: settings.max_queued_bytes_total.div_ceil(shards.max(1)),
        max_queued_messages_shard: settings.max_queued_messages_total.div_ceil(shards.max(1)),
        sys_interval: settings.sys_interval,
        share_strategy: settings.share_strategy,
        share_seed: rand::random(),
    };
    let settings_auth = settings.auth.clone();
    let connection_limits = settings.connection_limits;
    let bound = (|| {
        Ok::<_, StartError>((
            bind_if(settings.mqtt_listen)?,
            bind_if(settings.websocket.as_ref().map(|ws| ws.listen))?,
            bind_if(settings.websocket.as_ref().and_then(|ws| ws.tls_listen))?,
            bind_if(settings.tls.as_ref().map(|tls| tls.listen))?,
        ))
    })();
    let (listener, ws_listener, wss_listener, tls_listener) = match bound {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let now = Instant::now();
    let mut broker = Broker::new(id, shards, broker_config, now);
    broker.set_persistence(Persistence {
        durability: settings
            .persistence
            .as_ref()
            .map_or(Durability::None, |p| p.durability),
        session_expiry: settings.session_expiry,
        unix_ms_at_start: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    });
    let mut shard_store = None;
    if let Some(restored) = restored {
        broker.restore(now, restored.state, &restored.routes);
        shard_store = settings
            .persistence
            .as_ref()
            .map(|p| store::ShardStore::new(p, restored.log));
    }
    let shard = Rc::new(Shard {
        id,
        shards,
        broker: RefCell::new(broker),
        settings,
        arena: RefCell::new(arena::ReadArena::new()),
        wakers: RefCell::new(Vec::new()),
        staging: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
        flusher_wakers: RefCell::new(vec![None; shards]),
        staged: Cell::new(0),
        congestion_waiters: RefCell::new(Vec::new()),
        services: services.iter().map(|f| f.make(index)).collect(),
        service_of: RefCell::new(Vec::new()),
        transport,
        admission,
        per_address: RefCell::new(limits::PerAddress::new(
            connection_limits.max_connections_per_address,
        )),
        connect_rate: RefCell::new(limits::ConnectRate::new(
            connection_limits.connect_rate_per_address,
            connection_limits.connect_burst_per_address,
            limits::RATE_TABLE_MAX,
        )),
        gate: RefCell::new(crate::auth::Gate::new(
            auth.0,
            settings_auth.budget(),
            crate::auth::VerifyCache::new(settings_auth.verify_cache_max, rand::random()),
        )),
        reloads: auth.1,
        store: shard_store,
        control,
        draining: Cell::new(false),
        drain_waker: RefCell::new(None),
    });
    for service in &shard.services {
        service.clone().start(shard.clone());
    }
    // Stopped first in a drain; the mesh and the tick run until the end.
    let mut listeners = Vec::new();
    if index == 0 {
        if let Some(addr) = shard.settings.http_listen {
            listeners.extend(serve_http(&shard, addr));
        }
    }
    let mut tasks = Vec::new();
    for (from, rx) in endpoints.receivers.into_iter().enumerate() {
        if let Some(rx) = rx {
            tasks.push(glommio::spawn_local(receive(
                shard.clone(),
                ShardId(from as u16),
                rx,
            )));
        }
    }
    for (to, tx) in endpoints.senders.into_iter().enumerate() {
        if let Some(tx) = tx {
            tasks.push(glommio::spawn_local(flush(shard.clone(), to, tx)));
        }
    }
    tasks.push(glommio::spawn_local(tick(shard.clone())));
    if shard.store.is_some() {
        tasks.push(glommio::spawn_local(store::run_writer(shard.clone())));
    }
    // The shard's store was loaded before the executors started
    // (`Server::start`), so the process tells systemd READY=1 only after
    // every store is loaded.
    let kinds = [
        (listener, listener::Kind::Mqtt),
        (ws_listener, listener::Kind::Ws),
        (wss_listener, listener::Kind::Wss),
        (tls_listener, listener::Kind::Tls),
    ];
    for (bound, kind) in kinds {
        if let Some(bound) = bound {
            listeners.push(glommio::spawn_local(listener::accept_loop(
                shard.clone(),
                bound,
                kind,
            )));
        }
    }
    let _ = ready.send(Ok(()));
    drain::asked(&shard).await;
    drain::run(&shard, listeners).await;
    // The final flush of the shard's store: after the last connection
    // closed (nothing more changes), before the executor ends.
    shard.flush_store().await;
    drop(tasks);
    shard.control.note_stopped();
}

/// Serves the services' HTTP routes and `/metrics` on shard 0; the task
/// serves until dropped.
fn serve_http(shard: &Rc<Shard>, addr: SocketAddr) -> Option<glommio::Task<()>> {
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for HTTP");
            return None;
        }
    };
    let mut router = Router::default();
    for service in &shard.services {
        for route in service.clone().routes(shard.clone()) {
            router.add(route);
        }
    }
    router.add(Route::new(
        "/metrics",
        Rc::new(metrics::Metrics(Rc::downgrade(shard))),
    ));
    tracing::info!(%addr, "HTTP listening");
    Some(glommio::spawn_local(crate::http::serve(
        listener,
        Rc::new(router),
    )))
}

/// Drains batches staged for shard `to` into its channel, awaiting space.
async fn flush(shard: Rc<Shard>, to: usize, tx: SharedSender<ShardMsg>) {
    let tx = tx.connect().await;
    loop {
        let msg = poll_fn(|cx| match shard.staging.borrow_mut()[to].pop_front() {
            Some(m) => Poll::Ready(m),
            None => {
                shard.flusher_wakers.borrow_mut()[to] = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let staged = shard.staged.get() - 1;
        shard.staged.set(staged);
        if staged < STAGED_BATCHES_MAX {
            for w in shard.congestion_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Feeds what shard `from` sends into this shard's broker.
async fn receive(shard: Rc<Shard>, from: ShardId, rx: SharedReceiver<ShardMsg>) {
    let rx = rx.connect().await;
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Batch(batch) => {
                let now = Instant::now();
                {
                    let mut broker = shard.broker.borrow_mut();
                    for m in batch {
                        broker.handle_remote(now, from, m);
                    }
                }
                shard.after_input();
                // A busy peer shard must not starve this shard's sockets.
                futures_lite::future::yield_now().await;
            }
            ShardMsg::Handoff(handoff) => {
                glommio::spawn_local(conn::run_handoff(shard.clone(), *handoff)).detach();
            }
            ShardMsg::Service(Tagged { service, msg }) => {
                match shard.services.get(usize::from(service)) {
                    Some(s) => s.on_remote(&shard, from, msg),
                    None => tracing::error!(service, "mesh message for no service"),
                }
                shard.after_input();
            }
        }
    }
}

async fn tick(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(TICK_INTERVAL).await;
        let now = Instant::now();
        reload::apply_pending(&shard);
        shard.control.answer(usize::from(shard.id.0));
        drain::check(&shard);
        shard.broker.borrow_mut().tick(now);
        for service in &shard.services {
            service.tick(&shard, now);
        }
        shard.after_input();
    }
}

#[cfg(test)]
mod service_tests;

#[cfg(test)]
mod drain_tests;
