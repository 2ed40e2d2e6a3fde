//! The `[relay]` section of the configuration: its keys, their embedded
//! defaults, and the checks that run before anything starts.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use serde::Deserialize;

/// A setting of the `[relay]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// The MS500 device command relay (seed 001). Off by default: it opens a
/// listener that publishes to any device, so it runs only when asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub enabled: bool,
    /// The backends' TCP listener. Loopback by default, as the seed's
    /// relay: whoever reaches it commands every device.
    pub listen: SocketAddr,
    /// Longest command, braces included.
    pub max_command_bytes: usize,
    /// Where a command to `unit` is published; `{unit}` is replaced.
    pub topic_template: String,
    /// Longest `unit`.
    pub max_unit_bytes: usize,
    /// Answer each command with one JSON line.
    pub reply: bool,
    /// Reply bytes kept for a backend that does not read them; past this,
    /// replies are dropped and counted.
    pub reply_buffer_bytes: usize,
    /// Backend connections at once; more are closed at accept.
    pub max_connections: usize,
    /// A device without a heartbeat for this long is offline.
    pub device_timeout_s: u64,
    /// Devices the heartbeat registry holds.
    pub max_devices: usize,
    /// Publish and subscribe through another broker instead of the
    /// built-in one.
    pub external_broker: RelayExternalBroker,
}

/// External broker mode of the relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayExternalBroker {
    /// `host:port`; empty = the built-in broker.
    pub address: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
}

impl RelayExternalBroker {
    pub fn enabled(&self) -> bool {
        !self.address.is_empty()
    }
}

impl Default for RelayExternalBroker {
    fn default() -> Self {
        RelayExternalBroker {
            address: String::new(),
            client_id: "shardmq-relay".to_string(),
            username: String::new(),
            password: String::new(),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 6080)),
            max_command_bytes: 64 * 1024,
            topic_template: "/service/ms500/{unit}/socket".to_string(),
            max_unit_bytes: 128,
            reply: false,
            reply_buffer_bytes: 64 * 1024,
            max_connections: 64,
            device_timeout_s: 60,
            max_devices: 100_000,
            external_broker: RelayExternalBroker::default(),
        }
    }
}

impl RelayConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key, message: &str| {
            Err(Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.max_command_bytes < 16 {
            return invalid("relay.max_command_bytes", "must be at least 16");
        }
        let parts: Vec<&str> = self.topic_template.split("{unit}").collect();
        if parts.len() != 2 {
            return invalid("relay.topic_template", "must hold {unit} exactly once");
        }
        let sample = self.topic_template.replace("{unit}", "u");
        if crate::mqtt::topic::validate_name(&sample).is_err() {
            return invalid(
                "relay.topic_template",
                "must make a topic name (no wildcards)",
            );
        }
        if self.max_unit_bytes == 0 {
            return invalid("relay.max_unit_bytes", "must be at least 1");
        }
        if self.device_timeout_s == 0 {
            return invalid("relay.device_timeout_s", "must be at least 1");
        }
        if self.max_devices == 0 || self.max_connections == 0 {
            return invalid("relay.max_devices", "limits must be at least 1");
        }
        if self.external_broker.enabled() && self.external_broker.client_id.is_empty() {
            return invalid(
                "relay.external_broker.client_id",
                "must not be empty: a clean session needs no id, but brokers log by it",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_on_loopback() {
        let c = RelayConfig::default();
        assert!(c.validate().is_ok());
        assert!(!c.enabled);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.listen.port(), 6080);
        assert_eq!(c.max_command_bytes, 65536);
    }

    #[test]
    fn keys_are_read_and_unknown_ones_refused() {
        let c: RelayConfig = toml::from_str(
            "enabled = true\nlisten = \"0.0.0.0:7000\"\nreply = true\n\
             [external_broker]\naddress = \"broker:1883\"\n",
        )
        .unwrap();
        assert!(c.enabled && c.reply);
        assert_eq!(c.listen.port(), 7000);
        assert!(c.external_broker.enabled());
        assert_eq!(c.external_broker.client_id, "shardmq-relay");
        assert!(toml::from_str::<RelayConfig>("replies = true").is_err());
    }

    #[test]
    fn templates_without_one_unit_or_with_wildcards_are_refused() {
        for bad in [
            "/service/ms500/socket",
            "/a/{unit}/{unit}",
            "/a/+/{unit}",
            "/a/{unit}/#",
        ] {
            let c = RelayConfig {
                topic_template: bad.to_string(),
                ..RelayConfig::default()
            };
            assert_eq!(
                c.validate().unwrap_err().key,
                "relay.topic_template",
                "{bad}"
            );
        }
    }
}
