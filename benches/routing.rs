//! Routing costs on one shard: matching a topic against 10k filters, a
//! wildcard lookup over 100k retained topics, and the hand-off of messages
//! to another shard over the mesh channel.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use shardmq::mqtt::broker::RemoteMsg;
use shardmq::mqtt::index::SubscriptionIndex;
use shardmq::mqtt::retained::{RetainedMessage, RetainedStore};
use shardmq::mqtt::session::Message;
use shardmq::mqtt::topic::TopicName;
use shardmq::mqtt::QoS;

/// 10k filters shaped like a device fleet: exact, `+` and `#` mixed.
fn fleet_index() -> SubscriptionIndex<u32> {
    let mut index = SubscriptionIndex::new();
    for i in 0..10_000u32 {
        let filter = match i % 4 {
            0 => format!("devices/{i}/cmd"),
            1 => format!("devices/{i}/+"),
            2 => format!("fleet/{}/#", i % 100),
            _ => format!("+/{i}/status"),
        };
        index.subscribe(&filter, i, QoS::AtLeastOnce);
    }
    index
}

fn topic_match(c: &mut Criterion) {
    let index = fleet_index();
    let mut group = c.benchmark_group("match_10k_filters");
    group.throughput(Throughput::Elements(1));
    group.bench_function("exact_and_plus", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(black_box("devices/4241/cmd"), |_, _| n += 1);
            n
        })
    });
    group.bench_function("no_match", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(black_box("sensors/1/x"), |_, _| n += 1);
            n
        })
    });
    group.finish();
}

fn retained_lookup(c: &mut Criterion) {
    let mut store = RetainedStore::new();
    for i in 0..100_000u32 {
        let topic = TopicName::from_string(format!("devices/{i}/state")).expect("valid");
        store.set(RetainedMessage {
            topic,
            payload: Bytes::from_static(b"online"),
            qos: QoS::AtMostOnce,
        });
    }
    let mut group = c.benchmark_group("retained_100k");
    group.sample_size(10);
    group.bench_function("devices/+/state", |b| {
        b.iter(|| {
            let mut n = 0usize;
            store.for_each_match(black_box("devices/+/state"), |_| n += 1);
            assert_eq!(n, 100_000);
        })
    });
    group.bench_function("devices/4242/#", |b| {
        b.iter(|| {
            let mut n = 0usize;
            store.for_each_match(black_box("devices/4242/#"), |_| n += 1);
            n
        })
    });
    group.finish();
}

/// Messages per batch in the hand-off bench: what one read of small
/// publishes typically yields.
const BATCH: usize = 64;

fn cross_shard(c: &mut Criterion) {
    let message = Message {
        topic: TopicName::from_string("devices/1/telemetry".into()).expect("valid"),
        payload: Bytes::from_static(&[7u8; 64]),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let mut group = c.benchmark_group("cross_shard_handoff");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("batch_of_64_publishes", |b| {
        b.iter_custom(|iters| handoff(iters, &message))
    });
    group.finish();
}

/// Sends `iters` batches from one executor to another and waits until the
/// receiver has taken them all.
fn handoff(iters: u64, message: &Message) -> Duration {
    let (tx, rx) = shared_channel::new_bounded::<Vec<RemoteMsg>>(4096);
    let receiver = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let rx = rx.connect().await;
            let mut n = 0u64;
            while let Some(batch) = rx.recv().await {
                n += batch.len() as u64;
                black_box(batch);
            }
            n
        })
        .expect("receiver executor");
    let message = message.clone();
    let sender = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let tx = tx.connect().await;
            let start = Instant::now();
            for _ in 0..iters {
                let batch = (0..BATCH)
                    .map(|_| RemoteMsg::Publish(message.clone()))
                    .collect();
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
            drop(tx);
            start
        })
        .expect("sender executor");
    let start = sender.join().expect("sender");
    let received = receiver.join().expect("receiver");
    assert_eq!(received, iters * BATCH as u64);
    start.elapsed()
}

criterion_group!(benches, topic_match, retained_lookup, cross_shard);
criterion_main!(benches);
