//! Connection limits end to end: sockets in total, connections per source
//! address and the CONNECT rate per address, each refused the way the
//! README says and counted on `/metrics`; a flood from one address while
//! another address is served normally.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

shard_tests!(a_connect_flood_from_one_address_spares_another);

/// What became of one CONNECT.
#[derive(Debug)]
enum Outcome {
    /// CONNACK with this code; the stream stays open.
    Connack(u8, TcpStream),
    /// Closed before any byte.
    Closed,
}

/// Opens a connection from `source` (an address of the loopback network)
/// and sends a CONNECT.
async fn try_connect(broker: &Broker, source: [u8; 4], id: &str) -> Outcome {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("any 127.x address is local on Linux");
    let mut stream = within(socket.connect(broker.addr())).await.unwrap();
    let _ = stream.write_all(&Connect::new(id).encode()).await;
    let mut ack = [0u8; 4];
    match within(stream.read_exact(&mut ack)).await {
        Ok(_) => {
            assert_eq!(ack[..2], [0x20, 2], "a CONNACK");
            Outcome::Connack(ack[3], stream)
        }
        Err(_) => Outcome::Closed,
    }
}

/// A CONNECT that must be accepted, tried again while the harness's
/// readiness probe may still hold its place.
async fn connect_ok(broker: &Broker, source: [u8; 4], id: &str) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect(broker, source, id).await {
            Outcome::Connack(0, stream) => return stream,
            other => assert!(Instant::now() < deadline, "still refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(http: SocketAddr) -> String {
    let mut stream = within(TcpStream::connect(http)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    within(stream.read_to_string(&mut body)).await.unwrap();
    body
}

fn http_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn sockets_beyond_max_connections_are_closed_at_accept() {
    if shardmq_only() {
        return;
    }
    let http = http_port();
    let broker = Broker::start_with(
        2,
        &format!("[mqtt]\nmax_connections = 2\n[http]\nlisten = \"{http}\"\n"),
    );
    let _a = connect_ok(&broker, [127, 0, 0, 1], "a").await;
    let _b = connect_ok(&broker, [127, 0, 0, 1], "b").await;
    let third = try_connect(&broker, [127, 0, 0, 2], "c").await;
    assert!(matches!(third, Outcome::Closed), "{third:?}");
    let body = metrics(http).await;
    assert!(
        body.contains("shardmq_limit_connections_refused_total{scope=\"total\"} "),
        "{body}"
    );
    assert!(
        !body.contains("shardmq_limit_connections_refused_total{scope=\"total\"} 0\n"),
        "{body}"
    );
    // A closed connection frees its place.
    drop(_a);
    let _c = connect_ok(&broker, [127, 0, 0, 2], "c").await;
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_get_connack_3() {
    if shardmq_only() {
        return;
    }
    // One shard: the count is per shard (README).
    let broker = Broker::start_with(1, "[mqtt]\nmax_connections_per_address = 1\n");
    let _a = connect_ok(&broker, [127, 0, 0, 1], "a").await;
    match try_connect(&broker, [127, 0, 0, 1], "b").await {
        Outcome::Connack(code, _) => assert_eq!(code, 3, "server unavailable"),
        Outcome::Closed => panic!("expected CONNACK 3"),
    }
    let _c = connect_ok(&broker, [127, 0, 0, 3], "c").await;
}

async fn a_connect_flood_from_one_address_spares_another(shards: usize) {
    if shardmq_only() {
        return;
    }
    let http = http_port();
    let broker = Broker::start_with(
        shards,
        &format!(
            "[mqtt]\nconnect_rate_per_address = 1\nconnect_burst_per_address = 2\n\
             [http]\nlisten = \"{http}\"\n"
        ),
    );
    let mut accepted = 0;
    let mut refused = 0;
    let mut open = Vec::new();
    for i in 0..40 {
        match try_connect(&broker, [127, 0, 0, 4], &format!("flood-{i}")).await {
            Outcome::Connack(0, stream) => {
                accepted += 1;
                open.push(stream);
            }
            Outcome::Connack(code, _) => panic!("CONNACK {code}"),
            Outcome::Closed => refused += 1,
        }
    }
    assert!(refused > 0, "the flood was refused ({accepted} accepted)");
    // Another address is served as usual, during the flood's block.
    let _other = connect_ok(&broker, [127, 0, 0, 5], "other").await;
    let body = metrics(http).await;
    assert!(
        body.contains(&format!(
            "shardmq_limit_connect_rate_refused_total {refused}\n"
        )),
        "{body}"
    );
}
