use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const MOSQUITTO_7: &str = "alice:$7$101$fWcz3ZIazCmPS96M$QPQuO7fiu8nvrmAL9nv1R49JEJcNJxksYWR2PcI17zBd01C1zxcCPfhN/FsNiqsdYmpd7z8oqADYMyRW/vxwNA==";

fn gate(allow_anonymous: bool, acl: Option<&str>) -> Gate {
    let snapshot = AuthSnapshot {
        passwords: Some(PasswordFile::parse(MOSQUITTO_7).unwrap()),
        acl: acl.map(|t| AclFile::parse(t).unwrap()),
        allow_anonymous,
        acl_default: AclDefault::Deny,
    };
    let budget = BudgetConfig {
        failures_max: 2,
        window: Duration::from_secs(60),
        block: Duration::from_secs(10),
        table_max: 16,
    };
    Gate::new(Arc::new(snapshot), budget, VerifyCache::new(8, [1; 32]))
}

fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([192, 0, 2, last]))
}

#[test]
fn credentials_decide_connack_4_and_5() {
    let now = Instant::now();
    let mut g = gate(false, None);
    assert_eq!(
        g.check(now, ip(1), Some("alice"), Some(b"secret"), "c"),
        Verdict::Accept(None)
    );
    assert_eq!(
        g.check(now, ip(2), Some("alice"), Some(b"wrong"), "c"),
        Verdict::BadCredentials
    );
    assert_eq!(
        g.check(now, ip(3), Some("mallory"), Some(b"secret"), "c"),
        Verdict::BadCredentials
    );
    assert_eq!(
        g.check(now, ip(4), Some("alice"), None, "c"),
        Verdict::BadCredentials
    );
    assert_eq!(
        g.check(now, ip(5), None, None, "c"),
        Verdict::AnonymousRefused
    );
    let mut g = gate(true, None);
    assert_eq!(g.check(now, ip(5), None, None, "c"), Verdict::Accept(None));
}

#[test]
fn the_budget_blocks_one_address_on_a_virtual_clock() {
    let t0 = Instant::now();
    let mut g = gate(false, None);
    for _ in 0..2 {
        assert_eq!(
            g.check(t0, ip(1), Some("alice"), Some(b"bad"), "c"),
            Verdict::BadCredentials
        );
    }
    // Blocked: even the right password is not checked.
    assert_eq!(
        g.check(t0, ip(1), Some("alice"), Some(b"secret"), "c"),
        Verdict::Throttled
    );
    assert_eq!(
        g.check(t0, ip(2), Some("alice"), Some(b"secret"), "c"),
        Verdict::Accept(None),
        "another address is served"
    );
    let later = t0 + Duration::from_secs(10);
    assert_eq!(
        g.check(later, ip(1), Some("alice"), Some(b"secret"), "c"),
        Verdict::Accept(None)
    );
}

#[test]
fn the_acl_is_compiled_for_the_client() {
    let now = Instant::now();
    let mut g = gate(
        true,
        Some("pattern readwrite c/%c\nuser alice\ntopic read a\n"),
    );
    let Verdict::Accept(Some(acl)) = g.check(now, None, Some("alice"), Some(b"secret"), "x") else {
        panic!("accepted with an ACL")
    };
    assert!(acl.may_publish("c/x") && acl.may_receive("a") && !acl.may_publish("a"));
}

#[test]
fn a_reload_drops_remembered_successes() {
    let now = Instant::now();
    let mut g = gate(false, None);
    assert_eq!(
        g.check(now, None, Some("alice"), Some(b"secret"), "c"),
        Verdict::Accept(None)
    );
    g.replace(Arc::new(AuthSnapshot {
        passwords: Some(PasswordFile::default()),
        ..AuthSnapshot::open()
    }));
    assert_eq!(
        g.check(now, None, Some("alice"), Some(b"secret"), "c"),
        Verdict::BadCredentials,
        "alice was removed: the cache must not let her in"
    );
}

#[test]
fn an_open_snapshot_checks_nothing() {
    let mut g = Gate::new(
        Arc::new(AuthSnapshot::open()),
        BudgetConfig {
            failures_max: 1,
            window: Duration::from_secs(1),
            block: Duration::from_secs(1),
            table_max: 1,
        },
        VerifyCache::new(0, [0; 32]),
    );
    assert_eq!(
        g.check(Instant::now(), ip(1), Some("x"), Some(b"y"), "c"),
        Verdict::Accept(None)
    );
}

#[test]
fn a_certified_user_name_needs_no_password_but_gets_its_acl() {
    // "device-1" is in no password file: the certificate alone admits it.
    let acl = "user device-1\ntopic readwrite devices/1/#\n";
    let mut g = gate(false, Some(acl));
    let Verdict::Accept(Some(compiled)) = g.check_certified("device-1", "c") else {
        panic!("a certified user is admitted with its ACL");
    };
    assert!(compiled.may_publish("devices/1/up"));
    assert!(!compiled.may_publish("devices/2/up"));
    // The same name with a password goes through the password file.
    assert_eq!(
        g.check(Instant::now(), ip(1), Some("device-1"), Some(b"x"), "c"),
        Verdict::BadCredentials
    );
}
