//! Acknowledgements of deliveries to a client, as raw bytes: the kind must
//! fit the flow of the packet id in flight ([MQTT-4.3.2-1], [MQTT-4.3.3-1]),
//! or the connection is closed; a PUBREC for an id not in flight is answered
//! with PUBREL.

#[macro_use]
mod common;

use common::*;
use rumqttc::QoS;

shard_tests!(
    pubrec_for_a_qos1_delivery_closes,
    pubcomp_for_a_qos1_delivery_closes,
    puback_for_a_qos2_delivery_closes,
    pubcomp_before_pubrec_closes,
    puback_after_pubrec_closes,
    wrong_kind_is_counted_as_a_protocol_error,
    qos2_flow_with_late_duplicates_keeps_the_connection,
    unsolicited_pubrec_is_answered_with_pubrel,
);

/// A subscriber to `a` at `qos` that has just received one PUBLISH of `x`
/// at that QoS with packet id 1, and is still connected.
async fn subscriber_with_one_delivery(broker: &Broker, qos: u8) -> Raw {
    let mut sub = Raw::connect(broker, "ack-sub").await;
    // SUBSCRIBE id 1, filter "a".
    sub.send(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', qos])
        .await;
    sub.expect(&[0x90, 0x03, 0x00, 0x01, qos]).await;
    let mut publisher = Raw::connect(broker, "ack-pub").await;
    match qos {
        1 => {
            publisher
                .send(&[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x07, b'x'])
                .await;
            publisher.expect(&[0x40, 0x02, 0x00, 0x07]).await;
        }
        _ => {
            publisher
                .send(&[0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x07, b'x'])
                .await;
            publisher.expect(&[0x50, 0x02, 0x00, 0x07]).await;
            publisher.send(&[0x62, 0x02, 0x00, 0x07]).await;
            publisher.expect(&[0x70, 0x02, 0x00, 0x07]).await;
        }
    }
    // PUBLISH at the subscription's QoS, packet id 1.
    sub.expect(&[0x30 | qos << 1, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'x'])
        .await;
    sub
}

async fn pubrec_for_a_qos1_delivery_closes(shards: usize) {
    // [MQTT-4.3.2-1]: a QoS 1 delivery is acknowledged by PUBACK only.
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 1).await;
    sub.send(&[0x50, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
}

async fn pubcomp_for_a_qos1_delivery_closes(shards: usize) {
    // [MQTT-4.3.2-1]
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 1).await;
    sub.send(&[0x70, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
}

async fn puback_for_a_qos2_delivery_closes(shards: usize) {
    // [MQTT-4.3.3-1]: a QoS 2 delivery is answered by PUBREC, then PUBCOMP.
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 2).await;
    sub.send(&[0x40, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
}

async fn pubcomp_before_pubrec_closes(shards: usize) {
    // [MQTT-4.3.3-1]: PUBCOMP answers the broker's PUBREL, which only a
    // PUBREC brings.
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 2).await;
    sub.send(&[0x70, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
}

async fn puback_after_pubrec_closes(shards: usize) {
    // [MQTT-4.3.3-1]
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 2).await;
    sub.send(&[0x50, 0x02, 0x00, 0x01]).await;
    sub.expect(&[0x62, 0x02, 0x00, 0x01]).await;
    sub.send(&[0x40, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
}

async fn wrong_kind_is_counted_as_a_protocol_error(shards: usize) {
    if shardmq_only() {
        return;
    }
    let broker = Broker::start_with(shards, "[mqtt]\nsys_interval_s = 1\n");
    let topic = "$SYS/broker/clients/protocol_errors";
    let mut errors = Client::connect(&broker, "errors").await;
    errors.subscribe(topic, QoS::AtMostOnce).await;
    let before: u64 = text(&errors.recv().await.payload).parse().unwrap();
    let mut sub = subscriber_with_one_delivery(&broker, 1).await;
    sub.send(&[0x50, 0x02, 0x00, 0x01]).await;
    sub.expect_closed().await;
    while text(&errors.recv().await.payload).parse::<u64>().unwrap() <= before {}
}

async fn qos2_flow_with_late_duplicates_keeps_the_connection(shards: usize) {
    // The right kinds in the right order, then duplicates of a finished
    // flow: a repeated PUBREC gets PUBREL again, a repeated PUBCOMP and a
    // PUBACK for an id no longer in flight are ignored.
    let broker = Broker::start(shards);
    let mut sub = subscriber_with_one_delivery(&broker, 2).await;
    sub.send(&[0x50, 0x02, 0x00, 0x01]).await;
    sub.expect(&[0x62, 0x02, 0x00, 0x01]).await;
    sub.send(&[0x70, 0x02, 0x00, 0x01]).await;
    sub.send(&[0x70, 0x02, 0x00, 0x01]).await;
    sub.send(&[0x40, 0x02, 0x00, 0x01]).await;
    sub.ping().await;
}

async fn unsolicited_pubrec_is_answered_with_pubrel(shards: usize) {
    // A client finishing a QoS 2 flow the broker no longer knows gets the
    // PUBREL it waits for, and keeps its connection.
    let broker = Broker::start(shards);
    let mut c = Raw::connect(&broker, "ack-stray").await;
    c.send(&[0x50, 0x02, 0x12, 0x34]).await;
    c.expect(&[0x62, 0x02, 0x12, 0x34]).await;
    c.ping().await;
}
