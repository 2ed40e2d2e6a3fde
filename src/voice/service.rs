//! The voice gateway on a shard (shell): admits devices' MQTT connections,
//! feeds the gateway machine with their messages, its UDP socket and its
//! backend WebSockets, and carries out what the machine asks.
//!
//! Each shard runs one `VoiceService` with its own socket of the UDP group
//! (`bpf::bind_group`). A conversation lives on the shard that owns its
//! device's client id; its conn id makes the reuseport program deliver its
//! datagrams to that shard, and a datagram that lands elsewhere anyway
//! (steering off, or a stale id) is forwarded over the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::UdpSocket;
use serde_json::Value;

use crate::http::Route;
use crate::mqtt::broker::{owner_shard, ConnId, ServiceEvent, ShardId};
use crate::mqtt::codec::{Connect, ConnectReturnCode};
use crate::shard::{Service, Shard};
use crate::transport::udp::{self, Received, RecvBatch, SendQueue};
use crate::voice::backend::{Backend, BackendSpec};
use crate::voice::bridge::{self, BridgeCmd};
use crate::voice::config::VoiceConfig;
use crate::voice::gateway::{Action, DeviceKey, DeviceStatus, Gateway, Outgoing, VoiceCounters};
use crate::voice::identity;
use crate::voice::packet;

/// Frames queued towards one backend before audio is dropped: a backend
/// that stops reading must not grow the shard's memory.
const BRIDGE_QUEUE: usize = 256;

/// Datagrams the receive task handles before it yields, and the most one
/// `recvmmsg` takes. A receive on a socket with data ready completes at
/// once, so under a flood the task would never give the cooperative
/// executor back, and the shard's MQTT connections would starve (as
/// `shard::conn` yields after each read). 32 datagrams are well under a
/// millisecond of work, yet keep the cost of the yield and of the system
/// call per datagram small.
const RECEIVE_BATCH: usize = 32;

/// Datagrams to devices queued for one `sendmmsg`. A turn of the executor
/// rarely produces more (a receive batch releases held frames only when a
/// conversation starts); past it, producers wait for `send_loop`.
const SEND_BATCH: usize = 64;

/// Datagrams from other shards waiting for this shard's receive task.
const FORWARD_QUEUE: usize = 1024;

/// Between the voice services of different shards.
pub enum VoiceMsg {
    /// A datagram that arrived on the sender's socket.
    Datagram { from: SocketAddr, data: Vec<u8> },
    /// An MCP request for a device of the receiver; answered with `McpDone`.
    Mcp {
        token: u64,
        client_id: String,
        payload: Value,
    },
    McpDone {
        token: u64,
        result: Result<Value, String>,
    },
    /// Status of devices of the receiver; answered with `StatusDone`.
    Status { token: u64, client_ids: Vec<String> },
    StatusDone {
        token: u64,
        statuses: Vec<(String, DeviceStatus)>,
    },
    /// The sender's counters, for shard 0's `/metrics`.
    Counters(VoiceCounters),
}

/// Where the outcome of an MCP request goes.
enum McpOrigin {
    Local(Rc<Slot<Result<Value, String>>>),
    Remote { shard: ShardId, token: u64 },
}

/// A device on the built-in broker is named by its connection.
fn device_key(conn: ConnId) -> DeviceKey {
    DeviceKey(u64::from(conn.0))
}

fn conn_of(device: DeviceKey) -> ConnId {
    ConnId(device.0 as u32)
}

/// How devices are reached.
enum Devices {
    /// Connections of the built-in broker (`device_key`), with their
    /// reply topics.
    Builtin { topics: HashMap<DeviceKey, String> },
    /// An external broker: the key names a reply topic.
    External(crate::voice::external::Link),
}

pub struct VoiceService {
    pub(crate) config: VoiceConfig,
    shard: ShardId,
    shards: usize,
    gateway: RefCell<Gateway>,
    socket: RefCell<Option<std::os::fd::OwnedFd>>,
    udp: std::cell::OnceCell<Rc<UdpSocket>>,
    backends: Vec<Rc<Backend>>,
    bridges: RefCell<HashMap<u32, LocalSender<BridgeCmd>>>,
    devices: RefCell<Devices>,
    mcp: RefCell<HashMap<u64, McpOrigin>>,
    /// Status requests waiting for other shards.
    statuses: RefCell<HashMap<u64, PendingStatus>>,
    next_token: Cell<u64>,
    /// Counters of every shard, on shard 0.
    shard_counters: RefCell<Vec<VoiceCounters>>,
    /// Datagrams to devices, sent together by the shard's send task.
    sends: SendQueue,
    /// Datagrams forwarded by other shards, for the receive task.
    forwarded: std::cell::OnceCell<LocalSender<(SocketAddr, Vec<u8>)>>,
    /// Set by `start`: tasks spawned later need owned handles.
    me: std::cell::OnceCell<Weak<VoiceService>>,
    home: std::cell::OnceCell<Weak<Shard>>,
}

impl VoiceService {
    pub(crate) fn new(
        config: VoiceConfig,
        shard: usize,
        shards: usize,
        gateway: Gateway,
        socket: std::os::fd::OwnedFd,
        backends: Vec<BackendSpec>,
        external_broker: Vec<SocketAddr>,
    ) -> VoiceService {
        let devices = if config.external_broker.enabled() {
            Devices::External(crate::voice::external::Link::new(external_broker))
        } else {
            Devices::Builtin {
                topics: HashMap::new(),
            }
        };
        VoiceService {
            config,
            shard: ShardId(shard as u16),
            shards,
            gateway: RefCell::new(gateway),
            socket: RefCell::new(Some(socket)),
            udp: std::cell::OnceCell::new(),
            backends: backends.into_iter().map(Backend::new).collect(),
            bridges: RefCell::new(HashMap::new()),
            devices: RefCell::new(devices),
            mcp: RefCell::new(HashMap::new()),
            statuses: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            shard_counters: RefCell::new(vec![VoiceCounters::default(); shards]),
            sends: SendQueue::new(SEND_BATCH, packet::MAX_DATAGRAM),
            forwarded: std::cell::OnceCell::new(),
            me: std::cell::OnceCell::new(),
            home: std::cell::OnceCell::new(),
        }
    }

    fn handles(&self) -> Option<(Rc<VoiceService>, Rc<Shard>)> {
        Some((self.me.get()?.upgrade()?, self.home.get()?.upgrade()?))
    }

    fn udp(&self) -> Option<&Rc<UdpSocket>> {
        self.udp.get()
    }

    /// Counts in the shard's counters, for the shell's tasks.
    pub(crate) fn count(&self, f: impl FnOnce(&mut VoiceCounters)) {
        f(self.gateway.borrow_mut().counters_mut());
    }

    fn token(&self) -> u64 {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        t
    }

    /// Carries out the gateway's actions; then the shard wakes whatever
    /// connections they wrote to.
    pub(crate) fn run_actions(&self, shard: &Shard) {
        loop {
            let Some(action) = self.gateway.borrow_mut().poll_action() else {
                break;
            };
            match action {
                Action::ToDevice { device, payload } => self.to_device(shard, device, &payload),
                Action::CloseDevice { device } => {
                    if let Devices::Builtin { topics } = &*self.devices.borrow() {
                        if topics.contains_key(&device) {
                            shard.broker().borrow_mut().close_service(conn_of(device));
                        }
                    }
                }
                Action::OpenBackend {
                    conv,
                    url,
                    headers,
                    hello,
                } => {
                    let Some(backend) = self.backends.iter().find(|b| b.url() == url).cloned()
                    else {
                        self.gateway
                            .borrow_mut()
                            .backend_closed(Instant::now(), conv);
                        continue;
                    };
                    let Some((me, home)) = self.handles() else {
                        continue;
                    };
                    let (tx, rx) = local_channel::new_bounded(BRIDGE_QUEUE);
                    self.bridges.borrow_mut().insert(conv, tx);
                    glommio::spawn_local(bridge::run(me, home, conv, backend, headers, hello, rx))
                        .detach();
                }
                Action::BackendText { conv, text } => {
                    if let Some(tx) = self.bridges.borrow().get(&conv) {
                        // A full queue means the backend stopped reading;
                        // control text is small and rare, so it still waits
                        // its turn rather than being lost.
                        if let Err(e) = tx.try_send(BridgeCmd::Text(text)) {
                            tracing::debug!(conv, error = %e, "backend queue full");
                        }
                    }
                }
                Action::CloseBackend { conv } => {
                    if let Some(tx) = self.bridges.borrow_mut().remove(&conv) {
                        let _ = tx.try_send(BridgeCmd::Close);
                    }
                }
                Action::McpDone { token, result } => self.mcp_done(shard, token, result),
            }
        }
        shard.after_input();
    }

    fn to_device(&self, shard: &Shard, device: DeviceKey, payload: &[u8]) {
        match &mut *self.devices.borrow_mut() {
            Devices::Builtin { topics } => {
                if let Some(topic) = topics.get(&device) {
                    shard
                        .broker()
                        .borrow_mut()
                        .push(conn_of(device), topic, payload);
                }
            }
            Devices::External(link) => {
                if !link.publish(device, payload) {
                    self.gateway
                        .borrow_mut()
                        .counters_mut()
                        .external_out_dropped += 1;
                }
            }
        }
    }

    fn mcp_done(&self, shard: &Shard, token: u64, result: Result<Value, String>) {
        match self.mcp.borrow_mut().remove(&token) {
            Some(McpOrigin::Local(slot)) => slot.fill(result),
            Some(McpOrigin::Remote { shard: to, token }) => {
                shard.send_service::<VoiceService>(to, VoiceMsg::McpDone { token, result });
            }
            None => {}
        }
    }

    // ----- backend events (from bridge tasks) ------------------------------------

    pub(crate) fn backend_text(&self, shard: &Shard, conv: u32, text: &str) {
        self.gateway
            .borrow_mut()
            .backend_text(Instant::now(), conv, text);
        self.run_actions(shard);
    }

    pub(crate) fn backend_closed(&self, shard: &Shard, conv: u32) {
        self.bridges.borrow_mut().remove(&conv);
        self.gateway
            .borrow_mut()
            .backend_closed(Instant::now(), conv);
        self.run_actions(shard);
    }

    pub(crate) async fn backend_audio(&self, conv: u32, mut frame: BytesMut) {
        let out = self
            .gateway
            .borrow_mut()
            .backend_audio(Instant::now(), conv, &mut frame);
        if let Outgoing::Send { to, len } = out {
            self.send_datagram(&frame[..len], to).await;
        }
    }

    /// Queues a datagram to a device (see `SendQueue` for when it leaves),
    /// waiting for room if the kernel is pushing back.
    async fn send_datagram(&self, datagram: &[u8], to: SocketAddr) {
        if self.udp().is_none() {
            return;
        }
        if self.sends.send(datagram, to).await.is_err() {
            self.gateway.borrow_mut().counters_mut().audio_out_dropped += 1;
        }
    }

    /// The shard's only sender to devices.
    async fn send_loop(self: Rc<Self>, udp: Rc<UdpSocket>) {
        self.sends
            .run(&udp, |dropped| {
                self.gateway.borrow_mut().counters_mut().audio_out_dropped += dropped;
            })
            .await;
    }

    // ----- UDP -------------------------------------------------------------------

    /// Datagrams forwarded by other shards.
    async fn forwarded_loop(
        self: Rc<Self>,
        rx: local_channel::LocalReceiver<(SocketAddr, Vec<u8>)>,
    ) {
        let mut received = 0;
        while let Some((from, mut data)) = rx.recv().await {
            self.datagram(from, &mut data).await;
            // A full queue is ready at once, like a flooded socket.
            received += 1;
            if received == RECEIVE_BATCH {
                received = 0;
                futures_lite::future::yield_now().await;
            }
        }
    }

    /// Handles each batch the socket yields (`udp::receive_batch`).
    async fn receive_loop(self: Rc<Self>, shard: Rc<Shard>, udp: Rc<UdpSocket>) {
        let mut batch = RecvBatch::new(RECEIVE_BATCH, packet::MAX_DATAGRAM);
        let mut since_yield = 0;
        loop {
            let waited = match udp::receive_batch(&udp, &mut batch).await {
                Ok(waited) => waited,
                Err(e) => {
                    tracing::warn!(error = %e, "UDP receive failed");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if waited {
                since_yield = 0;
            }
            for i in 0..batch.len() {
                match batch.get_mut(i) {
                    Some(Received::Datagram { from, data }) => {
                        self.received(&shard, from, data).await;
                    }
                    Some(Received::TooLarge { from }) => {
                        tracing::trace!(%from, "datagram too large");
                        // Cut by the buffer, which is one byte larger than
                        // any datagram the protocol allows.
                        self.gateway
                            .borrow_mut()
                            .counters_mut()
                            .count_drop(packet::DropReason::TooLarge);
                    }
                    None => {}
                }
            }
            // A socket with data ready answers at once, so under a flood
            // the task would never give the executor back.
            since_yield += batch.len();
            if since_yield >= RECEIVE_BATCH {
                since_yield = 0;
                futures_lite::future::yield_now().await;
            }
        }
    }

    /// A datagram from this shard's socket: handled here, or forwarded to
    /// the shard that owns its conversation.
    async fn received(&self, shard: &Shard, from: SocketAddr, datagram: &mut [u8]) {
        let owner = packet::conn_id(datagram).map_or(self.shard, |id| {
            ShardId(packet::owner_of_conn_id(id, self.shards as u32) as u16)
        });
        if owner != self.shard {
            let data = datagram.to_vec();
            shard.send_service::<VoiceService>(owner, VoiceMsg::Datagram { from, data });
            return;
        }
        self.datagram(from, datagram).await;
    }

    async fn datagram(&self, from: SocketAddr, datagram: &mut [u8]) {
        let accepted = self
            .gateway
            .borrow_mut()
            .udp_in(Instant::now(), from, datagram);
        let Ok(incoming) = accepted else {
            return;
        };
        let frame = Bytes::copy_from_slice(datagram);
        if let Some(tx) = self.bridges.borrow().get(&incoming.conv) {
            if tx.try_send(BridgeCmd::Binary(frame)).is_err() {
                self.gateway.borrow_mut().counters_mut().audio_out_dropped += 1;
            }
        }
        for mut held in incoming.released {
            let sealed = self
                .gateway
                .borrow_mut()
                .seal_released(incoming.conv, &mut held);
            if let Some((to, len)) = sealed {
                self.send_datagram(&held[..len], to).await;
            }
        }
    }

    // ----- external broker mode ---------------------------------------------------

    /// Runs `f` on the external broker link, in that mode.
    pub(crate) fn with_link<R>(
        &self,
        f: impl FnOnce(&mut crate::voice::external::Link) -> R,
    ) -> Option<R> {
        match &mut *self.devices.borrow_mut() {
            Devices::External(link) => Some(f(link)),
            Devices::Builtin { .. } => None,
        }
    }

    /// A device message relayed by the external broker.
    pub(crate) fn external_message(&self, shard: &Shard, mac: &str, payload: &[u8]) {
        let now = Instant::now();
        let Some(found) = self.with_link(|link| link.device(mac)) else {
            return;
        };
        let (device, new) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(mac, error = %e, "message from a topic that names no device");
                return;
            }
        };
        if let Some(new) = new {
            self.gateway
                .borrow_mut()
                .device_connected(now, device, new.id, &new.client_id, None);
        }
        self.gateway
            .borrow_mut()
            .device_message(now, SystemTime::now(), device, payload);
        self.run_actions(shard);
    }

    // ----- management API (shard 0) -----------------------------------------------

    /// Sends an MCP request to a device on any shard and waits for the outcome.
    pub(crate) fn mcp_command(
        &self,
        shard: &Shard,
        client_id: String,
        payload: Value,
    ) -> impl Future<Output = Result<Value, String>> {
        let slot = Rc::new(Slot::default());
        let token = self.token();
        self.mcp
            .borrow_mut()
            .insert(token, McpOrigin::Local(slot.clone()));
        let owner = owner_shard(&client_id, self.shards);
        if owner == self.shard {
            self.gateway
                .borrow_mut()
                .mcp_request(Instant::now(), &client_id, &payload, token);
            self.run_actions(shard);
        } else {
            shard.send_service::<VoiceService>(
                owner,
                VoiceMsg::Mcp {
                    token,
                    client_id,
                    payload,
                },
            );
        }
        async move { slot.wait().await }
    }

    /// Status of devices on every shard.
    pub(crate) fn devices_status(
        &self,
        shard: &Shard,
        client_ids: Vec<String>,
    ) -> impl Future<Output = Vec<(String, DeviceStatus)>> {
        let mut by_shard: HashMap<ShardId, Vec<String>> = HashMap::new();
        for id in client_ids {
            by_shard
                .entry(owner_shard(&id, self.shards))
                .or_default()
                .push(id);
        }
        let slot = Rc::new(Slot::default());
        let local = self.statuses_of(by_shard.remove(&self.shard).unwrap_or_default());
        if by_shard.is_empty() {
            slot.fill(local);
        } else {
            let token = self.token();
            let pending = PendingStatus {
                slot: slot.clone(),
                collected: local,
                missing: by_shard.len(),
            };
            self.statuses.borrow_mut().insert(token, pending);
            for (owner, client_ids) in by_shard {
                shard.send_service::<VoiceService>(owner, VoiceMsg::Status { token, client_ids });
            }
        }
        async move { slot.wait().await }
    }

    /// Status of devices of this shard.
    fn statuses_of(&self, client_ids: Vec<String>) -> Vec<(String, DeviceStatus)> {
        let gateway = self.gateway.borrow();
        client_ids
            .into_iter()
            .map(|id| {
                let status = gateway.status(&id);
                (id, status)
            })
            .collect()
    }

    /// Prometheus text of the voice counters summed over shards.
    fn metrics_text(&self) -> String {
        let mut total = VoiceCounters::default();
        {
            let mut per_shard = self.shard_counters.borrow_mut();
            per_shard[usize::from(self.shard.0)] = self.gateway.borrow().counters();
            for c in per_shard.iter() {
                total.add(c);
            }
        }
        crate::voice::metrics::render(&total)
    }
}

impl Service for VoiceService {
    type Msg = VoiceMsg;

    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        let _ = self.me.set(Rc::downgrade(&self));
        let _ = self.home.set(Rc::downgrade(&shard));
        let Some(fd) = self.socket.borrow_mut().take() else {
            return;
        };
        let (tx, rx) = local_channel::new_bounded(FORWARD_QUEUE);
        let _ = self.forwarded.set(tx);
        glommio::spawn_local(self.clone().forwarded_loop(rx)).detach();
        // SAFETY: `fd` is a bound UDP socket of the group whose ownership
        // moves into the glommio socket; nothing else holds it.
        let udp = Rc::new(unsafe {
            <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                fd,
            ))
        });
        let _ = self.udp.set(udp.clone());
        glommio::spawn_local(self.clone().send_loop(udp.clone())).detach();
        glommio::spawn_local(self.clone().receive_loop(shard.clone(), udp)).detach();
        if self.shard == ShardId(0) && self.config.external_broker.enabled() {
            crate::voice::external::start(self.clone(), shard.clone());
        }
    }

    fn authenticates(&self, connect: &Connect) -> bool {
        identity::is_device_client_id(&connect.client_id)
            && matches!(&*self.devices.borrow(), Devices::Builtin { .. })
    }

    fn admit(
        &self,
        shard: &Shard,
        connect: Box<Connect>,
        peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>> {
        if !identity::is_device_client_id(&connect.client_id)
            || !matches!(&*self.devices.borrow(), Devices::Builtin { .. })
        {
            return Err(connect);
        }
        let now = Instant::now();
        let max = self.config.max_packet_size;
        let refuse = |code| {
            let conn = shard.broker().borrow_mut().refuse_connect(now, code);
            Ok((conn, max))
        };
        let Ok(id) = identity::parse_client_id(&connect.client_id) else {
            tracing::debug!(client_id = %connect.client_id, "malformed device id");
            return refuse(ConnectReturnCode::IdentifierRejected);
        };
        let key = self.config.signature_key.as_bytes();
        if !key.is_empty() && id.uuid.is_some() {
            let username = connect.username.as_deref().unwrap_or("");
            let password = connect.password.as_deref().unwrap_or(&[]);
            if !identity::check_password(key, &connect.client_id, username, password) {
                tracing::debug!(client_id = %connect.client_id, "bad device credentials");
                return refuse(ConnectReturnCode::BadUserNamePassword);
            }
        }
        let client_id = connect.client_id.clone();
        let topic = format!("devices/p2p/{}", id.mac_underscored);
        let conn = shard.broker().borrow_mut().connect_service(now, *connect);
        let device = device_key(conn);
        if let Devices::Builtin { topics } = &mut *self.devices.borrow_mut() {
            topics.insert(device, topic);
        }
        self.gateway.borrow_mut().device_connected(
            now,
            device,
            id,
            &client_id,
            peer.map(|p| p.ip().to_string()),
        );
        self.run_actions(shard);
        Ok((conn, max))
    }

    fn on_events(&self, shard: &Shard, events: Vec<ServiceEvent>) {
        let now = Instant::now();
        for event in events {
            match event {
                ServiceEvent::Published { conn, payload, .. } => {
                    self.gateway.borrow_mut().device_message(
                        now,
                        SystemTime::now(),
                        device_key(conn),
                        &payload,
                    );
                }
                ServiceEvent::Closed { conn, .. } => {
                    let device = device_key(conn);
                    if let Devices::Builtin { topics } = &mut *self.devices.borrow_mut() {
                        topics.remove(&device);
                    }
                    self.gateway.borrow_mut().device_gone(now, device);
                }
            }
        }
        self.run_actions(shard);
    }

    fn on_remote(&self, shard: &Shard, from: ShardId, msg: VoiceMsg) {
        let now = Instant::now();
        match msg {
            VoiceMsg::Datagram { from: addr, data } => {
                self.gateway.borrow_mut().counters_mut().udp_forwarded += 1;
                if let Some(tx) = self.forwarded.get() {
                    // Full: this shard is behind on audio already; dropping
                    // a datagram is what the network would do.
                    let _ = tx.try_send((addr, data));
                }
            }
            VoiceMsg::Mcp {
                token,
                client_id,
                payload,
            } => {
                let local = self.token();
                self.mcp
                    .borrow_mut()
                    .insert(local, McpOrigin::Remote { shard: from, token });
                self.gateway
                    .borrow_mut()
                    .mcp_request(now, &client_id, &payload, local);
            }
            VoiceMsg::McpDone { token, result } => {
                if let Some(McpOrigin::Local(slot)) = self.mcp.borrow_mut().remove(&token) {
                    slot.fill(result);
                }
            }
            VoiceMsg::Status { token, client_ids } => {
                let statuses = self.statuses_of(client_ids);
                shard.send_service::<VoiceService>(from, VoiceMsg::StatusDone { token, statuses });
            }
            VoiceMsg::StatusDone { token, statuses } => {
                let mut pending = self.statuses.borrow_mut();
                if let Some(p) = pending.get_mut(&token) {
                    p.collected.extend(statuses);
                    p.missing -= 1;
                    if p.missing == 0 {
                        let p = pending.remove(&token).expect("present");
                        p.slot.fill(p.collected);
                    }
                }
            }
            VoiceMsg::Counters(c) => {
                if let Some(slot) = self
                    .shard_counters
                    .borrow_mut()
                    .get_mut(usize::from(from.0))
                {
                    *slot = c;
                }
            }
        }
        self.run_actions(shard);
    }

    fn routes(self: Rc<Self>, shard: Rc<Shard>) -> Vec<Route> {
        crate::voice::routes::routes(&self, &shard, &self.config)
    }

    fn metrics(&self, out: &mut String) {
        out.push_str(&self.metrics_text());
    }

    fn tick(&self, shard: &Shard, now: Instant) {
        self.gateway.borrow_mut().tick(now);
        if self.shard != ShardId(0) {
            let counters = self.gateway.borrow().counters();
            shard.send_service::<VoiceService>(ShardId(0), VoiceMsg::Counters(counters));
        }
        self.run_actions(shard);
    }
}

/// A status request of the management API: answers so far, shards missing.
struct PendingStatus {
    slot: Rc<Slot<Vec<(String, DeviceStatus)>>>,
    collected: Vec<(String, DeviceStatus)>,
    missing: usize,
}

/// A value a task waits for, filled by another task of the same shard.
pub(crate) struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        }
    }
}

impl<T> Slot<T> {
    pub(crate) fn fill(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) async fn wait(&self) -> T {
        std::future::poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
