//! Wake-ups from the main thread to the executors that do not depend on
//! glommio's timers, and a watchdog for executors that miss wake-ups.
//!
//! # Why
//!
//! On this kernel (6.18, under a loaded VM) a glommio 0.9 executor now and
//! then parks in `io_uring_enter` and is not woken by completions that
//! should wake it: its timers stop firing, and even socket readiness goes
//! unnoticed, while `/proc/PID/fdinfo` shows the polls armed and the
//! completion queue empty. Interrupting the wait (a debugger attaching is
//! enough) makes it reap everything and carry on. glommio issues #326 and
//! #547 report the timer half of this.
//!
//! # How
//!
//! Each executor has a doorbell: one end of a Unix socket pair. The main
//! thread writes a byte to every doorbell every few milliseconds and at
//! each phase change; the executor's bell task reads it, bumps a
//! heartbeat counter and wakes whoever waits for the next ring (first the
//! wait for the go, then the watcher in `worker`). Phase changes thus come
//! through a socket, not a timer. If an executor's heartbeat stands still
//! while the main thread keeps ringing, the main thread interrupts that
//! thread with a signal whose handler does nothing, which ends a stuck
//! wait. When the thread was asleep at that moment (not busy, not waiting
//! for a CPU) it had missed its wake-ups: that is counted and reported as
//! `executor_stalls`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;

use super::control::{bump, Control};
use super::sys;

/// How long an executor may miss rings before it is kicked: a few ring
/// periods, so a stuck executor costs little of the window. A thread
/// merely kept off its CPU that long is kicked too, which does no harm.
const STALL: Duration = Duration::from_millis(30);

/// Every executor is kicked this often whatever its heartbeat says: an
/// executor can miss the completions of one ring (a timer, a socket) while
/// its doorbell, on another, still answers.
const KICK_EVERY: Duration = Duration::from_secs(1);

/// Creates a doorbell: the main thread's end (non-blocking) and the
/// executor's.
pub fn pair() -> Result<(StdUnixStream, OwnedFd), String> {
    let (ours, theirs) =
        StdUnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    ours.set_nonblocking(true)
        .and_then(|()| theirs.set_nonblocking(true))
        .map_err(|e| format!("cannot set up a socket pair: {e}"))?;
    Ok((ours, theirs.into()))
}

/// The main thread's side: the bells, and what it last saw of each
/// executor's heartbeat.
pub struct Bells {
    bells: Vec<StdUnixStream>,
    seen: RefCell<Vec<(u64, Instant)>>,
    stalls: Cell<u64>,
    last_kick: Cell<Instant>,
}

impl Default for Bells {
    fn default() -> Bells {
        Bells {
            bells: Vec::new(),
            seen: RefCell::default(),
            stalls: Cell::new(0),
            last_kick: Cell::new(Instant::now()),
        }
    }
}

impl Bells {
    pub fn add(&mut self, bell: StdUnixStream) {
        self.bells.push(bell);
        self.seen.borrow_mut().push((0, Instant::now()));
    }

    /// Rings every bell, and kicks executors that stopped answering.
    pub fn ring(&self, control: &Control) {
        let kick_all = self.last_kick.get().elapsed() >= KICK_EVERY;
        if kick_all {
            self.last_kick.set(Instant::now());
        }
        let mut seen = self.seen.borrow_mut();
        for (index, bell) in self.bells.iter().enumerate() {
            // A full socket has rings pending already: nothing is lost.
            let _ = (&*bell).write(&[1]);
            let progress = control.progress(index);
            let beat = progress
                .heartbeat
                .load(std::sync::atomic::Ordering::Relaxed);
            let (last, since) = &mut seen[index];
            if beat != *last {
                *last = beat;
                *since = Instant::now();
            } else if since.elapsed() >= STALL && !control.thread_finished(index) {
                if let Some((thread, tid)) = control.thread_ids(index) {
                    // Asleep with rings pending is a missed wake-up; busy
                    // or kept off its CPU is not, though a kick is harmless.
                    if sys::thread_sleeps(tid) {
                        self.stalls.set(self.stalls.get() + 1);
                    }
                    sys::interrupt_thread(thread);
                }
                *since = Instant::now();
            } else if kick_all && !control.thread_finished(index) {
                if let Some((thread, _)) = control.thread_ids(index) {
                    sys::interrupt_thread(thread);
                }
            }
        }
    }

    /// Missed wake-ups found so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.get()
    }
}

/// The executor's side: the next ring, for one waiter at a time.
#[derive(Default)]
pub struct Rings {
    count: Cell<u64>,
    closed: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Rings {
    /// Waits for a ring after the one counted in `seen`. False once the
    /// main thread's end is gone.
    pub async fn next(&self, seen: &mut u64) -> bool {
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(false);
            }
            if self.count.get() != *seen {
                *seen = self.count.get();
                return Poll::Ready(true);
            }
            *self.waiter.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn rang(&self) {
        self.count.set(self.count.get() + 1);
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The bell task of executor `index`: reads its doorbell until the main
/// thread's end closes.
pub async fn listen(fd: OwnedFd, rings: Rc<Rings>, control: Arc<Control>, index: usize) {
    // SAFETY: `fd` is an owned, open Unix stream socket (one end of a pair
    // made by `pair`); `into_raw_fd` passes its ownership to the glommio
    // stream, which closes it.
    let mut bell = unsafe { UnixStream::from_raw_fd(fd.into_raw_fd()) };
    let mut buf = [0u8; 64];
    while let Ok(1..) = bell.read(&mut buf).await {
        bump(&control.progress(index).heartbeat, 1);
        rings.rang();
    }
    rings.close();
}
