//! Counters of what the transports did and refused before a connection
//! reached the broker (TLS handshakes, PROXY headers, WebSocket upgrades),
//! shared by every shard of a server and shown on `/metrics`. Shared atomics
//! rather than mesh messages: they change once per connection attempt, never
//! per packet. Failed handshakes are counted here, and logged only at debug:
//! a scanner must not be able to flood the log.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ws::{UpgradeError, UPGRADE_FAILURE_LABELS};

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The handshake deadline passed.
    Timeout,
    /// The peer closed, or the socket failed, mid-handshake.
    Closed,
    /// Not TLS, or TLS the server cannot parse (plaintext MQTT lands here).
    Protocol,
    /// No protocol version or cipher suite in common (e.g. TLS 1.2 against
    /// a TLS 1.3-only listener).
    Incompatible,
    /// A client certificate missing where required, untrusted, expired.
    ClientCertificate,
    /// The client refused the handshake with an alert (it did not trust
    /// the server's certificate, for one).
    AlertReceived,
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::Protocol,
        HandshakeFailure::Incompatible,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::Other => "other",
        }
    }

    /// Sorts a rustls error into a reason.
    pub fn of(error: &rustls::Error) -> HandshakeFailure {
        use rustls::Error;
        match error {
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. }
            | Error::PeerMisbehaved(_)
            | Error::DecryptError => HandshakeFailure::Protocol,
            Error::PeerIncompatible(_) => HandshakeFailure::Incompatible,
            Error::NoCertificatesPresented | Error::InvalidCertificate(_) => {
                HandshakeFailure::ClientCertificate
            }
            Error::AlertReceived(_) => HandshakeFailure::AlertReceived,
            _ => HandshakeFailure::Other,
        }
    }
}

/// Process-wide transport counters; every field only grows.
#[derive(Debug, Default)]
pub struct Counters {
    tls_handshakes: AtomicU64,
    tls_handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    proxy_headers: AtomicU64,
    proxy_header_rejections: AtomicU64,
    ws_upgrades: AtomicU64,
    ws_upgrade_failures: [AtomicU64; UPGRADE_FAILURE_LABELS.len()],
}

impl Counters {
    pub fn tls_handshake_done(&self) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshake_failed(&self, why: HandshakeFailure) {
        let slot = HandshakeFailure::ALL.iter().position(|&r| r == why);
        if let Some(counter) = slot.and_then(|i| self.tls_handshake_failures.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn proxy_header_accepted(&self) {
        self.proxy_headers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn proxy_header_rejected(&self) {
        self.proxy_header_rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ws_upgraded(&self) {
        self.ws_upgrades.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ws_upgrade_failed(&self, error: &UpgradeError) {
        self.count_ws_failure(error.label());
    }

    pub fn ws_upgrade_timed_out(&self) {
        self.count_ws_failure("timeout");
    }

    fn count_ws_failure(&self, label: &str) {
        let slot = UPGRADE_FAILURE_LABELS.iter().position(|l| *l == label);
        if let Some(counter) = slot.and_then(|i| self.ws_upgrade_failures.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends the counters in Prometheus text form.
    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP shardmq_tls_handshakes_total TLS handshakes completed.\n\
             # TYPE shardmq_tls_handshakes_total counter\n\
             shardmq_tls_handshakes_total {}",
            load(&self.tls_handshakes)
        );
        let _ = writeln!(
            out,
            "# HELP shardmq_tls_handshake_failures_total TLS handshakes that failed, by reason.\n\
             # TYPE shardmq_tls_handshake_failures_total counter"
        );
        for (reason, counter) in HandshakeFailure::ALL
            .iter()
            .zip(&self.tls_handshake_failures)
        {
            let _ = writeln!(
                out,
                "shardmq_tls_handshake_failures_total{{reason=\"{}\"}} {}",
                reason.label(),
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shardmq_proxy_headers_total PROXY protocol headers accepted.\n\
             # TYPE shardmq_proxy_headers_total counter\n\
             shardmq_proxy_headers_total {}\n\
             # HELP shardmq_proxy_header_rejections_total Connections closed for a missing or invalid PROXY header.\n\
             # TYPE shardmq_proxy_header_rejections_total counter\n\
             shardmq_proxy_header_rejections_total {}",
            load(&self.proxy_headers),
            load(&self.proxy_header_rejections)
        );
        let _ = writeln!(
            out,
            "# HELP shardmq_ws_upgrades_total WebSocket upgrades accepted.\n\
             # TYPE shardmq_ws_upgrades_total counter\n\
             shardmq_ws_upgrades_total {}\n\
             # HELP shardmq_ws_upgrade_failures_total WebSocket connections that did not complete the upgrade.\n\
             # TYPE shardmq_ws_upgrade_failures_total counter",
            load(&self.ws_upgrades)
        );
        for (reason, counter) in UPGRADE_FAILURE_LABELS.iter().zip(&self.ws_upgrade_failures) {
            let _ = writeln!(
                out,
                "shardmq_ws_upgrade_failures_total{{reason=\"{reason}\"}} {}",
                load(counter)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_line() {
        let counters = Counters::default();
        counters.tls_handshake_failed(HandshakeFailure::Incompatible);
        counters.tls_handshake_failed(HandshakeFailure::Incompatible);
        counters.proxy_header_rejected();
        let mut text = String::new();
        counters.render(&mut text);
        assert!(text.contains("shardmq_tls_handshake_failures_total{reason=\"incompatible\"} 2\n"));
        assert!(text.contains("shardmq_tls_handshake_failures_total{reason=\"other\"} 0\n"));
        assert!(text.contains("shardmq_proxy_header_rejections_total 1\n"));
        assert_eq!(
            text.matches("shardmq_tls_handshake_failures_total{reason=")
                .count(),
            HandshakeFailure::ALL.len()
        );
    }

    #[test]
    fn every_websocket_reason_has_its_line() {
        use crate::transport::ws::Refusal;
        let counters = Counters::default();
        counters.ws_upgraded();
        counters.ws_upgrade_failed(&UpgradeError::Refused(Refusal::Subprotocol));
        counters.ws_upgrade_timed_out();
        let mut text = String::new();
        counters.render(&mut text);
        assert!(text.contains("shardmq_ws_upgrades_total 1\n"));
        assert!(text.contains("shardmq_ws_upgrade_failures_total{reason=\"subprotocol\"} 1\n"));
        assert!(text.contains("shardmq_ws_upgrade_failures_total{reason=\"timeout\"} 1\n"));
        assert!(text.contains("shardmq_ws_upgrade_failures_total{reason=\"path\"} 0\n"));
        assert_eq!(
            text.matches("shardmq_ws_upgrade_failures_total{reason=")
                .count(),
            UPGRADE_FAILURE_LABELS.len()
        );
    }
}
