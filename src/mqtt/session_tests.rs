use super::*;
use crate::mqtt::codec::{decode, Packet};

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 2,
    max_queued_messages: 3,
    queue_qos0_offline: false,
    max_outbox_bytes: 1024,
    max_subscriptions: 0,
    max_awaiting_pubrel: 0,
    max_queued_bytes: 0,
};

fn message(qos: QoS) -> Message {
    Message {
        topic: TopicName::from_string("a/b".to_string()).unwrap(),
        payload: Bytes::from_static(b"x"),
        qos,
        retain: false,
    }
}

fn packets(out: &mut BytesMut) -> Vec<Packet> {
    let mut v = Vec::new();
    while let Some(p) = decode(out, 1 << 20).unwrap() {
        v.push(p);
    }
    v
}

fn publish_ids(out: &mut BytesMut) -> Vec<(u16, bool)> {
    packets(out)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.pkid, p.dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn packet_ids_start_at_one_and_window_queues_the_rest() {
    let mut s = Session::new("c".into(), false);
    let mut out = BytesMut::new();
    s.resume(&mut out, &LIMITS);
    for _ in 0..4 {
        s.deliver(
            &message(QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            &mut out,
            &LIMITS,
        );
    }
    assert_eq!(publish_ids(&mut out), vec![(1, false), (2, false)]);
    assert_eq!(s.queued_len(), 2);
    assert_eq!(s.handle_puback(1), AckOutcome::Advanced);
    assert_eq!(
        s.handle_puback(1),
        AckOutcome::Stale,
        "a second ack of the same id is ignored"
    );
    s.pump(&mut out, &LIMITS);
    assert_eq!(publish_ids(&mut out), vec![(3, false)]);
}

#[test]
fn queue_is_bounded_in_bytes() {
    // "a/b" and "x": 4 bytes a message.
    let limits = SessionLimits {
        max_queued_bytes: 9,
        ..LIMITS
    };
    let mut s = Session::new("c".into(), false);
    let mut out = BytesMut::new();
    let q1 = message(QoS::AtLeastOnce);
    let outcomes: Vec<_> = (0..3)
        .map(|_| s.deliver(&q1, QoS::AtLeastOnce, &mut out, &limits))
        .collect();
    assert_eq!(
        outcomes,
        [Delivery::Queued, Delivery::Queued, Delivery::DroppedBytes]
    );
    assert_eq!(s.queued_bytes(), 8);
    // Sending from the queue frees its bytes.
    assert_eq!(s.resume(&mut out, &limits), 2);
    assert_eq!(s.queued_bytes(), 0);
    assert_eq!(
        s.deliver(&q1, QoS::AtLeastOnce, &mut out, &limits),
        Delivery::Queued,
        "the window (2) is full: queued again"
    );
    assert_eq!(s.queued_bytes(), 4);
}

#[test]
fn queue_is_bounded_and_qos0_offline_dropped() {
    let mut s = Session::new("c".into(), false);
    let mut out = BytesMut::new();
    let q1 = message(QoS::AtLeastOnce);
    let outcomes: Vec<_> = (0..4)
        .map(|_| s.deliver(&q1, QoS::AtLeastOnce, &mut out, &LIMITS))
        .collect();
    assert_eq!(outcomes[..3], [Delivery::Queued; 3]);
    assert_eq!(outcomes[3], Delivery::Dropped);
    let q0 = message(QoS::AtMostOnce);
    assert_eq!(
        s.deliver(&q0, QoS::AtMostOnce, &mut out, &LIMITS),
        Delivery::Dropped
    );
    assert!(out.is_empty());
}

#[test]
fn reconnect_resends_unacked_with_dup_and_pubrel_for_released() {
    let mut s = Session::new("c".into(), false);
    let mut out = BytesMut::new();
    s.resume(&mut out, &LIMITS);
    s.deliver(
        &message(QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        &mut out,
        &LIMITS,
    );
    s.deliver(
        &message(QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        &mut out,
        &LIMITS,
    );
    packets(&mut out);
    assert_eq!(s.handle_pubrec(1, &mut out), AckOutcome::Advanced);
    assert_eq!(packets(&mut out), vec![Packet::PubRel(1)]);
    s.go_offline();
    s.resume(&mut out, &LIMITS);
    let p = packets(&mut out);
    assert_eq!(p[0], Packet::PubRel(1));
    match &p[1] {
        Packet::Publish(p) => assert_eq!((p.pkid, p.dup), (2, true)),
        other => panic!("expected a publish, got {other:?}"),
    }
    assert_eq!(s.handle_pubcomp(1), AckOutcome::Advanced);
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn acknowledgements_of_the_wrong_kind_are_violations() {
    let mut s = Session::new("c".into(), true);
    let mut out = BytesMut::new();
    s.resume(&mut out, &LIMITS);
    let q1 = message(QoS::AtLeastOnce);
    let q2 = message(QoS::ExactlyOnce);
    s.deliver(&q1, QoS::AtLeastOnce, &mut out, &LIMITS);
    s.deliver(&q2, QoS::ExactlyOnce, &mut out, &LIMITS);
    assert_eq!(publish_ids(&mut out), vec![(1, false), (2, false)]);
    // PUBREC or PUBCOMP for QoS 1 [MQTT-4.3.2-1].
    assert_eq!(s.handle_pubrec(1, &mut out), AckOutcome::WrongKind);
    assert_eq!(s.handle_pubcomp(1), AckOutcome::WrongKind);
    // PUBACK for QoS 2, PUBCOMP before PUBREC [MQTT-4.3.3-1].
    assert_eq!(s.handle_puback(2), AckOutcome::WrongKind);
    assert_eq!(s.handle_pubcomp(2), AckOutcome::WrongKind);
    assert!(out.is_empty(), "a violation is not answered");
    assert_eq!(s.handle_pubrec(2, &mut out), AckOutcome::Advanced);
    assert_eq!(packets(&mut out), vec![Packet::PubRel(2)]);
    // PUBACK after PUBREC.
    assert_eq!(s.handle_puback(2), AckOutcome::WrongKind);
    assert_eq!(s.inflight_len(), 2, "no violation moved a flow on");
    assert_eq!(s.handle_pubcomp(2), AckOutcome::Advanced);
    assert_eq!(s.handle_puback(1), AckOutcome::Advanced);
}

#[test]
fn unsolicited_pubrec_is_answered_with_pubrel() {
    let mut s = Session::new("c".into(), true);
    let mut out = BytesMut::new();
    s.resume(&mut out, &LIMITS);
    assert_eq!(s.handle_pubrec(0x1234, &mut out), AckOutcome::Stale);
    assert_eq!(packets(&mut out), vec![Packet::PubRel(0x1234)]);
    // Unknown PUBACK and PUBCOMP stay unanswered.
    assert_eq!(s.handle_puback(7), AckOutcome::Stale);
    assert_eq!(s.handle_pubcomp(7), AckOutcome::Stale);
    assert!(out.is_empty());
}

#[test]
fn inbound_qos2_is_deduplicated_until_release() {
    let mut s = Session::new("c".into(), true);
    assert!(s.receive_qos2(7));
    assert!(!s.receive_qos2(7));
    s.release_qos2(7);
    assert!(s.receive_qos2(7));
}

#[test]
fn qos0_dropped_when_outbox_full() {
    let mut s = Session::new("c".into(), true);
    let mut out = BytesMut::new();
    s.resume(&mut out, &LIMITS);
    out.extend_from_slice(&[0u8; 1024]);
    let q0 = message(QoS::AtMostOnce);
    assert_eq!(
        s.deliver(&q0, QoS::AtMostOnce, &mut out, &LIMITS),
        Delivery::Dropped
    );
    assert_eq!(out.len(), 1024);
}
