//! The `[voice]` section of the configuration: its keys, their embedded
//! defaults, and the checks that run before anything starts.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use serde::Deserialize;

use super::routes::ota::OtaConfig;

/// A setting of the `[voice]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// The xiaozhi voice gateway (`protocols/xiaozhi.md`). Names follow the
/// reference gateway's settings where there is one: `signature_key` is its
/// `MQTT_SIGNATURE_KEY`, `public_host` its `PUBLIC_IP`, `backend_secret` its
/// `SERVER_SECRET`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    pub enabled: bool,
    /// Device passwords are checked when set; also the management API key.
    pub signature_key: String,
    /// Devices' MQTT packets above this close the connection (the firmware
    /// pages MCP tool lists to fit 8 KiB).
    pub max_packet_size: usize,
    /// The UDP audio address; every shard binds it (`SO_REUSEPORT`).
    pub udp_listen: SocketAddr,
    /// `udp.server` in the hello: the address devices send audio to.
    pub public_host: String,
    /// `udp.port` in the hello; 0 = the port bound.
    pub public_port: u16,
    /// How datagrams reach the shard that owns their conversation.
    pub steering: Steering,
    /// Chat backends (`ws://` or `wss://` URLs); one is picked per
    /// conversation.
    pub chat_servers: Vec<String>,
    /// Backends for the devices listed in `dev_macs`.
    pub dev_chat_servers: Vec<String>,
    pub dev_macs: Vec<String>,
    /// CA certificates (PEM) that `wss://` backends' certificates must
    /// chain to; "" = the system's roots.
    pub chat_ca_file: String,
    /// Static bearer token for the backend, used when `backend_secret` is empty.
    pub backend_token: String,
    /// When set, each backend connection carries an HMAC token instead.
    pub backend_secret: String,
    /// The backend must answer the hello within this; the device itself
    /// gives up after 10 s.
    pub backend_hello_timeout_s: u64,
    /// A conversation without audio or control traffic either way for this
    /// long is ended (the device considers its channel dead after 120 s).
    pub idle_timeout_s: u64,
    pub ota: OtaConfig,
    pub external_broker: ExternalBrokerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// A reuseport BPF program picks the socket of the owner shard.
    Bpf,
    /// The kernel spreads datagrams; shards forward them over the mesh.
    Forward,
}

/// External broker mode: the gateway attaches to another MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalBrokerConfig {
    /// `host:port`; empty = devices connect to the built-in broker.
    pub address: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
    /// Subscribe through `$share/<group>/` so several gateways share devices
    /// (the filter becomes `$share/<group>//p2p/device_public/#`).
    pub share_group: String,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            enabled: false,
            signature_key: String::new(),
            max_packet_size: 8192,
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 8884)),
            public_host: "127.0.0.1".to_string(),
            public_port: 0,
            steering: Steering::Bpf,
            chat_servers: vec!["ws://127.0.0.1:8000/xiaozhi/v1/?from=mqtt_gateway".to_string()],
            dev_chat_servers: Vec::new(),
            dev_macs: Vec::new(),
            chat_ca_file: String::new(),
            backend_token: "test-token".to_string(),
            backend_secret: String::new(),
            backend_hello_timeout_s: 10,
            idle_timeout_s: 180,
            ota: Default::default(),
            external_broker: ExternalBrokerConfig::default(),
        }
    }
}

/// A chat backend's URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `wss://`.
    pub tls: bool,
    /// A name or an IP address (without an IPv6 literal's brackets).
    pub host: String,
    /// The URL's, else 80 for `ws://` and 443 for `wss://`.
    pub port: u16,
}

impl BackendUrl {
    pub fn parse(url: &str) -> Result<BackendUrl, String> {
        use async_tungstenite::tungstenite::client::IntoClientRequest;
        let tls = match url.split_once("://") {
            Some(("ws", _)) => false,
            Some(("wss", _)) => true,
            _ => return Err("must start with ws:// or wss://".to_string()),
        };
        let request = url
            .into_client_request()
            .map_err(|e| format!("not a WebSocket URL: {e}"))?;
        let uri = request.uri();
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or("no host")?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(BackendUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl ExternalBrokerConfig {
    pub fn enabled(&self) -> bool {
        !self.address.is_empty()
    }
}

impl Default for ExternalBrokerConfig {
    fn default() -> Self {
        ExternalBrokerConfig {
            address: String::new(),
            client_id: "shardmq-voice".to_string(),
            username: String::new(),
            password: String::new(),
            share_group: String::new(),
        }
    }
}

impl VoiceConfig {
    /// Checks the section of an enabled gateway.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.chat_servers.is_empty() {
            return Err(Invalid {
                key: "voice.chat_servers",
                message: "at least one backend URL is needed".to_string(),
            });
        }
        for (key, urls) in [
            ("voice.chat_servers", &self.chat_servers),
            ("voice.dev_chat_servers", &self.dev_chat_servers),
        ] {
            for url in urls {
                BackendUrl::parse(url).map_err(|message| Invalid {
                    key,
                    message: format!("{url:?}: {message}"),
                })?;
            }
        }
        self.ota.validate().map_err(|e| Invalid {
            key: e.key,
            message: e.message,
        })?;
        if !(64..=268_435_460).contains(&self.max_packet_size) {
            return Err(Invalid {
                key: "voice.max_packet_size",
                message: "must be within 64..=268435460 bytes".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_of_both_schemes_are_taken_apart() {
        let parse = |u: &str| BackendUrl::parse(u);
        assert_eq!(
            parse("ws://127.0.0.1:8000/xiaozhi/v1/?from=mqtt_gateway"),
            Ok(BackendUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8000
            })
        );
        assert_eq!(
            parse("wss://chat.example/xiaozhi/v1/"),
            Ok(BackendUrl {
                tls: true,
                host: "chat.example".into(),
                port: 443
            })
        );
        assert_eq!(parse("ws://localhost/x").map(|u| u.port), Ok(80));
        assert_eq!(
            parse("wss://[::1]:9443/").map(|u| u.host),
            Ok("::1".to_string())
        );
        assert!(parse("http://chat.example/").is_err());
        assert!(parse("wss:///nohost").is_err());
        assert!(parse("chat.example:443").is_err());
    }

    #[test]
    fn wss_backends_pass_validation() {
        let config = VoiceConfig {
            chat_servers: vec!["wss://chat.example/xiaozhi/v1/".into()],
            dev_chat_servers: vec!["ws://localhost:8000/".into()],
            ..VoiceConfig::default()
        };
        assert!(config.validate().is_ok());
        let bad = VoiceConfig {
            dev_chat_servers: vec!["https://chat.example/".into()],
            ..VoiceConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "voice.dev_chat_servers");
    }
}
