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

use super::{Broker, CloseReason, ConnId};

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

    /// Connections the shell has not released yet, closing ones included.
    pub fn connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }
}

#[cfg(test)]
#[path = "shutdown_tests.rs"]
mod tests;
