//! The `[presence]` section of the configuration: its keys, their embedded
//! defaults, and the checks that run before anything starts.

#![forbid(unsafe_code)]

use serde::Deserialize;

/// A setting of the `[presence]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// Fleet presence of MeekYolo service nodes (seed 000). Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    pub enabled: bool,
    /// A node whose health reports stop for this long is offline.
    pub health_timeout_s: u64,
    /// Nodes the registry holds.
    pub max_nodes: usize,
    /// Where the §7.1 error for a malformed registration is published.
    pub error_topic: String,
    /// Where the registry is published, retained, when it changes.
    pub snapshot_topic: String,
    /// At most one snapshot per this many milliseconds.
    pub snapshot_interval_ms: u64,
    /// Subscribe and publish through another broker instead of the
    /// built-in one.
    pub external_broker: PresenceExternalBroker,
}

/// External broker mode of the presence service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceExternalBroker {
    /// `host:port`; empty = the built-in broker.
    pub address: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
}

impl PresenceExternalBroker {
    pub fn enabled(&self) -> bool {
        !self.address.is_empty()
    }
}

impl Default for PresenceExternalBroker {
    fn default() -> Self {
        PresenceExternalBroker {
            address: String::new(),
            client_id: "shardmq-presence".to_string(),
            username: String::new(),
            password: String::new(),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            enabled: false,
            health_timeout_s: 30,
            max_nodes: 10_000,
            error_topic: "/meek/system/errors".to_string(),
            snapshot_topic: "/meek/system/registry".to_string(),
            snapshot_interval_ms: 1000,
            external_broker: PresenceExternalBroker::default(),
        }
    }
}

impl PresenceConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key, message: &str| {
            Err(Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.health_timeout_s == 0 {
            return invalid("presence.health_timeout_s", "must be at least 1");
        }
        if self.max_nodes == 0 {
            return invalid("presence.max_nodes", "must be at least 1");
        }
        for (key, topic) in [
            ("presence.error_topic", &self.error_topic),
            ("presence.snapshot_topic", &self.snapshot_topic),
        ] {
            if crate::mqtt::topic::validate_name(topic).is_err() {
                return invalid(key, "must be a topic name (no wildcards)");
            }
            // The service subscribes to these; its own publishes would
            // come back to it as registrations or node reports.
            if topic == super::REGISTER_TOPIC || topic.starts_with("/meek/nodes/") {
                return invalid(key, "must not be a topic the nodes publish on");
            }
        }
        if self.snapshot_interval_ms == 0 {
            return invalid("presence.snapshot_interval_ms", "must be at least 1");
        }
        if self.external_broker.enabled() && self.external_broker.client_id.is_empty() {
            return invalid(
                "presence.external_broker.client_id",
                "must not be empty: brokers log by it",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = PresenceConfig::default();
        assert!(c.validate().is_ok());
        assert!(!c.enabled);
        assert!(!c.external_broker.enabled());
    }

    #[test]
    fn keys_are_read_and_unknown_ones_refused() {
        let c: PresenceConfig = toml::from_str(
            "enabled = true\nhealth_timeout_s = 5\nerror_topic = \"/e\"\n\
             [external_broker]\naddress = \"broker:1883\"\n",
        )
        .unwrap();
        assert!(c.enabled && c.external_broker.enabled());
        assert_eq!(c.health_timeout_s, 5);
        assert_eq!(c.error_topic, "/e");
        assert_eq!(c.external_broker.client_id, "shardmq-presence");
        assert!(toml::from_str::<PresenceConfig>("timeout = 5").is_err());
    }

    #[test]
    fn topics_with_wildcards_or_on_the_nodes_own_topics_are_refused() {
        for bad in ["/a/+", "/a/#", "/meek/system/nodes", "/meek/nodes/x/status"] {
            let c = PresenceConfig {
                snapshot_topic: bad.to_string(),
                ..PresenceConfig::default()
            };
            assert_eq!(
                c.validate().unwrap_err().key,
                "presence.snapshot_topic",
                "{bad}"
            );
        }
        let c = PresenceConfig {
            health_timeout_s: 0,
            ..PresenceConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "presence.health_timeout_s");
    }
}
