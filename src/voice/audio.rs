//! One conversation's UDP audio state: the key and conn id handed out in the
//! hello, the device address learnt from its first packet, and a sequence
//! counter per direction. Sans-IO: the socket shell passes each datagram and
//! its source in, and sends what [`AudioChannel::seal`] writes.
//!
//! # Rules
//!
//! 1. A channel lives for one conversation: the gateway makes a new one on
//!    every device hello, with a fresh key, and both sequence counters start
//!    at 0 (the device resets its own at the same moment).
//! 2. Receive checks run in this order, each with its [`DropReason`]:
//!    framing (`Header::parse`), conn id, sequence strictly above the last
//!    accepted one, source address. Only a packet that passes all of them is
//!    decrypted and moves the sequence on, so nothing a forger sends can
//!    advance the counter or move the pinned address.
//! 3. The device address is pinned by the first packet that passes the
//!    framing, conn id and sequence checks. The device opens a new socket
//!    (new port) per conversation, so pinning per hello is enough; unlike the
//!    original gateway, a later packet from elsewhere does not re-pin it
//!    (reference §10.7).
//! 4. Sequence 0 is never accepted (the last sequence starts at 0) and gaps
//!    are accepted: the firmware does the same (§5.3). Wrap-around is not
//!    handled by anyone; at 60 ms frames it takes eight years.
//! 5. Sent packets carry sequence 1, 2, … and are never longer than
//!    [`MAX_DATAGRAM`].

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::ops::Range;

use crate::voice::packet::{self, AudioKey, DropReason, Header, HEADER_LEN, MAX_PAYLOAD};

/// What a datagram accepted by [`AudioChannel::receive`] carries. The Opus
/// frame is decrypted in place, at `payload` within the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Milliseconds, as sent by the device (0 without server-side AEC).
    pub timestamp: u32,
    pub sequence: u32,
    /// Packets skipped since the last accepted one: lost or reordered.
    pub gap: u32,
    /// Where the plaintext Opus frame lies in the datagram.
    pub payload: Range<usize>,
}

/// UDP state of one conversation (see the module rules).
#[derive(Debug)]
pub struct AudioChannel {
    key: AudioKey,
    key_bytes: [u8; 16],
    conn_id: u32,
    peer: Option<SocketAddr>,
    /// Highest sequence accepted from the device; 0 before the first.
    remote_sequence: u32,
    /// Sequence of the last packet sent to the device; 0 before the first.
    local_sequence: u32,
}

impl AudioChannel {
    /// A channel for a new conversation; `key` is the fresh random key of the
    /// hello and `conn_id` the id its nonce carries.
    pub fn new(key: [u8; 16], conn_id: u32) -> AudioChannel {
        AudioChannel {
            key: AudioKey::new(key),
            key_bytes: key,
            conn_id,
            peer: None,
            remote_sequence: 0,
            local_sequence: 0,
        }
    }

    /// The key, for the hello's `udp.key`.
    pub fn key_bytes(&self) -> &[u8; 16] {
        &self.key_bytes
    }

    /// The nonce, for the hello's `udp.nonce`.
    pub fn nonce(&self) -> [u8; 16] {
        packet::nonce(self.conn_id)
    }

    pub fn conn_id(&self) -> u32 {
        self.conn_id
    }

    /// The device's UDP address, once its first valid packet has arrived.
    /// Audio for the device can only be sent after that (§4.3).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Validates a datagram from `from` (rule 2) and decrypts its payload in
    /// place. On error the datagram may be left as it was, and the channel
    /// is unchanged.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Received, DropReason> {
        let header = Header::parse(datagram)?;
        if header.conn_id != self.conn_id {
            return Err(DropReason::UnknownConn);
        }
        if header.sequence <= self.remote_sequence {
            return Err(DropReason::Replayed);
        }
        match self.peer {
            Some(peer) if peer != from => return Err(DropReason::WrongSource),
            Some(_) => {}
            None => self.peer = Some(from),
        }
        // The IV is the header as it travelled, flags byte included.
        let (iv, payload) = datagram
            .split_first_chunk_mut::<HEADER_LEN>()
            .ok_or(DropReason::TooShort)?;
        self.key.apply(iv, payload);
        let gap = header.sequence - self.remote_sequence - 1;
        self.remote_sequence = header.sequence;
        Ok(Received {
            timestamp: header.timestamp,
            sequence: header.sequence,
            gap,
            payload: HEADER_LEN..HEADER_LEN + usize::from(header.payload_len),
        })
    }

    /// Writes one datagram for the device into `out`: the header with the
    /// next sequence, then `opus` encrypted. `out` is cleared first and its
    /// capacity reused.
    pub fn seal(
        &mut self,
        timestamp: u32,
        opus: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        let header = self.next_header(timestamp, opus.len())?;
        out.clear();
        out.reserve(HEADER_LEN + opus.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(opus);
        if let Some((iv, payload)) = out.split_first_chunk_mut::<HEADER_LEN>() {
            self.key.apply(iv, payload);
        }
        Ok(())
    }

    /// Zero-copy [`seal`](Self::seal): `buf[16..16 + payload_len]` holds the
    /// Opus frame (a backend frame keeps it behind a 16-byte header of its
    /// own). Writes the UDP header over `buf[..16]`, encrypts the payload in
    /// place and returns the datagram length; send `&buf[..len]`.
    ///
    /// `TooShort` if `buf` does not hold the payload, `TooLarge` if the
    /// datagram would exceed [`MAX_DATAGRAM`](packet::MAX_DATAGRAM); then
    /// `buf` and the sequence are left untouched.
    pub fn seal_in_place(
        &mut self,
        timestamp: u32,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, DropReason> {
        if payload_len > MAX_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let len = HEADER_LEN + payload_len;
        let datagram = buf.get_mut(..len).ok_or(DropReason::TooShort)?;
        let (iv, payload) = datagram
            .split_first_chunk_mut::<HEADER_LEN>()
            .ok_or(DropReason::TooShort)?;
        *iv = self.next_header(timestamp, payload_len)?;
        self.key.apply(iv, payload);
        Ok(len)
    }

    /// The header of the next outgoing packet; advances the sequence only
    /// when the payload fits.
    fn next_header(
        &mut self,
        timestamp: u32,
        payload_len: usize,
    ) -> Result<[u8; HEADER_LEN], DropReason> {
        if payload_len > MAX_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        let payload_len = u16::try_from(payload_len).map_err(|_| DropReason::TooLarge)?;
        self.local_sequence = self.local_sequence.wrapping_add(1);
        Ok(Header {
            payload_len,
            conn_id: self.conn_id,
            timestamp,
            sequence: self.local_sequence,
        }
        .to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::packet::MAX_DATAGRAM;
    use aes::cipher::{KeyIvInit, StreamCipher};
    use proptest::prelude::*;

    const KEY: [u8; 16] = *b"0123456789abcdef";
    const CONN: u32 = 0x7014_e57e;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    /// Reference AES-CTR through the cipher's standard key+IV constructor,
    /// independent of `AudioKey`.
    fn ctr(key: &[u8; 16], iv: &[u8], data: &mut [u8]) {
        let mut c = ctr::Ctr128BE::<aes::Aes128>::new(key.into(), iv.into());
        c.apply_keystream(data);
    }

    /// The firmware's side (FW v2.4.x `MqttProtocol`), written from §5.2 and
    /// §5.3 independently of the code under test.
    struct Device {
        key: [u8; 16],
        nonce: [u8; 16],
        local_sequence: u32,
        remote_sequence: u32,
    }

    impl Device {
        fn from_hello(key_hex: &str, nonce_hex: &str) -> Device {
            let unhex = |s: &str| -> [u8; 16] {
                let v: Vec<u8> = (0..32)
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                    .collect();
                v.try_into().unwrap()
            };
            assert_eq!(key_hex.len(), 32);
            assert_eq!(nonce_hex.len(), 32);
            Device {
                key: unhex(key_hex),
                nonce: unhex(nonce_hex),
                local_sequence: 0,
                remote_sequence: 0,
            }
        }

        /// `SendAudio`: copy the nonce, overwrite length, timestamp, sequence.
        fn send(&mut self, timestamp: u32, opus: &[u8]) -> Vec<u8> {
            self.local_sequence += 1;
            let mut header = self.nonce;
            header[2..4].copy_from_slice(&(opus.len() as u16).to_be_bytes());
            header[8..12].copy_from_slice(&timestamp.to_be_bytes());
            header[12..16].copy_from_slice(&self.local_sequence.to_be_bytes());
            let mut payload = opus.to_vec();
            ctr(&self.key, &header, &mut payload);
            [header.to_vec(), payload].concat()
        }

        /// `OnMessage`, v2.4.x: strict length, type, sequence above last.
        fn receive(&mut self, data: &[u8]) -> Option<(u32, Vec<u8>)> {
            if data.len() < 16 || data[0] != 1 {
                return None;
            }
            let len = u16::from_be_bytes([data[2], data[3]]) as usize;
            if data.len() != 16 + len {
                return None;
            }
            let ts = u32::from_be_bytes(data[8..12].try_into().unwrap());
            let seq = u32::from_be_bytes(data[12..16].try_into().unwrap());
            if seq <= self.remote_sequence {
                return None;
            }
            let mut payload = data[16..].to_vec();
            ctr(&self.key, &data[..16], &mut payload);
            self.remote_sequence = seq;
            Some((ts, payload))
        }
    }

    /// py-xiaozhi `build_audio_nonce`: nonce bytes 0..2 and 4..12 kept, so
    /// bytes 8..11 are the server nonce's, not a timestamp.
    fn py_xiaozhi_packet(key: &[u8; 16], nonce_hex: &str, seq: u32, opus: &[u8]) -> Vec<u8> {
        let header_hex = format!(
            "{}{:04x}{}{:08x}",
            &nonce_hex[..4],
            opus.len(),
            &nonce_hex[8..24],
            seq
        );
        let header: Vec<u8> = (0..32)
            .step_by(2)
            .map(|i| u8::from_str_radix(&header_hex[i..i + 2], 16).unwrap())
            .collect();
        let mut payload = opus.to_vec();
        ctr(key, &header, &mut payload);
        [header, payload].concat()
    }

    fn frame(n: usize, fill: u8) -> Vec<u8> {
        (0..n).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn hello_fields() {
        let ch = AudioChannel::new(KEY, CONN);
        assert_eq!(
            packet::hex16(&ch.nonce()),
            "010000007014e57e0000000000000000"
        );
        assert_eq!(ch.key_bytes(), &KEY);
        assert_eq!(ch.conn_id(), CONN);
        assert_eq!(ch.peer(), None);
    }

    #[test]
    fn firmware_device_both_ways() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
        let from = addr(40001);

        for i in 0..5u32 {
            let opus = frame(100 + i as usize, i as u8);
            let mut datagram = device.send(i * 60, &opus);
            let got = gw.receive(from, &mut datagram).unwrap();
            assert_eq!(got.sequence, i + 1);
            assert_eq!(got.timestamp, i * 60);
            assert_eq!(got.gap, 0);
            assert_eq!(&datagram[got.payload], &opus[..]);
        }
        assert_eq!(gw.peer(), Some(from));

        let mut out = Vec::new();
        for i in 0..5u32 {
            let opus = frame(120, 0x40 + i as u8);
            gw.seal(1000 + i, &opus, &mut out).unwrap();
            assert!(out.len() <= MAX_DATAGRAM);
            assert_eq!(&out[12..16], &(i + 1).to_be_bytes());
            assert_eq!(device.receive(&out), Some((1000 + i, opus)));
        }
    }

    #[test]
    fn seal_worked_example_header() {
        // §5.2: nonce 010000007014e57e.., 120-byte frame, ts 0, seq 1.
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut out = Vec::new();
        gw.seal(0, &[0u8; 120], &mut out).unwrap();
        let header: [u8; 16] = out[..16].try_into().unwrap();
        assert_eq!(packet::hex16(&header), "010000787014e57e0000000000000001");
        assert_eq!(out.len(), 136);
    }

    #[test]
    fn seal_in_place_matches_seal() {
        let mut a = AudioChannel::new(KEY, CONN);
        let mut b = AudioChannel::new(KEY, CONN);
        let opus = frame(120, 3);
        let mut out = Vec::new();
        a.seal(77, &opus, &mut out).unwrap();

        // A backend frame: its own 16-byte header, then the Opus frame, then
        // trailing bytes that must not be sent.
        let mut buf = vec![0xeeu8; 16];
        buf.extend_from_slice(&opus);
        buf.extend_from_slice(&[9, 9, 9]);
        let len = b.seal_in_place(77, &mut buf, opus.len()).unwrap();
        assert_eq!(len, 136);
        assert_eq!(&buf[..len], &out[..]);
        assert_eq!(&buf[len..], &[9, 9, 9]);
    }

    #[test]
    fn seal_size_limits() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut out = vec![1, 2, 3];
        gw.seal(0, &frame(MAX_PAYLOAD + 1, 0), &mut out)
            .unwrap_err();
        assert_eq!(out, [1, 2, 3], "untouched on error");
        gw.seal(0, &frame(MAX_PAYLOAD, 0), &mut out).unwrap();
        assert_eq!(out.len(), MAX_DATAGRAM);
        assert_eq!(
            &out[12..16],
            &1u32.to_be_bytes(),
            "a refused frame takes no sequence"
        );

        let mut buf = vec![0u8; 16 + 10];
        assert_eq!(gw.seal_in_place(0, &mut buf, 11), Err(DropReason::TooShort));
        let mut big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(
            gw.seal_in_place(0, &mut big, MAX_PAYLOAD + 1),
            Err(DropReason::TooLarge)
        );
        assert_eq!(gw.seal_in_place(0, &mut buf, 10), Ok(26));
        assert_eq!(&buf[12..16], &2u32.to_be_bytes());
        let mut empty = [0u8; 16];
        assert_eq!(gw.seal_in_place(0, &mut empty, 0), Ok(16));
        assert_eq!(
            gw.seal_in_place(0, &mut [0u8; 15], 0),
            Err(DropReason::TooShort)
        );
    }

    #[test]
    fn py_xiaozhi_packets_are_accepted() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let nonce_hex = packet::hex16(&gw.nonce());
        let opus = frame(111, 5);
        for seq in 1..=3 {
            let mut datagram = py_xiaozhi_packet(&KEY, &nonce_hex, seq, &opus);
            let got = gw.receive(addr(5000), &mut datagram).unwrap();
            assert_eq!(got.timestamp, 0, "bytes 8..11 of our nonce are zero");
            assert_eq!(got.sequence, seq);
            assert_eq!(&datagram[got.payload], &opus[..]);
        }
        // py-xiaozhi decrypts data[16:] with IV data[:16] and checks nothing.
        let mut out = Vec::new();
        gw.seal(123, &opus, &mut out).unwrap();
        let mut payload = out[16..].to_vec();
        ctr(&KEY, &out[..16], &mut payload);
        assert_eq!(payload, opus);
    }

    #[test]
    fn replay_and_reorder() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
        let from = addr(1);
        let packets: Vec<Vec<u8>> = (0..6).map(|i| device.send(0, &frame(50, i))).collect();

        let mut p1 = packets[0].clone();
        gw.receive(from, &mut p1).unwrap();
        // The same packet again (its original ciphertext) is a replay.
        assert_eq!(
            gw.receive(from, &mut packets[0].clone()),
            Err(DropReason::Replayed)
        );

        // 4 arrives before 2 and 3: accepted with a gap of two…
        let mut p4 = packets[3].clone();
        let got = gw.receive(from, &mut p4).unwrap();
        assert_eq!((got.sequence, got.gap), (4, 2));
        assert_eq!(&p4[got.payload], &frame(50, 3)[..]);
        // …then 2 and 3 are too old, and 4 again is a replay.
        for i in [1, 2, 3] {
            let mut late = packets[i].clone();
            assert_eq!(gw.receive(from, &mut late), Err(DropReason::Replayed));
            assert_eq!(late, packets[i], "a dropped datagram is not decrypted");
        }
        let mut p6 = packets[5].clone();
        assert_eq!(gw.receive(from, &mut p6).unwrap().gap, 1);
    }

    #[test]
    fn sequence_zero_is_dropped() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let nonce_hex = packet::hex16(&gw.nonce());
        let mut zero = py_xiaozhi_packet(&KEY, &nonce_hex, 0, &frame(20, 0));
        assert_eq!(gw.receive(addr(1), &mut zero), Err(DropReason::Replayed));
        assert_eq!(gw.peer(), None, "a dropped packet pins nothing");
        let mut one = py_xiaozhi_packet(&KEY, &nonce_hex, 1, &frame(20, 0));
        gw.receive(addr(2), &mut one).unwrap();
        assert_eq!(gw.peer(), Some(addr(2)));
    }

    #[test]
    fn spoofed_source_is_dropped_and_does_not_advance() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
        let (real, spoof) = (addr(1000), SocketAddr::from(([198, 51, 100, 1], 1000)));

        gw.receive(real, &mut device.send(0, &frame(30, 1)))
            .unwrap();
        // A forger that saw packet 2 sends it (or a copy with a huge sequence)
        // from elsewhere first: dropped, and the real packet 2 still passes.
        let p2 = device.send(0, &frame(30, 2));
        let mut forged = p2.clone();
        assert_eq!(gw.receive(spoof, &mut forged), Err(DropReason::WrongSource));
        assert_eq!(forged, p2);
        let mut huge = p2.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(gw.receive(spoof, &mut huge), Err(DropReason::WrongSource));
        let got = gw.receive(real, &mut p2.clone()).unwrap();
        assert_eq!(got.sequence, 2);
        assert_eq!(gw.peer(), Some(real));
        // Same IP, other port: a different source too.
        let mut p3 = device.send(0, &frame(30, 3));
        assert_eq!(
            gw.receive(addr(1001), &mut p3),
            Err(DropReason::WrongSource)
        );
    }

    #[test]
    fn new_hello_repins_the_address() {
        let mut device_a = AudioChannel::new(KEY, CONN);
        let mut out = Vec::new();
        let mut gw = AudioChannel::new(KEY, CONN);
        device_a.seal(0, &[1, 2, 3], &mut out).unwrap();
        gw.receive(addr(1), &mut out.clone()).unwrap();

        // Next conversation: new channel, the device on a new port.
        let key2 = [9u8; 16];
        let mut gw = AudioChannel::new(key2, CONN);
        let mut device_b = AudioChannel::new(key2, CONN);
        device_b.seal(0, &[4, 5, 6], &mut out).unwrap();
        let got = gw.receive(addr(2), &mut out).unwrap();
        assert_eq!(got.sequence, 1);
        assert_eq!(&out[got.payload], &[4, 5, 6]);
        assert_eq!(gw.peer(), Some(addr(2)));
    }

    #[test]
    fn wrong_conn_id_is_unknown() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut other = AudioChannel::new(KEY, CONN + 1);
        let mut out = Vec::new();
        other.seal(0, &[1, 2, 3], &mut out).unwrap();
        assert_eq!(gw.receive(addr(1), &mut out), Err(DropReason::UnknownConn));
        assert_eq!(gw.peer(), None);
    }

    #[test]
    fn lengths_off_by_one() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
        let good = device.send(0, &frame(40, 0));
        let mut short = good[..good.len() - 1].to_vec();
        assert_eq!(gw.receive(addr(1), &mut short), Err(DropReason::BadLength));
        let mut long = [good.clone(), vec![0]].concat();
        assert_eq!(gw.receive(addr(1), &mut long), Err(DropReason::BadLength));
        let mut header_only = good[..16].to_vec();
        assert_eq!(
            gw.receive(addr(1), &mut header_only),
            Err(DropReason::BadLength)
        );
        let mut fifteen = good[..15].to_vec();
        assert_eq!(gw.receive(addr(1), &mut fifteen), Err(DropReason::TooShort));
        let mut bad_type = good.clone();
        bad_type[0] = 0;
        assert_eq!(gw.receive(addr(1), &mut bad_type), Err(DropReason::BadType));
        // None of those moved the sequence or pinned an address.
        assert_eq!(gw.peer(), None);
        assert_eq!(
            gw.receive(addr(1), &mut good.clone()).map(|r| r.sequence),
            Ok(1)
        );
    }

    #[test]
    fn empty_payload_is_valid() {
        let mut gw = AudioChannel::new(KEY, CONN);
        let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
        let mut datagram = device.send(0, &[]);
        let got = gw.receive(addr(1), &mut datagram).unwrap();
        assert_eq!(got.payload, 16..16);
    }

    proptest! {
        #[test]
        fn receive_never_panics(
            datagrams in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..48)),
                0..16,
            ),
        ) {
            let mut gw = AudioChannel::new(KEY, CONN);
            let mut last = 0;
            for (other_source, mut datagram) in datagrams {
                // Make some datagrams well-formed for this channel so the
                // later checks run too.
                if datagram.len() >= 16 && datagram[1] & 1 == 1 {
                    let len = (datagram.len() - 16) as u16;
                    datagram[0] = 1;
                    datagram[2..4].copy_from_slice(&len.to_be_bytes());
                    datagram[4..8].copy_from_slice(&CONN.to_be_bytes());
                }
                let from = addr(if other_source { 2 } else { 1 });
                if let Ok(got) = gw.receive(from, &mut datagram) {
                    prop_assert!(got.sequence > last);
                    prop_assert_eq!(got.payload.end, datagram.len());
                    prop_assert_eq!(gw.peer(), Some(from));
                    last = got.sequence;
                }
            }
        }

        #[test]
        fn seal_then_device_receive(
            frames in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..200)),
                1..8,
            ),
        ) {
            let mut gw = AudioChannel::new(KEY, CONN);
            let mut device = Device::from_hello(&packet::hex16(&KEY), &packet::hex16(&gw.nonce()));
            let mut out = Vec::new();
            for (ts, opus) in frames {
                gw.seal(ts, &opus, &mut out).unwrap();
                prop_assert_eq!(device.receive(&out), Some((ts, opus)));
            }
        }
    }
}
