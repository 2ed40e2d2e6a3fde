//! One executor thread: opens its share of the clients (`setup`), waits
//! for the main thread's go, runs one task per client plus two helpers,
//! and hands its counts back when the run stops.
//!
//! The helpers are the pacer (`pacer`), which wakes rate-limited
//! publishers when their next message is due, and the watcher, which
//! relays the main thread's stop and wakes every client at the end of the
//! window and once a second for keepalive. Phase signals come through the
//! doorbell (`doorbell`), never through a timer.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use super::client::Conn;
use super::clock;
use super::control::{bump, Control};
use super::doorbell::{self, Rings};
use super::idle::Idle;
use super::pacer::{self, Pacer};
use super::publisher::Publisher;
use super::scenario::{Load, SnPlan, ThreadPlan};
use super::setup::{self, Opened};
use super::sn::SnPublisher;
use super::stats::{Problem, ThreadStats};
use super::subscriber::Subscriber;
use super::sys;
use super::transport::Endpoint;

/// How often every client is woken to check its keepalive.
const KEEPALIVE_CHECK: Duration = Duration::from_secs(1);
/// A busy executor still runs its timers (the pacer's) this often.
const PREEMPT: Duration = Duration::from_millis(1);

/// io_uring entries per ring: at fleet shape a thread has thousands of
/// sockets with a poll armed, and at glommio's default depth every
/// wake-up cancels one by walking a long hash chain (see `RING_DEPTH` in
/// `voice::thread`).
const RING_DEPTH: usize = 4096;

/// What every thread of a run shares, read-only.
#[derive(Debug)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub keepalive_s: u16,
    pub connect_timeout: Duration,
    /// Connection attempts in flight at once on one thread.
    pub connect_concurrency: usize,
    /// Publishing parameters; `None` for idle connections.
    pub load: Option<Load>,
    /// Whether one client that cannot connect aborts the run.
    pub all_or_nothing: bool,
    /// `sn`: the gateway the publishers reach over UDP.
    pub sn: Option<SnSettings>,
}

/// Where and how the MQTT-SN publishers of `sn` publish.
#[derive(Debug)]
pub struct SnSettings {
    pub gateway: SocketAddr,
    pub plan: SnPlan,
}

/// The publishing schedule, in clock nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeline {
    pub start: u64,
    /// End of the warm-up, start of the measured window.
    pub warm_end: u64,
    /// End of the measured window and of publishing.
    pub end: u64,
}

impl Timeline {
    pub fn new(start: u64, warmup: Duration, duration: Duration) -> Timeline {
        let warm_end = start + clock::ns(warmup);
        Timeline {
            start,
            warm_end,
            end: warm_end + clock::ns(duration),
        }
    }

    pub fn in_window(&self, t: u64) -> bool {
        (self.warm_end..self.end).contains(&t)
    }
}

/// Why a driver's poll returned.
pub enum Step {
    /// Made progress and may make more now: poll again after others ran.
    Again,
    /// Nothing to do until a registered waker fires.
    Wait,
    /// The client is done.
    Finished,
}

/// State of one executor thread, shared by its tasks.
pub struct Local {
    pub control: Arc<Control>,
    pub index: usize,
    pub settings: Arc<Settings>,
    pub timeline: Cell<Timeline>,
    pub stats: RefCell<ThreadStats>,
    stopping: Cell<bool>,
    wakers: RefCell<Vec<Option<Waker>>>,
    pub pacer: Pacer,
}

impl Local {
    fn new(control: Arc<Control>, index: usize, settings: Arc<Settings>, slots: usize) -> Local {
        Local {
            control,
            index,
            settings,
            timeline: Cell::new(Timeline::default()),
            stats: RefCell::new(ThreadStats::default()),
            stopping: Cell::new(false),
            wakers: RefCell::new(vec![None; slots]),
            pacer: Pacer::new(slots),
        }
    }

    /// True once the run is over for this thread's clients.
    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Remembers the waker of the task in `slot`, for `wake_all`.
    pub fn park(&self, slot: usize, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        match &wakers[slot] {
            Some(w) if w.will_wake(waker) => {}
            _ => wakers[slot] = Some(waker.clone()),
        }
    }

    /// Asks the pacer to wake `slot` at clock time `at_ns`.
    pub fn wake_at(&self, slot: usize, at_ns: u64) {
        self.pacer.wake_at(slot, at_ns);
    }

    /// Wakes the task in `slot`, if it ran yet.
    pub fn wake(&self, slot: usize) {
        if let Some(w) = &self.wakers.borrow()[slot] {
            w.wake_by_ref();
        }
    }

    fn wake_all(&self) {
        for w in self.wakers.borrow().iter().flatten() {
            w.wake_by_ref();
        }
    }

    /// Counts a problem; those that end a connection also go to the
    /// progress line.
    /// Ends a client's run: a clean disconnect, or its problem recorded.
    pub async fn finish(&self, conn: Conn, outcome: Result<(), Problem>) {
        match outcome {
            Ok(()) => conn.close().await,
            Err(problem) => self.problem(problem, true),
        }
    }

    pub fn problem(&self, problem: Problem, fatal: bool) {
        self.stats.borrow_mut().problems.add(problem);
        if fatal {
            bump(&self.control.progress(self.index).failures, 1);
        }
    }
}

/// Runs a driver's poll function until it finishes or fails; the caller
/// then closes or drops the connection.
pub async fn drive(
    mut poll: impl FnMut(&mut Context<'_>) -> Result<Step, Problem>,
) -> Result<(), Problem> {
    loop {
        let step = poll_fn(|cx| match poll(cx) {
            Ok(Step::Wait) => Poll::Pending,
            other => Poll::Ready(other),
        })
        .await?;
        match step {
            Step::Finished => return Ok(()),
            // Let the thread's other clients run before polling again.
            _ => futures_lite::future::yield_now().await,
        }
    }
}

/// What the main thread hands to executor thread `index`.
pub struct ThreadSetup {
    pub index: usize,
    pub control: Arc<Control>,
    pub settings: Arc<Settings>,
    pub plan: ThreadPlan,
    /// This thread's end of its doorbell (see the module doc).
    pub doorbell: OwnedFd,
}

/// Starts an executor thread on `placement`; its result is its counts
/// once the run has stopped.
pub fn spawn(
    placement: Placement,
    setup: ThreadSetup,
) -> Result<glommio::ExecutorJoinHandle<ThreadStats>, String> {
    let index = setup.index;
    LocalExecutorBuilder::new(placement)
        .name(&format!("bench-{index}"))
        .preempt_timer(PREEMPT)
        .ring_depth(RING_DEPTH)
        .spawn(move || run(setup))
        .map_err(|e| format!("cannot start executor thread {index}: {e}"))
}

async fn run(setup: ThreadSetup) -> ThreadStats {
    let ThreadSetup {
        index,
        control,
        settings,
        plan,
        doorbell,
    } = setup;
    let (_finished, rings, bell) = enlist(index, &control, doorbell);
    let slots = plan.publishers.len() + plan.subscribers.len() + plan.idle.len();
    let local = Rc::new(Local::new(control.clone(), index, settings.clone(), slots));
    let (opened, failed) = setup::open_all(&local, plan).await;
    control.set_ready(failed && settings.all_or_nothing);
    let mut seen = 0;
    match wait_for_go(&control, &rings, &mut seen).await {
        Some(start) => run_clients(&local, opened, start, (rings, seen)).await,
        None => close_all(opened).await,
    }
    drop(bell);
    local.stats.take()
}

/// What every executor thread of a fleet does first: tells the main thread
/// its ids (for kicks), and starts its bell task. The `Finished` must live
/// as long as the thread's work; the bell task ends when its handle drops.
pub fn enlist(
    index: usize,
    control: &Arc<Control>,
    doorbell: OwnedFd,
) -> (Finished, Rc<Rings>, glommio::Task<()>) {
    let finished = Finished(control.clone(), index);
    control.set_thread_ids(index, sys::current_thread(), sys::current_tid());
    let rings = Rc::new(Rings::default());
    let bell = glommio::spawn_local(doorbell::listen(
        doorbell,
        rings.clone(),
        control.clone(),
        index,
    ));
    (finished, rings, bell)
}

/// Tells the main thread this thread is done, even if it panicked, so
/// that it stops ringing and joins.
pub struct Finished(pub Arc<Control>, pub usize);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.set_finished(self.1);
    }
}

/// Looks at the main thread's signals at every ring until it says go
/// (`Some(start)`) or stop (`None`).
pub async fn wait_for_go(control: &Control, rings: &Rings, seen: &mut u64) -> Option<u64> {
    loop {
        if control.stopped() {
            return None;
        }
        if let Some(start) = control.start_ns() {
            return Some(start);
        }
        if !rings.next(seen).await {
            return None;
        }
    }
}

async fn close_all(opened: Opened) {
    let publishers = opened.publishers.into_iter().map(|(_, c)| c);
    let subscribers = opened.subscribers.into_iter().map(|(_, c)| c);
    let tasks: Vec<_> = publishers
        .chain(subscribers)
        .chain(opened.idle)
        .map(|conn| glommio::spawn_local(conn.close()))
        .collect();
    for (_, client) in opened.sn_publishers {
        client.close().await;
    }
    for task in tasks {
        task.await;
    }
}

/// Runs every client to its end, with the pacer and the watcher.
async fn run_clients(local: &Rc<Local>, opened: Opened, start: u64, rings: (Rc<Rings>, u64)) {
    let timeline = match &local.settings.load {
        Some(load) => Timeline::new(start, load.warmup, load.duration),
        None => Timeline::new(start, Duration::ZERO, Duration::from_secs(u32::MAX.into())),
    };
    local.timeline.set(timeline);
    let mut slot = 0..;
    let mut tasks = Vec::new();
    for (spec, conn) in opened.publishers {
        let publisher = Publisher::new(local.clone(), slot.next().unwrap_or(0), spec, conn);
        tasks.push(glommio::spawn_local(publisher.run()));
    }
    for (spec, client) in opened.sn_publishers {
        let publisher = SnPublisher::new(local.clone(), slot.next().unwrap_or(0), spec, client);
        tasks.push(glommio::spawn_local(publisher.run()));
    }
    for (spec, conn) in opened.subscribers {
        let subscriber = Subscriber::new(local.clone(), slot.next().unwrap_or(0), spec, conn);
        tasks.push(glommio::spawn_local(subscriber.run()));
    }
    for conn in opened.idle {
        let idle = Idle::new(local.clone(), slot.next().unwrap_or(0), conn);
        tasks.push(glommio::spawn_local(idle.run()));
    }
    let pacer = glommio::spawn_local(pacer::run(local.clone()));
    let watcher = glommio::spawn_local(watch(local.clone(), rings));
    for task in tasks {
        task.await;
    }
    // Every client is done (or lost): the helpers have nothing left to do.
    local.stopping.set(true);
    drop(pacer);
    drop(watcher);
}

/// Relays the main thread's stop, and wakes every client at the end of
/// the window and periodically, so each notices what time it is.
async fn watch(local: Rc<Local>, (rings, mut seen): (Rc<Rings>, u64)) {
    let end = local.timeline.get().end;
    let mut end_announced = false;
    let mut last_wake = Instant::now();
    while !local.stopping() {
        let main_alive = rings.next(&mut seen).await;
        if !main_alive || local.control.stopped() {
            local.stopping.set(true);
            local.wake_all();
            return;
        }
        let periodic = local.settings.load.is_some() && last_wake.elapsed() >= KEEPALIVE_CHECK;
        let at_end = !end_announced && clock::now_ns() >= end;
        if periodic || at_end {
            end_announced |= at_end;
            last_wake = Instant::now();
            local.wake_all();
        }
    }
}
