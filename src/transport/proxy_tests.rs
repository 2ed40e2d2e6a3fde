//! Byte vectors from the PROXY protocol spec (haproxy `doc/proxy-protocol.txt`,
//! sections 2.1 and 2.2) and what a reader meets on the wire: short reads,
//! truncations, garbage.

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Every strict prefix of a valid header asks for more bytes.
fn assert_prefixes_incomplete(bytes: &[u8], header_len: usize) {
    for n in 0..header_len {
        assert_eq!(parse(&bytes[..n]), Ok(None), "prefix of {n} bytes");
    }
}

#[test]
fn v1_tcp4_from_the_spec() {
    let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    let parsed = parse(line).unwrap().unwrap();
    assert_eq!(parsed.consumed, 47);
    assert_eq!(
        parsed.header,
        Header::Proxied {
            source: addr("192.168.0.1:56324"),
            destination: addr("192.168.0.11:443"),
        }
    );
    assert_prefixes_incomplete(line, 47);
}

#[test]
fn v1_tcp6() {
    let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8883\r\n\x10";
    let parsed = parse(line).unwrap().unwrap();
    assert_eq!(parsed.consumed, line.len() - 1);
    assert_eq!(parsed.header.source(), Some(addr("[2001:db8::1]:4000")));
}

#[test]
fn v1_unknown_keeps_the_socket_address() {
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        let parsed = parse(line).unwrap().unwrap();
        assert_eq!(parsed.header, Header::Local);
        assert_eq!(parsed.consumed, line.len());
    }
}

#[test]
fn v1_worst_case_line_fits_and_longer_is_refused() {
    // The spec's worst case: 107 bytes with CRLF.
    let worst = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(worst.len(), V1_MAX);
    assert_eq!(parse(worst).unwrap().unwrap().consumed, V1_MAX);
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(V1_MAX, b'1');
    assert_eq!(parse(&long[..V1_MAX - 1]), Ok(None));
    assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
    long.extend_from_slice(b"\r\n");
    assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
}

#[test]
fn v1_malformed_lines_are_refused() {
    for line in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 3333\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 ::1 ::1 1111 2222\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1111 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2222\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2222\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \xff\r\n",
        b"PROXY \r\n",
    ] {
        assert_eq!(
            parse(line),
            Err(ProxyError::V1Malformed),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn not_a_header_is_refused_at_the_first_wrong_byte() {
    // A plain MQTT CONNECT, a TLS ClientHello, an HTTP request.
    assert_eq!(parse(&[0x10, 0x0d]), Err(ProxyError::NoSignature));
    assert_eq!(parse(&[0x16, 0x03, 0x01]), Err(ProxyError::NoSignature));
    assert_eq!(parse(b"GET /"), Err(ProxyError::NoSignature));
    assert_eq!(parse(b"PROXX"), Err(ProxyError::NoSignature));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::NoSignature));
    assert_eq!(parse(b""), Ok(None));
}

/// A v2 header: signature, version 2 with `command`, `family`, then `body`.
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

const INET_BLOCK: [u8; 12] = [
    203, 0, 113, 7, // source
    10, 0, 0, 1, // destination
    0x10, 0xe1, // 4321
    0x07, 0x5b, // 1883
];

#[test]
fn v2_proxy_tcp4() {
    let mut bytes = v2(1, 0x11, &INET_BLOCK);
    let len = bytes.len();
    assert_eq!(len, 28);
    bytes.extend_from_slice(&[0x10, 0x00]);
    let parsed = parse(&bytes).unwrap().unwrap();
    assert_eq!(parsed.consumed, 28);
    assert_eq!(
        parsed.header,
        Header::Proxied {
            source: addr("203.0.113.7:4321"),
            destination: addr("10.0.0.1:1883"),
        }
    );
    assert_prefixes_incomplete(&bytes, len);
}

#[test]
fn v2_proxy_tcp6() {
    let mut body = Vec::new();
    body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&[0x10, 0xe1, 0x22, 0xb3]);
    let bytes = v2(1, 0x21, &body);
    let parsed = parse(&bytes).unwrap().unwrap();
    assert_eq!(parsed.consumed, 16 + 36);
    assert_eq!(parsed.header.source(), Some(addr("[2001:db8::7]:4321")));
}

#[test]
fn v2_local_ignores_its_addresses() {
    let bytes = v2(0, 0x11, &INET_BLOCK);
    assert_eq!(parse(&bytes).unwrap().unwrap().header, Header::Local);
    let bytes = v2(0, 0x00, &[]);
    let parsed = parse(&bytes).unwrap().unwrap();
    assert_eq!((parsed.header, parsed.consumed), (Header::Local, 16));
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut body = INET_BLOCK.to_vec();
    // PP2_TYPE_ALPN "mqtt", PP2_TYPE_AUTHORITY "broker.example", a NOOP.
    body.extend_from_slice(&[0x01, 0x00, 0x04]);
    body.extend_from_slice(b"mqtt");
    body.extend_from_slice(&[0x02, 0x00, 0x0e]);
    body.extend_from_slice(b"broker.example");
    body.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]);
    let mut bytes = v2(1, 0x11, &body);
    let len = bytes.len();
    bytes.push(0x10);
    let parsed = parse(&bytes).unwrap().unwrap();
    assert_eq!(parsed.consumed, len);
    assert_eq!(parsed.header.source(), Some(addr("203.0.113.7:4321")));
}

#[test]
fn v2_unspec_and_unix_keep_the_socket_address() {
    assert_eq!(
        parse(&v2(1, 0x00, &[])).unwrap().unwrap().header,
        Header::Local
    );
    let unix = v2(1, 0x31, &[0u8; 216]);
    assert_eq!(parse(&unix).unwrap().unwrap().header, Header::Local);
}

#[test]
fn v2_errors() {
    // Version 1 in the version nibble; command 2.
    let mut bytes = v2(1, 0x11, &INET_BLOCK);
    bytes[12] = 0x11;
    assert_eq!(parse(&bytes), Err(ProxyError::V2Version(1)));
    assert_eq!(parse(&bytes[..13]), Err(ProxyError::V2Version(1)));
    bytes[12] = 0x22;
    assert_eq!(parse(&bytes), Err(ProxyError::V2Command(2)));
    // UDP over IPv4.
    assert_eq!(
        parse(&v2(1, 0x12, &INET_BLOCK)),
        Err(ProxyError::V2Family(0x12))
    );
    // An address block shorter than its family needs.
    assert_eq!(
        parse(&v2(1, 0x11, &INET_BLOCK[..11])),
        Err(ProxyError::V2AddressTruncated)
    );
    assert_eq!(
        parse(&v2(1, 0x21, &INET_BLOCK)),
        Err(ProxyError::V2AddressTruncated)
    );
}

#[test]
fn v2_length_is_bounded_before_buffering() {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(
        parse(&bytes),
        Err(ProxyError::V2TooLong(16 + 0xffff)),
        "refused from the fixed part alone"
    );
    let largest = v2(1, 0x11, &vec![0u8; V2_MAX - 16]);
    assert_eq!(parse(&largest).unwrap().unwrap().consumed, V2_MAX);
}

#[test]
fn v2_truncated_header_waits() {
    let bytes = v2(1, 0x11, &INET_BLOCK);
    assert_eq!(parse(&bytes[..27]), Ok(None));
    assert_eq!(parse(&bytes[..16]), Ok(None));
    assert_eq!(parse(&bytes[..5]), Ok(None));
}

/// The fuzz target's invariants, on random bytes and on valid headers
/// with bytes changed.
fn check_invariants(data: &[u8]) {
    let result = parse(data);
    if data.len() >= HEADER_MAX {
        assert!(!matches!(result, Ok(None)));
    }
    if let Ok(Some(parsed)) = result {
        assert!(parsed.consumed > 0 && parsed.consumed <= data.len());
        assert_eq!(parse(&data[..parsed.consumed]), Ok(Some(parsed)));
        for n in 0..parsed.consumed {
            assert_eq!(parse(&data[..n]), Ok(None), "prefix of {n} bytes");
        }
    }
}

proptest::proptest! {
    #[test]
    fn random_bytes_keep_the_invariants(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        check_invariants(&data);
    }

    #[test]
    fn mutated_headers_keep_the_invariants(
        which in 0usize..3,
        at in 0usize..64,
        byte in proptest::num::u8::ANY,
    ) {
        let mut data = match which {
            0 => b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
            1 => v2(1, 0x11, &INET_BLOCK),
            _ => v2(0, 0x21, &[0u8; 36]),
        };
        let at = at % data.len();
        data[at] = byte;
        check_invariants(&data);
    }
}
