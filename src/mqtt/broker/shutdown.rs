//! A clean stop of the server: every connection of the shard closes with
//! [`CloseReason::Shutdown`], its outbox left for the shell to flush.
//!
//! # Wills
//! [MQTT-3.1.2-8]: the will "MUST be published when the Network Connection
//! is subsequently closed unless the Will Message has been deleted by the
//! Server on receipt of a DISCONNECT Packet". A stop of the server closes
//! the connection without the client's DISCONNECT, so by default the wills
//! go out, as mosquitto does on SIGTERM: to persistent sessions' queues and
//! the retained store, which outlive the stop. `[server] will_on_shutdown =
//! false` keeps them, against the rule, for fleets whose watchers would
//! take a planned restart for a failure.

use super::{Broker, CloseReason, ConnId, RemoteMsg};

impl Broker {
    /// Closes every connection of this shard for a stop of the server;
    /// `publish_wills` says whether their wills go out. Persistent sessions
    /// go offline and stay, as for any close. Idempotent: connections
    /// already closing keep their reason.
    pub fn shut_down(&mut self, publish_wills: bool) {
        let reason = CloseReason::Shutdown {
            will: publish_wills,
        };
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(|c| c.closing.is_none()))
            .map(|(i, _)| ConnId(i as u32))
            .collect();
        for conn in open {
            self.close(conn, reason);
        }
    }

    /// After `shut_down`, once every connection is released: asks every
    /// other shard for a `Barrier` answer. Channels are FIFO per pair, so
    /// when all have answered ([`Broker::quiesced`]) each has handled what
    /// this shard sent before (the wills' copies, retained and queued for
    /// persistent sessions), and a shard that has seen every shard quiesce
    /// holds, and may make durable, all it will ever get.
    pub fn quiesce(&mut self) {
        if self.quiesce.is_some() || self.shards <= 1 {
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.quiesce = Some((token, self.shards - 1));
        self.broadcast(RemoteMsg::Barrier(token));
    }

    /// Whether every other shard answered the barrier of [`Broker::quiesce`].
    pub fn quiesced(&self) -> bool {
        self.shards <= 1 || matches!(self.quiesce, Some((_, 0)))
    }

    /// Counts an answer to the shutdown's barrier; `false` for any other
    /// token.
    pub(super) fn answer_quiesce(&mut self, token: u64) -> bool {
        match &mut self.quiesce {
            Some((t, missing)) if *t == token => {
                *missing = missing.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Connections the shell has not released yet, closing ones included.
    pub fn connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
