use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::presence::envelope::{Registration, Report};

const TIMEOUT: Duration = Duration::from_secs(10);

fn reg(node: &str, group: &str) -> Registration {
    Registration {
        trace_id: "t".into(),
        timestamp: 1698765432,
        node_id: node.into(),
        node_type: "analysis".into(),
        group_id: Some(group.into()),
        capabilities: json!({"models": ["yolov8"]}),
        metadata: json!({"region": "cn-shanghai"}),
    }
}

fn went(node: &str, state: State, cause: Option<Cause>) -> Option<Transition> {
    Some(Transition {
        node: node.into(),
        state,
        cause,
    })
}

fn ticked(r: &mut Registry, now: Instant) -> Vec<Transition> {
    let mut out = Vec::new();
    r.tick(now, &mut out);
    out
}

#[test]
fn a_registration_brings_a_node_online_once_with_what_it_declared() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    assert_eq!(
        r.register(t0, reg("a", "g1")).unwrap(),
        went("a", State::Online, None)
    );
    // Registering again while online is no transition.
    assert_eq!(r.register(t0, reg("a", "g2")).unwrap(), None);
    let n = r.get("a").unwrap();
    assert_eq!(n.group_id.as_deref(), Some("g2"));
    assert_eq!(n.registrations, 2);
    assert_eq!(n.capabilities["models"][0], "yolov8");
    assert_eq!(r.counts(), (1, 0));
}

#[test]
fn health_keeps_a_node_online_and_silence_takes_it_offline_once() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    r.register(t0, reg("a", "g")).unwrap();
    let s = Duration::from_secs;
    assert_eq!(
        r.report(t0 + s(8), "a", Report::Health, json!({"ok": true}))
            .unwrap(),
        None
    );
    assert!(ticked(&mut r, t0 + s(17)).is_empty(), "8 + 10 not reached");
    assert_eq!(
        ticked(&mut r, t0 + s(18)),
        vec![went("a", State::Offline, Some(Cause::HealthTimeout)).unwrap()]
    );
    assert!(ticked(&mut r, t0 + s(60)).is_empty(), "reported once");
    assert_eq!(r.counts(), (0, 1));
    assert_eq!(
        r.get("a").unwrap().offline_cause,
        Some(Cause::HealthTimeout)
    );
    // Health after silence brings it back.
    assert_eq!(
        r.report(t0 + s(61), "a", Report::Health, json!({}))
            .unwrap(),
        went("a", State::Online, None)
    );
    assert_eq!(r.get("a").unwrap().offline_cause, None);
}

#[test]
fn a_node_never_reporting_health_goes_offline_after_the_timeout_from_registration() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    r.register(t0, reg("a", "g")).unwrap();
    assert_eq!(ticked(&mut r, t0 + TIMEOUT).len(), 1);
}

#[test]
fn the_will_status_offline_takes_a_node_offline_once() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    r.register(t0, reg("a", "g")).unwrap();
    assert_eq!(
        r.report(t0, "a", Report::Status, json!({"status": "busy"}))
            .unwrap(),
        None
    );
    assert_eq!(r.get("a").unwrap().status.as_deref(), Some("busy"));
    assert_eq!(
        r.report(t0, "a", Report::Status, json!("offline")).unwrap(),
        went("a", State::Offline, Some(Cause::Will))
    );
    assert_eq!(
        r.report(t0, "a", Report::Status, json!({"status": "OFFLINE"}))
            .unwrap(),
        None,
        "reported once"
    );
    assert!(ticked(&mut r, t0 + TIMEOUT * 3).is_empty());
    // Registering again brings it back.
    assert_eq!(
        r.register(t0 + TIMEOUT, reg("a", "g")).unwrap(),
        went("a", State::Online, None)
    );
}

#[test]
fn reports_are_kept_and_unknown_nodes_refused() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    assert_eq!(
        r.report(t0, "ghost", Report::Health, json!({})),
        Err(RegistryError::Unknown("ghost".into()))
    );
    r.register(t0, reg("a", "g")).unwrap();
    r.report(t0, "a", Report::Resource, json!({"cpu": 35.5}))
        .unwrap();
    r.report(t0, "a", Report::Health, json!({"healthy": true}))
        .unwrap();
    let n = r.get("a").unwrap();
    assert_eq!(n.resource, Some(json!({"cpu": 35.5})));
    assert_eq!(n.health, Some(json!({"healthy": true})));
    assert!(!r.is_empty() && r.len() == 1);
}

#[test]
fn a_full_registry_replaces_the_longest_offline_node_or_refuses() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = Registry::new(TIMEOUT, 2);
    r.register(t0, reg("a", "g")).unwrap();
    r.register(t0, reg("b", "g")).unwrap();
    assert_eq!(r.register(t0, reg("c", "g")), Err(RegistryError::Full(2)));
    r.report(t0 + s(1), "b", Report::Status, json!("offline"))
        .unwrap();
    r.report(t0 + s(2), "a", Report::Status, json!("offline"))
        .unwrap();
    r.register(t0 + s(3), reg("c", "g")).unwrap();
    assert!(r.get("b").is_none(), "offline the longest");
    assert!(r.get("a").is_some() && r.get("c").is_some());
    assert_eq!(r.len(), 2);
}

#[test]
fn snapshots_follow_changes_at_most_once_per_interval() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let interval = ms(1000);
    let mut r = Registry::new(TIMEOUT, 10);
    assert!(
        r.snapshot_due(t0, interval),
        "the first replaces an old one"
    );
    assert!(!r.snapshot_due(t0 + ms(5000), interval), "nothing changed");
    r.register(t0 + ms(5000), reg("a", "g")).unwrap();
    assert!(r.snapshot_due(t0 + ms(5000), interval));
    r.report(t0 + ms(5100), "a", Report::Health, json!({}))
        .unwrap();
    r.report(t0 + ms(5200), "a", Report::Resource, json!({}))
        .unwrap();
    assert!(!r.snapshot_due(t0 + ms(5500), interval), "coalesced");
    assert!(r.snapshot_due(t0 + ms(6000), interval));
    assert!(!r.snapshot_due(t0 + ms(9000), interval));
    ticked(&mut r, t0 + ms(5100) + TIMEOUT);
    assert!(r.snapshot_due(t0 + ms(5100) + TIMEOUT, interval), "offline");
}

#[test]
fn a_refused_registration_changes_nothing_to_publish() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 1);
    r.register(t0, reg("a", "g")).unwrap();
    assert!(r.snapshot_due(t0, Duration::ZERO));
    assert!(r.register(t0, reg("b", "g")).is_err());
    assert!(!r.snapshot_due(t0, Duration::ZERO));
}

#[test]
fn the_snapshot_filters_by_group_and_by_state_or_reported_status() {
    let t0 = Instant::now();
    let mut r = Registry::new(TIMEOUT, 10);
    r.register(t0, reg("a", "g1")).unwrap();
    r.register(t0, reg("b", "g1")).unwrap();
    r.register(t0, reg("c", "g2")).unwrap();
    r.report(t0, "b", Report::Status, json!("offline")).unwrap();
    r.report(t0, "c", Report::Status, json!({"status": "busy"}))
        .unwrap();
    let ids = |v: Value| -> Vec<String> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(r.snapshot(t0, None, None)), ["a", "b", "c"]);
    assert_eq!(ids(r.snapshot(t0, Some("g1"), None)), ["a", "b"]);
    assert_eq!(ids(r.snapshot(t0, None, Some("online"))), ["a", "c"]);
    assert_eq!(ids(r.snapshot(t0, Some("g1"), Some("offline"))), ["b"]);
    assert_eq!(ids(r.snapshot(t0, None, Some("busy"))), ["c"]);
    assert!(ids(r.snapshot(t0, Some("g3"), None)).is_empty());
    let all = r.snapshot(t0, None, None);
    assert_eq!(
        (all["online"].clone(), all["offline"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(all["nodes"][1]["offline_cause"], "will");
    assert_eq!(all["nodes"][0]["metadata"]["region"], "cn-shanghai");
}

#[test]
fn query_parameters_are_found_and_percent_decoded() {
    assert_eq!(
        query_param("group=g1&status=online", "status").as_deref(),
        Some("online")
    );
    assert_eq!(
        query_param("group=group%2D001", "group").as_deref(),
        Some("group-001")
    );
    assert_eq!(query_param("group=a+b", "group").as_deref(), Some("a b"));
    assert_eq!(query_param("status=online", "group"), None);
    assert_eq!(query_param("group=%zz", "group"), None);
    assert_eq!(
        query_param("group=%e4%b8%8a", "group").as_deref(),
        Some("上")
    );
    assert_eq!(query_param("group=%ff", "group"), None);
    assert_eq!(query_param("", "group"), None);
}
