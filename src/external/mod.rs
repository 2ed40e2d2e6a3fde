//! An MQTT 3.1.1 client of an external broker (EMQX, mosquitto, …), shared
//! by the services that can run as clients of another broker instead of
//! the built-in one: the voice gateway (seed 004 §7) and the command relay.
//!
//! A service owns an [`Outbox`] of encoded packets (bounded: while the
//! broker is down nothing drains it, and the service decides what to drop)
//! and implements [`Client`]; [`spawn`] runs the connection on the calling
//! shard: CONNECT with a clean session, the service's subscriptions, its
//! outbox written out as it fills, PINGREQ at half the keepalive, every
//! inbound PUBLISH handed to the service, and a new connection two seconds
//! after one ends. The broker's addresses are resolved by the service at
//! start-up: a DNS lookup on a shard would stall its connections.
//!
//! QoS 1 publishes get a packet id; their PUBACKs are read and dropped: a
//! publish lost with the connection is not sent again (the broker's own
//! QoS 1 delivery to the devices is what the services rely on).

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::AsyncRead;
use glommio::net::TcpStream;

use crate::mqtt::codec::{self, Connect, ConnectReturnCode, Packet, Subscribe};
use crate::mqtt::QoS;

const RECONNECT_DELAY: Duration = Duration::from_secs(2);
const MAX_PACKET: usize = 1 << 20;

/// How to attach to the broker.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names the service in logs.
    pub service: &'static str,
    /// The address as configured, for logs.
    pub address: String,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub keepalive_s: u16,
    pub subscriptions: Vec<(String, QoS)>,
}

/// Encoded packets waiting for the broker, bounded in bytes.
#[derive(Debug)]
pub struct Outbox {
    buf: BytesMut,
    max: usize,
    next_pkid: u16,
    /// The connection task, parked until there is something to write.
    writer: Option<Waker>,
    /// Producers waiting for room.
    waiting: Vec<Waker>,
}

impl Outbox {
    pub fn new(max: usize) -> Outbox {
        Outbox {
            buf: BytesMut::new(),
            max,
            next_pkid: 0,
            writer: None,
            waiting: Vec::new(),
        }
    }

    /// Queues a PUBLISH; `false` when it would pass the bound and was not
    /// queued (the caller counts it).
    #[must_use]
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) -> bool {
        self.publish_with(topic, payload, qos, false)
    }

    /// `publish`, with the RETAIN flag as given.
    #[must_use]
    pub fn publish_with(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> bool {
        let before = self.buf.len();
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            _ => {
                self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
                self.next_pkid
            }
        };
        codec::encode_publish(&mut self.buf, topic, payload, qos, retain, false, pkid);
        if self.buf.len() > self.max {
            self.buf.truncate(before);
            return false;
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        true
    }

    /// Ready when `bytes` more fit; registers the task to be woken when the
    /// connection drains the outbox otherwise.
    pub fn poll_room(&mut self, cx: &mut Context<'_>, bytes: usize) -> Poll<()> {
        if self.buf.is_empty() || self.buf.len() + bytes <= self.max {
            return Poll::Ready(());
        }
        self.waiting.push(cx.waker().clone());
        Poll::Pending
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What is queued, encoded.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Moves what is queued to `out`, and wakes producers waiting for room.
    fn drain_into(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.buf);
        self.buf.clear();
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }

    pub fn clear(&mut self) {
        let mut sink = BytesMut::new();
        self.drain_into(&mut sink);
    }
}

/// A service that is a client of the external broker.
pub trait Client: 'static {
    fn outbox(&self) -> &RefCell<Outbox>;
    /// A PUBLISH from the broker, on a topic of the subscriptions.
    fn message(&self, topic: &str, payload: &[u8]);
}

/// Runs the connection to the broker on this shard, for ever; see the
/// module docs.
pub fn spawn<C: Client>(client: Rc<C>, broker: Vec<SocketAddr>, options: Options) {
    glommio::spawn_local(async move {
        loop {
            if let Err(e) = session(&*client, &broker, &options).await {
                tracing::warn!(service = options.service, error = %e, "external broker connection ended");
            }
            glommio::timer::sleep(RECONNECT_DELAY).await;
        }
    })
    .detach();
}

/// A connection to the first address of the broker that accepts one.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = "no address for the broker".to_string();
    for addr in addrs {
        match TcpStream::connect(*addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// The CONNECT and SUBSCRIBE that open a session.
pub fn hello(options: &Options, out: &mut BytesMut) {
    Packet::Connect(Box::new(Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive_s: options.keepalive_s,
        client_id: options.client_id.clone(),
        username: (!options.username.is_empty()).then(|| options.username.clone()),
        password: (!options.password.is_empty()).then(|| Bytes::from(options.password.clone())),
        will: None,
    }))
    .encode(out);
    if !options.subscriptions.is_empty() {
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: options.subscriptions.clone(),
        })
        .encode(out);
    }
}

/// One connection to the broker, until it fails.
async fn session<C: Client>(
    client: &C,
    addrs: &[SocketAddr],
    options: &Options,
) -> Result<(), String> {
    let mut stream = connect(addrs).await?;
    let _ = stream.set_nodelay(true);
    let mut out = BytesMut::new();
    hello(options, &mut out);
    let mut rbuf = BytesMut::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_sent = Instant::now();
    let mut connected = false;
    loop {
        // Whatever the service queued since the last turn goes out first.
        client.outbox().borrow_mut().drain_into(&mut out);
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
        let ping_in = Duration::from_secs(u64::from(options.keepalive_s) / 2)
            .saturating_sub(last_sent.elapsed());
        let read = glommio::timer::timeout(ping_in, async {
            let n = poll_fn(|cx| {
                {
                    let mut outbox = client.outbox().borrow_mut();
                    if !outbox.is_empty() {
                        return Poll::Ready(Ok(None));
                    }
                    outbox.writer = Some(cx.waker().clone());
                }
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
                        tracing::info!(
                            service = options.service,
                            broker = %options.address,
                            "attached to external broker"
                        );
                    }
                }
                Ok(Some(Packet::Publish(p))) => {
                    if p.qos == QoS::AtLeastOnce {
                        codec::encode_puback(&mut out, p.pkid);
                    }
                    client.message(p.topic.as_str(), &p.payload);
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
    fn the_outbox_is_bounded_and_keeps_whole_packets() {
        let mut outbox = Outbox::new(4096);
        let payload = [b'x'; 1000];
        let mut queued = 0;
        let mut refused = 0;
        for _ in 0..8 {
            if outbox.publish("/a/b", &payload, QoS::AtLeastOnce) {
                queued += 1;
            } else {
                refused += 1;
            }
        }
        assert!(outbox.len() <= 4096);
        assert!(
            queued > 0 && refused > 0,
            "{queued} queued, {refused} refused"
        );
        let mut bytes = BytesMut::from(outbox.bytes());
        let mut pkids = Vec::new();
        while let Some(p) = codec::decode(&mut bytes, MAX_PACKET).unwrap() {
            let Packet::Publish(p) = p else {
                panic!("not a publish")
            };
            assert_eq!((p.topic.as_str(), p.qos), ("/a/b", QoS::AtLeastOnce));
            pkids.push(p.pkid);
        }
        assert_eq!(pkids.len(), queued);
        assert!(pkids.iter().all(|&id| id != 0), "QoS 1 needs a packet id");
        outbox.clear();
        assert!(outbox.publish("/a/b", &payload, QoS::AtMostOnce));
    }

    #[test]
    fn packet_ids_wrap_past_zero() {
        let mut outbox = Outbox::new(usize::MAX);
        outbox.next_pkid = u16::MAX;
        assert!(outbox.publish("t", b"", QoS::AtLeastOnce));
        let mut bytes = BytesMut::from(outbox.bytes());
        let Some(Packet::Publish(p)) = codec::decode(&mut bytes, MAX_PACKET).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(p.pkid, 1);
    }
}
