//! One executor thread of the voice scenario: its share of the devices,
//! one listener of the chat backend, the sender that paces every frame of
//! its devices, and the watcher that relays the main thread's signals.
//!
//! The backend listeners of all threads share one address
//! (`SO_REUSEPORT`), so a device's WebSocket (opened by the gateway) may
//! land on any thread; the backend and device halves of the counts are
//! joined by device index at the end (`tally`).
//!
//! Frames are paced by one sender per thread rather than a timer per
//! device: a heap of (due time, device) and one timer for the earliest.
//! Every device has the same period, so each keeps the phase its hello
//! gave it, and the ramp spreads the phases.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::timer::Timer;
use glommio::LocalExecutorBuilder;
use hdrhistogram::Histogram;

use super::backend;
use super::device::{self, Stream};
use super::tally::{BackendTally, DeviceTally};
use crate::client::{Conn, Login};
use crate::clock;
use crate::control::{bump, Control};
use crate::doorbell::Rings;
use crate::fleet::ThreadStart;
use crate::stats::{new_histogram, Problem, ProblemCounts};
use crate::transport::Endpoint;
use crate::worker::{enlist, wait_for_go, Timeline};
use shardmq::voice::identity;

/// A busy executor still runs its timers (the sender's) this often.
const PREEMPT: Duration = Duration::from_millis(1);

/// io_uring entries per ring. Every idle socket has a poll request in the
/// kernel's cancel table, which has `ilog2(2 * depth) - 5` hash bits (at
/// most 8), and each time glommio wakes it cancels one poll by a lookup
/// in that table: at the default depth of 128 the table has 8 buckets, and
/// with thousands of devices each wake-up walks hundreds of entries.
const RING_DEPTH: usize = 4096;

/// The longest the sender sleeps without looking at its heap.
const SENDER_IDLE: Duration = Duration::from_millis(10);

/// What every thread of a run shares, read-only.
#[derive(Debug)]
pub struct Settings {
    pub broker: SocketAddr,
    pub keepalive_s: u16,
    pub connect_timeout: Duration,
    /// Connection attempts in flight at once on one thread.
    pub connect_concurrency: usize,
    /// Devices of the whole run.
    pub devices: u32,
    pub signature_key: Option<String>,
    pub frame_bytes: usize,
    pub frame_ms: u32,
    pub ramp: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub hello_timeout: Duration,
}

impl Settings {
    /// The schedule from the go: hellos over the ramp, then the warm-up,
    /// then the measured window.
    pub fn timeline(&self, start: u64) -> Timeline {
        Timeline::new(start, self.ramp + self.warmup, self.duration)
    }

    /// When device `device` sends its hello: the devices take turns over
    /// the ramp, in index order, whichever thread they are on.
    pub fn hello_at(&self, start: u64, device: u32) -> u64 {
        let offset =
            u128::from(clock::ns(self.ramp)) * u128::from(device) / u128::from(self.devices.max(1));
        start + offset as u64
    }

    pub fn period_ns(&self) -> u64 {
        u64::from(self.frame_ms) * 1_000_000
    }

    /// The credentials device `device` connects with (§3.2): a user name
    /// as the gateway's tools give one, and the password of the signature
    /// key when there is one.
    pub fn login(&self, device: u32) -> (String, String, Option<String>) {
        let client_id = super::hello::client_id(device);
        let username = identity::username_for_ip("127.0.0.1");
        let password = self
            .signature_key
            .as_ref()
            .map(|key| identity::password(key.as_bytes(), &client_id, &username));
        (client_id, username, password)
    }
}

/// Everything one thread counted.
#[derive(Debug)]
pub struct VoiceStats {
    /// Device send to echo back (ns) of frames sent in the window.
    pub rtt: Histogram<u64>,
    /// Hello published to reply read (ns).
    pub hello: Histogram<u64>,
    /// TCP connect to CONNACK (ns).
    pub connect: Histogram<u64>,
    /// How late the sender was on its schedule (ns), in the window.
    pub send_lag: Histogram<u64>,
    pub connected: u64,
    /// Hellos answered.
    pub conversations: u64,
    /// Frames the devices sent in the window.
    pub up_sent_window: u64,
    /// Frames the backend received in the window.
    pub up_received_window: u64,
    /// Echoes the devices received in the window.
    pub down_received_window: u64,
    pub executor_stalls: u64,
    pub problems: ProblemCounts,
    pub devices: Vec<DeviceTally>,
    pub backend: Vec<BackendTally>,
}

impl Default for VoiceStats {
    fn default() -> VoiceStats {
        VoiceStats {
            rtt: new_histogram(),
            hello: new_histogram(),
            connect: new_histogram(),
            send_lag: new_histogram(),
            connected: 0,
            conversations: 0,
            up_sent_window: 0,
            up_received_window: 0,
            down_received_window: 0,
            executor_stalls: 0,
            problems: ProblemCounts::default(),
            devices: Vec::new(),
            backend: Vec::new(),
        }
    }
}

impl VoiceStats {
    /// Adds another thread's counts to these.
    pub fn merge(&mut self, other: VoiceStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.rtt.add(&other.rtt);
        let _ = self.hello.add(&other.hello);
        let _ = self.connect.add(&other.connect);
        let _ = self.send_lag.add(&other.send_lag);
        self.connected += other.connected;
        self.conversations += other.conversations;
        self.up_sent_window += other.up_sent_window;
        self.up_received_window += other.up_received_window;
        self.down_received_window += other.down_received_window;
        self.executor_stalls += other.executor_stalls;
        self.problems.merge(&other.problems);
        self.devices.extend(other.devices);
        self.backend.extend(other.backend);
    }
}

/// The sender's schedule: which device's next frame is due when.
#[derive(Default)]
pub struct Sender {
    streams: RefCell<Vec<Option<Rc<Stream>>>>,
    due: RefCell<BinaryHeap<Reverse<(u64, usize)>>>,
    kicked: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Sender {
    fn new(slots: usize) -> Sender {
        Sender {
            streams: RefCell::new(vec![None; slots]),
            ..Sender::default()
        }
    }

    /// Starts streaming `stream` from `slot`, its first frame due at `at`.
    pub fn start(&self, slot: usize, stream: Rc<Stream>, at: u64) {
        if let Some(s) = self.streams.borrow_mut().get_mut(slot) {
            *s = Some(stream);
            self.due.borrow_mut().push(Reverse((at, slot)));
            self.kick();
        }
    }

    /// Stops streaming from `slot`; its entry in the heap is skipped.
    pub fn stop(&self, slot: usize) {
        if let Some(s) = self.streams.borrow_mut().get_mut(slot) {
            *s = None;
        }
    }

    /// Makes the sender look at its heap now.
    pub fn kick(&self) {
        self.kicked.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The next entry if it is due by `now`, taken off the heap.
    fn next_due(&self, now: u64) -> Option<(u64, usize)> {
        let mut due = self.due.borrow_mut();
        match due.peek() {
            Some(Reverse((at, _))) if *at <= now => due.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    fn earliest(&self) -> Option<u64> {
        self.due.borrow().peek().map(|Reverse((at, _))| *at)
    }

    fn stream(&self, slot: usize) -> Option<Rc<Stream>> {
        self.streams.borrow().get(slot).cloned().flatten()
    }
}

/// State of one executor thread, shared by its tasks.
pub struct Local {
    pub control: Arc<Control>,
    pub index: usize,
    pub settings: Arc<Settings>,
    pub timeline: Cell<Timeline>,
    pub stats: RefCell<VoiceStats>,
    pub sender: Sender,
    stopping: Cell<bool>,
    /// Per device slot, the task to wake at the stop.
    wakers: RefCell<Vec<Option<Waker>>>,
    /// Frames sent and echoes received since the watcher last published
    /// them to the progress counters.
    up_pending: Cell<u64>,
    down_pending: Cell<u64>,
    /// The backend's count per WebSocket, read at the end.
    pub links: RefCell<Vec<Rc<RefCell<backend::Link>>>>,
}

impl Local {
    fn new(control: Arc<Control>, index: usize, settings: Arc<Settings>, slots: usize) -> Local {
        Local {
            control,
            index,
            settings,
            timeline: Cell::new(Timeline::default()),
            stats: RefCell::new(VoiceStats::default()),
            sender: Sender::new(slots),
            stopping: Cell::new(false),
            wakers: RefCell::new(vec![None; slots]),
            up_pending: Cell::new(0),
            down_pending: Cell::new(0),
            links: RefCell::new(Vec::new()),
        }
    }

    /// True once the main thread said stop.
    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves when the run stops; wakes the task of `slot` then.
    pub fn stopped(&self, slot: usize) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.stopping() {
                return Poll::Ready(());
            }
            if let Some(w) = self.wakers.borrow_mut().get_mut(slot) {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            Poll::Pending
        })
    }

    fn stop(&self) {
        self.stopping.set(true);
        for w in self.wakers.borrow().iter().flatten() {
            w.wake_by_ref();
        }
        self.sender.kick();
    }

    /// Counts a problem; those that end a device also go to the progress
    /// line.
    pub fn problem(&self, problem: Problem, fatal: bool) {
        self.stats.borrow_mut().problems.add(problem);
        if fatal {
            bump(&self.control.progress(self.index).failures, 1);
        }
    }

    pub fn count_down(&self) {
        self.down_pending.set(self.down_pending.get() + 1);
    }

    /// Publishes the pending counts to the progress counters.
    fn publish_progress(&self) {
        let progress = self.control.progress(self.index);
        bump(&progress.published, self.up_pending.replace(0));
        bump(&progress.delivered, self.down_pending.replace(0));
    }
}

/// What the main thread hands to voice thread `start.index`.
pub struct ThreadSetup {
    pub start: ThreadStart,
    pub settings: Arc<Settings>,
    /// Indexes of this thread's devices.
    pub devices: Vec<u32>,
    /// This thread's listening socket of the backend.
    pub listener: OwnedFd,
}

/// Starts a voice executor thread; its result is its counts once the run
/// has stopped.
pub fn spawn(setup: ThreadSetup) -> Result<glommio::ExecutorJoinHandle<VoiceStats>, String> {
    let index = setup.start.index;
    let placement = setup.start.placement.clone();
    LocalExecutorBuilder::new(placement)
        .name(&format!("bench-voice-{index}"))
        .preempt_timer(PREEMPT)
        .ring_depth(RING_DEPTH)
        .spawn(move || run(setup))
        .map_err(|e| format!("cannot start executor thread {index}: {e}"))
}

async fn run(setup: ThreadSetup) -> VoiceStats {
    let ThreadSetup {
        start,
        settings,
        devices,
        listener,
    } = setup;
    let (index, control) = (start.index, start.control);
    let (_finished, rings, bell) = enlist(index, &control, start.doorbell);
    let local = Rc::new(Local::new(control.clone(), index, settings, devices.len()));
    // SAFETY: `listener` is an owned, bound and listening TCP socket (see
    // `backend::listen`); `into_raw_fd` passes its ownership to the
    // glommio listener, which closes it.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let server = glommio::spawn_local(backend::serve(local.clone(), listener));
    let (conns, failed) = open_all(&local, &devices).await;
    control.set_ready(failed);
    let mut seen = 0;
    if let Some(start) = wait_for_go(&control, &rings, &mut seen).await {
        local.timeline.set(local.settings.timeline(start));
        let mut tasks = Vec::with_capacity(conns.len());
        for (slot, (device, conn)) in devices.iter().zip(conns).enumerate() {
            if let Some(conn) = conn {
                let task = device::run(local.clone(), slot, *device, start, conn);
                tasks.push(glommio::spawn_local(task));
            }
        }
        let sender = glommio::spawn_local(send_frames(local.clone()));
        // The backend serves other threads' devices too: keep it up until
        // the main thread says stop, even if this thread's devices are done.
        watch(&local, &rings, seen).await;
        for task in tasks {
            task.await;
        }
        drop(sender);
    } else {
        for conn in conns.into_iter().flatten() {
            conn.close().await;
        }
    }
    drop(server);
    drop(bell);
    let mut stats = local.stats.take();
    stats.backend = local
        .links
        .borrow()
        .iter()
        .filter_map(|link| link.borrow_mut().tally())
        .collect();
    stats
}

/// Relays the main thread's rings until it says stop: each ring publishes
/// the progress counts and kicks the sender, so pacing never depends on a
/// glommio timer alone (see `doorbell`).
async fn watch(local: &Local, rings: &Rings, mut seen: u64) {
    loop {
        let main_alive = rings.next(&mut seen).await;
        local.publish_progress();
        if !main_alive || local.control.stopped() {
            local.stop();
            return;
        }
        local.sender.kick();
    }
}

/// Opens the MQTT connection of every device of this thread, at most
/// `connect_concurrency` at a time. Returns them in the order of
/// `devices` (`None` for those that failed) and whether any failed.
async fn open_all(local: &Rc<Local>, devices: &[u32]) -> (Vec<Option<Conn>>, bool) {
    let jobs = Rc::new(Jobs {
        devices: devices.to_vec(),
        next: Cell::new(0),
        opened: RefCell::new((0..devices.len()).map(|_| None).collect()),
        failed: Cell::new(false),
    });
    let workers: Vec<_> = (0..local.settings.connect_concurrency.max(1))
        .map(|_| glommio::spawn_local(open_worker(local.clone(), jobs.clone())))
        .collect();
    for w in workers {
        w.await;
    }
    let failed = jobs.failed.get();
    (jobs.opened.take(), failed)
}

struct Jobs {
    devices: Vec<u32>,
    next: Cell<usize>,
    opened: RefCell<Vec<Option<Conn>>>,
    failed: Cell<bool>,
}

async fn open_worker(local: Rc<Local>, jobs: Rc<Jobs>) {
    loop {
        let i = jobs.next.get();
        let Some(&device) = jobs.devices.get(i) else {
            return;
        };
        jobs.next.set(i + 1);
        // One device that cannot connect fails the run: a fleet with
        // holes would measure something else.
        if jobs.failed.get() || local.control.stopped() {
            return;
        }
        match open_one(&local, device).await {
            Ok(conn) => {
                if let Some(slot) = jobs.opened.borrow_mut().get_mut(i) {
                    *slot = Some(conn);
                }
            }
            Err(problem) => {
                local.problem(problem, true);
                jobs.failed.set(true);
            }
        }
    }
}

async fn open_one(local: &Local, device: u32) -> Result<Conn, Problem> {
    let settings = &local.settings;
    let (client_id, username, password) = settings.login(device);
    let login = Login {
        client_id: &client_id,
        username: Some(&username),
        password: password.as_deref(),
    };
    let began = clock::now_ns();
    let mut conn = Conn::open_as(
        &Endpoint::tcp(settings.broker),
        &login,
        settings.keepalive_s,
        settings.connect_timeout,
    )
    .await?;
    conn.shrink_idle();
    conn.small_reads();
    let mut stats = local.stats.borrow_mut();
    stats
        .connect
        .saturating_record((clock::now_ns() - began).max(1));
    stats.connected += 1;
    bump(&local.control.progress(local.index).connected, 1);
    Ok(conn)
}

/// Sends every device's frames on schedule until the end of the window.
async fn send_frames(local: Rc<Local>) {
    let settings = &local.settings;
    let period = settings.period_ns();
    let timeline = local.timeline.get();
    let mut out = Vec::with_capacity(shardmq::voice::packet::MAX_DATAGRAM);
    while !local.stopping() {
        let now = clock::now_ns();
        let mut sent = 0;
        while let Some((at, slot)) = local.sender.next_due(now) {
            let Some(stream) = local.sender.stream(slot) else {
                continue;
            };
            // Frames stop at the end of the window; the echoes drain.
            if at >= timeline.end {
                continue;
            }
            let t = clock::now_ns();
            let in_window = timeline.in_window(t);
            if let Err(problem) = stream.send(t, in_window, &mut out).await {
                local.problem(problem, false);
            }
            sent += 1;
            if in_window {
                let mut stats = local.stats.borrow_mut();
                stats.up_sent_window += 1;
                stats
                    .send_lag
                    .saturating_record(t.saturating_sub(at).max(1));
            }
            // Same phase for the next frame even if this one was late:
            // the offered load does not bend to a slow gateway.
            local
                .sender
                .due
                .borrow_mut()
                .push(Reverse((at + period, slot)));
        }
        local.up_pending.set(local.up_pending.get() + sent);
        sleep_until_due(&local).await;
    }
}

/// Sleeps until the earliest frame is due (at most `SENDER_IDLE`), or
/// until kicked.
async fn sleep_until_due(local: &Local) {
    let sender = &local.sender;
    let wait = sender
        .earliest()
        .map_or(SENDER_IDLE, clock::until)
        .min(SENDER_IDLE);
    if wait.is_zero() {
        // Let the devices read their echoes before the next burst.
        futures_lite::future::yield_now().await;
        return;
    }
    sender.kicked.set(false);
    let mut timer = Timer::new(wait);
    poll_fn(|cx| {
        if local.stopping() || sender.kicked.get() {
            return Poll::Ready(());
        }
        *sender.waker.borrow_mut() = Some(cx.waker().clone());
        Pin::new(&mut timer).poll(cx).map(drop)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(devices: u32, ramp: Duration) -> Settings {
        Settings {
            broker: SocketAddr::from(([127, 0, 0, 1], 1883)),
            keepalive_s: 60,
            connect_timeout: Duration::from_secs(5),
            connect_concurrency: 10,
            devices,
            signature_key: Some("k".to_string()),
            frame_bytes: 120,
            frame_ms: 60,
            ramp,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn hellos_are_spread_over_the_ramp() {
        let s = settings(4, Duration::from_secs(2));
        let at: Vec<u64> = (0..4).map(|d| s.hello_at(1000, d)).collect();
        assert_eq!(
            at,
            [1000, 500_001_000, 1_000_001_000, 1_500_001_000],
            "evenly, the last one a step before the ramp ends"
        );
        let t = s.timeline(1000);
        assert_eq!(t.warm_end, 1000 + 3_000_000_000);
        assert_eq!(t.end, t.warm_end + 10_000_000_000);
        assert_eq!(settings(1, Duration::ZERO).hello_at(7, 0), 7);
    }

    #[test]
    fn passwords_are_the_gateways() {
        let s = settings(1, Duration::ZERO);
        let (client_id, username, password) = s.login(5);
        assert!(identity::check_password(
            b"k",
            &client_id,
            &username,
            password.unwrap().as_bytes()
        ));
        let unsigned = Settings {
            signature_key: None,
            ..settings(1, Duration::ZERO)
        };
        assert_eq!(unsigned.login(5).2, None);
    }
}
