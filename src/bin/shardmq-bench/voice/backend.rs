//! The chat backend the gateway under test connects to (protocol reference
//! §7): a WebSocket server that answers the gateway's hello and echoes
//! every audio frame, so the echo is the "TTS" direction.
//!
//! It counts the upstream frames per WebSocket by the sequence numbers in
//! their payload (`frame`) and sends each binary frame back exactly as it
//! came: the gateway reads only the timestamp at 8 and the length at 12.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use glommio::net::{TcpListener, TcpStream};
use serde_json::json;
use socket2::{Domain, Socket, Type};

use super::frame;
use super::tally::BackendTally;
use super::thread::Local;
use crate::clock;
use crate::stats::{Problem, SeqTracker};

/// Connections waiting to be accepted: a ramp brings the gateway's
/// WebSockets in bursts (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;

/// Time for the gateway to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffer of each WebSocket. tungstenite zeroes the whole buffer
/// before every read (`FrameCodec::read_in`) and keeps it per
/// connection: its default of 128 KiB costs a 128 KiB memset per audio
/// frame and 128 KiB of memory per device. A frame is about 150 bytes.
const WS_READ_BUFFER: usize = 4096;

/// Pause after a failed accept (out of descriptors, typically) so the
/// loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Binds `count` listening sockets on `addr`, one per thread, sharing it
/// through `SO_REUSEPORT`; port 0 picks one free port for all. Returns
/// them and the address bound.
pub fn listen(addr: SocketAddr, count: usize) -> Result<(Vec<OwnedFd>, SocketAddr), String> {
    let mut bound = addr;
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = bind(bound).map_err(|e| format!("cannot listen on {bound}: {e}"))?;
        if let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket()) {
            bound = local;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// What the backend saw on one WebSocket.
#[derive(Debug, Default)]
pub struct Link {
    /// The device of the first frame; frames of another device on the
    /// same WebSocket are foreign.
    device: Option<u32>,
    tracker: SeqTracker,
}

impl Link {
    /// The counts, if any frame came.
    pub fn tally(&mut self) -> Option<BackendTally> {
        Some(BackendTally {
            device: self.device?,
            up: std::mem::take(&mut self.tracker),
        })
    }
}

/// Accepts the gateway's WebSockets until the thread ends.
pub async fn serve(local: Rc<Local>, listener: TcpListener) {
    let sessions = Cell::new(0u64);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let n = sessions.get();
                sessions.set(n + 1);
                let id = format!("bench-{}-{n}", local.index);
                glommio::spawn_local(connection(local.clone(), stream, id)).detach();
            }
            Err(_) => {
                local.problem(Problem::BackendError, false);
                glommio::timer::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// One conversation's WebSocket: hello, then echo.
async fn connection(local: Rc<Local>, stream: TcpStream, session_id: String) {
    let _ = stream.set_nodelay(true);
    let handshake = glommio::timer::timeout(HANDSHAKE_TIMEOUT, async {
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = WS_READ_BUFFER;
        async_tungstenite::accept_async_with_config(stream, Some(config))
            .await
            .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e.to_string())))
    })
    .await;
    let Ok(mut ws) = handshake else {
        local.problem(Problem::BackendError, false);
        return;
    };
    let link = Rc::new(RefCell::new(Link::default()));
    let mut registered = false;
    while let Some(message) = ws.next().await {
        let reply = match message {
            Ok(Message::Binary(audio)) => {
                if !registered {
                    local.links.borrow_mut().push(link.clone());
                    registered = true;
                }
                record(&local, &mut link.borrow_mut(), &audio);
                Message::Binary(audio)
            }
            Ok(Message::Text(text)) if is_hello(text.as_str()) => {
                Message::text(hello_reply(&session_id, local.settings.frame_ms))
            }
            // Listen, abort, MCP...: nothing a benchmark answers.
            Ok(Message::Text(_)) => continue,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(_) => {
                if !local.stopping() {
                    local.problem(Problem::BackendError, false);
                }
                break;
            }
        };
        if ws.send(reply).await.is_err() {
            if !local.stopping() {
                local.problem(Problem::BackendError, false);
            }
            break;
        }
    }
}

fn is_hello(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v["type"] == "hello")
}

/// The backend hello, as the xiaozhi server sends it to the gateway.
pub fn hello_reply(session_id: &str, frame_ms: u32) -> String {
    json!({
        "type": "hello",
        "transport": "websocket",
        "session_id": session_id,
        "audio_params": {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": frame_ms,
        },
    })
    .to_string()
}

/// Counts one upstream frame.
fn record(local: &Local, link: &mut Link, ws_frame: &[u8]) {
    let header = frame::ws_payload(ws_frame)
        .and_then(frame::read)
        .filter(|h| h.device < local.settings.devices);
    let Some(header) = header else {
        local.problem(Problem::ForeignPayload, false);
        return;
    };
    if *link.device.get_or_insert(header.device) != header.device {
        local.problem(Problem::ForeignPayload, false);
        return;
    }
    link.tracker.record(u64::from(header.seq));
    if local.timeline.get().in_window(clock::now_ns()) {
        local.stats.borrow_mut().up_received_window += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_reply_is_what_the_gateway_reads() {
        let reply = hello_reply("abc", 60);
        let msg = shardmq::voice::control::Control::parse(reply.as_bytes()).unwrap();
        assert_eq!(msg.kind, "hello");
        assert_eq!(msg.session_id.as_deref(), Some("abc"));
        assert_eq!(msg.get("audio_params").unwrap()["frame_duration"], 60);
        assert!(is_hello(&reply));
        assert!(!is_hello(r#"{"type":"listen"}"#));
        assert!(!is_hello("not json"));
    }

    #[test]
    fn listeners_share_one_port() {
        let (fds, addr) = listen(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in fds {
            let socket = Socket::from(fd);
            let local = socket.local_addr().unwrap().as_socket().unwrap();
            assert_eq!(local, addr);
        }
    }
}
