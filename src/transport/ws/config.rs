//! The `[websocket]` section: the MQTT-over-WebSocket listener.
//!
//! Off by default, as in mosquitto, whose WebSocket listener is always
//! explicit: a second open port is the operator's choice. `enabled = true`
//! alone gives what EMQX serves by default, `ws://0.0.0.0:8083/mqtt`, and
//! `wss://0.0.0.0:8084/mqtt` too once `[tls]` has a certificate (the same
//! certificate, client certificate policy and handshake deadline).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::handshake::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebsocketConfig {
    pub enabled: bool,
    /// The `ws://` listener.
    pub listen: SocketAddr,
    /// The `wss://` listener: WebSocket over TLS, run when `enabled`, `wss`
    /// and `[tls]` has a certificate.
    pub tls_listen: SocketAddr,
    /// `false` keeps `wss://` off even with a `[tls]` certificate.
    pub wss: bool,
    /// The request path clients upgrade on; others get 404.
    pub path: String,
    /// `Origin` values accepted (e.g. `"https://app.example.com"`); empty
    /// accepts any. Browsers send `Origin`; other clients usually do not,
    /// so a non-empty list refuses them.
    pub allowed_origins: Vec<String>,
    /// Time a new socket has to complete the upgrade; the CONNECT deadline
    /// (`mqtt.connect_timeout_s`) starts after it.
    pub handshake_timeout_s: u64,
    /// Expect a PROXY protocol header (v1 or v2) first, on `ws` and `wss`.
    pub proxy_protocol: bool,
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        WebsocketConfig {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            wss: true,
            path: "/mqtt".to_string(),
            allowed_origins: Vec::new(),
            handshake_timeout_s: 10,
            proxy_protocol: false,
        }
    }
}

/// A setting that cannot be used: its key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// What a shard needs to run the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    pub listen: SocketAddr,
    /// The `wss` listener; `None` runs none.
    pub tls_listen: Option<SocketAddr>,
    pub policy: Policy,
    pub handshake_timeout: Duration,
    pub proxy_protocol: bool,
}

impl WebsocketConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(Invalid {
                key: "websocket.path",
                message: format!("{:?} is not an absolute path", self.path),
            });
        }
        if self.handshake_timeout_s == 0 {
            return Err(Invalid {
                key: "websocket.handshake_timeout_s",
                message: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }

    /// The shard's settings; `None` when the listener is off.
    /// `tls_configured`: `[tls]` has a certificate, which `wss` serves.
    pub fn settings(&self, tls_configured: bool) -> Option<WsSettings> {
        self.enabled.then(|| WsSettings {
            listen: self.listen,
            tls_listen: (self.wss && tls_configured).then_some(self.tls_listen),
            policy: Policy {
                path: self.path.clone(),
                allowed_origins: self.allowed_origins.clone(),
            },
            handshake_timeout: Duration::from_secs(self.handshake_timeout_s),
            proxy_protocol: self.proxy_protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_on_8083_at_mqtt() {
        let c = WebsocketConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.listen.port(), 8083);
        assert_eq!(c.path, "/mqtt");
        assert!(c.settings(true).is_none());
        c.validate().unwrap();
    }

    #[test]
    fn wss_runs_on_8084_only_with_a_certificate() {
        let c = WebsocketConfig {
            enabled: true,
            ..WebsocketConfig::default()
        };
        assert_eq!(c.settings(false).unwrap().tls_listen, None);
        let wss = c.settings(true).unwrap().tls_listen.unwrap();
        assert_eq!(wss.port(), 8084);
        let c = WebsocketConfig { wss: false, ..c };
        assert_eq!(c.settings(true).unwrap().tls_listen, None);
    }

    #[test]
    fn bad_path_and_zero_timeout_are_refused() {
        let c = WebsocketConfig {
            path: "mqtt".into(),
            ..WebsocketConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "websocket.path");
        let c = WebsocketConfig {
            handshake_timeout_s: 0,
            ..WebsocketConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().key,
            "websocket.handshake_timeout_s"
        );
    }
}
