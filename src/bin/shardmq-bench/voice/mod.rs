//! The `voice` scenario: simulated xiaozhi devices against shardmq's voice
//! gateway, with the bench as the chat backend (protocol reference §4, §5,
//! §7), measuring the whole audio round trip.
//!
//! # Shape
//!
//! The main thread binds the backend's listening sockets (one per thread,
//! sharing the address), starts the executor threads through the common
//! [`Fleet`], and then only watches the clock as the other scenarios do:
//! go, ramp, warm-up, CPU snapshots at the edges of the measured window,
//! drain, stop, report.
//!
//! Each executor ([`thread`]) connects its devices over MQTT, then after
//! the go runs one task per device ([`device`]: hello, echoes, keepalive),
//! one sender that paces every frame of its devices, and its share of the
//! backend ([`backend`]). Frames carry a header ([`frame`]) from which the
//! backend and the devices count each direction ([`tally`]) and the
//! devices measure the round trip. Device ids and the hello are in
//! [`hello`]; the UDP header and cipher are the gateway's own
//! (`shardmq::voice::audio`, `shardmq::voice::packet`).

pub mod backend;
pub mod device;
pub mod frame;
pub mod hello;
pub mod report;
pub mod tally;
pub mod thread;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cli::{GlobalOpts, VoiceArgs};
use super::clock;
use super::fleet::{self, sleep_until, Fleet, ProgressLine, POLL};
use super::load::{per_million, Snapshot, DRAIN_IDLE, START_DELAY};
use super::perf;
use super::report::Percentiles;
use super::sys;
use super::transport::Transport;
use report::{VoiceBenchCpu, VoiceConfig, VoiceReport, VoiceServerCpu};
use thread::{Settings, ThreadSetup, VoiceStats};

/// Descriptors a run needs: per device its MQTT connection, its UDP
/// socket and, on the backend side, its WebSocket.
pub fn descriptors(args: &VoiceArgs) -> usize {
    args.devices as usize * 3
}

/// Device indexes of each of `threads` threads, round-robin so that every
/// thread gets its share of every part of the ramp.
pub fn split(devices: u32, threads: usize) -> Vec<Vec<u32>> {
    let threads = threads.max(1);
    let mut out = vec![Vec::new(); threads];
    for device in 0..devices {
        if let Some(share) = out.get_mut(device as usize % threads) {
            share.push(device);
        }
    }
    out
}

/// Runs `voice` and returns its report, or why it could not run.
pub fn run(global: &GlobalOpts, args: &VoiceArgs) -> Result<VoiceReport, String> {
    if global.transport != Transport::Tcp {
        // The simulated devices speak plain MQTT; their TLS is not simulated.
        return Err("voice devices connect over TCP: --transport is for the MQTT scenarios".into());
    }
    let threads = usize::from(global.threads);
    let (listeners, backend_addr) = backend::listen(args.backend_listen, threads)?;
    let settings = Arc::new(Settings {
        broker: fleet::resolve(&global.host, global.port)?,
        keepalive_s: global.keepalive,
        connect_timeout: global.connect_timeout,
        connect_concurrency: fleet::per_thread_concurrency(global),
        devices: args.devices,
        signature_key: args.signature_key.clone(),
        frame_bytes: args.frame_bytes,
        frame_ms: args.frame_ms,
        ramp: args.ramp,
        warmup: args.warmup,
        duration: args.duration,
        hello_timeout: args.hello_timeout,
    });
    let mut progress = ProgressLine::new(global.quiet, true).named("up", "down");
    let mut shares = split(args.devices, threads).into_iter();
    let mut listeners = listeners.into_iter();
    let fleet = Fleet::launch(global, threads, |start| {
        let listener = listeners
            .next()
            .ok_or_else(|| "no listening socket left".to_string())?;
        thread::spawn(ThreadSetup {
            start,
            settings: settings.clone(),
            devices: shares.next().unwrap_or_default(),
            listener,
        })
    })?;
    if !fleet.wait_ready(&mut progress, global.connect_timeout * 2) {
        fleet.stop();
        let (all, _) = fleet.join_each();
        let stats = merge(all);
        return Err(format!(
            "could not connect every device ({} connected; {})",
            stats.connected, stats.problems
        ));
    }
    let start = clock::now_ns() + clock::ns(START_DELAY);
    let timeline = settings.timeline(start);
    fleet.go(start);
    sleep_until(start + clock::ns(args.ramp), &fleet, &mut progress, "hello");
    sleep_until(timeline.warm_end, &fleet, &mut progress, "warm-up");
    let before = Snapshot::take(global.server_pid);
    let counting = perf::start_if_asked(global.server_perf, global.server_pid, args.duration);
    sleep_until(timeline.end, &fleet, &mut progress, "measure");
    let after = Snapshot::take(global.server_pid);
    let in_conversation = fleet.control.totals().conversations;
    let memory = global
        .server_pid
        .and_then(|pid| sys::memory(&pid.to_string()).ok());
    let drain_s = drain(&fleet, args.drain, &mut progress);
    fleet.stop();
    let (all, stalls) = fleet.join_each();
    let mut stats = merge(all);
    stats.executor_stalls += stalls;
    let mut report = assemble(global, args, &stats, &before, &after);
    report.backend = backend_addr.to_string();
    report.in_conversation = in_conversation;
    report.drain_s = drain_s;
    let packets = stats.up_sent_window + stats.down_received_window;
    let events = perf::finish(counting, packets);
    if let Some(server) = report.server.as_mut() {
        server.memory = memory.unwrap_or_default();
        server.kernel_events = events;
    }
    Ok(report)
}

fn merge(all: Vec<VoiceStats>) -> VoiceStats {
    let mut total = VoiceStats::default();
    for stats in all {
        total.merge(stats);
    }
    total
}

/// Waits until every frame sent has come back, or nothing has for a
/// while, at most `limit`. Returns how long it took.
fn drain(fleet: &Fleet<VoiceStats>, limit: Duration, progress: &mut ProgressLine) -> f64 {
    let began = Instant::now();
    let mut last = fleet.control.totals();
    let mut last_change = Instant::now();
    while began.elapsed() < limit {
        std::thread::sleep(POLL);
        fleet.ring();
        let t = fleet.control.totals();
        // A few rings first, so that the last frames sent are counted.
        if began.elapsed() >= 3 * POLL && t.delivered >= t.published {
            break;
        }
        if (t.published, t.delivered) != (last.published, last.delivered) {
            last = t;
            last_change = Instant::now();
        } else if last_change.elapsed() >= DRAIN_IDLE {
            // What is missing is not coming: UDP does not retransmit.
            break;
        }
        progress.tick("drain", &t);
    }
    began.elapsed().as_secs_f64()
}

/// Turns counts and snapshots into the report.
fn assemble(
    global: &GlobalOpts,
    args: &VoiceArgs,
    stats: &VoiceStats,
    before: &Snapshot,
    after: &Snapshot,
) -> VoiceReport {
    let window_s = args.duration.as_secs_f64().max(1e-9);
    let wall_s = (after.at - before.at).as_secs_f64().max(1e-9);
    let packets = stats.up_sent_window + stats.down_received_window;
    let bench_cpu_s = (after.bench - before.bench).as_secs_f64();
    let server = match (global.server_pid, before.server_spent(after)) {
        (Some(pid), Some(spent)) => {
            let cpu_s = spent.total().as_secs_f64();
            Some(VoiceServerCpu {
                pid,
                cpu_s,
                user_s: spent.user.as_secs_f64(),
                system_s: spent.system.as_secs_f64(),
                cores: cpu_s / wall_s,
                cpu_s_per_million_packets: per_million(cpu_s, packets),
                memory: sys::Memory::default(),
                kernel_events: None,
            })
        }
        _ => None,
    };
    let (up, down) = tally::flows(&stats.devices, &stats.backend);
    VoiceReport {
        label: global.label.clone(),
        scenario: "voice",
        broker: format!("{}:{}", global.host, global.port),
        backend: args.backend_listen.to_string(),
        config: VoiceConfig {
            devices: args.devices,
            frame_bytes: args.frame_bytes,
            frame_ms: args.frame_ms,
            signed: args.signature_key.is_some(),
            ramp_s: args.ramp.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            drain_limit_s: args.drain.as_secs_f64(),
            threads: usize::from(global.threads),
            cpus: global.cpus.as_ref().map(|c| c.0.clone()),
        },
        window_s: args.duration.as_secs_f64(),
        drain_s: 0.0,
        devices_connected: stats.connected,
        conversations_opened: stats.conversations,
        in_conversation: 0,
        hello_latency: Percentiles::of(&stats.hello),
        up_sent_per_s: stats.up_sent_window as f64 / window_s,
        up_received_per_s: stats.up_received_window as f64 / window_s,
        down_received_per_s: stats.down_received_window as f64 / window_s,
        up,
        down,
        rtt: Percentiles::of(&stats.rtt),
        send_lag: Percentiles::of(&stats.send_lag),
        bench: VoiceBenchCpu {
            cpu_s: bench_cpu_s,
            cores: bench_cpu_s / wall_s,
            ns_per_packet: per_million(bench_cpu_s, packets) * 1000.0,
        },
        server,
        executor_stalls: stats.executor_stalls,
        errors: stats.problems.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_dealt_round_robin() {
        assert_eq!(split(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(split(2, 3), vec![vec![0], vec![1], vec![]]);
        assert_eq!(split(3, 1), vec![vec![0, 1, 2]]);
    }
}
