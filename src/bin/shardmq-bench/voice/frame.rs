//! The audio frame every simulated device sends in place of Opus: a header
//! the backend and the device read back, then filler.
//!
//! ```text
//! offset 0   u32 BE  magic "smqv"
//! offset 4   u32 BE  device index
//! offset 8   u32 BE  sequence number, from 0, per device
//! offset 12  u64 BE  send time, µs on the process clock (see `clock`)
//! offset 20  filler up to --frame-bytes
//! ```
//!
//! The gateway carries the frame opaquely (encrypted on UDP, in the clear
//! on the backend WebSocket), and the backend echoes it unchanged: the
//! backend counts the upstream sequence, the device the downstream one and
//! the round trip from the send time. The magic tells a bench frame from
//! bytes that were garbled on the way, e.g. decrypted with the wrong key.

/// Bytes of the header, hence the smallest `--frame-bytes`.
pub const HEADER_LEN: usize = 20;

const MAGIC: [u8; 4] = *b"smqv";

/// What a frame's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub device: u32,
    pub seq: u32,
    pub sent_us: u64,
}

/// One device's frame buffer, allocated once; only the header changes per
/// frame.
#[derive(Debug)]
pub struct Template {
    bytes: Vec<u8>,
}

impl Template {
    /// A frame of `len` bytes (at least [`HEADER_LEN`]) for `device`.
    pub fn new(device: u32, len: usize) -> Template {
        let mut bytes: Vec<u8> = (0..len.max(HEADER_LEN)).map(|i| i as u8).collect();
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&device.to_be_bytes());
        Template { bytes }
    }

    /// Writes `seq` and `sent_us` and returns the whole frame.
    pub fn stamp(&mut self, seq: u32, sent_us: u64) -> &[u8] {
        self.bytes[8..12].copy_from_slice(&seq.to_be_bytes());
        self.bytes[12..20].copy_from_slice(&sent_us.to_be_bytes());
        &self.bytes
    }
}

/// The header of a frame, or `None` if it is too short or not ours.
pub fn read(frame: &[u8]) -> Option<Header> {
    let header = frame.first_chunk::<HEADER_LEN>()?;
    let (magic, rest) = header.split_first_chunk::<4>()?;
    if *magic != MAGIC {
        return None;
    }
    let (device, rest) = rest.split_first_chunk::<4>()?;
    let (seq, sent) = rest.split_first_chunk::<4>()?;
    Some(Header {
        device: u32::from_be_bytes(*device),
        seq: u32::from_be_bytes(*seq),
        sent_us: u64::from_be_bytes(*sent.first_chunk::<8>()?),
    })
}

/// The payload of a backend WebSocket frame (§7: 16-byte header, length
/// u32 BE at 12, payload from 16), or `None` if the length does not fit.
pub fn ws_payload(ws_frame: &[u8]) -> Option<&[u8]> {
    let len = ws_frame.get(12..16)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    ws_frame.get(16..16usize.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut template = Template::new(7, 120);
        let frame = template.stamp(42, 1_000_000_007).to_vec();
        assert_eq!(frame.len(), 120);
        assert_eq!(
            read(&frame),
            Some(Header {
                device: 7,
                seq: 42,
                sent_us: 1_000_000_007
            })
        );
        // Only the header changes from one frame to the next.
        let next = template.stamp(43, 5).to_vec();
        assert_eq!(frame[HEADER_LEN..], next[HEADER_LEN..]);
        assert_eq!(read(&next).map(|h| (h.device, h.seq)), Some((7, 43)));
    }

    #[test]
    fn short_or_foreign_frames_have_no_header() {
        let mut template = Template::new(1, HEADER_LEN);
        let frame = template.stamp(0, 0).to_vec();
        assert!(read(&frame).is_some());
        assert_eq!(read(&frame[..HEADER_LEN - 1]), None);
        let mut garbled = frame.clone();
        garbled[0] ^= 1;
        assert_eq!(read(&garbled), None);
    }

    #[test]
    fn backend_frames_carry_the_payload_after_16_bytes() {
        let mut ws = vec![0u8; 16];
        ws[8..12].copy_from_slice(&60u32.to_be_bytes());
        ws[12..16].copy_from_slice(&3u32.to_be_bytes());
        ws.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(ws_payload(&ws), Some(&[1u8, 2, 3][..]));
        ws[12..16].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(ws_payload(&ws), None, "length beyond the frame");
        ws[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(ws_payload(&ws), None);
        assert_eq!(ws_payload(&ws[..15]), None);
    }
}
