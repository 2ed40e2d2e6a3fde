//! The services seam on running shards: two services side by side, each
//! with its own message type on the mesh and its own connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;

use super::*;
use crate::mqtt::codec::{Connect, Packet, Publish};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

const WAIT: Duration = Duration::from_secs(10);

/// What the services saw, reported to the test thread.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Numbers(ShardId, u32),
    Words(ShardId, String),
    Published(&'static str, Vec<u8>),
}

/// Admits client ids starting with `prefix` as its service connections;
/// shard 0 greets its twin on shard 1 at start.
struct Probe<M> {
    name: &'static str,
    prefix: &'static str,
    shard: usize,
    greeting: M,
    seen: mpsc::Sender<Seen>,
    wrap: fn(ShardId, M) -> Seen,
}

impl<M: Clone + Send + 'static> Service for Probe<M> {
    type Msg = M;

    fn start(self: Rc<Self>, shard: Rc<Shard>) {
        if self.shard == 0 {
            shard.send_service::<Self>(ShardId(1), self.greeting.clone());
        }
    }

    fn admit(
        &self,
        shard: &Shard,
        connect: Box<Connect>,
        _peer: Option<SocketAddr>,
    ) -> Result<(ConnId, usize), Box<Connect>> {
        if !connect.client_id.starts_with(self.prefix) {
            return Err(connect);
        }
        let conn = shard
            .broker()
            .borrow_mut()
            .connect_service(Instant::now(), *connect);
        Ok((conn, 1024))
    }

    fn on_events(&self, _shard: &Shard, events: Vec<ServiceEvent>) {
        for event in events {
            if let ServiceEvent::Published { payload, .. } = event {
                let _ = self.seen.send(Seen::Published(self.name, payload.to_vec()));
            }
        }
    }

    fn on_remote(&self, _shard: &Shard, from: ShardId, msg: M) {
        let _ = self.seen.send((self.wrap)(from, msg));
    }
}

fn start(seen: mpsc::Sender<Seen>) -> SocketAddr {
    let numbers = seen.clone();
    let words = seen;
    let services = vec![
        ServiceFactory::new(move |shard| {
            Rc::new(Probe {
                name: "numbers",
                prefix: "n-",
                shard,
                greeting: 7u32,
                seen: numbers.clone(),
                wrap: Seen::Numbers,
            })
        }),
        ServiceFactory::new(move |shard| {
            Rc::new(Probe {
                name: "words",
                prefix: "w-",
                shard,
                greeting: "hello".to_string(),
                seen: words.clone(),
                wrap: Seen::Words,
            })
        }),
    ];
    let settings = two_shards_on_loopback();
    let server = Server::start(settings, services).expect("shards start");
    server.listen.expect("listening")
}

/// Two unpinned shards with an MQTT listener on a loopback port.
pub(super) fn two_shards_on_loopback() -> Settings {
    Settings {
        shards: 2,
        pin_cores: false,
        mqtt_listen: Some("127.0.0.1:0".parse().expect("address")),
        max_packet_size: 1 << 20,
        tls_max_packet_size: 1 << 20,
        websocket_max_packet_size: 1 << 20,
        mqtt_proxy_protocol: false,
        connect_timeout: Duration::from_secs(10),
        tls: None,
        limits: crate::mqtt::session::SessionLimits {
            max_inflight: 32,
            max_queued_messages: 100,
            queue_qos0_offline: false,
            max_outbox_bytes: 1 << 20,
            max_subscriptions: 0,
            max_awaiting_pubrel: 0,
            max_queued_bytes: 0,
        },
        connection_limits: crate::shard::ConnectionLimits::default(),
        retained: crate::mqtt::retained::RetainedLimits::default(),
        max_queued_bytes_total: 0,
        max_queued_messages_total: 0,
        sys_interval: None,
        share_strategy: Default::default(),
        http_listen: None,
        websocket: None,
        auth: crate::auth::AuthConfig::default(),
        persistence: None,
        session_expiry: None,
    }
}

/// CONNECT as `client_id`, read the CONNACK, PUBLISH `payload` at QoS 0.
pub(super) fn connect_and_publish(addr: SocketAddr, client_id: &str, payload: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive_s: 60,
        client_id: client_id.to_string(),
        username: None,
        password: None,
        will: None,
    }))
    .encode(&mut out);
    stream.write_all(&out).expect("write CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    out.clear();
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::from_string("probe/t".to_string()).expect("topic"),
        pkid: 0,
        payload: bytes::Bytes::copy_from_slice(payload),
    })
    .encode(&mut out);
    stream.write_all(&out).expect("write PUBLISH");
    stream
}

#[test]
fn each_service_gets_its_own_messages_and_connections() {
    let (tx, rx) = mpsc::channel();
    let addr = start(tx);
    let mut seen: Vec<Seen> = (0..2)
        .map(|_| rx.recv_timeout(WAIT).expect("greeting"))
        .collect();
    seen.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        seen,
        [
            Seen::Numbers(ShardId(0), 7),
            Seen::Words(ShardId(0), "hello".to_string())
        ]
    );

    // Both prefixes, on whichever shard owns each id: each service sees
    // only the connections it admitted.
    let _n = connect_and_publish(addr, "n-1", b"to numbers");
    assert_eq!(
        rx.recv_timeout(WAIT).expect("event"),
        Seen::Published("numbers", b"to numbers".to_vec())
    );
    let _w = connect_and_publish(addr, "w-1", b"to words");
    assert_eq!(
        rx.recv_timeout(WAIT).expect("event"),
        Seen::Published("words", b"to words".to_vec())
    );
    // An id no service takes is the broker's: its publish is routed, not
    // handed to a service.
    let _plain = connect_and_publish(addr, "plain", b"routed");
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}
