//! The frame codec against RFC 6455's own examples (§5.7) and its rules.

use proptest::prelude::*;

use super::*;

/// The mask of the RFC's masked examples.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// §5.7: "A single-frame masked text message" ("Hello").
const RFC_MASKED_TEXT: [u8; 11] = [
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];
/// §5.7: "A single-frame unmasked text message" ("Hello").
const RFC_UNMASKED_TEXT: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
/// §5.7: "Pong response (masked)", to a ping with "Hello".
const RFC_MASKED_PONG: [u8; 11] = [
    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

/// Decodes `input` fed in pieces of the given sizes (the rest at the end);
/// returns the payload, the close, and the first error.
fn decode_split(
    input: &[u8],
    cuts: &[usize],
    max: usize,
) -> (Vec<u8>, Option<Option<u16>>, Option<FrameError>) {
    let mut decoder = Decoder::new(max);
    let mut payload = Vec::new();
    let mut rest = input;
    let mut pieces: Vec<usize> = cuts.to_vec();
    pieces.push(usize::MAX);
    for size in pieces {
        let n = size.min(rest.len());
        let mut piece = rest[..n].to_vec();
        rest = &rest[n..];
        match decoder.decode(&mut piece) {
            Ok(d) => {
                payload.extend_from_slice(&piece[..d.payload]);
                if d.close.is_some() {
                    return (payload, d.close, None);
                }
            }
            Err(e) => return (payload, None, Some(e)),
        }
        if rest.is_empty() {
            break;
        }
    }
    (payload, None, None)
}

fn decode_all(input: &[u8]) -> (Vec<u8>, Option<Option<u16>>, Option<FrameError>) {
    decode_split(input, &[], 1 << 20)
}

/// Every split into two pieces, and byte by byte, gives the same as whole.
fn assert_split_invariant(input: &[u8]) {
    let whole = decode_all(input);
    for cut in 0..=input.len() {
        assert_eq!(decode_split(input, &[cut], 1 << 20), whole, "cut at {cut}");
    }
    let bytes = vec![1; input.len()];
    assert_eq!(decode_split(input, &bytes, 1 << 20), whole, "byte by byte");
}

#[test]
fn rfc_masked_example_is_what_the_client_encoder_makes() {
    assert_eq!(client_frame(OP_TEXT, true, b"Hello", MASK), RFC_MASKED_TEXT);
    assert_eq!(client_frame(OP_PONG, true, b"Hello", MASK), RFC_MASKED_PONG);
}

#[test]
fn rfc_unmasked_examples_are_what_the_server_encoder_makes() {
    let mut head = [0; SERVER_HEAD_MAX];
    let n = server_head(OP_TEXT, true, 5, &mut head);
    assert_eq!([&head[..n], b"Hello"].concat(), RFC_UNMASKED_TEXT);
    // §5.7: unmasked ping "Hello".
    assert_eq!(
        server_control(OP_PING, b"Hello"),
        [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
    // §5.7: 256 bytes binary in a single unmasked frame: 16-bit length.
    let n = server_head(OP_BINARY, true, 256, &mut head);
    assert_eq!(&head[..n], [0x82, 0x7E, 0x01, 0x00]);
    // §5.7: 64 KiB binary in a single unmasked frame: 64-bit length.
    let n = server_head(OP_BINARY, true, 65536, &mut head);
    assert_eq!(
        &head[..n],
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    let n = server_head(OP_BINARY, true, 125, &mut head);
    assert_eq!(&head[..n], [0x82, 125]);
    let n = server_head(OP_BINARY, true, 126, &mut head);
    assert_eq!(&head[..n], [0x82, 126, 0, 126]);
}

#[test]
fn rfc_masked_binary_hello_decodes_at_every_split() {
    let mut frame = RFC_MASKED_TEXT;
    frame[0] = 0x80 | OP_BINARY;
    assert_eq!(decode_all(&frame), (b"Hello".to_vec(), None, None));
    assert_split_invariant(&frame);
}

#[test]
fn rfc_masked_pong_is_read_and_ignored() {
    let mut input = RFC_MASKED_PONG.to_vec();
    input.extend(client_frame(OP_BINARY, true, b"after", MASK));
    assert_eq!(decode_all(&input), (b"after".to_vec(), None, None));
    assert_split_invariant(&input);
}

#[test]
fn rfc_unmasked_frames_are_a_protocol_error() {
    // [RFC 6455 §5.1]: a client's frames are masked; the server closes with 1002.
    let (_, _, error) = decode_all(&RFC_UNMASKED_TEXT);
    assert_eq!(error, Some(FrameError::Unmasked));
    assert_eq!(FrameError::Unmasked.close_code(), CLOSE_PROTOCOL_ERROR);
    // §5.7: the unmasked fragmented text message.
    let fragmented = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(decode_all(&fragmented).2, Some(FrameError::Unmasked));
    let mut unmasked_binary = RFC_UNMASKED_TEXT;
    unmasked_binary[0] = 0x82;
    assert_eq!(decode_all(&unmasked_binary).2, Some(FrameError::Unmasked));
}

#[test]
fn text_frames_are_refused_with_1003() {
    assert_eq!(decode_all(&RFC_MASKED_TEXT).2, Some(FrameError::Text));
    assert_eq!(FrameError::Text.close_code(), CLOSE_UNSUPPORTED_DATA);
}

#[test]
fn fragmented_message_with_a_ping_inside_is_one_payload() {
    // §5.7's fragmented message, binary and masked, a ping between fragments.
    let mut input = client_frame(OP_BINARY, false, b"Hel", MASK);
    input.extend(client_frame(OP_PING, true, b"are you there", [1, 2, 3, 4]));
    input.extend(client_frame(OP_CONTINUATION, false, b"l", [9, 9, 9, 9]));
    input.extend(client_frame(OP_CONTINUATION, true, b"o", [0, 0, 0, 0]));
    assert_eq!(decode_all(&input), (b"Hello".to_vec(), None, None));
    assert_split_invariant(&input);
    let mut decoder = Decoder::new(100);
    let mut buf = input.clone();
    decoder.decode(&mut buf).unwrap();
    assert_eq!(decoder.take_pong(), Some(b"are you there".to_vec()));
    assert_eq!(decoder.take_pong(), None);
}

#[test]
fn a_packet_may_span_frames_and_a_frame_carry_several_packets() {
    // PINGREQ, PINGREQ, then a PUBLISH split over two frames.
    let publish = [0x30, 0x07, 0x00, 0x01, b't', b'a', b'b', b'c', b'd'];
    let mut stream = vec![0xC0, 0x00, 0xC0, 0x00];
    stream.extend_from_slice(&publish);
    let mut input = client_frame(OP_BINARY, true, &stream[..6], MASK);
    input.extend(client_frame(OP_BINARY, true, &stream[6..], [5, 6, 7, 8]));
    assert_eq!(decode_all(&input), (stream, None, None));
    assert_split_invariant(&input);
}

#[test]
fn empty_frames_carry_nothing() {
    let mut input = client_frame(OP_BINARY, false, b"", MASK);
    input.extend(client_frame(OP_CONTINUATION, true, b"", MASK));
    input.extend(client_frame(OP_BINARY, true, b"x", MASK));
    assert_eq!(decode_all(&input), (b"x".to_vec(), None, None));
    assert_split_invariant(&input);
}

#[test]
fn long_lengths_decode() {
    for len in [125usize, 126, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let input = client_frame(OP_BINARY, true, &payload, MASK);
        assert_eq!(decode_all(&input), (payload, None, None), "length {len}");
    }
}

#[test]
fn frames_over_the_bound_are_refused_with_1009() {
    let input = client_frame(OP_BINARY, true, &[0; 11], MASK);
    let error = FrameError::TooLarge { len: 11, max: 10 };
    assert_eq!(decode_split(&input, &[], 10).2, Some(error));
    assert_eq!(error.close_code(), CLOSE_TOO_BIG);
    let input = client_frame(OP_BINARY, true, &[0; 10], MASK);
    assert_eq!(decode_split(&input, &[], 10), (vec![0; 10], None, None));
    // A 64-bit length far beyond anything is refused from the header alone.
    let mut huge = vec![0x82, 0xFF];
    huge.extend(u64::MAX.to_be_bytes());
    huge.extend(MASK);
    assert!(matches!(
        decode_all(&huge).2,
        Some(FrameError::TooLarge { .. })
    ));
}

#[test]
fn control_frame_rules() {
    // [RFC 6455 §5.5]: at most 125 bytes, never fragmented.
    let long_ping = client_frame(OP_PING, true, &[0; 126], MASK);
    assert_eq!(decode_all(&long_ping).2, Some(FrameError::ControlTooLong));
    let ok_ping = client_frame(OP_PING, true, &[7; 125], MASK);
    assert_eq!(decode_all(&ok_ping), (Vec::new(), None, None));
    let fragmented_ping = client_frame(OP_PING, false, b"x", MASK);
    assert_eq!(
        decode_all(&fragmented_ping).2,
        Some(FrameError::FragmentedControl)
    );
    let fragmented_close = client_frame(OP_CLOSE, false, b"", MASK);
    assert_eq!(
        decode_all(&fragmented_close).2,
        Some(FrameError::FragmentedControl)
    );
}

#[test]
fn message_sequence_rules() {
    let stray = client_frame(OP_CONTINUATION, true, b"x", MASK);
    assert_eq!(decode_all(&stray).2, Some(FrameError::StrayContinuation));
    let mut nested = client_frame(OP_BINARY, false, b"a", MASK);
    nested.extend(client_frame(OP_BINARY, true, b"b", MASK));
    assert_eq!(decode_all(&nested).2, Some(FrameError::UnfinishedMessage));
    let mut reserved = client_frame(OP_BINARY, true, b"a", MASK);
    reserved[0] |= 0x40;
    assert_eq!(decode_all(&reserved).2, Some(FrameError::Reserved));
    for opcode in [3, 7, 0xB, 0xF] {
        let frame = client_frame(opcode, true, b"", MASK);
        assert_eq!(decode_all(&frame).2, Some(FrameError::Opcode(opcode)));
    }
}

#[test]
fn close_frames_end_decoding() {
    let mut input = client_frame(OP_BINARY, true, b"last", MASK);
    input.extend(client_frame(OP_CLOSE, true, &1000u16.to_be_bytes(), MASK));
    input.extend(client_frame(OP_BINARY, true, b"ignored", MASK));
    assert_eq!(
        decode_all(&input),
        (b"last".to_vec(), Some(Some(1000)), None)
    );
    assert_split_invariant(&input);
    let empty = client_frame(OP_CLOSE, true, b"", MASK);
    assert_eq!(decode_all(&empty), (Vec::new(), Some(None), None));
    let mut with_reason = 4000u16.to_be_bytes().to_vec();
    with_reason.extend_from_slice("bye ✓".as_bytes());
    let reason = client_frame(OP_CLOSE, true, &with_reason, MASK);
    assert_eq!(decode_all(&reason).1, Some(Some(4000)));
}

#[test]
fn malformed_close_frames_are_refused() {
    let one_byte = client_frame(OP_CLOSE, true, &[3], MASK);
    assert_eq!(decode_all(&one_byte).2, Some(FrameError::BadClose));
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        let frame = client_frame(OP_CLOSE, true, &code.to_be_bytes(), MASK);
        assert_eq!(decode_all(&frame).2, Some(FrameError::BadClose), "{code}");
    }
    let bad_utf8 = client_frame(OP_CLOSE, true, &[0x03, 0xE8, 0xFF, 0xFE], MASK);
    assert_eq!(decode_all(&bad_utf8).2, Some(FrameError::CloseReason));
    assert_eq!(FrameError::CloseReason.close_code(), CLOSE_INVALID_PAYLOAD);
}

#[test]
fn server_close_frames() {
    assert_eq!(server_close(Some(1002)), [0x88, 0x02, 0x03, 0xEA]);
    assert_eq!(server_close(None), [0x88, 0x00]);
}

/// A client frame for the property below.
fn arb_frame() -> impl Strategy<Value = (u8, bool, Vec<u8>, [u8; 4])> {
    (
        prop_oneof![Just(OP_BINARY), Just(OP_PING), Just(OP_PONG)],
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
    )
}

proptest! {
    /// Binary messages (each split into fragments) with control frames
    /// between them decode to the concatenated payload, however the bytes
    /// are cut.
    #[test]
    fn payload_does_not_depend_on_the_split(
        frames in proptest::collection::vec(arb_frame(), 0..8),
        cuts in proptest::collection::vec(0usize..40, 0..30),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (opcode, split, mut payload, mask) in frames {
            if opcode == OP_BINARY {
                expected.extend_from_slice(&payload);
                let half = payload.len() / 2;
                if split {
                    input.extend(client_frame(OP_BINARY, false, &payload[..half], mask));
                    input.extend(client_frame(OP_CONTINUATION, true, &payload[half..], mask));
                } else {
                    input.extend(client_frame(OP_BINARY, true, &payload, mask));
                }
            } else {
                payload.truncate(CONTROL_PAYLOAD_MAX);
                input.extend(client_frame(opcode, true, &payload, mask));
            }
        }
        prop_assert_eq!(decode_split(&input, &cuts, 1 << 20), (expected, None, None));
    }

    /// Arbitrary bytes: no panic, and the split never changes the outcome
    /// (the payload before an error aside: it is never used).
    #[test]
    fn arbitrary_bytes_decode_the_same_whole_or_cut(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(0usize..20, 0..20),
    ) {
        let cut = decode_split(&input, &cuts, 64);
        let whole = decode_split(&input, &[], 64);
        if whole.2.is_some() {
            prop_assert_eq!(cut.2, whole.2);
        } else {
            prop_assert_eq!(cut, whole);
        }
    }
}
