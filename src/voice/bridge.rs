//! The backend WebSocket of one conversation (shell): connects with the
//! gateway's headers, sends the hello, then carries text and audio frames
//! both ways until either side ends. Every decision about what a frame
//! means is the gateway machine's; this task only moves frames.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use glommio::channels::local_channel::LocalReceiver;
use glommio::net::TcpStream;

use crate::shard::Shard;
use crate::voice::service::VoiceService;

/// Time to connect and complete the WebSocket handshake.
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

/// A backend URL with its address resolved once, at start-up: a DNS lookup
/// on a shard thread would stall every connection of the shard.
#[derive(Debug, Clone)]
pub struct Backend {
    pub url: String,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("invalid backend URL {0:?}")]
    Url(String),
    #[error("cannot resolve backend {url:?}: {source}")]
    Resolve { url: String, source: std::io::Error },
}

impl Backend {
    pub fn resolve(url: &str) -> Result<Backend, BackendError> {
        let request = url
            .into_client_request()
            .map_err(|_| BackendError::Url(url.to_string()))?;
        let uri = request.uri();
        let host = uri
            .host()
            .ok_or_else(|| BackendError::Url(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|source| BackendError::Resolve {
                url: url.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| BackendError::Url(url.to_string()))?;
        Ok(Backend {
            url: url.to_string(),
            addr,
        })
    }
}

/// Runs the conversation's WebSocket until it ends, then tells the gateway.
pub(crate) async fn run(
    service: Rc<VoiceService>,
    shard: Rc<Shard>,
    conv: u32,
    backend: Backend,
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
            tracing::warn!(conv, backend = %backend.url, error = %e, "chat backend unreachable");
        }
    }
    service.backend_closed(&shard, conv);
}

async fn connect(
    backend: &Backend,
    headers: Vec<(&'static str, String)>,
) -> Result<async_tungstenite::WebSocketStream<TcpStream>, String> {
    let mut request = backend
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    let mut config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    config.max_message_size = Some(MAX_MESSAGE);
    config.max_frame_size = Some(MAX_MESSAGE);
    let addr = backend.addr;
    glommio::timer::timeout(CONNECT_TIMEOUT, async move {
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            glommio::GlommioError::<()>::IoError(std::io::Error::other(e.to_string()))
        })?;
        let _ = stream.set_nodelay(true);
        async_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e.to_string())))
    })
    .await
    .map_err(|e| e.to_string())
}
