//! UDP audio per-packet cost: validating and decrypting a device frame, and
//! sealing a backend frame for the device (copying and in place), for a
//! 120-byte Opus frame, the size firmware sends at 60 ms.

use std::net::SocketAddr;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardmq::voice::audio::AudioChannel;
use shardmq::voice::packet::{Header, HEADER_LEN};

const KEY: [u8; 16] = *b"0123456789abcdef";
const CONN_ID: u32 = 0x7014_e57e;
const OPUS_LEN: usize = 120;

fn device_datagram() -> Vec<u8> {
    let mut device = AudioChannel::new(KEY, CONN_ID);
    let mut out = Vec::new();
    device
        .seal(0, &[0x5a; OPUS_LEN], &mut out)
        .expect("120 bytes fit a datagram");
    out
}

fn receive(c: &mut Criterion) {
    let datagram = device_datagram();
    let from: SocketAddr = "192.0.2.7:40000".parse().expect("literal address");
    // What is timed must be the accepting path, not an early drop.
    let accepted = AudioChannel::new(KEY, CONN_ID).receive(from, &mut datagram.clone());
    assert!(accepted.is_ok(), "{accepted:?}");
    let mut group = c.benchmark_group("voice_receive_120");
    group.throughput(Throughput::Elements(1));
    group.bench_function("header_parse", |b| {
        b.iter(|| Header::parse(black_box(&datagram)))
    });
    // A fresh channel per packet, built outside the timed part: a channel
    // accepts each sequence once.
    group.bench_function("validate_decrypt", |b| {
        b.iter_batched_ref(
            || (AudioChannel::new(KEY, CONN_ID), datagram.clone()),
            |(channel, buf)| {
                let got = channel.receive(from, buf);
                black_box(got.is_ok());
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn seal(c: &mut Criterion) {
    let opus = [0x5a; OPUS_LEN];
    let mut group = c.benchmark_group("voice_seal_120");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal", |b| {
        let mut channel = AudioChannel::new(KEY, CONN_ID);
        let mut out = Vec::with_capacity(1500);
        b.iter(|| {
            channel
                .seal(black_box(0), black_box(&opus), &mut out)
                .expect("fits");
            black_box(out.len());
        })
    });
    group.bench_function("seal_in_place", |b| {
        let mut channel = AudioChannel::new(KEY, CONN_ID);
        let mut buf = vec![0u8; HEADER_LEN + OPUS_LEN];
        b.iter(|| {
            let len = channel
                .seal_in_place(black_box(0), &mut buf, OPUS_LEN)
                .expect("fits");
            black_box(len);
        })
    });
    group.bench_function("new_channel", |b| {
        b.iter(|| AudioChannel::new(black_box(KEY), CONN_ID))
    });
    group.finish();
}

criterion_group!(benches, receive, seal);
criterion_main!(benches);
