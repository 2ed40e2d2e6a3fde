//! Feeds arbitrary bytes to the UDP audio receive path. The input is a
//! sequence of records `[source: u8][len: u8][len bytes]`; each record's
//! bytes go through `Header::parse` and then `AudioChannel::receive` of one
//! channel, from one of two source addresses. Any panic is a bug, and so is
//! a broken invariant: an accepted packet has a sequence above every earlier
//! one, a payload ending at the datagram's end, and the pinned source.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz voice_packet`.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use shardmq::voice::audio::AudioChannel;
use shardmq::voice::packet::{self, Header, HEADER_LEN};

/// The conn id of the fuzzed channel; libFuzzer's comparison tracing finds
/// it, and the seed corpus can carry it.
const CONN_ID: u32 = 0x7014_e57e;

fuzz_target!(|data: &[u8]| {
    let mut channel = AudioChannel::new([0x42; 16], CONN_ID);
    let sources: [SocketAddr; 2] = [
        SocketAddr::from(([192, 0, 2, 1], 40000)),
        SocketAddr::from(([192, 0, 2, 2], 40000)),
    ];
    let mut last_sequence = 0;
    let mut rest = data;
    while let [source, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (record, next) = tail.split_at(len);
        rest = next;
        let from = sources[usize::from(*source & 1)];

        if let Ok(header) = Header::parse(record) {
            assert_eq!(record.len(), HEADER_LEN + usize::from(header.payload_len));
            assert_eq!(packet::conn_id(record), Some(header.conn_id));
            let bytes = header.to_bytes();
            assert_eq!(bytes[2..], record[2..HEADER_LEN]);
        }

        let mut datagram = record.to_vec();
        if let Ok(got) = channel.receive(from, &mut datagram) {
            assert!(got.sequence > last_sequence);
            assert_eq!(got.payload.end, datagram.len());
            assert_eq!(channel.peer(), Some(from));
            last_sequence = got.sequence;
        }
    }
});
