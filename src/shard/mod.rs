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
//! A service above the broker (the voice gateway) plugs in through
//! `Service`: it may take CONNECTs as service connections, receives their
//! events, has its own messages on the mesh, and is ticked with the broker.

mod arena;
mod conn;
mod listener;
pub mod mesh;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::mqtt::broker::{Broker, BrokerConfig, ConnId, ServiceEvent, ShardId};
use crate::mqtt::codec::Connect;
use crate::mqtt::session::SessionLimits;
use mesh::{Endpoints, ShardMsg, STAGED_BATCHES_MAX};

/// Period of the broker's timer tick: keepalive is checked to within this.
const TICK_INTERVAL: Duration = Duration::from_millis(250);

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
}

/// A service running on every shard beside the broker. All calls come from
/// the shard's own thread.
pub trait Service {
    /// Spawns the service's tasks on the shard; called once, first.
    fn start(self: Rc<Self>, shard: Rc<Shard>);
    /// A CONNECT this shard runs. `Ok` when the service took it (the
    /// connection is a service connection or refused), with the packet size
    /// limit of the connection; `Err` gives it back for the broker.
    fn admit(
        &self,
        shard: &Shard,
        connect: Box<Connect>,
        peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>>;
    /// Events of service connections.
    fn on_events(&self, shard: &Shard, events: Vec<ServiceEvent>);
    /// A `ShardMsg::Service` from another shard.
    fn on_remote(&self, shard: &Shard, from: ShardId, msg: Box<dyn std::any::Any + Send>);
    /// Called with every broker tick.
    fn tick(&self, shard: &Shard, now: Instant);
}

/// Creates the service of each shard, given the shard index; called on the
/// shard's thread.
pub type ServiceFactory = std::sync::Arc<dyn Fn(usize) -> Rc<dyn Service> + Send + Sync>;

/// A running server: its shard threads and the address it listens on.
pub struct Server {
    pub listen: SocketAddr,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Server {
    /// Starts every shard and returns once all listen, or the first error.
    pub fn start(config: Config, service: Option<ServiceFactory>) -> Result<Server, StartError> {
        let shards = config.shard_count();
        let listen = if config.mqtt.enabled {
            probe_listen(config.mqtt.listen)?
        } else {
            config.mqtt.listen
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
        let mut handles = Vec::with_capacity(shards);
        for (i, endpoints) in mesh::full_mesh(shards).into_iter().enumerate() {
            let placement = if config.server.pin_cores {
                Placement::Fixed(i % cores)
            } else {
                Placement::Unbound
            };
            let config = config.clone();
            let ready = ready_tx.clone();
            let service = service.clone();
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{i}"))
                .spawn(move || run_shard(i, shards, listen, config, endpoints, service, ready))
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
        Ok(Server { listen, handles })
    }

    /// Waits for the shards; they run until the process ends.
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
    pub(crate) config: Config,
    pub(crate) broker: RefCell<Broker>,
    pub(crate) arena: RefCell<arena::ReadArena>,
    wakers: RefCell<Vec<Option<Waker>>>,
    staging: RefCell<Vec<VecDeque<ShardMsg>>>,
    flusher_wakers: RefCell<Vec<Option<Waker>>>,
    staged: Cell<usize>,
    congestion_waiters: RefCell<Vec<Waker>>,
    service: std::cell::OnceCell<Rc<dyn Service>>,
}

impl Shard {
    /// Wakes the connections the broker named, stages its remote batches,
    /// and gives the events of service connections to the service (whose
    /// answers may wake connections again).
    pub fn after_input(&self) {
        loop {
            let mut events = Vec::new();
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
                    events.push(event);
                }
            }
            if events.is_empty() {
                return;
            }
            if let Some(service) = self.service.get() {
                service.on_events(self, events);
            }
        }
    }

    /// Sends a service message to another shard.
    pub fn send_service(&self, to: ShardId, msg: Box<dyn std::any::Any + Send>) {
        self.stage(to, ShardMsg::Service(msg));
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The broker machine; never borrowed across an await.
    pub fn broker(&self) -> &RefCell<Broker> {
        &self.broker
    }

    pub(crate) fn service(&self) -> Option<&Rc<dyn Service>> {
        self.service.get()
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
    shards: usize,
    listen: SocketAddr,
    config: Config,
    endpoints: Endpoints,
    service: Option<ServiceFactory>,
    ready: mpsc::Sender<Result<(), StartError>>,
) {
    let id = ShardId(index as u16);
    let broker_config = BrokerConfig {
        limits: SessionLimits {
            max_inflight: config.mqtt.max_inflight,
            max_queued_messages: config.mqtt.max_queued_messages,
            queue_qos0_offline: config.mqtt.queue_qos0_offline,
            max_outbox_bytes: config.mqtt.max_outbox_bytes,
        },
        sys_interval: (config.mqtt.sys_interval_s > 0)
            .then(|| Duration::from_secs(config.mqtt.sys_interval_s)),
    };
    let shard = Rc::new(Shard {
        id,
        shards,
        broker: RefCell::new(Broker::new(id, shards, broker_config, Instant::now())),
        config,
        arena: RefCell::new(arena::ReadArena::new()),
        wakers: RefCell::new(Vec::new()),
        staging: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
        flusher_wakers: RefCell::new(vec![None; shards]),
        staged: Cell::new(0),
        congestion_waiters: RefCell::new(Vec::new()),
        service: std::cell::OnceCell::new(),
    });
    let listener = if shard.config.mqtt.enabled {
        match bind_listener(listen) {
            Ok(l) => Some(l),
            Err(source) => {
                let _ = ready.send(Err(StartError::Bind {
                    addr: listen,
                    source,
                }));
                return;
            }
        }
    } else {
        None
    };
    if let Some(factory) = service {
        let service = factory(index);
        let _ = shard.service.set(service.clone());
        service.start(shard.clone());
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
    let _ = ready.send(Ok(()));
    match listener {
        Some(listener) => listener::accept_loop(shard, listener).await,
        None => std::future::pending::<()>().await,
    }
    drop(tasks);
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
            ShardMsg::Service(msg) => {
                if let Some(service) = shard.service() {
                    service.on_remote(&shard, from, msg);
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
        shard.broker.borrow_mut().tick(now);
        if let Some(service) = shard.service() {
            service.tick(&shard, now);
        }
        shard.after_input();
    }
}
