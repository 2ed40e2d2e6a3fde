//! HTTP/1.1 responses, sans-IO: a plain value that handlers return and the
//! server shell encodes into bytes.

use serde::Serialize;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One response. `Content-Length` and `Connection` are written by
/// [`Response::encode`]; `headers` carries anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers, set by the server's own code (never copied from a
    /// request), e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// `value` as JSON. Serialising a tree of plain data cannot fail; if it
    /// ever did, the answer is a 500 rather than a panic.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status, CONTENT_TYPE_JSON, body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a response");
                Response::new(500, CONTENT_TYPE_JSON, br#"{"success":false}"#.to_vec())
            }
        }
    }

    /// `{"success":false,"error":<message>}`, the management API's error shape.
    /// A 405 naming the methods the resource takes.
    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response::error(405, "method not allowed").with_header("Allow", allow)
    }

    pub fn error(status: u16, message: &str) -> Response {
        #[derive(Serialize)]
        struct Failure<'a> {
            success: bool,
            error: &'a str,
        }
        let failure = Failure {
            success: false,
            error: message,
        };
        Response::json(status, &failure)
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, CONTENT_TYPE_TEXT, body.into().into_bytes())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the response to `out`. `head_only` (a HEAD request) keeps the
    /// headers, `Content-Length` included, and leaves the body out.
    pub fn encode(&self, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        debug_assert!((100..1000).contains(&self.status));
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            // A line break would let a value start a header of its own.
            debug_assert!(!value.contains(['\r', '\n']));
            let value: String = value
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n'))
                .collect();
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Reason phrases of the statuses this server sends; clients ignore them.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_and_body() {
        let r = Response::json(200, &serde_json::json!({"success": true}))
            .with_header("Allow", "GET, POST");
        let mut out = Vec::new();
        r.encode(true, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\
             Connection: keep-alive\r\nAllow: GET, POST\r\n\r\n{\"success\":true}"
        );
    }

    #[test]
    fn head_only_keeps_the_length_and_drops_the_body() {
        let mut out = Vec::new();
        Response::text(404, "gone").encode(false, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn error_shape() {
        let r = Response::error(401, "unauthorized");
        assert_eq!(r.body, br#"{"success":false,"error":"unauthorized"}"#);
    }
}
