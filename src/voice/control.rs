//! The JSON control messages of a conversation (`protocols/xiaozhi.md` §4,
//! §6, §7): what the gateway reads from devices and backends, and the
//! messages it writes itself. Only the fields the gateway acts on are
//! typed; everything else is forwarded as the peer sent it.

#![forbid(unsafe_code)]

use serde_json::{json, Map, Value};

/// A device or backend message, parsed just enough to dispatch it.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    pub kind: String,
    pub session_id: Option<String>,
    pub object: Map<String, Value>,
}

/// The payload is not a JSON object with a string `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON control message")]
pub struct NotControl;

impl Control {
    pub fn parse(payload: &[u8]) -> Result<Control, NotControl> {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(payload) else {
            return Err(NotControl);
        };
        let Some(Value::String(kind)) = object.get("type") else {
            return Err(NotControl);
        };
        let kind = kind.clone();
        let session_id = match object.get("session_id") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(Control {
            kind,
            session_id,
            object,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key)
    }
}

/// Why a device hello is refused (§4.1: the reference gateway requires
/// version 3 and UDP transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("hello version must be 3")]
    Version,
    #[error("hello transport must be udp")]
    Transport,
}

/// Checks a device hello; returns its `audio_params` and `features`.
pub fn device_hello(hello: &Control) -> Result<(Value, Value), HelloError> {
    if hello.get("version").and_then(Value::as_u64) != Some(3) {
        return Err(HelloError::Version);
    }
    if hello.get("transport").and_then(Value::as_str) != Some("udp") {
        return Err(HelloError::Transport);
    }
    let audio = hello.get("audio_params").cloned().unwrap_or(Value::Null);
    let features = hello.get("features").cloned().unwrap_or(Value::Null);
    Ok((audio, features))
}

/// The hello the gateway opens a backend conversation with (§7): version 2
/// over WebSocket, the device's audio parameters and features; `text_font`
/// is not passed on.
pub fn backend_hello(audio_params: &Value, features: &Value) -> String {
    let mut hello = json!({
        "type": "hello",
        "version": 2,
        "transport": "websocket",
        "audio_params": audio_params,
    });
    if !features.is_null() {
        hello["features"] = features.clone();
    }
    hello.to_string()
}

/// The UDP parameters of a conversation as the device receives them.
pub struct UdpOffer<'a> {
    pub server: &'a str,
    pub port: u16,
    pub key_hex: &'a str,
    pub nonce_hex: &'a str,
}

/// The hello reply to the device (§4.2). Every field the strictest firmware
/// checks is always present.
pub fn device_hello_reply(session_id: &str, udp: &UdpOffer<'_>, audio_params: &Value) -> String {
    json!({
        "type": "hello",
        "version": 3,
        "session_id": session_id,
        "transport": "udp",
        "udp": {
            "server": udp.server,
            "port": udp.port,
            "encryption": "aes-128-ctr",
            "key": udp.key_hex,
            "nonce": udp.nonce_hex,
        },
        "audio_params": audio_params,
    })
    .to_string()
}

pub fn goodbye(session_id: Option<&str>) -> String {
    match session_id {
        Some(id) => json!({"type": "goodbye", "session_id": id}).to_string(),
        None => json!({"type": "goodbye"}).to_string(),
    }
}

pub fn error(message: &str) -> String {
    json!({"type": "error", "message": message}).to_string()
}

/// An MCP request of the management API to a device, with the gateway's id.
pub fn mcp_request(id: u64, payload: &Value) -> String {
    let mut rpc = match payload {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    rpc.insert("jsonrpc".to_string(), json!("2.0"));
    rpc.insert("id".to_string(), json!(id));
    json!({"type": "mcp", "payload": rpc}).to_string()
}

/// The id and outcome of a device's MCP response, if it is one.
pub fn mcp_response(msg: &Control) -> Option<(u64, Result<Value, String>)> {
    let payload = msg.get("payload")?.as_object()?;
    if payload.contains_key("method") {
        return None;
    }
    let id = payload.get("id")?.as_u64()?;
    if let Some(result) = payload.get("result") {
        return Some((id, Ok(result.clone())));
    }
    let error = payload
        .get("error")
        .map(|e| match e.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => e.to_string(),
        })
        .unwrap_or_else(|| "MCP response without result".to_string());
    Some((id, Err(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRMWARE_HELLO: &str = r#"{"type":"hello","version":3,"transport":"udp","features":{"aec":true,"mcp":true,"glyph_push":true},"text_font":{"bundle":"noto-v1","charset":"common","size":20,"bpp":4},"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}"#;

    #[test]
    fn firmware_hello_is_accepted_and_text_font_not_passed_on() {
        let hello = Control::parse(FIRMWARE_HELLO.as_bytes()).unwrap();
        assert_eq!(hello.kind, "hello");
        let (audio, features) = device_hello(&hello).unwrap();
        let upstream: Value = serde_json::from_str(&backend_hello(&audio, &features)).unwrap();
        assert_eq!(upstream["version"], 2);
        assert_eq!(upstream["transport"], "websocket");
        assert_eq!(upstream["audio_params"]["sample_rate"], 16000);
        assert_eq!(upstream["features"]["mcp"], true);
        assert!(upstream.get("text_font").is_none());
    }

    #[test]
    fn hello_of_another_version_or_transport_is_refused() {
        let v2 = Control::parse(br#"{"type":"hello","version":2,"transport":"udp"}"#).unwrap();
        assert_eq!(device_hello(&v2), Err(HelloError::Version));
        let ws =
            Control::parse(br#"{"type":"hello","version":3,"transport":"websocket"}"#).unwrap();
        assert_eq!(device_hello(&ws), Err(HelloError::Transport));
    }

    #[test]
    fn non_objects_and_missing_types_are_not_control_messages() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"type":3}"#,
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(Control::parse(bad), Err(NotControl), "{bad:?}");
        }
    }

    #[test]
    fn reply_carries_every_field_the_firmware_checks() {
        let udp = UdpOffer {
            server: "10.0.0.1",
            port: 8884,
            key_hex: "00112233445566778899aabbccddeeff",
            nonce_hex: "01000000deadbeef0000000000000000",
        };
        let reply: Value = serde_json::from_str(&device_hello_reply(
            "s1",
            &udp,
            &json!({"sample_rate": 24000}),
        ))
        .unwrap();
        assert_eq!(reply["transport"], "udp");
        assert_eq!(reply["session_id"], "s1");
        assert_eq!(reply["udp"]["port"], 8884);
        assert!(reply["udp"]["port"].is_u64());
        assert_eq!(reply["udp"]["encryption"], "aes-128-ctr");
        assert_eq!(reply["udp"]["key"].as_str().unwrap().len(), 32);
        assert_eq!(reply["audio_params"]["sample_rate"], 24000);
    }

    #[test]
    fn mcp_requests_get_the_gateway_id_and_responses_are_matched() {
        let req: Value = serde_json::from_str(&mcp_request(
            10000,
            &json!({"method": "tools/call", "params": {}}),
        ))
        .unwrap();
        assert_eq!(req["payload"]["id"], 10000);
        assert_eq!(req["payload"]["jsonrpc"], "2.0");
        let ok = Control::parse(
            br#"{"type":"mcp","payload":{"jsonrpc":"2.0","id":10000,"result":{"x":1}}}"#,
        )
        .unwrap();
        assert_eq!(mcp_response(&ok), Some((10000, Ok(json!({"x": 1})))));
        let err = Control::parse(
            br#"{"type":"mcp","payload":{"id":7,"error":{"code":-1,"message":"no"}}}"#,
        )
        .unwrap();
        assert_eq!(mcp_response(&err), Some((7, Err("no".to_string()))));
        let call = Control::parse(br#"{"type":"mcp","payload":{"id":7,"method":"x"}}"#).unwrap();
        assert_eq!(mcp_response(&call), None);
    }
}
