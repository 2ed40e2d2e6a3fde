//! The drain of one shard, when the process stops cleanly (see `control`).
//!
//! Order: the listeners stop, so no socket is accepted any more; the
//! broker closes every connection for the stop; each connection's driver
//! writes its whole outbox before it closes the socket (`conn`); the shard
//! waits until the broker has released every connection, then until every
//! shard has handled the messages the closes sent across. CONNECTs that
//! finish after the drain began are refused with "server unavailable".
//! Nothing here bounds the wait: the process does, with
//! `server.shutdown_timeout_s`, and exits when it passes.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use super::Shard;

/// How often a draining shard looks for connections still open.
const CLOSED_POLL: Duration = Duration::from_millis(10);

/// Called on every tick: wakes the shard's main task once a drain is asked.
pub(super) fn check(shard: &Shard) {
    if shard.control.drain_asked().is_some() {
        if let Some(waker) = shard.drain_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Waits until the process asks for a drain.
pub(super) async fn asked(shard: &Shard) {
    poll_fn(|cx| {
        if shard.control.drain_asked().is_some() {
            return Poll::Ready(());
        }
        *shard.drain_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
}

/// Stops the listeners, closes every connection and waits until all are
/// gone.
pub(super) async fn run(shard: &Rc<Shard>, listeners: Vec<glommio::Task<()>>) {
    let publish_wills = shard.control.drain_asked().unwrap_or(false);
    shard.draining.set(true);
    for task in listeners {
        // Ends the accept loop and drops its listening socket.
        let _ = task.cancel().await;
    }
    tracing::debug!(shard = shard.id.0, "listeners closed; closing connections");
    shard.broker.borrow_mut().shut_down(publish_wills);
    shard.after_input();
    while shard.broker.borrow().connections() > 0 {
        glommio::timer::sleep(CLOSED_POLL).await;
    }
    tracing::debug!(shard = shard.id.0, "every connection closed");
    // The wills published just now have copies on their way to other
    // shards (retained replicas, persistent sessions' queues): the store
    // is flushed only once every shard has handled all of them. The mesh
    // keeps running meanwhile, so this shard answers the others' barriers.
    shard.broker.borrow_mut().quiesce();
    shard.after_input();
    while !shard.broker.borrow().quiesced() {
        glommio::timer::sleep(CLOSED_POLL).await;
    }
    shard.control.note_quiesced();
    while !shard.control.all_quiesced() {
        glommio::timer::sleep(CLOSED_POLL).await;
    }
    tracing::debug!(
        shard = shard.id.0,
        "every shard handled the drain's messages"
    );
}

impl Shard {
    /// Whether the shard is draining: connections still being opened are
    /// refused, closing ones write their whole outbox first.
    pub(crate) fn draining(&self) -> bool {
        self.draining.get()
    }
}
