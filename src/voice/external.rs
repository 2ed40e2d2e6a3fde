//! External broker mode (seed 004 §7): the gateway is an MQTT client of
//! another broker (EMQX, mosquitto, …) instead of the devices' broker.
//! Devices' messages arrive on `/p2p/device_public/<mac_>` (the broker maps
//! `device-server` there), replies go to `/p2p/device_sub/<mac_>`; UDP
//! audio stays direct to the gateway.
//!
//! The client runs on shard 0 and so do the conversations: their conn ids
//! steer there. With `share_group`, several gateway instances subscribe
//! through `$share/<group>/` and the broker spreads devices over them (use
//! a sticky strategy, e.g. EMQX `hash_topic`, so a device's messages keep
//! reaching the instance that holds its conversation).

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::AsyncRead;
use glommio::net::TcpStream;

use crate::mqtt::codec::{self, Connect, ConnectReturnCode, Packet, Subscribe};
use crate::mqtt::QoS;
use crate::shard::Shard;
use crate::voice::gateway::DeviceKey;
use crate::voice::service::VoiceService;

const INBOUND_PREFIX: &str = "/p2p/device_public/";
const OUTBOUND_PREFIX: &str = "/p2p/device_sub/";
const KEEPALIVE_S: u16 = 60;
const RECONNECT_DELAY: Duration = Duration::from_secs(2);
const MAX_PACKET: usize = 1 << 20;

/// The devices seen through the external broker, and what waits to be
/// published to them.
#[derive(Default)]
pub(crate) struct Link {
    by_mac: HashMap<String, DeviceKey>,
    macs: HashMap<DeviceKey, String>,
    next_key: u64,
    outbox: BytesMut,
    waker: Option<Waker>,
}

impl Link {
    /// The key of a device by its `mac_` topic level; new devices are
    /// reported as `true`.
    pub(crate) fn device(&mut self, mac: &str) -> (DeviceKey, bool) {
        if let Some(key) = self.by_mac.get(mac) {
            return (*key, false);
        }
        self.next_key += 1;
        let key = DeviceKey(self.next_key);
        self.by_mac.insert(mac.to_string(), key);
        self.macs.insert(key, mac.to_string());
        (key, true)
    }

    pub(crate) fn publish(&mut self, device: DeviceKey, payload: &[u8]) {
        let Some(mac) = self.macs.get(&device) else {
            return;
        };
        let topic = format!("{OUTBOUND_PREFIX}{mac}");
        codec::encode_publish(
            &mut self.outbox,
            &topic,
            payload,
            QoS::AtMostOnce,
            false,
            false,
            0,
        );
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

pub(crate) fn start(service: Rc<VoiceService>, shard: Rc<Shard>) {
    glommio::spawn_local(async move {
        loop {
            match session(&service, &shard).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "external broker connection ended"),
            }
            glommio::timer::sleep(RECONNECT_DELAY).await;
        }
    })
    .detach();
}

/// The topic filter the gateway subscribes to.
///
/// ```text
/// ""      -> /p2p/device_public/#
/// "voice" -> $share/voice//p2p/device_public/#
/// ```
pub(crate) fn inbound_filter(share_group: &str) -> String {
    if share_group.is_empty() {
        format!("{INBOUND_PREFIX}#")
    } else {
        // The share name ends at the next `/`: the filter that follows is
        // `/p2p/...`, which starts with a `/` of its own.
        format!("$share/{share_group}/{INBOUND_PREFIX}#")
    }
}

/// The `mac_` level of an inbound topic.
pub(crate) fn device_of_topic(topic: &str) -> Option<&str> {
    let mac = topic.strip_prefix(INBOUND_PREFIX)?;
    (!mac.is_empty() && !mac.contains('/')).then_some(mac)
}

/// One connection to the broker, until it fails.
async fn session(service: &Rc<VoiceService>, shard: &Rc<Shard>) -> Result<(), String> {
    let cfg = &service.config.external_broker;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(cfg.address.as_str())
        .map_err(|e| format!("cannot resolve {}: {e}", cfg.address))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", cfg.address))?;
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive_s: KEEPALIVE_S,
        client_id: cfg.client_id.clone(),
        username: (!cfg.username.is_empty()).then(|| cfg.username.clone()),
        password: (!cfg.password.is_empty()).then(|| Bytes::from(cfg.password.clone())),
        will: None,
    }))
    .encode(&mut out);
    Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![(inbound_filter(&cfg.share_group), QoS::AtMostOnce)],
    })
    .encode(&mut out);
    let mut rbuf = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_sent = Instant::now();
    let mut connected = false;
    loop {
        // Whatever the gateway published since the last turn goes out first.
        service.with_link(|link| {
            out.extend_from_slice(&link.outbox);
            link.outbox.clear();
        });
        while !out.is_empty() {
            let n = futures_lite::AsyncWriteExt::write(&mut stream, &out)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("broker closed the connection".to_string());
            }
            out.advance(n);
            last_sent = Instant::now();
        }
        let ping_in =
            Duration::from_secs(u64::from(KEEPALIVE_S) / 2).saturating_sub(last_sent.elapsed());
        let read = glommio::timer::timeout(ping_in, async {
            let n = poll_fn(|cx| {
                if service.with_link(|l| !l.outbox.is_empty()) == Some(true) {
                    return Poll::Ready(Ok(None));
                }
                service.with_link(|l| l.waker = Some(cx.waker().clone()));
                Pin::new(&mut stream)
                    .poll_read(cx, &mut chunk)
                    .map(|r| r.map(Some))
            })
            .await?;
            Ok(n)
        })
        .await;
        match read {
            Ok(Some(0)) => return Err("broker closed the connection".to_string()),
            Ok(Some(n)) => rbuf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Ok(None) => continue,
            Err(glommio::GlommioError::TimedOut(_)) => {
                Packet::PingReq.encode(&mut out);
                continue;
            }
            Err(e) => return Err(e.to_string()),
        }
        loop {
            match codec::decode(&mut rbuf, MAX_PACKET) {
                Ok(Some(Packet::ConnAck { code, .. })) => {
                    if code != ConnectReturnCode::Accepted {
                        return Err(format!("broker refused the connection: {code:?}"));
                    }
                    if !connected {
                        connected = true;
                        tracing::info!(broker = %cfg.address, "attached to external broker");
                    }
                }
                Ok(Some(Packet::Publish(p))) => {
                    if let Some(mac) = device_of_topic(p.topic.as_str()) {
                        service.external_message(shard, mac, &p.payload);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(format!("malformed packet from the broker: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters_keep_the_leading_slash_of_the_topic() {
        assert_eq!(inbound_filter(""), "/p2p/device_public/#");
        assert_eq!(inbound_filter("voice"), "$share/voice//p2p/device_public/#");
    }

    #[test]
    fn device_topics_name_one_level() {
        assert_eq!(device_of_topic("/p2p/device_public/aa_bb"), Some("aa_bb"));
        assert_eq!(device_of_topic("/p2p/device_public/"), None);
        assert_eq!(device_of_topic("/p2p/device_public/a/b"), None);
        assert_eq!(device_of_topic("p2p/device_public/a"), None);
    }
}
