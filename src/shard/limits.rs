//! Connection limits: sockets in total, connections per source address,
//! and CONNECTs per second per source address.
//!
//! - The total counts sockets from accept to close, in one atomic shared
//!   by every shard (a counter, not shared state any decision waits on).
//!   A socket beyond `max_connections` is closed at accept, before any
//!   byte is read: no CONNACK can be sent without reading the CONNECT,
//!   and reading it may cost a TLS handshake, the very load the limit is
//!   there to cap.
//! - Connections per address are counted on the shard that runs them
//!   (the owner of their client id), from CONNECT to close, so each shard
//!   keeps its own table and an address may hold up to `shards` times
//!   `max_connections_per_address` (as the auth failure budget does). One
//!   beyond it gets CONNACK 3 (server unavailable), so a client can tell it
//!   from a network failure.
//! - The CONNECT rate is a token bucket per address ([`ConnectRate`]) on
//!   the accepting shard, checked right at accept (after the PROXY header
//!   where the listener expects one): a refused socket is closed before its
//!   TLS handshake or WebSocket upgrade.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Addresses whose CONNECT rate a shard tracks at once.
pub const RATE_TABLE_MAX: usize = 4096;

/// The limits, as configured (`[mqtt]`); 0 turns each off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// CONNECTs per second per address, refilled continuously.
    pub connect_rate_per_address: u32,
    /// CONNECTs an address may make at once before its rate applies.
    pub connect_burst_per_address: u32,
}

/// The total and the counters, shared by every shard.
#[derive(Debug, Default)]
pub struct Admission {
    max_connections: usize,
    open: AtomicUsize,
    refused_total: AtomicU64,
    refused_address: AtomicU64,
    refused_rate: AtomicU64,
}

/// One socket counted against `max_connections`, until dropped. `Send`: it
/// travels with a hand-off.
#[derive(Debug)]
pub struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(limits: &ConnectionLimits) -> Admission {
        Admission {
            max_connections: limits.max_connections,
            ..Admission::default()
        }
    }

    /// A slot for a new socket, or `None` (counted) when all are taken.
    pub fn open(self: &Arc<Self>) -> Option<Slot> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.clone());
        if self.max_connections > 0 && before >= self.max_connections {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(slot)
    }

    pub fn note_refused_address(&self) {
        self.refused_address.fetch_add(1, Ordering::Relaxed);
    }

    pub fn note_refused_rate(&self) {
        self.refused_rate.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus lines of these counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# TYPE shardmq_connections_open gauge\nshardmq_connections_open {}",
            self.open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE shardmq_limit_connections_refused_total counter\n\
             shardmq_limit_connections_refused_total{{scope=\"total\"}} {}\n\
             shardmq_limit_connections_refused_total{{scope=\"address\"}} {}",
            load(&self.refused_total),
            load(&self.refused_address)
        );
        let _ = writeln!(
            out,
            "# TYPE shardmq_limit_connect_rate_refused_total counter\n\
             shardmq_limit_connect_rate_refused_total {}",
            load(&self.refused_rate)
        );
    }
}

/// Connections per address on one shard (see the module docs).
#[derive(Debug, Default)]
pub struct PerAddress {
    max: usize,
    held: HashMap<IpAddr, usize>,
}

impl PerAddress {
    pub fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            held: HashMap::new(),
        }
    }

    /// Counts a connection from `ip`, or `false` when it holds `max`.
    pub fn hold(&mut self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let held = self.held.entry(ip).or_insert(0);
        if *held >= self.max {
            return false;
        }
        *held += 1;
        true
    }

    /// A connection `hold` counted has ended.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(held) = self.held.get_mut(&ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(&ip);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per address: `burst` CONNECTs at once, then `rate` per
/// second. Sans-IO: time comes in as `now`.
///
/// The table holds at most `table_max` addresses. A new address beyond that
/// first drops the buckets that have refilled (an address without a bucket
/// has a full one), then the least recently refilled one: a flood of
/// addresses costs bounded memory, and forgetting an address can only let
/// it connect earlier, never refuse it.
#[derive(Debug)]
pub struct ConnectRate {
    rate: f64,
    burst: f64,
    table_max: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl ConnectRate {
    /// `rate` 0 lets everything through.
    pub fn new(rate: u32, burst: u32, table_max: usize) -> ConnectRate {
        ConnectRate {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            table_max: table_max.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether `ip` may open a connection now; takes a token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.table_max {
            self.make_room(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if self.buckets.len() >= self.table_max {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.buckets.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
