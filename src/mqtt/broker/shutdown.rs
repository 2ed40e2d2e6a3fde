//! A clean stop of the server: every connection of the shard closes with
//! [`CloseReason::Shutdown`], its outbox left for the shell to flush.
//!
//! # Wills
//! [MQTT-3.1.2-8] publishes a will when "the network connection is closed
//! without the client sending DISCONNECT", and §3.1.2.5 lists what counts:
//! an I/O error or network failure, a missed keepalive, the client closing
//! without DISCONNECT, the server closing the connection because of a
//! protocol error. A stop of the server is none of them: the
//! client did nothing wrong and will reconnect to the restarted server, so
//! a will would tell its watchers of a failure that did not happen. By
//! default a clean shutdown publishes no wills; `[server] will_on_shutdown
//! = true` publishes them. mosquitto differs: 2.0.11 publishes the wills
//! of the clients still connected when it stops on SIGTERM (a retained
//! will is in its saved database after the restart), so a fleet moving
//! from it that watches presence through wills sets `will_on_shutdown`.

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
