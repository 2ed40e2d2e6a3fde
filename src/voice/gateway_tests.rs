//! The gateway machine driven as the shell would drive it, with a device
//! simulated by its own `AudioChannel` (the same header and cipher the
//! firmware uses) and no sockets.

use super::*;
use serde_json::json;
use std::time::UNIX_EPOCH;

/// The seed of every machine here; the keys and conn ids below are drawn
/// from it.
const SEED: [u8; 32] = [7; 32];

/// The wall clock the device messages arrive at.
fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// What a machine whose RNG is in the state of `rng` draws for its next
/// hello, in its documented order: the conn id, the key, then the backend pick.
fn next_draws(rng: &mut StdRng, shard: u32, shards: u32) -> (u32, [u8; 16]) {
    let conv = packet::conn_id_for_shard(shard, shards, rng.gen());
    let key: [u8; 16] = rng.gen();
    let _backend: u32 = rng.gen();
    (conv, key)
}

const HELLO: &[u8] = br#"{"type":"hello","version":3,"transport":"udp","features":{"mcp":true},"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}"#;

fn device_addr() -> SocketAddr {
    "10.1.2.3:40000".parse().unwrap()
}

fn config(shard: u32, shards: u32) -> GatewayConfig {
    GatewayConfig {
        shard,
        shards,
        public_host: "192.0.2.1".to_string(),
        public_port: 8884,
        chat_servers: vec!["ws://backend/xiaozhi/v1/?from=mqtt_gateway".to_string()],
        dev_chat_servers: vec!["ws://dev/".to_string()],
        dev_macs: vec!["aa:bb:cc:dd:ee:02".to_string()],
        backend_token: "test-token".to_string(),
        backend_secret: String::new(),
        hello_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(180),
    }
}

struct World {
    gw: Gateway,
    now: Instant,
    /// A replica of the machine's RNG, to name the values it draws.
    draws: StdRng,
    shard: u32,
    shards: u32,
}

const DEV: DeviceKey = DeviceKey(7);

impl World {
    fn new() -> World {
        World::with(config(1, 4))
    }

    fn with(config: GatewayConfig) -> World {
        let (shard, shards) = (config.shard, config.shards);
        let mut gw = Gateway::new(config, SEED);
        let now = Instant::now();
        let id = identity::parse_client_id("GID_test@@@aa_bb_cc_dd_ee_01@@@uuid-1").unwrap();
        gw.device_connected(
            now,
            DEV,
            id,
            "GID_test@@@aa_bb_cc_dd_ee_01@@@uuid-1",
            Some("10.1.2.3".into()),
        );
        World {
            gw,
            now,
            draws: StdRng::from_seed(SEED),
            shard,
            shards,
        }
    }

    /// The device sends a hello; returns the conv and key it must get.
    fn hello(&mut self) -> (u32, [u8; 16]) {
        self.gw.device_message(self.now, wall(), DEV, HELLO);
        next_draws(&mut self.draws, self.shard, self.shards)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.gw.poll_action()).collect()
    }

    fn device_json(&mut self) -> Vec<Value> {
        self.actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::ToDevice { payload, .. } => serde_json::from_slice(&payload).ok(),
                _ => None,
            })
            .collect()
    }

    /// hello → backend hello → the device's reply, which must carry the
    /// conn id and key drawn from the seed; returns the conv id and the
    /// device's own channel with that key.
    fn open(&mut self) -> (u32, AudioChannel, Value) {
        let (conv, key) = self.hello();
        let opened = self.actions().iter().find_map(|a| match a {
            Action::OpenBackend { conv, .. } => Some(*conv),
            _ => None,
        });
        assert_eq!(opened, Some(conv), "the conn id drawn from the seed");
        self.gw.backend_text(
            self.now,
            conv,
            r#"{"type":"hello","transport":"websocket","session_id":"s-1","audio_params":{"sample_rate":24000}}"#,
        );
        let reply = self.device_json().pop().expect("hello reply");
        assert_eq!(reply["udp"]["key"], packet::hex16(&key));
        assert_eq!(
            reply["udp"]["nonce"],
            format!("01000000{conv:08x}0000000000000000")
        );
        (conv, AudioChannel::new(key, conv), reply)
    }
}

fn backend_frame(timestamp: u32, opus: &[u8]) -> BytesMut {
    let mut f = BytesMut::zeroed(16);
    f[8..12].copy_from_slice(&timestamp.to_be_bytes());
    f[12..16].copy_from_slice(&(opus.len() as u32).to_be_bytes());
    f.extend_from_slice(opus);
    f
}

#[test]
fn hello_opens_a_backend_with_the_reference_headers() {
    let mut w = World::new();
    let (drawn, _) = w.hello();
    let actions = w.actions();
    let [Action::OpenBackend {
        conv,
        url,
        headers,
        hello,
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*conv, drawn);
    assert_eq!(
        packet::owner_of_conn_id(*conv, 4),
        1,
        "the conn id steers to this shard"
    );
    assert_eq!(url, "ws://backend/xiaozhi/v1/?from=mqtt_gateway");
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("device-id"), Some("aa:bb:cc:dd:ee:01"));
    assert_eq!(get("client-id"), Some("uuid-1"));
    assert_eq!(get("protocol-version"), Some("2"));
    assert_eq!(get("authorization"), Some("Bearer test-token"));
    assert_eq!(get("x-forwarded-for"), Some("10.1.2.3"));
    let hello: Value = serde_json::from_str(hello).unwrap();
    assert_eq!(hello["version"], 2);
}

#[test]
fn backend_hello_completes_the_device_hello() {
    let mut w = World::new();
    let (conv, _, reply) = w.open();
    assert_eq!(reply["type"], "hello");
    assert_eq!(reply["session_id"], "s-1");
    assert_eq!(reply["transport"], "udp");
    assert_eq!(reply["udp"]["server"], "192.0.2.1");
    assert_eq!(reply["udp"]["port"], 8884);
    assert_eq!(reply["audio_params"]["sample_rate"], 24000);
    assert_eq!(reply["udp"]["nonce"], packet::hex16(&packet::nonce(conv)));
}

#[test]
fn the_seed_names_the_conn_id_and_key_of_each_hello() {
    let mut rng = StdRng::from_seed(SEED);
    let (conv1, key1) = next_draws(&mut rng, 1, 4);
    let (conv2, key2) = next_draws(&mut rng, 1, 4);
    let mut w = World::new();
    let (first, device1, reply1) = w.open();
    let (second, device2, reply2) = w.open();
    assert_eq!((first, *device1.key_bytes()), (conv1, key1));
    assert_eq!((second, *device2.key_bytes()), (conv2, key2));
    assert_eq!(reply1["udp"]["key"], packet::hex16(&key1));
    assert_eq!(reply2["udp"]["key"], packet::hex16(&key2));
    assert_eq!(
        reply2["udp"]["nonce"],
        format!("01000000{conv2:08x}0000000000000000")
    );
}

#[test]
fn one_seed_replays_the_same_conversation_and_another_does_not() {
    let run = |seed: [u8; 32]| {
        let mut gw = Gateway::new(config(2, 3), seed);
        let now = Instant::now();
        let id = identity::parse_client_id("GID_test@@@aa_bb_cc_dd_ee_01").unwrap();
        gw.device_connected(now, DEV, id, "GID_test@@@aa_bb_cc_dd_ee_01", None);
        gw.device_message(now, wall(), DEV, HELLO);
        let conv = match gw.poll_action() {
            Some(Action::OpenBackend { conv, .. }) => conv,
            other => panic!("{other:?}"),
        };
        gw.backend_text(now, conv, r#"{"type":"hello","session_id":"s"}"#);
        match gw.poll_action() {
            Some(Action::ToDevice { payload, .. }) => payload,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(run(SEED), run(SEED));
    assert_ne!(run(SEED), run([8; 32]));
}

#[test]
fn device_audio_becomes_a_backend_frame_in_place() {
    let mut w = World::new();
    let (conv, mut device, _) = w.open();
    let mut datagram = Vec::new();
    device.seal(1234, b"opus-frame", &mut datagram).unwrap();
    let incoming = w.gw.udp_in(w.now, device_addr(), &mut datagram).unwrap();
    assert_eq!(incoming.conv, conv);
    assert_eq!(&datagram[..8], &[0; 8]);
    assert_eq!(&datagram[8..12], &1234u32.to_be_bytes());
    assert_eq!(&datagram[12..16], &10u32.to_be_bytes());
    assert_eq!(&datagram[16..], b"opus-frame");
    assert_eq!(w.gw.counters().udp_in, 1);
}

#[test]
fn replayed_spoofed_and_unknown_datagrams_are_dropped_and_counted() {
    let mut w = World::new();
    let (_, mut device, _) = w.open();
    let mut first = Vec::new();
    device.seal(0, b"a", &mut first).unwrap();
    let replay = first.clone();
    w.gw.udp_in(w.now, device_addr(), &mut first).unwrap();
    let mut again = replay.clone();
    assert_eq!(
        w.gw.udp_in(w.now, device_addr(), &mut again),
        Err(DropReason::Replayed)
    );
    let mut spoofed = Vec::new();
    device.seal(0, b"b", &mut spoofed).unwrap();
    let attacker: SocketAddr = "10.9.9.9:1".parse().unwrap();
    assert_eq!(
        w.gw.udp_in(w.now, attacker, &mut spoofed),
        Err(DropReason::WrongSource)
    );
    let mut stranger = replay;
    stranger[4] ^= 0xff;
    assert_eq!(
        w.gw.udp_in(w.now, device_addr(), &mut stranger),
        Err(DropReason::UnknownConn)
    );
    assert_eq!(
        w.gw.udp_in(w.now, device_addr(), &mut [1, 0]),
        Err(DropReason::TooShort)
    );
    let c = w.gw.counters();
    let count =
        |r: DropReason| c.udp_dropped[DropReason::ALL.iter().position(|x| *x == r).unwrap()];
    assert_eq!(count(DropReason::Replayed), 1);
    assert_eq!(count(DropReason::WrongSource), 1);
    assert_eq!(count(DropReason::UnknownConn), 1);
    assert_eq!(count(DropReason::TooShort), 1);
}

#[test]
fn audio_before_the_backend_hello_is_refused() {
    let mut w = World::new();
    let (conv, _) = w.hello();
    assert!(matches!(
        w.actions().as_slice(),
        [Action::OpenBackend { .. }]
    ));
    // The device cannot know the key yet; a datagram naming the conv is
    // someone else's.
    let mut d = packet::Header {
        payload_len: 1,
        conn_id: conv,
        timestamp: 0,
        sequence: 1,
    }
    .to_bytes()
    .to_vec();
    d.push(0);
    assert_eq!(
        w.gw.udp_in(w.now, device_addr(), &mut d),
        Err(DropReason::NoConversation)
    );
}

#[test]
fn backend_audio_waits_for_the_device_address_then_goes_in_order() {
    let mut w = World::new();
    let (conv, mut device, _) = w.open();
    let mut greeting = backend_frame(77, b"hello there");
    assert_eq!(
        w.gw.backend_audio(w.now, conv, &mut greeting),
        Outgoing::Held
    );
    let mut mic = Vec::new();
    device.seal(0, b"mic", &mut mic).unwrap();
    let incoming = w.gw.udp_in(w.now, device_addr(), &mut mic).unwrap();
    assert_eq!(incoming.released.len(), 1);
    let mut held = incoming.released.into_iter().next().unwrap();
    let (to, len) = w.gw.seal_released(conv, &mut held).unwrap();
    assert_eq!(to, device_addr());
    let server_addr: SocketAddr = "192.0.2.1:8884".parse().unwrap();
    let mut rx = AudioChannel::new(*device.key_bytes(), conv);
    let got = rx.receive(server_addr, &mut held[..len]).unwrap();
    assert_eq!(got.sequence, 1);
    assert_eq!(got.timestamp, 77);
    assert_eq!(&held[got.payload], b"hello there");
    let mut next = backend_frame(78, b"more");
    let Outgoing::Send { len, .. } = w.gw.backend_audio(w.now, conv, &mut next) else {
        panic!()
    };
    let got = rx.receive(server_addr, &mut next[..len]).unwrap();
    assert_eq!(got.sequence, 2);
    assert_eq!(&next[got.payload], b"more");
}

#[test]
fn oversized_or_truncated_backend_frames_are_dropped() {
    let mut w = World::new();
    let (conv, mut device, _) = w.open();
    let mut mic = Vec::new();
    device.seal(0, b"mic", &mut mic).unwrap();
    w.gw.udp_in(w.now, device_addr(), &mut mic).unwrap();
    let mut big = backend_frame(0, &[0u8; 1500]);
    assert_eq!(w.gw.backend_audio(w.now, conv, &mut big), Outgoing::Dropped);
    let mut short = backend_frame(0, b"abc");
    short.truncate(18);
    assert_eq!(
        w.gw.backend_audio(w.now, conv, &mut short),
        Outgoing::Dropped
    );
    let mut tiny = BytesMut::from(&b"xy"[..]);
    assert_eq!(
        w.gw.backend_audio(w.now, conv, &mut tiny),
        Outgoing::Dropped
    );
    assert_eq!(w.gw.counters().audio_out_dropped, 3);
}

#[test]
fn device_goodbye_closes_the_backend_and_is_answered() {
    let mut w = World::new();
    let (conv, _, _) = w.open();
    w.gw.device_message(
        w.now,
        wall(),
        DEV,
        br#"{"type":"goodbye","session_id":"s-1"}"#,
    );
    let actions = w.actions();
    assert!(actions.contains(&Action::CloseBackend { conv }));
    assert!(actions.iter().any(|a| matches!(a, Action::ToDevice { payload, .. }
        if serde_json::from_slice::<Value>(payload).unwrap() == json!({"type":"goodbye","session_id":"s-1"}))));
    assert_eq!(w.gw.counters().conversations, 0);
}

#[test]
fn backend_close_says_goodbye_with_the_session_id() {
    let mut w = World::new();
    let (conv, _, _) = w.open();
    w.gw.backend_closed(w.now, conv);
    assert_eq!(
        w.device_json(),
        vec![json!({"type":"goodbye","session_id":"s-1"})]
    );
}

#[test]
fn device_and_backend_json_pass_through() {
    let mut w = World::new();
    let (conv, _, _) = w.open();
    let listen = br#"{"session_id":"s-1","type":"listen","state":"start","mode":"auto"}"#;
    w.gw.device_message(w.now, wall(), DEV, listen);
    assert_eq!(
        w.actions(),
        vec![Action::BackendText {
            conv,
            text: String::from_utf8(listen.to_vec()).unwrap()
        }]
    );
    w.gw.backend_text(w.now, conv, r#"{"type":"tts","state":"start"}"#);
    assert_eq!(w.device_json(), vec![json!({"type":"tts","state":"start"})]);
}

#[test]
fn repeated_hello_replaces_the_conversation() {
    let mut w = World::new();
    let (first, old_device, _) = w.open();
    let (second, new_device, _) = w.open();
    assert_ne!(first, second);
    assert_ne!(old_device.key_bytes(), new_device.key_bytes());
    assert_eq!(w.gw.counters().conversations, 1);
    let mut late = backend_frame(0, b"x");
    assert_eq!(
        w.gw.backend_audio(w.now, first, &mut late),
        Outgoing::Dropped
    );
}

#[test]
fn a_repeated_hello_closes_the_old_backend() {
    let mut w = World::new();
    let (first, _, _) = w.open();
    let (second, _) = w.hello();
    let actions = w.actions();
    assert!(actions.contains(&Action::CloseBackend { conv: first }));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::OpenBackend { conv, .. } if *conv == second)));
}

#[test]
fn invalid_hello_gets_an_error_and_garbage_closes_the_device() {
    let mut w = World::new();
    w.gw.device_message(
        w.now,
        wall(),
        DEV,
        br#"{"type":"hello","version":2,"transport":"udp"}"#,
    );
    let replies = w.device_json();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["type"], "error");
    w.gw.device_message(w.now, wall(), DEV, b"\xef\xbb\xbfnot json");
    assert_eq!(w.actions(), vec![Action::CloseDevice { device: DEV }]);
}

#[test]
fn messages_without_a_conversation_are_answered_with_goodbye() {
    let mut w = World::new();
    w.gw.device_message(
        w.now,
        wall(),
        DEV,
        br#"{"type":"listen","state":"start","session_id":"old"}"#,
    );
    assert_eq!(
        w.device_json(),
        vec![json!({"type":"goodbye","session_id":"old"})]
    );
}

#[test]
fn a_backend_that_never_says_hello_times_out() {
    let mut w = World::new();
    let (conv, _) = w.hello();
    assert!(matches!(
        w.actions().as_slice(),
        [Action::OpenBackend { .. }]
    ));
    w.gw.tick(w.now + Duration::from_secs(11));
    let actions = w.actions();
    assert!(actions.contains(&Action::CloseBackend { conv }));
    assert_eq!(w.gw.counters().backend_failures, 1);
}

#[test]
fn idle_conversations_end() {
    let mut w = World::new();
    let (conv, _, _) = w.open();
    w.gw.tick(w.now + Duration::from_secs(179));
    assert!(w.actions().is_empty());
    w.gw.tick(w.now + Duration::from_secs(181));
    assert!(w.actions().contains(&Action::CloseBackend { conv }));
}

#[test]
fn mcp_requests_are_matched_timed_out_and_failed_on_disconnect() {
    let mut w = World::new();
    let client = "GID_test@@@aa_bb_cc_dd_ee_01@@@uuid-1";
    w.gw.mcp_request(
        w.now,
        client,
        &json!({"method":"tools/call","params":{"name":"x"}}),
        1,
    );
    let req = w.device_json().pop().unwrap();
    assert_eq!(req["type"], "mcp");
    assert_eq!(req["payload"]["id"], 10000);
    let answer = br#"{"type":"mcp","payload":{"jsonrpc":"2.0","id":10000,"result":{"ok":true}}}"#;
    w.gw.device_message(w.now, wall(), DEV, answer);
    assert_eq!(
        w.actions(),
        vec![Action::McpDone {
            token: 1,
            result: Ok(json!({"ok": true}))
        }]
    );
    w.gw.mcp_request(w.now, client, &json!({"method":"x"}), 2);
    w.actions();
    w.gw.tick(w.now + MCP_TIMEOUT);
    assert!(matches!(
        w.actions().as_slice(),
        [Action::McpDone {
            token: 2,
            result: Err(_)
        }]
    ));
    w.gw.mcp_request(w.now, client, &json!({"method":"x"}), 3);
    w.actions();
    w.gw.device_gone(w.now, DEV);
    assert!(matches!(
        w.actions().as_slice(),
        [Action::McpDone {
            token: 3,
            result: Err(_)
        }]
    ));
    w.gw.mcp_request(w.now, client, &json!({"method":"x"}), 4);
    assert!(matches!(
        w.actions().as_slice(),
        [Action::McpDone {
            token: 4,
            result: Err(_)
        }]
    ));
}

#[test]
fn dev_macs_use_the_dev_backends_and_secrets_sign_tokens() {
    let mut cfg = config(0, 1);
    cfg.backend_secret = "s3cret".to_string();
    let mut gw = Gateway::new(cfg, SEED);
    let now = Instant::now();
    let id = identity::parse_client_id("GID_test@@@aa_bb_cc_dd_ee_02").unwrap();
    gw.device_connected(now, DEV, id, "GID_test@@@aa_bb_cc_dd_ee_02", None);
    gw.device_message(now, wall(), DEV, HELLO);
    let Some(Action::OpenBackend { url, headers, .. }) = gw.poll_action() else {
        panic!()
    };
    assert_eq!(url, "ws://dev/");
    assert!(
        !headers.iter().any(|(k, _)| *k == "client-id"),
        "2-part ids have no uuid"
    );
    let auth = &headers
        .iter()
        .find(|(k, _)| *k == "authorization")
        .unwrap()
        .1;
    // Signed at the wall clock the message came with.
    assert_eq!(
        auth.strip_prefix("Bearer ").unwrap(),
        identity::backend_token(
            b"s3cret",
            "default-client-id",
            "aa:bb:cc:dd:ee:02",
            1_750_000_000
        )
    );
}
