//! HTTP/1.x request parsing, sans-IO: bytes in, one request out, or `Ok(None)`
//! for "send more bytes", or an error that maps to a status code.
//!
//! # Limits
//! 1. The head (request line and headers) is at most [`HEAD_BYTES_MAX`] bytes
//!    and [`HEADERS_MAX`] header lines; only that much is ever scanned, so a
//!    request dribbled in byte by byte costs at most that much per call.
//! 2. The body is at most [`BODY_BYTES_MAX`] bytes and must be announced by
//!    `Content-Length`; the limit is checked from the header, before the body
//!    is buffered.
//! 3. `Transfer-Encoding` is refused (411): the clients of this server (the
//!    firmware, the manager API, Prometheus) all send sized bodies, and a
//!    chunked decoder would be attack surface for nothing.
//!
//! # Invariants
//! 1. `parse` never panics, whatever the bytes.
//! 2. On `Ok(Some(p))`, `p.consumed <= buf.len()` and the bytes after
//!    `p.consumed` are left for the next call (pipelining).

use std::net::SocketAddr;

/// Largest request head accepted, request line included.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Header lines per request: httparse fills a fixed array of this size.
pub const HEADERS_MAX: usize = 64;

/// One request, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target before `?`, still percent-encoded.
    pub path: String,
    /// The target after `?` (without it), still percent-encoded; "" if none.
    pub query: String,
    /// Names lower-cased, values trimmed, in arrival order; repeats are kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of header `name`, which must be given lower-case.
    pub fn header(&self, name: &str) -> Option<&str> {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A complete request and what the connection should do after answering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub request: Request,
    /// Bytes of the input this request took, head and body.
    pub consumed: usize,
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Why a request cannot be served. The connection is closed after the answer,
/// since where the next request would start is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head over {HEAD_BYTES_MAX} bytes or {HEADERS_MAX} header lines")]
    HeadTooLarge,
    #[error("request body over {BODY_BYTES_MAX} bytes")]
    BodyTooLarge,
    #[error("request body without Content-Length")]
    LengthRequired,
}

impl ParseError {
    /// The status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::HeadTooLarge => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::LengthRequired => 411,
        }
    }
}

/// Parses the request at the start of `buf`, received from `peer`.
pub fn parse(buf: &[u8], peer: SocketAddr) -> Result<Option<Parsed>, ParseError> {
    // Scanning past the limit is useless: a head that does not end within it
    // is refused anyway.
    let window = buf.get(..HEAD_BYTES_MAX).unwrap_or(buf);
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut head = httparse::Request::new(&mut slots);
    let head_len = match head.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= HEAD_BYTES_MAX => {
            return Err(ParseError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(e) => return Err(ParseError::Malformed(malformed_reason(e))),
    };
    debug_assert!(head_len <= window.len());
    let method = head.method.ok_or(ParseError::Malformed("method"))?;
    let target = head.path.ok_or(ParseError::Malformed("target"))?;
    let minor_version = head.version.ok_or(ParseError::Malformed("version"))?;
    // Origin form only: absolute form is for proxies, `*` for OPTIONS.
    if !target.starts_with('/') {
        return Err(ParseError::Malformed("request target"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (h.name.to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(ParseError::LengthRequired);
    }
    let body_len = content_length(&headers)?;
    if body_len > BODY_BYTES_MAX {
        return Err(ParseError::BodyTooLarge);
    }
    let end = head_len + body_len;
    let Some(body) = buf.get(head_len..end) else {
        return Ok(None);
    };
    let keep_alive = keep_alive(minor_version, &headers);
    Ok(Some(Parsed {
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body: body.to_vec(),
            peer,
        },
        consumed: end,
        keep_alive,
    }))
}

fn malformed_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "method or token",
        httparse::Error::Version => "version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// The body length: 0 without the header; every `Content-Length` must agree,
/// since a disagreement is how requests are smuggled past proxies.
fn content_length(headers: &[(String, String)]) -> Result<usize, ParseError> {
    let mut length = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        let this = parse_length(value)?;
        if length.is_some_and(|l| l != this) {
            return Err(ParseError::Malformed("conflicting Content-Length"));
        }
        length = Some(this);
    }
    Ok(length.unwrap_or(0))
}

/// Digits only (no sign, no spaces, no list); a number beyond `usize` is a
/// body too large rather than a malformed one.
fn parse_length(value: &str) -> Result<usize, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Malformed("Content-Length"));
    }
    value.parse().map_err(|_| ParseError::BodyTooLarge)
}

fn keep_alive(minor_version: u8, headers: &[(String, String)]) -> bool {
    let has_token = |token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if minor_version >= 1 {
        !has_token("close")
    } else {
        has_token("keep-alive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 168, 1, 20], 40000))
    }

    fn complete(buf: &[u8]) -> Parsed {
        match parse(buf, peer()) {
            Ok(Some(p)) => p,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    const POST: &[u8] = b"POST /xiaozhi/ota/?a=1&b=2 HTTP/1.1\r\n\
        Host: example\r\n\
        Device-Id: AA:bb:cc:dd:ee:ff\r\n\
        Content-Type: application/json\r\n\
        Content-Length: 13\r\n\
        \r\n\
        {\"version\":2}";

    #[test]
    fn fields_are_split_and_names_lower_cased() {
        let p = complete(POST);
        assert_eq!(p.consumed, POST.len());
        assert!(p.keep_alive);
        let r = p.request;
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/xiaozhi/ota/");
        assert_eq!(r.query, "a=1&b=2");
        assert_eq!(r.header("device-id"), Some("AA:bb:cc:dd:ee:ff"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), None);
        assert_eq!(r.body, b"{\"version\":2}");
        assert_eq!(r.peer, peer());
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_last_byte() {
        for cut in 0..POST.len() {
            let prefix = POST.get(..cut).unwrap();
            assert_eq!(parse(prefix, peer()), Ok(None), "cut at {cut}");
        }
        assert_eq!(complete(POST).consumed, POST.len());
    }

    #[test]
    fn every_split_point_of_a_bodiless_request() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..get.len() {
            assert_eq!(parse(get.get(..cut).unwrap(), peer()), Ok(None));
        }
        let p = complete(get);
        assert_eq!(p.consumed, get.len());
        assert!(p.request.body.is_empty());
        assert_eq!(p.request.query, "");
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let mut stream = POST.to_vec();
        stream.extend_from_slice(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
        stream.extend_from_slice(b"GET /partial HT");
        let first = complete(&stream);
        assert_eq!(first.request.path, "/xiaozhi/ota/");
        let rest = stream.get(first.consumed..).unwrap();
        let second = complete(rest);
        assert_eq!(second.request.path, "/metrics");
        assert!(!second.keep_alive);
        let rest = rest.get(second.consumed..).unwrap();
        assert_eq!(parse(rest, peer()), Ok(None));
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let cases: [(&[u8], bool); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false),
            (
                b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (bytes, expected) in cases {
            assert_eq!(complete(bytes).keep_alive, expected, "{bytes:?}");
        }
    }

    #[test]
    fn malformed_input_is_refused_with_400() {
        let cases: [&[u8]; 9] = [
            b"\x00\x01\x02\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET http://host/ HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ];
        for bytes in cases {
            match parse(bytes, peer()) {
                Err(e) => assert_eq!(e.status(), 400, "{bytes:?}: {e}"),
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn repeated_equal_content_length_is_accepted() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(complete(bytes).request.body, b"ab");
    }

    #[test]
    fn chunked_bodies_need_a_length() {
        let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
        assert_eq!(parse(bytes, peer()), Err(ParseError::LengthRequired));
        assert_eq!(ParseError::LengthRequired.status(), 411);
    }

    #[test]
    fn large_bodies_are_refused_before_they_arrive() {
        let at_limit = format!("POST / HTTP/1.1\r\nContent-Length: {BODY_BYTES_MAX}\r\n\r\n");
        assert_eq!(parse(at_limit.as_bytes(), peer()), Ok(None));
        let over = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        assert_eq!(
            parse(over.as_bytes(), peer()),
            Err(ParseError::BodyTooLarge)
        );
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(parse(huge, peer()), Err(ParseError::BodyTooLarge));
        assert_eq!(ParseError::BodyTooLarge.status(), 413);
    }

    #[test]
    fn huge_heads_are_refused() {
        // Never terminated: refused once the limit is reached.
        let mut endless = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        endless.resize(HEAD_BYTES_MAX - 1, b'a');
        assert_eq!(parse(&endless, peer()), Ok(None));
        endless.push(b'a');
        assert_eq!(parse(&endless, peer()), Err(ParseError::HeadTooLarge));
        // Terminated, but past the limit, arriving at once.
        let mut whole = endless.clone();
        whole.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&whole, peer()), Err(ParseError::HeadTooLarge));
        // Too many lines.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_MAX {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many, peer()), Err(ParseError::HeadTooLarge));
        assert_eq!(ParseError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_accepted() {
        let mut head = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        head.resize(HEAD_BYTES_MAX - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), HEAD_BYTES_MAX);
        assert_eq!(complete(&head).consumed, HEAD_BYTES_MAX);
    }

    #[test]
    fn non_utf8_header_values_do_not_fail() {
        let bytes = b"GET / HTTP/1.1\r\nX: caf\xc3\xa9 \xff\r\n\r\n";
        let p = complete(bytes);
        assert!(p.request.header("x").is_some_and(|v| v.starts_with("caf")));
    }

    /// Arbitrary bytes and mutations of a valid request: never a panic, and
    /// `consumed` always within the input.
    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut bytes = POST.to_vec();
            let edits = next() % 8;
            for _ in 0..edits {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 3 {
                    0 => bytes.truncate(at),
                    1 => bytes.insert(at, next() as u8),
                    _ => {
                        if let Some(b) = bytes.get_mut(at) {
                            *b = next() as u8;
                        }
                    }
                }
            }
            if let Ok(Some(p)) = parse(&bytes, peer()) {
                assert!(p.consumed <= bytes.len());
            }
            let noise: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            if let Ok(Some(p)) = parse(&noise, peer()) {
                assert!(p.consumed <= noise.len());
            }
        }
    }
}
