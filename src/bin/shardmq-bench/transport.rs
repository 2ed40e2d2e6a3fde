//! What lies between a client's MQTT bytes and its socket: nothing (TCP),
//! TLS (rustls, *ring*), WebSocket framing, or both (`wss`).
//!
//! [`Endpoint`] is the run-wide part: the address, the TLS client
//! configuration, the upgrade request. [`Layers`] is one connection's part
//! and does no I/O: `client::Conn` moves socket bytes in and out of its
//! buffers and asks it to turn them into MQTT bytes and back. Everything a
//! connection sends after the handshakes is one masked binary frame per
//! write batch (RFC 6455 §5.3), encrypted as one run of TLS records, so the
//! per-message cost is what any client of these transports pays: a copy,
//! the mask, the cipher.

use std::io::{BufRead, ErrorKind, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::{Buf, BufMut, BytesMut};
use clap::ValueEnum;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::cli::GlobalOpts;
use super::stats::Problem;
use shardmq::transport::ws::handshake::accept_key;

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// WebSocket opcodes (RFC 6455 §5.2).
const OP_CONTINUATION: u8 = 0x0;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Longest control frame payload (RFC 6455 §5.5).
const CONTROL_MAX: usize = 125;
/// Longest upgrade response accepted.
const RESPONSE_MAX: usize = 8 * 1024;

/// How every client of a run reaches the broker.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// CONNECT with clean session 1 (the default) or 0 (`--persistent`).
    pub clean_session: bool,
    tls: Option<Tls>,
    ws: Option<Ws>,
}

#[derive(Debug)]
struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

#[derive(Debug)]
struct Ws {
    /// `Host` header value.
    host: String,
    path: String,
}

impl Endpoint {
    /// Plain TCP to `addr`.
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            clean_session: true,
            tls: None,
            ws: None,
        }
    }

    /// The endpoint the global options describe, certificates read.
    pub fn new(global: &GlobalOpts, addr: SocketAddr) -> Result<Endpoint, String> {
        let (tls, ws) = match global.transport {
            Transport::Tcp => (false, false),
            Transport::Tls => (true, false),
            Transport::Ws => (false, true),
            Transport::Wss => (true, true),
        };
        let tls = tls.then(|| tls_client(global)).transpose()?;
        let ws = ws.then(|| Ws {
            host: format!("{}:{}", global.host, global.port),
            path: global.ws_path.clone(),
        });
        Ok(Endpoint {
            addr,
            clean_session: !global.persistent,
            tls,
            ws,
        })
    }

    /// A new connection's layers; `None` for plain TCP.
    pub fn layers(&self) -> Result<Option<Box<Layers>>, Problem> {
        if self.tls.is_none() && self.ws.is_none() {
            return Ok(None);
        }
        let tls = match &self.tls {
            Some(t) => Some(
                ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(|_| Problem::TlsError)?,
            ),
            None => None,
        };
        Ok(Some(Box::new(Layers {
            tls,
            ws: None,
            raw_in: BytesMut::new(),
            ws_in: BytesMut::new(),
            ws_out: BytesMut::new(),
            raw_out: BytesMut::new(),
        })))
    }

    /// The upgrade request and the `Sec-WebSocket-Accept` it expects, if
    /// this endpoint speaks WebSocket.
    pub fn upgrade_request(&self) -> Option<(Vec<u8>, String)> {
        let ws = self.ws.as_ref()?;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n",
            ws.path, ws.host
        );
        Some((request.into_bytes(), accept_key(&key)))
    }
}

/// The rustls client configuration of `--cafile`, `--cert`, `--key` and
/// the name the broker's certificate must carry.
fn tls_client(global: &GlobalOpts) -> Result<Tls, String> {
    let cafile = global
        .cafile
        .as_deref()
        .ok_or("--transport tls and wss need --cafile (the broker's CA)")?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(Path::new(cafile))
        .map_err(|e| format!("--cafile {cafile}: {e}"))?
    {
        let cert = cert.map_err(|e| format!("--cafile {cafile}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cafile {cafile}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&global.cert, &global.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(Path::new(cert))
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--cert {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(Path::new(key))
                .map_err(|e| format!("--key {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert/--key: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".to_string()),
    };
    let name = global.server_name.as_deref().unwrap_or(&global.host);
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("`{name}` is not a server name: {e}"))?;
    Ok(Tls {
        config: Arc::new(config),
        name,
    })
}

/// One connection's TLS session and WebSocket framing state.
///
/// Socket bytes go into [`socket_in`](Self::socket_in), [`decode`]
/// (Self::decode) turns them into MQTT bytes; [`encode`](Self::encode)
/// turns MQTT bytes into socket bytes in [`out`](Self::out).
pub struct Layers {
    tls: Option<ClientConnection>,
    /// Framing state once the upgrade is done.
    ws: Option<Deframer>,
    /// Socket bytes for TLS.
    raw_in: BytesMut,
    /// WebSocket stream bytes not yet deframed.
    ws_in: BytesMut,
    /// A frame (and any pong) on its way into TLS.
    ws_out: BytesMut,
    /// Bytes for the socket.
    raw_out: BytesMut,
}

/// Where the reader is in the broker's frames.
#[derive(Default)]
struct Deframer {
    /// Payload bytes still to come of the current data frame.
    data_left: u64,
    /// Pong payloads owed for pings.
    pongs: Vec<Vec<u8>>,
}

impl Layers {
    /// Whether the TLS handshake is still under way.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Where socket bytes are to be appended.
    pub fn socket_in(&mut self) -> &mut BytesMut {
        if self.tls.is_some() || self.ws.is_none() {
            &mut self.raw_in
        } else {
            &mut self.ws_in
        }
    }

    /// Bytes for the socket, written from the front.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.raw_out
    }

    /// Gives back the input buffers' memory when they hold nothing.
    pub fn shrink_idle(&mut self) {
        for buf in [&mut self.raw_in, &mut self.ws_in] {
            if buf.is_empty() {
                *buf = BytesMut::new();
            }
        }
    }

    /// Switches framing on, the upgrade being answered; `rest` is what
    /// came after the response, already frames.
    pub fn start_framing(&mut self, rest: &[u8]) {
        self.ws_in.extend_from_slice(rest);
        self.ws = Some(Deframer::default());
    }

    /// Turns the socket bytes received so far into MQTT bytes appended
    /// to `mqtt`; returns how many. Queues what the peer is owed (TLS
    /// handshake records, pongs) for the next `encode`.
    pub fn decode(&mut self, mqtt: &mut BytesMut) -> Result<usize, Problem> {
        let ws = self.ws.is_some();
        let mut produced = 0;
        if self.tls.is_none() && !ws {
            // Plain TCP until the upgrade is answered.
            produced = self.raw_in.len();
            mqtt.extend_from_slice(&self.raw_in);
            self.raw_in.clear();
        }
        if let Some(tls) = &mut self.tls {
            let plain = if ws { &mut self.ws_in } else { &mut *mqtt };
            produced = decrypt(tls, &mut self.raw_in, plain)?;
            seal_pending(tls, &mut self.raw_out)?;
        }
        if let Some(deframer) = &mut self.ws {
            produced = deframer.deframe(&mut self.ws_in, mqtt)?;
        }
        Ok(produced)
    }

    /// Whether `encode` has anything to do with an empty MQTT buffer.
    pub fn owes(&self) -> bool {
        self.ws.as_ref().is_some_and(|d| !d.pongs.is_empty())
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Moves all of `mqtt` (and any pong owed) into [`out`](Self::out):
    /// framed, then encrypted.
    pub fn encode(&mut self, mqtt: &mut BytesMut) -> Result<(), Problem> {
        let framed = match &mut self.ws {
            Some(deframer) => {
                let sink = if self.tls.is_some() {
                    &mut self.ws_out
                } else {
                    &mut self.raw_out
                };
                for pong in deframer.pongs.drain(..) {
                    frame(sink, OP_PONG, &pong);
                }
                if !mqtt.is_empty() {
                    frame(sink, OP_BINARY, mqtt);
                }
                mqtt.clear();
                &mut self.ws_out
            }
            None if self.tls.is_none() => {
                // Plain TCP until the upgrade is answered.
                self.raw_out.extend_from_slice(mqtt);
                mqtt.clear();
                return Ok(());
            }
            None => mqtt,
        };
        if let Some(tls) = &mut self.tls {
            while !framed.is_empty() {
                let n = tls.writer().write(framed).map_err(|_| Problem::TlsError)?;
                framed.advance(n);
                seal_pending(tls, &mut self.raw_out)?;
                if n == 0 && !tls.wants_write() {
                    return Err(Problem::TlsError);
                }
            }
            seal_pending(tls, &mut self.raw_out)?;
        }
        Ok(())
    }
}

/// Feeds `raw` to TLS and appends the plaintext to `plain`.
fn decrypt(
    tls: &mut ClientConnection,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
) -> Result<usize, Problem> {
    let mut produced = 0;
    while !raw.is_empty() {
        let mut unread: &[u8] = raw;
        let n = tls.read_tls(&mut unread).map_err(|_| Problem::TlsError)?;
        raw.advance(n);
        tls.process_new_packets().map_err(|_| Problem::TlsError)?;
        let mut reader = tls.reader();
        loop {
            let taken = match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    plain.extend_from_slice(chunk);
                    chunk.len()
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Err(Problem::ClosedByBroker),
            };
            reader.consume(taken);
            produced += taken;
        }
        if n == 0 {
            break;
        }
    }
    Ok(produced)
}

/// Appends the records TLS has ready to `out`.
fn seal_pending(tls: &mut ClientConnection, out: &mut BytesMut) -> Result<(), Problem> {
    let mut sink = out.writer();
    while tls.wants_write() {
        tls.write_tls(&mut sink).map_err(|_| Problem::TlsError)?;
    }
    Ok(())
}

/// Appends one final client frame of `payload`, masked with a fresh key
/// (RFC 6455 §5.3: every client frame, an unpredictable key each).
fn frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    let len = payload.len();
    out.reserve(14 + len);
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(0x80 | 126);
        out.put_u16(len);
    } else {
        out.put_u8(0x80 | 127);
        out.put_u64(len as u64);
    }
    let key: [u8; 4] = rand::random();
    out.put_slice(&key);
    let start = out.len();
    out.put_slice(payload);
    mask(&mut out[start..], key);
}

/// XORs `data` with `key` repeated, eight bytes at a time.
fn mask(data: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

impl Deframer {
    /// Moves the payload of the broker's data frames from `stream` to
    /// `mqtt`, answering pings; returns the payload bytes moved. A frame
    /// cut short stays in `stream` for the next call.
    fn deframe(&mut self, stream: &mut BytesMut, mqtt: &mut BytesMut) -> Result<usize, Problem> {
        let mut produced = 0;
        let mut at = 0;
        loop {
            let rest = stream.get(at..).unwrap_or_default();
            if self.data_left > 0 {
                let take = rest
                    .len()
                    .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
                mqtt.extend_from_slice(rest.get(..take).unwrap_or_default());
                produced += take;
                at += take;
                self.data_left -= take as u64;
                if self.data_left > 0 {
                    break;
                }
                continue;
            }
            let Some(head) = Head::parse(rest)? else {
                break;
            };
            match head.opcode {
                OP_BINARY | OP_CONTINUATION => {
                    at += head.len;
                    self.data_left = head.payload;
                }
                OP_PING | OP_PONG | OP_CLOSE => {
                    let end = head.len + head.payload as usize;
                    let Some(payload) = rest.get(head.len..end) else {
                        break;
                    };
                    match head.opcode {
                        OP_CLOSE => return Err(Problem::ClosedByBroker),
                        OP_PING => self.pongs.push(payload.to_vec()),
                        _ => {}
                    }
                    at += end;
                }
                // Text frames and reserved opcodes carry no MQTT.
                _ => return Err(Problem::ProtocolError),
            }
        }
        stream.advance(at);
        Ok(produced)
    }
}

/// A frame header from the broker.
struct Head {
    opcode: u8,
    /// Header bytes.
    len: usize,
    /// Payload bytes.
    payload: u64,
}

impl Head {
    /// Parses the header at the start of `buf`; `Ok(None)` until it is
    /// all there.
    fn parse(buf: &[u8]) -> Result<Option<Head>, Problem> {
        let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
            return Ok(None);
        };
        // [RFC 6455 §5.1]: a server never masks; no extension was agreed,
        // so the reserved bits are 0.
        if b1 & 0x80 != 0 || b0 & 0x70 != 0 {
            return Err(Problem::ProtocolError);
        }
        let opcode = b0 & 0x0F;
        let (len, payload) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[hi, lo]) => (4, u64::from(u16::from_be_bytes([hi, lo]))),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(bytes) => (10, u64::from_be_bytes(bytes)),
                None => return Ok(None),
            },
            n => (2, u64::from(n)),
        };
        // [RFC 6455 §5.5]: control frames are short and never fragmented.
        if opcode >= OP_CLOSE && (payload > CONTROL_MAX as u64 || b0 & 0x80 == 0) {
            return Err(Problem::ProtocolError);
        }
        Ok(Some(Head {
            opcode,
            len,
            payload,
        }))
    }
}

/// Checks the upgrade response at the start of `buf`: `Ok(None)` until
/// it is whole, then how long it is.
pub fn check_upgrade(buf: &[u8], accept: &str) -> Result<Option<usize>, Problem> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > RESPONSE_MAX {
            Err(Problem::UpgradeRefused)
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| Problem::UpgradeRefused)?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(Problem::UpgradeRefused);
    }
    let accepted = lines
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        });
    if !accepted {
        return Err(Problem::UpgradeRefused);
    }
    Ok(Some(end + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_asks_for_clean_session_0() {
        use clap::Parser;
        let addr = SocketAddr::from(([127, 0, 0, 1], 1883));
        let parse = |args: &[&str]| crate::cli::Cli::try_parse_from(args).unwrap().global;
        let plain = parse(&["shardmq-bench", "p2p"]);
        assert!(Endpoint::new(&plain, addr).unwrap().clean_session);
        let persistent = parse(&["shardmq-bench", "--persistent", "p2p"]);
        assert!(!Endpoint::new(&persistent, addr).unwrap().clean_session);
    }

    fn unmasked(frame: &[u8]) -> (u8, Vec<u8>) {
        let mut unmasked_head = frame.to_vec();
        unmasked_head[1] &= 0x7F;
        let head = Head::parse(&unmasked_head).unwrap().unwrap();
        let key = &frame[head.len..head.len + 4];
        let data = &frame[head.len + 4..];
        let payload = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]);
        (frame[0], payload.collect())
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for len in [0, 1, 7, 8, 9, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = BytesMut::new();
            frame(&mut out, OP_BINARY, &payload);
            // [RFC 6455 §5.3]: the mask bit is set on every client frame.
            assert_eq!(out[1] & 0x80, 0x80, "len {len}");
            assert_eq!(unmasked(&out), (0x80 | OP_BINARY, payload), "len {len}");
        }
    }

    #[test]
    fn the_payload_of_data_frames_comes_out_however_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0x02, 3, b'a', b'b', b'c']); // binary, not final
        stream.extend_from_slice(&[0x89, 1, b'p']); // ping between fragments
        stream.extend_from_slice(&[0x80, 126, 0, 200]); // final continuation
        stream.extend((0..200).map(|i| i as u8));
        let mut expected = b"abc".to_vec();
        expected.extend((0..200).map(|i| i as u8));
        for cut in 0..stream.len() {
            let mut deframer = Deframer::default();
            let (mut buf, mut mqtt) = (BytesMut::new(), BytesMut::new());
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                deframer.deframe(&mut buf, &mut mqtt).unwrap();
            }
            assert_eq!(&mqtt[..], &expected[..], "cut at {cut}");
            assert_eq!(deframer.pongs, vec![b"p".to_vec()], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn masked_text_and_close_frames_end_the_connection() {
        let mut deframer = Deframer::default();
        let mut mqtt = BytesMut::new();
        for bad in [&[0x82, 0x81, 0, 0, 0, 0, 1][..], &[0x81, 1, b'x']] {
            let mut buf = BytesMut::from(bad);
            assert_eq!(
                deframer.deframe(&mut buf, &mut mqtt),
                Err(Problem::ProtocolError)
            );
        }
        let mut buf = BytesMut::from(&[0x88, 2, 0x03, 0xE8][..]);
        assert_eq!(
            deframer.deframe(&mut buf, &mut mqtt),
            Err(Problem::ClosedByBroker)
        );
    }

    #[test]
    fn the_upgrade_must_be_accepted_with_the_key() {
        let accept = accept_key("dGhlIHNhbXBsZSBub25jZQ==");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\nrest"
        );
        assert_eq!(
            check_upgrade(ok.as_bytes(), &accept),
            Ok(Some(ok.len() - 4))
        );
        assert_eq!(check_upgrade(&ok.as_bytes()[..20], &accept), Ok(None));
        let wrong = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(
            check_upgrade(wrong.as_bytes(), &accept),
            Err(Problem::UpgradeRefused)
        );
        let refused = "HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(
            check_upgrade(refused.as_bytes(), &accept),
            Err(Problem::UpgradeRefused)
        );
    }
}
