//! The `[mqtt_sn]` section of the configuration: its keys, their embedded
//! defaults, and the checks that run before anything starts.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::mqtt::topic::validate_name;

/// A setting of the `[mqtt_sn]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// The MQTT-SN gateway. Off by default: it opens a UDP port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnConfig {
    pub enabled: bool,
    /// The UDP port, one `SO_REUSEPORT` socket per shard (1884 is the
    /// protocol's own).
    pub listen: SocketAddr,
    /// The id in GWINFO and ADVERTISE.
    pub gateway_id: u8,
    /// Where ADVERTISE goes (a broadcast or multicast `host:port`); empty
    /// sends none.
    pub advertise_address: String,
    /// Between two ADVERTISEs, and their Duration field.
    pub advertise_interval_s: u16,
    /// The user name (and password) the gateway presents to the broker for
    /// every MQTT-SN client: its authentication and ACL apply to them.
    pub username: String,
    pub password: String,
    /// Accept QoS -1 PUBLISHes from clients without a connection (§6.8).
    pub qos_minus_one: bool,
    /// Topic ids one client may hold (REGISTER, SUBSCRIBE by name).
    pub max_topics_per_client: usize,
    /// Messages kept for a sleeping client; past this its QoS 0 messages
    /// are dropped and counted (QoS 1 and 2 wait in its broker session).
    pub sleep_buffer_messages: usize,
    /// Clients from one IP address, on the shard its datagrams reach.
    pub max_clients_per_address: usize,
    /// Datagrams per second from one IP address (a token bucket on the
    /// shard its datagrams reach); 0 is no limit.
    pub max_datagrams_per_second: u32,
    /// Tretry: the gateway's REGISTER and QoS 1/2 PUBLISH are sent again
    /// after this long without an answer.
    pub retry_interval_ms: u64,
    /// Nretry: after this many sends again the client is taken as lost.
    pub max_retries: u32,
    /// Longer datagrams are dropped (and counted).
    pub max_datagram: usize,
    /// Topic ids every client knows without REGISTER.
    pub predefined: Vec<Predefined>,
}

/// A predefined topic id (§2.3).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Predefined {
    pub id: u16,
    pub topic: String,
}

impl Default for SnConfig {
    fn default() -> Self {
        SnConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 1884)),
            gateway_id: 1,
            advertise_address: String::new(),
            advertise_interval_s: 900,
            username: String::new(),
            password: String::new(),
            qos_minus_one: true,
            max_topics_per_client: 1000,
            sleep_buffer_messages: 1000,
            max_clients_per_address: 64,
            max_datagrams_per_second: 1000,
            retry_interval_ms: 10_000,
            max_retries: 3,
            max_datagram: 1024,
            predefined: Vec::new(),
        }
    }
}

impl SnConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key, message: &str| Invalid {
            key,
            message: message.to_string(),
        };
        if self.advertise_address_parsed().is_err() {
            return Err(invalid("mqtt_sn.advertise_address", "not host:port"));
        }
        if self.advertise_interval_s == 0 {
            return Err(invalid(
                "mqtt_sn.advertise_interval_s",
                "must be at least 1",
            ));
        }
        if self.max_topics_per_client == 0 || self.max_topics_per_client > usize::from(u16::MAX) - 1
        {
            return Err(invalid(
                "mqtt_sn.max_topics_per_client",
                "must be 1 to 65534",
            ));
        }
        if self.max_clients_per_address == 0 {
            return Err(invalid(
                "mqtt_sn.max_clients_per_address",
                "must be at least 1",
            ));
        }
        if self.retry_interval_ms == 0 {
            return Err(invalid("mqtt_sn.retry_interval_ms", "must be at least 1"));
        }
        if !(16..=super::codec::MAX_MESSAGE).contains(&self.max_datagram) {
            return Err(invalid("mqtt_sn.max_datagram", "must be 16 to 65535"));
        }
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for p in &self.predefined {
            if p.id == 0 || p.id == u16::MAX {
                return Err(invalid(
                    "mqtt_sn.predefined",
                    "ids 0x0000 and 0xFFFF are reserved",
                ));
            }
            if validate_name(&p.topic).is_err() {
                return Err(Invalid {
                    key: "mqtt_sn.predefined",
                    message: format!("{:?} is not a topic name", p.topic),
                });
            }
            if !ids.insert(p.id) || !names.insert(p.topic.as_str()) {
                return Err(Invalid {
                    key: "mqtt_sn.predefined",
                    message: format!("id {} or topic {:?} given twice", p.id, p.topic),
                });
            }
        }
        Ok(())
    }

    /// The ADVERTISE destination; `None` sends none.
    pub fn advertise_address_parsed(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match self.advertise_address.trim() {
            "" => Ok(None),
            text => text.parse().map(Some),
        }
    }
}
