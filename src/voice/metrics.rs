//! The voice gateway's counters in the Prometheus text format.

#![forbid(unsafe_code)]

use std::fmt::Write;

use crate::voice::gateway::VoiceCounters;
use crate::voice::packet::DropReason;

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
}
