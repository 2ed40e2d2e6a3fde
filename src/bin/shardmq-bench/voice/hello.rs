//! A simulated device's identity and its side of the hello handshake
//! (protocol reference §3.2, §4), written the way firmware does it.
//!
//! Device `i` has a fixed MAC and uuid derived from `i`, so runs are
//! repeatable and two devices never share a client id. The reply is
//! checked as strictly as current firmware checks it (§4.2): a reply the
//! firmware would ignore is reported at once rather than left to time out.

use serde_json::{json, Value};

use shardmq::voice::packet::PACKET_TYPE;

/// The group part of every bench device's client id.
pub const GROUP: &str = "GID_bench";

/// Where firmware publishes its control messages.
pub const PUBLISH_TOPIC: &str = "device-server";

/// `02_00_xx_xx_xx_xx`: a locally administered MAC whose last four bytes
/// are the device index.
pub fn mac(index: u32) -> String {
    let [a, b, c, d] = index.to_be_bytes();
    format!("02_00_{a:02x}_{b:02x}_{c:02x}_{d:02x}")
}

/// A version-4-shaped uuid that ends in the device index.
pub fn uuid(index: u32) -> String {
    format!("00000000-0000-4000-8000-{index:012x}")
}

/// `GID_bench@@@<mac_>@@@<uuid>`, the three-part form whose password the
/// gateway checks.
pub fn client_id(index: u32) -> String {
    format!("{GROUP}@@@{}@@@{}", mac(index), uuid(index))
}

/// The device hello of §4.1 (no `text_font`: the gateway drops it anyway).
pub fn hello(frame_ms: u32) -> String {
    json!({
        "type": "hello",
        "version": 3,
        "transport": "udp",
        "features": {"mcp": true},
        "audio_params": {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": frame_ms,
        },
    })
    .to_string()
}

/// What the device needs from the server hello to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub session_id: Option<String>,
    pub server: String,
    pub port: u16,
    pub key: [u8; 16],
    /// Nonce bytes 4..8: the id every datagram carries.
    pub conn_id: u32,
}

/// A control message from the gateway, as the device reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hello(Offer),
    /// A hello firmware would ignore, and why.
    BadHello(&'static str),
    /// `{"type":"error",..}`: the gateway could not open the conversation.
    Error(String),
    Goodbye,
    /// Anything else (tts, stt, mcp, ...), or not JSON at all.
    Other,
}

/// Reads a message the gateway published to the device.
pub fn parse_reply(payload: &[u8]) -> Reply {
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(payload) else {
        return Reply::Other;
    };
    match msg.get("type").and_then(Value::as_str) {
        Some("hello") => match offer(&msg) {
            Ok(offer) => Reply::Hello(offer),
            Err(why) => Reply::BadHello(why),
        },
        Some("error") => Reply::Error(
            msg.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        Some("goodbye") => Reply::Goodbye,
        _ => Reply::Other,
    }
}

/// The checks of firmware `ParseServerHello` (§4.2), plus one of ours:
/// the device side seals with `AudioChannel`, which writes bytes 0..2 of
/// the header as `01 00` where firmware copies them from the nonce, so the
/// nonce must start that way (every gateway's does).
fn offer(msg: &serde_json::Map<String, Value>) -> Result<Offer, &'static str> {
    if msg.get("transport").and_then(Value::as_str) != Some("udp") {
        return Err("transport is not udp");
    }
    let udp = msg
        .get("udp")
        .and_then(Value::as_object)
        .ok_or("no udp object")?;
    let server = udp
        .get("server")
        .and_then(Value::as_str)
        .ok_or("udp.server is not a string")?;
    let port = udp
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or("udp.port is not a number in 1..65535")?;
    let hex = |field| {
        udp.get(field)
            .and_then(Value::as_str)
            .and_then(unhex16)
            .ok_or("udp.key or udp.nonce is not 32 hex digits")
    };
    let key = hex("key")?;
    let nonce = hex("nonce")?;
    let [t, flags, _, _, a, b, c, d, ..] = nonce;
    if t != PACKET_TYPE || flags != 0 {
        return Err("udp.nonce does not start with 01 00");
    }
    Ok(Offer {
        session_id: msg
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        server: server.to_string(),
        port,
        key,
        conn_id: u32::from_be_bytes([a, b, c, d]),
    })
}

/// 32 hex digits, either case, as 16 bytes.
fn unhex16(text: &str) -> Option<[u8; 16]> {
    let digits = text.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else {
            return None;
        };
        *byte = nibble(*hi)? << 4 | nibble(*lo)?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardmq::voice::identity;
    use shardmq::voice::packet;

    #[test]
    fn ids_are_devices_the_gateway_accepts() {
        let id = identity::parse_client_id(&client_id(0x0102_0304)).unwrap();
        assert_eq!(id.group, GROUP);
        assert_eq!(id.mac, "02:00:01:02:03:04");
        assert_eq!(id.mac_underscored, "02_00_01_02_03_04");
        assert_eq!(
            id.uuid.as_deref(),
            Some("00000000-0000-4000-8000-000001020304")
        );
        assert_ne!(client_id(1), client_id(2));
    }

    #[test]
    fn hello_is_what_the_gateway_wants() {
        let hello = hello(60);
        let msg = shardmq::voice::control::Control::parse(hello.as_bytes()).unwrap();
        assert_eq!(msg.kind, "hello");
        let (audio, features) = shardmq::voice::control::device_hello(&msg).unwrap();
        assert_eq!(audio["frame_duration"], 60);
        assert_eq!(audio["sample_rate"], 16000);
        assert_eq!(features["mcp"], true);
    }

    /// The gateway's own reply builder, fed with its own nonce.
    fn gateway_reply(conn_id: u32, port: u16) -> String {
        let key = packet::hex16(&[0xab; 16]);
        let nonce = packet::hex16(&packet::nonce(conn_id));
        shardmq::voice::control::device_hello_reply(
            "s1",
            &shardmq::voice::control::UdpOffer {
                server: "127.0.0.1",
                port,
                key_hex: &key,
                nonce_hex: &nonce,
            },
            &json!({"format": "opus"}),
        )
    }

    #[test]
    fn the_gateway_reply_parses() {
        let reply = parse_reply(gateway_reply(0x7014_e57e, 8884).as_bytes());
        assert_eq!(
            reply,
            Reply::Hello(Offer {
                session_id: Some("s1".to_string()),
                server: "127.0.0.1".to_string(),
                port: 8884,
                key: [0xab; 16],
                conn_id: 0x7014_e57e,
            })
        );
    }

    #[test]
    fn replies_firmware_would_ignore_are_bad() {
        let bad = |edit: &dyn Fn(&mut Value)| {
            let mut v: Value = serde_json::from_str(&gateway_reply(1, 8884)).unwrap();
            edit(&mut v);
            parse_reply(v.to_string().as_bytes())
        };
        let is_bad = |r: Reply| matches!(r, Reply::BadHello(_));
        assert!(is_bad(bad(&|v| v["transport"] = json!("websocket"))));
        assert!(is_bad(bad(&|v| v["udp"]["port"] = json!("8884"))));
        assert!(is_bad(bad(&|v| v["udp"]["port"] = json!(0))));
        assert!(is_bad(bad(&|v| v["udp"]["port"] = json!(70000))));
        assert!(is_bad(bad(&|v| v["udp"]["server"] = json!(1))));
        assert!(is_bad(bad(&|v| v["udp"]["key"] = json!("abab"))));
        assert!(is_bad(bad(
            &|v| v["udp"]["nonce"] = json!("0100000000000001000000000000000g")
        )));
        assert!(is_bad(bad(
            &|v| v["udp"]["nonce"] = json!("02000000000000010000000000000000")
        )));
        // Upper-case hex is fine, and the session id is optional.
        let upper = bad(&|v| {
            v["udp"]["key"] = json!("ABABABABABABABABABABABABABABABAB");
            v.as_object_mut().unwrap().remove("session_id");
        });
        match upper {
            Reply::Hello(offer) => {
                assert_eq!(offer.key, [0xab; 16]);
                assert_eq!(offer.session_id, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_messages() {
        assert_eq!(
            parse_reply(br#"{"type":"error","message":"chat backend unavailable"}"#),
            Reply::Error("chat backend unavailable".to_string())
        );
        assert_eq!(
            parse_reply(br#"{"type":"goodbye","session_id":"s"}"#),
            Reply::Goodbye
        );
        assert_eq!(
            parse_reply(br#"{"type":"tts","state":"start"}"#),
            Reply::Other
        );
        assert_eq!(parse_reply(b"\xff"), Reply::Other);
    }

    #[test]
    fn unhex_takes_exactly_32_digits() {
        assert_eq!(unhex16(&"0f".repeat(16)), Some([0x0f; 16]));
        assert_eq!(unhex16(&"0F".repeat(16)), Some([0x0f; 16]));
        assert_eq!(unhex16(&"0f".repeat(15)), None);
        assert_eq!(unhex16(&format!("{}0", "0f".repeat(15))), None);
        assert_eq!(unhex16(&"é".repeat(16)), None);
    }
}
