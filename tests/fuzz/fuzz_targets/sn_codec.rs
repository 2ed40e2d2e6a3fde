//! Feeds arbitrary bytes to the MQTT-SN codec (`shardmq::sn::codec`) as
//! one datagram. Checks: no panic; whatever decodes (wrapped by a
//! forwarder or not) encodes again, no longer than the datagram it came
//! from, and decodes back to the same frame; the encoding is canonical
//! (encoding the decoded encoding gives the same bytes); an unwrapped
//! datagram decodes the same through `decode` and `decode_frame`.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz sn_codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::sn::codec::{decode, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let plain = decode(data);
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    if frame.forwarder.is_none() {
        assert_eq!(plain.as_ref(), Ok(&frame.message));
    }
    let mut out = Vec::new();
    assert!(
        encode_frame(frame.forwarder, &frame.message, &mut out),
        "{frame:?} does not encode"
    );
    // The same fields in the shortest length form: never longer.
    assert!(
        out.len() <= data.len(),
        "{frame:?} grew from {} to {}",
        data.len(),
        out.len()
    );
    let again = decode_frame(&out).expect("an encoded frame decodes");
    assert_eq!(again, frame);
    let mut canonical = Vec::new();
    assert!(encode_frame(
        again.forwarder,
        &again.message,
        &mut canonical
    ));
    assert_eq!(canonical, out);
    // What `decode` accepts on its own round-trips through `encode` too.
    if let Ok(message) = plain {
        let mut bytes = Vec::new();
        assert!(message.encode(&mut bytes));
        assert_eq!(decode(&bytes), Ok(message));
    }
});
