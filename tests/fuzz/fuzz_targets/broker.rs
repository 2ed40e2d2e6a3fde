//! Drives one shard's broker machine (of two, so cross-shard output is
//! produced too) with arbitrary bytes: the first byte picks which of three
//! clients speaks, the rest is decoded as that client's packet stream, and
//! time moves on between packets. Any panic is a bug: peer bytes must only
//! ever close the peer's own connection.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz broker`.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::mqtt::broker::{owner_shard, Broker, BrokerConfig, ConnId, ShardId};
use shardmq::mqtt::codec::{decode, Packet};
use shardmq::mqtt::retained::RetainedLimits;
use shardmq::mqtt::session::SessionLimits;

const LIMITS: SessionLimits = SessionLimits {
    max_inflight: 4,
    max_queued_messages: 8,
    queue_qos0_offline: true,
    max_outbox_bytes: 4096,
    max_subscriptions: 4,
    max_awaiting_pubrel: 4,
    max_queued_bytes: 256,
};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = BrokerConfig {
        limits: LIMITS,
        max_queued_bytes_shard: 512,
        max_queued_messages_shard: 12,
        retained: RetainedLimits {
            max_messages: 4,
            max_bytes: 256,
        },
        sys_interval: Some(Duration::from_secs(1)),
        share_strategy: Default::default(),
        share_seed: 1,
    };
    let mut broker = Broker::new(ShardId(0), 2, config, now);
    let mut conns: Vec<Option<ConnId>> = vec![None; 3];
    let mut chunks = data.split(|b| *b == 0xFE);
    while let Some(chunk) = chunks.next() {
        let Some((&who, bytes)) = chunk.split_first() else { continue };
        let slot = usize::from(who % 3);
        let mut buf = BytesMut::from(bytes);
        while let Ok(Some(packet)) = decode(&mut buf, 2048) {
            now += Duration::from_millis(u64::from(who) * 10);
            match (conns[slot], packet) {
                // The shell only hands the broker ids its shard owns, and
                // gives id-less clean clients an id first.
                (None, Packet::Connect(c)) if accepted_here(&c.client_id, c.clean_session) => {
                    conns[slot] = Some(broker.connect(now, *c));
                }
                (Some(conn), packet) => broker.handle_packet(now, conn, packet),
                (None, _) => {}
            }
            broker.tick(now);
            while broker.poll_woken().is_some() {}
            while broker.poll_remote().is_some() {}
            for conn in conns.iter_mut() {
                if let Some(c) = *conn {
                    if broker.closing(c).is_some() {
                        broker.release(c);
                        *conn = None;
                    } else if let Some(out) = broker.outbox_mut(c) {
                        out.clear();
                    }
                }
            }
        }
    }
});

fn accepted_here(client_id: &str, clean: bool) -> bool {
    if client_id.is_empty() {
        return !clean;
    }
    owner_shard(client_id, 2) == ShardId(0)
}
