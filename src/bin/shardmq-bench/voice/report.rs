//! The report of the voice scenario: JSON fields carry their unit like the
//! other reports', and the table reads top to bottom as the run went:
//! devices, hellos, traffic, loss, round trip, cost.

use serde::Serialize;

use super::tally::Flow;
use crate::perf::KernelEvents;
use crate::report::{
    cpu_split_row, kernel_event_rows, latency_rows, mib, stall_row, thousands, Percentiles, Table,
};
use crate::stats::ProblemCounts;
use crate::sys::Memory;

/// The run's parameters, echoed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceConfig {
    pub devices: u32,
    pub frame_bytes: usize,
    pub frame_ms: u32,
    /// Devices send their password (`--signature-key`).
    pub signed: bool,
    pub ramp_s: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub drain_limit_s: f64,
    pub threads: usize,
    pub cpus: Option<Vec<usize>>,
}

/// The bench's own cost over the window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VoiceBenchCpu {
    pub cpu_s: f64,
    /// CPU time over wall time: 1.0 is one core busy.
    pub cores: f64,
    /// Per datagram sent or received by the devices, the backend's work
    /// included.
    pub ns_per_packet: f64,
}

/// The gateway's cost over the window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VoiceServerCpu {
    pub pid: u32,
    pub cpu_s: f64,
    /// Of `cpu_s`, in user space (utime) and in the kernel (stime).
    pub user_s: f64,
    pub system_s: f64,
    pub cores: f64,
    /// Per million datagrams, both directions.
    pub cpu_s_per_million_packets: f64,
    pub memory: Memory,
    /// With `--server-perf`: system calls and io_uring submissions, per
    /// datagram (both directions).
    pub kernel_events: Option<KernelEvents>,
}

/// Report of `voice`.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceReport {
    pub label: Option<String>,
    pub scenario: &'static str,
    pub broker: String,
    /// Where the bench's chat backend listened.
    pub backend: String,
    pub config: VoiceConfig,
    pub window_s: f64,
    pub drain_s: f64,
    /// MQTT connections accepted.
    pub devices_connected: u64,
    /// Hellos answered with a usable offer.
    pub conversations_opened: u64,
    /// Conversations still streaming at the end of the window.
    pub in_conversation: u64,
    /// Hello published to reply read.
    pub hello_latency: Percentiles,
    /// Datagrams the devices sent in the window, per second.
    pub up_sent_per_s: f64,
    /// Frames the backend received in the window, per second.
    pub up_received_per_s: f64,
    /// Echoes the devices received in the window, per second.
    pub down_received_per_s: f64,
    /// Device -> backend.
    pub up: Flow,
    /// Backend -> device.
    pub down: Flow,
    /// Device -> gateway -> backend -> gateway -> device, of frames sent
    /// in the window.
    pub rtt: Percentiles,
    /// How late the bench sent frames against their schedule, in the
    /// window: large values mean the bench, not the gateway, fell behind.
    pub send_lag: Percentiles,
    pub bench: VoiceBenchCpu,
    pub server: Option<VoiceServerCpu>,
    /// See `LoadReport::executor_stalls`.
    pub executor_stalls: u64,
    pub errors: ProblemCounts,
}

fn flow(f: &Flow) -> String {
    format!(
        "{} of {}; whole run {} of {} (duplicated {}, reordered {})",
        f.window_lost, f.window_expected, f.lost, f.expected, f.duplicated, f.reordered
    )
}

impl VoiceReport {
    /// The table printed after a run.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut t = Table {
            title: vec![
                format!(
                    "shardmq-bench voice -> {} (backend {}){}",
                    self.broker,
                    self.backend,
                    self.label
                        .as_ref()
                        .map_or(String::new(), |l| format!(" ({l})"))
                ),
                format!(
                    "  {} devices, {} B frames every {} ms{}, {} thread(s)",
                    c.devices,
                    c.frame_bytes,
                    c.frame_ms,
                    if c.signed { ", signed" } else { "" },
                    c.threads
                ),
                format!(
                    "  window {:.2} s after {:.2} s ramp + {:.2} s warm-up, drain {:.2} s",
                    self.window_s, c.ramp_s, c.warmup_s, self.drain_s
                ),
            ],
            rows: Vec::new(),
        };
        t.row(
            "devices connected",
            format!("{} of {}", self.devices_connected, c.devices),
        );
        t.row(
            "in conversation",
            format!(
                "{} at the end of the window ({} opened)",
                self.in_conversation, self.conversations_opened
            ),
        );
        let ms = |us: f64| format!("{:.1}", us / 1000.0);
        t.row(
            "hello p50 / p99 (ms)",
            format!(
                "{} / {}",
                ms(self.hello_latency.p50_us),
                ms(self.hello_latency.p99_us)
            ),
        );
        t.row(
            "up packets/s",
            format!(
                "{} sent, {} at the backend",
                thousands(self.up_sent_per_s),
                thousands(self.up_received_per_s)
            ),
        );
        t.row("down packets/s", thousands(self.down_received_per_s));
        t.row("up lost", flow(&self.up));
        t.row("down lost", flow(&self.down));
        latency_rows(&mut t, "RTT", &self.rtt);
        t.row(
            "send lag p99 / max (µs)",
            format!("{:.1} / {:.1}", self.send_lag.p99_us, self.send_lag.max_us),
        );
        t.row(
            "bench CPU ns/packet",
            format!(
                "{:.0} ({:.2} cores)",
                self.bench.ns_per_packet, self.bench.cores
            ),
        );
        if let Some(s) = &self.server {
            t.row(
                "server CPU s/1M packets",
                format!("{:.3} ({:.2} cores)", s.cpu_s_per_million_packets, s.cores),
            );
            cpu_split_row(&mut t, s.user_s, s.system_s);
            kernel_event_rows(&mut t, s.kernel_events.as_ref(), "packet");
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
