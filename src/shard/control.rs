//! What the process asks of the shards from outside their threads: health
//! pings for the service manager's watchdog, and the drain on SIGTERM.
//!
//! Every shard holds the same [`Control`] and reads it on its broker tick.
//! A ping is answered by the tick task itself, on the shard's executor: an
//! answer proves the executor still runs its tasks in turn, which a bare
//! timer thread of its own would not.
//!
//! # Drain
//! A drain, on every shard: the listeners stop (MQTT, TLS, WebSocket, and
//! the HTTP listener of shard 0), every connection closes for the stop
//! (`Broker::shut_down`) after its outbox is written, CONNECTs still
//! arriving are refused; the shards then wait for each other until every
//! copy a closing connection sent across (its will) has been handled
//! ([`Control::all_quiesced`]), flush their stores, and each executor ends
//! and counts itself in [`Control::stopped`]. The process waits for that within its bound.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shared by every shard and the process's control threads.
#[derive(Debug)]
pub struct Control {
    /// The latest health round asked.
    asked: AtomicU64,
    /// Per shard, the latest round it saw on its tick.
    answered: Box<[AtomicU64]>,
    drain: AtomicBool,
    /// Whether the drain publishes wills (`Broker::shut_down`).
    wills: AtomicBool,
    /// Shards whose drain has seen every other shard handle what it sent
    /// (`Broker::quiesced`).
    quiesced: AtomicUsize,
    /// Shards whose executor has ended after a drain.
    stopped: AtomicUsize,
}

/// The health rule: the shards that have not answered round `ping`, in
/// order. An empty list means every shard's executor ran its tick since the
/// round was asked.
pub fn late_shards(ping: u64, answered: impl IntoIterator<Item = u64>) -> Vec<usize> {
    answered
        .into_iter()
        .enumerate()
        .filter(|&(_, seen)| seen < ping)
        .map(|(shard, _)| shard)
        .collect()
}

impl Control {
    pub fn new(shards: usize) -> Control {
        assert!(shards > 0, "a server has at least one shard");
        Control {
            asked: AtomicU64::new(0),
            answered: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            drain: AtomicBool::new(false),
            wills: AtomicBool::new(false),
            quiesced: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
        }
    }

    pub fn shards(&self) -> usize {
        self.answered.len()
    }

    /// Asks a new health round; returns its number for [`Control::late`].
    pub fn ping(&self) -> u64 {
        self.asked.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The shards that have not answered round `ping` yet.
    pub fn late(&self, ping: u64) -> Vec<usize> {
        late_shards(
            ping,
            self.answered.iter().map(|a| a.load(Ordering::Acquire)),
        )
    }

    /// Shard `shard`'s executor runs: it answers the latest round.
    pub(crate) fn answer(&self, shard: usize) {
        let asked = self.asked.load(Ordering::Acquire);
        if let Some(slot) = self.answered.get(shard) {
            slot.fetch_max(asked, Ordering::AcqRel);
        }
    }

    /// Asks every shard to drain, publishing wills or not; later calls
    /// change nothing.
    pub fn drain(&self, publish_wills: bool) {
        if !self.drain.load(Ordering::Acquire) {
            self.wills.store(publish_wills, Ordering::Release);
            self.drain.store(true, Ordering::Release);
        }
    }

    /// `Some(publish_wills)` once a drain was asked.
    pub(crate) fn drain_asked(&self) -> Option<bool> {
        self.drain
            .load(Ordering::Acquire)
            .then(|| self.wills.load(Ordering::Acquire))
    }

    /// This shard's messages of the drain have all been handled.
    pub(crate) fn note_quiesced(&self) {
        self.quiesced.fetch_add(1, Ordering::AcqRel);
    }

    /// Every shard's messages of the drain have been handled: nothing more
    /// will reach any shard's store.
    pub(crate) fn all_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire) >= self.shards()
    }

    pub(crate) fn note_stopped(&self) {
        self.stopped.fetch_add(1, Ordering::AcqRel);
    }

    /// How many shards have finished their drain.
    pub fn stopped(&self) -> usize {
        self.stopped.load(Ordering::Acquire)
    }

    /// Waits until every shard has stopped, or `timeout` passes: `true`
    /// when all stopped. Polls, as it waits once per process life.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stopped() >= self.shards() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(STOP_POLL.min(deadline - now));
        }
    }
}

/// How often the waiting thread looks at the count of stopped shards.
const STOP_POLL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_needs_every_shard_to_answer_the_round() {
        assert!(late_shards(3, [3, 4, 3]).is_empty());
        assert_eq!(late_shards(3, [3, 2, 0]), [1, 2]);
        // Round 0 was never asked: nothing can be late for it.
        assert!(late_shards(0, [0, 0]).is_empty());
    }

    #[test]
    fn an_answer_before_the_round_does_not_count() {
        let control = Control::new(2);
        control.answer(0);
        control.answer(1);
        let round = control.ping();
        // Both answered an earlier round only.
        assert_eq!(control.late(round), [0, 1]);
        control.answer(1);
        assert_eq!(control.late(round), [0]);
        control.answer(0);
        assert!(control.late(round).is_empty());
        let next = control.ping();
        assert_eq!(control.late(next), [0, 1], "each round is answered anew");
    }

    #[test]
    fn the_first_drain_request_decides_the_wills() {
        let control = Control::new(1);
        assert_eq!(control.drain_asked(), None);
        control.drain(true);
        control.drain(false);
        assert_eq!(control.drain_asked(), Some(true));
        assert!(!control.wait_stopped(Duration::from_millis(1)));
        control.note_stopped();
        assert!(control.wait_stopped(Duration::ZERO));
    }
}
