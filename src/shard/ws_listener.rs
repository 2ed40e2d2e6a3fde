//! The MQTT-over-WebSocket listener: each accepted socket gets its upgrade
//! under `websocket.handshake_timeout_s`, then goes through the same
//! CONNECT phase as a TCP one (whose deadline starts only then).

use std::rc::Rc;

use glommio::net::TcpListener;

use super::{listener, Shard};
use crate::transport::Stream;

pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(upgrade(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(shard = shard.id.0, error = %e, "WebSocket accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn upgrade(shard: Rc<Shard>, stream: glommio::net::TcpStream) {
    let Some(ws) = shard.settings.websocket.as_ref() else {
        return;
    };
    let max_frame = shard.settings.max_packet_size;
    let upgraded = glommio::timer::timeout(ws.handshake_timeout, async {
        Ok(Stream::websocket(stream, &ws.policy, max_frame).await)
    })
    .await;
    match upgraded {
        Ok(Ok(stream)) => {
            shard.ws_counters.upgraded();
            listener::handshake(shard, stream).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            shard.ws_counters.failed(&e);
        }
        Err(_) => shard.ws_counters.timed_out(),
    }
}
