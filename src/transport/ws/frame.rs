//! WebSocket framing (RFC 6455 §5), server side, sans-IO.
//!
//! The decoder works in place: given the bytes just read from the socket,
//! it moves the unmasked payload of the data frames to the front of the
//! same buffer and keeps only a frame header in progress (at most 14
//! bytes) and a control frame's payload (at most 125) as state. So the
//! MQTT byte stream comes out without a second buffer, a packet may span
//! frames, and a frame may carry several packets: framing and packets are
//! independent.
//!
//! # Invariants
//! 1. `Decoder::decode` never panics, whatever the bytes or how they are
//!    split across calls; the payload it yields does not depend on the split.
//! 2. The payload it yields is never longer than its input.

#![forbid(unsafe_code)]

/// Opcodes (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest control frame payload [RFC 6455 §5.5].
pub const CONTROL_PAYLOAD_MAX: usize = 125;
/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const HEAD_MAX: usize = 14;
/// The longest header of a server frame (unmasked).
pub const SERVER_HEAD_MAX: usize = 10;

/// Close status codes this server sends (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Why a client's frames cannot be read further. Each maps to the close
/// code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unmasked frame from a client")]
    Unmasked,
    #[error("reserved bits set without an extension")]
    Reserved,
    #[error("reserved opcode {0:#x}")]
    Opcode(u8),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over {CONTROL_PAYLOAD_MAX} bytes")]
    ControlTooLong,
    #[error("continuation frame outside a message")]
    StrayContinuation,
    #[error("new message before the fragmented one ended")]
    UnfinishedMessage,
    #[error("text frame (MQTT is carried in binary frames)")]
    Text,
    #[error("frame of {len} bytes over the bound of {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("malformed close frame")]
    BadClose,
    #[error("close reason is not UTF-8")]
    CloseReason,
}

impl FrameError {
    /// The status code of the close frame that answers this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Text => CLOSE_UNSUPPORTED_DATA,
            FrameError::TooLarge { .. } => CLOSE_TOO_BIG,
            FrameError::CloseReason => CLOSE_INVALID_PAYLOAD,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// What one call to [`Decoder::decode`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Payload bytes now at the front of the buffer.
    pub payload: usize,
    /// The peer's close frame, with its status code if it gave one; the
    /// bytes after it were not looked at.
    pub close: Option<Option<u16>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Ping,
    Pong,
    Close,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    remaining: u64,
    mask: [u8; 4],
    /// Where in the mask the next payload byte falls.
    mask_at: u8,
}

/// The incoming half of a server's framing state.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: u64,
    head: [u8; HEAD_MAX],
    head_len: u8,
    frame: Option<Frame>,
    /// A fragmented binary message is open: only continuations may follow.
    in_message: bool,
    /// The payload of the control frame being read.
    control: Vec<u8>,
    /// The payload of the last ping not yet answered.
    pong: Option<Vec<u8>>,
}

impl Decoder {
    /// A decoder refusing data frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            max_frame: max_frame as u64,
            head: [0; HEAD_MAX],
            head_len: 0,
            frame: None,
            in_message: false,
            control: Vec::new(),
            pong: None,
        }
    }

    /// The payload of a ping to answer with a pong; only the latest counts
    /// [RFC 6455 §5.5.3].
    pub fn take_pong(&mut self) -> Option<Vec<u8>> {
        self.pong.take()
    }

    /// Decodes `buf`, the next bytes from the client, in place: the payload
    /// of its data frames, unmasked, ends up in `buf[..payload]`. Stops
    /// after a close frame.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, FrameError> {
        let mut read = 0;
        let mut written = 0;
        loop {
            let Some(mut frame) = self.frame else {
                let rest = buf.get(read..).unwrap_or_default();
                if rest.is_empty() {
                    break;
                }
                read += self.read_head(rest)?;
                if let Some(close) = self.finish_if_empty()? {
                    return Ok(Decoded {
                        payload: written,
                        close: Some(close),
                    });
                }
                continue;
            };
            let available = buf.len().saturating_sub(read);
            if available == 0 {
                break;
            }
            let take = usize::try_from(frame.remaining).map_or(available, |r| r.min(available));
            if frame.kind == Kind::Data {
                buf.copy_within(read..read + take, written);
                if let Some(out) = buf.get_mut(written..written + take) {
                    unmask(out, frame.mask, frame.mask_at);
                }
                written += take;
            } else if let Some(input) = buf.get(read..read + take) {
                let start = self.control.len();
                self.control.extend_from_slice(input);
                if let Some(out) = self.control.get_mut(start..) {
                    unmask(out, frame.mask, frame.mask_at);
                }
            }
            read += take;
            frame.remaining -= take as u64;
            frame.mask_at = ((usize::from(frame.mask_at) + take) % 4) as u8;
            self.frame = Some(frame);
            if let Some(close) = self.finish_if_empty()? {
                return Ok(Decoded {
                    payload: written,
                    close: Some(close),
                });
            }
        }
        Ok(Decoded {
            payload: written,
            close: None,
        })
    }

    /// Takes header bytes from `input`; returns how many. Sets `frame` once
    /// the header is whole. The first two bytes are checked as soon as
    /// they are in, so a bad frame is refused before its length arrives.
    fn read_head(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        let mut used = 0;
        loop {
            let have = usize::from(self.head_len);
            let need = head_len(&self.head[..have]);
            if have >= need {
                break;
            }
            let n = (need - have).min(input.len() - used);
            if n == 0 {
                return Ok(used);
            }
            self.head[have..have + n].copy_from_slice(&input[used..used + n]);
            self.head_len += n as u8;
            used += n;
            if have < 2 && usize::from(self.head_len) >= 2 {
                self.check_start()?;
            }
        }
        let frame = self.parse_head()?;
        self.head_len = 0;
        self.frame = Some(frame);
        Ok(used)
    }

    /// Checks the first two header bytes and the message sequence.
    fn check_start(&mut self) -> Result<(), FrameError> {
        let [b0, b1, ..] = self.head;
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        if b1 & 0x80 == 0 {
            // [RFC 6455 §5.1]: a server closes on an unmasked client frame.
            return Err(FrameError::Unmasked);
        }
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(FrameError::FragmentedControl);
                }
                if usize::from(b1 & 0x7F) > CONTROL_PAYLOAD_MAX {
                    return Err(FrameError::ControlTooLong);
                }
            }
            OP_CONTINUATION => {
                if !self.in_message {
                    return Err(FrameError::StrayContinuation);
                }
                self.in_message = !fin;
            }
            OP_BINARY => {
                if self.in_message {
                    return Err(FrameError::UnfinishedMessage);
                }
                self.in_message = !fin;
            }
            OP_TEXT => return Err(FrameError::Text),
            other => return Err(FrameError::Opcode(other)),
        }
        Ok(())
    }

    /// The whole header, already checked by `check_start`, as a frame.
    fn parse_head(&self) -> Result<Frame, FrameError> {
        let h = &self.head;
        let kind = match h[0] & 0x0F {
            OP_PING => Kind::Ping,
            OP_PONG => Kind::Pong,
            OP_CLOSE => Kind::Close,
            _ => Kind::Data,
        };
        let (len, at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        if kind == Kind::Data && len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(Frame {
            kind,
            remaining: len,
            mask: [h[at], h[at + 1], h[at + 2], h[at + 3]],
            mask_at: 0,
        })
    }

    /// Ends the current frame if its payload is all read; a close frame
    /// comes back to the caller.
    fn finish_if_empty(&mut self) -> Result<Option<Option<u16>>, FrameError> {
        let Some(frame) = self.frame else {
            return Ok(None);
        };
        if frame.remaining > 0 {
            return Ok(None);
        }
        self.frame = None;
        let payload = std::mem::take(&mut self.control);
        match frame.kind {
            Kind::Data | Kind::Pong => Ok(None),
            Kind::Ping => {
                self.pong = Some(payload);
                Ok(None)
            }
            Kind::Close => parse_close(&payload).map(Some),
        }
    }
}

/// Header bytes needed, knowing the first `head.len()` of them.
fn head_len(head: &[u8]) -> usize {
    match head {
        [_, b1, ..] => {
            let extended = match b1 & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
            2 + extended + mask
        }
        _ => 2,
    }
}

/// A close frame's status code, checked [RFC 6455 §5.5.1, §7.4].
fn parse_close(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_valid(code) {
                return Err(FrameError::BadClose);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::CloseReason);
            }
            Ok(Some(code))
        }
    }
}

/// Codes a peer may send: the defined ones, less those reserved for local
/// use (1004-1006, 1015), and the registered and private ranges.
fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `data` with the mask, starting at mask byte `at`.
fn unmask(data: &mut [u8], mask: [u8; 4], at: u8) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(usize::from(at) + i) % 4];
    }
}

/// Writes the header of an unmasked (server) frame into `out`; returns its
/// length.
pub fn server_head(opcode: u8, fin: bool, len: u64, out: &mut [u8; SERVER_HEAD_MAX]) -> usize {
    out[0] = if fin { 0x80 } else { 0 } | (opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

/// A whole unmasked control frame; `payload` is cut to 125 bytes.
pub fn server_control(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = payload.get(..CONTROL_PAYLOAD_MAX).unwrap_or(payload);
    let mut head = [0; SERVER_HEAD_MAX];
    let n = server_head(opcode, true, payload.len() as u64, &mut head);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out
}

/// A close frame with `code` and no reason.
pub fn server_close(code: Option<u16>) -> Vec<u8> {
    match code {
        Some(code) => server_control(OP_CLOSE, &code.to_be_bytes()),
        None => server_control(OP_CLOSE, &[]),
    }
}

/// A client's frame, masked with `mask`: what the tests and the fuzz
/// target send.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut head = [0; SERVER_HEAD_MAX];
    let n = server_head(opcode, fin, payload.len() as u64, &mut head);
    head[1] |= 0x80;
    let mut out = Vec::with_capacity(n + 4 + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
