//! The `churn` scenario: clients that each connect (clean session, a new
//! client id every time), wait for CONNACK, send DISCONNECT and close,
//! over and over. What a broker spends on a connection's whole life is
//! what a device fleet reconnecting in a storm after an outage costs it.
//!
//! The main thread runs the usual timeline (go, warm-up, CPU snapshots at
//! the edges of the measured window, stop); each executor thread runs its
//! share of the clients as tasks that loop until the window ends. A cycle
//! counts in the window when it completed there; its connect latency (TCP
//! connect to CONNACK) when it began there.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::cli::{ChurnArgs, GlobalOpts};
use super::client::Conn;
use super::clock;
use super::control::{bump, Control};
use super::doorbell::Rings;
use super::fleet::{self, sleep_until, Fleet, ProgressLine, ThreadStart};
use super::load::{Snapshot, START_DELAY};
use super::perf::{self, KernelEvents};
use super::report::{
    cpu_split_row, kernel_event_rows, latency_rows, stall_row, thousands, Percentiles, Table,
};
use super::stats::{new_histogram, Problem, ProblemCounts};
use super::transport::Endpoint;
use super::worker::{enlist, wait_for_go, Timeline};

/// A busy executor still runs its timers this often.
const PREEMPT: Duration = Duration::from_millis(1);

/// Pause of a client after a failed cycle, so that a broker refusing
/// connections is not hammered in a tight loop.
const BACKOFF: Duration = Duration::from_millis(10);

/// What every thread of a run shares, read-only.
#[derive(Debug)]
struct Settings {
    endpoint: Endpoint,
    keepalive_s: u16,
    connect_timeout: Duration,
    warmup: Duration,
    duration: Duration,
}

/// Everything one thread counted.
#[derive(Debug)]
pub struct ChurnStats {
    /// TCP connect to CONNACK (ns), of cycles begun in the window.
    connect: Histogram<u64>,
    /// TCP connect to the broker's close after DISCONNECT (ns), of
    /// cycles begun in the window.
    cycle: Histogram<u64>,
    cycles_window: u64,
    cycles_total: u64,
    executor_stalls: u64,
    problems: ProblemCounts,
}

impl Default for ChurnStats {
    fn default() -> ChurnStats {
        ChurnStats {
            connect: new_histogram(),
            cycle: new_histogram(),
            cycles_window: 0,
            cycles_total: 0,
            executor_stalls: 0,
            problems: ProblemCounts::default(),
        }
    }
}

impl ChurnStats {
    fn merge(&mut self, other: ChurnStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.connect.add(&other.connect);
        let _ = self.cycle.add(&other.cycle);
        self.cycles_window += other.cycles_window;
        self.cycles_total += other.cycles_total;
        self.executor_stalls += other.executor_stalls;
        self.problems.merge(&other.problems);
    }
}

/// The broker's cost over the window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChurnServer {
    pub pid: u32,
    pub cpu_s: f64,
    /// Of `cpu_s`, in user space (utime) and in the kernel (stime).
    pub user_s: f64,
    pub system_s: f64,
    pub cores: f64,
    /// Broker CPU milliseconds per 1,000 cycles (= µs per cycle).
    pub cpu_ms_per_thousand_cycles: f64,
    /// With `--server-perf`: system calls and io_uring submissions, per
    /// cycle.
    pub kernel_events: Option<KernelEvents>,
}

/// Report of `churn`.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    pub label: Option<String>,
    pub scenario: &'static str,
    pub broker: String,
    /// Clients cycling at once.
    pub clients: u32,
    pub threads: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    /// Cycles (CONNECT, CONNACK, DISCONNECT, close) completed in the window.
    pub cycles: u64,
    pub cycles_per_s: f64,
    /// Cycles completed over the whole run, warm-up included.
    pub cycles_total: u64,
    /// TCP connect to CONNACK.
    pub connect_latency: Percentiles,
    /// TCP connect to the broker's close after DISCONNECT.
    pub cycle_latency: Percentiles,
    pub bench_cpu_s: f64,
    pub bench_cores: f64,
    pub server: Option<ChurnServer>,
    /// See `LoadReport::executor_stalls`.
    pub executor_stalls: u64,
    pub errors: ProblemCounts,
}

/// Runs `churn` and returns its report, or why it could not run.
pub fn run(global: &GlobalOpts, args: &ChurnArgs) -> Result<ChurnReport, String> {
    let threads = usize::from(global.threads);
    let settings = Arc::new(Settings {
        endpoint: Endpoint::new(global, fleet::resolve(&global.host, global.port)?)?,
        keepalive_s: global.keepalive,
        connect_timeout: global.connect_timeout,
        warmup: args.warmup,
        duration: args.duration,
    });
    let mut progress = ProgressLine::new(global.quiet, true).named("connacks", "cycles");
    let mut shares = split(args.clients, threads).into_iter();
    let fleet = Fleet::launch(global, threads, |start| {
        spawn(start, settings.clone(), shares.next().unwrap_or(0))
    })?;
    // Nothing to set up: the clients connect in the loop.
    fleet.wait_ready(&mut progress, global.connect_timeout * 2);
    let start = clock::now_ns() + clock::ns(START_DELAY);
    let timeline = Timeline::new(start, args.warmup, args.duration);
    fleet.go(start);
    sleep_until(timeline.warm_end, &fleet, &mut progress, "warm-up");
    let before = Snapshot::take(global.server_pid);
    let counting = perf::start_if_asked(global.server_perf, global.server_pid, args.duration);
    sleep_until(timeline.end, &fleet, &mut progress, "measure");
    let after = Snapshot::take(global.server_pid);
    fleet.stop();
    let (all, stalls) = fleet.join_each();
    let mut stats = ChurnStats::default();
    for s in all {
        stats.merge(s);
    }
    stats.executor_stalls += stalls;
    if stats.cycles_total == 0 {
        return Err(format!(
            "no connection cycle completed ({})",
            stats.problems
        ));
    }
    let events = perf::finish(counting, stats.cycles_window);
    let wall_s = (after.at - before.at).as_secs_f64().max(1e-9);
    let window_s = args.duration.as_secs_f64().max(1e-9);
    let bench_cpu_s = (after.bench - before.bench).as_secs_f64();
    let server = match (global.server_pid, before.server_spent(&after)) {
        (Some(pid), Some(spent)) => {
            let cpu_s = spent.total().as_secs_f64();
            Some(ChurnServer {
                pid,
                cpu_s,
                user_s: spent.user.as_secs_f64(),
                system_s: spent.system.as_secs_f64(),
                cores: cpu_s / wall_s,
                cpu_ms_per_thousand_cycles: if stats.cycles_window == 0 {
                    0.0
                } else {
                    cpu_s * 1e6 / stats.cycles_window as f64
                },
                kernel_events: events,
            })
        }
        _ => None,
    };
    Ok(ChurnReport {
        label: global.label.clone(),
        scenario: "churn",
        broker: format!("{}:{}", global.host, global.port),
        clients: args.clients,
        threads,
        warmup_s: args.warmup.as_secs_f64(),
        window_s,
        cycles: stats.cycles_window,
        cycles_per_s: stats.cycles_window as f64 / window_s,
        cycles_total: stats.cycles_total,
        connect_latency: Percentiles::of(&stats.connect),
        cycle_latency: Percentiles::of(&stats.cycle),
        bench_cpu_s,
        bench_cores: bench_cpu_s / wall_s,
        server,
        executor_stalls: stats.executor_stalls,
        errors: stats.problems,
    })
}

/// Clients per thread: as even as possible.
fn split(clients: u32, threads: usize) -> Vec<usize> {
    let threads = threads.max(1);
    let clients = clients as usize;
    (0..threads)
        .map(|i| clients / threads + usize::from(i < clients % threads))
        .collect()
}

/// State of one executor thread, shared by its clients.
struct Local {
    control: Arc<Control>,
    index: usize,
    settings: Arc<Settings>,
    timeline: Timeline,
    stats: RefCell<ChurnStats>,
    stopping: Cell<bool>,
}

fn spawn(
    start: ThreadStart,
    settings: Arc<Settings>,
    clients: usize,
) -> Result<glommio::ExecutorJoinHandle<ChurnStats>, String> {
    let index = start.index;
    LocalExecutorBuilder::new(start.placement.clone())
        .name(&format!("bench-churn-{index}"))
        .preempt_timer(PREEMPT)
        .spawn(move || run_thread(start, settings, clients))
        .map_err(|e| format!("cannot start executor thread {index}: {e}"))
}

async fn run_thread(start: ThreadStart, settings: Arc<Settings>, clients: usize) -> ChurnStats {
    let (index, control) = (start.index, start.control);
    let (_finished, rings, bell) = enlist(index, &control, start.doorbell);
    control.set_ready(false);
    let mut seen = 0;
    let Some(go) = wait_for_go(&control, &rings, &mut seen).await else {
        drop(bell);
        return ChurnStats::default();
    };
    let timeline = Timeline::new(go, settings.warmup, settings.duration);
    let local = Rc::new(Local {
        control,
        index,
        settings,
        timeline,
        stats: RefCell::new(ChurnStats::default()),
        stopping: Cell::new(false),
    });
    let tasks: Vec<_> = (0..clients)
        .map(|client| glommio::spawn_local(cycle_until_stop(local.clone(), client)))
        .collect();
    let watcher = glommio::spawn_local(watch(local.clone(), rings, seen));
    for task in tasks {
        task.await;
    }
    drop(watcher);
    drop(bell);
    local.stats.take()
}

/// Relays the main thread's stop to the clients.
async fn watch(local: Rc<Local>, rings: Rc<Rings>, mut seen: u64) {
    while rings.next(&mut seen).await && !local.control.stopped() {}
    local.stopping.set(true);
}

/// One client: cycles from the go until the window ends or the run stops.
async fn cycle_until_stop(local: Rc<Local>, client: usize) {
    let timeline = local.timeline;
    glommio::timer::sleep(Duration::from_nanos(
        clock::until(timeline.start).as_nanos() as u64,
    ))
    .await;
    let mut n = 0u64;
    while !local.stopping.get() && clock::now_ns() < timeline.end {
        let client_id = format!("churn-{}-{client}-{n}", local.index);
        n += 1;
        if let Err(problem) = cycle(&local, &client_id).await {
            local.stats.borrow_mut().problems.add(problem);
            bump(&local.control.progress(local.index).failures, 1);
            glommio::timer::sleep(BACKOFF).await;
        }
    }
}

/// CONNECT (clean session), CONNACK, DISCONNECT, and the broker's close.
async fn cycle(local: &Local, client_id: &str) -> Result<(), Problem> {
    let s = &local.settings;
    let began = clock::now_ns();
    let conn = Conn::open(&s.endpoint, client_id, s.keepalive_s, s.connect_timeout).await?;
    let connected = clock::now_ns();
    let progress = local.control.progress(local.index);
    bump(&progress.published, 1);
    conn.close().await;
    let done = clock::now_ns();
    bump(&progress.delivered, 1);
    let mut stats = local.stats.borrow_mut();
    stats.cycles_total += 1;
    if local.timeline.in_window(done) {
        stats.cycles_window += 1;
    }
    if local.timeline.in_window(began) {
        stats.connect.saturating_record((connected - began).max(1));
        stats.cycle.saturating_record((done - began).max(1));
    }
    Ok(())
}

impl ChurnReport {
    /// The table printed after a run.
    pub fn table(&self) -> String {
        let mut t = Table {
            title: vec![
                format!(
                    "shardmq-bench churn -> {}{}",
                    self.broker,
                    self.label
                        .as_ref()
                        .map_or(String::new(), |l| format!(" ({l})"))
                ),
                format!(
                    "  {} clients each looping CONNECT, CONNACK, DISCONNECT, close; {} thread(s)",
                    self.clients, self.threads
                ),
                format!(
                    "  window {:.2} s after {:.2} s warm-up",
                    self.window_s, self.warmup_s
                ),
            ],
            rows: Vec::new(),
        };
        t.row("cycles/s", thousands(self.cycles_per_s));
        t.row(
            "cycles",
            format!(
                "{} in the window, {} in all",
                self.cycles, self.cycles_total
            ),
        );
        latency_rows(&mut t, "connect", &self.connect_latency);
        latency_rows(&mut t, "cycle", &self.cycle_latency);
        t.row(
            "bench CPU",
            format!("{:.3} s ({:.2} cores)", self.bench_cpu_s, self.bench_cores),
        );
        if let Some(s) = &self.server {
            t.row(
                "server CPU ms/1k cycles",
                format!("{:.3} ({:.2} cores)", s.cpu_ms_per_thousand_cycles, s.cores),
            );
            cpu_split_row(&mut t, s.user_s, s.system_s);
            kernel_event_rows(&mut t, s.kernel_events.as_ref(), "cycle");
        }
        stall_row(&mut t, self.executor_stalls);
        t.row("errors", self.errors.to_string());
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_shared_evenly() {
        assert_eq!(split(5, 2), vec![3, 2]);
        assert_eq!(split(2, 3), vec![1, 1, 0]);
        assert_eq!(split(100, 1), vec![100]);
    }
}
