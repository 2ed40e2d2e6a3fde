//! The publish path: a client's PUBLISH and its QoS handshake, the retained
//! store, delivery to local sessions, forwarding to the shards whose routes
//! match, what other shards send, and the acknowledgement flows of
//! deliveries to this shard's clients.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::persist::Ack;
use super::share;
use super::{Broker, CloseReason, ConnId, RemoteMsg, ServiceEvent, SessionId, ShardId};
use crate::mqtt::codec::{self, Publish};
use crate::mqtt::retained::RetainedMessage;
use crate::mqtt::session::{AckOutcome, Delivery, Message, Session};
use crate::mqtt::store::Record;
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;

/// Why a client's PUBLISH is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// `$SYS/` belongs to the broker.
    SysTopic,
    /// The client's ACL does not let it publish to the topic.
    NotAuthorized,
}

impl Broker {
    /// A message from another shard.
    pub fn handle_remote(&mut self, now: Instant, from: ShardId, msg: RemoteMsg) {
        let _ = now;
        match msg {
            RemoteMsg::Publish(message) => {
                self.route(message, true, None);
            }
            RemoteMsg::ShareCount { key, online, total } => {
                self.handle_share_count(from, &key, online, total);
            }
            RemoteMsg::SharedPublish {
                key,
                message,
                slot,
                hops,
            } => self.handle_shared_publish(&key, message, slot, hops),
            RemoteMsg::ClearRetained(topic) => self.clear_retained(topic),
            RemoteMsg::RouteAdd(filter) => {
                self.routes.subscribe(&filter, from, QoS::AtMostOnce);
            }
            RemoteMsg::RouteRemove(filter) => {
                self.routes.unsubscribe(&filter, from);
            }
            RemoteMsg::Barrier(token) => self.send(from, RemoteMsg::BarrierAck(token)),
            RemoteMsg::BarrierAck(token) => self.handle_barrier_ack(token),
            RemoteMsg::Durable(token) => self.handle_durable(from, token),
            RemoteMsg::DurableAck(token) => self.handle_durable_ack(token),
            RemoteMsg::Pressure(on) => self.update_pressure(from, on),
            RemoteMsg::Stats(stats) => self.handle_stats(from, stats),
        }
    }

    pub(super) fn handle_publish(&mut self, conn: ConnId, sid: SessionId, p: Publish) {
        let ack = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Ack::PubAck(p.pkid)),
            QoS::ExactlyOnce => Some(Ack::PubRec(p.pkid)),
        };
        let sync = self.persist.sync();
        let Some(targets) = self.publish(conn, sid, p, !sync) else {
            return;
        };
        self.journal_session(sid);
        if let (true, Some(ack)) = (sync, ack) {
            self.acknowledge(conn, ack, targets);
        }
    }

    /// A PUBLISH's handshake (its acknowledgement written here with
    /// `ack_now`, else by the caller) and routing. Returns the shards it was
    /// forwarded to, or `None` when the connection closed instead.
    fn publish(&mut self, conn: ConnId, sid: SessionId, p: Publish, ack_now: bool) -> Option<u64> {
        self.stats.messages_received += 1;
        if p.qos != QoS::AtMostOnce {
            if let Some(c) = self.conn_mut(conn) {
                c.publisher = true;
            }
        }
        let fresh = match p.qos {
            QoS::AtMostOnce => true,
            QoS::AtLeastOnce => {
                if ack_now {
                    self.write(conn, |out| codec::encode_puback(out, p.pkid));
                }
                true
            }
            QoS::ExactlyOnce => {
                if self.awaiting_pubrel_full(sid, p.pkid) {
                    // MQTT 3.1.1 cannot refuse a PUBLISH, and a PUBREC
                    // would promise delivery of a message not kept: close
                    // without acknowledging, so the client sends it again
                    // once it has released its earlier ids.
                    self.stats.limit_awaiting_pubrel_closed += 1;
                    tracing::debug!(?conn, "too many QoS 2 ids awaiting PUBREL");
                    self.close(conn, CloseReason::LimitExceeded);
                    return None;
                }
                let fresh = self.sessions[sid.0 as usize]
                    .as_mut()
                    .is_some_and(|s| s.receive_qos2(p.pkid));
                if ack_now {
                    self.write(conn, |out| codec::encode_pubrec(out, p.pkid));
                }
                fresh
            }
        };
        if !fresh {
            return Some(0);
        }
        if self.conn(conn).is_some_and(|c| c.service) {
            self.service_events.push_back(ServiceEvent::Published {
                conn,
                topic: p.topic,
                payload: p.payload,
            });
            return Some(0);
        }
        if let Err(denial) = self.admit_publish(sid, &p.topic) {
            if denial == Denial::NotAuthorized {
                self.stats.acl_publish_denied += 1;
            }
            tracing::debug!(?conn, topic = p.topic.as_str(), ?denial, "publish dropped");
            return Some(0);
        }
        let message = Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
        };
        let publisher = self.sessions[sid.0 as usize]
            .as_ref()
            .map(|s| share::publisher_hash(s.client_id()));
        Some(self.route(message, false, publisher))
    }

    /// Whether a QoS 2 PUBLISH with `pkid` would take the session past
    /// `max_awaiting_pubrel`; a resend of an id already held never does.
    fn awaiting_pubrel_full(&self, sid: SessionId, pkid: u16) -> bool {
        let max = self.config.limits.max_awaiting_pubrel;
        let Some(s) = self.sessions.get(sid.0 as usize).and_then(Option::as_ref) else {
            return false;
        };
        max > 0 && !s.awaits_pubrel(pkid) && s.awaiting_pubrel() >= max
    }

    /// Decides whether a client's PUBLISH is routed. It is decided after
    /// the QoS handshake: MQTT 3.1.1 has no negative acknowledgement, so a
    /// denied message is acknowledged and dropped.
    fn admit_publish(&self, sid: SessionId, topic: &TopicName) -> Result<(), Denial> {
        if topic.as_str().starts_with("$SYS/") {
            return Err(Denial::SysTopic);
        }
        if let Some(Some(acl)) = self.session_acl.get(sid.0 as usize) {
            if !acl.may_publish(topic.as_str()) {
                return Err(Denial::NotAuthorized);
            }
        }
        Ok(())
    }

    /// PUBREL of an inbound QoS 2 message: the id may be used again.
    pub(super) fn handle_pubrel(&mut self, conn: ConnId, sid: SessionId, pkid: u16) {
        if let Some(s) = self.sessions[sid.0 as usize].as_mut() {
            s.release_qos2(pkid);
        }
        self.journal_session(sid);
        self.write(conn, |out| codec::encode_pubcomp(out, pkid));
    }

    /// An acknowledgement of a delivery to this client. One of the wrong
    /// kind for its flow closes the connection.
    pub(super) fn handle_ack(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        ack: impl FnOnce(&mut Session, &mut BytesMut) -> AckOutcome,
    ) {
        let limits = self.config.limits;
        let (Some(c), Some(s)) = (
            self.conns[conn.0 as usize].as_mut(),
            self.sessions[sid.0 as usize].as_mut(),
        ) else {
            return;
        };
        let before = c.outbox.len();
        match ack(s, &mut c.outbox) {
            AckOutcome::Advanced => {
                let queued = s.queue_size();
                self.stats.messages_sent += s.pump(&mut c.outbox, &limits) as u64;
                self.queued = self.queued.moved(queued, s.queue_size());
            }
            AckOutcome::Stale => {}
            AckOutcome::WrongKind => {
                tracing::debug!(?conn, "acknowledgement of the wrong kind");
                self.close(conn, CloseReason::ProtocolError);
                return;
            }
        }
        let queued = s.queued_len();
        if c.outbox.len() != before {
            self.woken.push(conn);
        }
        self.journal_session(sid);
        if queued <= self.low_water() {
            self.caught_up(sid);
        }
    }

    /// Routes a message to local subscribers and, when it came from a local
    /// client, to the shards whose routes match.
    ///
    /// A new retained topic beyond the store's limits is decided here, on
    /// the shard it is published on: the message goes on with retain 0, so
    /// it is delivered as usual and no shard retains it, and every
    /// replica makes the same choice. A retained message that arrives from
    /// another shard is always stored. Shards decide on their own replicas,
    /// so publishes racing on several shards may pass a limit by at most
    /// one message per shard. A refused replacement clears the topic's
    /// older message everywhere: a stale value is worse than none, and for
    /// QoS 0 the older one must go [MQTT-3.3.1-7]. Returns the shards the
    /// message was forwarded to, a bit each.
    ///
    /// Shared subscriptions are served by the shard the message is
    /// published on only (`share`); `publisher` is the hash of the
    /// publishing client's id, for `ShareStrategy::HashClientId`.
    pub(super) fn route(
        &mut self,
        mut message: Message,
        from_remote: bool,
        publisher: Option<u64>,
    ) -> u64 {
        if message.retain
            && !from_remote
            && !message.payload.is_empty()
            && !message.topic.as_str().starts_with("$SYS/")
            && !self.retained.admits(
                &self.config.retained,
                message.topic.as_str(),
                message.payload.len(),
            )
        {
            self.stats.limit_retained_refused += 1;
            tracing::debug!(topic = message.topic.as_str(), "retained store full");
            message.retain = false;
            if self.retained.get(message.topic.as_str()).is_some() {
                self.broadcast(RemoteMsg::ClearRetained(message.topic.clone()));
                self.clear_retained(message.topic.clone());
            }
        }
        if message.retain {
            self.store_retained(&message);
        }
        let mut targets = 0;
        if !from_remote && self.shards > 1 {
            targets = self.forward(&message);
        }
        self.deliver_local(&message);
        if !from_remote {
            let live = Message {
                retain: false,
                ..message
            };
            targets |= self.dispatch_shares(&live, publisher);
        }
        targets
    }

    /// Sets (or, with an empty payload, clears) the retained message of a
    /// topic: every change of the store passes here.
    fn store_retained(&mut self, message: &Message) {
        // Compact copies: slices would pin whole read buffers for as long
        // as the message stays retained.
        let retained = RetainedMessage {
            topic: message.topic.compact(),
            payload: Bytes::copy_from_slice(&message.payload),
            qos: message.qos,
        };
        if self.persist.on() {
            self.journal_retained(Record::Retain {
                topic: retained.topic.clone(),
                qos: retained.qos,
                payload: retained.payload.clone(),
            });
        }
        self.retained.set(retained);
    }

    fn clear_retained(&mut self, topic: TopicName) {
        self.store_retained(&Message {
            topic,
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: true,
        });
    }

    fn forward(&mut self, message: &Message) -> u64 {
        let mut targets: u64 = 0;
        if message.retain {
            targets = u64::MAX;
        } else {
            self.routes
                .for_each_match(message.topic.as_str(), |shard, _| targets |= 1 << shard.0);
        }
        targets &= !(1u64 << self.shard.0);
        if self.shards < 64 {
            targets &= (1u64 << self.shards) - 1;
        }
        for shard in 0..self.shards {
            if targets & (1 << shard) != 0 {
                self.remote_out[shard].push(RemoteMsg::Publish(message.clone()));
            }
        }
        targets
    }

    fn deliver_local(&mut self, message: &Message) {
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        self.index
            .for_each_match(message.topic.as_str(), |sid, qos| matched.push((sid, qos)));
        if matched.len() > 1 {
            // Overlapping subscriptions: one copy at the highest QoS (§3.3.5).
            matched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            matched.dedup_by_key(|m| m.0);
        }
        // Live deliveries carry retain 0 (§3.3.1.3).
        let live;
        let message = if message.retain {
            live = Message {
                retain: false,
                ..message.clone()
            };
            &live
        } else {
            message
        };
        for &(sid, sub_qos) in &matched {
            self.deliver_to(sid, sub_qos, message, None);
        }
        self.scratch = matched;
    }

    /// Delivers a live message to one session subscribed at `sub_qos`
    /// (through the shared subscription `share`, if any), its ACL
    /// permitting.
    pub(super) fn deliver_to(
        &mut self,
        sid: SessionId,
        sub_qos: QoS,
        message: &Message,
        share: Option<&Arc<str>>,
    ) {
        let high_water = self.high_water();
        let Some(queued) = self.sessions[sid.0 as usize]
            .as_ref()
            .map(Session::queue_size)
        else {
            return;
        };
        let limits = self.limits_for(queued);
        let Some(session) = self.sessions[sid.0 as usize].as_mut() else {
            return;
        };
        if let Some(acl) = &self.session_acl[sid.0 as usize] {
            if !acl.may_receive(message.topic.as_str()) {
                self.stats.acl_receive_denied += 1;
                return;
            }
        }
        let conn = self.session_conn[sid.0 as usize];
        let mut offline = BytesMut::new();
        let out = match conn.and_then(|c| self.conns[c.0 as usize].as_mut()) {
            Some(c) => &mut c.outbox,
            None => &mut offline,
        };
        match session.deliver_shared(message, message.qos.min(sub_qos), out, &limits, share) {
            Delivery::Sent => {
                self.stats.messages_sent += 1;
                if let Some(conn) = conn {
                    self.woken.push(conn);
                }
            }
            Delivery::Queued => {
                self.queued = self.queued.moved(queued, session.queue_size());
                if conn.is_some() && session.queued_len() >= high_water {
                    self.fell_behind(sid);
                }
            }
            Delivery::Dropped => {
                let len = session.queued_len();
                self.note_dropped(&limits, len);
            }
            Delivery::DroppedBytes => {
                self.stats.messages_dropped += 1;
                self.stats.limit_queued_bytes_dropped += 1;
            }
        }
        self.journal_session(sid);
    }

    /// Writes a QoS 0 PUBLISH straight to a connection (see the module
    /// docs). False when the connection is gone or closing, or when its
    /// socket is `max_outbox_bytes` behind (the message is dropped, counted).
    pub fn push(&mut self, conn: ConnId, topic: &str, payload: &[u8]) -> bool {
        let max = self.config.limits.max_outbox_bytes;
        let Some(c) = self.conn_mut(conn) else {
            return false;
        };
        if c.closing.is_some() {
            return false;
        }
        if c.outbox.len() >= max {
            self.stats.messages_dropped += 1;
            return false;
        }
        codec::encode_publish(
            &mut c.outbox,
            topic,
            payload,
            QoS::AtMostOnce,
            false,
            false,
            0,
        );
        self.stats.messages_sent += 1;
        self.woken.push(conn);
        true
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
