//! PUBLISH decode and encode: the zero-copy codec against mqttbytes, which
//! copies the topic into a `String`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardmq::mqtt::codec;
use shardmq::mqtt::QoS;

const TOPIC: &str = "devices/aa_bb_cc_dd_ee_ff/telemetry";

/// 64 PUBLISH packets of 64-byte payload, as one read would bring them.
fn read_buffer() -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..64u16 {
        codec::encode_publish(
            &mut out,
            TOPIC,
            &[7u8; 64],
            QoS::AtLeastOnce,
            false,
            false,
            i + 1,
        );
    }
    out.freeze()
}

fn decode(c: &mut Criterion) {
    let input = read_buffer();
    let mut group = c.benchmark_group("publish_decode_64");
    group.throughput(Throughput::Elements(64));
    group.bench_function("shardmq", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(p)) = codec::decode(&mut buf, 1 << 20) {
                black_box(&p);
            }
        })
    });
    group.bench_function("mqttbytes", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(p) = mqttbytes::v4::read(&mut buf, 1 << 20) {
                black_box(&p);
            }
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let payload = Bytes::from_static(&[7u8; 64]);
    let mut group = c.benchmark_group("publish_encode_64");
    group.throughput(Throughput::Elements(64));
    group.bench_function("shardmq", |b| {
        let mut out = BytesMut::with_capacity(8192);
        b.iter(|| {
            out.clear();
            for i in 0..64u16 {
                codec::encode_publish(
                    &mut out,
                    TOPIC,
                    &payload,
                    QoS::AtLeastOnce,
                    false,
                    false,
                    i + 1,
                );
            }
            black_box(&out);
        })
    });
    group.bench_function("mqttbytes", |b| {
        let mut out = BytesMut::with_capacity(8192);
        b.iter(|| {
            out.clear();
            for i in 0..64u16 {
                let mut p = mqttbytes::v4::Publish::from_bytes(
                    TOPIC,
                    mqttbytes::QoS::AtLeastOnce,
                    payload.clone(),
                );
                p.pkid = i + 1;
                let _ = p.write(&mut out);
            }
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
