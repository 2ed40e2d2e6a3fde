//! The gateway's counters, shared by its instances on every shard, and
//! their Prometheus text.

#![forbid(unsafe_code)]

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a datagram was dropped; the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    TooShort,
    LengthMismatch,
    UnknownType,
    BadFlags,
    Malformed,
    UnknownClient,
    RateLimited,
    TooManyClients,
    TooLarge,
    QosMinusOne,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::TooShort,
        DropReason::LengthMismatch,
        DropReason::UnknownType,
        DropReason::BadFlags,
        DropReason::Malformed,
        DropReason::UnknownClient,
        DropReason::RateLimited,
        DropReason::TooManyClients,
        DropReason::TooLarge,
        DropReason::QosMinusOne,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::LengthMismatch => "length_mismatch",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadFlags => "bad_flags",
            DropReason::Malformed => "malformed",
            DropReason::UnknownClient => "unknown_client",
            DropReason::RateLimited => "rate_limited",
            DropReason::TooManyClients => "too_many_clients",
            DropReason::TooLarge => "too_large",
            DropReason::QosMinusOne => "qos_minus_one",
        }
    }

    pub fn from_decode(e: super::codec::SnDecodeError) -> DropReason {
        use super::codec::SnDecodeError as E;
        match e {
            E::TooShort => DropReason::TooShort,
            E::LengthMismatch => DropReason::LengthMismatch,
            E::UnknownType(_) => DropReason::UnknownType,
            E::BadFlags => DropReason::BadFlags,
            E::Malformed => DropReason::Malformed,
        }
    }
}

/// What one shard holds now, written at each of its ticks.
#[derive(Debug, Default)]
pub struct Gauges {
    pub active: AtomicU64,
    pub asleep: AtomicU64,
    pub awake: AtomicU64,
    pub topics: AtomicU64,
    pub buffered: AtomicU64,
}

/// Counters of every shard's gateway, and each shard's gauges.
#[derive(Debug)]
pub struct SnMetrics {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    pub buffer_dropped: AtomicU64,
    pub published_minus_one: AtomicU64,
    /// QoS 1/2 PUBLISHes held back while the broker throttled publishers.
    pub held: AtomicU64,
    pub shards: Vec<Gauges>,
}

impl SnMetrics {
    pub fn new(shards: usize) -> SnMetrics {
        SnMetrics {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            buffer_dropped: AtomicU64::new(0),
            published_minus_one: AtomicU64::new(0),
            held: AtomicU64::new(0),
            shards: (0..shards).map(|_| Gauges::default()).collect(),
        }
    }

    pub fn count_held(&self) {
        self.held.fetch_add(1, Relaxed);
    }

    pub fn count_drop(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let sum = |f: fn(&Gauges) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|g| f(g).load(Relaxed)).sum()
        };
        let _ = writeln!(out, "# HELP shardmq_sn_clients MQTT-SN clients by state.");
        let _ = writeln!(out, "# TYPE shardmq_sn_clients gauge");
        for (state, value) in [
            ("active", sum(|g| &g.active)),
            ("asleep", sum(|g| &g.asleep)),
            ("awake", sum(|g| &g.awake)),
        ] {
            let _ = writeln!(out, "shardmq_sn_clients{{state=\"{state}\"}} {value}");
        }
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "shardmq_sn_registered_topics",
            "gauge",
            "Topic ids the MQTT-SN clients hold.",
            sum(|g| &g.topics),
        );
        metric(
            "shardmq_sn_buffered_messages",
            "gauge",
            "Messages waiting for MQTT-SN clients (asleep, or behind a REGISTER or an acknowledgement).",
            sum(|g| &g.buffered),
        );
        metric(
            "shardmq_sn_datagrams_received_total",
            "counter",
            "MQTT-SN datagrams received.",
            self.received.load(Relaxed),
        );
        metric(
            "shardmq_sn_datagrams_sent_total",
            "counter",
            "MQTT-SN datagrams sent.",
            self.sent.load(Relaxed),
        );
        metric(
            "shardmq_sn_buffer_dropped_total",
            "counter",
            "QoS 0 messages for MQTT-SN clients dropped because their buffer was full.",
            self.buffer_dropped.load(Relaxed),
        );
        metric(
            "shardmq_sn_minus_one_published_total",
            "counter",
            "QoS -1 PUBLISHes taken from clients without a connection.",
            self.published_minus_one.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP shardmq_sn_dropped_total MQTT-SN datagrams dropped, by reason."
        );
        let _ = writeln!(out, "# TYPE shardmq_sn_dropped_total counter");
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "shardmq_sn_dropped_total{{reason=\"{}\"}} {}",
                reason.name(),
                self.dropped[reason as usize].load(Relaxed)
            );
        }
    }
}
