//! The store format: records of the broker's state changes, framed with a
//! length and a CRC32C, behind a versioned header. Sans-IO: bytes in and
//! out, no file, no clock.
//!
//! A shard's store is one append-only log. The broker writes a record for
//! every change of what must survive a restart (a persistent session
//! opened or ended, a filter taken or dropped, a message queued, sent,
//! acknowledged, an inbound QoS 2 id held or released, a retained value
//! set or cleared); the shell appends them and syncs the file once per
//! batch. A compaction writes the live state as records into a new file.
//! Replaying a log (`state::State::apply`) rebuilds what the broker held.
//!
//! # Layout
//! ```text
//! header   "SHMQSTOR" (8 bytes) | version u32 LE | 0 u32
//! record   body length u32 LE | CRC32C of the length u32 LE
//!          | CRC32C of the body u32 LE | body
//! body     kind u8 | fields (strings: u16 LE length + UTF-8; payloads:
//!          u32 LE length + bytes; packet ids u16 LE; times u64 LE ms)
//! ```
//!
//! # Damage
//! The length has a CRC of its own, so a damaged length is never trusted
//! to say where the file ends. A record whose (checked) length runs past
//! the end of the file, a last record whose body fails its CRC, or a bad
//! frame followed only by zeros is a torn tail: the last write of a crash,
//! cut and reported. A bad frame or body with data after it, a header of
//! another version, or a record that checks but does not decode is damage:
//! the store is refused, never loaded as garbage.

use bytes::Bytes;

use crate::mqtt::session::Message;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

pub mod state;

/// The first bytes of every store file.
pub const MAGIC: &[u8; 8] = b"SHMQSTOR";

/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of the file header.
pub const HEADER_LEN: usize = 16;

/// Bytes before each record's body: its length and the two CRCs.
pub const FRAME_LEN: usize = 12;

/// The largest body a record may have: a 256 MiB payload (MQTT's maximum
/// packet) and its topic, with room to spare. A length beyond it is damage.
pub const BODY_MAX: usize = 268_435_456 + 131_072;

/// Why a store cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not a shardmq store (bad magic)")]
    BadMagic,
    #[error("store format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("damaged record at byte {offset}: {reason}")]
    Damaged { offset: u64, reason: &'static str },
}

/// One state change. Client ids, topics and filters are validated when a
/// record is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session starts empty (or is reset to empty).
    Open {
        client_id: String,
    },
    /// The session is gone, with all it held.
    End {
        client_id: String,
    },
    /// The client connected (`online`) or left, at `at_ms` (Unix ms).
    Presence {
        client_id: String,
        online: bool,
        at_ms: u64,
    },
    Subscribe {
        client_id: String,
        filter: String,
        qos: QoS,
    },
    Unsubscribe {
        client_id: String,
        filter: String,
    },
    /// A message joins the back of the session's queue.
    Enqueue {
        client_id: String,
        message: Message,
    },
    /// A message goes out at once with `pkid`, to the back of the window.
    Send {
        client_id: String,
        pkid: u16,
        message: Message,
    },
    /// The queue's front goes out with `pkid` (0: a QoS 0 message, gone).
    Dequeue {
        client_id: String,
        pkid: u16,
    },
    /// The client acknowledged outgoing `pkid` (PUBACK, or PUBCOMP).
    Acked {
        client_id: String,
        pkid: u16,
    },
    /// PUBREC came for outgoing `pkid`: PUBREL sent, PUBCOMP awaited.
    Released {
        client_id: String,
        pkid: u16,
    },
    /// Inbound QoS 2 `pkid` awaits its PUBREL.
    InboundQos2 {
        client_id: String,
        pkid: u16,
    },
    /// Inbound QoS 2 `pkid` was released.
    InboundReleased {
        client_id: String,
        pkid: u16,
    },
    /// A topic's retained message; an empty payload clears the topic.
    Retain {
        topic: TopicName,
        qos: QoS,
        payload: Bytes,
    },
}

mod kind {
    pub const OPEN: u8 = 1;
    pub const END: u8 = 2;
    pub const PRESENCE: u8 = 3;
    pub const SUBSCRIBE: u8 = 4;
    pub const UNSUBSCRIBE: u8 = 5;
    pub const ENQUEUE: u8 = 6;
    pub const SEND: u8 = 7;
    pub const DEQUEUE: u8 = 8;
    pub const ACKED: u8 = 9;
    pub const RELEASED: u8 = 10;
    pub const INBOUND_QOS2: u8 = 11;
    pub const INBOUND_RELEASED: u8 = 12;
    pub const RETAIN: u8 = 13;
}

/// The file header of this format.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Whether `bytes` is what a crash while a store file was being created
/// leaves: nothing, or the start of the header. Such a file holds no
/// record; it is created again.
pub fn is_unfinished_header(bytes: &[u8]) -> bool {
    bytes.len() < HEADER_LEN && header().starts_with(bytes)
}

/// Checks a file's header.
pub fn check_header(bytes: &[u8]) -> Result<(), StoreError> {
    let (Some(magic), Some(version)) = (bytes.get(..8), bytes.get(8..12)) else {
        return Err(StoreError::BadMagic);
    };
    if bytes.len() < HEADER_LEN {
        return Err(StoreError::Damaged {
            offset: 0,
            reason: "file shorter than its header",
        });
    }
    if magic != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let found = u32::from_le_bytes(version.try_into().unwrap_or([0; 4]));
    if found != FORMAT_VERSION {
        return Err(StoreError::Version { found });
    }
    Ok(())
}

/// Appends `record`, framed, to `out`.
pub fn encode(out: &mut Vec<u8>, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    encode_body(out, record);
    let body_len = out.len() - start - FRAME_LEN;
    debug_assert!(body_len <= BODY_MAX);
    let len = (body_len as u32).to_le_bytes();
    let len_crc = crc32c_append(0, &len).to_le_bytes();
    let crc = crc32c_append(0, &out[start + FRAME_LEN..]).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&len_crc);
    out[start + 8..start + FRAME_LEN].copy_from_slice(&crc);
}

fn encode_body(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Open { client_id } => id_only(out, kind::OPEN, client_id),
        Record::End { client_id } => id_only(out, kind::END, client_id),
        Record::Presence {
            client_id,
            online,
            at_ms,
        } => {
            id_only(out, kind::PRESENCE, client_id);
            out.push(u8::from(*online));
            out.extend_from_slice(&at_ms.to_le_bytes());
        }
        Record::Subscribe {
            client_id,
            filter,
            qos,
        } => {
            id_only(out, kind::SUBSCRIBE, client_id);
            put_str(out, filter);
            out.push(*qos as u8);
        }
        Record::Unsubscribe { client_id, filter } => {
            id_only(out, kind::UNSUBSCRIBE, client_id);
            put_str(out, filter);
        }
        Record::Enqueue { client_id, message } => {
            id_only(out, kind::ENQUEUE, client_id);
            put_message(out, message);
        }
        Record::Send {
            client_id,
            pkid,
            message,
        } => {
            id_pkid(out, kind::SEND, client_id, *pkid);
            put_message(out, message);
        }
        Record::Dequeue { client_id, pkid } => id_pkid(out, kind::DEQUEUE, client_id, *pkid),
        Record::Acked { client_id, pkid } => id_pkid(out, kind::ACKED, client_id, *pkid),
        Record::Released { client_id, pkid } => id_pkid(out, kind::RELEASED, client_id, *pkid),
        Record::InboundQos2 { client_id, pkid } => {
            id_pkid(out, kind::INBOUND_QOS2, client_id, *pkid)
        }
        Record::InboundReleased { client_id, pkid } => {
            id_pkid(out, kind::INBOUND_RELEASED, client_id, *pkid)
        }
        Record::Retain {
            topic,
            qos,
            payload,
        } => {
            out.push(kind::RETAIN);
            put_str(out, topic.as_str());
            out.push(*qos as u8);
            put_bytes(out, payload);
        }
    }
}

fn id_only(out: &mut Vec<u8>, kind: u8, client_id: &str) {
    out.push(kind);
    put_str(out, client_id);
}

fn id_pkid(out: &mut Vec<u8>, kind: u8, client_id: &str, pkid: u16) {
    id_only(out, kind, client_id);
    out.extend_from_slice(&pkid.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Client ids, topics and filters are at most 65,535 bytes on the wire.
    debug_assert!(s.len() <= usize::from(u16::MAX));
    let len = s.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_message(out: &mut Vec<u8>, m: &Message) {
    put_str(out, m.topic.as_str());
    out.push(m.qos as u8 | (u8::from(m.retain) << 2));
    put_bytes(out, &m.payload);
}

/// What a scan of a log found: the records, where the good part ends, and
/// a torn tail if one was cut.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Record>,
    /// Bytes of header and whole records: where the next append goes.
    pub good_len: u64,
    /// Bytes after `good_len` that are a torn last write.
    pub torn_bytes: u64,
}

/// Reads a whole store file: header, then records to the end. A torn tail
/// is reported in the result, any other damage is an error.
pub fn scan(file: &[u8]) -> Result<Scan, StoreError> {
    check_header(file)?;
    let mut scan = Scan {
        good_len: HEADER_LEN as u64,
        ..Scan::default()
    };
    let mut at = HEADER_LEN;
    while at < file.len() {
        match next_frame(file, at) {
            Frame::Whole { body, end } => {
                let record = decode_body(body).map_err(|reason| StoreError::Damaged {
                    offset: at as u64,
                    reason,
                })?;
                scan.records.push(record);
                at = end;
                scan.good_len = at as u64;
            }
            Frame::Torn => {
                scan.torn_bytes = (file.len() - at) as u64;
                break;
            }
            Frame::Bad(reason) => {
                // A torn write can leave zeros (a page extended, not
                // written) after a partial record: still the tail.
                if file[at..].iter().skip(FRAME_LEN).all(|&b| b == 0)
                    || file[at..].iter().all(|&b| b == 0)
                {
                    scan.torn_bytes = (file.len() - at) as u64;
                    break;
                }
                return Err(StoreError::Damaged {
                    offset: at as u64,
                    reason,
                });
            }
        }
    }
    Ok(scan)
}

enum Frame<'a> {
    Whole {
        body: &'a [u8],
        end: usize,
    },
    /// The record runs past the end of the file.
    Torn,
    Bad(&'static str),
}

fn next_frame(file: &[u8], at: usize) -> Frame<'_> {
    let Some(frame) = file.get(at..at + FRAME_LEN) else {
        return Frame::Torn;
    };
    let word = |i: usize| u32::from_le_bytes(frame[i..i + 4].try_into().unwrap_or([0; 4]));
    let (len, len_crc, crc) = (word(0), word(4), word(8));
    if crc32c_append(0, &len.to_le_bytes()) != len_crc {
        return Frame::Bad("record length checksum mismatch");
    }
    let len = len as usize;
    if len == 0 || len > BODY_MAX {
        return Frame::Bad("record length out of range");
    }
    let end = at + FRAME_LEN + len;
    let Some(body) = file.get(at + FRAME_LEN..end) else {
        return Frame::Torn;
    };
    if crc32c_append(0, body) != crc {
        return if end == file.len() {
            // The last record, written only in part before a crash.
            Frame::Torn
        } else {
            Frame::Bad("checksum mismatch")
        };
    }
    Frame::Whole { body, end }
}

/// A cursor over a record body; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

type Decoded<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if self.bytes.len() < n {
            return Err("record body too short");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Decoded<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Decoded<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| "short")?))
    }

    fn u64(&mut self) -> Decoded<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short")?))
    }

    fn string(&mut self) -> Decoded<String> {
        let len = usize::from(self.u16()?);
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string not UTF-8")
    }

    fn qos(&mut self) -> Decoded<QoS> {
        QoS::from_u8(self.u8()?).ok_or("bad QoS")
    }

    fn topic(&mut self) -> Decoded<TopicName> {
        TopicName::from_string(self.string()?).map_err(|_| "bad topic name")
    }

    fn filter(&mut self) -> Decoded<String> {
        let f = self.string()?;
        crate::mqtt::topic::validate_filter(&f).map_err(|_| "bad topic filter")?;
        Ok(f)
    }

    fn payload(&mut self) -> Decoded<Bytes> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn message(&mut self) -> Decoded<Message> {
        let topic = self.topic()?;
        let flags = self.u8()?;
        if flags & !0b111 != 0 {
            return Err("bad message flags");
        }
        let qos = QoS::from_u8(flags & 0b11).ok_or("bad QoS")?;
        Ok(Message {
            topic,
            qos,
            retain: flags & 0b100 != 0,
            payload: self.payload()?,
        })
    }

    fn pkid(&mut self) -> Decoded<u16> {
        match self.u16()? {
            0 => Err("packet id 0"),
            pkid => Ok(pkid),
        }
    }
}

fn decode_body(body: &[u8]) -> Decoded<Record> {
    let mut r = Reader { bytes: body };
    let k = r.u8()?;
    if k == kind::RETAIN {
        let record = Record::Retain {
            topic: r.topic()?,
            qos: r.qos()?,
            payload: r.payload()?,
        };
        return finish(r, record);
    }
    let client_id = r.string()?;
    let record = match k {
        kind::OPEN => Record::Open { client_id },
        kind::END => Record::End { client_id },
        kind::PRESENCE => Record::Presence {
            client_id,
            online: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err("bad presence flag"),
            },
            at_ms: r.u64()?,
        },
        kind::SUBSCRIBE => Record::Subscribe {
            client_id,
            filter: r.filter()?,
            qos: r.qos()?,
        },
        kind::UNSUBSCRIBE => Record::Unsubscribe {
            client_id,
            filter: r.filter()?,
        },
        kind::ENQUEUE => Record::Enqueue {
            client_id,
            message: r.message()?,
        },
        kind::SEND => Record::Send {
            client_id,
            pkid: r.pkid()?,
            message: r.message()?,
        },
        kind::DEQUEUE => Record::Dequeue {
            client_id,
            pkid: r.u16()?,
        },
        kind::ACKED => Record::Acked {
            client_id,
            pkid: r.pkid()?,
        },
        kind::RELEASED => Record::Released {
            client_id,
            pkid: r.pkid()?,
        },
        kind::INBOUND_QOS2 => Record::InboundQos2 {
            client_id,
            pkid: r.pkid()?,
        },
        kind::INBOUND_RELEASED => Record::InboundReleased {
            client_id,
            pkid: r.pkid()?,
        },
        _ => return Err("unknown record kind"),
    };
    finish(r, record)
}

fn finish(r: Reader<'_>, record: Record) -> Decoded<Record> {
    if r.bytes.is_empty() {
        Ok(record)
    } else {
        Err("trailing bytes in record")
    }
}

/// CRC32C (Castagnoli) continued over `bytes`: the `crc32c` crate, which
/// uses the CPU's CRC32 instruction where there is one (SSE 4.2, ARMv8).
pub use crc32c::crc32c_append;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
