//! The `conns` scenario from the main thread: measure the broker's memory,
//! open N connections as fast as the broker takes them, hold them idle,
//! measure again, disconnect.
//!
//! The per-connection figure is the growth of the broker's resident memory
//! divided by the connections established: user-space memory only, since
//! socket buffers live in the kernel.

use std::time::Instant;

use super::cli::{ConnsArgs, GlobalOpts};
use super::clock;
use super::fleet::{sleep_until, Fleet, ProgressLine};
use super::report::{ConnsReport, ConnsServer, Percentiles};
use super::scenario::Plan;
use super::sys::{self, Memory};

/// Runs `conns` and returns its report, or why it could not run.
pub fn run(global: &GlobalOpts, args: &ConnsArgs, plan: &Plan) -> Result<ConnsReport, String> {
    let server_pid = global.server_pid;
    let server_memory = || server_pid.and_then(|pid| sys::memory(&pid.to_string()).ok());
    let server_cpu = || server_pid.and_then(|pid| sys::process_cpu(pid).ok());
    let server_before = server_memory();
    let cpu_before = server_cpu();
    let bench_before = sys::memory("self").unwrap_or_default();
    let mut progress = ProgressLine::new(global.quiet, false);

    let began = Instant::now();
    let fleet = Fleet::start(global, plan, false)?;
    let completed = fleet.wait_ready(&mut progress, global.connect_timeout * 2);
    let connect_s = began.elapsed().as_secs_f64();
    let setup = fleet.control.totals();
    if completed {
        fleet.go(clock::now_ns());
        let hold_end = clock::now_ns() + clock::ns(args.hold);
        sleep_until(hold_end, &fleet, &mut progress, "holding");
    }
    let held = fleet.control.totals();
    let server_after = server_memory();
    let cpu_after = server_cpu();
    let bench_after = sys::memory("self").unwrap_or_default();
    fleet.stop();
    let stats = fleet.join();

    let established = stats.connected;
    if established == 0 {
        return Err(format!("no connection established ({})", stats.problems));
    }
    let lost_while_held = held.failures - setup.failures;
    let server = match (server_pid, server_before, server_after) {
        (Some(pid), Some(before), Some(after)) => Some(ConnsServer {
            pid,
            before,
            after,
            rss_bytes_per_conn: per_conn(before.vm_rss_kib, after.vm_rss_kib, established),
            anonymous_bytes_per_conn: per_conn(
                before.anonymous_kib,
                after.anonymous_kib,
                established,
            ),
            cpu_s: match (cpu_before, cpu_after) {
                (Some(b), Some(a)) => (a - b).as_secs_f64(),
                _ => 0.0,
            },
        }),
        _ => None,
    };
    Ok(ConnsReport {
        label: global.label.clone(),
        scenario: "conns",
        broker: format!("{}:{}", global.host, global.port),
        requested: u64::from(args.count),
        established,
        held: if completed {
            established.saturating_sub(lost_while_held)
        } else {
            0
        },
        connect_s,
        connects_per_s: established as f64 / connect_s.max(1e-9),
        connect_latency: Percentiles::of(&stats.connect_latency),
        hold_s: args.hold.as_secs_f64(),
        keepalive_s: global.keepalive,
        pings_answered: stats.pings,
        threads: usize::from(global.threads),
        bench_rss_bytes_per_conn: bench_per_conn(&bench_before, &bench_after, established),
        server,
        executor_stalls: stats.executor_stalls,
        errors: stats.problems,
    })
}

/// Growth in bytes per connection of a KiB figure.
fn per_conn(before_kib: u64, after_kib: u64, conns: u64) -> f64 {
    if conns == 0 {
        return 0.0;
    }
    (after_kib as f64 - before_kib as f64) * 1024.0 / conns as f64
}

fn bench_per_conn(before: &Memory, after: &Memory, conns: u64) -> f64 {
    per_conn(before.vm_rss_kib, after.vm_rss_kib, conns)
}
