//! The HTTP routes of the voice gateway: OTA provisioning and the management
//! API of the xiaozhi MQTT gateway (as called by xiaozhi-esp32-server's
//! manager-api). The gateway's counters are in the server's `/metrics`.
//!
//! | Route | Method | Auth |
//! |---|---|---|
//! | `/xiaozhi/ota/`, `/xiaozhi/ota` | POST, GET | none (device headers) |
//! | `/xiaozhi/ota/activate` | POST | none |
//! | `/api/devices/status` | POST | daily bearer token |
//! | `/api/commands/:clientId` | POST | daily bearer token |
//!
//! Everything the routes need from the rest of the server goes through
//! [`Gateway`]; the routing itself is synchronous, and only the gateway's
//! answers are awaited.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Map, Value};

use super::auth;
use super::ota::{self, OtaConfig};
use crate::http::{Handler, Request, Response, ResponseFuture};

/// Time a device has to answer a command sent through the API; the same as
/// the reference gateway.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway knows about one device connection.
pub use crate::voice::gateway::DeviceStatus;

/// Answer of [`Gateway::devices_status`].
pub type StatusFuture = Pin<Box<dyn Future<Output = Vec<(String, DeviceStatus)>>>>;
/// Answer of [`Gateway::mcp_command`].
pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, String>>>>;

/// The rest of the server, as the HTTP routes see it. Implemented by the
/// shard shell; futures are not `Send`, everything runs on one shard.
pub trait Gateway {
    /// Status of each client id asked for; ids left out count as unknown.
    fn devices_status(&self, client_ids: Vec<String>) -> StatusFuture;
    /// Sends an MCP request (`payload` holds `method` and `params`) to the
    /// device and resolves with its `result`, or with a message on failure
    /// (not connected, MCP error). Bounded by [`COMMAND_TIMEOUT`] here.
    fn mcp_command(&self, client_id: String, payload: Value) -> CommandFuture;
}

/// The HTTP handler of the voice gateway.
pub struct Api {
    ota: OtaConfig,
    signature_key: String,
    gateway: Rc<dyn Gateway>,
    /// Unix milliseconds; [`unix_time_ms`] outside tests.
    clock: fn() -> u64,
    /// The management API answers only with a strong key (see `Api::new`).
    management_enabled: bool,
    command_timeout: Duration,
}

/// The wall clock in Unix milliseconds; 0 if the clock is before 1970.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The reference gateway's rule for a key that may guard the management
/// API: at least 8 characters, upper and lower case letters, and none of the
/// usual weak words.
pub fn key_is_strong(key: &str) -> bool {
    const WEAK_WORDS: [&str; 6] = ["test", "1234", "admin", "password", "qwerty", "xiaozhi"];
    let lower = key.to_lowercase();
    key.chars().count() >= 8
        && key.chars().any(|c| c.is_ascii_uppercase())
        && key.chars().any(|c| c.is_ascii_lowercase())
        && !WEAK_WORDS.iter().any(|w| lower.contains(w))
}

impl Api {
    /// The management API (`/api/...`) is turned off (404) when
    /// `signature_key` is empty, since the key is what its tokens are made
    /// of: without one no caller could authenticate. It is also off when the
    /// key is weak, as in the reference gateway, because a guessable key
    /// would let anyone drive every device; that is logged once per process.
    pub fn new(
        ota: OtaConfig,
        signature_key: String,
        gateway: Rc<dyn Gateway>,
        clock: fn() -> u64,
    ) -> Api {
        static WARNED: Once = Once::new();
        let management_enabled = !signature_key.is_empty() && key_is_strong(&signature_key);
        if signature_key.is_empty() {
            tracing::debug!("management API off: no voice.signature_key");
        } else if !management_enabled {
            WARNED.call_once(|| {
                tracing::warn!(
                    "management API off: voice.signature_key must have 8+ characters, \
                     upper and lower case, and none of test/1234/admin/password/qwerty/xiaozhi"
                );
            });
        }
        Api {
            ota,
            signature_key,
            gateway,
            clock,
            management_enabled,
            command_timeout: COMMAND_TIMEOUT,
        }
    }

    fn route(&self, request: &Request) -> Answer {
        let path = request.path.as_str();
        let method = request.method.as_str();
        match path {
            "/xiaozhi/ota/" | "/xiaozhi/ota" => match method {
                "POST" | "GET" => Answer::Ready(ota::ota_response(
                    request,
                    &self.ota,
                    &self.signature_key,
                    (self.clock)(),
                )),
                _ => Answer::Ready(method_not_allowed("GET, POST")),
            },
            "/xiaozhi/ota/activate" | "/xiaozhi/ota/activate/" => match method {
                "POST" => Answer::Ready(ota::activate_response()),
                _ => Answer::Ready(method_not_allowed("POST")),
            },
            _ => match path.strip_prefix("/api/") {
                Some(rest) => self.management(rest, request),
                None => Answer::Ready(not_found()),
            },
        }
    }

    /// `/api/<rest>`, with express's lenient trailing slash.
    fn management(&self, rest: &str, request: &Request) -> Answer {
        if !self.management_enabled {
            return Answer::Ready(not_found());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let command_id = rest.strip_prefix("commands/");
        let command_route = matches!(command_id, Some(id) if !id.is_empty() && !id.contains('/'));
        if rest != "devices/status" && !command_route {
            return Answer::Ready(not_found());
        }
        if request.method != "POST" {
            return Answer::Ready(method_not_allowed("POST"));
        }
        let now = (self.clock)();
        if !auth::bearer_is_valid(request.header("authorization"), &self.signature_key, now) {
            tracing::debug!(peer = %request.peer, "management API: unauthorized");
            return Answer::Ready(Response::error(401, "unauthorized"));
        }
        match command_id {
            None => self.devices_status(&request.body),
            Some(raw) => match percent_decode(raw) {
                Some(client_id) => self.command(client_id, &request.body),
                None => Answer::Ready(Response::error(400, "bad client id encoding")),
            },
        }
    }

    /// `POST /api/devices/status` `{"clientIds":[..]}` (or `deviceIds`, as
    /// the reference's README says) → `{"<id>":{"isAlive":..,"exists":..}}`.
    fn devices_status(&self, body: &[u8]) -> Answer {
        let ids = match status_ids(body) {
            Ok(ids) => ids,
            Err(message) => return Answer::Ready(Response::error(400, message)),
        };
        let answer = self.gateway.devices_status(ids.clone());
        Answer::Later(Box::pin(async move {
            let mut map = Map::new();
            for id in ids {
                map.insert(id, status_json(DeviceStatus::default()));
            }
            for (id, status) in answer.await {
                map.insert(id, status_json(status));
            }
            Response::json(200, &map)
        }))
    }

    /// `POST /api/commands/:clientId` `{"type":"mcp","payload":{..}}` →
    /// `{"success":true,"data":<result>}` or 500 with the error. A wrong
    /// command type is a 500 as in the reference, which callers rely on.
    fn command(&self, client_id: String, body: &[u8]) -> Answer {
        let Ok(command) = serde_json::from_slice::<Value>(body) else {
            return Answer::Ready(Response::error(400, "body must be JSON"));
        };
        let payload = command
            .get("payload")
            .filter(|p| p.get("method").is_some_and(Value::is_string));
        let (Some("mcp"), Some(payload)) = (command.get("type").and_then(Value::as_str), payload)
        else {
            return Answer::Ready(Response::error(500, "invalid command type"));
        };
        tracing::debug!(%client_id, "management API: command");
        let answer = self.gateway.mcp_command(client_id, payload.clone());
        let limit = self.command_timeout;
        Answer::Later(Box::pin(async move {
            match glommio::timer::timeout(limit, async { Ok(answer.await) }).await {
                Ok(Ok(data)) => {
                    Response::json(200, &serde_json::json!({ "success": true, "data": data }))
                }
                Ok(Err(message)) => Response::error(500, &message),
                Err(_) => Response::error(500, "timeout"),
            }
        }))
    }
}

impl Handler for Api {
    fn handle(&self, request: Request) -> ResponseFuture {
        match self.route(&request) {
            Answer::Ready(response) => Box::pin(std::future::ready(response)),
            Answer::Later(future) => future,
        }
    }
}

/// What a route gives: the response itself, or a future of it when the
/// gateway must be asked first.
enum Answer {
    Ready(Response),
    Later(ResponseFuture),
}

fn not_found() -> Response {
    Response::error(404, "not found")
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::method_not_allowed(allow)
}

fn status_json(status: DeviceStatus) -> Value {
    serde_json::json!({ "isAlive": status.is_alive, "exists": status.exists })
}

fn status_ids(body: &[u8]) -> Result<Vec<String>, &'static str> {
    const NOT_A_LIST: &str = "clientIds must be an array of strings";
    let value: Value = serde_json::from_slice(body).map_err(|_| "body must be JSON")?;
    let list = value
        .get("clientIds")
        .or_else(|| value.get("deviceIds"))
        .and_then(Value::as_array)
        .ok_or(NOT_A_LIST)?;
    list.iter()
        .map(|id| id.as_str().map(str::to_string).ok_or(NOT_A_LIST))
        .collect()
}

/// Decodes `%XX` escapes of a path segment (client ids contain `@@@`, which
/// some clients send as `%40%40%40`). None on a broken escape or a result
/// that is not UTF-8. `+` stays `+`: that rule is for forms, not paths.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value)?;
            let lo = bytes.get(i + 2).copied().and_then(hex_value)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::net::SocketAddr;

    const KEY: &str = "Gw8-Ops-Key";
    /// 2026-11-22T12:00:00Z
    const NOW_MS: u64 = 1_795_348_800_000;
    const CLIENT_ID: &str = "GID_test@@@aa_bb_cc_dd_ee_ff@@@6f1c2d3e";

    fn clock() -> u64 {
        NOW_MS
    }

    #[derive(Default)]
    struct FakeGateway {
        commands: RefCell<Vec<(String, Value)>>,
    }

    impl Gateway for FakeGateway {
        fn devices_status(&self, client_ids: Vec<String>) -> StatusFuture {
            let known: Vec<_> = client_ids
                .into_iter()
                .filter(|id| id == CLIENT_ID)
                .map(|id| {
                    let status = DeviceStatus {
                        is_alive: true,
                        exists: true,
                    };
                    (id, status)
                })
                .collect();
            Box::pin(std::future::ready(known))
        }

        fn mcp_command(&self, client_id: String, payload: Value) -> CommandFuture {
            self.commands
                .borrow_mut()
                .push((client_id.clone(), payload.clone()));
            match payload["method"].as_str() {
                Some("hang") => Box::pin(std::future::pending()),
                Some("fail") => Box::pin(std::future::ready(Err("device said no".to_string()))),
                _ if client_id != CLIENT_ID => {
                    Box::pin(std::future::ready(Err("device offline".to_string())))
                }
                _ => Box::pin(std::future::ready(Ok(
                    serde_json::json!({ "echo": payload["params"] }),
                ))),
            }
        }
    }

    fn api_with(key: &str) -> (Api, Rc<FakeGateway>) {
        let gateway = Rc::new(FakeGateway::default());
        let api = Api::new(
            OtaConfig::default(),
            key.to_string(),
            gateway.clone(),
            clock,
        );
        (api, gateway)
    }

    fn token() -> String {
        format!("Bearer {}", auth::daily_token("2026-11-22", KEY))
    }

    fn request(method: &str, path: &str, auth: Option<&str>, body: &str) -> Request {
        let mut headers = Vec::new();
        if let Some(auth) = auth {
            headers.push(("authorization".to_string(), auth.to_string()));
        }
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers,
            body: body.as_bytes().to_vec(),
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
        }
    }

    /// Runs the handler on a glommio executor (the command timeout is a
    /// glommio timer).
    fn call(api: &Api, request: Request) -> Response {
        let future = api.handle(request);
        glommio::LocalExecutor::default().run(future)
    }

    fn json(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn key_strength_follows_the_reference() {
        assert!(key_is_strong("Gw8-Ops-Key"));
        assert!(key_is_strong("AbcdEfgh"));
        assert!(!key_is_strong("Abc-Efg"), "7 characters");
        assert!(!key_is_strong("abcdefgh1"), "no upper case");
        assert!(!key_is_strong("ABCDEFGH1"), "no lower case");
        for weak in [
            "MyTestKey",
            "Key1234xY",
            "AdminKeyX",
            "PassWord99",
            "QwertyKEY",
            "XiaoZhiKey",
        ] {
            assert!(!key_is_strong(weak), "{weak}");
        }
    }

    #[test]
    fn management_api_is_off_without_a_strong_key() {
        for key in ["", "weakkey1", "Xiaozhi-Key"] {
            let (api, _) = api_with(key);
            let r = call(
                &api,
                request("POST", "/api/devices/status", Some(&token()), "{}"),
            );
            assert_eq!(r.status, 404, "{key:?}");
            // OTA stays up.
            let r = call(&api, request("POST", "/xiaozhi/ota/activate", None, ""));
            assert_eq!(r.status, 200);
        }
    }

    #[test]
    fn management_api_needs_the_daily_token() {
        let (api, _) = api_with(KEY);
        let body = r#"{"clientIds":[]}"#;
        let bad = format!("Bearer {}", auth::daily_token("2026-11-25", KEY));
        for auth in [None, Some("Bearer nope"), Some(bad.as_str())] {
            let r = call(&api, request("POST", "/api/devices/status", auth, body));
            assert_eq!(r.status, 401, "{auth:?}");
            assert_eq!(
                json(&r),
                serde_json::json!({"success":false,"error":"unauthorized"})
            );
        }
        let r = call(
            &api,
            request("POST", "/api/devices/status", Some(&token()), body),
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn devices_status_reports_every_id_asked_for() {
        let (api, _) = api_with(KEY);
        for field in ["clientIds", "deviceIds"] {
            let body = format!(r#"{{"{field}":["{CLIENT_ID}","GID_x@@@11_22_33_44_55_66"]}}"#);
            let r = call(
                &api,
                request("POST", "/api/devices/status/", Some(&token()), &body),
            );
            assert_eq!(r.status, 200);
            assert_eq!(
                json(&r),
                serde_json::json!({
                    CLIENT_ID: {"isAlive": true, "exists": true},
                    "GID_x@@@11_22_33_44_55_66": {"isAlive": false, "exists": false},
                })
            );
        }
        for body in ["", "{}", r#"{"clientIds":"x"}"#, r#"{"clientIds":[1]}"#] {
            let r = call(
                &api,
                request("POST", "/api/devices/status", Some(&token()), body),
            );
            assert_eq!(r.status, 400, "{body:?}");
        }
    }

    #[test]
    fn commands_reach_the_device_with_a_decoded_id() {
        let (api, gateway) = api_with(KEY);
        let body = r#"{"type":"mcp","payload":{"method":"tools/call","params":{"x":1}}}"#;
        let path = "/api/commands/GID_test%40%40%40aa_bb_cc_dd_ee_ff%40%40%406f1c2d3e";
        let r = call(&api, request("POST", path, Some(&token()), body));
        assert_eq!(r.status, 200);
        assert_eq!(
            json(&r),
            serde_json::json!({"success": true, "data": {"echo": {"x": 1}}})
        );
        let sent = gateway.commands.borrow();
        let (id, payload) = sent.first().unwrap();
        assert_eq!(id, CLIENT_ID);
        assert_eq!(payload["method"], "tools/call");
    }

    #[test]
    fn command_failures_are_500() {
        let (mut api, _) = api_with(KEY);
        api.command_timeout = Duration::from_millis(50);
        let cases = [
            ("/api/commands/GID_y@@@aa", "tools/call", "device offline"),
            (
                &*format!("/api/commands/{CLIENT_ID}"),
                "fail",
                "device said no",
            ),
            (&*format!("/api/commands/{CLIENT_ID}"), "hang", "timeout"),
        ];
        for (path, method, error) in cases {
            let body = format!(r#"{{"type":"mcp","payload":{{"method":"{method}"}}}}"#);
            let r = call(&api, request("POST", path, Some(&token()), &body));
            assert_eq!(r.status, 500, "{method}");
            assert_eq!(
                json(&r),
                serde_json::json!({"success": false, "error": error})
            );
        }
        for body in [
            r#"{"type":"iot"}"#,
            r#"{"type":"mcp"}"#,
            r#"{"type":"mcp","payload":{}}"#,
        ] {
            let path = format!("/api/commands/{CLIENT_ID}");
            let r = call(&api, request("POST", &path, Some(&token()), body));
            assert_eq!(r.status, 500, "{body}");
            assert_eq!(json(&r)["error"], "invalid command type");
        }
        let path = format!("/api/commands/{CLIENT_ID}");
        let r = call(&api, request("POST", &path, Some(&token()), "nope"));
        assert_eq!(r.status, 400);
        let r = call(
            &api,
            request("POST", "/api/commands/bad%4", Some(&token()), "{}"),
        );
        assert_eq!(r.status, 400);
    }

    #[test]
    fn routes_methods_and_unknown_paths() {
        let (api, _) = api_with(KEY);
        let r = call(&api, request("POST", "/xiaozhi/ota/activate/", None, ""));
        assert_eq!(r.status, 200);
        let r = call(&api, request("GET", "/xiaozhi/ota/activate", None, ""));
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("Allow", "POST".to_string())]);
        let r = call(&api, request("DELETE", "/xiaozhi/ota/", None, ""));
        assert_eq!(r.status, 405);
        let r = call(
            &api,
            request("GET", "/api/devices/status", Some(&token()), ""),
        );
        assert_eq!(r.status, 405);
        for path in [
            "/",
            "/nope",
            "/api/",
            "/api/commands/",
            "/api/commands/a/b",
            "/api/x",
        ] {
            let r = call(&api, request("POST", path, Some(&token()), "{}"));
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(json(&r)["success"], false);
        }
        let r = call(&api, request("POST", "/xiaozhi/ota/activate", None, ""));
        assert_eq!(json(&r), serde_json::json!({"success": true}));
    }

    #[test]
    fn ota_is_routed_with_and_without_the_slash() {
        let (api, _) = api_with(KEY);
        for (method, path) in [
            ("POST", "/xiaozhi/ota/"),
            ("POST", "/xiaozhi/ota"),
            ("GET", "/xiaozhi/ota/"),
        ] {
            let mut r = request(method, path, None, "");
            r.headers
                .push(("device-id".into(), "aa:bb:cc:dd:ee:ff".into()));
            r.headers.push(("client-id".into(), "u-1".into()));
            let r = call(&api, r);
            assert_eq!(r.status, 200, "{method} {path}");
            assert_eq!(json(&r)["server_time"]["timestamp"], NOW_MS);
        }
        let r = call(&api, request("POST", "/xiaozhi/ota/", None, ""));
        assert_eq!(r.status, 400);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b").as_deref(), Some("a@b"));
        assert_eq!(percent_decode("%e6%9D%bf+").as_deref(), Some("板+"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
