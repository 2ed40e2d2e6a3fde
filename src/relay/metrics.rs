//! The relay's counters and their Prometheus text (sans-IO).

#![forbid(unsafe_code)]

use std::fmt::Write;

use super::command::{CommandType, Reason};

/// Everything the relay counts; one set, on the shard that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Commands published, by type (`CommandType::index`).
    pub commands: [u64; 12],
    /// Commands refused, by reason (`Reason::index`).
    pub rejected: [u64; 7],
    /// Replies dropped because the backend did not read them.
    pub replies_dropped: u64,
    /// Commands dropped because the external broker's outbox stayed full.
    pub publish_dropped: u64,
    pub connections_accepted: u64,
    /// Backend connections closed at accept, past `max_connections`.
    pub connections_refused: u64,
    pub connections_open: u64,
    pub heartbeats: u64,
    /// Heartbeats whose topic or payload could not be read.
    pub heartbeats_invalid: u64,
    /// Heartbeats of new devices refused by a full registry.
    pub registry_full: u64,
}

impl Counters {
    pub fn command(&mut self, kind: CommandType) {
        if let Some(c) = self.commands.get_mut(kind.index()) {
            *c += 1;
        }
    }

    pub fn reject(&mut self, reason: Reason) {
        if let Some(c) = self.rejected.get_mut(reason.index()) {
            *c += 1;
        }
    }
}

/// The Prometheus text; `online`/`offline` are the registry's counts.
pub fn render(c: &Counters, online: usize, offline: usize) -> String {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "shardmq_relay_commands_total",
        "counter",
        "Commands published to devices, by type.",
    );
    for kind in CommandType::ALL {
        let n = c.commands.get(kind.index()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "shardmq_relay_commands_total{{type=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    head(
        &mut out,
        "shardmq_relay_rejected_total",
        "counter",
        "Commands refused, by reason.",
    );
    for reason in Reason::ALL {
        let n = c.rejected.get(reason.index()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "shardmq_relay_rejected_total{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    head(
        &mut out,
        "shardmq_relay_devices",
        "gauge",
        "Devices in the heartbeat registry, by state.",
    );
    let _ = writeln!(out, "shardmq_relay_devices{{state=\"online\"}} {online}");
    let _ = writeln!(out, "shardmq_relay_devices{{state=\"offline\"}} {offline}");
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "shardmq_relay_replies_dropped_total",
        "counter",
        "Replies dropped because the backend did not read them.",
        c.replies_dropped,
    );
    metric(
        "shardmq_relay_publish_dropped_total",
        "counter",
        "Valid commands dropped because the external broker could not take them.",
        c.publish_dropped,
    );
    metric(
        "shardmq_relay_connections_accepted_total",
        "counter",
        "Backend connections accepted.",
        c.connections_accepted,
    );
    metric(
        "shardmq_relay_connections_refused_total",
        "counter",
        "Backend connections closed at accept (relay.max_connections).",
        c.connections_refused,
    );
    metric(
        "shardmq_relay_connections",
        "gauge",
        "Backend connections open.",
        c.connections_open,
    );
    metric(
        "shardmq_relay_heartbeats_total",
        "counter",
        "Device heartbeats recorded.",
        c.heartbeats,
    );
    metric(
        "shardmq_relay_heartbeats_invalid_total",
        "counter",
        "Heartbeats whose topic or payload could not be read.",
        c.heartbeats_invalid,
    );
    metric(
        "shardmq_relay_registry_full_total",
        "counter",
        "Heartbeats of new devices refused by a full registry.",
        c.registry_full,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_reason_has_its_line() {
        let mut c = Counters::default();
        c.command(CommandType::Rsr);
        c.reject(Reason::InvalidUnit);
        c.replies_dropped = 4;
        let text = render(&c, 2, 1);
        assert!(text.contains("shardmq_relay_commands_total{type=\"RSR\"} 1\n"));
        assert!(text.contains("shardmq_relay_commands_total{type=\"AIM\"} 0\n"));
        assert!(text.contains("shardmq_relay_rejected_total{reason=\"invalid_unit\"} 1\n"));
        assert!(text.contains("shardmq_relay_devices{state=\"online\"} 2\n"));
        assert!(text.contains("shardmq_relay_devices{state=\"offline\"} 1\n"));
        assert!(text.contains("shardmq_relay_replies_dropped_total 4\n"));
        assert_eq!(text.matches("shardmq_relay_commands_total{").count(), 12);
        assert_eq!(text.matches("shardmq_relay_rejected_total{").count(), 7);
    }
}
