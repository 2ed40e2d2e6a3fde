//! Parses arbitrary bytes as a stream of pipelined HTTP requests with
//! `shardmq::http::request::parse`, and feeds each request to the sans-IO
//! handlers that take peer bytes (OTA answer, bearer check). Checks: no
//! panic; `consumed` is within the input and not zero; a request parses the
//! same from its own bytes alone (it does not depend on what follows).
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz http_request`.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use shardmq::http::request;
use shardmq::voice::routes::{auth, ota};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the peer, so both OTA profiles are reached.
    let (peer, mut rest) = match data.split_first() {
        Some((b, rest)) if b & 1 == 0 => (SocketAddr::from(([192, 168, 1, 2], 1000)), rest),
        Some((_, rest)) => (SocketAddr::from(([203, 0, 113, 9], 1000)), rest),
        None => return,
    };
    let config = ota::OtaConfig {
        intranet: ota::OtaProfile {
            mqtt_endpoint: "10.0.0.2".into(),
            websocket_url: "ws://10.0.0.2/".into(),
            websocket_token: String::new(),
        },
        external: ota::OtaProfile {
            mqtt_endpoint: "mqtt.example.com".into(),
            ..ota::OtaProfile::default()
        },
        ..ota::OtaConfig::default()
    };
    while let Ok(Some(parsed)) = request::parse(rest, peer) {
        assert!(parsed.consumed > 0 && parsed.consumed <= rest.len());
        let own = rest
            .get(..parsed.consumed)
            .expect("consumed within the input");
        assert_eq!(request::parse(own, peer), Ok(Some(parsed.clone())));
        let response = ota::ota_response(&parsed.request, &config, "Fuzz-Key-1", 0);
        assert!(response.status == 200 || response.status == 400);
        let _ = auth::bearer_is_valid(parsed.request.header("authorization"), "Fuzz-Key-1", 0);
        rest = rest
            .get(parsed.consumed..)
            .expect("consumed within the input");
    }
});
