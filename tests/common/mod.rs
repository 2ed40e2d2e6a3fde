//! Black-box test harness: starts a broker process on a free loopback port and
//! talks to it over TCP, either through rumqttc or through a raw socket with a
//! small hand-written MQTT 3.1.1 encoder/decoder. Nothing here uses the
//! crate's own code, so the tests only see what a network client would see.
//!
//! Set `SHARDMQ_TEST_PEER=mosquitto` to run the same tests against a local
//! `mosquitto` binary, which is useful as a reference for the expected
//! behaviour; tests that depend on shardmq-only behaviour skip themselves
//! through [`shardmq_only`]. `SHARDMQ_TEST_LOG=debug` raises shardmq's log
//! level; the broker's output (stdout and stderr) is printed when a test
//! fails.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Request,
    SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single wait in the tests. Generous on purpose: it only
/// keeps a broken broker from hanging the suite, it never measures speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs each listed `async fn name(shards: usize)` once with one shard and once
/// with four, as `name::shards_1` and `name::shards_4`.
macro_rules! shard_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn shards_1() {
                super::$name(1).await
            }

            #[tokio::test]
            async fn shards_4() {
                super::$name(4).await
            }
        }
    )+};
}

// ---------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------

/// True when the suite runs against mosquitto instead of shardmq.
pub fn is_mosquitto() -> bool {
    std::env::var("SHARDMQ_TEST_PEER").is_ok_and(|v| v == "mosquitto")
}

/// For tests of shardmq-specific behaviour: returns true (and says so) when the
/// test should be skipped because the peer is not shardmq.
pub fn shardmq_only() -> bool {
    if is_mosquitto() {
        eprintln!("skipped: shardmq-only behaviour");
    }
    is_mosquitto()
}

/// A running broker, killed on drop. Its output is kept and printed if the
/// test that owns it panics.
pub struct Broker {
    child: Child,
    port: u16,
    config: Option<PathBuf>,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

static CONFIG_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Broker {
    pub fn start(shards: usize) -> Broker {
        Broker::start_with(shards, "")
    }

    /// Starts a broker with extra shardmq TOML (e.g. `"[mqtt]\nsys_interval_s = 1"`).
    pub fn start_with(shards: usize, extra_toml: &str) -> Broker {
        // The free port is found by binding and releasing it, so another
        // process can grab it in between; a broker that exits right away is
        // retried on a fresh port.
        let mut last_err = String::new();
        for _ in 0..3 {
            match Broker::try_start(shards, extra_toml) {
                Ok(broker) => return broker,
                Err(e) => last_err = e,
            }
        }
        panic!("broker did not start: {last_err}");
    }

    fn try_start(shards: usize, extra_toml: &str) -> Result<Broker, String> {
        let port = free_port();
        let (mut cmd, config) = if is_mosquitto() {
            let path = write_config(&mosquitto_config(port, extra_toml), "conf");
            let mut cmd = Command::new("mosquitto");
            cmd.arg("-c").arg(&path);
            (cmd, Some(path))
        } else {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardmq"));
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--shards")
                .arg(shards.to_string())
                .arg("--log")
                .arg(std::env::var("SHARDMQ_TEST_LOG").unwrap_or_else(|_| "warn".into()));
            let config = (!extra_toml.trim().is_empty()).then(|| {
                let path = write_config(extra_toml, "toml");
                cmd.arg("--config").arg(&path);
                path
            });
            (cmd, config)
        };
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), output.clone()),
            collect(child.stderr.take().unwrap(), output.clone()),
        ];
        let mut broker = Broker {
            child,
            port,
            config,
            output,
            readers,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// Waits (bounded) until the broker answers an MQTT CONNECT. Accepting
    /// TCP alone is not enough: a socket can accept before the broker really
    /// serves (e.g. a short-lived bind check), and a test connecting then
    /// would be reset.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.handshake_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.finish_output();
                return Err(format!(
                    "exited with {status} before serving; output:\n{}",
                    self.output()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no CONNACK on {} after {WAIT:?}; output:\n{}",
                    self.addr(),
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One CONNECT / CONNACK / DISCONNECT exchange with a blocking socket.
    fn handshake_ok(&self) -> bool {
        let step = Duration::from_millis(500);
        let Ok(mut s) = StdTcpStream::connect_timeout(&self.addr(), step) else {
            return false;
        };
        let mut ack = [0u8; 4];
        s.set_read_timeout(Some(step)).is_ok()
            && s.write_all(&Connect::new("harness-ready-probe").encode())
                .is_ok()
            && s.read_exact(&mut ack).is_ok()
            // Any CONNACK: a broker that refuses anonymous clients serves too.
            && ack[..2] == [0x20, 2]
            && s.write_all(&DISCONNECT).is_ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker process's id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has ended (after a signal, say).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process's exit code once it has ended; `None` while it runs or
    /// when a signal ended it.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the broker wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// After the process ended: waits for the last of its output.
    fn finish_output(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.finish_output();
            eprintln!("--- broker output ---\n{}--- end ---", self.output());
        }
        if let Some(path) = &self.config {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Appends everything read from `pipe` to `sink`, on its own thread.
fn collect(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            sink.lock().unwrap().push_str(&text);
        }
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

fn write_config(text: &str, ext: &str) -> PathBuf {
    let name = format!(
        "shardmq-test-{}-{}.{ext}",
        std::process::id(),
        CONFIG_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, text).expect("write broker config");
    path
}

/// Translates the `[mqtt]` keys the tests use into mosquitto.conf lines; keys
/// with no mosquitto equivalent are left out (tests relying on them call
/// [`shardmq_only`]).
fn mosquitto_config(port: u16, toml: &str) -> String {
    let mut conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type error\nlog_type warning\n"
    );
    let mut sys_interval = "1".to_string();
    for line in toml.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        let key = match key.trim() {
            "max_packet_size" => "max_packet_size",
            "max_inflight" => "max_inflight_messages",
            "max_queued_messages" => "max_queued_messages",
            "queue_qos0_offline" => "queue_qos0_messages",
            "sys_interval_s" => {
                sys_interval = value;
                continue;
            }
            _ => continue,
        };
        conf.push_str(&format!("{key} {value}\n"));
    }
    conf.push_str(&format!("sys_interval {sys_interval}\n"));
    conf
}

// ---------------------------------------------------------------------------
// rumqttc client
// ---------------------------------------------------------------------------

/// Client options with the settings every test wants: a large packet limit on
/// the client side (the default 10 KiB would get in the way) and a keepalive
/// long enough that pings never matter.
pub fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port());
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// Builder-style shortcuts for the few options tests vary.
pub trait OptionsExt {
    fn persistent(self) -> Self;
    fn will(self, topic: &str, payload: &str, qos: QoS, retain: bool) -> Self;
    fn keepalive_secs(self, secs: u64) -> Self;
}

impl OptionsExt for MqttOptions {
    fn persistent(mut self) -> Self {
        self.set_clean_session(false);
        self
    }

    fn will(mut self, topic: &str, payload: &str, qos: QoS, retain: bool) -> Self {
        self.set_last_will(LastWill::new(
            topic,
            payload.as_bytes().to_vec(),
            qos,
            retain,
        ));
        self
    }

    fn keepalive_secs(mut self, secs: u64) -> Self {
        self.set_keep_alive(Duration::from_secs(secs));
        self
    }
}

pub use rumqttc::Publish;

/// A rumqttc connection whose event loop is polled inline by the helpers:
/// whatever arrives while waiting for one thing (a PUBLISH, an ack) is kept
/// for later. Nothing runs in the background, so a client that is not being
/// awaited simply lets the broker's packets wait in the socket.
pub struct Client {
    pub client: AsyncClient,
    pub session_present: bool,
    id: String,
    eventloop: EventLoop,
    publishes: VecDeque<Publish>,
    acks: VecDeque<Packet>,
    /// Outgoing PUBLISH packets flushed to the socket so far.
    sent: usize,
    closed: bool,
}

impl Client {
    /// Connects with a clean session and waits for CONNACK 0.
    pub async fn connect(broker: &Broker, id: &str) -> Client {
        Client::connect_with(options(broker, id)).await
    }

    pub async fn connect_with(opts: MqttOptions) -> Client {
        let id = opts.client_id();
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let mut c = Client {
            client,
            session_present: false,
            id,
            eventloop,
            publishes: VecDeque::new(),
            acks: VecDeque::new(),
            sent: 0,
            closed: false,
        };
        match c.next_ack().await {
            Packet::ConnAck(ack) => c.session_present = ack.session_present,
            other => panic!("{}: expected CONNACK, got {other:?}", c.id),
        }
        c
    }

    /// Polls the event loop once; false once the connection has ended.
    async fn poll(&mut self) -> bool {
        if self.closed {
            return false;
        }
        match self.eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => self.publishes.push_back(p),
            Ok(Event::Incoming(
                p @ (Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PubAck(_)
                | Packet::PubComp(_)),
            )) => self.acks.push_back(p),
            Ok(Event::Outgoing(Outgoing::Publish(_))) => self.sent += 1,
            // Never poll after an error: rumqttc would reconnect.
            Err(_) => self.closed = true,
            Ok(_) => {}
        }
        !self.closed
    }

    /// Polls until `done` holds; panics if the connection ends first.
    async fn poll_until(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
        within(async {
            while !done(self) {
                if !self.poll().await {
                    panic!("{}: connection closed while waiting for {what}", self.id);
                }
            }
        })
        .await
    }

    async fn next_ack(&mut self) -> Packet {
        self.poll_until("an ack", |c| !c.acks.is_empty()).await;
        self.acks.pop_front().unwrap()
    }

    /// Subscribes and waits for the SUBACK; returns the granted QoS.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> QoS {
        self.client.subscribe(filter, qos).await.unwrap();
        match self.next_ack().await {
            Packet::SubAck(ack) => match ack.return_codes[..] {
                [SubscribeReasonCode::Success(granted)] => granted,
                ref codes => panic!("subscribe {filter}: SUBACK {codes:?}"),
            },
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        match self.next_ack().await {
            Packet::UnsubAck(_) => {}
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes and waits until it is on the wire (QoS 0) or the broker
    /// completed the handshake (PUBACK for QoS 1, PUBCOMP for QoS 2).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        let sent = self.sent;
        self.publish_nowait(topic, qos, retain, payload).await;
        if qos == QoS::AtMostOnce {
            self.poll_until("a QoS 0 send", |c| c.sent > sent).await;
        } else {
            self.wait_acks(1).await;
        }
    }

    /// Hands a publish to rumqttc without waiting; pair QoS 1/2 ones with
    /// [`Client::wait_acks`].
    pub async fn publish_nowait(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        let mut payload = payload.to_vec();
        loop {
            match self.client.try_publish(topic, qos, retain, payload) {
                Ok(()) => return,
                // Request queue full: let the event loop drain it.
                Err(rumqttc::ClientError::TryRequest(Request::Publish(p))) => {
                    payload = p.payload.to_vec();
                    if !within(self.poll()).await {
                        panic!("{}: connection closed while publishing", self.id);
                    }
                }
                Err(e) => panic!("{}: publish {topic}: {e:?}", self.id),
            }
        }
    }

    /// Waits for `n` completed QoS 1/2 publishes (PUBACK or PUBCOMP).
    pub async fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            match self.next_ack().await {
                Packet::PubAck(_) | Packet::PubComp(_) => {}
                other => panic!("expected PUBACK/PUBCOMP, got {other:?}"),
            }
        }
    }

    /// The next incoming PUBLISH.
    pub async fn recv(&mut self) -> Publish {
        self.poll_until("a PUBLISH", |c| !c.publishes.is_empty())
            .await;
        self.publishes.pop_front().unwrap()
    }

    /// Receives until a PUBLISH on `sentinel` arrives and returns everything
    /// received before it. Tests publish a sentinel after the messages under
    /// test so that "nothing else arrived" is checked without sleeping.
    pub async fn recv_until(&mut self, sentinel: &str) -> Vec<Publish> {
        let mut before = Vec::new();
        loop {
            let p = self.recv().await;
            if p.topic == sentinel {
                return before;
            }
            before.push(p);
        }
    }

    /// Waits until the broker closed the connection.
    pub async fn closed(&mut self) {
        within(async { while self.poll().await {} }).await
    }

    /// Sends DISCONNECT and waits for the broker to close the connection, so
    /// that everything sent before (PUBACKs included) has been processed when
    /// the next step of the test starts.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        self.closed().await;
    }

    /// Closes the socket without DISCONNECT (an ungraceful client loss).
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// Bounds a wait by [`WAIT`]; a timeout is a test failure.
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out waiting for the broker")
}

// ---------------------------------------------------------------------------
// Raw TCP client with a hand-written MQTT 3.1.1 encoder
// ---------------------------------------------------------------------------

/// A packet as read off the wire: first byte of the fixed header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub header: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// Decodes a PUBLISH; panics on any other packet type.
    pub fn publish(&self) -> RawPublish {
        assert_eq!(self.kind(), 3, "expected PUBLISH, got {self:?}");
        let qos = (self.header >> 1) & 3;
        let len = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let topic = self.body[2..2 + len].to_vec();
        let mut rest = &self.body[2 + len..];
        let mut pkid = 0;
        if qos > 0 {
            pkid = u16::from_be_bytes([rest[0], rest[1]]);
            rest = &rest[2..];
        }
        RawPublish {
            topic,
            qos,
            retain: self.header & 1 == 1,
            dup: self.header & 8 == 8,
            pkid,
            payload: rest.to_vec(),
        }
    }
}

/// A decoded incoming PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublish {
    pub topic: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub payload: Vec<u8>,
}

pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Opens a TCP connection and sends nothing.
    pub async fn open(broker: &Broker) -> Raw {
        let stream = within(TcpStream::connect(broker.addr())).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens a connection and completes a clean-session CONNECT.
    pub async fn connect(broker: &Broker, id: &str) -> Raw {
        Raw::connect_with(broker, &Connect::new(id)).await
    }

    /// Opens a connection, sends `connect` and expects CONNACK 0.
    pub async fn connect_with(broker: &Broker, connect: &Connect<'_>) -> Raw {
        let mut raw = Raw::open(broker).await;
        raw.send(&connect.encode()).await;
        let ack = raw.read_packet().await;
        assert_eq!(ack.header, 0x20, "expected CONNACK, got {ack:?}");
        assert_eq!(ack.body[1], 0, "CONNECT refused: {ack:?}");
        raw
    }

    /// Writes bytes. Write errors are ignored: a broker that closed the
    /// connection is detected by the read that follows.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads exactly `expected.len()` bytes and compares them.
    pub async fn expect(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len()).await;
        assert_eq!(got, expected, "unexpected bytes from broker");
    }

    /// Expects the broker to close the connection without sending anything.
    pub async fn expect_closed(&mut self) {
        let extra = self.read_to_close().await;
        assert!(
            extra.is_empty(),
            "expected close, got bytes first: {extra:02x?}"
        );
    }

    /// Reads until the broker closes the connection; returns what came before.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        loop {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return data,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn fill(&mut self, n: usize) {
        let mut chunk = [0u8; 4096];
        while self.buf.len() < n {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => panic!(
                    "connection closed by broker (wanted {n} bytes, have {:02x?})",
                    self.buf
                ),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        self.fill(n).await;
        self.buf.drain(..n).collect()
    }

    /// Reads one complete packet.
    pub async fn read_packet(&mut self) -> RawPacket {
        let header = self.read_exact(1).await[0];
        let mut len = 0usize;
        for shift in (0..28).step_by(7) {
            let b = self.read_exact(1).await[0];
            len |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = self.read_exact(len).await;
        RawPacket { header, body }
    }

    /// Reads the next packet, which must be a PUBLISH, without acking it.
    pub async fn recv_publish(&mut self) -> RawPublish {
        self.read_packet().await.publish()
    }

    /// Reads the next PUBLISH, acknowledging it (PUBACK, or PUBREC with the
    /// PUBREL answered by PUBCOMP when it comes) like a well-behaved client.
    pub async fn recv_publish_acked(&mut self) -> RawPublish {
        loop {
            let packet = self.read_packet().await;
            match packet.kind() {
                3 => {
                    let p = packet.publish();
                    match p.qos {
                        1 => self.send(&puback(p.pkid)).await,
                        2 => self.send(&pubrec(p.pkid)).await,
                        _ => {}
                    }
                    return p;
                }
                6 => {
                    let pkid = u16::from_be_bytes([packet.body[0], packet.body[1]]);
                    self.send(&pubcomp(pkid)).await;
                }
                _ => panic!("expected PUBLISH, got {packet:?}"),
            }
        }
    }

    /// Like [`Client::recv_until`]: acked PUBLISHes received before one on
    /// `sentinel`.
    pub async fn recv_until(&mut self, sentinel: &str) -> Vec<RawPublish> {
        let mut before = Vec::new();
        loop {
            let p = self.recv_publish_acked().await;
            if p.topic == sentinel.as_bytes() {
                return before;
            }
            before.push(p);
        }
    }

    /// SUBSCRIBE and expect the SUBACK with the given return codes.
    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)], codes: &[u8]) {
        self.send(&subscribe(pkid, filters)).await;
        self.expect(&suback(pkid, codes)).await;
    }

    /// PINGREQ / PINGRESP round trip: proves the connection is alive and that
    /// everything sent before it has been processed.
    pub async fn ping(&mut self) {
        self.send(&PINGREQ).await;
        self.expect(&PINGRESP).await;
    }
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// A CONNECT packet under construction; defaults are a valid 3.1.1 CONNECT
/// with clean session and a 60 s keepalive.
#[derive(Clone)]
pub struct Connect<'a> {
    pub protocol: &'a str,
    pub level: u8,
    pub client_id: &'a str,
    pub clean: bool,
    pub keepalive: u16,
    /// (topic, payload, qos, retain)
    pub will: Option<(&'a str, &'a [u8], u8, bool)>,
    /// Sets the reserved bit 0 of the connect flags (a protocol violation).
    pub reserved_flag: bool,
}

impl<'a> Connect<'a> {
    pub fn new(client_id: &'a str) -> Connect<'a> {
        Connect {
            protocol: "MQTT",
            level: 4,
            client_id,
            clean: true,
            keepalive: 60,
            will: None,
            reserved_flag: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some((_, _, qos, retain)) = self.will {
            flags |= 0x04 | (qos << 3) | if retain { 0x20 } else { 0 };
        }
        if self.reserved_flag {
            flags |= 0x01;
        }
        let mut body = Vec::new();
        put_str(&mut body, self.protocol.as_bytes());
        body.push(self.level);
        body.push(flags);
        body.extend_from_slice(&self.keepalive.to_be_bytes());
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, payload, _, _)) = self.will {
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, payload);
        }
        frame(0x10, &body)
    }
}

/// Fixed header (with remaining-length varint) + body.
pub fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

pub fn connack(session_present: bool, code: u8) -> [u8; 4] {
    [0x20, 0x02, session_present as u8, code]
}

/// A PUBLISH with a UTF-8 topic. `pkid` is only written for QoS > 0.
pub fn publish(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    publish_raw(qos << 1, topic.as_bytes(), pkid, payload)
}

/// A PUBLISH with explicit fixed-header flags (DUP 0x08, QoS 0x06, RETAIN
/// 0x01) and an arbitrary topic byte string.
pub fn publish_raw(flags: u8, topic: &[u8], pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if flags & 0x06 != 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(0x30 | flags, &body)
}

pub fn subscribe(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        put_str(&mut body, filter.as_bytes());
        body.push(*qos);
    }
    frame(0x82, &body)
}

pub fn unsubscribe(pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for filter in filters {
        put_str(&mut body, filter.as_bytes());
    }
    frame(0xa2, &body)
}

pub fn suback(pkid: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(codes);
    frame(0x90, &body)
}

fn ack(header: u8, pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [header, 0x02, hi, lo]
}

pub fn puback(pkid: u16) -> [u8; 4] {
    ack(0x40, pkid)
}

pub fn pubrec(pkid: u16) -> [u8; 4] {
    ack(0x50, pkid)
}

pub fn pubrel(pkid: u16) -> [u8; 4] {
    ack(0x62, pkid)
}

pub fn pubcomp(pkid: u16) -> [u8; 4] {
    ack(0x70, pkid)
}

pub fn unsuback(pkid: u16) -> [u8; 4] {
    ack(0xb0, pkid)
}

/// A payload as text, for readable assertions.
pub fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
