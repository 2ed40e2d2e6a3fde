//! The pacer: wakes rate-limited publishers when their next message is
//! due. One timer per thread, re-armed for the earliest due publisher,
//! instead of one timer per publisher.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::timer::Timer;

use super::clock;
use super::worker::Local;

/// The longest sleep when no publisher waits.
const IDLE: Duration = Duration::from_millis(10);

/// When each client slot wants to be woken.
pub struct Pacer {
    /// Per slot: clock time to wake it (`u64::MAX`: never).
    due: RefCell<Vec<u64>>,
    /// When the pacer itself will wake next.
    next: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

impl Pacer {
    pub fn new(slots: usize) -> Pacer {
        Pacer {
            due: RefCell::new(vec![u64::MAX; slots]),
            next: Cell::new(u64::MAX),
            waker: RefCell::new(None),
        }
    }

    /// Asks for `slot` to be woken at clock time `at_ns`.
    pub fn wake_at(&self, slot: usize, at_ns: u64) {
        self.due.borrow_mut()[slot] = at_ns;
        if at_ns < self.next.get() {
            self.next.set(at_ns);
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Takes the slots due by `now`; returns them and the next due time.
    fn take_due(&self, now: u64, ready: &mut Vec<usize>) -> u64 {
        let mut next = u64::MAX;
        for (slot, at) in self.due.borrow_mut().iter_mut().enumerate() {
            if *at <= now {
                *at = u64::MAX;
                ready.push(slot);
            } else {
                next = next.min(*at);
            }
        }
        next
    }
}

/// Wakes publishers whose next message is due, sleeping in between.
pub async fn run(local: Rc<Local>) {
    let mut ready = Vec::new();
    while !local.stopping() {
        let pacer = &local.pacer;
        let now = clock::now_ns();
        ready.clear();
        let next = pacer.take_due(now, &mut ready);
        for &slot in &ready {
            local.wake(slot);
        }
        let wait = clock::until(next).min(IDLE);
        let planned = now + clock::ns(wait);
        pacer.next.set(planned);
        let mut timer = Timer::new(wait);
        poll_fn(|cx| {
            // A publisher asking for an earlier time lowers `next`.
            if local.stopping() || pacer.next.get() < planned {
                return Poll::Ready(());
            }
            *pacer.waker.borrow_mut() = Some(cx.waker().clone());
            Pin::new(&mut timer).poll(cx).map(drop)
        })
        .await;
    }
}
