//! The process-wide monotonic clock that stamps payloads.
//!
//! Publishers and subscribers may run on different executor threads; both
//! read nanoseconds since one shared origin. `Instant` is `CLOCK_MONOTONIC`
//! on Linux, which is the same clock on every core, so a difference of two
//! readings taken on different threads is a true elapsed time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (never 0 after it,
/// so 0 can mean "not set" in atomics).
pub fn now_ns() -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years; the cast cannot truncate in practice.
    origin.elapsed().as_nanos() as u64 + 1
}

/// The duration from now until the clock reads `at_ns` (zero if past).
pub fn until(at_ns: u64) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(now_ns()))
}

/// Converts a duration to clock nanoseconds.
pub fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
