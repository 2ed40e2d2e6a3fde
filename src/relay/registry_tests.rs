use super::*;

/// The heartbeat of seed 001's example, in the firmware's likely keys.
const SEED: &str = r#"{"timestamp":12345,"ip":"192.168.1.100","network_type":"eth","eth":true,"wifi":false,"lte":false,"cpu_temp":45.5,"sense_temp":42.3,"video_fps":30.0,"spi_fps":29.8,"extra":{"k":1}}"#;
const TOPIC: &str = "/device/ms500/A0B1C2D3E4F5/online";

fn registry() -> Registry {
    Registry::new(Duration::from_secs(30), 3)
}

#[test]
fn the_seed_heartbeat_is_read_and_kept_raw() {
    let now = Instant::now();
    let mut r = registry();
    let t = r.heartbeat(now, TOPIC, SEED.as_bytes()).unwrap();
    assert_eq!(
        t,
        Some(Transition {
            device: "A0B1C2D3E4F5".into(),
            state: State::Online
        })
    );
    let d = r.get("A0B1C2D3E4F5").unwrap();
    assert_eq!(
        d.last,
        Heartbeat {
            timestamp: Some(12345),
            ip: Some("192.168.1.100".into()),
            network_type: Some("eth".into()),
            ethernet: Some(true),
            wifi: Some(false),
            lte: Some(false),
            cpu_temp: Some(45.5),
            sense_temp: Some(42.3),
            video_fps: Some(30.0),
            spi_fps: Some(29.8),
        }
    );
    assert_eq!(d.raw, serde_json::from_str::<Value>(SEED).unwrap());
    let snap = r.snapshot(now);
    assert_eq!(snap["online"], 1);
    assert_eq!(snap["devices"][0]["device_id"], "A0B1C2D3E4F5");
    assert_eq!(snap["devices"][0]["heartbeat"]["cpu_temp"], 45.5);
    assert_eq!(snap["devices"][0]["raw"]["extra"]["k"], 1);
}

#[test]
fn other_key_spellings_and_forms_are_read() {
    let map = serde_json::from_str::<Value>(
        r#"{"ip_address":"10.0.0.2","net_type":"wifi","eth_connected":0,"wifi_connected":"1","lteConnected":"down","cpu_temperature":"51.0","fps":"25"}"#,
    )
    .unwrap();
    let h = Heartbeat::from_json(map.as_object().unwrap());
    assert_eq!(h.ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(h.network_type.as_deref(), Some("wifi"));
    assert_eq!(
        (h.ethernet, h.wifi, h.lte),
        (Some(false), Some(true), Some(false))
    );
    assert_eq!((h.cpu_temp, h.video_fps), (Some(51.0), Some(25.0)));
    assert_eq!((h.timestamp, h.spi_fps), (None, None));
}

#[test]
fn silence_for_the_timeout_goes_offline_once_and_a_heartbeat_brings_it_back() {
    let t0 = Instant::now();
    let mut r = registry();
    let mut out = Vec::new();
    r.heartbeat(t0, TOPIC, b"{}").unwrap();
    // A heartbeat while online is no transition.
    assert_eq!(
        r.heartbeat(t0 + Duration::from_secs(10), TOPIC, b"{}"),
        Ok(None)
    );
    r.tick(t0 + Duration::from_secs(39), &mut out);
    assert!(out.is_empty(), "29 s of silence: still online");
    r.tick(t0 + Duration::from_secs(40), &mut out);
    assert_eq!(
        out,
        vec![Transition {
            device: "A0B1C2D3E4F5".into(),
            state: State::Offline
        }]
    );
    out.clear();
    r.tick(t0 + Duration::from_secs(100), &mut out);
    assert!(out.is_empty(), "offline is reported once");
    assert_eq!(r.counts(), (0, 1));
    let back = r
        .heartbeat(t0 + Duration::from_secs(101), TOPIC, b"{}")
        .unwrap();
    assert_eq!(back.map(|t| t.state), Some(State::Online));
    assert_eq!(r.get("A0B1C2D3E4F5").unwrap().heartbeats, 3);
    assert_eq!(r.counts(), (1, 0));
}

#[test]
fn bad_topics_and_payloads_are_refused_without_state() {
    let now = Instant::now();
    let mut r = registry();
    for topic in [
        "/device/ms500//online",
        "/device/ms500/a/b/online",
        "/device/ms500/a",
        "/device/ms501/a/online",
        "/device/ms500/a\u{1}/online",
    ] {
        assert!(
            matches!(
                r.heartbeat(now, topic, b"{}"),
                Err(HeartbeatError::Topic(_))
            ),
            "{topic}"
        );
    }
    for payload in [&b"not json"[..], b"[1]", b"", b"\"x\""] {
        assert_eq!(
            r.heartbeat(now, TOPIC, payload),
            Err(HeartbeatError::Payload)
        );
    }
    assert!(r.is_empty());
}

#[test]
fn a_full_registry_replaces_the_longest_offline_device_or_refuses() {
    let t0 = Instant::now();
    let mut r = registry();
    let topic = |i: u32| format!("/device/ms500/d{i}/online");
    for i in 0..3 {
        r.heartbeat(t0 + Duration::from_secs(u64::from(i)), &topic(i), b"{}")
            .unwrap();
    }
    assert_eq!(
        r.heartbeat(t0, &topic(9), b"{}"),
        Err(HeartbeatError::Full(3))
    );
    let mut out = Vec::new();
    // d0 and d1 go offline; d2 stays online.
    r.heartbeat(t0 + Duration::from_secs(20), &topic(2), b"{}")
        .unwrap();
    r.tick(t0 + Duration::from_secs(31), &mut out);
    assert_eq!(out.len(), 2);
    r.heartbeat(t0 + Duration::from_secs(32), &topic(9), b"{}")
        .unwrap();
    assert!(
        r.get("d0").is_none(),
        "the device offline longest gave its place"
    );
    assert!(r.get("d1").is_some() && r.get("d9").is_some());
    assert_eq!(r.len(), 3);
}
