//! The results of a run: serialisable reports, the human-readable table,
//! and where both go.
//!
//! Field names in JSON carry their unit (`_s`, `_us`, `_kib`, `_bytes`,
//! `_per_s`) so that scripts comparing runs need no schema.

use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::perf::KernelEvents;
use super::stats::{Integrity, ProblemCounts};
use super::sys::Memory;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// The publishing parameters, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: u8,
    pub payload_bytes: usize,
    /// Per publisher; 0 means as fast as possible.
    pub rate_per_publisher: f64,
    pub inflight: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_limit_s: f64,
    pub threads: usize,
    pub cpus: Option<Vec<usize>>,
}

/// The bench's own cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BenchCpu {
    pub cpu_s: f64,
    /// CPU time over wall time: 1.0 is one core busy.
    pub cores: f64,
    pub ns_per_delivered: f64,
}

/// The broker's cost over the measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerCpu {
    pub pid: u32,
    pub cpu_s: f64,
    /// Of `cpu_s`, in user space (utime) and in the kernel (stime).
    pub user_s: f64,
    pub system_s: f64,
    pub cores: f64,
    pub cpu_s_per_million_delivered: f64,
    pub memory: Memory,
    /// With `--server-perf`: system calls and io_uring submissions, per
    /// delivered message.
    pub kernel_events: Option<KernelEvents>,
}

/// The MQTT-SN side of `sn`.
#[derive(Debug, Clone, Serialize)]
pub struct SnConfig {
    /// The gateway's UDP address.
    pub gateway: String,
    /// `register` or `predefined`.
    pub topics: &'static str,
    pub retry_s: f64,
}

/// Report of `p2p`, `fanout`, `fanin`, `latency` and `sn`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub label: Option<String>,
    pub scenario: &'static str,
    pub broker: String,
    /// `sn`: how the publishers reached the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sn: Option<SnConfig>,
    pub config: LoadConfig,
    /// Actual length of the measured window.
    pub window_s: f64,
    /// Time spent draining after publishing stopped.
    pub drain_s: f64,
    /// Messages published in the window.
    pub published: u64,
    /// Messages received in the window (all subscribers).
    pub delivered: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    /// Of messages sent in the window.
    pub latency: Percentiles,
    /// Whole run, warm-up and drain included.
    pub integrity: Integrity,
    /// At QoS 0 the broker may drop: loss is information, not an error.
    pub loss_allowed: bool,
    pub bench: BenchCpu,
    pub server: Option<ServerCpu>,
    /// Times an executor slept through its wake-ups for 30 ms or more and
    /// was interrupted (see `doorbell`); stalls depress the figures.
    pub executor_stalls: u64,
    pub errors: ProblemCounts,
}

/// The broker's memory around `conns`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConnsServer {
    pub pid: u32,
    pub before: Memory,
    pub after: Memory,
    pub rss_bytes_per_conn: f64,
    pub anonymous_bytes_per_conn: f64,
    pub cpu_s: f64,
}

/// Report of `conns`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsReport {
    pub label: Option<String>,
    pub scenario: &'static str,
    pub broker: String,
    pub requested: u64,
    pub established: u64,
    /// Connections still open at the end of the hold.
    pub held: u64,
    pub connect_s: f64,
    pub connects_per_s: f64,
    /// TCP connect to CONNACK.
    pub connect_latency: Percentiles,
    pub hold_s: f64,
    pub keepalive_s: u16,
    pub pings_answered: u64,
    pub threads: usize,
    pub bench_rss_bytes_per_conn: f64,
    pub server: Option<ConnsServer>,
    /// See [`LoadReport::executor_stalls`].
    pub executor_stalls: u64,
    pub errors: ProblemCounts,
}

/// Two aligned columns.
#[derive(Default)]
pub(crate) struct Table {
    pub title: Vec<String>,
    pub rows: Vec<(String, String)>,
}

impl Table {
    pub fn row(&mut self, name: &str, value: String) {
        self.rows.push((name.to_string(), value));
    }

    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(n, _)| n.chars().count()).max();
        let mut out = self.title.join("\n");
        out.push_str("\n\n");
        for (name, value) in &self.rows {
            let pad = width.unwrap_or(0) - name.chars().count();
            out.push_str(&format!("  {name}{:pad$}  {value}\n", ""));
        }
        out
    }
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn latency_rows(table: &mut Table, what: &str, p: &Percentiles) {
    // No sample (nothing sent in the window arrived) is not a latency of 0.
    let value = |us: f64| {
        if p.samples == 0 {
            "—".to_string()
        } else {
            format!("{us:.1}")
        }
    };
    table.row(&format!("{what} p50 (µs)"), value(p.p50_us));
    table.row(&format!("{what} p99 (µs)"), value(p.p99_us));
    table.row(&format!("{what} p99.9 (µs)"), value(p.p999_us));
    table.row(&format!("{what} max (µs)"), value(p.max_us));
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

impl LoadReport {
    /// The table printed after a run.
    pub fn table(&self) -> String {
        let c = &self.config;
        let rate = if c.rate_per_publisher > 0.0 {
            format!("{} msg/s per publisher", thousands(c.rate_per_publisher))
        } else {
            "max".to_string()
        };
        let mut t = Table {
            title: vec![
                format!(
                    "shardmq-bench {} -> {}{}",
                    self.scenario,
                    self.broker,
                    self.label
                        .as_ref()
                        .map_or(String::new(), |l| format!(" ({l})"))
                ),
                format!(
                    "  {} publishers, {} subscribers, QoS {}, {} B payload, rate {}, inflight {}, {} thread(s)",
                    c.publishers, c.subscribers, c.qos, c.payload_bytes, rate, c.inflight, c.threads
                ),
                format!(
                    "  window {:.2} s after {:.2} s warm-up, drain {:.2} s",
                    self.window_s, c.warmup_s, self.drain_s
                ),
            ],
            rows: Vec::new(),
        };
        if let Some(sn) = &self.sn {
            t.title.insert(
                2,
                format!(
                    "  publishers: MQTT-SN over UDP to {} ({} topic ids, retry {:.1} s)",
                    sn.gateway, sn.topics, sn.retry_s
                ),
            );
        }
        t.row("published/s", thousands(self.published_per_s));
        t.row("delivered/s", thousands(self.delivered_per_s));
        latency_rows(&mut t, "latency", &self.latency);
        let i = &self.integrity;
        let note = if self.loss_allowed { " (QoS 0)" } else { "" };
        t.row("lost", format!("{}{note} of {}", i.lost, i.expected));
        t.row("duplicated", i.duplicated.to_string());
        t.row("reordered", i.reordered.to_string());
        if i.unacked > 0 {
            t.row("unacknowledged", i.unacked.to_string());
        }
        t.row(
            "bench CPU ns/delivered",
            format!(
                "{:.0} ({:.2} cores)",
                self.bench.ns_per_delivered, self.bench.cores
            ),
        );
        if let Some(s) = &self.server {
            t.row(
                "server CPU s/1M delivered",
                format!(
                    "{:.3} ({:.2} cores)",
                    s.cpu_s_per_million_delivered, s.cores
                ),
            );
            cpu_split_row(&mut t, s.user_s, s.system_s);
            kernel_event_rows(&mut t, s.kernel_events.as_ref(), "delivered");
            t.row(
                "server RSS (MiB)",
                format!(
                    "{} (peak {})",
                    mib(s.memory.vm_rss_kib),
                    mib(s.memory.vm_hwm_kib)
                ),
            );
        }
        stall_row(&mut t, self.executor_stalls);
        t.row("errors", self.errors.to_string());
        t.render()
    }
}

/// The broker's CPU time in user space and in the kernel.
pub(crate) fn cpu_split_row(table: &mut Table, user_s: f64, system_s: f64) {
    let total = (user_s + system_s).max(1e-9);
    table.row(
        "server CPU user / kernel (s)",
        format!(
            "{user_s:.3} / {system_s:.3} ({:.0}% in the kernel)",
            100.0 * system_s / total
        ),
    );
}

/// System calls and io_uring submissions per `unit`, when counted.
pub(crate) fn kernel_event_rows(table: &mut Table, events: Option<&KernelEvents>, unit: &str) {
    let Some(e) = events else {
        return;
    };
    table.row(
        &format!("server syscalls/{unit}"),
        format!(
            "{:.2} ({} in {:.1} s)",
            e.syscalls_per_message, e.syscalls, e.counted_s
        ),
    );
    if let (Some(n), Some(per)) = (e.io_uring_submissions, e.io_uring_submissions_per_message) {
        table.row(
            &format!("server io_uring submissions/{unit}"),
            format!("{per:.2} ({n} in {:.1} s)", e.counted_s),
        );
    }
}

pub(crate) fn stall_row(table: &mut Table, stalls: u64) {
    if stalls > 0 {
        table.row("executor stalls", stalls.to_string());
    }
}

impl ConnsReport {
    /// The table printed after a run.
    pub fn table(&self) -> String {
        let mut t = Table {
            title: vec![
                format!(
                    "shardmq-bench conns -> {}{}",
                    self.broker,
                    self.label
                        .as_ref()
                        .map_or(String::new(), |l| format!(" ({l})"))
                ),
                format!(
                    "  {} connections, held {:.1} s, keepalive {} s, {} thread(s)",
                    self.requested, self.hold_s, self.keepalive_s, self.threads
                ),
            ],
            rows: Vec::new(),
        };
        t.row(
            "established",
            format!("{} of {}", self.established, self.requested),
        );
        t.row("held to the end", self.held.to_string());
        t.row("connect time (s)", format!("{:.2}", self.connect_s));
        t.row("connects/s", thousands(self.connects_per_s));
        latency_rows(&mut t, "connect", &self.connect_latency);
        t.row("pings answered", self.pings_answered.to_string());
        t.row(
            "bench RSS/conn (bytes)",
            thousands(self.bench_rss_bytes_per_conn),
        );
        if let Some(s) = &self.server {
            t.row(
                "server RSS before/after (MiB)",
                format!("{} / {}", mib(s.before.vm_rss_kib), mib(s.after.vm_rss_kib)),
            );
            t.row("server RSS/conn (bytes)", thousands(s.rss_bytes_per_conn));
            t.row(
                "server anon/conn (bytes)",
                thousands(s.anonymous_bytes_per_conn),
            );
        }
        stall_row(&mut t, self.executor_stalls);
        t.row("errors", self.errors.to_string());
        t.render()
    }
}

/// Prints the table, and the JSON if asked: to a file, or to stdout with
/// the table moved to stderr.
pub fn emit<R: Serialize>(report: &R, table: &str, json: Option<&str>) -> std::io::Result<()> {
    let to_stdout = json == Some("-");
    if to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let Some(target) = json else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    } else {
        std::fs::write(target, text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn latency_without_samples_is_shown_as_missing() {
        let mut t = Table::default();
        latency_rows(&mut t, "latency", &Percentiles::default());
        assert!(t.rows.iter().all(|(_, v)| v == "—"), "{:?}", t.rows);
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = super::super::stats::new_histogram();
        for ns in [1_000, 2_000, 3_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.samples, 4);
        assert!((p.p50_us - 2.0).abs() < 0.01);
        assert!((p.max_us - 1000.0).abs() < 1.0);
    }

    #[test]
    fn table_aligns_values() {
        let mut t = Table::default();
        t.row("a", "1".to_string());
        t.row("long name", "2".to_string());
        let text = t.render();
        assert!(text.contains("  a          1\n"));
        assert!(text.contains("  long name  2\n"));
    }
}
