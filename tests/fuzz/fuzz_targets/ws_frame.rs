//! Feeds arbitrary bytes to the WebSocket frame decoder
//! (`shardmq::transport::ws::frame`), whole and cut into pieces, and frames
//! arbitrary payloads as a client would. Checks: no panic; the payload is
//! never longer than the input; the outcome does not depend on how the
//! bytes are cut (the payload before an error aside: it is never used);
//! valid client frames, fragmented or not, decode to their payload.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz ws_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::transport::ws::frame::{self, Decoder, FrameError};

/// The bound on data frames: small, so that it is reached.
const MAX_FRAME: usize = 300;

type Outcome = (Vec<u8>, Option<Option<u16>>, Option<FrameError>);

/// Decodes `input` in pieces whose sizes cycle through `sizes` (whole if
/// empty).
fn decode(input: &[u8], sizes: &[usize]) -> Outcome {
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut payload = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(rest.len());
        i += 1;
        let (piece, after) = rest.split_at(size.clamp(1, rest.len()));
        rest = after;
        let mut buf = piece.to_vec();
        match decoder.decode(&mut buf) {
            Ok(d) => {
                assert!(d.payload <= piece.len(), "payload longer than its input");
                payload.extend_from_slice(&buf[..d.payload]);
                if d.close.is_some() {
                    return (payload, d.close, None);
                }
            }
            Err(e) => return (payload, None, Some(e)),
        }
    }
    (payload, None, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let sizes: Vec<usize> = (0..8).map(|i| usize::from(seed.rotate_left(i) % 17)).collect();
    let whole = decode(input, &[]);
    let cut = decode(input, &sizes);
    if whole.2.is_some() {
        assert_eq!(cut.2, whole.2);
    } else {
        assert_eq!(cut, whole);
    }

    // The same bytes as payloads of valid frames: chunks of the input,
    // every other one fragmented, with a ping between messages.
    let mask = [seed, seed ^ 0x5A, seed.wrapping_mul(3), !seed];
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    for (i, chunk) in input.chunks(usize::from(seed % 64) + 1).enumerate() {
        expected.extend_from_slice(chunk);
        if i % 2 == 1 && chunk.len() > 1 {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            frames.extend(frame::client_frame(frame::OP_BINARY, false, a, mask));
            frames.extend(frame::client_frame(frame::OP_CONTINUATION, true, b, mask));
        } else {
            frames.extend(frame::client_frame(frame::OP_BINARY, true, chunk, mask));
        }
        frames.extend(frame::client_frame(frame::OP_PING, true, &chunk[..chunk.len().min(125)], mask));
    }
    assert_eq!(decode(&frames, &sizes), (expected, None, None));
});
