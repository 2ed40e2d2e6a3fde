//! PROXY protocol headers on the MQTT and TLS listeners: the address they
//! give is the one the broker sees (its CONNECT log line shows it), and a
//! connection without a valid header is closed and counted.

mod transport_support;

use std::io::Write;
use std::net::TcpStream;

use transport_support::*;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header for TCP over IPv4 from `source` (with a TLV, which
/// the broker skips).
fn v2_header(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut body = source.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn proxy_server() -> Server {
    Server::start(1, "[mqtt]\nproxy_protocol = true\n", 0)
}

/// The peer address the broker logged for `client_id`'s CONNECT.
fn logged_peer(server: &Server, client_id: &str) -> String {
    let needle = format!("client_id={client_id} ");
    server.wait_log(&needle);
    let output = server.output();
    let line = output.lines().find(|l| l.contains(&needle)).unwrap();
    let peer = line.split("peer=").nth(1).expect("peer field");
    peer.split(' ').next().unwrap().to_string()
}

fn connect_after(server: &Server, header: &[u8], client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // Header and CONNECT in one write: the bytes after the header must
    // reach the CONNECT reader.
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&connect_packet(client_id));
    s.write_all(&bytes).unwrap();
    let (header, body) = read_packet(&mut s).expect("CONNACK");
    assert_eq!([header, 2, body[0], body[1]], CONNACK_OK);
    s
}

#[test]
fn v1_header_gives_the_client_address() {
    let server = proxy_server();
    let _c = connect_after(
        &server,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4321 1883\r\n",
        "via-v1",
    );
    assert_eq!(logged_peer(&server, "via-v1"), "Some(203.0.113.7:4321)");
    let _c = connect_after(
        &server,
        b"PROXY TCP6 2001:db8::7 ::1 4322 1883\r\n",
        "via-v1-6",
    );
    assert_eq!(logged_peer(&server, "via-v1-6"), "Some([2001:db8::7]:4322)");
    // UNKNOWN: the socket's own address.
    let _c = connect_after(&server, b"PROXY UNKNOWN\r\n", "via-unknown");
    assert!(logged_peer(&server, "via-unknown").starts_with("Some(127.0.0.1:"));
    assert_eq!(server.metric("shardmq_proxy_headers_total"), 3);
}

#[test]
fn v2_header_gives_the_client_address() {
    let server = proxy_server();
    let _c = connect_after(&server, &v2_header([198, 51, 100, 9], 5555), "via-v2");
    assert_eq!(logged_peer(&server, "via-v2"), "Some(198.51.100.9:5555)");
    // LOCAL (a health check): the socket's own address.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let _c = connect_after(&server, &local, "via-local");
    assert!(logged_peer(&server, "via-local").starts_with("Some(127.0.0.1:"));
}

#[test]
fn missing_or_bad_header_is_closed_and_counted() {
    let server = proxy_server();
    // A CONNECT with no header, a malformed v1 line, a v2 of version 1.
    let mut bad_v2 = v2_header([198, 51, 100, 9], 5555);
    bad_v2[12] = 0x11;
    let cases: [&[u8]; 3] = [
        &connect_packet("no-header"),
        b"PROXY TCP4 203.0.113.7 4321 1883\r\n",
        &bad_v2,
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut s = TcpStream::connect(("127.0.0.1", server.mqtt)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut all = bytes.to_vec();
        all.extend_from_slice(&connect_packet("x"));
        s.write_all(&all).unwrap();
        assert!(closed_within_wait(&mut s), "case {i} left open");
        server.wait_metric("shardmq_proxy_header_rejections_total", i as u64 + 1);
    }
    assert!(!server.output().contains("client_id=no-header"));
    // Others are served meanwhile.
    let _ok = connect_after(&server, &v2_header([192, 0, 2, 1], 1), "after-bad");
}

#[test]
fn header_comes_before_tls_on_the_tls_listener() {
    let pki = Pki::new("proxy-tls");
    let port = free_port();
    let server = Server::start(1, &pki.tls_section(port, "proxy_protocol = true"), port);
    // rustls over a socket that first carried the header.
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (&tcp)
        .write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 6000 8883\r\n")
        .unwrap();
    let mut s = tls_over(&pki, tcp);
    s.write_all(&connect_packet("tls-proxied")).unwrap();
    let (header, body) = read_packet(&mut s).unwrap();
    assert_eq!([header, 2, body[0], body[1]], CONNACK_OK);
    assert_eq!(logged_peer(&server, "tls-proxied"), "Some(192.0.2.44:6000)");
    // Straight TLS with no header is refused.
    assert!(tls_connect(&pki, port, None).is_err());
    server.wait_metric("shardmq_proxy_header_rejections_total", 1);
}

#[test]
fn the_proxied_address_moves_with_a_hand_off() {
    let pki = Pki::new("proxy-handoff");
    let port = free_port();
    let toml = format!(
        "[mqtt]\nproxy_protocol = true\n{}",
        pki.tls_section(port, "proxy_protocol = true")
    );
    let server = Server::start(2, &toml, port);
    let mut keep = Vec::new();
    for i in 0..16u8 {
        // Plain MQTT and TLS, each with its own proxied address.
        let id = format!("moved-{i}");
        let header = v2_header([192, 0, 2, 100 + i], 7000 + u16::from(i));
        if i % 2 == 0 {
            keep.push(Box::new(connect_after(&server, &header, &id)) as Box<dyn std::any::Any>);
        } else {
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            (&tcp).write_all(&header).unwrap();
            let mut s = tls_over(&pki, tcp);
            s.write_all(&connect_packet(&id)).unwrap();
            let (h, body) = read_packet(&mut s).unwrap();
            assert_eq!([h, 2, body[0], body[1]], CONNACK_OK);
            keep.push(Box::new(s));
        }
        // Where the connection runs (its owner shard, after any hand-off),
        // the address is still the proxied one.
        let needle = format!(
            "client_id={id} peer=Some(192.0.2.{}:{})",
            100 + i,
            7000 + u16::from(i)
        );
        let deadline = std::time::Instant::now() + WAIT;
        while !server
            .output()
            .lines()
            .any(|l| l.contains("connection runs") && l.contains(&needle))
        {
            assert!(std::time::Instant::now() < deadline, "no {needle:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // With 16 ids on 2 shards, some were accepted on the shard that does
    // not own them (all on their owner: one chance in 65,536).
    let moved = server.handed_off((0..16).map(|i| format!("moved-{i}")));
    assert!(moved > 0, "no hand-off among 16 connections");
}
