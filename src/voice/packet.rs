//! The xiaozhi UDP audio datagram: a 16-byte header followed by one Opus
//! frame encrypted with AES-128-CTR, the header itself being the IV
//! (protocol reference §5).
//!
//! ```text
//! offset  0     1      2..4         4..8          8..12         12..16     16..
//!         type  flags  payload_len  conn_id       timestamp     sequence   payload
//!         0x01  0x00   u16 BE       u32 BE        u32 BE (ms)   u32 BE     AES-CTR(opus)
//! ```
//!
//! # Rules
//!
//! 1. Both directions use the same layout; all integers are big-endian.
//! 2. A datagram is accepted only if it is at least 16 bytes, its type byte
//!    is 1 and its length is exactly `16 + payload_len`: current firmware
//!    drops anything else, so the gateway holds itself to the same rule in
//!    both directions.
//! 3. The IV is the 16 header bytes exactly as they travel, flags included;
//!    the counter is the whole block read as one 128-bit big-endian integer.
//! 4. The flags byte is neither checked nor kept: [`Header::to_bytes`] always
//!    writes 0, so the IV of a received packet must be taken from the
//!    datagram, not rebuilt from a parsed [`Header`].
//! 5. CTR has no integrity tag: a forged packet with a valid conn id decrypts
//!    to garbage. Replay and source checks live in `crate::voice::audio`.
//!
//! # Panics
//!
//! Nothing here panics on peer bytes: fields are read from fixed-size arrays
//! obtained with `first_chunk`/`get`, never by slicing the datagram.

#![forbid(unsafe_code)]

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ctr::flavors::Ctr128BE;
use ctr::CtrCore;

/// Bytes of the header that precedes every payload, and of the IV.
pub const HEADER_LEN: usize = 16;

/// Largest datagram the gateway sends: the device reads UDP into a 1500-byte
/// buffer and silently truncates anything longer (reference §4.3).
pub const MAX_DATAGRAM: usize = 1500;

/// Largest Opus payload that fits in [`MAX_DATAGRAM`].
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN;

/// The only packet type on the wire.
pub const PACKET_TYPE: u8 = 0x01;

// A payload length must fit the u16 header field.
const _: () = assert!(MAX_PAYLOAD <= u16::MAX as usize);

/// Offset of the big-endian u32 connection id, the routing key.
pub const CONN_ID_OFFSET: usize = 4;

/// The parsed header of one audio datagram. The type byte is always
/// [`PACKET_TYPE`] and the flags byte 0, so neither is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the encrypted payload that follows the header, in bytes.
    pub payload_len: u16,
    /// Connection id given to the device in the hello nonce; routes the
    /// datagram to its conversation.
    pub conn_id: u32,
    /// Milliseconds; device→server it echoes a played timestamp or is 0.
    pub timestamp: u32,
    /// Per-direction counter, the first packet after a hello being 1.
    pub sequence: u32,
}

impl Header {
    /// Validates the framing of `datagram` (rule 2) and reads its header.
    pub fn parse(datagram: &[u8]) -> Result<Header, DropReason> {
        let bytes = datagram
            .first_chunk::<HEADER_LEN>()
            .ok_or(DropReason::TooShort)?;
        if bytes[0] != PACKET_TYPE {
            return Err(DropReason::BadType);
        }
        let header = Header::from_array(bytes);
        if datagram.len() != HEADER_LEN + usize::from(header.payload_len) {
            return Err(DropReason::BadLength);
        }
        Ok(header)
    }

    /// Reads the fields of a header without checking anything.
    fn from_array(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            payload_len: u16::from_be_bytes([b[2], b[3]]),
            conn_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            timestamp: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            sequence: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// The wire form, type 1 and flags 0; also the IV of the payload.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = PACKET_TYPE;
        out[2..4].copy_from_slice(&self.payload_len.to_be_bytes());
        out[4..8].copy_from_slice(&self.conn_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.timestamp.to_be_bytes());
        out[12..16].copy_from_slice(&self.sequence.to_be_bytes());
        out
    }
}

/// The connection id of a datagram, read before any other validation so the
/// socket shell can route it to the shard that owns the conversation.
pub fn conn_id(datagram: &[u8]) -> Option<u32> {
    let bytes = datagram.get(CONN_ID_OFFSET..CONN_ID_OFFSET + 4)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The shard that owns a conversation, by its conn id: `conn_id % shards`.
///
/// The one statement of the rule. The gateway draws conn ids its own shard
/// owns ([`conn_id_for_shard`]), the shells forward a datagram to its owner,
/// and the reuseport program (`bpf::steering_program`) computes the same in
/// the kernel. Never panics: 0 when `shards` is 0.
pub fn owner_of_conn_id(conn_id: u32, shards: u32) -> u32 {
    conn_id.checked_rem(shards).unwrap_or(0)
}

/// A non-zero conn id owned by `shard` ([`owner_of_conn_id`]), derived
/// from `random` by moving it to the nearest such value not above it (or
/// one step up when that would be 0). Panics unless `shard < shards`.
///
/// The caller still checks the id against the conversations it has live.
pub fn conn_id_for_shard(shard: u32, shards: u32, random: u32) -> u32 {
    assert!(shard < shards, "shard {shard} out of 0..{shards}");
    // `random - random % shards + shard` can exceed u32::MAX only when
    // `shard > random % shards`; step one group down then (base >= shards
    // in that case, as random >= u32::MAX - shards + 1 >= shards).
    let base = random - owner_of_conn_id(random, shards);
    let id = match base.checked_add(shard) {
        Some(id) => id,
        None => base - shards + shard,
    };
    if id == 0 {
        shards
    } else {
        id
    }
}

/// The 16-byte nonce sent in the hello: `01 00 0000 <conn_id> 0..0`.
///
/// Bytes 8..16 stay zero as the original gateway and the official service
/// send them: firmware before v1.6.2 and py-xiaozhi keep bytes 8..11 of this
/// nonce as their "timestamp", which then reads 0.
pub fn nonce(conn_id: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = PACKET_TYPE;
    out[4..8].copy_from_slice(&conn_id.to_be_bytes());
    out
}

/// An AES-128 key with its round keys expanded once per hello; per packet
/// only the CTR state is set up.
#[derive(Clone)]
pub struct AudioKey {
    cipher: aes::Aes128,
}

impl AudioKey {
    pub fn new(key: [u8; 16]) -> AudioKey {
        AudioKey {
            cipher: aes::Aes128::new(&key.into()),
        }
    }

    /// Encrypts or decrypts `data` in place with AES-128-CTR, `iv` being the
    /// initial 128-bit big-endian counter (rule 3). CTR is its own inverse.
    pub fn apply(&self, iv: &[u8; HEADER_LEN], data: &mut [u8]) {
        // Borrowing the expanded cipher: `&Aes128` is itself a block cipher,
        // so no round keys are copied per packet. The core is built directly
        // because the wrapper's `InnerIvInit` is not implemented for a
        // borrowed cipher.
        let core = CtrCore::<&aes::Aes128, Ctr128BE>::inner_iv_init(&self.cipher, iv.into());
        ctr::Ctr128BE::from_core(core).apply_keystream(data);
    }
}

impl std::fmt::Debug for AudioKey {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AudioKey(..)")
    }
}

/// Lower-case hex of 16 bytes, as the hello's `udp.key` and `udp.nonce`
/// (the firmware accepts either case but wants exactly 32 digits).
pub fn hex16(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Why a datagram was not accepted or not sent; one metric label each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("datagram shorter than the 16-byte header")]
    TooShort,
    #[error("packet type is not 1")]
    BadType,
    #[error("datagram length is not 16 + payload_len")]
    BadLength,
    #[error("no conversation has this connection id")]
    UnknownConn,
    #[error("the conversation has no backend to forward to")]
    NoConversation,
    #[error("sequence not above the last accepted one")]
    Replayed,
    #[error("source address differs from the pinned one")]
    WrongSource,
    #[error("datagram would exceed 1500 bytes")]
    TooLarge,
}

impl DropReason {
    /// Every reason, in declaration order, for pre-registering metrics.
    pub const ALL: [DropReason; 8] = [
        DropReason::TooShort,
        DropReason::BadType,
        DropReason::BadLength,
        DropReason::UnknownConn,
        DropReason::NoConversation,
        DropReason::Replayed,
        DropReason::WrongSource,
        DropReason::TooLarge,
    ];

    /// The snake_case metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadType => "bad_type",
            DropReason::BadLength => "bad_length",
            DropReason::UnknownConn => "unknown_conn",
            DropReason::NoConversation => "no_conversation",
            DropReason::Replayed => "replayed",
            DropReason::WrongSource => "wrong_source",
            DropReason::TooLarge => "too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn owner_of_conn_id_is_the_remainder() {
        assert_eq!(owner_of_conn_id(0, 4), 0);
        assert_eq!(owner_of_conn_id(13, 4), 1);
        assert_eq!(owner_of_conn_id(u32::MAX, 4), 3);
        assert_eq!(owner_of_conn_id(77, 1), 0);
        assert_eq!(owner_of_conn_id(77, 0), 0, "no panic without shards");
    }

    #[test]
    fn conn_id_for_shard_edges() {
        assert_eq!(conn_id_for_shard(0, 4, 0), 4);
        assert_eq!(conn_id_for_shard(0, 4, 3), 4);
        assert_eq!(conn_id_for_shard(3, 4, 0), 3);
        assert_eq!(conn_id_for_shard(2, 4, 13), 14);
        assert_eq!(conn_id_for_shard(0, 1, 0), 1);
        assert_eq!(conn_id_for_shard(0, 1, 77), 77);
        // u32::MAX = 4294967295 ≡ 3 (mod 4): shard 3 keeps it, others step.
        assert_eq!(conn_id_for_shard(3, 4, u32::MAX), u32::MAX);
        assert_eq!(conn_id_for_shard(0, 3, u32::MAX), u32::MAX);
        assert_eq!(conn_id_for_shard(2, 5, u32::MAX), u32::MAX - 3);
        assert_eq!(conn_id_for_shard(4, 5, u32::MAX - 2), u32::MAX - 1);
    }

    proptest! {
        #[test]
        fn conn_id_for_shard_owned(shards in 1u32..=64, shard_seed: u32, random: u32) {
            let shard = shard_seed % shards;
            let id = conn_id_for_shard(shard, shards, random);
            prop_assert_ne!(id, 0);
            prop_assert_eq!(owner_of_conn_id(id, shards), shard);
            prop_assert!(id.abs_diff(random) <= shards);
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn unhex16(s: &str) -> [u8; 16] {
        unhex(s).try_into().unwrap()
    }

    #[test]
    fn nonce_matches_official_capture() {
        // §4.2: nonce "010000007014e57e0000000000000000".
        assert_eq!(
            hex16(&nonce(0x7014_e57e)),
            "010000007014e57e0000000000000000"
        );
        assert_eq!(hex16(&nonce(u32::MAX)), "01000000ffffffff0000000000000000");
    }

    #[test]
    fn hex16_is_lower_case() {
        let key = unhex16("40711A81786B35F5F127FB31C32841B8");
        assert_eq!(hex16(&key), "40711a81786b35f5f127fb31c32841b8");
    }

    #[test]
    fn header_of_worked_example() {
        // §5.2: 120-byte frame, ts = 0, seq = 1.
        let header = Header {
            payload_len: 120,
            conn_id: 0x7014_e57e,
            timestamp: 0,
            sequence: 1,
        };
        let bytes = header.to_bytes();
        assert_eq!(hex16(&bytes), "010000787014e57e0000000000000001");
        let mut datagram = bytes.to_vec();
        datagram.resize(16 + 120, 0);
        assert_eq!(Header::parse(&datagram), Ok(header));
        assert_eq!(conn_id(&datagram), Some(0x7014_e57e));
    }

    #[test]
    fn worked_example_ciphertext() {
        // Key of the §4.2 capture, IV of §5.2, plaintext 00 01 .. 77;
        // ciphertext computed with `openssl enc -aes-128-ctr`.
        let key = AudioKey::new(unhex16("40711a81786b35f5f127fb31c32841b8"));
        let iv = unhex16("010000787014e57e0000000000000001");
        let mut data: Vec<u8> = (0..120).collect();
        key.apply(&iv, &mut data);
        let expected = unhex(
            "85162ced1ef3a1306b8c8f8e5ed5635d84eb0b2e08003c88ff933a6cdd0fea86
             2d9f1531a4a026cb85279b60c052b0108f3605a3bc87f4275d809dc4d17e1b39
             a69db4335de86087b1e58317453315e8f696e994292f046aa1334ada6783523c
             5948ce88d1ee50dcfa5b911068247d7ef4a61600a1e34203",
        );
        assert_eq!(data, expected);
        key.apply(&iv, &mut data);
        assert_eq!(data, (0..120).collect::<Vec<u8>>());
    }

    #[test]
    fn nist_sp800_38a_f51_ctr_aes128_encrypt() {
        let key = AudioKey::new(unhex16("2b7e151628aed2a6abf7158809cf4f3c"));
        let iv = unhex16("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let mut data = unhex(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
             30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
        );
        key.apply(&iv, &mut data);
        let expected = unhex(
            "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
             5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
        );
        assert_eq!(data, expected);
    }

    #[test]
    fn counter_carries_across_all_128_bits() {
        // mbedTLS, Node and OpenSSL increment the whole block; a 64-bit
        // counter would not carry into byte 7. Vectors from OpenSSL.
        let key = AudioKey::new(unhex16("2b7e151628aed2a6abf7158809cf4f3c"));
        let mut data = [0u8; 32];
        key.apply(&unhex16("0000000000000000ffffffffffffffff"), &mut data);
        assert_eq!(
            data.to_vec(),
            unhex("ef8737b783c4fa88e687ee9467073f6e dc0a3bc38609c26f6f2a63a39cf7ee93")
        );
        let mut data = [0u8; 32];
        key.apply(&unhex16("ffffffffffffffffffffffffffffffff"), &mut data);
        assert_eq!(
            data.to_vec(),
            unhex("8af2860142f786f409307c1a3f7eaaac 7df76b0c1ab899b33e42f047b91b546f")
        );
    }

    #[test]
    fn parse_drops_malformed_framing() {
        let good = Header {
            payload_len: 3,
            conn_id: 9,
            timestamp: 0,
            sequence: 1,
        };
        let mut datagram = good.to_bytes().to_vec();
        datagram.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Header::parse(&datagram), Ok(good));

        for len in 0..HEADER_LEN {
            assert_eq!(Header::parse(&datagram[..len]), Err(DropReason::TooShort));
        }
        // One byte short of, and one past, 16 + payload_len.
        assert_eq!(Header::parse(&datagram[..18]), Err(DropReason::BadLength));
        let mut long = datagram.clone();
        long.push(0);
        assert_eq!(Header::parse(&long), Err(DropReason::BadLength));
        let mut bad_type = datagram.clone();
        bad_type[0] = 2;
        assert_eq!(Header::parse(&bad_type), Err(DropReason::BadType));
        // Flags are ignored, as by the firmware.
        let mut flagged = datagram.clone();
        flagged[1] = 0xff;
        assert_eq!(Header::parse(&flagged), Ok(good));
    }

    #[test]
    fn conn_id_needs_eight_bytes() {
        assert_eq!(conn_id(&[1, 0, 0, 0, 0xde, 0xad, 0xbe]), None);
        assert_eq!(
            conn_id(&[1, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]),
            Some(0xdead_beef)
        );
        assert_eq!(conn_id(&[]), None);
    }

    #[test]
    fn drop_reason_names_are_unique_snake_case() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn audio_key_debug_hides_the_key() {
        assert_eq!(format!("{:?}", AudioKey::new([7; 16])), "AudioKey(..)");
    }

    proptest! {
        #[test]
        fn parse_never_panics(datagram in proptest::collection::vec(any::<u8>(), 0..64)) {
            let parsed = Header::parse(&datagram);
            if let Ok(header) = parsed {
                prop_assert_eq!(datagram.len(), HEADER_LEN + usize::from(header.payload_len));
                prop_assert_eq!(conn_id(&datagram), Some(header.conn_id));
                // Round trip, flags aside (rule 4).
                let mut expected = [0u8; HEADER_LEN];
                expected.copy_from_slice(&datagram[..HEADER_LEN]);
                expected[1] = 0;
                prop_assert_eq!(header.to_bytes(), expected);
            }
        }

        #[test]
        fn header_round_trips(payload_len: u16, conn_id: u32, timestamp: u32, sequence: u32) {
            let header = Header { payload_len, conn_id, timestamp, sequence };
            let mut datagram = header.to_bytes().to_vec();
            datagram.resize(HEADER_LEN + usize::from(payload_len), 0xa5);
            prop_assert_eq!(Header::parse(&datagram), Ok(header));
        }

        #[test]
        fn apply_is_an_involution(
            key: [u8; 16],
            iv: [u8; 16],
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let key = AudioKey::new(key);
            let mut buf = data.clone();
            key.apply(&iv, &mut buf);
            key.apply(&iv, &mut buf);
            prop_assert_eq!(buf, data);
        }
    }
}
