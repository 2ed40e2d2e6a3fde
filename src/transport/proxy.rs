//! The PROXY protocol header (HAProxy's spec, versions 1 and 2): what a load
//! balancer in front of a listener sends before anything else, saying which
//! client the connection is really from.
//!
//! Sans-IO: [`parse`] looks at the bytes received so far and answers
//! "need more" (`Ok(None)`), a header with the number of bytes it took, or
//! a typed error as soon as the bytes cannot become a valid header. It
//! never asks for more than [`HEADER_MAX`] bytes, so the reader's buffer is
//! bounded too.
//!
//! Only what the broker needs is kept: the source address of a proxied TCP
//! connection. `LOCAL` (v2) and `UNKNOWN` (v1) headers, and families other
//! than IPv4 and IPv6, leave the socket's own address in place. TLVs are
//! skipped.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// The v1 preamble; the spec caps a v1 line at 107 bytes, CRLF included.
const V1_PREFIX: &[u8] = b"PROXY ";
pub const V1_MAX: usize = 107;
/// Largest v2 header accepted, fixed part included. The spec allows a
/// 64 KiB address block, but the addresses take at most 216 bytes (UNIX)
/// and load balancers add a few small TLVs; a peer-announced length beyond
/// this is refused rather than buffered.
pub const V2_MAX: usize = 4096;
/// The most bytes [`parse`] may need before it decides.
pub const HEADER_MAX: usize = V2_MAX;

const _: () = assert!(V1_MAX < V2_MAX);
const _: () = assert!(V2_FIXED + 216 < V2_MAX);

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection from `source`, made to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, e.g. a health check), or a
    /// client the proxy cannot describe (v1 `UNKNOWN`, v2 `UNSPEC`/`UNIX`):
    /// the socket's own address stands.
    Local,
}

impl Header {
    /// The client's address when the header gives one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxied { source, .. } => Some(*source),
            Header::Local => None,
        }
    }
}

/// A complete header and how many bytes of the input it took; what follows
/// is the client's own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub header: Header,
    pub consumed: usize,
}

/// Why the bytes are not a valid PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    NoSignature,
    #[error("PROXY v1 line without CRLF within {V1_MAX} bytes")]
    V1TooLong,
    #[error("PROXY v1 line malformed")]
    V1Malformed,
    #[error("PROXY v2 version {0} unsupported")]
    V2Version(u8),
    #[error("PROXY v2 command {0} unknown")]
    V2Command(u8),
    #[error("PROXY v2 header of {0} bytes exceeds the limit")]
    V2TooLong(usize),
    #[error("PROXY v2 address block too short for its family")]
    V2AddressTruncated,
    #[error("PROXY v2 family or transport unsupported (byte {0:#04x})")]
    V2Family(u8),
}

/// Parses the header at the start of `input`.
///
/// `Ok(None)`: the bytes so far are a valid beginning; read more (never
/// past [`HEADER_MAX`] in total: by then the answer is `Some` or an error).
pub fn parse(input: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    if starts_like(input, &V2_SIGNATURE) {
        return if input.len() < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(input)
        };
    }
    if starts_like(input, V1_PREFIX) {
        return if input.len() < V1_PREFIX.len() {
            Ok(None)
        } else {
            parse_v1(input)
        };
    }
    Err(ProxyError::NoSignature)
}

/// True when `input` and `prefix` agree on their common length.
fn starts_like(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input.get(..n) == prefix.get(..n)
}

fn parse_v1(input: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    let window = input.get(..input.len().min(V1_MAX)).unwrap_or(input);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let line = window.get(..end).ok_or(ProxyError::V1Malformed)?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed)?;
    let header = parse_v1_line(line).ok_or(ProxyError::V1Malformed)?;
    Ok(Some(Parsed {
        header,
        consumed: end + 2,
    }))
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222`, `PROXY TCP6 ...`, or
/// `PROXY UNKNOWN` with anything after it.
fn parse_v1_line(line: &str) -> Option<Header> {
    let mut fields = line.split(' ');
    if fields.next()? != "PROXY" {
        return None;
    }
    let family = fields.next()?;
    if family == "UNKNOWN" {
        // "the receiver must ignore anything presented before the CRLF".
        return Some(Header::Local);
    }
    let (source_ip, destination_ip): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            fields.next()?.parse::<Ipv4Addr>().ok()?.into(),
            fields.next()?.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "TCP6" => (
            fields.next()?.parse::<Ipv6Addr>().ok()?.into(),
            fields.next()?.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    let source_port = parse_port(fields.next()?)?;
    let destination_port = parse_port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(Header::Proxied {
        source: SocketAddr::new(source_ip, source_port),
        destination: SocketAddr::new(destination_ip, destination_port),
    })
}

/// A decimal port as the spec writes it: digits only, no leading zero.
fn parse_port(text: &str) -> Option<u16> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

fn parse_v2(input: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    let Some(fixed) = input.get(..V2_FIXED) else {
        // Check what is there already, so garbage is refused early.
        if let Some(&version_command) = input.get(12) {
            check_version_command(version_command)?;
        }
        return Ok(None);
    };
    let (version_command, family, len_hi, len_lo) = (fixed[12], fixed[13], fixed[14], fixed[15]);
    let local = check_version_command(version_command)?;
    let body_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let total = V2_FIXED + body_len;
    if total > V2_MAX {
        return Err(ProxyError::V2TooLong(total));
    }
    let Some(body) = input.get(V2_FIXED..total) else {
        return Ok(None);
    };
    let parsed = |header| {
        Ok(Some(Parsed {
            header,
            consumed: total,
        }))
    };
    if local {
        // The addresses of a LOCAL header, if any, are to be ignored.
        return parsed(Header::Local);
    }
    match family {
        // TCP over IPv4, TCP over IPv6.
        0x11 => parsed(v2_inet(body)?),
        0x21 => parsed(v2_inet6(body)?),
        // UNSPEC, or UNIX stream: nothing the broker can use.
        0x00 | 0x31 => parsed(Header::Local),
        other => Err(ProxyError::V2Family(other)),
    }
}

/// Returns whether the command is `LOCAL`.
fn check_version_command(byte: u8) -> Result<bool, ProxyError> {
    let version = byte >> 4;
    if version != 2 {
        return Err(ProxyError::V2Version(version));
    }
    match byte & 0x0f {
        0 => Ok(true),
        1 => Ok(false),
        other => Err(ProxyError::V2Command(other)),
    }
}

fn v2_inet(body: &[u8]) -> Result<Header, ProxyError> {
    let block: &[u8; 12] = body
        .get(..12)
        .and_then(|b| b.try_into().ok())
        .ok_or(ProxyError::V2AddressTruncated)?;
    let [s0, s1, s2, s3, d0, d1, d2, d3, sp0, sp1, dp0, dp1] = *block;
    Ok(Header::Proxied {
        source: SocketAddr::new(
            Ipv4Addr::new(s0, s1, s2, s3).into(),
            u16::from_be_bytes([sp0, sp1]),
        ),
        destination: SocketAddr::new(
            Ipv4Addr::new(d0, d1, d2, d3).into(),
            u16::from_be_bytes([dp0, dp1]),
        ),
    })
}

fn v2_inet6(body: &[u8]) -> Result<Header, ProxyError> {
    let block: &[u8; 36] = body
        .get(..36)
        .and_then(|b| b.try_into().ok())
        .ok_or(ProxyError::V2AddressTruncated)?;
    let mut source = [0u8; 16];
    let mut destination = [0u8; 16];
    source.copy_from_slice(&block[..16]);
    destination.copy_from_slice(&block[16..32]);
    let source_port = u16::from_be_bytes([block[32], block[33]]);
    let destination_port = u16::from_be_bytes([block[34], block[35]]);
    Ok(Header::Proxied {
        source: SocketAddr::new(Ipv6Addr::from(source).into(), source_port),
        destination: SocketAddr::new(Ipv6Addr::from(destination).into(), destination_port),
    })
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
