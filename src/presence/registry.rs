//! The registry of MeekYolo nodes (sans-IO, clock from the caller).
//!
//! A node comes online with its registration (seed 000 §4.2) and stays
//! online while it reports health (`/meek/nodes/{node_id}/health`); it
//! goes offline when its will arrives (see `mod.rs` for the convention)
//! or when no health report came for `health_timeout`. A health report
//! after that brings it back. Each transition is reported once, for the
//! log and the snapshot. At `max_nodes`, a new node takes the place of
//! the one offline the longest; when all are online it is refused (and
//! counted by the shell).
//!
//! Every change marks the registry dirty; `snapshot_due` says when the
//! retained snapshot is to be published again, at most once per interval.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::envelope::{status_of, Registration, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Online,
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Offline => "offline",
        }
    }
}

/// Why a node went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Its will (or its own `offline` status).
    Will,
    /// No health report for `health_timeout`.
    HealthTimeout,
}

/// A node's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub node: String,
    pub state: State,
    pub cause: Option<Cause>,
}

/// Why a message changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry full ({0} nodes)")]
    Full(usize),
    #[error("node {0:?} is not registered")]
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub node_type: String,
    pub group_id: Option<String>,
    pub capabilities: Value,
    pub metadata: Value,
    pub state: State,
    pub offline_cause: Option<Cause>,
    /// The last status the node reported, and the report whole.
    pub status: Option<String>,
    pub status_report: Option<Value>,
    pub health: Option<Value>,
    pub resource: Option<Value>,
    pub registered_at: u64,
    pub registrations: u64,
    /// Registration or last health report.
    pub last_alive: Instant,
    pub last_health: Option<Instant>,
    pub changed: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct Registry {
    health_timeout: Duration,
    max_nodes: usize,
    nodes: HashMap<String, Node>,
    dirty: bool,
    last_snapshot: Option<Instant>,
}

impl Registry {
    pub fn new(health_timeout: Duration, max_nodes: usize) -> Registry {
        Registry {
            health_timeout,
            max_nodes,
            nodes: HashMap::new(),
            // The first snapshot replaces whatever an earlier run retained.
            dirty: true,
            last_snapshot: None,
        }
    }

    /// A valid registration: the node is (again) online with what it
    /// declared. `Ok(Some)` when it came online with it.
    pub fn register(
        &mut self,
        now: Instant,
        reg: Registration,
    ) -> Result<Option<Transition>, RegistryError> {
        self.dirty = true;
        if let Some(n) = self.nodes.get_mut(&reg.node_id) {
            let was = n.state;
            n.node_type = reg.node_type;
            n.group_id = reg.group_id;
            n.capabilities = reg.capabilities;
            n.metadata = reg.metadata;
            n.registered_at = reg.timestamp;
            n.registrations += 1;
            n.last_alive = now;
            n.state = State::Online;
            n.offline_cause = None;
            if was == State::Offline {
                n.changed = now;
                return Ok(Some(online(&reg.node_id)));
            }
            return Ok(None);
        }
        if self.nodes.len() >= self.max_nodes && !self.evict_offline() {
            self.dirty = false;
            return Err(RegistryError::Full(self.max_nodes));
        }
        let transition = online(&reg.node_id);
        self.nodes.insert(
            reg.node_id,
            Node {
                node_type: reg.node_type,
                group_id: reg.group_id,
                capabilities: reg.capabilities,
                metadata: reg.metadata,
                state: State::Online,
                offline_cause: None,
                status: None,
                status_report: None,
                health: None,
                resource: None,
                registered_at: reg.timestamp,
                registrations: 1,
                last_alive: now,
                last_health: None,
                changed: now,
            },
        );
        Ok(Some(transition))
    }

    /// A report of a registered node (`body` from `envelope::report_body`).
    /// Health keeps the node online (and brings it back); a status
    /// `offline` (its will) takes it offline; other statuses and resource
    /// reports are kept as they are.
    pub fn report(
        &mut self,
        now: Instant,
        node: &str,
        kind: Report,
        body: Value,
    ) -> Result<Option<Transition>, RegistryError> {
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| RegistryError::Unknown(node.to_string()))?;
        self.dirty = true;
        match kind {
            Report::Resource => {
                n.resource = Some(body);
                Ok(None)
            }
            Report::Health => {
                n.health = Some(body);
                n.last_health = Some(now);
                n.last_alive = now;
                if n.state == State::Offline {
                    n.state = State::Online;
                    n.offline_cause = None;
                    n.changed = now;
                    return Ok(Some(online(node)));
                }
                Ok(None)
            }
            Report::Status => {
                let status = status_of(&body).map(str::to_string);
                n.status_report = Some(body);
                let offline = status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("offline"));
                n.status = status;
                if offline && n.state == State::Online {
                    n.state = State::Offline;
                    n.offline_cause = Some(Cause::Will);
                    n.changed = now;
                    return Ok(Some(Transition {
                        node: node.to_string(),
                        state: State::Offline,
                        cause: Some(Cause::Will),
                    }));
                }
                Ok(None)
            }
        }
    }

    /// Marks offline the nodes without a health report (or registration)
    /// for `health_timeout`; appends each that went offline now to `out`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Transition>) {
        for (id, n) in &mut self.nodes {
            if n.state == State::Online
                && now.saturating_duration_since(n.last_alive) >= self.health_timeout
            {
                n.state = State::Offline;
                n.offline_cause = Some(Cause::HealthTimeout);
                n.changed = now;
                self.dirty = true;
                out.push(Transition {
                    node: id.clone(),
                    state: State::Offline,
                    cause: Some(Cause::HealthTimeout),
                });
            }
        }
    }

    /// `true` when the registry changed since the last snapshot and the
    /// last is at least `interval` old; the caller then publishes
    /// `snapshot` (this call counts as that publish).
    pub fn snapshot_due(&mut self, now: Instant, interval: Duration) -> bool {
        let waited = self
            .last_snapshot
            .map_or(true, |t| now.saturating_duration_since(t) >= interval);
        if self.dirty && waited {
            self.dirty = false;
            self.last_snapshot = Some(now);
            return true;
        }
        false
    }

    /// Marks the registry changed, so the snapshot goes out again.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Makes room by forgetting the node offline the longest; `false`
    /// when every node is online.
    fn evict_offline(&mut self) -> bool {
        let oldest = self
            .nodes
            .iter()
            .filter(|(_, n)| n.state == State::Offline)
            .min_by_key(|(_, n)| n.changed)
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => self.nodes.remove(&id).is_some(),
            None => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes online and offline.
    pub fn counts(&self) -> (usize, usize) {
        let online = self
            .nodes
            .values()
            .filter(|n| n.state == State::Online)
            .count();
        (online, self.nodes.len() - online)
    }

    /// The registry as JSON, sorted by node id; only the nodes of `group`
    /// and whose state or reported status is `status`, when given.
    pub fn snapshot(&self, now: Instant, group: Option<&str>, status: Option<&str>) -> Value {
        let mut ids: Vec<&String> = self.nodes.keys().collect();
        ids.sort();
        let ms = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let nodes: Vec<Value> = ids
            .into_iter()
            .filter_map(|id| {
                let n = self.nodes.get(id)?;
                if group.is_some_and(|g| n.group_id.as_deref() != Some(g)) {
                    return None;
                }
                if status.is_some_and(|s| n.state.as_str() != s && n.status.as_deref() != Some(s)) {
                    return None;
                }
                Some(serde_json::json!({
                    "node_id": id,
                    "node_type": n.node_type,
                    "group_id": n.group_id,
                    "state": n.state,
                    "offline_cause": n.offline_cause,
                    "status": n.status,
                    "capabilities": n.capabilities,
                    "metadata": n.metadata,
                    "health": n.health,
                    "resource": n.resource,
                    "status_report": n.status_report,
                    "registered_at": n.registered_at,
                    "registrations": n.registrations,
                    "last_alive_ms_ago": ms(n.last_alive),
                    "last_health_ms_ago": n.last_health.map(ms),
                }))
            })
            .collect();
        let (online, offline) = self.counts();
        serde_json::json!({
            "online": online,
            "offline": offline,
            "health_timeout_s": self.health_timeout.as_secs_f64(),
            "nodes": nodes,
        })
    }
}

/// The first value of `name` in a query string, percent-decoded (`+` as
/// a space); `None` when absent or not UTF-8 once decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })?;
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: Option<u8>| c.and_then(|c| (c as char).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return None,
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn online(node: &str) -> Transition {
    Transition {
        node: node.to_string(),
        state: State::Online,
        cause: None,
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
