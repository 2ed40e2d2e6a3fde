//! Back-pressure across shards (see "Back-pressure" in the module docs):
//! which sessions are behind, which shards are under pressure, and which
//! connections the shell should stop reading.

use super::{Broker, ConnId, RemoteMsg, SessionId, ShardId};

impl Broker {
    pub(super) fn high_water(&self) -> usize {
        self.config.limits.max_queued_messages / 2
    }

    pub(super) fn low_water(&self) -> usize {
        self.config.limits.max_queued_messages / 4
    }

    /// An online session's queue passed the high-water mark.
    pub(super) fn fell_behind(&mut self, sid: SessionId) {
        if self.behind.insert(sid) && self.behind.len() == 1 {
            self.set_pressure(true);
        }
    }

    /// A session caught up, went offline or ended.
    pub(super) fn caught_up(&mut self, sid: SessionId) {
        if self.behind.remove(&sid) && self.behind.is_empty() {
            self.set_pressure(false);
        }
    }

    fn set_pressure(&mut self, on: bool) {
        tracing::debug!(shard = self.shard.0, on, "subscriber back-pressure");
        self.broadcast(RemoteMsg::Pressure(on));
        self.update_pressure(self.shard, on);
    }

    /// `shard` is (or is no longer) under pressure.
    pub(super) fn update_pressure(&mut self, shard: ShardId, on: bool) {
        let was = self.pressure != 0;
        if on {
            self.pressure |= 1 << shard.0;
        } else {
            self.pressure &= !(1 << shard.0);
        }
        if was && self.pressure == 0 {
            // Throttled publishers wait to be woken.
            for (i, c) in self.conns.iter().enumerate() {
                if c.as_ref().is_some_and(|c| c.publisher) {
                    self.woken.push(ConnId(i as u32));
                }
            }
        }
    }

    /// Whether the shell should stop reading this connection for now.
    pub fn is_throttled(&self, conn: ConnId) -> bool {
        if self.pressure == 0 {
            return false;
        }
        let Some(c) = self.conn(conn) else {
            return false;
        };
        c.publisher && !c.session.is_some_and(|sid| self.behind.contains(&sid))
    }
}

#[cfg(test)]
#[path = "pressure_tests.rs"]
mod tests;
