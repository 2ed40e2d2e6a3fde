//! Per-client session state (MQTT 3.1.1 §4.1): subscriptions, the outgoing
//! QoS 1/2 window, the queue behind it, and inbound QoS 2 packet ids.
//!
//! A session outlives its connections when clean session is 0. It writes
//! packets into the caller's buffer and knows nothing of sockets or shards.
//!
//! # Invariants
//! 1. `inflight.len() <= limits.max_inflight`; a message is queued only when
//!    the window is full or the client is offline.
//! 2. Every packet id in `inflight` is non-zero and unique.
//! 3. `queue.len() <= limits.max_queued_messages`, and `queued_bytes`, the
//!    topic names and payloads of the queue, is at most
//!    `limits.max_queued_bytes` (when not 0).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::mqtt::codec;
use crate::mqtt::store::state::{InflightState, SessionState};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// A message on its way to subscribers. Cloning shares topic and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// Bounds that apply to every session of a broker.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub queue_qos0_offline: bool,
    pub max_outbox_bytes: usize,
    /// Filters one session may hold; 0 is no limit. A SUBSCRIBE filter
    /// beyond it is refused (SUBACK 0x80); re-subscribing a held filter
    /// is not a new one.
    pub max_subscriptions: usize,
    /// Inbound QoS 2 ids one session may hold awaiting PUBREL; 0 is no
    /// limit. A new QoS 2 PUBLISH beyond it closes the connection.
    pub max_awaiting_pubrel: usize,
    /// Bytes (topic names and payloads) queued per session; 0 is no limit.
    /// A message that would pass it is dropped, like one beyond
    /// `max_queued_messages`.
    pub max_queued_bytes: usize,
}

/// What a queue holds: topic names and payloads, and messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSize {
    pub bytes: usize,
    pub messages: usize,
}

impl QueueSize {
    /// This total after one of its queues went from `before` to `after`.
    pub fn moved(self, before: QueueSize, after: QueueSize) -> QueueSize {
        QueueSize {
            bytes: self
                .bytes
                .saturating_add(after.bytes)
                .saturating_sub(before.bytes),
            messages: (self.messages.saturating_add(after.messages))
                .saturating_sub(before.messages),
        }
    }
}

/// Where an outgoing QoS 1/2 message stands in its acknowledgement flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    /// QoS 1 PUBLISH sent, PUBACK expected.
    Ack,
    /// QoS 2 PUBLISH sent, PUBREC expected.
    Received,
    /// PUBREL sent, PUBCOMP expected.
    Complete,
}

#[derive(Debug)]
struct Inflight {
    pkid: u16,
    message: Message,
    awaiting: Await,
    /// The shared subscription (`$share/<group>/<filter>`) it came
    /// through: redispatched to another member if this session ends
    /// before the client has it. Not persisted.
    share: Option<Arc<str>>,
}

/// What an acknowledgement from the client did to the outgoing flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It moved its message's flow on; a window slot may have opened.
    Advanced,
    /// No flow waits for it: the id is not in flight, or its flow is past
    /// this step (a late duplicate). Harmless, ignored.
    Stale,
    /// The id is in flight in a flow that never takes this packet (PUBREC
    /// or PUBCOMP for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREC): a
    /// protocol violation.
    WrongKind,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the outbox.
    Sent,
    /// Kept for later (window full or offline).
    Queued,
    /// Dropped: queue full, outbox full for QoS 0, or QoS 0 while offline.
    Dropped,
    /// Dropped: the queue holds `max_queued_bytes`.
    DroppedBytes,
}

/// A change of a persistent session's QoS state, kept for the store
/// (`crate::mqtt::store`) while the session journals (`set_journal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message joined the back of the queue.
    Enqueued(Message),
    /// A message went out at once with this packet id.
    Sent { pkid: u16, message: Message },
    /// The queue's front went out with this packet id (0: QoS 0, gone).
    Dequeued(u16),
    /// PUBACK or PUBCOMP ended the flow of this id.
    Acked(u16),
    /// PUBREC came for this id; PUBREL went out.
    Released(u16),
    /// Inbound QoS 2 id held until its PUBREL.
    InboundQos2(u16),
    /// Inbound QoS 2 id released.
    InboundReleased(u16),
}

#[derive(Debug)]
pub struct Session {
    client_id: String,
    clean: bool,
    online: bool,
    subscriptions: HashMap<String, QoS>,
    next_pkid: u16,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Message>,
    /// The shared subscription of each queued message, beside `queue`.
    queue_share: VecDeque<Option<Arc<str>>>,
    queued_bytes: usize,
    incoming_qos2: HashSet<u16>,
    /// Changes not yet taken by the store; `None` when nothing persists
    /// this session (clean session, or no store), which costs one check.
    journal: Option<Vec<Change>>,
    /// When the client last left; `None` while connected or never.
    left: Option<Instant>,
}

impl Session {
    pub fn new(client_id: String, clean: bool) -> Session {
        Session {
            client_id,
            clean,
            online: false,
            subscriptions: HashMap::new(),
            next_pkid: 1,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queue_share: VecDeque::new(),
            queued_bytes: 0,
            incoming_qos2: HashSet::new(),
            journal: None,
            left: None,
        }
    }

    /// When the client last left (for session expiry).
    pub fn left_at(&self) -> Option<Instant> {
        self.left
    }

    pub fn set_left(&mut self, at: Option<Instant>) {
        self.left = at;
    }

    /// Starts (or stops) keeping changes for the store.
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// The changes since the last call; empty when not journaled.
    pub fn take_changes(&mut self) -> Vec<Change> {
        match &mut self.journal {
            Some(j) if !j.is_empty() => std::mem::take(j),
            _ => Vec::new(),
        }
    }

    fn note(&mut self, change: impl FnOnce() -> Change) {
        if let Some(j) = &mut self.journal {
            j.push(change());
        }
    }

    /// Everything the store keeps of this session (presence aside).
    pub fn to_state(&self) -> SessionState {
        SessionState {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, q)| (f.clone(), *q))
                .collect(),
            inflight: self
                .inflight
                .iter()
                .map(|f| InflightState {
                    pkid: f.pkid,
                    message: f.message.clone(),
                    released: f.awaiting == Await::Complete,
                })
                .collect(),
            queue: self.queue.clone(),
            inbound_qos2: self.incoming_qos2.iter().copied().collect(),
            offline_since_ms: None,
        }
    }

    /// A persistent session as a store held it: offline, journaled, its
    /// window to be resent with DUP on the next connection.
    pub fn from_state(client_id: String, state: SessionState) -> Session {
        let mut s = Session::new(client_id, false);
        s.subscriptions = state.subscriptions.into_iter().collect();
        s.queued_bytes = state.queue.iter().map(queued_size).sum();
        s.queue = state.queue;
        s.queue_share = s.queue.iter().map(|_| None).collect();
        s.inflight = state
            .inflight
            .into_iter()
            .map(|f| Inflight {
                pkid: f.pkid,
                awaiting: match (f.message.qos, f.released) {
                    (QoS::ExactlyOnce, true) => Await::Complete,
                    (QoS::ExactlyOnce, false) => Await::Received,
                    _ => Await::Ack,
                },
                message: f.message,
                share: None,
            })
            .collect();
        s.incoming_qos2 = state.inbound_qos2.into_iter().collect();
        s.next_pkid = s
            .inflight
            .back()
            .map_or(1, |f| f.pkid.checked_add(1).unwrap_or(1).max(1));
        s.journal = Some(Vec::new());
        s
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn is_clean(&self) -> bool {
        self.clean
    }

    pub fn set_clean(&mut self, clean: bool) {
        self.clean = clean;
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        self.subscriptions.iter().map(|(f, q)| (f.as_str(), *q))
    }

    /// Records a subscription; returns the QoS it replaced, if any.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Option<QoS> {
        self.subscriptions.insert(filter.to_string(), qos)
    }

    /// The QoS granted for `filter`, if subscribed.
    pub fn subscription(&self, filter: &str) -> Option<QoS> {
        self.subscriptions.get(filter).copied()
    }

    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn take_subscriptions(&mut self) -> HashMap<String, QoS> {
        std::mem::take(&mut self.subscriptions)
    }

    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The client is gone; QoS 1/2 state stays for a later connection.
    pub fn go_offline(&mut self) {
        self.online = false;
    }

    /// A connection took this session: resend what was unacknowledged, with
    /// DUP set (§4.4), then fill the window from the queue.
    pub fn resume(&mut self, out: &mut BytesMut, limits: &SessionLimits) -> usize {
        self.online = true;
        self.left = None;
        for f in &self.inflight {
            match f.awaiting {
                Await::Ack | Await::Received => encode(out, &f.message, f.pkid, true),
                Await::Complete => codec::encode_pubrel(out, f.pkid),
            }
        }
        let resent = self.inflight.len();
        resent + self.pump(out, limits)
    }

    /// Delivers `message` at `qos` (already the minimum of publish and
    /// subscription).
    pub fn deliver(
        &mut self,
        message: &Message,
        qos: QoS,
        out: &mut BytesMut,
        limits: &SessionLimits,
    ) -> Delivery {
        self.deliver_shared(message, qos, out, limits, None)
    }

    /// As `deliver`, for a message that came through the shared
    /// subscription `share` (see `take_shared_unacked`).
    pub fn deliver_shared(
        &mut self,
        message: &Message,
        qos: QoS,
        out: &mut BytesMut,
        limits: &SessionLimits,
        share: Option<&Arc<str>>,
    ) -> Delivery {
        if qos == QoS::AtMostOnce {
            return self.deliver_qos0(message, out, limits);
        }
        let window_open = self.online
            && self.queue.is_empty()
            && self.inflight.len() < usize::from(limits.max_inflight);
        if window_open {
            let pkid = self.send_inflight(with_qos(message, qos), out, share.cloned());
            self.note(|| Change::Sent {
                pkid,
                message: with_qos(message, qos),
            });
            return Delivery::Sent;
        }
        self.enqueue(with_qos(message, qos), limits, share.cloned())
    }

    /// Takes the QoS 1/2 messages that came through shared subscriptions
    /// and that the client does not have yet: queued, or sent and not
    /// acknowledged (a QoS 2 message after PUBREC is the client's). The
    /// caller gives them to other members of their groups.
    pub fn take_shared_unacked(&mut self) -> Vec<(Arc<str>, Message)> {
        let mut taken = Vec::new();
        let inflight = std::mem::take(&mut self.inflight);
        for f in inflight {
            match (&f.share, f.awaiting) {
                (Some(share), Await::Ack | Await::Received) => {
                    taken.push((share.clone(), f.message));
                }
                _ => self.inflight.push_back(f),
            }
        }
        let queue = std::mem::take(&mut self.queue);
        let shares = std::mem::take(&mut self.queue_share);
        for (message, share) in queue.into_iter().zip(shares) {
            match share {
                Some(share) if message.qos != QoS::AtMostOnce => {
                    self.queued_bytes -= queued_size(&message);
                    taken.push((share, message));
                }
                share => {
                    self.queue.push_back(message);
                    self.queue_share.push_back(share);
                }
            }
        }
        taken
    }

    fn deliver_qos0(
        &mut self,
        message: &Message,
        out: &mut BytesMut,
        limits: &SessionLimits,
    ) -> Delivery {
        if !self.online {
            if limits.queue_qos0_offline {
                return self.enqueue(with_qos(message, QoS::AtMostOnce), limits, None);
            }
            return Delivery::Dropped;
        }
        if out.len() >= limits.max_outbox_bytes {
            return Delivery::Dropped;
        }
        codec::encode_publish(
            out,
            message.topic.as_str(),
            &message.payload,
            QoS::AtMostOnce,
            message.retain,
            false,
            0,
        );
        Delivery::Sent
    }

    fn enqueue(
        &mut self,
        message: Message,
        limits: &SessionLimits,
        share: Option<Arc<str>>,
    ) -> Delivery {
        if self.queue.len() >= limits.max_queued_messages {
            return Delivery::Dropped;
        }
        let size = queued_size(&message);
        if limits.max_queued_bytes > 0
            && self.queued_bytes.saturating_add(size) > limits.max_queued_bytes
        {
            return Delivery::DroppedBytes;
        }
        self.queued_bytes += size;
        // Compact: a queued message may wait long, and a slice would pin the
        // whole read buffer it was parsed from.
        let message = Message {
            topic: message.topic.compact(),
            payload: Bytes::copy_from_slice(&message.payload),
            ..message
        };
        self.note(|| Change::Enqueued(message.clone()));
        self.queue.push_back(message);
        self.queue_share.push_back(share);
        Delivery::Queued
    }

    fn send_inflight(
        &mut self,
        message: Message,
        out: &mut BytesMut,
        share: Option<Arc<str>>,
    ) -> u16 {
        debug_assert!(message.qos != QoS::AtMostOnce);
        let pkid = self.allocate_pkid();
        encode(out, &message, pkid, false);
        let awaiting = match message.qos {
            QoS::ExactlyOnce => Await::Received,
            _ => Await::Ack,
        };
        self.inflight.push_back(Inflight {
            pkid,
            message,
            awaiting,
            share,
        });
        pkid
    }

    /// The next packet id not in flight. The window is far below 65,535, so
    /// the search ends within `inflight.len() + 1` steps.
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            if !self.inflight.iter().any(|f| f.pkid == pkid) {
                return pkid;
            }
        }
    }

    /// Moves queued messages into the window while it has room; returns how
    /// many PUBLISH packets were written.
    pub fn pump(&mut self, out: &mut BytesMut, limits: &SessionLimits) -> usize {
        let mut sent = 0;
        while self.online {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos == QoS::AtMostOnce {
                let (message, _) = self.dequeue().expect("front exists");
                encode(out, &message, 0, false);
                self.note(|| Change::Dequeued(0));
            } else if self.inflight.len() < usize::from(limits.max_inflight) {
                let (message, share) = self.dequeue().expect("front exists");
                let pkid = self.send_inflight(message, out, share);
                self.note(|| Change::Dequeued(pkid));
            } else {
                break;
            }
            sent += 1;
        }
        sent
    }

    fn dequeue(&mut self) -> Option<(Message, Option<Arc<str>>)> {
        let message = self.queue.pop_front()?;
        let share = self.queue_share.pop_front().flatten();
        self.queued_bytes -= queued_size(&message);
        Some((message, share))
    }

    /// Bytes of queued messages, topic names and payloads.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn queue_size(&self) -> QueueSize {
        QueueSize {
            bytes: self.queued_bytes,
            messages: self.queue.len(),
        }
    }

    fn inflight_mut(&mut self, pkid: u16) -> Option<&mut Inflight> {
        self.inflight.iter_mut().find(|f| f.pkid == pkid)
    }

    /// PUBACK from the client: ends a QoS 1 flow [MQTT-4.3.2-1]. Unknown
    /// ids are stale: a late duplicate ack is harmless.
    pub fn handle_puback(&mut self, pkid: u16) -> AckOutcome {
        match self.inflight_mut(pkid).map(|f| f.awaiting) {
            None => AckOutcome::Stale,
            Some(Await::Ack) => self.remove(pkid),
            // A QoS 2 flow, before or after PUBREC [MQTT-4.3.3-1].
            Some(Await::Received | Await::Complete) => AckOutcome::WrongKind,
        }
    }

    /// PUBREC from the client: answer PUBREL and wait for PUBCOMP
    /// [MQTT-4.3.3-1]. A PUBREC for an id already released (our PUBREL was
    /// lost) or not in flight at all (the client finishes a flow this
    /// session forgot) is answered with PUBREL too, as mosquitto does.
    pub fn handle_pubrec(&mut self, pkid: u16, out: &mut BytesMut) -> AckOutcome {
        let outcome = match self.inflight_mut(pkid) {
            None => AckOutcome::Stale,
            Some(f) => match f.awaiting {
                Await::Ack => return AckOutcome::WrongKind,
                Await::Received => {
                    f.awaiting = Await::Complete;
                    self.note(|| Change::Released(pkid));
                    AckOutcome::Advanced
                }
                Await::Complete => AckOutcome::Stale,
            },
        };
        codec::encode_pubrel(out, pkid);
        outcome
    }

    /// PUBCOMP from the client: ends a QoS 2 flow after PUBREL.
    pub fn handle_pubcomp(&mut self, pkid: u16) -> AckOutcome {
        match self.inflight_mut(pkid).map(|f| f.awaiting) {
            None => AckOutcome::Stale,
            Some(Await::Complete) => self.remove(pkid),
            // A QoS 1 flow, or a QoS 2 flow still waiting for PUBREC.
            Some(Await::Ack | Await::Received) => AckOutcome::WrongKind,
        }
    }

    fn remove(&mut self, pkid: u16) -> AckOutcome {
        self.inflight.retain(|f| f.pkid != pkid);
        self.note(|| Change::Acked(pkid));
        AckOutcome::Advanced
    }

    /// Inbound QoS 2 PUBLISH: true the first time `pkid` is seen, false for a
    /// resend before PUBREL (the message must not be routed again).
    pub fn receive_qos2(&mut self, pkid: u16) -> bool {
        let fresh = self.incoming_qos2.insert(pkid);
        if fresh {
            self.note(|| Change::InboundQos2(pkid));
        }
        fresh
    }

    /// Whether inbound QoS 2 `pkid` awaits its PUBREL.
    pub fn awaits_pubrel(&self, pkid: u16) -> bool {
        self.incoming_qos2.contains(&pkid)
    }

    /// Inbound QoS 2 ids awaiting their PUBREL.
    pub fn awaiting_pubrel(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Inbound PUBREL: the id may be used again.
    pub fn release_qos2(&mut self, pkid: u16) {
        if self.incoming_qos2.remove(&pkid) {
            self.note(|| Change::InboundReleased(pkid));
        }
    }
}

/// What a queued message counts against `max_queued_bytes`.
fn queued_size(message: &Message) -> usize {
    message.topic.as_str().len() + message.payload.len()
}

fn with_qos(message: &Message, qos: QoS) -> Message {
    Message {
        qos,
        ..message.clone()
    }
}

fn encode(out: &mut BytesMut, message: &Message, pkid: u16, dup: bool) {
    codec::encode_publish(
        out,
        message.topic.as_str(),
        &message.payload,
        message.qos,
        message.retain,
        dup,
        pkid,
    );
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
