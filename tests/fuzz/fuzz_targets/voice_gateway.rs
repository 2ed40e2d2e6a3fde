//! Drives one shard's voice gateway machine with arbitrary input: records
//! `[kind: u8][len: u8][len bytes]` are device control messages, backend
//! text and binary frames, datagrams (from the device or another address),
//! ticks, and management requests. A hello is completed by a backend hello
//! whenever the machine asks for a backend, so the audio paths are reached.
//! Any panic is a bug: peer bytes may only end the peer's own conversation.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz voice_gateway`.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::voice::gateway::{Action, DeviceKey, Gateway, GatewayConfig};
use shardmq::voice::identity;

const CLIENT: &str = "GID_test@@@aa_bb_cc_dd_ee_ff@@@uuid";

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    // A fixed seed and wall clock: a crash replays exactly.
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut gw = Gateway::new(
        GatewayConfig {
            shard: 1,
            shards: 2,
            public_host: "192.0.2.1".to_string(),
            public_port: 8884,
            chat_servers: vec!["ws://backend/".to_string()],
            dev_chat_servers: Vec::new(),
            dev_macs: Vec::new(),
            backend_token: "t".to_string(),
            backend_secret: "s".to_string(),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
        },
        [0; 32],
    );
    let device = DeviceKey(1);
    let id = identity::parse_client_id(CLIENT).expect("valid");
    gw.device_connected(now, device, id, CLIENT, None);
    let sources: [SocketAddr; 2] = [
        SocketAddr::from(([192, 0, 2, 7], 40000)),
        SocketAddr::from(([192, 0, 2, 8], 40000)),
    ];
    let mut convs: Vec<u32> = Vec::new();
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (record, next) = tail.split_at(len);
        rest = next;
        let conv = convs.last().copied().unwrap_or(0);
        match kind % 8 {
            0 => gw.device_message(now, wall, device, record),
            1 => gw.device_message(
                now,
                wall,
                device,
                br#"{"type":"hello","version":3,"transport":"udp","audio_params":{}}"#,
            ),
            2 => gw.backend_text(now, conv, &String::from_utf8_lossy(record)),
            3 => {
                let mut frame = BytesMut::from(record);
                let _ = gw.backend_audio(now, conv, &mut frame);
            }
            4 | 5 => {
                let mut datagram = record.to_vec();
                if let Ok(incoming) = gw.udp_in(now, sources[usize::from(kind & 1)], &mut datagram)
                {
                    for mut held in incoming.released {
                        let _ = gw.seal_released(incoming.conv, &mut held);
                    }
                }
            }
            6 => {
                now += Duration::from_secs(len as u64);
                gw.tick(now);
            }
            _ => {
                let payload = serde_json::from_slice(record).unwrap_or_default();
                gw.mcp_request(now, CLIENT, &payload, len as u64);
            }
        }
        while let Some(action) = gw.poll_action() {
            if let Action::OpenBackend { conv, .. } = action {
                convs.push(conv);
                gw.backend_text(now, conv, r#"{"type":"hello","session_id":"s"}"#);
            }
        }
    }
    gw.device_gone(now, device);
    while gw.poll_action().is_some() {}
    assert_eq!(gw.counters().conversations, 0);
});
