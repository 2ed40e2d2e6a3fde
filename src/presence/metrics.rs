//! The presence service's counters and their Prometheus text (sans-IO).

#![forbid(unsafe_code)]

use std::fmt::Write;

use super::envelope::{Field, Report};

/// Everything the service counts; one set, on the shard that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Valid registrations taken into the registry.
    pub registrations: u64,
    /// Registrations refused, by the field that failed (`Field::index`).
    pub errors: [u64; 11],
    /// §7.1 errors that could not be published (external outbox full).
    pub errors_unpublished: u64,
    /// Reports of registered nodes, by kind (`Report::index`).
    pub reports: [u64; 3],
    /// Reports of nodes never registered, or unreadable.
    pub reports_ignored: u64,
    /// Registrations of new nodes refused by a full registry.
    pub registry_full: u64,
    pub snapshots: u64,
    /// Nodes offline by their will, and by silence.
    pub offline_will: u64,
    pub offline_timeout: u64,
}

impl Counters {
    pub fn error(&mut self, field: Field) {
        if let Some(c) = self.errors.get_mut(field.index()) {
            *c += 1;
        }
    }

    pub fn report(&mut self, kind: Report) {
        if let Some(c) = self.reports.get_mut(kind.index()) {
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
        "shardmq_presence_nodes",
        "gauge",
        "MeekYolo nodes in the registry, by state.",
    );
    let _ = writeln!(out, "shardmq_presence_nodes{{state=\"online\"}} {online}");
    let _ = writeln!(out, "shardmq_presence_nodes{{state=\"offline\"}} {offline}");
    head(
        &mut out,
        "shardmq_presence_registrations_total",
        "counter",
        "Valid node registrations.",
    );
    let _ = writeln!(
        out,
        "shardmq_presence_registrations_total {}",
        c.registrations
    );
    head(
        &mut out,
        "shardmq_presence_errors_total",
        "counter",
        "Registrations refused, by the field that failed.",
    );
    for field in Field::ALL {
        let n = c.errors.get(field.index()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "shardmq_presence_errors_total{{reason=\"{}\"}} {n}",
            field.as_str()
        );
    }
    let _ = writeln!(
        out,
        "shardmq_presence_errors_total{{reason=\"registry_full\"}} {}",
        c.registry_full
    );
    head(
        &mut out,
        "shardmq_presence_reports_total",
        "counter",
        "Reports of registered nodes, by kind.",
    );
    for kind in Report::ALL {
        let n = c.reports.get(kind.index()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "shardmq_presence_reports_total{{kind=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    let simple = [
        (
            "shardmq_presence_reports_ignored_total",
            "Reports of unregistered nodes or unreadable ones.",
            c.reports_ignored,
        ),
        (
            "shardmq_presence_offline_total{cause=\"will\"}",
            "Nodes gone offline, by cause.",
            c.offline_will,
        ),
        (
            "shardmq_presence_offline_total{cause=\"health_timeout\"}",
            "",
            c.offline_timeout,
        ),
        (
            "shardmq_presence_snapshots_total",
            "Retained registry snapshots published.",
            c.snapshots,
        ),
        (
            "shardmq_presence_errors_unpublished_total",
            "Error messages dropped by a full outbox to the external broker.",
            c.errors_unpublished,
        ),
    ];
    for (name, help, n) in simple {
        if !help.is_empty() {
            let base = name.split('{').next().unwrap_or(name);
            head(&mut out, base, "counter", help);
        }
        let _ = writeln!(out, "{name} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_rendered_once_with_its_value() {
        let mut c = Counters {
            registrations: 3,
            ..Counters::default()
        };
        c.error(Field::NodeType);
        c.error(Field::NodeType);
        c.report(Report::Health);
        let text = render(&c, 2, 1);
        assert!(text.contains("shardmq_presence_nodes{state=\"online\"} 2\n"));
        assert!(text.contains("shardmq_presence_nodes{state=\"offline\"} 1\n"));
        assert!(text.contains("shardmq_presence_registrations_total 3\n"));
        assert!(text.contains("shardmq_presence_errors_total{reason=\"payload.node_type\"} 2\n"));
        assert!(text.contains("shardmq_presence_reports_total{kind=\"health\"} 1\n"));
        assert_eq!(
            text.matches("# TYPE shardmq_presence_offline_total")
                .count(),
            1
        );
    }
}
