//! One shard's voice gateway machine: devices, their conversations, and
//! the audio path between a device's UDP packets and its backend
//! WebSocket (`protocols/xiaozhi.md` §4–§7).
//!
//! Sans-IO like the broker: the shell reports what happened (a device
//! connected or published, a backend answered, a datagram arrived, time
//! passed) and carries out the `Action`s it polls. Devices are named by an
//! opaque `DeviceKey` the shell chooses: a broker connection, or a topic in
//! external broker mode. The audio calls (`udp_in`, `backend_audio`) answer
//! directly instead of queueing actions: they are the hot path, and they
//! work in place on the shell's buffer.
//!
//! Deterministic: conversation keys, conn ids and the backend pick come
//! from an RNG seeded by the caller (`Gateway::new`), and the wall clock
//! (for backend tokens) is passed in with each device message, so a test
//! or a fuzz run replays exactly.
//!
//! # Lifecycle
//! 1. A device hello opens a conversation: a fresh key, a UDP conn id that
//!    steers its datagrams to this shard, and a backend WebSocket
//!    (`Action::OpenBackend`). The device's reply waits for the backend's
//!    hello, whose `session_id` and `audio_params` it carries.
//! 2. A repeated hello replaces the conversation; goodbye from either side,
//!    the backend going away, the device disconnecting, or silence for
//!    `idle_timeout` ends it.
//! 3. Datagrams are accepted only for an open conversation, from the
//!    address of its first valid packet, with increasing sequences
//!    (`audio::AudioChannel`).

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::voice::audio::AudioChannel;
use crate::voice::control::{self, Control};
use crate::voice::identity::{self, DeviceId};
use crate::voice::metrics::BackendTlsFailure;
use crate::voice::packet::{self, DropReason, HEADER_LEN};

/// A device, as the shell names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey(pub u64);

/// Backend frames kept for a device whose address is not known yet (it
/// learns ours from the hello, we learn its from its first packet): about
/// 4 s of 60 ms frames, so a greeting spoken right after the hello is not
/// lost.
const PENDING_FRAMES_MAX: usize = 64;

/// First id of the MCP requests the gateway sends (as the reference
/// gateway does, clear of the ids backends use).
const MCP_FIRST_ID: u64 = 10_000;

/// MCP requests of the management API wait this long for the device.
pub const MCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the machine.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This shard and the count, to choose conn ids that steer here.
    pub shard: u32,
    pub shards: u32,
    pub public_host: String,
    pub public_port: u16,
    pub chat_servers: Vec<String>,
    pub dev_chat_servers: Vec<String>,
    /// MACs (`aa:bb:..`, lower case) served by `dev_chat_servers`.
    pub dev_macs: Vec<String>,
    pub backend_token: String,
    pub backend_secret: String,
    pub hello_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send JSON to the device on its reply topic.
    ToDevice { device: DeviceKey, payload: Bytes },
    /// The device broke the protocol: close its connection.
    CloseDevice { device: DeviceKey },
    /// Open the backend WebSocket of a conversation and send `hello` first.
    OpenBackend {
        conv: u32,
        url: String,
        headers: Vec<(&'static str, String)>,
        hello: String,
    },
    /// A text frame for the backend (after the hello, in order).
    BackendText { conv: u32, text: String },
    /// Close the backend WebSocket; the conversation is already gone.
    CloseBackend { conv: u32 },
    /// The outcome of `mcp_request` number `token`.
    McpDone {
        token: u64,
        result: Result<Value, String>,
    },
}

/// Counters of one shard, summed over shards for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoiceCounters {
    pub devices: u64,
    pub conversations: u64,
    pub conversations_opened: u64,
    pub hello_errors: u64,
    pub backend_failures: u64,
    /// `wss://` handshakes that failed, indexed like `BackendTlsFailure::ALL`.
    pub backend_tls_failures: [u64; BackendTlsFailure::ALL.len()],
    /// Backend host names that did not resolve.
    pub backend_resolve_failures: u64,
    pub udp_in: u64,
    pub udp_out: u64,
    /// Datagrams that landed on another shard's socket and came over the mesh.
    pub udp_forwarded: u64,
    /// Indexed like `DropReason::ALL`.
    pub udp_dropped: [u64; DropReason::ALL.len()],
    /// Backend frames that could not be sent (too large, no device address).
    pub audio_out_dropped: u64,
    /// Replies for the external broker dropped while its outbox was full.
    pub external_out_dropped: u64,
}

impl VoiceCounters {
    pub fn add(&mut self, other: &VoiceCounters) {
        self.devices += other.devices;
        self.conversations += other.conversations;
        self.conversations_opened += other.conversations_opened;
        self.hello_errors += other.hello_errors;
        self.backend_failures += other.backend_failures;
        for (a, b) in self
            .backend_tls_failures
            .iter_mut()
            .zip(other.backend_tls_failures)
        {
            *a += b;
        }
        self.backend_resolve_failures += other.backend_resolve_failures;
        self.udp_in += other.udp_in;
        self.udp_out += other.udp_out;
        self.udp_forwarded += other.udp_forwarded;
        for (a, b) in self.udp_dropped.iter_mut().zip(other.udp_dropped) {
            *a += b;
        }
        self.audio_out_dropped += other.audio_out_dropped;
        self.external_out_dropped += other.external_out_dropped;
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.udp_dropped[i] += 1;
        }
    }
}

/// Status of a device for the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    /// The device is connected on this shard.
    pub exists: bool,
    /// Its connection is up (the same as `exists`: a connection whose
    /// keepalive lapsed is closed, and then no longer exists).
    pub is_alive: bool,
}

/// What became of a backend audio frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// `frame[..len]` is now a sealed datagram for `to`.
    Send { to: SocketAddr, len: usize },
    /// Kept until the device's address is known.
    Held,
    /// Dropped and counted.
    Dropped,
}

/// A datagram accepted by `udp_in`: the buffer now holds the backend frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming {
    pub conv: u32,
    /// Held frames that can go now that the device's address is known.
    pub released: Vec<BytesMut>,
}

struct Device {
    id: DeviceId,
    client_id: String,
    /// Address of the device's MQTT connection, for `x-forwarded-for`.
    peer_ip: Option<String>,
    conv: Option<u32>,
}

enum Phase {
    /// Waiting for the backend's hello until the deadline.
    Opening {
        deadline: Instant,
        audio_params: Value,
    },
    Open {
        session_id: String,
    },
}

struct Conversation {
    device: DeviceKey,
    audio: AudioChannel,
    phase: Phase,
    last_activity: Instant,
    held: VecDeque<BytesMut>,
}

struct McpWaiter {
    device: DeviceKey,
    token: u64,
    deadline: Instant,
}

/// The machine. See the module docs.
pub struct Gateway {
    config: GatewayConfig,
    devices: HashMap<DeviceKey, Device>,
    by_client_id: HashMap<String, DeviceKey>,
    convs: HashMap<u32, Conversation>,
    mcp: HashMap<u64, McpWaiter>,
    next_mcp_id: u64,
    actions: VecDeque<Action>,
    counters: VoiceCounters,
    rng: StdRng,
}

impl Gateway {
    /// A machine whose random draws all come from `rng_seed`: the shell
    /// seeds it from the OS, tests and fuzzing with a fixed value.
    pub fn new(config: GatewayConfig, rng_seed: [u8; 32]) -> Gateway {
        Gateway {
            config,
            devices: HashMap::new(),
            by_client_id: HashMap::new(),
            convs: HashMap::new(),
            mcp: HashMap::new(),
            next_mcp_id: MCP_FIRST_ID,
            actions: VecDeque::new(),
            counters: VoiceCounters::default(),
            rng: StdRng::from_seed(rng_seed),
        }
    }

    pub fn counters(&self) -> VoiceCounters {
        let mut c = self.counters;
        c.devices = self.devices.len() as u64;
        c.conversations = self.convs.len() as u64;
        c
    }

    pub fn counters_mut(&mut self) -> &mut VoiceCounters {
        &mut self.counters
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- devices ------------------------------------------------------------

    /// A device is online (its MQTT connection is accepted). A device of the
    /// same client id on another key is replaced.
    pub fn device_connected(
        &mut self,
        now: Instant,
        device: DeviceKey,
        id: DeviceId,
        client_id: &str,
        peer_ip: Option<String>,
    ) {
        if let Some(old) = self.by_client_id.get(client_id).copied() {
            self.device_gone(now, old);
        }
        self.by_client_id.insert(client_id.to_string(), device);
        self.devices.insert(
            device,
            Device {
                id,
                client_id: client_id.to_string(),
                peer_ip,
                conv: None,
            },
        );
    }

    /// The device's connection ended: its conversation and requests end.
    pub fn device_gone(&mut self, now: Instant, device: DeviceKey) {
        let _ = now;
        let Some(d) = self.devices.remove(&device) else {
            return;
        };
        if self.by_client_id.get(&d.client_id) == Some(&device) {
            self.by_client_id.remove(&d.client_id);
        }
        if let Some(conv) = d.conv {
            self.end_conversation(conv, false);
        }
        let waiting: Vec<u64> = self
            .mcp
            .iter()
            .filter(|(_, w)| w.device == device)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(w) = self.mcp.remove(&id) {
                self.actions.push_back(Action::McpDone {
                    token: w.token,
                    result: Err("device disconnected".to_string()),
                });
            }
        }
    }

    pub fn is_device(&self, device: DeviceKey) -> bool {
        self.devices.contains_key(&device)
    }

    pub fn status(&self, client_id: &str) -> DeviceStatus {
        let exists = self.by_client_id.contains_key(client_id);
        DeviceStatus {
            exists,
            is_alive: exists,
        }
    }

    /// A control message the device published; `wall` is the current Unix
    /// time, which signs a backend token when the message opens a
    /// conversation.
    pub fn device_message(
        &mut self,
        now: Instant,
        wall: SystemTime,
        device: DeviceKey,
        payload: &[u8],
    ) {
        if !self.devices.contains_key(&device) {
            return;
        }
        let Ok(msg) = Control::parse(payload) else {
            // The reference gateway closes on a payload that is not JSON.
            tracing::debug!(?device, "device message is not JSON control");
            self.actions.push_back(Action::CloseDevice { device });
            return;
        };
        let conv = self.devices.get(&device).and_then(|d| d.conv);
        if let Some(c) = conv.and_then(|c| self.convs.get_mut(&c)) {
            c.last_activity = now;
        }
        match msg.kind.as_str() {
            "hello" => self.hello(now, wall, device, &msg),
            "goodbye" | "udp_timeout" => {
                if let Some(conv) = conv {
                    self.end_conversation(conv, true);
                }
            }
            "mcp" => {
                if let Some((id, result)) = control::mcp_response(&msg) {
                    if self.mcp.get(&id).is_some_and(|w| w.device == device) {
                        let w = self.mcp.remove(&id).expect("checked");
                        self.actions.push_back(Action::McpDone {
                            token: w.token,
                            result,
                        });
                        return;
                    }
                }
                self.forward_to_backend(device, conv, &msg, payload);
            }
            _ => self.forward_to_backend(device, conv, &msg, payload),
        }
    }

    fn forward_to_backend(
        &mut self,
        device: DeviceKey,
        conv: Option<u32>,
        msg: &Control,
        payload: &[u8],
    ) {
        match conv {
            Some(conv) => {
                // Checked as UTF-8 by the JSON parse.
                let text = String::from_utf8_lossy(payload).into_owned();
                self.actions.push_back(Action::BackendText { conv, text });
            }
            None => {
                // No conversation to take it: tell the device it has none,
                // as the reference gateway does.
                let bye = control::goodbye(msg.session_id.as_deref());
                self.send_device(device, bye);
            }
        }
    }

    fn hello(&mut self, now: Instant, wall: SystemTime, device: DeviceKey, msg: &Control) {
        let (audio_params, features) = match control::device_hello(msg) {
            Ok(p) => p,
            Err(e) => {
                self.counters.hello_errors += 1;
                self.send_device(device, control::error(&e.to_string()));
                return;
            }
        };
        if let Some(old) = self.devices.get(&device).and_then(|d| d.conv) {
            self.end_conversation(old, false);
        }
        // The draw order (conn id, key, backend) is part of the contract
        // with the seed: tests name the values a seed gives.
        let conv = self.new_conn_id();
        let key: [u8; 16] = self.rng.gen();
        let Some(d) = self.devices.get_mut(&device) else {
            return;
        };
        d.conv = Some(conv);
        let url = pick_backend(&self.config, &mut self.rng, &d.id.mac);
        let headers = backend_headers(&self.config, d, unix_seconds(wall));
        self.convs.insert(
            conv,
            Conversation {
                device,
                audio: AudioChannel::new(key, conv),
                phase: Phase::Opening {
                    deadline: now + self.config.hello_timeout,
                    audio_params: audio_params.clone(),
                },
                last_activity: now,
                held: VecDeque::new(),
            },
        );
        self.counters.conversations_opened += 1;
        self.actions.push_back(Action::OpenBackend {
            conv,
            url,
            headers,
            hello: control::backend_hello(&audio_params, &features),
        });
    }

    /// A conn id unused on this shard that steers to it; never 0.
    fn new_conn_id(&mut self) -> u32 {
        loop {
            let id =
                packet::conn_id_for_shard(self.config.shard, self.config.shards, self.rng.gen());
            if id != 0 && !self.convs.contains_key(&id) {
                return id;
            }
        }
    }

    fn send_device(&mut self, device: DeviceKey, json: String) {
        self.actions.push_back(Action::ToDevice {
            device,
            payload: Bytes::from(json),
        });
    }

    /// Ends a conversation: the backend is closed, and the device is told
    /// unless it is gone or replaced (it ignores a goodbye of a session it
    /// no longer has).
    fn end_conversation(&mut self, conv: u32, tell_device: bool) {
        let Some(c) = self.convs.remove(&conv) else {
            return;
        };
        if let Some(d) = self.devices.get_mut(&c.device) {
            if d.conv == Some(conv) {
                d.conv = None;
            }
        }
        self.actions.push_back(Action::CloseBackend { conv });
        if tell_device && self.devices.contains_key(&c.device) {
            let bye = match &c.phase {
                Phase::Open { session_id } => control::goodbye(Some(session_id)),
                Phase::Opening { .. } => control::error("chat backend unavailable"),
            };
            self.send_device(c.device, bye);
        }
    }

    // ----- backend --------------------------------------------------------------

    /// A text frame from the backend.
    pub fn backend_text(&mut self, now: Instant, conv: u32, text: &str) {
        let Some(c) = self.convs.get_mut(&conv) else {
            return;
        };
        c.last_activity = now;
        let device = c.device;
        if let Phase::Opening { audio_params, .. } = &c.phase {
            if let Some(hello) = Control::parse(text.as_bytes())
                .ok()
                .filter(|m| m.kind == "hello")
            {
                let session_id = hello.session_id.unwrap_or_else(|| format!("{conv:08x}"));
                let audio = match hello.object.get("audio_params") {
                    Some(Value::Object(a)) if !a.is_empty() => Value::Object(a.clone()),
                    _ => audio_params.clone(),
                };
                let key = packet::hex16(c.audio.key_bytes());
                let nonce = packet::hex16(&c.audio.nonce());
                let reply = control::device_hello_reply(
                    &session_id,
                    &control::UdpOffer {
                        server: &self.config.public_host,
                        port: self.config.public_port,
                        key_hex: &key,
                        nonce_hex: &nonce,
                    },
                    &audio,
                );
                c.phase = Phase::Open { session_id };
                self.send_device(device, reply);
                return;
            }
        }
        self.actions.push_back(Action::ToDevice {
            device,
            payload: Bytes::copy_from_slice(text.as_bytes()),
        });
    }

    /// The backend WebSocket closed or could not be opened.
    pub fn backend_closed(&mut self, now: Instant, conv: u32) {
        let _ = now;
        if let Some(c) = self.convs.get(&conv) {
            if matches!(c.phase, Phase::Opening { .. }) {
                self.counters.backend_failures += 1;
            }
            self.end_conversation(conv, true);
        }
    }

    /// A binary frame from the backend (16-byte header, timestamp at 8,
    /// length at 12). Sealed in place into a datagram for the device.
    pub fn backend_audio(&mut self, now: Instant, conv: u32, frame: &mut BytesMut) -> Outgoing {
        let Some(c) = self.convs.get_mut(&conv) else {
            return Outgoing::Dropped;
        };
        c.last_activity = now;
        if c.audio.peer().is_none() {
            if c.held.len() < PENDING_FRAMES_MAX {
                c.held.push_back(std::mem::take(frame));
                return Outgoing::Held;
            }
            self.counters.audio_out_dropped += 1;
            return Outgoing::Dropped;
        }
        match seal_frame(&mut c.audio, frame) {
            Some(len) => {
                self.counters.udp_out += 1;
                Outgoing::Send {
                    to: c.audio.peer().expect("checked"),
                    len,
                }
            }
            None => {
                self.counters.audio_out_dropped += 1;
                Outgoing::Dropped
            }
        }
    }

    /// Seals a frame released by `udp_in`; see `backend_audio`.
    pub fn seal_released(
        &mut self,
        conv: u32,
        frame: &mut BytesMut,
    ) -> Option<(SocketAddr, usize)> {
        let c = self.convs.get_mut(&conv)?;
        let to = c.audio.peer()?;
        match seal_frame(&mut c.audio, frame) {
            Some(len) => {
                self.counters.udp_out += 1;
                Some((to, len))
            }
            None => {
                self.counters.audio_out_dropped += 1;
                None
            }
        }
    }

    // ----- UDP ---------------------------------------------------------------

    /// A datagram for a conversation of this shard. On success the buffer
    /// holds the backend frame for `Incoming::conv` (16-byte header with the
    /// timestamp at 8 and the length at 12, then the Opus payload); every
    /// drop is counted.
    pub fn udp_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Incoming, DropReason> {
        let result = self.accept_datagram(now, from, datagram);
        match &result {
            Ok(_) => self.counters.udp_in += 1,
            Err(reason) => self.counters.count_drop(*reason),
        }
        result
    }

    fn accept_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Incoming, DropReason> {
        let header = packet::Header::parse(datagram)?;
        let c = self
            .convs
            .get_mut(&header.conn_id)
            .ok_or(DropReason::UnknownConn)?;
        if !matches!(c.phase, Phase::Open { .. }) {
            return Err(DropReason::NoConversation);
        }
        let had_peer = c.audio.peer().is_some();
        let received = c.audio.receive(from, datagram)?;
        c.last_activity = now;
        to_backend_frame(datagram, received.timestamp, received.payload);
        let released = if had_peer {
            Vec::new()
        } else {
            c.held.drain(..).collect()
        };
        Ok(Incoming {
            conv: header.conn_id,
            released,
        })
    }

    // ----- management ------------------------------------------------------------

    /// Sends an MCP request to a device of this shard; the outcome comes
    /// back as `Action::McpDone { token, .. }`.
    pub fn mcp_request(&mut self, now: Instant, client_id: &str, payload: &Value, token: u64) {
        let Some(&device) = self.by_client_id.get(client_id) else {
            self.actions.push_back(Action::McpDone {
                token,
                result: Err("device not connected".to_string()),
            });
            return;
        };
        let id = self.next_mcp_id;
        self.next_mcp_id += 1;
        self.mcp.insert(
            id,
            McpWaiter {
                device,
                token,
                deadline: now + MCP_TIMEOUT,
            },
        );
        self.send_device(device, control::mcp_request(id, payload));
    }

    /// Timers: backend hello deadlines, idle conversations, MCP requests.
    pub fn tick(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        let expired: Vec<(u32, bool)> = self
            .convs
            .iter()
            .filter_map(|(id, c)| match c.phase {
                Phase::Opening { deadline, .. } if now >= deadline => Some((*id, true)),
                _ if now.duration_since(c.last_activity) >= idle => Some((*id, false)),
                _ => None,
            })
            .collect();
        for (conv, hello_timeout) in expired {
            if hello_timeout {
                tracing::debug!(conv, "backend hello timed out");
                self.counters.backend_failures += 1;
            }
            self.end_conversation(conv, true);
        }
        let late: Vec<u64> = self
            .mcp
            .iter()
            .filter(|(_, w)| now >= w.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.mcp.remove(&id) {
                self.actions.push_back(Action::McpDone {
                    token: w.token,
                    result: Err("device did not answer in time".to_string()),
                });
            }
        }
    }
}

/// Rewrites an accepted, decrypted datagram into the backend frame layout:
/// bytes 0..8 zero, timestamp at 8, payload length (u32) at 12.
fn to_backend_frame(datagram: &mut [u8], timestamp: u32, payload: Range<usize>) {
    let len = payload.len() as u32;
    debug_assert_eq!(payload.start, HEADER_LEN);
    if let Some(header) = datagram.get_mut(..HEADER_LEN) {
        header[..8].fill(0);
        header[8..12].copy_from_slice(&timestamp.to_be_bytes());
        header[12..16].copy_from_slice(&len.to_be_bytes());
    }
}

/// Seals a backend frame in place; `None` when it is malformed or too large
/// for one datagram.
fn seal_frame(audio: &mut AudioChannel, frame: &mut BytesMut) -> Option<usize> {
    let head = frame.get(..HEADER_LEN)?;
    let timestamp = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let len = u32::from_be_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let total = HEADER_LEN.checked_add(len)?;
    if total > frame.len() {
        return None;
    }
    audio
        .seal_in_place(timestamp, &mut frame[..total], len)
        .ok()?;
    Some(total)
}

fn pick_backend(config: &GatewayConfig, rng: &mut StdRng, mac: &str) -> String {
    let list = if !config.dev_chat_servers.is_empty() && config.dev_macs.iter().any(|m| m == mac) {
        &config.dev_chat_servers
    } else {
        &config.chat_servers
    };
    let i = rng.gen::<u32>() as usize % list.len().max(1);
    list.get(i).cloned().unwrap_or_default()
}

fn backend_headers(
    config: &GatewayConfig,
    d: &Device,
    now_unix: u64,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![("device-id", d.id.mac.clone())];
    if let Some(uuid) = &d.id.uuid {
        headers.push(("client-id", uuid.clone()));
    }
    headers.push(("protocol-version", "2".to_string()));
    let token = if config.backend_secret.is_empty() {
        config.backend_token.clone()
    } else {
        let client = d.id.uuid.as_deref().unwrap_or("default-client-id");
        identity::backend_token(
            config.backend_secret.as_bytes(),
            client,
            &d.id.mac,
            now_unix,
        )
    };
    headers.push(("authorization", format!("Bearer {token}")));
    if let Some(ip) = &d.peer_ip {
        headers.push(("x-forwarded-for", ip.clone()));
    }
    headers
}

fn unix_seconds(wall: SystemTime) -> u64 {
    wall.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
