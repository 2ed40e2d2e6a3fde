//! Answers arbitrary bytes as a WebSocket upgrade request with
//! `shardmq::transport::ws::handshake::respond`. Checks: no panic; an
//! accepted request took a non-empty part of the input, is answered with
//! `101` and an MQTT subprotocol, and is accepted the same from its own
//! bytes alone; a refusal is a 4xx answer.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz ws_upgrade`.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use shardmq::transport::ws::handshake::{respond, Policy, SUBPROTOCOLS};

fuzz_target!(|data: &[u8]| {
    // The first byte picks whether origins are checked.
    let Some((&pick, request)) = data.split_first() else {
        return;
    };
    let policy = Policy {
        path: "/mqtt".to_string(),
        allowed_origins: if pick & 1 == 1 {
            vec!["https://app.example".to_string()]
        } else {
            Vec::new()
        },
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 1000));
    match respond(request, peer, &policy) {
        Ok(Some(accepted)) => {
            assert!(accepted.consumed > 0 && accepted.consumed <= request.len());
            assert!(accepted.response.starts_with(b"HTTP/1.1 101 "));
            assert!(SUBPROTOCOLS.contains(&accepted.protocol));
            let own = request.get(..accepted.consumed).expect("within the input");
            assert_eq!(respond(own, peer, &policy), Ok(Some(accepted)));
        }
        Ok(None) => {}
        Err(refusal) => {
            assert!((400..500).contains(&refusal.status()));
            assert!(refusal.response().starts_with(b"HTTP/1.1 4"));
        }
    }
});
