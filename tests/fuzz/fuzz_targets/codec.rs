//! Decodes arbitrary bytes as a stream of MQTT packets with
//! `shardmq::mqtt::codec`. Whatever decodes must re-encode to the bytes it
//! came from and agree with mqttbytes wherever mqttbytes accepts too; the
//! checks live in `src/mqtt/codec/oracle_tests.rs`, shared with the unit
//! tests and included here by path, since the library builds the oracle
//! only for its own tests.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The oracle names the codec through `super`: here, these imports.
use shardmq::mqtt::codec::{decode, Connect, Packet, SUBACK_FAILURE};

#[path = "../../../src/mqtt/codec/oracle_tests.rs"]
mod oracle;

/// Small, so that inputs hit the size check as well as the parsers.
const MAX_PACKET_SIZE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(consumed) = oracle::check(rest, MAX_PACKET_SIZE) {
        rest = rest.get(consumed..).expect("consumed within the input");
    }
});
