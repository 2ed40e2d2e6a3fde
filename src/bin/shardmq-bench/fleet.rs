//! The main thread's handle on the executor threads: starting them with
//! their share of the plan, watching them set up, and collecting their
//! counts; plus the progress line printed while they run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::Placement;

use super::cli::GlobalOpts;
use super::clock;
use super::control::{Control, Totals};
use super::doorbell::{self, Bells};
use super::scenario::Plan;
use super::stats::ThreadStats;
use super::sys;
use super::transport::Endpoint;
use super::worker::{self, Settings, SnSettings, ThreadSetup};

/// How often the main thread looks at the counters and rings the
/// doorbells (see `doorbell`).
pub const POLL: Duration = Duration::from_millis(10);

/// The executor threads of a run; `S` is what each thread hands back.
pub struct Fleet<S: Send + 'static = ThreadStats> {
    pub control: Arc<Control>,
    pub threads: usize,
    handles: Vec<glommio::ExecutorJoinHandle<S>>,
    bells: Bells,
}

/// What `Fleet::launch` gives the function that starts thread `index`.
pub struct ThreadStart {
    pub index: usize,
    pub placement: Placement,
    pub control: Arc<Control>,
    /// The thread's end of its doorbell (see `doorbell`).
    pub doorbell: OwnedFd,
}

impl Fleet {
    /// Starts `--threads` executors, each opening its share of `plan`.
    pub fn start(global: &GlobalOpts, plan: &Plan, all_or_nothing: bool) -> Result<Fleet, String> {
        let threads = usize::from(global.threads);
        let settings = Arc::new(Settings {
            endpoint: Endpoint::new(global, resolve(&global.host, global.port)?)?,
            keepalive_s: global.keepalive,
            connect_timeout: global.connect_timeout,
            connect_concurrency: per_thread_concurrency(global),
            load: plan.load.clone(),
            all_or_nothing,
            sn: match plan.sn {
                Some(sn) => Some(SnSettings {
                    gateway: resolve(&global.host, sn.port)?,
                    plan: sn,
                }),
                None => None,
            },
        });
        let mut plans = plan.split(threads).into_iter();
        Fleet::launch(global, threads, |start| {
            let setup = ThreadSetup {
                index: start.index,
                control: start.control,
                settings: settings.clone(),
                plan: plans.next().unwrap_or_default(),
                doorbell: start.doorbell,
            };
            worker::spawn(start.placement, setup)
        })
    }

    /// Waits for every thread to end (after `stop`) and merges their
    /// counts.
    pub fn join(self) -> ThreadStats {
        let (all, stalls) = self.join_each();
        let mut total = ThreadStats {
            executor_stalls: stalls,
            ..ThreadStats::default()
        };
        for stats in all {
            total.merge(stats);
        }
        total
    }
}

impl<S: Send + 'static> Fleet<S> {
    /// Starts `threads` executors with `spawn`, placed per `--cpus`, each
    /// with its doorbell; a thread that cannot start stops the others.
    pub fn launch(
        global: &GlobalOpts,
        threads: usize,
        mut spawn: impl FnMut(ThreadStart) -> Result<glommio::ExecutorJoinHandle<S>, String>,
    ) -> Result<Fleet<S>, String> {
        // Here, not in `main`: a kick without the handler is ignored, and
        // the tests run fleets without going through `main`.
        sys::install_interrupt_handler()
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
        let control = Arc::new(Control::new(threads));
        let mut fleet = Fleet {
            control: control.clone(),
            threads,
            handles: Vec::with_capacity(threads),
            bells: Bells::default(),
        };
        for index in 0..threads {
            let placement = match &global.cpus {
                Some(list) => Placement::Fixed(list.0[index % list.0.len()]),
                None => Placement::Unbound,
            };
            let (ours, theirs) = doorbell::pair()?;
            fleet.bells.add(ours);
            let start = ThreadStart {
                index,
                placement,
                control: control.clone(),
                doorbell: theirs,
            };
            match spawn(start) {
                Ok(handle) => fleet.handles.push(handle),
                Err(e) => {
                    // The threads already started are waiting for a go
                    // that will not come: stop and reap them.
                    control.set_ready(true);
                    fleet.stop();
                    fleet.join_each();
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

    /// Waits for every thread to end (after `stop`) and returns what each
    /// handed back, and the executor stalls seen. The doorbells keep
    /// ringing meanwhile: closing clients wait on timers.
    pub fn join_each(self) -> (Vec<S>, u64) {
        while self.control.finished_threads() < self.handles.len() {
            self.ring();
            std::thread::sleep(POLL);
        }
        let stalls = self.bells.stalls();
        let mut all = Vec::with_capacity(self.handles.len());
        for handle in self.handles {
            match handle.join() {
                Ok(stats) => all.push(stats),
                Err(e) => eprintln!("an executor thread failed: {e}"),
            }
        }
        (all, stalls)
    }
}

/// Connection attempts in flight at once on one thread.
pub fn per_thread_concurrency(global: &GlobalOpts) -> usize {
    (global.connect_concurrency as usize).div_ceil(usize::from(global.threads))
}

/// The first address of `host:port`.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} has no address"))
}

/// Sleeps until the clock reads `at_ns`, ringing the doorbells and
/// ticking the progress line.
pub fn sleep_until<S: Send + 'static>(
    at_ns: u64,
    fleet: &Fleet<S>,
    progress: &mut ProgressLine,
    phase: &str,
) {
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
    /// What the two rates count.
    names: (&'static str, &'static str),
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
            names: ("published", "delivered"),
            started: now,
            last: now,
            last_totals: Totals::default(),
        }
    }

    /// Names the two rates, e.g. ("up", "down").
    pub fn named(mut self, sent: &'static str, received: &'static str) -> ProgressLine {
        self.names = (sent, received);
        self
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
                "{} {:>10.0}/s  {} {:>10.0}/s  ",
                self.names.0,
                rate(totals.published, self.last_totals.published),
                self.names.1,
                rate(totals.delivered, self.last_totals.delivered),
            )
        } else {
            String::new()
        };
        let conversations = if totals.conversations > 0 {
            format!("  in conversation {}", totals.conversations)
        } else {
            String::new()
        };
        eprintln!(
            "[{:6.1}s] {phase:<10} {rates}connected {}{conversations}  failures {}",
            self.started.elapsed().as_secs_f64(),
            totals.connected,
            totals.failures,
        );
        self.last = Instant::now();
        self.last_totals = *totals;
    }
}
