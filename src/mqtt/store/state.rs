//! What a store holds once its records are replayed: persistent sessions
//! and retained messages, as plain data the broker restores from, and
//! the same state written back as records for a compaction.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use super::Record;
use crate::mqtt::session::Message;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// An outgoing QoS 1/2 message in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightState {
    pub pkid: u16,
    pub message: Message,
    /// PUBREC came and PUBREL went out: PUBCOMP is awaited.
    pub released: bool,
}

/// One persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub subscriptions: BTreeMap<String, QoS>,
    pub inflight: VecDeque<InflightState>,
    pub queue: VecDeque<Message>,
    /// Inbound QoS 2 ids awaiting PUBREL, in the order they came.
    pub inbound_qos2: Vec<u16>,
    /// When the client left (Unix ms); `None` while it was connected.
    pub offline_since_ms: Option<u64>,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedState {
    pub qos: QoS,
    pub payload: Bytes,
}

/// The replayed content of one store.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub sessions: HashMap<String, SessionState>,
    pub retained: HashMap<String, (TopicName, RetainedState)>,
    /// Records about a session no `Open` started, or a packet id not held:
    /// they check, so they are not damage, but they change nothing.
    pub ignored: u64,
}

impl State {
    /// Replays `record` over this state.
    pub fn apply(&mut self, record: Record) {
        let applied = match record {
            Record::Open { client_id } => {
                self.sessions.insert(client_id, SessionState::default());
                true
            }
            Record::End { client_id } => self.sessions.remove(&client_id).is_some(),
            Record::Retain {
                topic,
                qos,
                payload,
            } => {
                if payload.is_empty() {
                    self.retained.remove(topic.as_str());
                } else {
                    let key = topic.as_str().to_string();
                    self.retained
                        .insert(key, (topic, RetainedState { qos, payload }));
                }
                true
            }
            other => self.apply_to_session(other),
        };
        if !applied {
            self.ignored += 1;
        }
    }

    fn apply_to_session(&mut self, record: Record) -> bool {
        let client_id = match &record {
            Record::Presence { client_id, .. }
            | Record::Subscribe { client_id, .. }
            | Record::Unsubscribe { client_id, .. }
            | Record::Enqueue { client_id, .. }
            | Record::Send { client_id, .. }
            | Record::Dequeue { client_id, .. }
            | Record::Acked { client_id, .. }
            | Record::Released { client_id, .. }
            | Record::InboundQos2 { client_id, .. }
            | Record::InboundReleased { client_id, .. } => client_id,
            Record::Open { .. } | Record::End { .. } | Record::Retain { .. } => return false,
        };
        let Some(s) = self.sessions.get_mut(client_id.as_str()) else {
            return false;
        };
        match record {
            Record::Presence { online, at_ms, .. } => {
                s.offline_since_ms = (!online).then_some(at_ms);
            }
            Record::Subscribe { filter, qos, .. } => {
                s.subscriptions.insert(filter, qos);
            }
            Record::Unsubscribe { filter, .. } => return s.subscriptions.remove(&filter).is_some(),
            Record::Enqueue { message, .. } => s.queue.push_back(message),
            Record::Send { pkid, message, .. } => s.inflight.push_back(InflightState {
                pkid,
                message,
                released: false,
            }),
            Record::Dequeue { pkid, .. } => {
                let Some(message) = s.queue.pop_front() else {
                    return false;
                };
                if pkid != 0 && message.qos != QoS::AtMostOnce {
                    s.inflight.push_back(InflightState {
                        pkid,
                        message,
                        released: false,
                    });
                }
            }
            Record::Acked { pkid, .. } => {
                let before = s.inflight.len();
                s.inflight.retain(|f| f.pkid != pkid);
                return s.inflight.len() != before;
            }
            Record::Released { pkid, .. } => {
                let Some(f) = s.inflight.iter_mut().find(|f| f.pkid == pkid) else {
                    return false;
                };
                f.released = true;
            }
            Record::InboundQos2 { pkid, .. } => {
                if !s.inbound_qos2.contains(&pkid) {
                    s.inbound_qos2.push(pkid);
                }
            }
            Record::InboundReleased { pkid, .. } => {
                let before = s.inbound_qos2.len();
                s.inbound_qos2.retain(|&p| p != pkid);
                return s.inbound_qos2.len() != before;
            }
            Record::Open { .. } | Record::End { .. } | Record::Retain { .. } => return false,
        }
        true
    }

    /// Drops the sessions offline for longer than `expiry_ms` at `now_ms`
    /// (Unix ms); returns how many. A session without a departure time was
    /// connected when the store was last written: its time starts at load.
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| {
            s.offline_since_ms
                .map_or(true, |at| now_ms.saturating_sub(at) <= expiry_ms)
        });
        before - self.sessions.len()
    }

    /// Filters held by the sessions, each once.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .sessions
            .values()
            .flat_map(|s| s.subscriptions.keys().cloned())
            .collect();
        filters.sort_unstable();
        filters.dedup();
        filters
    }

    /// What a store check prints.
    pub fn summary(&self) -> Summary {
        let mut sum = Summary {
            sessions: self.sessions.len(),
            retained: self.retained.len(),
            ignored_records: self.ignored,
            ..Summary::default()
        };
        for s in self.sessions.values() {
            sum.subscriptions += s.subscriptions.len();
            sum.queued += s.queue.len();
            sum.inflight += s.inflight.len();
            sum.inbound_qos2 += s.inbound_qos2.len();
        }
        for (topic, r) in self.retained.values() {
            sum.retained_bytes += topic.as_str().len() + r.payload.len();
        }
        sum
    }
}

/// Counts of what a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    pub inbound_qos2: usize,
    pub retained: usize,
    /// Topic names and payloads of the retained messages.
    pub retained_bytes: usize,
    pub ignored_records: u64,
}

/// The records that rebuild one session exactly: `Open`, then its
/// presence, filters, window (with the PUBREL state), queue and inbound
/// ids. A compaction writes these; so does a session that becomes
/// persistent while it holds state.
pub fn session_records(client_id: &str, s: &SessionState, out: &mut Vec<u8>) {
    let id = || client_id.to_string();
    super::encode(out, &Record::Open { client_id: id() });
    if let Some(at_ms) = s.offline_since_ms {
        let online = false;
        super::encode(
            out,
            &Record::Presence {
                client_id: id(),
                online,
                at_ms,
            },
        );
    }
    for (filter, qos) in &s.subscriptions {
        let (filter, qos) = (filter.clone(), *qos);
        super::encode(
            out,
            &Record::Subscribe {
                client_id: id(),
                filter,
                qos,
            },
        );
    }
    for f in &s.inflight {
        let (pkid, message) = (f.pkid, f.message.clone());
        super::encode(
            out,
            &Record::Send {
                client_id: id(),
                pkid,
                message,
            },
        );
        if f.released {
            super::encode(
                out,
                &Record::Released {
                    client_id: id(),
                    pkid,
                },
            );
        }
    }
    for message in &s.queue {
        let message = message.clone();
        super::encode(
            out,
            &Record::Enqueue {
                client_id: id(),
                message,
            },
        );
    }
    for &pkid in &s.inbound_qos2 {
        super::encode(
            out,
            &Record::InboundQos2 {
                client_id: id(),
                pkid,
            },
        );
    }
}
