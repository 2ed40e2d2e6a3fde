//! Configuration: a TOML file where every key is optional, over embedded
//! defaults, with command-line overrides applied last.
//!
//! Units are part of key names (`_s`, `_bytes`), so a file reads unambiguously.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::config::AuthConfig;
pub use crate::presence::config::PresenceConfig;
pub use crate::relay::config::RelayConfig;
pub use crate::shard::store::PersistenceConfig;
pub use crate::sn::config::SnConfig;
pub use crate::transport::ws::config::WebsocketConfig;
pub use crate::transport::TlsConfig;
pub use crate::voice::config::{ExternalBrokerConfig, Steering, VoiceConfig};

/// Why the configuration cannot be used. One line each, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub voice: VoiceConfig,
    pub relay: RelayConfig,
    pub presence: PresenceConfig,
    pub mqtt_sn: SnConfig,
    pub websocket: WebsocketConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub persistence: PersistenceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `"auto"` (one shard per available core) or a number.
    pub shards: Shards,
    /// Pin each shard's thread to a core (shard i on core i mod cores).
    pub pin_cores: bool,
    /// Log filter, as `RUST_LOG` would take it: `info`, `warn`, `shardmq=debug`.
    /// SIGHUP reads it again.
    pub log: String,
    /// On SIGTERM, how long the drain (flush and close every connection)
    /// may take before the process exits anyway.
    pub shutdown_timeout_s: u64,
    /// Publish the wills of the clients still connected when the server
    /// stops cleanly (see `mqtt::broker::shutdown` for why the default is
    /// not to).
    pub will_on_shutdown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Shards {
    Auto(AutoWord),
    Count(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Run the built-in broker. Off only in external broker mode, where the
    /// voice gateway is a client of another broker.
    pub enabled: bool,
    /// The MQTT-over-TCP listener.
    pub listen: SocketAddr,
    /// Largest packet accepted (fixed header included); checked from the fixed
    /// header, before the body is buffered.
    pub max_packet_size: usize,
    /// `max_packet_size` on the TLS listener; 0 takes `max_packet_size`.
    pub tls_max_packet_size: usize,
    /// `max_packet_size` on the WebSocket listeners (it bounds a frame too);
    /// 0 takes `max_packet_size`.
    pub websocket_max_packet_size: usize,
    /// Time a new socket has to deliver a complete CONNECT.
    pub connect_timeout_s: u64,
    /// Outgoing QoS 1/2 messages in flight per client before queueing.
    pub max_inflight: u16,
    /// Messages queued per session (offline, or beyond the inflight window);
    /// newer messages are dropped, and counted, beyond it.
    pub max_queued_messages: usize,
    /// Bytes (topic names and payloads) queued per session; 0 is no limit.
    /// Newer messages are dropped, and counted, beyond it.
    pub max_queued_bytes: usize,
    /// Bytes queued over every session of the broker; 0 is no limit. Each
    /// shard holds its share (the value divided by the shard count).
    pub max_queued_bytes_total: usize,
    /// Messages queued over every session of the broker; 0 is no limit.
    /// Each shard holds its share, as for `max_queued_bytes_total`.
    pub max_queued_messages_total: usize,
    /// Queue QoS 0 messages for offline persistent sessions too.
    pub queue_qos0_offline: bool,
    /// Bytes buffered for a connection's socket before QoS 0 deliveries to it
    /// are dropped (a subscriber that stops reading must not grow memory).
    pub max_outbox_bytes: usize,
    /// Filters one client may hold; 0 is no limit. A SUBSCRIBE filter
    /// beyond it is answered 0x80 and counted.
    pub max_subscriptions_per_client: usize,
    /// Inbound QoS 2 messages one client may leave awaiting PUBREL; 0 is
    /// no limit. A new QoS 2 PUBLISH beyond it closes the connection.
    pub max_awaiting_pubrel: usize,
    /// Sockets open at once, every listener together; 0 is no limit. One
    /// beyond it is closed at accept.
    pub max_connections: usize,
    /// Connections from one source address on one shard; 0 is no limit.
    /// One beyond it gets CONNACK 3.
    pub max_connections_per_address: usize,
    /// New connections per second from one source address on one shard,
    /// checked at accept; 0 is no limit. One beyond it is closed at once.
    pub connect_rate_per_address: u32,
    /// Connections one address may open at once before its rate applies.
    pub connect_burst_per_address: u32,
    /// Retained messages (every topic); 0 is no limit. A retained PUBLISH
    /// on a new topic beyond it is delivered but not retained.
    pub max_retained_messages: usize,
    /// Bytes of retained topic names and payloads; 0 is no limit.
    pub max_retained_bytes: usize,
    /// Period of the `$SYS/broker/...` publications; 0 turns them off.
    pub sys_interval_s: u64,
    /// Expect a PROXY protocol header (v1 or v2) before the CONNECT; a
    /// connection without a valid one is closed.
    pub proxy_protocol: bool,
    /// How a `$share/<group>/<filter>` subscription's member is chosen per
    /// message: `round_robin`, `random`, `hash_clientid` (the publisher's),
    /// `hash_topic`.
    pub shared_subscription_strategy: ShareStrategyWord,
}

/// `[mqtt] shared_subscription_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ShareStrategyWord {
    #[default]
    #[serde(rename = "round_robin")]
    RoundRobin,
    #[serde(rename = "random")]
    Random,
    #[serde(rename = "hash_clientid")]
    HashClientId,
    #[serde(rename = "hash_topic")]
    HashTopic,
}

impl ShareStrategyWord {
    fn strategy(self) -> crate::mqtt::broker::ShareStrategy {
        use crate::mqtt::broker::ShareStrategy as S;
        match self {
            ShareStrategyWord::RoundRobin => S::RoundRobin,
            ShareStrategyWord::Random => S::Random,
            ShareStrategyWord::HashClientId => S::HashClientId,
            ShareStrategyWord::HashTopic => S::HashTopic,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shards: Shards::Auto(AutoWord::Auto),
            pin_cores: true,
            log: "info".to_string(),
            shutdown_timeout_s: 10,
            will_on_shutdown: true,
        }
    }
}

impl MqttConfig {
    /// A listener's packet size: its own, or `max_packet_size` for 0.
    fn packet_size_or_default(&self, size: usize) -> usize {
        if size == 0 {
            self.max_packet_size
        } else {
            size
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            max_packet_size: 1 << 20,
            tls_max_packet_size: 0,
            websocket_max_packet_size: 0,
            connect_timeout_s: 10,
            max_inflight: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            max_queued_bytes_total: 1 << 30,
            max_queued_messages_total: 1_000_000,
            queue_qos0_offline: false,
            max_outbox_bytes: 1 << 20,
            max_subscriptions_per_client: 1000,
            max_awaiting_pubrel: 1000,
            max_connections: 0,
            max_connections_per_address: 0,
            connect_rate_per_address: 0,
            connect_burst_per_address: 10,
            max_retained_messages: 100_000,
            max_retained_bytes: 64 << 20,
            sys_interval_s: 10,
            proxy_protocol: false,
            shared_subscription_strategy: ShareStrategyWord::RoundRobin,
        }
    }
}

/// The local HTTP listener: OTA provisioning, the management API, metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port`; empty turns the listener off. Runs on shard 0.
    pub listen: String,
}

impl HttpConfig {
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// The most shards a deployment may run: shard sets are `u64` bitmaps.
pub const SHARDS_MAX: usize = 64;

impl Config {
    /// Reads `path` over the embedded defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: String::new(),
            message: e.message().to_string(),
        })?;
        Ok(config)
    }

    /// Checks relations that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let shards = self.shard_count();
        if shards == 0 || shards > SHARDS_MAX {
            return Err(ConfigError::Invalid {
                key: "server.shards",
                message: format!("{shards} is not within 1..={SHARDS_MAX}"),
            });
        }
        // Below 5 bytes not even a PINGREQ fits with its length check.
        let sizes = [
            ("mqtt.max_packet_size", self.mqtt.max_packet_size),
            (
                "mqtt.tls_max_packet_size",
                self.mqtt
                    .packet_size_or_default(self.mqtt.tls_max_packet_size),
            ),
            (
                "mqtt.websocket_max_packet_size",
                self.mqtt
                    .packet_size_or_default(self.mqtt.websocket_max_packet_size),
            ),
        ];
        for (key, size) in sizes {
            if !(5..=268_435_460).contains(&size) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be within 5..=268435460 bytes".to_string(),
                });
            }
        }
        if self.mqtt.max_inflight == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.max_inflight",
                message: "must be at least 1".to_string(),
            });
        }
        if !self.http.listen.is_empty() && self.http.listen_addr().is_none() {
            return Err(ConfigError::Invalid {
                key: "http.listen",
                message: format!("{:?} is not host:port", self.http.listen),
            });
        }
        let external_only = self.voice.enabled && self.voice.external_broker.enabled()
            || self.relay.enabled && self.relay.external_broker.enabled()
            || self.presence.enabled && self.presence.external_broker.enabled();
        if !(self.mqtt.enabled || external_only) {
            return Err(ConfigError::Invalid {
                key: "mqtt.enabled",
                message: "the broker may be off only in external broker mode".to_string(),
            });
        }
        if self.relay.enabled {
            self.relay.validate().map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?;
            if !self.mqtt.enabled && !self.relay.external_broker.enabled() {
                return Err(ConfigError::Invalid {
                    key: "relay.external_broker.address",
                    message: "the relay needs the built-in broker or an external one".to_string(),
                });
            }
        }
        if self.presence.enabled {
            self.presence.validate().map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?;
            if !self.mqtt.enabled && !self.presence.external_broker.enabled() {
                return Err(ConfigError::Invalid {
                    key: "presence.external_broker.address",
                    message: "presence needs the built-in broker or an external one".to_string(),
                });
            }
        }
        if self.voice.enabled {
            self.voice.validate().map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?;
        }
        if self.mqtt_sn.enabled {
            self.mqtt_sn.validate().map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?;
            if !self.mqtt.enabled {
                return Err(ConfigError::Invalid {
                    key: "mqtt_sn.enabled",
                    message: "the MQTT-SN gateway needs the built-in broker".to_string(),
                });
            }
        }
        if self.websocket.enabled {
            if !self.mqtt.enabled {
                return Err(ConfigError::Invalid {
                    key: "websocket.enabled",
                    message: "MQTT over WebSocket needs the built-in broker".to_string(),
                });
            }
            let wss = self.tls.enabled() && self.websocket.wss;
            let mut taken = vec![self.mqtt.listen];
            taken.extend(self.http.listen_addr());
            if self.tls.enabled() {
                taken.push(self.tls.listen);
            }
            let mut ours = vec![("websocket.listen", self.websocket.listen)];
            if wss {
                ours.push(("websocket.tls_listen", self.websocket.tls_listen));
            }
            for (i, &(key, addr)) in ours.iter().enumerate() {
                let others = taken.iter().chain(ours.iter().take(i).map(|(_, a)| a));
                // SO_REUSEPORT would let the listeners share the port silently.
                if addr.port() != 0 && others.into_iter().any(|&other| other == addr) {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!("{addr} is already another listener"),
                    });
                }
            }
            self.websocket
                .validate()
                .map_err(|e| ConfigError::Invalid {
                    key: e.key,
                    message: e.message,
                })?;
        }
        self.tls.validate().map_err(|e| match e {
            crate::transport::TlsError::Invalid { key, message } => {
                ConfigError::Invalid { key, message }
            }
            other => ConfigError::Invalid {
                key: "tls",
                message: other.to_string(),
            },
        })?;
        self.auth.validate().map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })?;
        self.persistence
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        if self.mqtt.connect_timeout_s == 0 {
            return Err(ConfigError::Invalid {
                key: "mqtt.connect_timeout_s",
                message: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }

    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            Shards::Count(n) => n,
            Shards::Auto(_) => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(SHARDS_MAX),
        }
    }

    /// Whether devices of the voice gateway connect to the built-in broker.
    pub fn voice_on_builtin_broker(&self) -> bool {
        self.voice.enabled && !self.voice.external_broker.enabled()
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_s)
    }

    /// What a reload (SIGHUP) makes of `new`, the file read again, with
    /// `self` in force: the configuration in force after it, and the
    /// sections where `new` differs in settings that take effect only after
    /// a restart. Reloaded: the log filter, the users and ACL, the TLS
    /// certificates (while the TLS listener stays on), and the shutdown
    /// settings; everything else stays as it was.
    pub fn reloaded(&self, new: &Config) -> (Config, Vec<&'static str>) {
        let mut kept = self.clone();
        kept.server.log.clone_from(&new.server.log);
        kept.server.shutdown_timeout_s = new.server.shutdown_timeout_s;
        kept.server.will_on_shutdown = new.server.will_on_shutdown;
        kept.auth.password_file.clone_from(&new.auth.password_file);
        kept.auth.acl_file.clone_from(&new.auth.acl_file);
        kept.auth.allow_anonymous = new.auth.allow_anonymous;
        kept.auth.acl_default = new.auth.acl_default;
        if self.tls.enabled() && new.tls.enabled() {
            // New connections get the new certificate set; turning the
            // listener on or off is a restart.
            kept.tls.cert_file.clone_from(&new.tls.cert_file);
            kept.tls.key_file.clone_from(&new.tls.key_file);
            kept.tls.ca_file.clone_from(&new.tls.ca_file);
            kept.tls.client_certs = new.tls.client_certs;
            kept.tls.tls13_only = new.tls.tls13_only;
        }
        // A section's Debug form shows every field: comparing it spares
        // each section a PartialEq kept in step with its fields.
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let sections: [(&'static str, bool); 11] = [
            ("server", differs(&kept.server, &new.server)),
            ("mqtt", differs(&kept.mqtt, &new.mqtt)),
            ("http", differs(&kept.http, &new.http)),
            ("voice", differs(&kept.voice, &new.voice)),
            ("websocket", differs(&kept.websocket, &new.websocket)),
            ("tls", differs(&kept.tls, &new.tls)),
            ("auth", differs(&kept.auth, &new.auth)),
            ("persistence", differs(&kept.persistence, &new.persistence)),
            ("relay", differs(&kept.relay, &new.relay)),
            ("presence", differs(&kept.presence, &new.presence)),
            ("mqtt_sn", differs(&kept.mqtt_sn, &new.mqtt_sn)),
        ];
        let restart = sections
            .into_iter()
            .filter(|&(_, changed)| changed)
            .map(|(name, _)| name)
            .collect();
        (kept, restart)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.mqtt.connect_timeout_s)
    }

    /// The part of the configuration the shard shell runs on.
    pub fn shard_settings(&self) -> crate::shard::Settings {
        let mqtt = &self.mqtt;
        crate::shard::Settings {
            shards: self.shard_count(),
            pin_cores: self.server.pin_cores,
            mqtt_listen: mqtt.enabled.then_some(mqtt.listen),
            max_packet_size: mqtt.max_packet_size,
            tls_max_packet_size: mqtt.packet_size_or_default(mqtt.tls_max_packet_size),
            websocket_max_packet_size: mqtt.packet_size_or_default(mqtt.websocket_max_packet_size),
            mqtt_proxy_protocol: mqtt.proxy_protocol,
            connect_timeout: self.connect_timeout(),
            tls: None,
            limits: crate::mqtt::session::SessionLimits {
                max_inflight: mqtt.max_inflight,
                max_queued_messages: mqtt.max_queued_messages,
                queue_qos0_offline: mqtt.queue_qos0_offline,
                max_outbox_bytes: mqtt.max_outbox_bytes,
                max_subscriptions: mqtt.max_subscriptions_per_client,
                max_awaiting_pubrel: mqtt.max_awaiting_pubrel,
                max_queued_bytes: mqtt.max_queued_bytes,
            },
            retained: crate::mqtt::retained::RetainedLimits {
                max_messages: mqtt.max_retained_messages,
                max_bytes: mqtt.max_retained_bytes,
            },
            max_queued_bytes_total: mqtt.max_queued_bytes_total,
            max_queued_messages_total: mqtt.max_queued_messages_total,
            connection_limits: crate::shard::ConnectionLimits {
                max_connections: mqtt.max_connections,
                max_connections_per_address: mqtt.max_connections_per_address,
                connect_rate_per_address: mqtt.connect_rate_per_address,
                connect_burst_per_address: mqtt.connect_burst_per_address,
            },
            sys_interval: (mqtt.sys_interval_s > 0)
                .then(|| Duration::from_secs(mqtt.sys_interval_s)),
            share_strategy: mqtt.shared_subscription_strategy.strategy(),
            http_listen: self.http.listen_addr(),
            websocket: self
                .websocket
                .settings(self.tls.enabled())
                .filter(|_| mqtt.enabled),
            auth: self.auth.clone(),
            persistence: self.persistence.settings(),
            session_expiry: self.persistence.session_expiry(),
        }
    }

    /// The TLS listener's settings, its certificate files read: `None`
    /// when no certificate is configured. Start-up fails on a bad file.
    pub fn tls_listener(&self) -> Result<Option<crate::shard::TlsListener>, ConfigError> {
        let tls = &self.tls;
        if !tls.enabled() {
            return Ok(None);
        }
        let config = crate::transport::tls_config::load(tls).map_err(|e| ConfigError::Invalid {
            key: "tls",
            message: e.to_string(),
        })?;
        Ok(Some(crate::shard::TlsListener {
            listen: tls.listen,
            config: crate::transport::ServerConfigHolder::new(config),
            handshake_timeout: Duration::from_secs(tls.handshake_timeout_s),
            proxy_protocol: tls.proxy_protocol,
            use_identity_as_username: tls.use_identity_as_username,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_what_it_can_and_names_what_needs_a_restart() {
        let old = Config::from_toml("[server]\nlog = \"info\"\nshards = 2\n").unwrap();
        let new = Config::from_toml(
            "[server]\nlog = \"debug\"\nshards = 4\nshutdown_timeout_s = 3\n\
             [mqtt]\nlisten = \"127.0.0.1:1884\"\n[auth]\nacl_file = \"/etc/acl\"\n",
        )
        .unwrap();
        let (kept, restart) = old.reloaded(&new);
        assert_eq!(restart, ["server", "mqtt"]);
        assert_eq!(kept.server.log, "debug");
        assert_eq!(kept.server.shutdown_timeout_s, 3);
        assert_eq!(kept.auth.acl_file.as_deref(), Some(Path::new("/etc/acl")));
        assert_eq!(
            kept.server.shards,
            Shards::Count(2),
            "in force until a restart"
        );
        assert_eq!(kept.mqtt.listen, old.mqtt.listen);
        let (_, none) = old.reloaded(&Config::from_toml("[server]\nshards = 2\n").unwrap());
        assert!(none.is_empty(), "{none:?}");
        let (_, restart) = old.reloaded(
            &Config::from_toml("[server]\nshards = 2\n[persistence]\ndir = \"/s\"\n").unwrap(),
        );
        assert_eq!(restart, ["persistence"], "the store opens at start only");
    }

    #[test]
    fn the_packaged_config_shows_the_defaults() {
        // Its `#key = value` lines, uncommented, must give the defaults.
        let text = include_str!("../tuning/shardmq.toml");
        let uncommented: Vec<&str> = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => line,
            })
            .collect();
        let mut shown = Config::from_toml(&uncommented.join("\n")).unwrap();
        // The one setting the package chooses: a store in the unit's
        // StateDirectory, where the built-in default keeps none.
        assert_eq!(shown.persistence.dir, "/var/lib/shardmq");
        shown.persistence.dir = Config::default().persistence.dir;
        assert_eq!(format!("{shown:?}"), format!("{:?}", Config::default()));
        shown.validate().unwrap();
    }

    #[test]
    fn the_mqtt_sn_gateway_is_checked_and_needs_the_broker() {
        let c = Config::from_toml(
            "[mqtt_sn]\nenabled = true\n[[mqtt_sn.predefined]]\nid = 1\ntopic = \"a/b\"\n\
             [[mqtt_sn.predefined]]\nid = 1\ntopic = \"a/c\"\n",
        )
        .unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "mqtt_sn.predefined",
                ..
            })
        ));
        let c =
            Config::from_toml("[mqtt_sn]\nenabled = true\nadvertise_address = \"x\"\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[mqtt]\nenabled = false\n[mqtt_sn]\nenabled = true\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[mqtt_sn]\nenabled = true\n").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn presence_is_checked_and_needs_a_broker() {
        let c = Config::from_toml("[presence]\nenabled = true\nhealth_timeout_s = 0\n").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "presence.health_timeout_s",
                ..
            })
        ));
        let c = Config::from_toml("[mqtt]\nenabled = false\n[presence]\nenabled = true\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml(
            "[mqtt]\nenabled = false\n[presence]\nenabled = true\n\
             [presence.external_broker]\naddress = \"b:1883\"\n",
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.mqtt.listen.port(), 1883);
        assert_eq!(c.mqtt.max_packet_size, 1 << 20);
        assert_eq!(c.server.shards, Shards::Auto(AutoWord::Auto));
        c.validate().unwrap();
    }

    #[test]
    fn keys_are_read_and_unknown_keys_refused() {
        let c = Config::from_toml("[server]\nshards = 3\n[mqtt]\nsys_interval_s = 1\n").unwrap();
        assert_eq!(c.shard_count(), 3);
        assert_eq!(c.mqtt.sys_interval_s, 1);
        assert!(Config::from_toml("[mqtt]\nmax_pakcet_size = 1\n").is_err());
        let c = Config::from_toml("[mqtt]\nshared_subscription_strategy = \"hash_clientid\"\n");
        assert_eq!(
            c.unwrap().shard_settings().share_strategy,
            crate::mqtt::broker::ShareStrategy::HashClientId
        );
        assert!(Config::from_toml("[mqtt]\nshared_subscription_strategy = \"sticky\"\n").is_err());
        assert!(Config::from_toml("[auth]\npasword_file = \"x\"\n").is_err());
        assert!(Config::from_toml("[server]\nshards = \"many\"\n").is_err());
    }

    #[test]
    fn websocket_section_reaches_the_shard_settings() {
        let c = Config::from_toml("").unwrap();
        assert!(c.shard_settings().websocket.is_none());
        let c = Config::from_toml(
            "[websocket]\nenabled = true\nlisten = \"127.0.0.1:9001\"\npath = \"/ws\"\n\
             allowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let ws = c.shard_settings().websocket.unwrap();
        assert_eq!(ws.listen.port(), 9001);
        assert_eq!(ws.policy.path, "/ws");
        assert_eq!(ws.policy.allowed_origins, ["https://a.example"]);
        assert!(Config::from_toml("[websocket]\nport = 1\n").is_err());
        let c = Config::from_toml("[websocket]\nenabled = true\npath = \"mqtt\"\n").unwrap();
        assert!(c.validate().is_err());
        let c =
            Config::from_toml("[websocket]\nenabled = true\nlisten = \"0.0.0.0:1883\"\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn auth_section_and_its_anonymous_default() {
        let c = Config::from_toml("").unwrap();
        assert!(c.auth.anonymous_allowed(), "no password file: anonymous");
        let c =
            Config::from_toml("[auth]\npassword_file = \"/p\"\nacl_default = \"allow\"\n").unwrap();
        assert!(!c.auth.anonymous_allowed(), "a password file: no anonymous");
        assert_eq!(c.auth.acl_default, crate::auth::AclDefault::Allow);
        let c =
            Config::from_toml("[auth]\npassword_file = \"/p\"\nallow_anonymous = true\n").unwrap();
        assert!(c.auth.anonymous_allowed());
        let c = Config::from_toml("[auth]\nfailure_table_max = 0\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn limits_reach_the_shard_settings() {
        let c = Config::from_toml("").unwrap();
        let s = c.shard_settings();
        assert_eq!(s.limits.max_subscriptions, 1000);
        assert_eq!(s.limits.max_awaiting_pubrel, 1000);
        assert_eq!(s.connection_limits.max_connections, 0, "off by default");
        assert_eq!(s.retained.max_messages, 100_000);
        assert_eq!(s.retained.max_bytes, 64 << 20);
        assert_eq!(s.limits.max_queued_bytes, 16 << 20);
        assert_eq!(s.max_queued_bytes_total, 1 << 30);
        assert_eq!(s.max_queued_messages_total, 1_000_000);
        let c = Config::from_toml(
            "[mqtt]\nmax_subscriptions_per_client = 5\nmax_awaiting_pubrel = 6\n\
             max_connections = 7\nmax_connections_per_address = 8\n\
             connect_rate_per_address = 9\nconnect_burst_per_address = 10\n",
        )
        .unwrap();
        let s = c.shard_settings();
        assert_eq!(
            (s.limits.max_subscriptions, s.limits.max_awaiting_pubrel),
            (5, 6)
        );
        let l = s.connection_limits;
        assert_eq!(
            (
                l.max_connections,
                l.max_connections_per_address,
                l.connect_rate_per_address,
                l.connect_burst_per_address
            ),
            (7, 8, 9, 10)
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let c = Config::from_toml("[server]\nshards = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[mqtt]\nmax_packet_size = 2\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[mqtt]\ntls_max_packet_size = 2\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_toml("[mqtt]\nwebsocket_max_packet_size = 4096\n").unwrap();
        c.validate().unwrap();
        let s = c.shard_settings();
        assert_eq!(s.websocket_max_packet_size, 4096);
        assert_eq!(s.tls_max_packet_size, 1 << 20, "0 takes max_packet_size");
    }
}
