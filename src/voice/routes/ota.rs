//! OTA provisioning, sans-IO: the answer to the firmware's `POST /xiaozhi/ota/`
//! (protocol reference §2) from the request, the configuration, the
//! signature key and the time.
//!
//! The answer tells the device where to connect: an `mqtt` section (with
//! the device's client id, username and signed password) when the profile
//! has an MQTT endpoint, a `websocket` section when it has a URL. The profile
//! is chosen by the client's address: loopback, private and link-local
//! clients get `intranet`, every other client `external`, so one server can
//! hand LAN devices a LAN address and the rest a public one.
//!
//! The body the firmware sends (system info JSON) is optional here and may be
//! anything: only `board.type` (the MQTT group) and `application.version`
//! (echoed as the firmware version when none is configured) are read from it.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::response::CONTENT_TYPE_JSON;
use crate::http::{Request, Response};
use crate::voice::identity;

/// `[voice.ota]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// MQTT group of devices whose request body has no `board.type`.
    pub group_id: String,
    /// Minutes east of UTC; the device adds it to `server_time.timestamp`.
    pub timezone_offset_min: i32,
    /// Version offered to devices; "" reports each device's own version back,
    /// so no device upgrades.
    pub firmware_version: String,
    pub firmware_url: String,
    /// For clients on loopback, private (RFC 1918, IPv6 ULA) and link-local
    /// addresses.
    pub intranet: OtaProfile,
    /// For every other client address.
    pub external: OtaProfile,
}

/// `[voice.ota.intranet]` / `[voice.ota.external]`: what one class of
/// clients is told to connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaProfile {
    /// `host[:port]`; "" leaves the `mqtt` section out. Without a port the
    /// firmware uses 8883 with TLS.
    pub mqtt_endpoint: String,
    /// "" leaves the `websocket` section out.
    pub websocket_url: String,
    pub websocket_token: String,
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            group_id: "GID_default".to_string(),
            timezone_offset_min: 480,
            firmware_version: String::new(),
            firmware_url: String::new(),
            intranet: OtaProfile::default(),
            external: OtaProfile::default(),
        }
    }
}

/// A setting that cannot be used: its key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct OtaConfigError {
    pub key: &'static str,
    pub message: String,
}

impl OtaConfig {
    /// The profile for a client at `ip`.
    pub fn profile_for(&self, ip: IpAddr) -> &OtaProfile {
        if is_intranet(ip) {
            &self.intranet
        } else {
            &self.external
        }
    }

    /// Checks what serde cannot express.
    pub fn validate(&self) -> Result<(), OtaConfigError> {
        let invalid = |key, message: &str| OtaConfigError {
            key,
            message: message.to_string(),
        };
        // The group is the first `@@@` part of client ids.
        if self.group_id.is_empty() || !self.group_id.bytes().all(is_group_byte) {
            return Err(invalid(
                "voice.ota.group_id",
                "must be non-empty letters, digits, '_' or '-'",
            ));
        }
        // UTC-12:00 to UTC+14:00.
        if !(-720..=840).contains(&self.timezone_offset_min) {
            return Err(invalid(
                "voice.ota.timezone_offset_min",
                "must be within -720..=840 minutes",
            ));
        }
        let profiles = [
            (
                &self.intranet,
                "voice.ota.intranet.mqtt_endpoint",
                "voice.ota.intranet.websocket_url",
            ),
            (
                &self.external,
                "voice.ota.external.mqtt_endpoint",
                "voice.ota.external.websocket_url",
            ),
        ];
        for (profile, mqtt_key, websocket_key) in profiles {
            if profile
                .mqtt_endpoint
                .contains(|c: char| c.is_whitespace() || c == '/')
            {
                return Err(invalid(mqtt_key, "must be host or host:port"));
            }
            let url = profile.websocket_url.as_str();
            if !url.is_empty() && !url.starts_with("ws://") && !url.starts_with("wss://") {
                return Err(invalid(websocket_key, "must start with ws:// or wss://"));
            }
        }
        Ok(())
    }
}

/// Loopback, RFC 1918 private, link-local, IPv6 unique-local; IPv4-mapped
/// IPv6 addresses (a dual-stack listener) count as their IPv4 address.
pub fn is_intranet(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            v6.is_loopback()
                || (first & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (first & 0xffc0) == 0xfe80 // fe80::/10, link-local
        }
    }
}

/// Answer of xiaozhi-server to a request without the identifying headers;
/// kept word for word since tools match on it.
const REQUEST_ERROR: &str = r#"{"success":false,"message":"request error."}"#;

/// The answer to `POST /xiaozhi/ota/` (or `GET` with no body).
pub fn ota_response(
    request: &Request,
    config: &OtaConfig,
    signature_key: &str,
    now_unix_ms: u64,
) -> Response {
    let device = request.header("device-id").and_then(normalize_mac);
    let client = request
        .header("client-id")
        .filter(|c| client_id_is_valid(c));
    let (Some(mac), Some(client)) = (device, client) else {
        tracing::debug!(peer = %request.peer, "ota request without valid Device-Id/Client-Id");
        return Response::new(400, CONTENT_TYPE_JSON, REQUEST_ERROR.into());
    };
    // Anything but a JSON object is as good as no body.
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let ip = request.peer.ip().to_canonical();
    let profile = config.profile_for(ip);
    let mqtt = (!profile.mqtt_endpoint.is_empty()).then(|| {
        let group = body
            .pointer("/board/type")
            .and_then(Value::as_str)
            .and_then(group_for_board)
            .unwrap_or_else(|| config.group_id.clone());
        let client_id = format!("{group}@@@{}@@@{client}", mac.replace(':', "_"));
        let username = identity::username_for_ip(&ip.to_string());
        let password = if signature_key.is_empty() {
            String::new()
        } else {
            identity::password(signature_key.as_bytes(), &client_id, &username)
        };
        MqttSection {
            endpoint: &profile.mqtt_endpoint,
            client_id,
            username,
            password,
            publish_topic: "device-server",
            subscribe_topic: "null",
        }
    });
    let websocket = (!profile.websocket_url.is_empty()).then(|| WebsocketSection {
        url: &profile.websocket_url,
        // Sent even when empty: the firmware copies every key into its
        // settings, so an empty token replaces a stale one.
        token: &profile.websocket_token,
    });
    let firmware_version = if config.firmware_version.is_empty() {
        body.pointer("/application/version")
            .and_then(Value::as_str)
            .unwrap_or("")
    } else {
        &config.firmware_version
    };
    tracing::debug!(%mac, %ip, mqtt = mqtt.is_some(), websocket = websocket.is_some(), "ota");
    Response::json(
        200,
        &OtaReply {
            mqtt,
            websocket,
            server_time: ServerTime {
                timestamp: now_unix_ms,
                timezone_offset: config.timezone_offset_min,
            },
            firmware: Firmware {
                version: firmware_version,
                url: &config.firmware_url,
            },
        },
    )
}

/// The answer to `POST /xiaozhi/ota/activate`: every device counts as
/// activated, since this server has no account binding to wait for.
pub fn activate_response() -> Response {
    Response::json(200, &serde_json::json!({ "success": true }))
}

#[derive(Serialize)]
struct OtaReply<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<MqttSection<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<WebsocketSection<'a>>,
    server_time: ServerTime,
    firmware: Firmware<'a>,
}

#[derive(Serialize)]
struct MqttSection<'a> {
    endpoint: &'a str,
    client_id: String,
    username: String,
    password: String,
    publish_topic: &'static str,
    subscribe_topic: &'static str,
}

#[derive(Serialize)]
struct WebsocketSection<'a> {
    url: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct ServerTime {
    /// Unix milliseconds.
    timestamp: u64,
    /// Minutes.
    timezone_offset: i32,
}

#[derive(Serialize)]
struct Firmware<'a> {
    version: &'a str,
    url: &'a str,
}

/// `aa:bb:cc:dd:ee:ff` in either case, returned lower-case.
fn normalize_mac(value: &str) -> Option<String> {
    let mut pairs = 0;
    for part in value.split(':') {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        pairs += 1;
    }
    (pairs == 6).then(|| value.to_ascii_lowercase())
}

/// The third `@@@` part of the MQTT client id: printable ASCII without `@`,
/// so it cannot add parts; short, since it is a UUID in practice.
fn client_id_is_valid(value: &str) -> bool {
    const CLIENT_ID_BYTES_MAX: usize = 64;
    !value.is_empty()
        && value.len() <= CLIENT_ID_BYTES_MAX
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
}

fn is_group_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `GID_<board type>`, other characters replaced by `_`; None when the
/// type has no letter or digit, so the configured group is used instead.
fn group_for_board(board_type: &str) -> Option<String> {
    const BOARD_CHARS_MAX: usize = 64;
    if !board_type.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let board: String = board_type
        .chars()
        .take(BOARD_CHARS_MAX)
        .map(|c| match u8::try_from(c) {
            Ok(b) if is_group_byte(b) => c,
            _ => '_',
        })
        .collect();
    Some(format!("GID_{board}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const KEY: &str = "Sup3r-Secret-Key";
    const UUID: &str = "6f1c2d3e-4b5a-4789-9abc-def012345678";
    const NOW_MS: u64 = 1_795_348_800_000;

    fn config() -> OtaConfig {
        OtaConfig {
            intranet: OtaProfile {
                mqtt_endpoint: "192.168.1.2:1883".into(),
                websocket_url: "ws://192.168.1.2:8000/xiaozhi/v1/".into(),
                websocket_token: String::new(),
            },
            external: OtaProfile {
                mqtt_endpoint: "mqtt.example.com".into(),
                websocket_url: String::new(),
                websocket_token: String::new(),
            },
            ..OtaConfig::default()
        }
    }

    fn request(peer: &str, headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/xiaozhi/ota/".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            peer: peer.parse::<SocketAddr>().unwrap(),
        }
    }

    fn device(peer: &str, body: &str) -> Request {
        request(
            peer,
            &[("device-id", "AA:BB:CC:DD:EE:FF"), ("client-id", UUID)],
            body,
        )
    }

    fn reply(r: &Response) -> Value {
        assert_eq!(r.content_type, "application/json");
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        let intranet = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.20",
            "169.254.10.1",
            "::1",
            "fe80::1",
            "fd12:3456::1",
            "fc00::1",
            "::ffff:192.168.1.20",
        ];
        let external = [
            "8.8.8.8",
            "172.32.0.1",
            "100.64.0.1",
            "203.0.113.9",
            "2001:db8::1",
            "fec0::1",
            "::ffff:8.8.8.8",
        ];
        for ip in intranet {
            assert!(is_intranet(ip.parse().unwrap()), "{ip}");
        }
        for ip in external {
            assert!(!is_intranet(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn external_client_gets_the_external_profile_and_a_signed_password() {
        let body = r#"{"board":{"type":"bread-compact-wifi"},"application":{"version":"1.6.0"}}"#;
        let r = ota_response(&device("203.0.113.9:5000", body), &config(), KEY, NOW_MS);
        assert_eq!(r.status, 200);
        let v = reply(&r);
        let mqtt = &v["mqtt"];
        assert_eq!(mqtt["endpoint"], "mqtt.example.com");
        assert_eq!(
            mqtt["client_id"],
            format!("GID_bread-compact-wifi@@@aa_bb_cc_dd_ee_ff@@@{UUID}")
        );
        // python3: base64.b64encode(b'{"ip":"203.0.113.9"}')
        assert_eq!(mqtt["username"], "eyJpcCI6IjIwMy4wLjExMy45In0=");
        // python3: base64.b64encode(hmac.new(KEY, client_id + "|" + username,
        // hashlib.sha256).digest())
        assert_eq!(
            mqtt["password"],
            "HiwshOhTPVUhZQY9tX57Y3yNLVbcvNnMwigh7HD2i6Q="
        );
        assert_eq!(mqtt["publish_topic"], "device-server");
        assert_eq!(mqtt["subscribe_topic"], "null");
        assert!(v.get("websocket").is_none());
        assert_eq!(v["server_time"]["timestamp"], NOW_MS);
        assert_eq!(v["server_time"]["timezone_offset"], 480);
        assert_eq!(v["firmware"]["version"], "1.6.0");
        assert_eq!(v["firmware"]["url"], "");
    }

    #[test]
    fn intranet_client_gets_the_intranet_profile() {
        let r = ota_response(&device("192.168.1.20:5000", ""), &config(), KEY, NOW_MS);
        let v = reply(&r);
        assert_eq!(v["mqtt"]["endpoint"], "192.168.1.2:1883");
        let client_id = format!("GID_default@@@aa_bb_cc_dd_ee_ff@@@{UUID}");
        assert_eq!(v["mqtt"]["client_id"], client_id);
        assert_eq!(v["mqtt"]["username"], "eyJpcCI6IjE5Mi4xNjguMS4yMCJ9");
        assert_eq!(
            v["mqtt"]["password"],
            "xZ9XyLREIJolhh9IqT5j2bXgpbaDPbR7PfeTsObCiFk="
        );
        assert_eq!(v["websocket"]["url"], "ws://192.168.1.2:8000/xiaozhi/v1/");
        assert_eq!(v["websocket"]["token"], "");
        assert_eq!(v["firmware"]["version"], "");
    }

    #[test]
    fn mapped_ipv6_peer_is_named_by_its_ipv4_address() {
        let r = ota_response(
            &device("[::ffff:192.168.1.20]:5000", ""),
            &config(),
            KEY,
            NOW_MS,
        );
        let v = reply(&r);
        assert_eq!(v["mqtt"]["username"], "eyJpcCI6IjE5Mi4xNjguMS4yMCJ9");
    }

    #[test]
    fn no_key_means_an_empty_password() {
        let r = ota_response(&device("8.8.8.8:1", ""), &config(), "", NOW_MS);
        assert_eq!(reply(&r)["mqtt"]["password"], "");
    }

    #[test]
    fn empty_profile_gives_only_time_and_firmware() {
        let mut c = config();
        c.external = OtaProfile::default();
        c.firmware_version = "2.0.0".into();
        c.firmware_url = "https://example.com/fw.bin".into();
        let body = r#"{"application":{"version":"1.0.0"}}"#;
        let v = reply(&ota_response(&device("8.8.8.8:1", body), &c, KEY, NOW_MS));
        assert!(v.get("mqtt").is_none());
        assert!(v.get("websocket").is_none());
        assert_eq!(v["firmware"]["version"], "2.0.0");
        assert_eq!(v["firmware"]["url"], "https://example.com/fw.bin");
    }

    #[test]
    fn websocket_token_is_passed_through() {
        let mut c = config();
        c.external.websocket_url = "wss://chat.example.com/xiaozhi/v1/".into();
        c.external.websocket_token = "tok".into();
        let v = reply(&ota_response(&device("8.8.8.8:1", ""), &c, KEY, NOW_MS));
        assert_eq!(v["websocket"]["url"], "wss://chat.example.com/xiaozhi/v1/");
        assert_eq!(v["websocket"]["token"], "tok");
    }

    #[test]
    fn missing_or_bad_identity_headers_give_the_reference_error() {
        let cases: [&[(&str, &str)]; 6] = [
            &[],
            &[("device-id", "aa:bb:cc:dd:ee:ff")],
            &[("client-id", UUID)],
            &[("device-id", "aa:bb:cc:dd:ee"), ("client-id", UUID)],
            &[("device-id", "aa-bb-cc-dd-ee-ff"), ("client-id", UUID)],
            &[("device-id", "aa:bb:cc:dd:ee:ff"), ("client-id", "x@@@y")],
        ];
        for headers in cases {
            let r = ota_response(&request("8.8.8.8:1", headers, ""), &config(), KEY, NOW_MS);
            assert_eq!(r.status, 400, "{headers:?}");
            assert_eq!(r.body, br#"{"success":false,"message":"request error."}"#);
        }
    }

    #[test]
    fn garbage_bodies_are_ignored() {
        let bodies = [
            "",
            "not json",
            "[1,2]",
            r#"{"board":"flat"}"#,
            r#"{"board":{"type":7},"application":{"version":null}}"#,
            r#"{"board":{"type":"!!!"}}"#,
            "\u{0}\u{1}",
        ];
        for body in bodies {
            let r = ota_response(&device("8.8.8.8:1", body), &config(), KEY, NOW_MS);
            assert_eq!(r.status, 200, "{body:?}");
            let v = reply(&r);
            let client_id = v["mqtt"]["client_id"].as_str().unwrap().to_string();
            assert!(client_id.starts_with("GID_default@@@"), "{body:?}");
            assert_eq!(v["firmware"]["version"], "");
        }
        let mut deep = "[".repeat(10_000);
        deep.push_str(&"]".repeat(10_000));
        let r = ota_response(&device("8.8.8.8:1", &deep), &config(), KEY, NOW_MS);
        assert_eq!(r.status, 200);
    }

    #[test]
    fn board_types_are_sanitised() {
        assert_eq!(
            group_for_board("esp-box-3").as_deref(),
            Some("GID_esp-box-3")
        );
        assert_eq!(group_for_board("a@@@b c").as_deref(), Some("GID_a___b_c"));
        assert_eq!(group_for_board("板子x").as_deref(), Some("GID___x"));
        assert_eq!(group_for_board("").as_deref(), None);
        assert_eq!(group_for_board("@@@").as_deref(), None);
        let long = "b".repeat(500);
        assert_eq!(group_for_board(&long).map(|g| g.len()), Some(4 + 64));
    }

    #[test]
    fn activate_always_succeeds() {
        let r = activate_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, br#"{"success":true}"#);
    }

    #[test]
    fn config_reads_the_contract_table() {
        let text = r#"
            group_id = "GID_home"
            timezone_offset_min = -300
            firmware_version = ""
            firmware_url = ""
            [intranet]
            mqtt_endpoint = "10.0.0.2:1883"
            websocket_url = ""
            websocket_token = ""
            [external]
            mqtt_endpoint = "mqtt.example.com:8883"
        "#;
        let c: OtaConfig = toml::from_str(text).unwrap();
        assert_eq!(c.group_id, "GID_home");
        assert_eq!(c.timezone_offset_min, -300);
        assert_eq!(c.intranet.mqtt_endpoint, "10.0.0.2:1883");
        assert_eq!(c.external.websocket_url, "");
        c.validate().unwrap();
        let empty: OtaConfig = toml::from_str("").unwrap();
        assert_eq!(empty, OtaConfig::default());
        assert!(toml::from_str::<OtaConfig>("group = \"x\"").is_err());
        assert!(toml::from_str::<OtaConfig>("[intranet]\nmqtt = \"x\"").is_err());
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut c = OtaConfig {
            group_id: "GID@@@x".into(),
            ..OtaConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "voice.ota.group_id");
        c.group_id = "GID_x".into();
        c.timezone_offset_min = 900;
        assert_eq!(
            c.validate().unwrap_err().key,
            "voice.ota.timezone_offset_min"
        );
        c.timezone_offset_min = 0;
        c.external.websocket_url = "http://x/".into();
        assert_eq!(
            c.validate().unwrap_err().key,
            "voice.ota.external.websocket_url"
        );
        c.external.websocket_url = String::new();
        c.intranet.mqtt_endpoint = "mqtt://x".into();
        assert_eq!(
            c.validate().unwrap_err().key,
            "voice.ota.intranet.mqtt_endpoint"
        );
    }
}
