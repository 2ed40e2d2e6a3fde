//! The payload every publisher sends: a fixed header then filler.
//!
//! ```text
//! offset 0   u32 LE  publisher id
//! offset 4   u64 LE  sequence number, from 0, per publisher
//! offset 12  u64 LE  send time, ns on the process clock (see `clock`)
//! offset 20  filler up to --payload bytes
//! ```
//!
//! The id and sequence let a subscriber count loss, duplicates and
//! reordering per (publisher, subscriber) pair; the send time gives the
//! end-to-end latency, because publishers and subscribers share one clock.

/// Bytes of the header, hence the smallest accepted `--payload`.
pub const HEADER_LEN: usize = 20;

/// What a subscriber reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// A payload buffer allocated once per publisher; only the header is
/// rewritten per message, so publishing allocates nothing.
#[derive(Debug)]
pub struct Template {
    bytes: Vec<u8>,
}

impl Template {
    /// A payload of `len` bytes (at least [`HEADER_LEN`]) for `publisher`.
    pub fn new(publisher: u32, len: usize) -> Template {
        let mut bytes = vec![b'.'; len.max(HEADER_LEN)];
        bytes[0..4].copy_from_slice(&publisher.to_le_bytes());
        Template { bytes }
    }

    /// Writes `seq` and `sent_ns` and returns the whole payload.
    pub fn stamp(&mut self, seq: u64, sent_ns: u64) -> &[u8] {
        self.bytes[4..12].copy_from_slice(&seq.to_le_bytes());
        self.bytes[12..20].copy_from_slice(&sent_ns.to_le_bytes());
        &self.bytes
    }
}

/// The header of a payload, or `None` if it is too short to hold one.
pub fn read(payload: &[u8]) -> Option<Header> {
    let header = payload.get(..HEADER_LEN)?;
    let (publisher, rest) = header.split_at(4);
    let (seq, sent) = rest.split_at(8);
    Some(Header {
        publisher: u32::from_le_bytes(publisher.try_into().ok()?),
        seq: u64::from_le_bytes(seq.try_into().ok()?),
        sent_ns: u64::from_le_bytes(sent.try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut template = Template::new(7, 64);
        let payload = template.stamp(42, 1_000_000_007).to_vec();
        assert_eq!(payload.len(), 64);
        let header = read(&payload).unwrap();
        assert_eq!(
            header,
            Header {
                publisher: 7,
                seq: 42,
                sent_ns: 1_000_000_007
            }
        );
    }

    #[test]
    fn short_payload_has_no_header() {
        assert_eq!(read(&[0; HEADER_LEN - 1]), None);
    }
}
