//! Validation of one backend command and the topic it goes to (sans-IO).
//!
//! A command is a JSON object with `type` (one of the twelve of seed 001's
//! table) and `unit` (the device). The fields each type needs are checked
//! for presence and kind; every field, checked or not (such as `camera`),
//! reaches the device untouched, because the bytes published are the
//! backend's own, never a re-serialisation.

#![forbid(unsafe_code)]

use serde_json::{Map, Value};

/// The twelve command types of seed 001.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// Update the AI model.
    Aim,
    /// Update the firmware.
    Fmw,
    /// Update the application.
    App,
    /// Update the ROI coordinates.
    Cdn,
    /// Update configuration parameters.
    Cfg,
    /// Update capture settings (`cs_*`).
    Cts,
    /// Update Wi-Fi settings.
    Wfi,
    /// Ask the device for its current settings.
    Scs,
    /// Update device system settings.
    Uds,
    /// Factory reset.
    Frs,
    /// Ask the device for a picture.
    Img,
    /// Ask the device to send again.
    Rsr,
}

impl CommandType {
    pub const ALL: [CommandType; 12] = [
        CommandType::Aim,
        CommandType::Fmw,
        CommandType::App,
        CommandType::Cdn,
        CommandType::Cfg,
        CommandType::Cts,
        CommandType::Wfi,
        CommandType::Scs,
        CommandType::Uds,
        CommandType::Frs,
        CommandType::Img,
        CommandType::Rsr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Aim => "AIM",
            CommandType::Fmw => "FMW",
            CommandType::App => "APP",
            CommandType::Cdn => "CDN",
            CommandType::Cfg => "CFG",
            CommandType::Cts => "CTS",
            CommandType::Wfi => "WFI",
            CommandType::Scs => "SCS",
            CommandType::Uds => "UDS",
            CommandType::Frs => "FRS",
            CommandType::Img => "IMG",
            CommandType::Rsr => "RSR",
        }
    }

    pub fn parse(s: &str) -> Option<CommandType> {
        CommandType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Its place in `ALL`, for per-type counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The fields this type needs and what each must hold.
    fn fields(self) -> &'static [(&'static str, Kind)] {
        match self {
            CommandType::Aim => &[
                ("model_id", Kind::Id),
                ("link", Kind::Text),
                ("md5", Kind::Md5),
            ],
            CommandType::Fmw => &[
                ("firmware_id", Kind::Id),
                ("link", Kind::Text),
                ("md5", Kind::Md5),
            ],
            CommandType::App => &[
                ("application_id", Kind::Id),
                ("link", Kind::Text),
                ("md5", Kind::Md5),
            ],
            CommandType::Cdn => &[("coordinates", Kind::Array)],
            CommandType::Cfg => &[("configs", Kind::Object)],
            CommandType::Wfi => &[("wifi_enabled", Kind::Flag), ("wifi_password", Kind::Str)],
            CommandType::Uds => &[("settings", Kind::Object)],
            CommandType::Frs => &[("reset_level", Kind::Level)],
            // CTS is checked by its `cs_` prefix (see `check_cts`).
            CommandType::Cts | CommandType::Scs | CommandType::Img | CommandType::Rsr => &[],
        }
    }
}

/// What a checked field must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier: a non-negative integer (`"model_id": 5` in the seed)
    /// or a non-empty string.
    Id,
    /// A non-empty string (a download link).
    Text,
    /// Any string, empty included (an open network's password).
    Str,
    /// 32 hexadecimal digits.
    Md5,
    Array,
    Object,
    /// `true`/`false`, or the firmware's `0`/`1`.
    Flag,
    /// A non-negative integer.
    Level,
    /// A non-negative number (a frame rate).
    Rate,
    /// A capture setting: a boolean, number or string.
    Scalar,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Id => "a non-negative integer or a non-empty string",
            Kind::Text => "a non-empty string",
            Kind::Str => "a string",
            Kind::Md5 => "32 hexadecimal digits",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Flag => "true, false, 0 or 1",
            Kind::Level => "a non-negative integer",
            Kind::Rate => "a non-negative number",
            Kind::Scalar => "a boolean, number or string",
        }
    }

    fn admits(self, v: &Value) -> bool {
        match self {
            Kind::Id => v.as_u64().is_some() || v.as_str().is_some_and(|s| !s.is_empty()),
            Kind::Text => v.as_str().is_some_and(|s| !s.is_empty()),
            Kind::Str => v.is_string(),
            Kind::Md5 => v
                .as_str()
                .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())),
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
            Kind::Flag => v.is_boolean() || matches!(v.as_u64(), Some(0 | 1)),
            Kind::Level => v.as_u64().is_some(),
            Kind::Rate => v.as_f64().is_some_and(|f| f >= 0.0),
            Kind::Scalar => v.is_boolean() || v.is_number() || v.is_string(),
        }
    }
}

/// Why a command is refused. `field` names the field at fault, if one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("command longer than {max} bytes")]
    TooLarge { max: usize },
    #[error("missing field {field}")]
    Missing { field: &'static str },
    #[error("field {field} must be {expected}")]
    Invalid {
        field: String,
        expected: &'static str,
    },
    #[error("unknown command type {0:?}")]
    UnknownType(String),
    #[error("unit {0}")]
    Unit(#[from] UnitError),
    /// Valid, but the external broker's outbox stayed full.
    #[error("broker unavailable; command dropped")]
    Unavailable,
}

impl CommandError {
    /// The field at fault, for the backend's reply.
    pub fn field(&self) -> Option<&str> {
        match self {
            CommandError::Missing { field } => Some(field),
            CommandError::Invalid { field, .. } => Some(field),
            CommandError::UnknownType(_) => Some("type"),
            CommandError::Unit(_) => Some("unit"),
            _ => None,
        }
    }

    /// The reason label of `shardmq_relay_rejected_total`.
    pub fn reason(&self) -> Reason {
        match self {
            CommandError::Json(_) | CommandError::NotObject => Reason::InvalidJson,
            CommandError::TooLarge { .. } => Reason::TooLarge,
            CommandError::Missing { .. } => Reason::MissingField,
            CommandError::Invalid { .. } => Reason::InvalidField,
            CommandError::UnknownType(_) => Reason::UnknownType,
            CommandError::Unit(_) => Reason::InvalidUnit,
            CommandError::Unavailable => Reason::Unavailable,
        }
    }
}

/// Reasons a command is refused, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidJson,
    TooLarge,
    MissingField,
    InvalidField,
    UnknownType,
    InvalidUnit,
    Unavailable,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::InvalidJson,
        Reason::TooLarge,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::UnknownType,
        Reason::InvalidUnit,
        Reason::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::TooLarge => "too_large",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::UnknownType => "unknown_type",
            Reason::InvalidUnit => "invalid_unit",
            Reason::Unavailable => "broker_unavailable",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a `unit` cannot name a topic level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {0} bytes")]
    TooLong(usize),
    #[error("contains {0:?}, which cannot be in a topic level")]
    Forbidden(char),
}

/// Checks that `unit` is one topic level that matches only itself: no
/// level separator, no wildcard, no NUL or other control character.
pub fn check_unit(unit: &str, max_len: usize) -> Result<(), UnitError> {
    if unit.is_empty() {
        return Err(UnitError::Empty);
    }
    if unit.len() > max_len {
        return Err(UnitError::TooLong(max_len));
    }
    match unit
        .chars()
        .find(|&c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        Some(c) => Err(UnitError::Forbidden(c)),
        None => Ok(()),
    }
}

/// A command that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub kind: CommandType,
    pub unit: String,
}

/// Parses and checks one command's bytes; see the module docs.
pub fn validate(bytes: &[u8], max_unit_len: usize) -> Result<Command, CommandError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| CommandError::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(CommandError::NotObject);
    };
    let kind = match map.get("type") {
        None => return Err(CommandError::Missing { field: "type" }),
        Some(Value::String(s)) => {
            CommandType::parse(s).ok_or_else(|| CommandError::UnknownType(s.clone()))?
        }
        Some(_) => {
            return Err(CommandError::Invalid {
                field: "type".to_string(),
                expected: "a string",
            })
        }
    };
    let unit = match map.get("unit") {
        None => return Err(CommandError::Missing { field: "unit" }),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(CommandError::Invalid {
                field: "unit".to_string(),
                expected: "a string",
            })
        }
    };
    check_unit(unit, max_unit_len)?;
    for &(field, want) in kind.fields() {
        match map.get(field) {
            None => return Err(CommandError::Missing { field }),
            Some(v) if !want.admits(v) => {
                return Err(CommandError::Invalid {
                    field: field.to_string(),
                    expected: want.describe(),
                })
            }
            Some(_) => {}
        }
    }
    if kind == CommandType::Cts {
        check_cts(&map)?;
    }
    Ok(Command {
        kind,
        unit: unit.clone(),
    })
}

/// CTS carries capture settings named `cs_*` (`cs_picEnable`, `cs_vidFps`,
/// … in the seed): at least one, each a scalar, the seed's two of their
/// natural kinds.
fn check_cts(map: &Map<String, Value>) -> Result<(), CommandError> {
    let mut any = false;
    for (key, value) in map.iter().filter(|(k, _)| k.starts_with("cs_")) {
        any = true;
        let want = match key.as_str() {
            "cs_picEnable" => Kind::Flag,
            "cs_vidFps" => Kind::Rate,
            _ => Kind::Scalar,
        };
        if !want.admits(value) {
            return Err(CommandError::Invalid {
                field: key.clone(),
                expected: want.describe(),
            });
        }
    }
    if !any {
        return Err(CommandError::Missing { field: "cs_*" });
    }
    Ok(())
}

/// The topic of a unit: `template` with `{unit}` replaced.
pub fn topic(template: &str, unit: &str) -> String {
    template.replace("{unit}", unit)
}

/// The reply line for a command (`reply = true`), newline included.
pub fn reply(outcome: &Result<String, CommandError>) -> Vec<u8> {
    let value = match outcome {
        Ok(topic) => serde_json::json!({ "ok": true, "topic": topic }),
        Err(e) => serde_json::json!({
            "ok": false,
            "error": e.to_string(),
            "field": e.field(),
        }),
    };
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
