//! `shardmq-bench`: an MQTT 3.1.1 load generator for any broker, and an
//! end-to-end load generator for shardmq's voice gateway ([`voice`], which
//! has its own threads but shares the fleet, clock, doorbell and report
//! machinery described here) and for its MQTT-SN gateway ([`sn`], whose
//! publishers are MQTT-SN clients over UDP in the same executors).
//!
//! It is a binary of the package, not part of the library: it speaks to a
//! broker through the library's public codec and voice packet types, as any
//! client could.
//!
//! # Shape
//!
//! The main thread parses the command line, turns the scenario into a
//! [`scenario::Plan`] (clients, topics, expectations), starts one glommio
//! executor per `--threads` ([`fleet`]), and then only watches the clock:
//! it signals go, takes CPU snapshots at the edges of the measured window,
//! decides when the drain is over, and assembles the [`report`].
//!
//! Each executor ([`worker`]) opens its clients ([`setup`], [`client`],
//! over the [`transport`] that `--transport` names) and runs one task per
//! client: [`publisher`] or [`sn`] (paced by [`pacer`]), [`subscriber`] or
//! [`idle`]. Payloads carry a header ([`payload`])
//! stamped on one process-wide clock ([`clock`]), from which subscribers
//! compute latency and track sequence numbers ([`stats`]). Threads share
//! only [`control`]: phase signals one way, running totals the other; the
//! [`doorbell`] carries the wake-ups.
//!
//! `churn` ([`churn`]) has no clients to set up: its executors run
//! clients that connect and disconnect in a loop, on the same timeline.
//! With `--server-perf`, [`perf`] counts the broker's system calls and
//! io_uring submissions over the measured window.
//!
//! # Not the bottleneck
//!
//! One io_uring loop per core drives many sockets; a publisher appends a
//! batch of packets to its write buffer and writes it with one syscall; a
//! subscriber reads up to 256 KiB at once and decodes in place. Buffers,
//! payload templates and the latency histogram are allocated up front, so
//! the per-message path allocates nothing. The bench reports its own CPU
//! time per delivered message to show how much headroom it had.

mod churn;
mod cli;
mod client;
mod clock;
mod conns;
mod control;
mod doorbell;
mod fleet;
mod idle;
mod load;
mod pacer;
mod payload;
mod perf;
mod publisher;
mod report;
mod scenario;
mod setup;
mod sn;
mod stats;
mod subscriber;
mod sys;
mod transport;
mod voice;
mod worker;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Scenario};
use scenario::Plan;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs the scenario of `cli`, prints its report, and returns the exit
/// status: 0 after a report, 1 if the run could not take place, 2 for a
/// `--server-pid` that names no readable process.
fn run(cli: Cli) -> ExitCode {
    if let Scenario::Sn(args) = &cli.scenario {
        if let Err(e) = args.check() {
            eprintln!("shardmq-bench: {e}");
            return ExitCode::from(2);
        }
    }
    let plan = Plan::new(&cli.scenario);
    check_open_files(match &cli.scenario {
        Scenario::Voice(args) => voice::descriptors(args),
        Scenario::Churn(args) => args.clients as usize,
        _ => plan.connections(),
    });
    // Start the clock before any thread reads it.
    clock::now_ns();
    let global = &cli.global;
    if let Some(pid) = global.server_pid {
        if let Err(e) = sys::process_cpu(pid) {
            eprintln!("shardmq-bench: --server-pid {pid}: {e}");
            return ExitCode::from(2);
        }
    }
    let json = global.json.as_deref();
    let written = match &cli.scenario {
        Scenario::Conns(args) => {
            conns::run(global, args, &plan).map(|r| report::emit(&r, &r.table(), json))
        }
        Scenario::Voice(args) => {
            voice::run(global, args).map(|r| report::emit(&r, &r.table(), json))
        }
        Scenario::Churn(args) => {
            churn::run(global, args).map(|r| report::emit(&r, &r.table(), json))
        }
        _ => load::run(global, &plan).map(|r| report::emit(&r, &r.table(), json)),
    };
    match written {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("shardmq-bench: cannot write the report: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("shardmq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-files limit and warns if the run needs more.
fn check_open_files(connections: usize) {
    // Descriptors of the executors, stdio and /proc reads on top.
    const SPARE: u64 = 64;
    match sys::raise_open_files_limit() {
        Ok(limit) if limit < connections as u64 + SPARE => eprintln!(
            "shardmq-bench: warning: {connections} descriptors needed but only {limit} open files allowed"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("shardmq-bench: warning: cannot raise the open-files limit: {e}"),
    }
}

#[cfg(test)]
mod tests;
