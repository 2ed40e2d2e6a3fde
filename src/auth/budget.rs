//! The per-address failure budget: after `failures_max` failed logins from
//! one source address within `window`, that address's CONNECTs are refused
//! for `block`, without their password being checked, while every other
//! address is served as usual.
//!
//! Sans-IO: time comes in as `now`. The table holds at most `table_max`
//! addresses; a new address beyond that first drops the entries whose
//! window and block have passed, then the least recently seen one, so a
//! flood of addresses costs bounded memory (and can at worst make the
//! budget forget an address early, never refuse an innocent one).
//!
//! Each shard keeps its own table: connections from one address spread
//! over the shards' listeners, so an address gets up to `shards` times the
//! budget before every shard refuses it. That keeps the check free of any
//! shared state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The budget's settings (`[auth]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Failures within `window` that block the address; 0 turns it off.
    pub failures_max: u32,
    pub window: Duration,
    pub block: Duration,
    pub table_max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct FailureBudget {
    config: BudgetConfig,
    entries: HashMap<IpAddr, Entry>,
}

impl FailureBudget {
    pub fn new(config: BudgetConfig) -> FailureBudget {
        assert!(config.table_max > 0, "the table must hold an address");
        FailureBudget {
            config,
            entries: HashMap::new(),
        }
    }

    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// `Err(until)` while `addr` is blocked.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Instant> {
        match self.entries.get(&addr).and_then(|e| e.blocked_until) {
            Some(until) if now < until => Err(until),
            _ => Ok(()),
        }
    }

    /// A failed login from `addr`.
    pub fn record_failure(&mut self, addr: IpAddr, now: Instant) {
        if self.config.failures_max == 0 {
            return;
        }
        if !self.entries.contains_key(&addr) && self.entries.len() >= self.config.table_max {
            self.make_room(now);
        }
        let config = self.config;
        let entry = self.entries.entry(addr).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
            last_seen: now,
        });
        entry.last_seen = now;
        if entry.blocked_until.is_some_and(|until| now >= until)
            || now.duration_since(entry.window_start) >= config.window
        {
            entry.window_start = now;
            entry.failures = 0;
            entry.blocked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= config.failures_max {
            entry.blocked_until = Some(now + config.block);
        }
    }

    /// A successful login: the address starts over.
    pub fn record_success(&mut self, addr: IpAddr) {
        self.entries.remove(&addr);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let config = self.config;
        self.entries.retain(|_, e| match e.blocked_until {
            Some(until) => now < until,
            None => now.duration_since(e.window_start) < config.window,
        });
        if self.entries.len() < config.table_max {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(addr, _)| *addr);
        if let Some(addr) = oldest {
            self.entries.remove(&addr);
        }
        debug_assert!(self.entries.len() < config.table_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BudgetConfig {
        BudgetConfig {
            failures_max: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(30),
            table_max: 4,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_is_blocked_after_its_budget_and_others_are_not() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(config());
        for i in 0..2 {
            b.record_failure(ip(1), t0 + Duration::from_secs(i));
            assert_eq!(b.check(ip(1), t0 + Duration::from_secs(i)), Ok(()));
        }
        let t = t0 + Duration::from_secs(2);
        b.record_failure(ip(1), t);
        assert_eq!(b.check(ip(1), t), Err(t + Duration::from_secs(30)));
        assert_eq!(
            b.check(ip(1), t + Duration::from_secs(29)),
            Err(t + Duration::from_secs(30))
        );
        assert_eq!(b.check(ip(2), t), Ok(()), "another address is served");
        // The block ends; one new failure starts a new window.
        let later = t + Duration::from_secs(30);
        assert_eq!(b.check(ip(1), later), Ok(()));
        b.record_failure(ip(1), later);
        assert_eq!(b.check(ip(1), later), Ok(()));
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_block() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(config());
        for i in 0..10u64 {
            let t = t0 + Duration::from_secs(i * 31);
            b.record_failure(ip(1), t);
            assert_eq!(b.check(ip(1), t), Ok(()), "failure {i}");
        }
    }

    #[test]
    fn success_clears_the_count() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(config());
        b.record_failure(ip(1), t0);
        b.record_failure(ip(1), t0);
        b.record_success(ip(1));
        b.record_failure(ip(1), t0);
        assert_eq!(b.check(ip(1), t0), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_blocked_addresses_first() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(config());
        for _ in 0..3 {
            b.record_failure(ip(0), t0);
        }
        for i in 1..=200u8 {
            b.record_failure(ip(i), t0 + Duration::from_millis(u64::from(i)));
            assert!(b.len() <= 4);
        }
        // ip(0) was seen first, so it is the one a full table forgets when
        // nothing has expired: bounded memory wins over a long memory.
        assert!(b.len() <= 4);
        // Expired entries go before live ones.
        let mut b = FailureBudget::new(config());
        for _ in 0..3 {
            b.record_failure(ip(0), t0 + Duration::from_secs(100));
        }
        for i in 1..=3u8 {
            b.record_failure(ip(i), t0);
        }
        b.record_failure(ip(9), t0 + Duration::from_secs(101));
        assert!(b.check(ip(0), t0 + Duration::from_secs(101)).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let t0 = Instant::now();
        let mut b = FailureBudget::new(BudgetConfig {
            failures_max: 0,
            ..config()
        });
        for _ in 0..100 {
            b.record_failure(ip(1), t0);
        }
        assert_eq!(b.check(ip(1), t0), Ok(()));
        assert!(b.is_empty());
    }
}
