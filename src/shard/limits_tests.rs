//! The connection limits on a virtual clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Admission, ConnectRate, ConnectionLimits, PerAddress};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

#[test]
fn a_flood_from_one_address_is_refused_while_others_connect() {
    let t0 = Instant::now();
    let mut rate = ConnectRate::new(2, 3, 16);
    // The burst, then nothing until tokens refill.
    assert!((0..3).all(|_| rate.allow(ip(1), t0)));
    assert!(!rate.allow(ip(1), t0));
    assert!(!rate.allow(ip(1), t0 + Duration::from_millis(400)));
    assert!(rate.allow(ip(2), t0), "another address has its own bucket");
    // 2 per second: one token every 500 ms (the refused try took none).
    assert!(rate.allow(ip(1), t0 + Duration::from_millis(500)));
    assert!(!rate.allow(ip(1), t0 + Duration::from_millis(600)));
    // Refill stops at the burst.
    let later = t0 + Duration::from_secs(60);
    assert!((0..3).all(|_| rate.allow(ip(1), later)));
    assert!(!rate.allow(ip(1), later));
}

#[test]
fn the_rate_table_stays_bounded_and_forgets_only_toward_allowing() {
    let t0 = Instant::now();
    let mut rate = ConnectRate::new(1, 1, 4);
    assert!(rate.allow(ip(1), t0));
    for i in 2..=200u8 {
        assert!(rate.allow(ip(i), t0 + Duration::from_millis(u64::from(i))));
        assert!(rate.len() <= 4);
    }
    // Address 1 was evicted (the oldest): it may connect again.
    assert!(rate.allow(ip(1), t0 + Duration::from_millis(300)));
    // Rate 0 is off: no table at all.
    let mut off = ConnectRate::new(0, 1, 4);
    assert!((0..100).all(|_| off.allow(ip(9), t0)));
    assert!(off.is_empty());
}

#[test]
fn the_total_counts_sockets_until_their_slot_drops() {
    let limits = ConnectionLimits {
        max_connections: 2,
        ..ConnectionLimits::default()
    };
    let admission = Arc::new(Admission::new(&limits));
    let a = admission.open().expect("first");
    let _b = admission.open().expect("second");
    assert!(admission.open().is_none());
    drop(a);
    let _c = admission.open().expect("a slot was freed");
    let mut text = String::new();
    admission.render(&mut text);
    assert!(text.contains("shardmq_connections_open 2\n"), "{text}");
    assert!(
        text.contains("shardmq_limit_connections_refused_total{scope=\"total\"} 1\n"),
        "{text}"
    );
}

#[test]
fn per_address_holds_up_to_its_max() {
    let mut held = PerAddress::new(2);
    assert!(held.hold(ip(1)) && held.hold(ip(1)));
    assert!(!held.hold(ip(1)));
    assert!(held.hold(ip(2)));
    held.release(ip(1));
    assert!(held.hold(ip(1)));
    // A release without a hold never underflows.
    held.release(ip(3));
    let mut off = PerAddress::new(0);
    assert!((0..100).all(|_| off.hold(ip(1))));
}
