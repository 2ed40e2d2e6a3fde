//! The registry of MS500 device heartbeats (sans-IO, clock from the caller).
//!
//! Devices publish on `/device/ms500/{device_id}/online` every few seconds.
//! The registry keeps, per device, the last heartbeat's known fields (the
//! ones seed 001's relay shows: timestamp, IP, network type, ethernet /
//! Wi-Fi / LTE state, CPU and sensor temperatures, video and SPI frame
//! rates) and its raw JSON, and says when a device goes online (a
//! heartbeat after silence, or the first) and offline (no heartbeat for
//! `timeout`). Each transition is reported once, for the log. At
//! `max_devices`, a new device takes the place of the one offline the
//! longest; when all are online it is refused (and counted by the shell).
//!
//! The firmware's JSON key names are not in the seed, so each field is read
//! under the names a firmware would plausibly use (see `KEYS`); the raw JSON
//! is kept whole, so nothing the device sent is lost.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

/// The topic filter devices publish heartbeats on.
pub const HEARTBEAT_FILTER: &str = "/device/ms500/+/online";

const PREFIX: &str = "/device/ms500/";
const SUFFIX: &str = "/online";

/// Longest device id kept.
pub const MAX_DEVICE_ID: usize = 128;

/// The known fields of a heartbeat, each absent when the device did not
/// send it (or sent it in another form).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Heartbeat {
    pub timestamp: Option<i64>,
    pub ip: Option<String>,
    pub network_type: Option<String>,
    pub ethernet: Option<bool>,
    pub wifi: Option<bool>,
    pub lte: Option<bool>,
    pub cpu_temp: Option<f64>,
    pub sense_temp: Option<f64>,
    pub video_fps: Option<f64>,
    pub spi_fps: Option<f64>,
}

/// The names each field is read under, first match wins.
const KEYS: [(&str, &[&str]); 10] = [
    ("timestamp", &["timestamp", "ts", "time"]),
    ("ip", &["ip", "ip_address", "ipAddress", "IP"]),
    (
        "network_type",
        &["network_type", "net_type", "networkType", "network"],
    ),
    (
        "ethernet",
        &[
            "eth",
            "ethernet",
            "eth_connected",
            "eth_status",
            "ethConnected",
        ],
    ),
    (
        "wifi",
        &["wifi", "wifi_connected", "wifi_status", "wifiConnected"],
    ),
    (
        "lte",
        &["lte", "lte_connected", "lte_status", "lteConnected"],
    ),
    ("cpu_temp", &["cpu_temp", "cpu_temperature", "cpuTemp"]),
    (
        "sense_temp",
        &[
            "sense_temp",
            "sensor_temp",
            "sense_temperature",
            "senseTemp",
        ],
    ),
    ("video_fps", &["video_fps", "vid_fps", "videoFps", "fps"]),
    ("spi_fps", &["spi_fps", "spiFps"]),
];

fn find<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    let (_, names) = KEYS.iter().find(|(f, _)| *f == field)?;
    names.iter().find_map(|n| map.get(*n))
}

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        Value::String(s) => match s.as_str() {
            "1" | "true" | "on" | "up" | "connected" => Some(true),
            "0" | "false" | "off" | "down" | "disconnected" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Heartbeat {
    /// Reads the known fields of a heartbeat object.
    pub fn from_json(map: &Map<String, Value>) -> Heartbeat {
        let text = |f| find(map, f).and_then(Value::as_str).map(str::to_string);
        Heartbeat {
            timestamp: find(map, "timestamp").and_then(Value::as_i64),
            ip: text("ip"),
            network_type: text("network_type"),
            ethernet: find(map, "ethernet").and_then(flag),
            wifi: find(map, "wifi").and_then(flag),
            lte: find(map, "lte").and_then(flag),
            cpu_temp: find(map, "cpu_temp").and_then(number),
            sense_temp: find(map, "sense_temp").and_then(number),
            video_fps: find(map, "video_fps").and_then(number),
            spi_fps: find(map, "spi_fps").and_then(number),
        }
    }
}

/// Why a heartbeat was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("topic {0:?} names no device")]
    Topic(String),
    #[error("payload is not a JSON object")]
    Payload,
    #[error("registry full ({0} devices)")]
    Full(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Online,
    Offline,
}

/// A device's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub device: String,
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub state: State,
    pub last_seen: Instant,
    pub heartbeats: u64,
    pub last: Heartbeat,
    /// The last heartbeat's payload, as sent.
    pub raw: Value,
}

/// The device id of a heartbeat topic: the one level between the prefix
/// and `/online`.
pub fn device_of_topic(topic: &str) -> Option<&str> {
    let id = topic.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let ok = !id.is_empty()
        && id.len() <= MAX_DEVICE_ID
        && !id.contains(['/', '+', '#'])
        && !id.chars().any(char::is_control);
    ok.then_some(id)
}

/// See the module docs.
#[derive(Debug)]
pub struct Registry {
    timeout: Duration,
    max_devices: usize,
    devices: HashMap<String, Device>,
}

impl Registry {
    pub fn new(timeout: Duration, max_devices: usize) -> Registry {
        Registry {
            timeout,
            max_devices,
            devices: HashMap::new(),
        }
    }

    /// A heartbeat published on `topic`; `Ok(Some)` when the device came
    /// online with it.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<Transition>, HeartbeatError> {
        let id = device_of_topic(topic).ok_or_else(|| HeartbeatError::Topic(topic.to_string()))?;
        let raw: Value = serde_json::from_slice(payload).map_err(|_| HeartbeatError::Payload)?;
        let Value::Object(map) = &raw else {
            return Err(HeartbeatError::Payload);
        };
        let last = Heartbeat::from_json(map);
        if let Some(d) = self.devices.get_mut(id) {
            let was = d.state;
            d.state = State::Online;
            d.last_seen = now;
            d.heartbeats += 1;
            d.last = last;
            d.raw = raw;
            return Ok((was == State::Offline).then(|| Transition {
                device: id.to_string(),
                state: State::Online,
            }));
        }
        if self.devices.len() >= self.max_devices && !self.evict_offline() {
            return Err(HeartbeatError::Full(self.max_devices));
        }
        self.devices.insert(
            id.to_string(),
            Device {
                state: State::Online,
                last_seen: now,
                heartbeats: 1,
                last,
                raw,
            },
        );
        Ok(Some(Transition {
            device: id.to_string(),
            state: State::Online,
        }))
    }

    /// Marks offline the devices silent for `timeout`; appends each that
    /// went offline now to `out`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Transition>) {
        for (id, d) in &mut self.devices {
            if d.state == State::Online
                && now.saturating_duration_since(d.last_seen) >= self.timeout
            {
                d.state = State::Offline;
                out.push(Transition {
                    device: id.clone(),
                    state: State::Offline,
                });
            }
        }
    }

    /// Makes room by forgetting the device offline the longest; `false`
    /// when every device is online.
    fn evict_offline(&mut self) -> bool {
        let oldest = self
            .devices
            .iter()
            .filter(|(_, d)| d.state == State::Offline)
            .min_by_key(|(_, d)| d.last_seen)
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => self.devices.remove(&id).is_some(),
            None => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Devices online and offline.
    pub fn counts(&self) -> (usize, usize) {
        let online = self
            .devices
            .values()
            .filter(|d| d.state == State::Online)
            .count();
        (online, self.devices.len() - online)
    }

    /// The registry as `GET /api/devices` shows it, sorted by id.
    pub fn snapshot(&self, now: Instant) -> Value {
        let mut ids: Vec<&String> = self.devices.keys().collect();
        ids.sort();
        let devices: Vec<Value> = ids
            .into_iter()
            .filter_map(|id| {
                let d = self.devices.get(id)?;
                Some(serde_json::json!({
                    "device_id": id,
                    "state": d.state,
                    "last_seen_ms_ago": now.saturating_duration_since(d.last_seen).as_millis() as u64,
                    "heartbeats": d.heartbeats,
                    "heartbeat": d.last,
                    "raw": d.raw,
                }))
            })
            .collect();
        let (online, offline) = self.counts();
        serde_json::json!({
            "online": online,
            "offline": offline,
            "timeout_s": self.timeout.as_secs_f64(),
            "devices": devices,
        })
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
