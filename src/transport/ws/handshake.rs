//! The WebSocket opening handshake (RFC 6455 §4.2), server side, sans-IO:
//! the client's HTTP/1.1 upgrade request in, the `101` answer or a refusal
//! out. The request head is parsed by `http::request` (httparse, bounded).
//!
//! MQTT over WebSocket [MQTT 3.1.1 §6]: the client offers the `mqtt`
//! subprotocol (older clients `mqttv3.1` or `mqttv3.1.1`) and the server
//! answers with the one it picked; a request offering none of them is
//! refused, as mosquitto and EMQX do.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::http::request::{self, ParseError};

/// The subprotocols of MQTT over WebSocket, in the server's preference
/// when a client offers several.
pub const SUBPROTOCOLS: [&str; 3] = ["mqtt", "mqttv3.1.1", "mqttv3.1"];

/// The GUID of [RFC 6455 §1.3], hashed with the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the handshake checks besides the protocol itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The request target, e.g. `/mqtt`.
    pub path: String,
    /// Accepted `Origin` values (compared without case); empty accepts any
    /// request, with or without `Origin`.
    pub allowed_origins: Vec<String>,
}

/// A successful upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `101 Switching Protocols` answer to send.
    pub response: Vec<u8>,
    /// The subprotocol picked.
    pub protocol: &'static str,
    /// Bytes of the input the request took; what follows is frames.
    pub consumed: usize,
}

/// Why an upgrade request is refused; each has its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    Malformed(ParseError),
    #[error("method {0} is not GET")]
    Method(String),
    #[error("no WebSocket endpoint at {0}")]
    Path(String),
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    #[error("WebSocket version {0:?} is not 13")]
    Version(Option<String>),
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
    #[error("no MQTT subprotocol offered")]
    Subprotocol,
    #[error("origin {0:?} is not allowed")]
    Origin(Option<String>),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(e) => e.status(),
            Refusal::Method(_) => 405,
            Refusal::Path(_) => 404,
            Refusal::NotUpgrade | Refusal::Version(_) => 426,
            Refusal::Key | Refusal::Subprotocol => 400,
            Refusal::Origin(_) => 403,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Method(_) => "method",
            Refusal::Path(_) => "path",
            Refusal::NotUpgrade => "not_upgrade",
            Refusal::Version(_) => "version",
            Refusal::Key => "key",
            Refusal::Subprotocol => "subprotocol",
            Refusal::Origin(_) => "origin",
        }
    }

    /// The HTTP answer; the connection is closed after it.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let reason = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Refused",
        };
        let mut out =
            format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n");
        match self {
            // [RFC 6455 §4.4]: name the version this server speaks.
            Refusal::Version(_) => out.push_str("Sec-WebSocket-Version: 13\r\n"),
            Refusal::NotUpgrade => out.push_str("Upgrade: websocket\r\n"),
            Refusal::Method(_) => out.push_str("Allow: GET\r\n"),
            _ => {}
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Answers the upgrade request at the start of `buf`; `Ok(None)` asks for
/// more bytes.
pub fn respond(buf: &[u8], peer: SocketAddr, policy: &Policy) -> Result<Option<Accepted>, Refusal> {
    let Some(parsed) = request::parse(buf, peer).map_err(Refusal::Malformed)? else {
        return Ok(None);
    };
    let req = &parsed.request;
    if req.method != "GET" {
        return Err(Refusal::Method(req.method.clone()));
    }
    if req.path != policy.path {
        return Err(Refusal::Path(req.path.clone()));
    }
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Refusal::NotUpgrade);
    }
    match req.header("sec-websocket-version") {
        Some("13") => {}
        other => return Err(Refusal::Version(other.map(str::to_string))),
    }
    let key = req.header("sec-websocket-key").ok_or(Refusal::Key)?;
    // [RFC 6455 §4.1]: a base64-encoded 16-byte value.
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(Refusal::Key),
    }
    if !policy.allowed_origins.is_empty() {
        let origin = req.header("origin");
        let allowed = origin.is_some_and(|o| {
            policy
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return Err(Refusal::Origin(origin.map(str::to_string)));
        }
    }
    // Subprotocol names compare with case [RFC 6455 §4.1], and the answer
    // must be one the client offered, letter for letter.
    let offered: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let protocol = SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.contains(p))
        .ok_or(Refusal::Subprotocol)?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
        accept_key(key)
    );
    Ok(Some(Accepted {
        response: response.into_bytes(),
        protocol,
        consumed: parsed.consumed,
    }))
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
