//! The backend WebSocket of one conversation (shell): connects with the
//! gateway's headers, sends the hello, then carries text and audio frames
//! both ways until either side ends. Every decision about what a frame
//! means is the gateway machine's; this task only moves frames.
//!
//! Connecting is four steps under one deadline: the backend's addresses
//! (`backend`: looked up off the shard thread, cached briefly), TCP to the
//! first that answers, the TLS handshake for `wss://` (server verified,
//! SNI = the URL's host), the WebSocket upgrade. A failure in any of them
//! ends the conversation as a backend that did not answer, and the lookup
//! and TLS failures are counted by reason.

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use glommio::channels::local_channel::LocalReceiver;

use crate::shard::Shard;
use crate::transport::client::ClientStream;
use crate::voice::backend::{self, Backend, ResolveError};
use crate::voice::metrics::BackendTlsFailure;
use crate::voice::service::VoiceService;

/// Time to resolve, connect, and complete the TLS and WebSocket handshakes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest backend message accepted: JSON and 60 ms Opus frames are far
/// smaller; the limit keeps a broken backend from growing memory.
const MAX_MESSAGE: usize = 1 << 20;

/// The WebSocket read buffer. tungstenite's default (128 KiB) is zeroed on
/// every read and was most of a conversation's memory; backend messages are
/// a few hundred bytes.
const READ_BUFFER: usize = 4096;

/// What the gateway sends to the backend.
#[derive(Debug)]
pub enum BridgeCmd {
    Text(String),
    Binary(Bytes),
    Close,
}

/// Runs the conversation's WebSocket until it ends, then tells the gateway.
pub(crate) async fn run(
    service: Rc<VoiceService>,
    shard: Rc<Shard>,
    conv: u32,
    backend: Rc<Backend>,
    headers: Vec<(&'static str, String)>,
    hello: String,
    rx: LocalReceiver<BridgeCmd>,
) {
    match connect(&backend, headers).await {
        Ok(ws) => {
            let (mut sink, mut stream) = ws.split();
            if sink.send(Message::text(hello)).await.is_ok() {
                let writer = async {
                    while let Some(cmd) = rx.recv().await {
                        let sent = match cmd {
                            BridgeCmd::Text(t) => sink.send(Message::text(t)).await,
                            BridgeCmd::Binary(b) => sink.send(Message::Binary(b)).await,
                            BridgeCmd::Close => {
                                let _ = sink.close().await;
                                return;
                            }
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                };
                let reader = async {
                    while let Some(msg) = stream.next().await {
                        match msg {
                            Ok(Message::Text(text)) => service.backend_text(&shard, conv, &text),
                            Ok(Message::Binary(frame)) => {
                                let frame = frame
                                    .try_into_mut()
                                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                                service.backend_audio(conv, frame).await;
                            }
                            Ok(Message::Close(_)) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                };
                futures_lite::future::or(writer, reader).await;
            }
        }
        Err(e) => {
            tracing::warn!(conv, backend = %backend.url(), error = %e, "chat backend unreachable");
            service.count(|c| match &e {
                ConnectError::Resolve(_) | ConnectError::Timeout(Step::Resolving) => {
                    c.backend_resolve_failures += 1;
                }
                ConnectError::Tls(reason, _) => c.backend_tls_failures[reason.index()] += 1,
                _ => {}
            });
        }
    }
    service.backend_closed(&shard, conv);
}

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Resolve(ResolveError),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS ({reason}): {message}", reason = .0.name(), message = .1)]
    Tls(BackendTlsFailure, String),
    #[error("WebSocket: {0}")]
    WebSocket(String),
    #[error("no answer within {CONNECT_TIMEOUT:?} ({0})")]
    Timeout(Step),
}

/// Where the connect deadline passed (the TLS handshake's is a TLS failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolving,
    Connecting,
    Upgrading,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Resolving => "resolving",
            Step::Connecting => "connecting",
            Step::Upgrading => "WebSocket upgrade",
        })
    }
}

async fn connect(
    backend: &Rc<Backend>,
    headers: Vec<(&'static str, String)>,
) -> Result<WebSocketStream<ClientStream>, ConnectError> {
    let mut request = backend
        .url()
        .into_client_request()
        .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
    for (name, value) in headers {
        let value =
            HeaderValue::from_str(&value).map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let mut config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    let deadline = Instant::now() + CONNECT_TIMEOUT;

    let addrs = within(deadline, backend.addresses())
        .await
        .ok_or(ConnectError::Timeout(Step::Resolving))?
        .map_err(ConnectError::Resolve)?;
    let mut stream = Err(ConnectError::Connect(std::io::ErrorKind::NotFound.into()));
    for &addr in addrs.iter() {
        stream = match within(deadline, ClientStream::connect(addr)).await {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(ConnectError::Connect(e)),
            None => Err(ConnectError::Timeout(Step::Connecting)),
        };
        if stream.is_ok() || Instant::now() >= deadline {
            break;
        }
    }
    let stream = stream.inspect_err(|_| backend.forget_addresses())?;
    let stream = match backend.tls() {
        Some(target) => match within(deadline, stream.start_tls(target)).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(ConnectError::Tls(backend::tls_failure(&e), e.to_string())),
            None => {
                let why = "no answer before the deadline".to_string();
                return Err(ConnectError::Tls(BackendTlsFailure::Timeout, why));
            }
        },
        None => stream,
    };
    within(
        deadline,
        async_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await
    .ok_or(ConnectError::Timeout(Step::Upgrading))?
    .map(|(ws, _)| ws)
    .map_err(|e| ConnectError::WebSocket(e.to_string()))
}

/// `f`'s output, or `None` once `deadline` has passed.
async fn within<T>(deadline: Instant, f: impl Future<Output = T>) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    glommio::timer::timeout(left, async { Ok(f.await) })
        .await
        .ok()
}
