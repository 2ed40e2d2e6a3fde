//! Counters and `$SYS`: every shard counts its own traffic and reports to
//! shard 0, which publishes the sums as retained `$SYS/broker/...` messages.

use std::time::Instant;

use bytes::Bytes;

use super::{Broker, RemoteMsg, ShardId};
use crate::mqtt::session::Message;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// How often shards report their counters to shard 0 when `$SYS` is off:
/// `/metrics` still shows sums that are at most this old.
pub(super) const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Counters of one shard, summed over shards for `$SYS` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub clients_connected: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub protocol_errors: u64,
    /// CONNACK 4: wrong user name or password.
    pub auth_bad_credentials: u64,
    /// CONNACK 5: no user name where one is required.
    pub auth_anonymous_refused: u64,
    /// CONNACK 5: the source address spent its failure budget.
    pub auth_throttled: u64,
    /// PUBLISHes (wills included) acknowledged and dropped by the ACL.
    pub acl_publish_denied: u64,
    /// SUBSCRIBE filters answered 0x80 by the ACL.
    pub acl_subscribe_denied: u64,
    /// Deliveries (retained included) the ACL kept from a subscriber.
    pub acl_receive_denied: u64,
    /// SUBSCRIBE filters answered 0x80 beyond `max_subscriptions`.
    pub limit_subscriptions_refused: u64,
    /// Connections closed for a QoS 2 PUBLISH beyond `max_awaiting_pubrel`.
    pub limit_awaiting_pubrel_closed: u64,
    /// Retained PUBLISHes delivered but not retained, the store being full.
    pub limit_retained_refused: u64,
    /// Messages dropped for a session's `max_queued_bytes` (also in
    /// `messages_dropped`).
    pub limit_queued_bytes_dropped: u64,
    /// Connections closed for a packet past their listener's
    /// `max_packet_size` (also in `protocol_errors`).
    pub limit_packet_too_large: u64,
    /// Messages dropped for the shard's share of `max_queued_messages_total`
    /// (also in `messages_dropped`).
    pub limit_queued_messages_dropped: u64,
}

/// Why the shell refused a CONNECT at authentication, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    BadCredentials,
    AnonymousRefused,
    Throttled,
}

impl ShardStats {
    fn add(&mut self, other: &ShardStats) {
        self.clients_connected += other.clients_connected;
        self.messages_received += other.messages_received;
        self.messages_sent += other.messages_sent;
        self.messages_dropped += other.messages_dropped;
        self.protocol_errors += other.protocol_errors;
        self.auth_bad_credentials += other.auth_bad_credentials;
        self.auth_anonymous_refused += other.auth_anonymous_refused;
        self.auth_throttled += other.auth_throttled;
        self.acl_publish_denied += other.acl_publish_denied;
        self.acl_subscribe_denied += other.acl_subscribe_denied;
        self.acl_receive_denied += other.acl_receive_denied;
        self.limit_subscriptions_refused += other.limit_subscriptions_refused;
        self.limit_awaiting_pubrel_closed += other.limit_awaiting_pubrel_closed;
        self.limit_retained_refused += other.limit_retained_refused;
        self.limit_queued_bytes_dropped += other.limit_queued_bytes_dropped;
        self.limit_packet_too_large += other.limit_packet_too_large;
        self.limit_queued_messages_dropped += other.limit_queued_messages_dropped;
    }

    /// The Prometheus lines of these counters (the sums over shards).
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let lines: [(&str, &str, u64); 13] = [
            ("shardmq_clients_connected", "gauge", self.clients_connected),
            (
                "shardmq_auth_bad_credentials_total",
                "counter",
                self.auth_bad_credentials,
            ),
            (
                "shardmq_auth_anonymous_refused_total",
                "counter",
                self.auth_anonymous_refused,
            ),
            (
                "shardmq_auth_throttled_total",
                "counter",
                self.auth_throttled,
            ),
            (
                "shardmq_acl_publish_denied_total",
                "counter",
                self.acl_publish_denied,
            ),
            (
                "shardmq_acl_subscribe_denied_total",
                "counter",
                self.acl_subscribe_denied,
            ),
            (
                "shardmq_acl_receive_denied_total",
                "counter",
                self.acl_receive_denied,
            ),
            (
                "shardmq_limit_subscriptions_refused_total",
                "counter",
                self.limit_subscriptions_refused,
            ),
            (
                "shardmq_limit_awaiting_pubrel_closed_total",
                "counter",
                self.limit_awaiting_pubrel_closed,
            ),
            (
                "shardmq_limit_retained_refused_total",
                "counter",
                self.limit_retained_refused,
            ),
            (
                "shardmq_limit_queued_bytes_dropped_total",
                "counter",
                self.limit_queued_bytes_dropped,
            ),
            (
                "shardmq_limit_packet_too_large_total",
                "counter",
                self.limit_packet_too_large,
            ),
            (
                "shardmq_limit_queued_messages_dropped_total",
                "counter",
                self.limit_queued_messages_dropped,
            ),
        ];
        for (name, kind, value) in lines {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
        }
    }
}

impl Broker {
    pub fn stats(&self) -> ShardStats {
        let mut s = self.stats;
        s.clients_connected = self.conns.iter().filter(|c| c.is_some()).count() as u64;
        s
    }

    /// The shell refused a CONNECT at authentication.
    pub fn note_auth_refused(&mut self, why: AuthRefusal) {
        match why {
            AuthRefusal::BadCredentials => self.stats.auth_bad_credentials += 1,
            AuthRefusal::AnonymousRefused => self.stats.auth_anonymous_refused += 1,
            AuthRefusal::Throttled => self.stats.auth_throttled += 1,
        }
    }

    /// Shard 0's sums over every shard, as of the shards' last reports
    /// (every `sys_interval`, or `STATS_INTERVAL` without `$SYS`).
    pub fn totals(&self) -> ShardStats {
        let mut total = self.stats();
        for (i, s) in self.shard_stats.iter().enumerate() {
            if i != usize::from(self.shard.0) {
                total.add(s);
            }
        }
        total
    }

    /// Another shard's counters, for shard 0's sums.
    pub(super) fn handle_stats(&mut self, from: ShardId, stats: ShardStats) {
        if let Some(slot) = self.shard_stats.get_mut(usize::from(from.0)) {
            *slot = stats;
        }
    }

    pub(super) fn tick_sys(&mut self, now: Instant) {
        let interval = self.config.sys_interval.unwrap_or(STATS_INTERVAL);
        let at = *self.next_sys.get_or_insert(now + interval);
        if now >= at {
            self.next_sys = Some(now + interval);
            self.publish_sys(now);
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
        if self.config.sys_interval.is_none() {
            // Only the sums for `/metrics` are kept up to date.
            return;
        }
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
            self.route(message, false, None);
        }
    }
}
