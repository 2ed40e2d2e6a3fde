//! What the shell needs to know to run: the shard count, listeners and the
//! broker's limits. `config` builds it from the whole configuration; no
//! shard sees more than this.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::mqtt::session::SessionLimits;
use crate::transport::ServerConfigHolder;

#[derive(Debug, Clone)]
pub struct Settings {
    pub shards: usize,
    /// Pin shard i to core i (mod the core count).
    pub pin_cores: bool,
    /// The MQTT listener; `None` runs the shards without the broker's
    /// listener (external broker mode of a service).
    pub mqtt_listen: Option<SocketAddr>,
    /// Largest packet a client may send (not service connections, which
    /// set their own).
    pub max_packet_size: usize,
    /// The same on the TLS listener.
    pub tls_max_packet_size: usize,
    /// The same on the WebSocket listeners (`ws` and `wss`), where it also
    /// bounds a frame.
    pub websocket_max_packet_size: usize,
    /// Expect a PROXY protocol header before the CONNECT on `mqtt_listen`.
    pub mqtt_proxy_protocol: bool,
    /// Time for a new socket to send its CONNECT (after its TLS handshake
    /// on the TLS listener).
    pub connect_timeout: Duration,
    /// The MQTT-over-TLS listener.
    pub tls: Option<TlsListener>,
    pub limits: SessionLimits,
    /// Retained messages: count and bytes.
    pub retained: crate::mqtt::retained::RetainedLimits,
    /// Bytes queued over all sessions of the broker (each shard gets its
    /// share); 0 is no limit.
    pub max_queued_bytes_total: usize,
    /// Messages queued over all sessions of the broker, likewise.
    pub max_queued_messages_total: usize,
    /// Sockets in total, connections and CONNECTs per second per address.
    pub connection_limits: super::limits::ConnectionLimits,
    /// `$SYS` publication period; `None` publishes none.
    pub sys_interval: Option<Duration>,
    /// How a shared subscription's member is chosen.
    pub share_strategy: crate::mqtt::broker::ShareStrategy,
    /// The HTTP listener of shard 0: services' routes and `/metrics`.
    pub http_listen: Option<SocketAddr>,
    /// The MQTT-over-WebSocket listener; `None` runs none.
    pub websocket: Option<crate::transport::ws::config::WsSettings>,
    /// Users, ACL and the failure budget; the files it names are read by
    /// `shard::reload`, never by a shard.
    pub auth: AuthConfig,
    /// The shards' stores; `None` keeps sessions and retained messages in
    /// memory only.
    pub persistence: Option<super::store::PersistenceSettings>,
    /// Persistent sessions offline longer than this end; `None`: never.
    pub session_expiry: Option<Duration>,
}

/// The TLS listener of every shard.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// The rustls configuration, swapped whole by a reload.
    pub config: ServerConfigHolder,
    /// Time for the PROXY header (if any) and the handshake; the CONNECT
    /// deadline starts after it.
    pub handshake_timeout: Duration,
    pub proxy_protocol: bool,
    /// The client certificate's identity replaces the CONNECT's user name.
    pub use_identity_as_username: bool,
}
