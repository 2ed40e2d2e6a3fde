//! The only state shared between threads while a run goes on: phase
//! signals from the main thread to the executors, and running totals from
//! the executors for the progress line and the drain.
//!
//! Executors add to their own cache-line-aligned counters once per read or
//! write batch, not per message, so the counters cost next to nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

/// Running totals of one executor thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    pub connected: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    /// Publishers whose task ended (done, or their connection lost).
    pub publishers_finished: AtomicU64,
    /// Problems that ended a connection.
    pub failures: AtomicU64,
    /// Voice devices whose conversation is open (up and down).
    pub conversations: AtomicU64,
    /// Doorbell rings the thread has seen (see `doorbell`).
    pub heartbeat: AtomicU64,
    /// The thread's id for signals; 0 until it runs.
    thread: AtomicU64,
    /// The thread's kernel id; 0 until it runs.
    tid: AtomicU64,
    /// The thread is done with its clients and about to return.
    finished: AtomicBool,
}

/// Sums of every thread's [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub connected: u64,
    pub published: u64,
    pub delivered: u64,
    pub publishers_finished: u64,
    pub failures: u64,
    pub conversations: u64,
}

/// Phase signals and progress counters.
#[derive(Debug)]
pub struct Control {
    ready: AtomicUsize,
    setup_failed: AtomicBool,
    /// Clock time (ns) at which publishing starts; 0 until decided.
    start_ns: AtomicU64,
    stop: AtomicBool,
    finished: AtomicUsize,
    progress: Box<[Progress]>,
}

impl Control {
    pub fn new(threads: usize) -> Control {
        Control {
            ready: AtomicUsize::new(0),
            setup_failed: AtomicBool::new(false),
            start_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            finished: AtomicUsize::new(0),
            progress: (0..threads).map(|_| Progress::default()).collect(),
        }
    }

    /// The counters of thread `index`.
    pub fn progress(&self, index: usize) -> &Progress {
        &self.progress[index]
    }

    /// Records the ids of executor thread `index` (from its own thread).
    pub fn set_thread_ids(&self, index: usize, thread: u64, tid: u32) {
        self.progress[index].tid.store(tid.into(), Release);
        self.progress[index].thread.store(thread, Release);
    }

    /// The pthread and kernel ids of executor thread `index`, once it runs.
    pub fn thread_ids(&self, index: usize) -> Option<(u64, u32)> {
        let p = &self.progress[index];
        match p.thread.load(Acquire) {
            0 => None,
            thread => Some((thread, p.tid.load(Acquire) as u32)),
        }
    }

    /// A thread has opened all its clients (or given up on some).
    pub fn set_ready(&self, setup_failed: bool) {
        if setup_failed {
            self.setup_failed.store(true, Release);
        }
        self.ready.fetch_add(1, AcqRel);
    }

    pub fn ready_threads(&self) -> usize {
        self.ready.load(Acquire)
    }

    pub fn setup_failed(&self) -> bool {
        self.setup_failed.load(Acquire)
    }

    /// Lets every thread start publishing at `start_ns`.
    pub fn go(&self, start_ns: u64) {
        self.start_ns.store(start_ns, Release);
    }

    /// The start time, once `go` was called.
    pub fn start_ns(&self) -> Option<u64> {
        match self.start_ns.load(Acquire) {
            0 => None,
            ns => Some(ns),
        }
    }

    /// Ends the run: every client disconnects.
    pub fn stop(&self) {
        self.stop.store(true, Release);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Acquire)
    }

    /// Thread `index` has closed its clients and is about to return.
    pub fn set_finished(&self, index: usize) {
        self.progress[index].finished.store(true, Release);
        self.finished.fetch_add(1, AcqRel);
    }

    /// Whether thread `index` is about to return (or has).
    pub fn thread_finished(&self, index: usize) -> bool {
        self.progress[index].finished.load(Acquire)
    }

    pub fn finished_threads(&self) -> usize {
        self.finished.load(Acquire)
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in self.progress.iter() {
            t.connected += p.connected.load(Relaxed);
            t.published += p.published.load(Relaxed);
            t.delivered += p.delivered.load(Relaxed);
            t.publishers_finished += p.publishers_finished.load(Relaxed);
            t.failures += p.failures.load(Relaxed);
            t.conversations += p.conversations.load(Relaxed);
        }
        t
    }
}

/// Adds `n` to a progress counter (relaxed: only totals are read).
pub fn bump(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Relaxed);
    }
}

/// Takes 1 from a progress counter that holds a level, not a total.
pub fn drop_one(counter: &AtomicU64) {
    counter.fetch_sub(1, Relaxed);
}
