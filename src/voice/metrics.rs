//! The voice gateway's counters in the Prometheus text format.

#![forbid(unsafe_code)]

use std::fmt::Write;

use crate::voice::gateway::VoiceCounters;
use crate::voice::packet::DropReason;

/// Why a `wss://` backend's TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsFailure {
    /// The backend's certificate is not trusted, has expired, or does not
    /// name the URL's host.
    Certificate,
    /// The backend refused the handshake with an alert.
    AlertReceived,
    /// No protocol version or cipher suite in common.
    Incompatible,
    /// Not TLS, or TLS that cannot be parsed (a plain `ws://` server).
    Protocol,
    /// The backend closed the connection mid-handshake.
    Closed,
    /// The connect deadline passed during the handshake.
    Timeout,
    Other,
}

impl BackendTlsFailure {
    pub const ALL: [BackendTlsFailure; 7] = [
        BackendTlsFailure::Certificate,
        BackendTlsFailure::AlertReceived,
        BackendTlsFailure::Incompatible,
        BackendTlsFailure::Protocol,
        BackendTlsFailure::Closed,
        BackendTlsFailure::Timeout,
        BackendTlsFailure::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendTlsFailure::Certificate => "certificate",
            BackendTlsFailure::AlertReceived => "alert_received",
            BackendTlsFailure::Incompatible => "incompatible",
            BackendTlsFailure::Protocol => "protocol",
            BackendTlsFailure::Closed => "closed",
            BackendTlsFailure::Timeout => "timeout",
            BackendTlsFailure::Other => "other",
        }
    }

    /// Its place in `ALL` and in `VoiceCounters::backend_tls_failures`.
    pub fn index(self) -> usize {
        self as usize
    }
}

pub fn render(c: &VoiceCounters) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "shardmq_voice_devices",
        "gauge",
        "Devices connected.",
        c.devices,
    );
    metric(
        "shardmq_voice_conversations",
        "gauge",
        "Conversations open.",
        c.conversations,
    );
    metric(
        "shardmq_voice_conversations_opened_total",
        "counter",
        "Conversations opened by a device hello.",
        c.conversations_opened,
    );
    metric(
        "shardmq_voice_hello_errors_total",
        "counter",
        "Device hellos refused.",
        c.hello_errors,
    );
    metric(
        "shardmq_voice_backend_failures_total",
        "counter",
        "Backends that failed or did not answer the hello in time.",
        c.backend_failures,
    );
    metric(
        "shardmq_voice_backend_resolve_failures_total",
        "counter",
        "Backend host names that did not resolve.",
        c.backend_resolve_failures,
    );
    metric(
        "shardmq_voice_udp_received_total",
        "counter",
        "Datagrams accepted.",
        c.udp_in,
    );
    metric(
        "shardmq_voice_udp_sent_total",
        "counter",
        "Datagrams sent to devices.",
        c.udp_out,
    );
    metric(
        "shardmq_voice_udp_forwarded_total",
        "counter",
        "Datagrams that arrived on another shard's socket and were forwarded.",
        c.udp_forwarded,
    );
    metric(
        "shardmq_voice_audio_out_dropped_total",
        "counter",
        "Backend audio frames not sent (too large, device address unknown, queue full).",
        c.audio_out_dropped,
    );
    metric(
        "shardmq_voice_external_dropped_total",
        "counter",
        "Replies to devices dropped while the external broker's outbox was full.",
        c.external_out_dropped,
    );
    let _ = writeln!(
        out,
        "# HELP shardmq_voice_udp_dropped_total Datagrams dropped, by reason.\n# TYPE shardmq_voice_udp_dropped_total counter"
    );
    for (reason, n) in DropReason::ALL.iter().zip(c.udp_dropped) {
        let _ = writeln!(
            out,
            "shardmq_voice_udp_dropped_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP shardmq_voice_backend_tls_failures_total TLS handshakes with wss:// backends that failed, by reason.\n# TYPE shardmq_voice_backend_tls_failures_total counter"
    );
    for (reason, n) in BackendTlsFailure::ALL.iter().zip(c.backend_tls_failures) {
        let _ = writeln!(
            out,
            "shardmq_voice_backend_tls_failures_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_outbox_drops_are_exported() {
        let c = VoiceCounters {
            external_out_dropped: 3,
            ..VoiceCounters::default()
        };
        let text = render(&c);
        assert!(
            text.contains("\nshardmq_voice_external_dropped_total 3\n"),
            "{text}"
        );
        let mut sum = VoiceCounters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.external_out_dropped, 6);
    }

    #[test]
    fn backend_tls_and_resolve_failures_are_exported_and_summed() {
        let mut c = VoiceCounters {
            backend_resolve_failures: 2,
            ..VoiceCounters::default()
        };
        c.backend_tls_failures[BackendTlsFailure::Certificate.index()] = 5;
        let text = render(&c);
        assert!(
            text.contains("\nshardmq_voice_backend_tls_failures_total{reason=\"certificate\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("\nshardmq_voice_backend_tls_failures_total{reason=\"timeout\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nshardmq_voice_backend_resolve_failures_total 2\n"),
            "{text}"
        );
        let mut sum = VoiceCounters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(sum.backend_tls_failures[0], 10);
        assert_eq!(sum.backend_resolve_failures, 4);
        for (i, reason) in BackendTlsFailure::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
