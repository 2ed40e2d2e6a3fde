//! The gateway's shell on each shard: its UDP socket (one of a
//! `SO_REUSEPORT` group on the configured port), the tasks that receive,
//! send and pump the broker connections' outboxes into the gateway, the
//! mesh between the gateway's instances, ADVERTISE, and `/metrics`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;

use super::gateway::{Gateway, Mesh, Outgoing};
use super::metrics::SnMetrics;
use crate::mqtt::broker::{AuthRefusal, ConnId, ShardId};
use crate::mqtt::codec::{Connect, ConnectReturnCode};
use crate::shard::{Service, Shard};
use crate::transport::udp::{self, Received, RecvBatch, SendQueue, Unqueued};

/// Connections whose outbox grew, gathered by their wakers for the pump.
#[derive(Default)]
struct Ready {
    conns: Vec<ConnId>,
    task: Option<Waker>,
}

/// The waker the shard calls when the broker wrote to `conn`.
struct ConnWaker {
    conn: ConnId,
    ready: Arc<Mutex<Ready>>,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // One thread only (the shard's); the lock is never contended.
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.conns.push(self.conn);
        if let Some(task) = ready.task.take() {
            task.wake();
        }
    }
}

/// The gateway on one shard.
pub struct SnService {
    shard: ShardId,
    socket: RefCell<Option<OwnedFd>>,
    udp: RefCell<Option<Rc<UdpSocket>>>,
    gateway: RefCell<Gateway>,
    metrics: Arc<SnMetrics>,
    ready: Arc<Mutex<Ready>>,
    wakers: RefCell<HashMap<ConnId, Waker>>,
    /// What the sender sends next; swapped with the gateway's.
    sending: RefCell<Outgoing>,
    sender: RefCell<Option<Waker>>,
    advertise: Option<(SocketAddr, Duration)>,
    next_advertise: Cell<Option<Instant>>,
    /// The longest datagram taken in (`max_datagram`).
    max_datagram: usize,
    /// Answers on their way to the socket, sent many per system call.
    sends: SendQueue,
}

/// Datagrams taken from the socket per system call.
const RECEIVE_BATCH: usize = 64;
/// Datagrams queued for the socket.
const SEND_BATCH: usize = 64;
/// The slot of a queued answer, at least: an answer larger than its slot
/// (a long message to a client) is sent on its own.
const MIN_SEND: usize = 1500;
/// Room for a forwarder's wrapping around an answer (§5.5).
const WRAPPING: usize = 3 + 255;

impl SnService {
    pub(super) fn new(
        shard: usize,
        socket: Option<OwnedFd>,
        gateway: Gateway,
        metrics: Arc<SnMetrics>,
        advertise: Option<(SocketAddr, Duration)>,
        max_datagram: usize,
    ) -> SnService {
        SnService {
            shard: ShardId(shard as u16),
            socket: RefCell::new(socket),
            udp: RefCell::new(None),
            gateway: RefCell::new(gateway),
            metrics,
            ready: Arc::default(),
            wakers: RefCell::default(),
            sending: RefCell::default(),
            sender: RefCell::default(),
            advertise: advertise.filter(|_| shard == 0),
            next_advertise: Cell::new(None),
            max_datagram,
            sends: SendQueue::new(SEND_BATCH, max_datagram.max(MIN_SEND) + WRAPPING),
        }
    }

    /// Runs `f` on the gateway with the broker and the shard's credential
    /// check, then hands its outputs to the shell.
    fn with_gateway(
        &self,
        shard: &Shard,
        f: impl FnOnce(&mut Gateway, &mut crate::mqtt::broker::Broker, super::gateway::Authorize<'_>),
    ) {
        let refused: RefCell<Vec<AuthRefusal>> = RefCell::default();
        {
            let mut gateway = self.gateway.borrow_mut();
            let mut broker = shard.broker().borrow_mut();
            let mut auth = |connect: &Connect, peer: SocketAddr| {
                if shard.draining() {
                    // Stopping: no new broker connection, as for TCP.
                    return Err(ConnectReturnCode::ServerUnavailable);
                }
                shard
                    .authorize(Some(peer), connect)
                    .map_err(|(refusal, code)| {
                        refused.borrow_mut().push(refusal);
                        code
                    })
            };
            f(&mut gateway, &mut broker, &mut auth);
            for refusal in refused.take() {
                broker.note_auth_refused(refusal);
            }
        }
        self.after(shard);
    }

    /// Registers and forgets wakers, posts mesh messages, wakes the sender,
    /// and lets the shard route what the broker produced.
    fn after(&self, shard: &Shard) {
        let (opened, released, mesh, has_outgoing) = {
            let mut g = self.gateway.borrow_mut();
            (
                std::mem::take(&mut g.opened),
                std::mem::take(&mut g.released),
                std::mem::take(&mut g.mesh),
                !g.outgoing.list.is_empty(),
            )
        };
        for conn in released {
            self.wakers.borrow_mut().remove(&conn);
            shard.forget(conn);
        }
        for conn in opened {
            self.watch(shard, conn);
        }
        for (to, msg) in mesh {
            shard.send_service::<SnService>(to, msg);
        }
        if has_outgoing {
            if let Some(w) = self.sender.borrow_mut().take() {
                w.wake();
            }
        }
        shard.after_input();
    }

    fn watch(&self, shard: &Shard, conn: ConnId) {
        let mut wakers = self.wakers.borrow_mut();
        let waker = wakers.entry(conn).or_insert_with(|| {
            Waker::from(Arc::new(ConnWaker {
                conn,
                ready: self.ready.clone(),
            }))
        });
        shard.set_waker(conn, waker);
    }

    /// Gives the gateway each batch the socket yields at once
    /// (`udp::receive_batch`).
    async fn receive_loop(self: Rc<Self>, shard: Rc<Shard>, udp: Rc<UdpSocket>) {
        let mut batch = RecvBatch::new(RECEIVE_BATCH, self.max_datagram);
        let mut since_yield = 0;
        loop {
            // While the mesh is full, the socket is not read: its buffer,
            // then the clients' retries, hold what comes (as TCP
            // connections stop reading).
            poll_fn(|cx| match shard.congested(cx.waker()) {
                true => Poll::Pending,
                false => Poll::Ready(()),
            })
            .await;
            let waited = match udp::receive_batch(&udp, &mut batch).await {
                Ok(waited) => waited,
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT-SN socket receive failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if waited {
                since_yield = 0;
            }
            let now = Instant::now();
            self.with_gateway(&shard, |g, broker, auth| {
                for i in 0..batch.len() {
                    match batch.get_mut(i) {
                        Some(Received::Datagram { from, data }) => {
                            g.receive(now, broker, auth, from, data)
                        }
                        Some(Received::TooLarge { .. }) => g.too_large(),
                        None => {}
                    }
                }
            });
            // A socket with data ready answers at once: under a flood the
            // task gives the executor back now and then.
            since_yield += batch.len();
            if since_yield >= RECEIVE_BATCH {
                since_yield = 0;
                futures_lite::future::yield_now().await;
            }
        }
    }

    /// Moves the gateway's answers to the send queue.
    async fn send_loop(self: Rc<Self>, udp: Rc<UdpSocket>) {
        loop {
            poll_fn(|cx| {
                let mut g = self.gateway.borrow_mut();
                if g.outgoing.list.is_empty() {
                    *self.sender.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let mut sending = self.sending.borrow_mut();
                sending.clear();
                std::mem::swap(&mut *sending, &mut g.outgoing);
                Poll::Ready(())
            })
            .await;
            let batch = std::mem::take(&mut *self.sending.borrow_mut());
            for (datagram, to) in batch.iter() {
                if let Err(Unqueued::TooLarge) = self.sends.send(datagram, to).await {
                    if let Err(e) = udp.send_to(datagram, to).await {
                        tracing::debug!(error = %e, %to, "MQTT-SN send failed");
                    }
                }
            }
            *self.sending.borrow_mut() = batch;
        }
    }

    /// Gives the gateway the outboxes the broker wrote to.
    async fn pump_loop(self: Rc<Self>, shard: Rc<Shard>) {
        loop {
            let conns = poll_fn(|cx| {
                let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
                if ready.conns.is_empty() {
                    ready.task = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(std::mem::take(&mut ready.conns))
            })
            .await;
            let now = Instant::now();
            self.with_gateway(&shard, |g, broker, auth| {
                for &conn in &conns {
                    g.drain(now, broker, auth, conn);
                }
            });
            let g = self.gateway.borrow();
            for conn in conns {
                if g.owns(conn) {
                    self.watch(&shard, conn);
                }
            }
        }
    }
}

impl Service for SnService {
    type Msg = Mesh;

    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        let Some(fd) = self.socket.borrow_mut().take() else {
            return;
        };
        // SAFETY: `fd` is a bound UDP socket of the gateway's group whose
        // ownership moves into the glommio socket; nothing else holds it.
        let udp = Rc::new(unsafe {
            <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                fd,
            ))
        });
        *self.udp.borrow_mut() = Some(udp.clone());
        glommio::spawn_local(self.clone().send_loop(udp.clone())).detach();
        let sender = self.clone();
        let socket = udp.clone();
        glommio::spawn_local(async move {
            sender
                .sends
                .run(&socket, |n| {
                    tracing::debug!(n, "MQTT-SN datagrams refused by the kernel")
                })
                .await
        })
        .detach();
        glommio::spawn_local(self.clone().receive_loop(shard.clone(), udp)).detach();
        glommio::spawn_local(self.clone().pump_loop(shard)).detach();
    }

    fn on_remote(&self, shard: &Shard, from: ShardId, msg: Mesh) {
        let now = Instant::now();
        let _ = from;
        self.with_gateway(shard, |g, broker, auth| match msg {
            Mesh::Datagram { key, via, data } => g.forwarded(now, broker, auth, key, via, &data),
            Mesh::Forget(key) => g.forget(&key),
            Mesh::Reroute { key, to } => g.reroute(key, to),
            Mesh::Gone(key) => g.gone(now, broker, &key),
        });
    }

    fn tick(&self, shard: &Shard, now: Instant) {
        self.with_gateway(shard, |g, broker, _| {
            g.tick(now, broker);
            if let Some((to, interval)) = self.advertise {
                let due = self.next_advertise.get().map_or(true, |at| now >= at);
                if due {
                    g.advertise(to, interval);
                    self.next_advertise.set(Some(now + interval));
                }
            }
        });
    }

    fn metrics(&self, out: &mut String) {
        if self.shard == ShardId(0) {
            self.metrics.render(out);
        }
    }
}
