//! The node protocol's messages (seed 000 §4.1, §4.2, §7.1), sans-IO:
//! the envelope every message is wrapped in, the `node_register`
//! payload, the reports nodes publish on their own topics, and the §7.1
//! error a malformed registration is answered with.
//!
//! Each field is checked on its own, and the first that fails names
//! itself in a typed error; the shell publishes that error and counts it
//! by `Field`.

#![forbid(unsafe_code)]

use serde_json::{Map, Value};

/// The protocol version this service speaks (seed 000 §2); a message of
/// another major version is refused (§10: the major number changes with
/// incompatible messages).
pub const PROTOCOL_VERSION: &str = "2.0.0";
const PROTOCOL_MAJOR: u64 = 2;

/// Longest `trace_id` and `node_id`, `group_id`, `node_type` kept.
pub const MAX_ID: usize = 128;

/// Node types of §4.2.
pub const NODE_TYPES: [&str; 2] = ["analysis", "api"];

/// The message type of a registration.
pub const NODE_REGISTER: &str = "node_register";

/// What a message failed on; the label of the errors counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Json,
    Version,
    Timestamp,
    TraceId,
    MessageType,
    Payload,
    NodeId,
    NodeType,
    GroupId,
    Capabilities,
    Metadata,
}

impl Field {
    pub const ALL: [Field; 11] = [
        Field::Json,
        Field::Version,
        Field::Timestamp,
        Field::TraceId,
        Field::MessageType,
        Field::Payload,
        Field::NodeId,
        Field::NodeType,
        Field::GroupId,
        Field::Capabilities,
        Field::Metadata,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The field's name in the message (`payload.node_id` for the
    /// payload's own).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Json => "message",
            Field::Version => "version",
            Field::Timestamp => "timestamp",
            Field::TraceId => "trace_id",
            Field::MessageType => "message_type",
            Field::Payload => "payload",
            Field::NodeId => "payload.node_id",
            Field::NodeType => "payload.node_type",
            Field::GroupId => "payload.group_id",
            Field::Capabilities => "payload.capabilities",
            Field::Metadata => "payload.metadata",
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not a JSON object")]
    NotJson,
    #[error("{} is missing", .0.as_str())]
    Missing(Field),
    #[error("{} must be {expected}", .field.as_str())]
    Invalid {
        field: Field,
        expected: &'static str,
    },
    #[error("protocol version {0:?} is not supported (this service speaks 2.x.y)")]
    Version(String),
}

impl EnvelopeError {
    pub fn field(&self) -> Field {
        match self {
            EnvelopeError::NotJson => Field::Json,
            EnvelopeError::Missing(f) => *f,
            EnvelopeError::Invalid { field, .. } => *field,
            EnvelopeError::Version(_) => Field::Version,
        }
    }

    /// §7.1's `error_code` and `error_type`: `ERR_001`/`VALIDATION_ERROR`
    /// as the seed's example for a bad field, and two more for what the
    /// seed leaves open (a message that is not JSON, another version).
    pub fn code(&self) -> (&'static str, &'static str) {
        match self {
            EnvelopeError::NotJson => ("ERR_002", "PARSE_ERROR"),
            EnvelopeError::Version(_) => ("ERR_003", "VERSION_ERROR"),
            _ => ("ERR_001", "VALIDATION_ERROR"),
        }
    }
}

/// A message's envelope (§4.1), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub version: String,
    pub timestamp: u64,
    pub trace_id: String,
    pub message_type: String,
    pub payload: Map<String, Value>,
}

/// A registration (§4.2), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub trace_id: String,
    pub timestamp: u64,
    pub node_id: String,
    pub node_type: String,
    pub group_id: Option<String>,
    pub capabilities: Value,
    pub metadata: Value,
}

/// An id that can stand as one topic level: not empty, not too long, no
/// `/`, wildcard or control character (a node id becomes a topic level
/// of `/meek/nodes/{node_id}/…`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && !id.contains(['/', '+', '#'])
        && !id.chars().any(char::is_control)
}

fn text<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: Field,
) -> Result<&'a str, EnvelopeError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EnvelopeError::Invalid {
            field,
            expected: "a string",
        }),
    }
}

/// `major.minor.patch`, each a number.
fn version_major(v: &str) -> Option<u64> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?;
    let patch = parts.next()?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (parts.next().is_none() && numeric(minor) && numeric(patch)).then_some(major)
}

/// Checks the envelope of §4.1: `version` (`2.x.y`), `timestamp` (Unix
/// seconds, a non-negative integer), `trace_id` (a non-empty string),
/// `message_type` (a non-empty string), `payload` (an object).
pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| EnvelopeError::NotJson)?;
    let Value::Object(mut map) = value else {
        return Err(EnvelopeError::NotJson);
    };
    let version = text(&map, "version", Field::Version)?;
    match version_major(version) {
        None => {
            return Err(EnvelopeError::Invalid {
                field: Field::Version,
                expected: "a version major.minor.patch",
            })
        }
        Some(PROTOCOL_MAJOR) => {}
        Some(_) => return Err(EnvelopeError::Version(version.to_string())),
    }
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => return Err(EnvelopeError::Missing(Field::Timestamp)),
        Some(v) => v.as_u64().ok_or(EnvelopeError::Invalid {
            field: Field::Timestamp,
            expected: "Unix seconds, a non-negative integer",
        })?,
    };
    let trace_id = text(&map, "trace_id", Field::TraceId)?;
    if trace_id.is_empty() || trace_id.len() > MAX_ID || trace_id.chars().any(char::is_control) {
        return Err(EnvelopeError::Invalid {
            field: Field::TraceId,
            expected: "a non-empty id of at most 128 bytes",
        });
    }
    let message_type = text(&map, "message_type", Field::MessageType)?;
    if message_type.is_empty() || message_type.len() > MAX_ID {
        return Err(EnvelopeError::Invalid {
            field: Field::MessageType,
            expected: "a non-empty name",
        });
    }
    let (version, trace_id, message_type) = (
        version.to_string(),
        trace_id.to_string(),
        message_type.to_string(),
    );
    let payload = match map.remove("payload") {
        None | Some(Value::Null) => return Err(EnvelopeError::Missing(Field::Payload)),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(EnvelopeError::Invalid {
                field: Field::Payload,
                expected: "an object",
            })
        }
    };
    Ok(Envelope {
        version,
        timestamp,
        trace_id,
        message_type,
        payload,
    })
}

/// Checks a message on `/meek/system/nodes` as a registration: the
/// envelope, `message_type` `node_register`, and the payload of §4.2:
/// `node_id` (a topic level), `node_type` (`analysis` or `api`),
/// `group_id` (optional: §6.1 lets the API node assign one), and
/// `capabilities`, `metadata` (objects, optional).
pub fn registration(envelope: Envelope) -> Result<Registration, EnvelopeError> {
    if envelope.message_type != NODE_REGISTER {
        return Err(EnvelopeError::Invalid {
            field: Field::MessageType,
            expected: "node_register",
        });
    }
    let p = &envelope.payload;
    let node_id = text(p, "node_id", Field::NodeId)?;
    if !valid_id(node_id) {
        return Err(EnvelopeError::Invalid {
            field: Field::NodeId,
            expected: "one topic level: 1 to 128 bytes, no '/', '+', '#' or control characters",
        });
    }
    let node_type = text(p, "node_type", Field::NodeType)?;
    if !NODE_TYPES.contains(&node_type) {
        return Err(EnvelopeError::Invalid {
            field: Field::NodeType,
            expected: "\"analysis\" or \"api\"",
        });
    }
    let group_id = match p.get("group_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(g)) if valid_id(g) => Some(g.clone()),
        Some(_) => {
            return Err(EnvelopeError::Invalid {
                field: Field::GroupId,
                expected: "one topic level: 1 to 128 bytes, no '/', '+', '#' or control characters",
            })
        }
    };
    let object = |key: &str, field| match p.get(key) {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(EnvelopeError::Invalid {
            field,
            expected: "an object",
        }),
    };
    Ok(Registration {
        capabilities: object("capabilities", Field::Capabilities)?,
        metadata: object("metadata", Field::Metadata)?,
        node_id: node_id.to_string(),
        node_type: node_type.to_string(),
        group_id,
        trace_id: envelope.trace_id,
        timestamp: envelope.timestamp,
    })
}

/// The §7.1 error for a refused registration. `details` names the field
/// and the reason, and carries the message's `trace_id` and `node_id`
/// when they could be read, so the node can match the error to its
/// message.
pub fn error_message(error: &EnvelopeError, bytes: &[u8]) -> Value {
    let (code, kind) = error.code();
    let mut details = Map::new();
    details.insert("field".into(), error.field().as_str().into());
    details.insert("reason".into(), error.to_string().into());
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(bytes) {
        if let Some(Value::String(t)) = m.get("trace_id") {
            details.insert("trace_id".into(), t.clone().into());
        }
        if let Some(Value::String(n)) = m.get("payload").and_then(|p| p.get("node_id")) {
            details.insert("node_id".into(), n.clone().into());
        }
    }
    serde_json::json!({
        "error_code": code,
        "error_type": kind,
        "message": "invalid node registration",
        "details": details,
    })
}

/// What a node reports on `/meek/nodes/{node_id}/{status|health|resource}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Status,
    Health,
    Resource,
}

impl Report {
    pub const ALL: [Report; 3] = [Report::Status, Report::Health, Report::Resource];

    pub fn as_str(self) -> &'static str {
        match self {
            Report::Status => "status",
            Report::Health => "health",
            Report::Resource => "resource",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The node and the report of a topic `/meek/nodes/{node_id}/{kind}`.
pub fn report_topic(topic: &str) -> Option<(&str, Report)> {
    let rest = topic.strip_prefix("/meek/nodes/")?;
    let (node, kind) = rest.split_once('/')?;
    let kind = match kind {
        "status" => Report::Status,
        "health" => Report::Health,
        "resource" => Report::Resource,
        _ => return None,
    };
    valid_id(node).then_some((node, kind))
}

/// A report's content: the envelope's `payload` when the message is an
/// envelope, else the JSON value as sent, else (a status or a will sent
/// as plain text, `offline`) the text as a JSON string. `None` for bytes
/// that are none of these.
pub fn report_body(bytes: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut m)) if m.contains_key("message_type") => match m.remove("payload") {
            Some(p @ Value::Object(_)) => Some(p),
            _ => Some(Value::Object(m)),
        },
        Ok(v) => Some(v),
        Err(_) => {
            let s = std::str::from_utf8(bytes).ok()?.trim();
            (!s.is_empty() && s.len() <= MAX_ID && !s.chars().any(char::is_control))
                .then(|| Value::String(s.to_string()))
        }
    }
}

/// The status a status report names: its `status` field, or the report
/// itself when it is a string.
pub fn status_of(body: &Value) -> Option<&str> {
    match body {
        Value::String(s) => Some(s),
        Value::Object(m) => m.get("status").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
