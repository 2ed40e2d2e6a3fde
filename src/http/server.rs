//! The HTTP/1.1 shell: accepts connections on a glommio listener, one task
//! each, reads requests with [`request::parse`] and writes what the
//! [`Handler`] answers.
//!
//! # Bounds
//! 1. A request must arrive whole within [`REQUEST_TIMEOUT`] of the moment
//!    the connection starts waiting for it; an idle keep-alive connection is
//!    closed after the same time.
//! 2. A response must be taken by the peer within [`WRITE_TIMEOUT`].
//! 3. At most [`CONNECTIONS_MAX`] connections are open per `serve` call;
//!    beyond that new ones are closed at once.
//! 4. The buffer of a connection never holds more than one request (head
//!    and body limits in `request`) plus one read chunk.
//!
//! The handler's own time is not bounded here: handlers that wait on other
//! parts of the server bound it themselves.

use std::cell::Cell;
use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::request::{self, ParseError, Parsed};
use super::response::Response;

/// Time for one whole request to arrive (and for an idle connection to send
/// its next one).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the peer to take one response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per `serve` call. The clients are devices asking for
/// their provisioning now and then, a manager and a metrics scraper; this is
/// far above their need and bounds memory at about 80 KiB each.
pub const CONNECTIONS_MAX: usize = 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;
/// After a final response, how long and how much of the peer's leftover
/// input is read and thrown away before the socket is closed (see
/// `close_gracefully`).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// The future of one response. Not `Send`: everything runs on the shard's
/// own thread.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response>>>;

/// Answers requests. Called once per request, in order, per connection.
pub trait Handler {
    fn handle(&self, request: request::Request) -> ResponseFuture;
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Rc<dyn Handler>) {
    let open = Rc::new(Cell::new(0_usize));
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if open.get() >= CONNECTIONS_MAX {
                    tracing::debug!("http connection refused: too many open");
                    drop(stream);
                    continue;
                }
                let slot = OpenSlot::take(open.clone());
                let handler = handler.clone();
                glommio::spawn_local(async move {
                    let _slot = slot;
                    connection(stream, handler).await;
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One counted open connection; gives its count back when dropped, however
/// the connection's task ends.
struct OpenSlot(Rc<Cell<usize>>);

impl OpenSlot {
    fn take(open: Rc<Cell<usize>>) -> OpenSlot {
        open.set(open.get() + 1);
        OpenSlot(open)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        debug_assert!(self.0.get() > 0);
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What waiting for a request gave.
enum Next {
    Request(Box<Parsed>),
    Refused(ParseError),
    /// The peer closed, or the socket failed.
    Gone,
}

async fn connection(mut stream: TcpStream, handler: Rc<dyn Handler>) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    // On the heap: these live as long as the connection's task.
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0_u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let next = glommio::timer::timeout(REQUEST_TIMEOUT, async {
            Ok(read_request(&mut stream, &mut buf, &mut chunk, peer).await)
        })
        .await;
        let parsed = match next {
            Ok(Next::Request(parsed)) => parsed,
            Ok(Next::Gone) => return,
            Ok(Next::Refused(e)) => {
                tracing::debug!(%peer, error = %e, "http request refused");
                let response = Response::error(e.status(), &e.to_string());
                finish(stream, &response, &mut out).await;
                return;
            }
            Err(_) if buf.is_empty() => return,
            Err(_) => {
                let response = Response::error(408, "request timeout");
                finish(stream, &response, &mut out).await;
                return;
            }
        };
        let Parsed {
            request,
            consumed,
            keep_alive,
        } = *parsed;
        debug_assert!(consumed <= buf.len());
        buf.drain(..consumed.min(buf.len()));
        let head_only = request.method == "HEAD";
        let response = handler.handle(request).await;
        out.clear();
        response.encode(keep_alive, head_only, &mut out);
        if !write(&mut stream, &out).await {
            return;
        }
        if !keep_alive {
            close_gracefully(stream).await;
            return;
        }
    }
}

/// Reads until `buf` starts with a whole request, or the peer goes.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    peer: SocketAddr,
) -> Next {
    loop {
        match request::parse(buf, peer) {
            Ok(Some(parsed)) => return Next::Request(Box::new(parsed)),
            Ok(None) => {}
            Err(e) => return Next::Refused(e),
        }
        match stream.read(chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            _ => return Next::Gone,
        }
    }
}

/// Writes `bytes` under [`WRITE_TIMEOUT`]; false if the peer did not take them.
async fn write(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    let written = glommio::timer::timeout(WRITE_TIMEOUT, async {
        Ok(stream.write_all(bytes).await.is_ok())
    })
    .await;
    matches!(written, Ok(true))
}

/// Sends an error response and closes the connection: after a refused
/// request, where the next one would start is unknown.
async fn finish(mut stream: TcpStream, response: &Response, out: &mut Vec<u8>) {
    out.clear();
    response.encode(false, false, out);
    if write(&mut stream, out).await {
        close_gracefully(stream).await;
    }
}

/// Closing a socket that still has unread input makes the kernel send a
/// reset, and a reset can destroy the response before the peer reads it
/// (e.g. a 413 sent while the peer is still sending its body). So: stop
/// sending, then read and drop the peer's leftovers for a bounded time.
async fn close_gracefully(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).await.is_err() {
        return;
    }
    let _ = glommio::timer::timeout(LINGER, async {
        let mut sink = vec![0_u8; READ_CHUNK];
        let mut drained = 0_usize;
        while drained < LINGER_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    //! End to end: `serve` with the real routes on a glommio executor of its
    //! own thread, and a blocking std socket as the client.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream as StdTcpStream;
    use std::sync::mpsc;

    use super::*;
    use crate::http::response::CONTENT_TYPE_TEXT;
    use crate::http::router::{Route, Router};

    /// Bound on every blocking read of the client, so a broken server fails
    /// the test instead of hanging it.
    const CLIENT_WAIT: Duration = Duration::from_secs(10);

    /// `/echo` answers with the body it got, `/slow` after a real await
    /// point, `/private` refuses.
    struct TestRoutes;

    impl Handler for TestRoutes {
        fn handle(&self, request: request::Request) -> ResponseFuture {
            match request.path.as_str() {
                "/echo" => {
                    let body = String::from_utf8_lossy(&request.body).into_owned();
                    let value = serde_json::json!({ "success": true, "body": body });
                    Box::pin(std::future::ready(Response::json(200, &value)))
                }
                "/slow" => Box::pin(async {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    Response::new(200, CONTENT_TYPE_TEXT, b"shardmq_http_test 1\n".to_vec())
                }),
                _ => Box::pin(std::future::ready(Response::error(401, "unauthorized"))),
            }
        }
    }

    /// A server on 127.0.0.1:0; stops when dropped.
    struct TestServer {
        addr: SocketAddr,
        stop: Option<mpsc::Sender<()>>,
        thread: Option<glommio::ExecutorJoinHandle<()>>,
    }

    impl TestServer {
        fn start() -> TestServer {
            let (addr_tx, addr_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let thread = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("http-test")
                .spawn(move || async move {
                    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                    addr_tx
                        .send(listener.local_addr().expect("addr"))
                        .expect("send");
                    let mut router = Router::default();
                    let routes: Rc<dyn Handler> = Rc::new(TestRoutes);
                    for prefix in ["/echo", "/slow", "/private"] {
                        router.add(Route::new(prefix, routes.clone()));
                    }
                    let stopped = async {
                        while let Err(mpsc::TryRecvError::Empty) = stop_rx.try_recv() {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    futures_lite::future::or(serve(listener, Rc::new(router)), stopped).await;
                })
                .expect("executor");
            let addr = addr_rx.recv_timeout(CLIENT_WAIT).expect("server address");
            TestServer {
                addr,
                stop: Some(stop_tx),
                thread: Some(thread),
            }
        }

        fn connect(&self) -> BufReader<StdTcpStream> {
            let stream = StdTcpStream::connect(self.addr).expect("connect");
            stream.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
            BufReader::new(stream)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            drop(self.stop.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("json body")
        }
    }

    fn send(client: &mut BufReader<StdTcpStream>, bytes: &[u8]) {
        client.get_mut().write_all(bytes).expect("write");
    }

    fn read_reply(client: &mut BufReader<StdTcpStream>) -> Reply {
        let mut line = String::new();
        client.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            client.read_line(&mut line).expect("header line");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').expect("header");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .expect("content-length");
        let mut body = vec![0; length];
        client.read_exact(&mut body).expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    fn assert_closed(client: &mut BufReader<StdTcpStream>) {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("read to end");
        assert!(rest.is_empty(), "unexpected bytes after the last response");
    }

    #[test]
    fn two_requests_on_one_connection_then_close() {
        let server = TestServer::start();
        let mut client = server.connect();
        send(
            &mut client,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        );
        let echo = read_reply(&mut client);
        assert_eq!(echo.status, 200);
        assert_eq!(echo.header("connection"), Some("keep-alive"));
        assert_eq!(echo.json()["body"], "hello");

        send(&mut client, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
        let slow = read_reply(&mut client);
        assert_eq!(slow.status, 200);
        assert_eq!(slow.body, b"shardmq_http_test 1\n");
        assert_eq!(slow.header("content-type"), Some(CONTENT_TYPE_TEXT));

        send(
            &mut client,
            b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        let last = read_reply(&mut client);
        assert_eq!(last.status, 404);
        assert_eq!(last.header("connection"), Some("close"));
        assert_closed(&mut client);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let server = TestServer::start();
        let mut client = server.connect();
        let mut both = b"POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        both.extend_from_slice(b"POST /private HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
        send(&mut client, &both);
        assert_eq!(read_reply(&mut client).json()["success"], true);
        assert_eq!(read_reply(&mut client).status, 401);
    }

    #[test]
    fn bad_requests_are_answered_then_closed() {
        let cases: [(&[u8], u16); 4] = [
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
                400,
            ),
            (
                b"POST /echo HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
                413,
            ),
            (
                b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                411,
            ),
            (b"GET / HTTP/1.1\r\nX: y\r\nBad Header\r\n\r\n", 400),
        ];
        let server = TestServer::start();
        for (bytes, status) in cases {
            let mut client = server.connect();
            send(&mut client, bytes);
            let reply = read_reply(&mut client);
            assert_eq!(reply.status, status, "{bytes:?}");
            assert_eq!(reply.header("connection"), Some("close"));
            assert_eq!(reply.json()["success"], false);
            assert_closed(&mut client);
        }
    }

    #[test]
    fn a_huge_head_is_refused_while_it_is_still_arriving() {
        let server = TestServer::start();
        let mut client = server.connect();
        let mut head = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        head.resize(request::HEAD_BYTES_MAX + 100, b'a');
        send(&mut client, &head);
        let reply = read_reply(&mut client);
        assert_eq!(reply.status, 431);
        assert_closed(&mut client);
    }

    #[test]
    fn head_requests_get_no_body() {
        let server = TestServer::start();
        let mut client = server.connect();
        send(&mut client, b"HEAD /slow HTTP/1.1\r\n\r\n");
        let mut head = String::new();
        loop {
            let mut line = String::new();
            client.read_line(&mut line).expect("line");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 20\r\n"), "{head}");
        // The connection is still usable, so no body bytes were sent.
        send(&mut client, b"POST /echo HTTP/1.1\r\n\r\n");
        assert_eq!(read_reply(&mut client).status, 200);
    }
}
