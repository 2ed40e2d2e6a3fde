//! The main thread's handle on the executor threads: starting them with
//! their share of the plan, watching them set up, and collecting their
//! counts; plus the progress line printed while they run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::Placement;

use super::cli::GlobalOpts;
use super::clock;
use super::control::{Control, Totals};
use super::doorbell::{self, Bells};
use super::scenario::Plan;
use super::stats::ThreadStats;
use super::worker::{self, Settings, ThreadSetup};

/// How often the main thread looks at the counters and rings the
/// doorbells (see `doorbell`).
pub const POLL: Duration = Duration::from_millis(10);

/// The executor threads of a run.
pub struct Fleet {
    pub control: Arc<Control>,
    pub threads: usize,
    handles: Vec<glommio::ExecutorJoinHandle<ThreadStats>>,
    bells: Bells,
}

impl Fleet {
    /// Starts `--threads` executors, each opening its share of `plan`.
    pub fn start(global: &GlobalOpts, plan: &Plan, all_or_nothing: bool) -> Result<Fleet, String> {
        let threads = usize::from(global.threads);
        let per_thread = (global.connect_concurrency as usize).div_ceil(threads);
        let settings = Arc::new(Settings {
            addr: resolve(&global.host, global.port)?,
            keepalive_s: global.keepalive,
            connect_timeout: global.connect_timeout,
            connect_concurrency: per_thread,
            load: plan.load.clone(),
            all_or_nothing,
        });
        let control = Arc::new(Control::new(threads));
        let mut fleet = Fleet {
            control: control.clone(),
            threads,
            handles: Vec::with_capacity(threads),
            bells: Bells::default(),
        };
        for (index, plan) in plan.split(threads).into_iter().enumerate() {
            let placement = match &global.cpus {
                Some(list) => Placement::Fixed(list.0[index % list.0.len()]),
                None => Placement::Unbound,
            };
            let (ours, theirs) = doorbell::pair()?;
            fleet.bells.add(ours);
            let setup = ThreadSetup {
                index,
                control: control.clone(),
                settings: settings.clone(),
                plan,
                doorbell: theirs,
            };
            match worker::spawn(placement, setup) {
                Ok(handle) => fleet.handles.push(handle),
                Err(e) => {
                    // The threads already started are waiting for a go
                    // that will not come: stop and reap them.
                    control.set_ready(true);
                    fleet.stop();
                    fleet.join();
                    return Err(e);
                }
            }
        }
        Ok(fleet)
    }

    /// Waits until every thread has opened its clients. False if some
    /// could not, or if nothing moved for `stall` (the broker is gone).
    pub fn wait_ready(&self, progress: &mut ProgressLine, stall: Duration) -> bool {
        let mut last = self.control.totals();
        let mut last_change = Instant::now();
        while self.control.ready_threads() < self.threads {
            self.ring();
            std::thread::sleep(POLL);
            let totals = self.control.totals();
            progress.tick("connecting", &totals);
            if totals != last {
                last = totals;
                last_change = Instant::now();
            } else if last_change.elapsed() > stall {
                eprintln!("no connection progress for {stall:?}: giving up");
                self.stop();
                return false;
            }
        }
        !self.control.setup_failed()
    }

    /// Lets the threads start, publishing from `start_ns` on.
    pub fn go(&self, start_ns: u64) {
        self.control.go(start_ns);
        self.ring();
    }

    /// Tells the threads to stop.
    pub fn stop(&self) {
        self.control.stop();
        self.ring();
    }

    /// Wakes every thread's watcher, which looks at `control` then, and
    /// kicks threads that stopped answering (see `doorbell`).
    pub fn ring(&self) {
        self.bells.ring(&self.control);
    }

    /// Waits for every thread to end (after `stop`) and merges their
    /// counts. The doorbells keep ringing meanwhile: closing clients wait
    /// on timers.
    pub fn join(self) -> ThreadStats {
        while self.control.finished_threads() < self.handles.len() {
            self.ring();
            std::thread::sleep(POLL);
        }
        let mut total = ThreadStats {
            executor_stalls: self.bells.stalls(),
            ..ThreadStats::default()
        };
        for handle in self.handles {
            match handle.join() {
                Ok(stats) => total.merge(stats),
                Err(e) => eprintln!("an executor thread failed: {e}"),
            }
        }
        total
    }
}

/// The first address of `host:port`.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} has no address"))
}

/// Sleeps until the clock reads `at_ns`, ringing the doorbells and
/// ticking the progress line.
pub fn sleep_until(at_ns: u64, fleet: &Fleet, progress: &mut ProgressLine, phase: &str) {
    loop {
        let left = clock::until(at_ns);
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
        fleet.ring();
        progress.tick(phase, &fleet.control.totals());
    }
}

/// The line on stderr, about once per second.
pub struct ProgressLine {
    quiet: bool,
    /// Whether the run publishes (rates are worth printing).
    traffic: bool,
    started: Instant,
    last: Instant,
    last_totals: Totals,
}

impl ProgressLine {
    pub fn new(quiet: bool, traffic: bool) -> ProgressLine {
        let now = Instant::now();
        ProgressLine {
            quiet,
            traffic,
            started: now,
            last: now,
            last_totals: Totals::default(),
        }
    }

    /// Prints a line if a second has passed since the last one.
    pub fn tick(&mut self, phase: &str, totals: &Totals) {
        let elapsed = self.last.elapsed();
        if self.quiet || elapsed < Duration::from_secs(1) {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let rate = |now: u64, before: u64| (now - before) as f64 / secs;
        let rates = if self.traffic {
            format!(
                "published {:>10.0}/s  delivered {:>10.0}/s  ",
                rate(totals.published, self.last_totals.published),
                rate(totals.delivered, self.last_totals.delivered),
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{:6.1}s] {phase:<10} {rates}connected {}  failures {}",
            self.started.elapsed().as_secs_f64(),
            totals.connected,
            totals.failures,
        );
        self.last = Instant::now();
        self.last_totals = *totals;
    }
}
