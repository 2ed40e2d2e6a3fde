//! Persistent sessions (clean session 0): subscriptions, offline queueing,
//! redelivery of unacknowledged messages, and discarding with clean session 1.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    offline_qos1_and_qos2_queued_qos0_not,
    offline_qos0_queued_when_configured,
    unacked_qos1_resent_with_dup,
    unacked_qos2_release_resent,
    clean_session_discards_state,
    session_resumes_across_many_reconnects,
    offline_queue_is_bounded,
);

async fn persistent(broker: &Broker, id: &str) -> Client {
    Client::connect_with(options(broker, id).persistent()).await
}

fn raw_persistent(id: &str) -> Connect<'_> {
    Connect {
        clean: false,
        ..Connect::new(id)
    }
}

async fn offline_qos1_and_qos2_queued_qos0_not(shards: usize) {
    let broker = Broker::start(shards);
    let mut sub = persistent(&broker, "sleeper").await;
    assert!(!sub.session_present, "new session reported as present");
    sub.subscribe("off/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("off/1", QoS::AtLeastOnce, false, b"q1")
        .await;
    publisher
        .publish("off/0", QoS::AtMostOnce, false, b"q0")
        .await;
    publisher
        .publish("off/2", QoS::ExactlyOnce, false, b"q2")
        .await;

    let mut sub = persistent(&broker, "sleeper").await;
    assert!(sub.session_present, "session not resumed");
    // The subscription survived: a live message arrives after the backlog.
    publisher
        .publish("off/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got: Vec<_> = sub
        .recv_until("off/end")
        .await
        .into_iter()
        .map(|p| (text(&p.payload), p.qos))
        .collect();
    assert_eq!(
        got,
        [
            ("q1".to_string(), QoS::AtLeastOnce),
            ("q2".to_string(), QoS::ExactlyOnce)
        ]
    );
}

async fn offline_qos0_queued_when_configured(shards: usize) {
    let broker = Broker::start_with(shards, "[mqtt]\nqueue_qos0_offline = true\n");
    let mut sub = persistent(&broker, "sleeper").await;
    sub.subscribe("off0/#", QoS::AtMostOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("off0/a", QoS::AtMostOnce, false, b"a")
        .await;
    publisher
        .publish("off0/b", QoS::AtLeastOnce, false, b"b")
        .await;

    let mut sub = persistent(&broker, "sleeper").await;
    assert!(sub.session_present);
    let got: Vec<_> = [sub.recv().await, sub.recv().await]
        .iter()
        .map(|p| text(&p.payload))
        .collect();
    assert_eq!(got, ["a", "b"]);
}

async fn unacked_qos1_resent_with_dup(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect_with(&broker, &raw_persistent("forgetful")).await;
    raw.subscribe(1, &[("dup/t", 1)], &[1]).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("dup/t", QoS::AtLeastOnce, false, b"m")
        .await;
    let first = raw.recv_publish().await;
    assert!(!first.dup);
    // Gone without PUBACK.
    drop(raw);

    let mut raw = Raw::open(&broker).await;
    raw.send(&raw_persistent("forgetful").encode()).await;
    raw.expect(&connack(true, 0)).await;
    let again = raw.recv_publish().await;
    assert_eq!(
        (again.dup, again.pkid, again.qos, again.payload),
        (true, first.pkid, 1, b"m".to_vec())
    );
    raw.send(&puback(again.pkid)).await;
    // Acknowledged now: no further redelivery, the live message comes next.
    publisher
        .publish("dup/t", QoS::AtLeastOnce, false, b"next")
        .await;
    let next = raw.recv_publish_acked().await;
    assert_eq!((next.payload, next.dup), (b"next".to_vec(), false));
}

async fn unacked_qos2_release_resent(shards: usize) {
    let broker = Broker::start(shards);
    let mut raw = Raw::connect_with(&broker, &raw_persistent("half-done")).await;
    raw.subscribe(1, &[("rel/t", 2)], &[2]).await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("rel/t", QoS::ExactlyOnce, false, b"m")
        .await;
    let p = raw.recv_publish().await;
    raw.send(&pubrec(p.pkid)).await;
    raw.expect(&pubrel(p.pkid)).await;
    // Gone without PUBCOMP: the broker must resend the PUBREL, not the
    // PUBLISH (the client already has the message).
    drop(raw);

    let mut raw = Raw::open(&broker).await;
    raw.send(&raw_persistent("half-done").encode()).await;
    raw.expect(&connack(true, 0)).await;
    raw.expect(&pubrel(p.pkid)).await;
    raw.send(&pubcomp(p.pkid)).await;
    raw.ping().await;
}

async fn clean_session_discards_state(shards: usize) {
    let broker = Broker::start(shards);
    let mut sub = persistent(&broker, "fickle").await;
    sub.subscribe("cs/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Client::connect(&broker, "pub").await;
    publisher
        .publish("cs/t", QoS::AtLeastOnce, false, b"queued")
        .await;

    // Clean session 1 throws the stored session (and its queue) away...
    let clean = Client::connect(&broker, "fickle").await;
    assert!(!clean.session_present);
    clean.disconnect().await;
    // ...so a later clean-session-0 connection starts from nothing.
    let mut sub = persistent(&broker, "fickle").await;
    assert!(!sub.session_present, "session survived a clean session");
    sub.subscribe("cs/end", QoS::AtLeastOnce).await;
    publisher
        .publish("cs/t", QoS::AtLeastOnce, false, b"live")
        .await;
    publisher
        .publish("cs/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got = sub.recv_until("cs/end").await;
    assert!(
        got.is_empty(),
        "old subscription or queue survived: {got:?}"
    );
}

async fn session_resumes_across_many_reconnects(shards: usize) {
    let broker = Broker::start(shards);
    let mut publisher = Client::connect(&broker, "pub").await;
    let mut sub = persistent(&broker, "roamer").await;
    sub.subscribe("roam/t", QoS::AtLeastOnce).await;
    // With 4 shards each new connection may be accepted by a different
    // listener and must be routed back to the session's owner.
    for round in 0..8 {
        sub.disconnect().await;
        let msg = format!("m{round}");
        publisher
            .publish("roam/t", QoS::AtLeastOnce, false, msg.as_bytes())
            .await;
        sub = persistent(&broker, "roamer").await;
        assert!(sub.session_present, "round {round}: session lost");
        assert_eq!(text(&sub.recv().await.payload), msg, "round {round}");
    }
}

async fn offline_queue_is_bounded(shards: usize) {
    let broker = Broker::start_with(
        shards,
        "[mqtt]\nmax_queued_messages = 5\nmax_inflight = 2\nsys_interval_s = 1\n",
    );
    let mut sub = persistent(&broker, "hoarder").await;
    sub.subscribe("bound/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(&broker, "pub").await;
    for i in 0..20 {
        let payload = format!("{i}");
        publisher
            .publish("bound/t", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
    }
    if !is_mosquitto() {
        // A PUBACK does not mean the session's shard has seen the message
        // yet; the drop counter does, once all 15 overflows are counted.
        let mut sys = Client::connect(&broker, "sys").await;
        sys.subscribe("$SYS/broker/messages/dropped", QoS::AtMostOnce)
            .await;
        while text(&sys.recv().await.payload)
            .trim()
            .parse::<u64>()
            .unwrap()
            < 15
        {}
    }

    let mut sub = persistent(&broker, "hoarder").await;
    publisher
        .publish("bound/end", QoS::AtLeastOnce, false, b"")
        .await;
    let got: Vec<_> = sub
        .recv_until("bound/end")
        .await
        .iter()
        .map(|p| text(&p.payload))
        .collect();
    // The oldest are kept, newer ones dropped.
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
}
