//! The publishing scenarios (`p2p`, `fanout`, `fanin`, `latency`) as seen
//! from the main thread: set up, go, warm up, measure, drain, report.
//!
//! The main thread takes CPU snapshots (its own process, and the broker's)
//! at the edges of the measured window; the executors count by the same
//! timeline, so rates, CPU figures and latencies cover the same interval.

use std::time::{Duration, Instant};

use super::cli::GlobalOpts;
use super::cli::SnTopics;
use super::clock;
use super::fleet::{sleep_until, Fleet, ProgressLine, POLL};
use super::perf;
use super::report::{BenchCpu, LoadConfig, LoadReport, Percentiles, ServerCpu, SnConfig};
use super::scenario::{Load, Plan};
use super::stats::{Integrity, ThreadStats};
use super::sys::{self, CpuTimes};
use super::worker::Timeline;
use shardmq::mqtt::QoS;

/// Head start the threads get between the go and the first message.
pub const START_DELAY: Duration = Duration::from_millis(20);

/// At QoS 0, or once a client failed, the drain ends when no message has
/// arrived for this long: what is missing is not coming.
pub const DRAIN_IDLE: Duration = Duration::from_millis(300);

/// CPU readings at one instant.
pub struct Snapshot {
    pub at: Instant,
    pub bench: Duration,
    pub server: Option<CpuTimes>,
}

impl Snapshot {
    pub fn take(server_pid: Option<u32>) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            bench: sys::self_cpu(),
            server: server_pid.and_then(|pid| sys::process_cpu_times(pid).ok()),
        }
    }

    /// The broker's CPU time from `self` to `after`, when both were read.
    pub fn server_spent(&self, after: &Snapshot) -> Option<CpuTimes> {
        Some(after.server?.since(&self.server?))
    }
}

/// Runs a publishing scenario and returns its report, or why it could
/// not run.
pub fn run(global: &GlobalOpts, plan: &Plan) -> Result<LoadReport, String> {
    let load = plan.load.clone().ok_or("not a publishing scenario")?;
    let mut progress = ProgressLine::new(global.quiet, true);
    let fleet = Fleet::start(global, plan, true)?;
    if !fleet.wait_ready(&mut progress, global.connect_timeout * 2) {
        fleet.stop();
        let stats = fleet.join();
        return Err(format!(
            "could not set up every client ({} connected; {})",
            stats.connected, stats.problems
        ));
    }
    let start = clock::now_ns() + clock::ns(START_DELAY);
    let timeline = Timeline::new(start, load.warmup, load.duration);
    fleet.go(start);
    sleep_until(timeline.warm_end, &fleet, &mut progress, "warm-up");
    let before = Snapshot::take(global.server_pid);
    let counting = perf::start_if_asked(global.server_perf, global.server_pid, load.duration);
    sleep_until(timeline.end, &fleet, &mut progress, "measure");
    let after = Snapshot::take(global.server_pid);
    let memory = global
        .server_pid
        .and_then(|pid| sys::memory(&pid.to_string()).ok());
    let drain_s = drain(&fleet, plan, &load, &mut progress);
    fleet.stop();
    let stats = fleet.join();
    let mut report = assemble(global, plan, &load, &stats, &before, &after);
    report.drain_s = drain_s;
    let events = perf::finish(counting, report.delivered);
    if let Some(server) = report.server.as_mut() {
        server.memory = memory.unwrap_or_default();
        server.kernel_events = events;
    }
    Ok(report)
}

/// Waits until every publisher is done and every expected delivery has
/// arrived, at most `--drain`. Returns how long it took.
fn drain(fleet: &Fleet, plan: &Plan, load: &Load, progress: &mut ProgressLine) -> f64 {
    let began = Instant::now();
    let publishers = plan.publishers.len() as u64;
    let mut last_delivered = 0;
    let mut last_change = Instant::now();
    while began.elapsed() < load.drain {
        let t = fleet.control.totals();
        let expected = t.published * plan.deliveries_per_publish;
        let publishers_done = t.publishers_finished >= publishers;
        if publishers_done && t.delivered >= expected {
            break;
        }
        if t.delivered != last_delivered {
            last_delivered = t.delivered;
            last_change = Instant::now();
        }
        let give_up_early = load.qos == QoS::AtMostOnce || t.failures > 0;
        if give_up_early && publishers_done && last_change.elapsed() >= DRAIN_IDLE {
            break;
        }
        progress.tick("drain", &t);
        std::thread::sleep(POLL);
        fleet.ring();
    }
    began.elapsed().as_secs_f64()
}

/// Turns counts and snapshots into the report.
fn assemble(
    global: &GlobalOpts,
    plan: &Plan,
    load: &Load,
    stats: &ThreadStats,
    before: &Snapshot,
    after: &Snapshot,
) -> LoadReport {
    let window_s = load.duration.as_secs_f64();
    let wall_s = (after.at - before.at).as_secs_f64().max(1e-9);
    let delivered = stats.delivered_window;
    let bench_cpu_s = (after.bench - before.bench).as_secs_f64();
    let server = match (global.server_pid, before.server_spent(after)) {
        (Some(pid), Some(spent)) => {
            let cpu_s = spent.total().as_secs_f64();
            Some(ServerCpu {
                pid,
                cpu_s,
                user_s: spent.user.as_secs_f64(),
                system_s: spent.system.as_secs_f64(),
                cores: cpu_s / wall_s,
                cpu_s_per_million_delivered: per_million(cpu_s, delivered),
                memory: sys::Memory::default(),
                kernel_events: None,
            })
        }
        _ => None,
    };
    LoadReport {
        label: global.label.clone(),
        scenario: plan.scenario,
        broker: format!("{}:{}", global.host, global.port),
        sn: plan.sn.map(|sn| SnConfig {
            gateway: format!("{}:{}", global.host, sn.port),
            topics: match sn.topics {
                SnTopics::Register => "register",
                SnTopics::Predefined => "predefined",
            },
            retry_s: sn.retry.as_secs_f64(),
        }),
        config: LoadConfig {
            publishers: plan.publishers.len(),
            subscribers: plan.subscribers.len(),
            qos: load.qos as u8,
            payload_bytes: load.payload,
            rate_per_publisher: load.rate,
            inflight: load.inflight,
            duration_s: window_s,
            warmup_s: load.warmup.as_secs_f64(),
            drain_limit_s: load.drain.as_secs_f64(),
            threads: usize::from(global.threads),
            cpus: global.cpus.as_ref().map(|c| c.0.clone()),
        },
        window_s,
        drain_s: 0.0,
        published: stats.published_window,
        delivered,
        published_per_s: stats.published_window as f64 / window_s.max(1e-9),
        delivered_per_s: delivered as f64 / window_s.max(1e-9),
        latency: Percentiles::of(&stats.latency),
        integrity: Integrity::of(&stats.publishers, &stats.pairs),
        loss_allowed: load.qos == QoS::AtMostOnce,
        bench: BenchCpu {
            cpu_s: bench_cpu_s,
            cores: bench_cpu_s / wall_s,
            ns_per_delivered: per_million(bench_cpu_s, delivered) * 1000.0,
        },
        server,
        executor_stalls: stats.executor_stalls,
        errors: stats.problems.clone(),
    }
}

/// `seconds` per million `count` (0 when nothing was counted).
pub fn per_million(seconds: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        seconds * 1e6 / count as f64
    }
}
