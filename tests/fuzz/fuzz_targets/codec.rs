//! Decodes arbitrary bytes as a stream of MQTT packets with
//! `shardmq::mqtt::codec`. Whatever decodes must re-encode to the bytes it
//! came from and agree with mqttbytes wherever mqttbytes accepts too; the
//! checks live in `codec::oracle`, compiled under cargo-fuzz's
//! `--cfg fuzzing`, and are shared with the unit tests.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::mqtt::codec::oracle;

/// Small, so that inputs hit the size check as well as the parsers.
const MAX_PACKET_SIZE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(consumed) = oracle::check(rest, MAX_PACKET_SIZE) {
        rest = rest.get(consumed..).expect("consumed within the input");
    }
});
