//! SUBSCRIBE and UNSUBSCRIBE: the session's filters, the local index, the
//! routes announced to other shards, and the barrier that holds a SUBACK
//! until every shard routes the new filters here (rule 3 of the module
//! docs).

use super::{Broker, ConnId, RemoteMsg, SessionId};
use crate::mqtt::codec;
use crate::mqtt::session::{Delivery, Message};
use crate::mqtt::store::Record;
use crate::mqtt::topic;
use crate::mqtt::QoS;

/// The SUBACK return code of a refused filter.
const SUBACK_FAILURE: u8 = 0x80;

/// Why one filter of a SUBSCRIBE is refused: answered with
/// `SUBACK_FAILURE` for that filter, the others are still granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not a valid filter. The codec already closes a client connection
    /// that sends one (a protocol violation); this guards the SUBSCRIBE
    /// packets built in process, which never passed the codec.
    InvalidFilter,
    /// The client's ACL does not let it subscribe to the filter.
    NotAuthorized,
    /// The session holds `max_subscriptions` filters already; a peer
    /// must not grow the index and the routes without bound.
    TooMany,
}

/// A SUBACK held until the barrier of its SUBSCRIBE completes.
pub(super) struct PendingSuback {
    pub(super) conn: ConnId,
    pub(super) session: SessionId,
    pkid: u16,
    codes: Vec<u8>,
    pub(super) granted: Vec<(String, QoS)>,
    acks_missing: usize,
}

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        pkid: u16,
        filters: Vec<(String, QoS)>,
    ) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::with_capacity(filters.len());
        for (filter, requested) in filters {
            match self.grant(sid, &filter, requested) {
                Ok(qos) => {
                    self.add_subscription(sid, &filter, qos);
                    codes.push(qos as u8);
                    granted.push((filter, qos));
                }
                Err(refusal) => {
                    match refusal {
                        Refusal::NotAuthorized => self.stats.acl_subscribe_denied += 1,
                        Refusal::TooMany => self.stats.limit_subscriptions_refused += 1,
                        Refusal::InvalidFilter => {}
                    }
                    tracing::debug!(?conn, filter, ?refusal, "subscription refused");
                    codes.push(SUBACK_FAILURE);
                }
            }
        }
        let pending = PendingSuback {
            conn,
            session: sid,
            pkid,
            codes,
            granted,
            acks_missing: self.shards - 1,
        };
        if pending.acks_missing == 0 {
            self.finish_subscribe(pending);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.broadcast(RemoteMsg::Barrier(token));
        self.pending_subacks.insert(token, pending);
        if let Some(c) = self.conn_mut(conn) {
            c.paused = true;
        }
    }

    /// Decides one filter of a SUBSCRIBE: the QoS granted, or why it is
    /// refused. Every subscription passes here before it touches a session.
    fn grant(&self, sid: SessionId, filter: &str, requested: QoS) -> Result<QoS, Refusal> {
        if topic::validate_subscription(filter).is_err() {
            return Err(Refusal::InvalidFilter);
        }
        // A shared subscription needs the right to the filter it matches
        // with, as in mosquitto: the group is no part of the ACL.
        let acl_filter = match topic::parse_share(filter) {
            Some(Ok((_, inner))) => inner,
            _ => filter,
        };
        if let Some(Some(acl)) = self.session_acl.get(sid.0 as usize) {
            if !acl.may_subscribe(acl_filter) {
                return Err(Refusal::NotAuthorized);
            }
        }
        let max = self.config.limits.max_subscriptions;
        if max > 0 {
            if let Some(s) = self.sessions.get(sid.0 as usize).and_then(Option::as_ref) {
                // A filter the session holds only changes its QoS.
                if s.subscription(filter).is_none() && s.subscription_count() >= max {
                    return Err(Refusal::TooMany);
                }
            }
        }
        Ok(requested)
    }

    /// The session takes `filter` at `qos` (or a new QoS for it); the index
    /// follows when the barrier completes (`activate`).
    fn add_subscription(&mut self, sid: SessionId, filter: &str, qos: QoS) {
        let replaced = self.sessions[sid.0 as usize]
            .as_mut()
            .and_then(|s| s.subscribe(filter, qos));
        self.journal_record(sid, |client_id| Record::Subscribe {
            client_id,
            filter: filter.to_string(),
            qos,
        });
        if topic::parse_share(filter).is_some() {
            self.share_join(sid, filter, qos);
        } else if replaced.is_none() {
            self.filter_ref(filter);
        }
    }

    /// The session drops `filter`, if it held it.
    fn remove_subscription(&mut self, sid: SessionId, filter: &str) {
        let had = self.sessions[sid.0 as usize]
            .as_mut()
            .is_some_and(|s| s.unsubscribe(filter));
        if had {
            self.journal_record(sid, |client_id| Record::Unsubscribe {
                client_id,
                filter: filter.to_string(),
            });
            self.index_unsubscribe(filter, sid);
        }
    }

    /// Another shard answered the barrier `token`.
    pub(super) fn handle_barrier_ack(&mut self, token: u64) {
        if self.answer_quiesce(token) {
            return;
        }
        let Some(p) = self.pending_subacks.get_mut(&token) else {
            return;
        };
        p.acks_missing -= 1;
        if p.acks_missing == 0 {
            let pending = self.pending_subacks.remove(&token).expect("present");
            self.finish_subscribe(pending);
        }
    }

    /// Activates the granted filters, then sends the SUBACK and the retained
    /// messages of those filters (§3.3.1.3).
    fn finish_subscribe(&mut self, pending: PendingSuback) {
        if let Some(pending) = self.hold_suback(pending) {
            self.complete_subscribe(pending);
        }
    }

    /// `finish_subscribe` once the SUBACK may go (`persist::hold_suback`).
    pub(super) fn complete_subscribe(&mut self, pending: PendingSuback) {
        self.activate(pending.session, &pending.granted);
        let queued = self.sessions[pending.session.0 as usize]
            .as_ref()
            .map_or(Default::default(), |s| s.queue_size());
        let limits = self.limits_for(queued);
        let Some(c) = self
            .conns
            .get_mut(pending.conn.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        c.paused = false;
        if c.closing.is_some() || c.session != Some(pending.session) {
            self.woken.push(pending.conn);
            return;
        }
        codec::encode_suback(&mut c.outbox, pending.pkid, &pending.codes);
        let Some(s) = self.sessions[pending.session.0 as usize].as_mut() else {
            return;
        };
        let mut sent = 0u64;
        let mut dropped = 0u64;
        let mut dropped_bytes = 0u64;
        let mut denied = 0u64;
        let acl = self.session_acl[pending.session.0 as usize].as_deref();
        for (filter, granted) in &pending.granted {
            if topic::parse_share(filter).is_some() {
                // No retained message on a shared subscription (MQTT 5
                // §4.8.2): every member would get a copy.
                continue;
            }
            self.retained.for_each_match(filter, |r| {
                if acl.is_some_and(|acl| !acl.may_receive(r.topic.as_str())) {
                    denied += 1;
                    return;
                }
                let message = Message {
                    topic: r.topic.clone(),
                    payload: r.payload.clone(),
                    qos: r.qos,
                    retain: true,
                };
                match s.deliver(&message, r.qos.min(*granted), &mut c.outbox, &limits) {
                    Delivery::Sent => sent += 1,
                    Delivery::Queued => {}
                    Delivery::Dropped => dropped += 1,
                    Delivery::DroppedBytes => {
                        dropped += 1;
                        dropped_bytes += 1;
                    }
                }
            });
        }
        self.stats.messages_sent += sent;
        self.queued = self.queued.moved(queued, s.queue_size());
        self.stats.messages_dropped += dropped;
        self.stats.limit_queued_bytes_dropped += dropped_bytes;
        self.stats.acl_receive_denied += denied;
        self.journal_session(pending.session);
        self.woken.push(pending.conn);
    }

    /// Puts the granted filters in the index, unless the session dropped
    /// them (UNSUBSCRIBE, clean end) while the barrier was pending.
    pub(super) fn activate(&mut self, sid: SessionId, granted: &[(String, QoS)]) {
        let Some(session) = self.sessions[sid.0 as usize].as_ref() else {
            return;
        };
        for (filter, qos) in granted {
            if topic::parse_share(filter).is_some() {
                continue;
            }
            if session.subscription(filter) == Some(*qos) {
                self.index.subscribe(filter, sid, *qos);
            }
        }
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        pkid: u16,
        filters: Vec<String>,
    ) {
        for filter in filters {
            self.remove_subscription(sid, &filter);
        }
        self.write(conn, |out| codec::encode_unsuback(out, pkid));
    }

    /// A session dropped `filter`: out of the index, and the route is
    /// withdrawn with the last holder on this shard.
    pub(super) fn index_unsubscribe(&mut self, filter: &str, sid: SessionId) {
        if topic::parse_share(filter).is_some() {
            self.share_leave(sid, filter);
            return;
        }
        self.index.unsubscribe(filter, sid);
        let Some(refs) = self.filter_refs.get_mut(filter) else {
            debug_assert!(false, "every held filter is counted");
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            self.filter_refs.remove(filter);
            self.broadcast(RemoteMsg::RouteRemove(filter.to_string()));
        }
    }

    /// A session took `filter`: the first holder on this shard announces
    /// the route to the others.
    fn filter_ref(&mut self, filter: &str) {
        match self.filter_refs.get_mut(filter) {
            Some(refs) => *refs += 1,
            None => {
                self.filter_refs.insert(filter.to_string(), 1);
                self.broadcast(RemoteMsg::RouteAdd(filter.to_string()));
            }
        }
    }
}

#[cfg(test)]
#[path = "subscribe_tests.rs"]
mod tests;
