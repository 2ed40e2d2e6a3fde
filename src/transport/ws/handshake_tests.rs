//! The upgrade request: RFC 6455 §1.3's example key, MQTT's subprotocols,
//! and every refusal with its status.

use super::*;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

fn policy() -> Policy {
    Policy {
        path: "/mqtt".to_string(),
        allowed_origins: Vec::new(),
    }
}

/// An upgrade request with `extra` header lines (each ending in CRLF).
fn request(path: &str, protocols: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn refusal(bytes: &[u8], policy: &Policy) -> Refusal {
    respond(bytes, PEER, policy).expect_err("refused")
}

#[test]
fn accept_key_of_the_rfc_example() {
    // [RFC 6455 §1.3]
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn mqtt_upgrade_is_accepted_and_leaves_the_frames_after_it() {
    let mut bytes = request("/mqtt", "mqtt", "");
    let len = bytes.len();
    bytes.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
    let accepted = respond(&bytes, PEER, &policy()).unwrap().unwrap();
    assert_eq!(accepted.consumed, len);
    assert_eq!(accepted.protocol, "mqtt");
    let text = String::from_utf8(accepted.response).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
}

#[test]
fn the_answer_is_a_subprotocol_the_client_offered() {
    // [MQTT 3.1.1 §6]: "mqtt"; older clients offer "mqttv3.1" or "mqttv3.1.1".
    for (offered, picked) in [
        ("mqtt", "mqtt"),
        ("mqttv3.1", "mqttv3.1"),
        ("mqttv3.1.1", "mqttv3.1.1"),
        ("chat, mqttv3.1", "mqttv3.1"),
        ("mqttv3.1, mqtt", "mqtt"),
    ] {
        let accepted = respond(&request("/mqtt", offered, ""), PEER, &policy())
            .unwrap()
            .unwrap();
        assert_eq!(accepted.protocol, picked, "offered {offered}");
    }
    // Offered over two header lines.
    let bytes = request("/mqtt", "chat", "Sec-WebSocket-Protocol: mqtt\r\n");
    assert_eq!(
        respond(&bytes, PEER, &policy()).unwrap().unwrap().protocol,
        "mqtt"
    );
}

#[test]
fn without_an_mqtt_subprotocol_the_upgrade_is_refused() {
    for offered in ["chat", "MQTT", ""] {
        let r = refusal(&request("/mqtt", offered, ""), &policy());
        assert_eq!(r, Refusal::Subprotocol, "offered {offered:?}");
        assert_eq!(r.status(), 400);
    }
    let no_header = String::from_utf8(request("/mqtt", "x", ""))
        .unwrap()
        .replace("Sec-WebSocket-Protocol: x\r\n", "");
    assert_eq!(
        refusal(no_header.as_bytes(), &policy()),
        Refusal::Subprotocol
    );
}

#[test]
fn another_path_is_404() {
    let r = refusal(&request("/other", "mqtt", ""), &policy());
    assert_eq!(r.status(), 404);
    assert!(String::from_utf8(r.response())
        .unwrap()
        .starts_with("HTTP/1.1 404 Not Found\r\n"));
    let with_query = refusal(&request("/mqtt/x", "mqtt", ""), &policy());
    assert_eq!(with_query.status(), 404);
}

#[test]
fn a_plain_http_request_is_426() {
    let bytes = b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = refusal(bytes, &policy());
    assert_eq!(r, Refusal::NotUpgrade);
    assert_eq!(r.status(), 426);
    assert!(String::from_utf8(r.response())
        .unwrap()
        .contains("Upgrade: websocket\r\n"));
}

#[test]
fn another_version_is_426_naming_13() {
    let bytes = String::from_utf8(request("/mqtt", "mqtt", ""))
        .unwrap()
        .replace("Version: 13", "Version: 8");
    let r = refusal(bytes.as_bytes(), &policy());
    assert_eq!(r, Refusal::Version(Some("8".to_string())));
    assert_eq!(r.status(), 426);
    assert!(String::from_utf8(r.response())
        .unwrap()
        .contains("Sec-WebSocket-Version: 13\r\n"));
}

#[test]
fn bad_keys_methods_and_requests_are_refused() {
    let short_key = String::from_utf8(request("/mqtt", "mqtt", ""))
        .unwrap()
        .replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    assert_eq!(refusal(short_key.as_bytes(), &policy()), Refusal::Key);
    let post = String::from_utf8(request("/mqtt", "mqtt", ""))
        .unwrap()
        .replacen("GET", "POST", 1);
    assert_eq!(refusal(post.as_bytes(), &policy()).status(), 405);
    assert_eq!(
        refusal(b"\x10\x0c\x00\x04MQTT\r\n\r\n", &policy()).status(),
        400
    );
}

#[test]
fn origins_are_checked_only_when_listed() {
    let listed = Policy {
        allowed_origins: vec!["https://app.example.com".to_string()],
        ..policy()
    };
    let from_app = request("/mqtt", "mqtt", "Origin: https://APP.example.com\r\n");
    assert!(respond(&from_app, PEER, &listed).unwrap().is_some());
    let from_evil = request("/mqtt", "mqtt", "Origin: https://evil.example\r\n");
    let r = refusal(&from_evil, &listed);
    assert_eq!(r.status(), 403);
    assert_eq!(r.label(), "origin");
    assert_eq!(
        refusal(&request("/mqtt", "mqtt", ""), &listed).status(),
        403
    );
    assert!(respond(&from_evil, PEER, &policy()).unwrap().is_some());
}

#[test]
fn every_prefix_of_a_request_asks_for_more() {
    let bytes = request("/mqtt", "mqtt", "");
    for end in 0..bytes.len() {
        assert_eq!(
            respond(&bytes[..end], PEER, &policy()),
            Ok(None),
            "prefix {end}"
        );
    }
    assert!(respond(&bytes, PEER, &policy()).unwrap().is_some());
}
