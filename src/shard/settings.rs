//! What the shell needs to know to run: the shard count, listeners and the
//! broker's limits. `config` builds it from the whole configuration; no
//! shard sees more than this.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::mqtt::session::SessionLimits;

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
    /// Time for a new socket to send its CONNECT.
    pub connect_timeout: Duration,
    pub limits: SessionLimits,
    /// `$SYS` publication period; `None` publishes none.
    pub sys_interval: Option<Duration>,
    /// The HTTP listener of shard 0: services' routes and `/metrics`.
    pub http_listen: Option<SocketAddr>,
    /// Users, ACL and the failure budget; the files it names are read by
    /// `shard::reload`, never by a shard.
    pub auth: AuthConfig,
}
