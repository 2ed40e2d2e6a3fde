//! Counters and `$SYS`: every shard counts its own traffic and reports to
//! shard 0, which publishes the sums as retained `$SYS/broker/...` messages.

use std::time::Instant;

use bytes::Bytes;

use super::{Broker, RemoteMsg, ShardId};
use crate::mqtt::session::Message;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// Counters of one shard, summed over shards for `$SYS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub clients_connected: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub protocol_errors: u64,
}

impl ShardStats {
    fn add(&mut self, other: &ShardStats) {
        self.clients_connected += other.clients_connected;
        self.messages_received += other.messages_received;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.protocol_errors += other.protocol_errors;
    }
}

impl Broker {
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        s.clients_connected = self.conns.iter().filter(|c| c.is_some()).count() as u64;
        s
    }

    /// Another shard's counters, for shard 0's sums.
    pub(super) fn handle_stats(&mut self, from: ShardId, stats: ShardStats) {
        if let Some(slot) = self.shard_stats.get_mut(usize::from(from.0)) {
            *slot = stats;
        }
    }

    pub(super) fn tick_sys(&mut self, now: Instant) {
        if let (Some(at), Some(interval)) = (self.next_sys, self.config.sys_interval) {
            if now >= at {
                self.next_sys = Some(now + interval);
                self.publish_sys(now);
            }
        }
    }

    /// Every shard reports to shard 0, which publishes the sums as retained
    /// `$SYS` messages (so they reach every shard's store).
    fn publish_sys(&mut self, now: Instant) {
        let stats = self.stats();
        if self.shard != ShardId(0) {
            self.send(ShardId(0), RemoteMsg::Stats(stats));
            return;
        }
        self.shard_stats[0] = stats;
        let mut total = ShardStats::default();
        for s in &self.shard_stats {
            total.add(s);
        }
        let uptime = now.duration_since(self.started).as_secs();
        let entries: [(&str, String); 7] = [
            ("version", format!("shardmq {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", total.clients_connected.to_string()),
            ("messages/received", total.messages_received.to_string()),
            ("messages/sent", total.messages_sent.to_string()),
            ("messages/dropped", total.messages_dropped.to_string()),
            ("clients/protocol_errors", total.protocol_errors.to_string()),
        ];
        for (name, value) in entries {
            let Ok(topic) = TopicName::from_string(format!("$SYS/broker/{name}")) else {
                continue;
            };
            let message = Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
            };
            self.route(message, false);
        }
    }
}
