//! A connection's life on the broker: CONNECT, takeover of an older
//! connection with the same client id, the session it opens or resumes,
//! keepalive expiry, close with or without the will, and release.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{owner_shard, Access, Broker, Conn, ConnId, ServiceEvent, SessionId};
use crate::mqtt::codec::{self, Connect, ConnectReturnCode};
use crate::mqtt::session::{Message, Session};
use crate::mqtt::store::Record;

/// Why a connection ends; decides whether the will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// DISCONNECT received: the will is discarded.
    Disconnect,
    /// Socket closed or failed.
    Lost,
    /// Malformed packet or protocol violation.
    ProtocolError,
    /// No packet within 1.5 × keepalive.
    KeepaliveExpired,
    /// Another connection took the client id. Its network connection
    /// closes, so the will is published [MQTT-3.1.2-8], unless both
    /// connections have clean session 0: the session goes on, and so does
    /// the client as far as others can tell.
    TakenOver,
    /// CONNACK with a refusal code.
    Refused,
    /// The client went past a limit MQTT 3.1.1 has no refusal for (QoS 2
    /// ids awaiting PUBREL). Its will is published, as for any close the
    /// client did not ask for [MQTT-3.1.2-8].
    LimitExceeded,
    /// The server stops cleanly (`Broker::shut_down`). A close without
    /// DISCONNECT, so by default the will goes out [MQTT-3.1.2-8]; `will`
    /// is false only when `[server] will_on_shutdown` turns that off.
    Shutdown { will: bool },
}

impl CloseReason {
    fn publishes_will(self) -> bool {
        matches!(
            self,
            CloseReason::Lost
                | CloseReason::ProtocolError
                | CloseReason::KeepaliveExpired
                | CloseReason::TakenOver
                | CloseReason::LimitExceeded
                | CloseReason::Shutdown { will: true }
        )
    }
}

impl Broker {
    /// A CONNECT arrived on a socket this shard will run. Queues the
    /// CONNACK; a refused connection comes back already closing.
    pub fn connect(&mut self, now: Instant, connect: Connect) -> ConnId {
        self.open(now, connect, false, None)
    }

    /// As `connect`, for a client whose requests `acl` decides (compiled
    /// when its CONNECT was authenticated); `None` allows everything.
    pub fn connect_with_acl(
        &mut self,
        now: Instant,
        connect: Connect,
        acl: Option<Arc<dyn Access>>,
    ) -> ConnId {
        self.open(now, connect, false, acl)
    }

    /// As `connect`, for a service connection (see the module docs).
    pub fn connect_service(&mut self, now: Instant, connect: Connect) -> ConnId {
        self.open(now, connect, true, None)
    }

    /// A CONNECT that a check above the broker refused (credentials, client
    /// id form): the connection only carries the CONNACK with `code`.
    pub fn refuse_connect(&mut self, now: Instant, code: ConnectReturnCode) -> ConnId {
        let conn = self.alloc_conn(now);
        self.refuse(conn, code);
        conn
    }

    fn open(
        &mut self,
        now: Instant,
        connect: Connect,
        service: bool,
        acl: Option<Arc<dyn Access>>,
    ) -> ConnId {
        self.last_now = now;
        let conn = self.alloc_conn(now);
        if connect.client_id.is_empty() && !connect.clean_session {
            // §3.1.3-8: a zero-length id needs clean session 1.
            self.refuse(conn, ConnectReturnCode::IdentifierRejected);
            return conn;
        }
        debug_assert_eq!(owner_shard(&connect.client_id, self.shards), self.shard);
        self.take_over(&connect.client_id, connect.clean_session);
        let (session, present) = self.open_session(&connect.client_id, connect.clean_session);
        let has_will = connect.will.is_some();
        let c = self.conn_mut(conn).expect("just allocated");
        c.session = Some(session);
        c.service = service;
        c.keepalive = (connect.keep_alive_s > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        let will = connect.will.filter(|w| {
            // A will the client may not publish is dropped like any denied
            // PUBLISH; the CONNECT itself is accepted.
            acl.as_ref()
                .map_or(true, |acl| acl.may_publish(w.topic.as_str()))
        });
        let will_denied = will.is_none() && has_will;
        c.will = will.map(|w| Message {
            topic: w.topic.compact(),
            payload: Bytes::copy_from_slice(&w.payload),
            qos: w.qos,
            retain: w.retain,
        });
        codec::encode_connack(&mut c.outbox, present, ConnectReturnCode::Accepted);
        if will_denied {
            self.stats.acl_publish_denied += 1;
        }
        self.session_acl[session.0 as usize] = acl;
        self.session_conn[session.0 as usize] = Some(conn);
        self.share_presence(session);
        let limits = self.config.limits;
        let (sent, before, after) = {
            let c = self.conns[conn.0 as usize].as_mut().expect("live");
            let s = self.sessions[session.0 as usize].as_mut().expect("live");
            let before = s.queue_size();
            let sent = s.resume(&mut c.outbox, &limits);
            (sent, before, s.queue_size())
        };
        self.queued = self.queued.moved(before, after);
        self.journal_session(session);
        self.stats.messages_sent += sent as u64;
        self.woken.push(conn);
        conn
    }

    fn refuse(&mut self, conn: ConnId, code: ConnectReturnCode) {
        if let Some(c) = self.conn_mut(conn) {
            codec::encode_connack(&mut c.outbox, false, code);
            c.closing = Some(CloseReason::Refused);
        }
        self.woken.push(conn);
    }

    fn alloc_conn(&mut self, now: Instant) -> ConnId {
        let conn = Conn {
            session: None,
            outbox: BytesMut::new(),
            keepalive: None,
            last_packet: now,
            will: None,
            closing: None,
            paused: false,
            publisher: false,
            service: false,
        };
        match self.free_conns.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(conn);
                ConnId(i)
            }
            None => {
                self.conns.push(Some(conn));
                ConnId((self.conns.len() - 1) as u32)
            }
        }
    }

    /// Closes the connection that holds `client_id`, if any, for a new one
    /// with clean session `clean`. The will goes out as for any closed
    /// network connection, except when the session goes on: the old and the
    /// new connection both have clean session 0 (mosquitto 2.0.12 and later
    /// do the same).
    fn take_over(&mut self, client_id: &str, clean: bool) {
        let Some(&sid) = self.by_client_id.get(client_id) else {
            return;
        };
        let Some(old) = self.session_conn[sid.0 as usize] else {
            return;
        };
        let old_clean = self.sessions[sid.0 as usize]
            .as_ref()
            .map_or(true, Session::is_clean);
        let session_goes_on = !old_clean && !clean;
        tracing::debug!(client_id, session_goes_on, "session taken over");
        if session_goes_on {
            if let Some(c) = self.conn_mut(old) {
                c.will = None;
            }
        }
        self.close(old, CloseReason::TakenOver);
    }

    /// Finds or creates the session; returns it and the session-present flag.
    fn open_session(&mut self, client_id: &str, clean: bool) -> (SessionId, bool) {
        if let Some(&sid) = self.by_client_id.get(client_id) {
            if clean {
                self.end_session(sid);
            } else {
                let s = self.sessions[sid.0 as usize].as_mut().expect("indexed");
                let present = !s.is_clean();
                s.set_clean(false);
                self.journal_open(sid);
                return (sid, present);
            }
        }
        let sid = self.insert_session(Session::new(client_id.to_string(), clean));
        if !client_id.is_empty() {
            self.by_client_id.insert(client_id.to_string(), sid);
        }
        if !clean {
            self.journal_open(sid);
        }
        (sid, false)
    }

    /// Puts `session` in a free slot, not yet indexed by client id.
    pub(super) fn insert_session(&mut self, session: Session) -> SessionId {
        match self.free_sessions.pop() {
            Some(i) => {
                self.sessions[i as usize] = Some(session);
                self.session_conn[i as usize] = None;
                self.session_acl[i as usize] = None;
                SessionId(i)
            }
            None => {
                self.sessions.push(Some(session));
                self.session_conn.push(None);
                self.session_acl.push(None);
                SessionId((self.sessions.len() - 1) as u32)
            }
        }
    }

    pub(super) fn end_session(&mut self, sid: SessionId) {
        self.journal_record(sid, |client_id| Record::End { client_id });
        let Some(mut session) = self.sessions[sid.0 as usize].take() else {
            return;
        };
        self.queued = self.queued.moved(session.queue_size(), Default::default());
        let unacked = session.take_shared_unacked();
        for (filter, _) in session.take_subscriptions() {
            self.index_unsubscribe(&filter, sid);
        }
        if self.by_client_id.get(session.client_id()) == Some(&sid) {
            self.by_client_id.remove(session.client_id());
        }
        self.session_conn[sid.0 as usize] = None;
        self.session_acl[sid.0 as usize] = None;
        self.free_sessions.push(sid.0);
        self.redispatch(unacked);
    }

    /// Ends a connection now: will, session detach, and the shell is woken to
    /// flush what it can and close the socket.
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.closing.is_some() {
            return;
        }
        c.closing = Some(reason);
        let service = c.service;
        let will = c.will.take();
        let session = c.session.take();
        let publisher = session
            .and_then(|sid| self.sessions[sid.0 as usize].as_ref())
            .map(|s| super::share::publisher_hash(s.client_id()));
        if service {
            self.service_events
                .push_back(ServiceEvent::Closed { conn, reason });
        }
        if reason == CloseReason::ProtocolError {
            self.stats.protocol_errors += 1;
        }
        self.forget_held(conn);
        if let Some(sid) = session {
            // An offline session's queue is bounded by policy, not pressure.
            self.caught_up(sid);
            self.session_conn[sid.0 as usize] = None;
            let clean = match self.sessions[sid.0 as usize].as_mut() {
                Some(s) => {
                    s.go_offline();
                    s.is_clean()
                }
                None => true,
            };
            if clean {
                self.end_session(sid);
            } else {
                self.journal_left(sid);
                self.share_presence(sid);
            }
        }
        if reason.publishes_will() {
            if let Some(will) = will {
                self.route(will, false, publisher);
            }
        }
        self.woken.push(conn);
    }

    /// Replaces the will of `conn` (`None`: no will), as a gateway whose
    /// protocol lets clients change it does (MQTT-SN's WILLTOPICUPD and
    /// WILLMSGUPD). A will the client may not publish is dropped, as at
    /// CONNECT. `false` when the connection is gone or closing.
    pub fn set_will(&mut self, conn: ConnId, will: Option<codec::LastWill>) -> bool {
        let acl = self
            .conn(conn)
            .filter(|c| c.closing.is_none())
            .and_then(|c| c.session)
            .map(|s| self.session_acl[s.0 as usize].clone());
        let Some(acl) = acl else { return false };
        let will = will.filter(|w| {
            let allowed = acl
                .as_ref()
                .map_or(true, |acl| acl.may_publish(w.topic.as_str()));
            if !allowed {
                self.stats.acl_publish_denied += 1;
            }
            allowed
        });
        if let Some(c) = self.conn_mut(conn) {
            c.will = will.map(|w| Message {
                topic: w.topic.compact(),
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
            });
        }
        true
    }

    /// The socket closed or failed.
    pub fn connection_lost(&mut self, conn: ConnId) {
        self.close(conn, CloseReason::Lost);
    }

    /// Closes a service connection on the service's behalf (its peer broke
    /// the service's protocol); the will is published as for any violation.
    pub fn close_service(&mut self, conn: ConnId) {
        if self.conn(conn).is_some_and(|c| c.service) {
            self.close(conn, CloseReason::ProtocolError);
        }
    }

    /// The shell has closed the socket of a closing connection.
    pub fn release(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.get_mut(conn.0 as usize) else {
            return;
        };
        if slot.is_some() {
            *slot = None;
            self.free_conns.push(conn.0);
        }
    }

    /// Whether the connection is closing, and why.
    pub fn closing(&self, conn: ConnId) -> Option<CloseReason> {
        self.conn(conn)
            .map_or(Some(CloseReason::Lost), |c| c.closing)
    }

    /// Closes the connections silent for longer than their keepalive allows.
    pub(super) fn expire_keepalives(&mut self, now: Instant) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let keepalive = c.keepalive?;
                (c.closing.is_none() && now.duration_since(c.last_packet) > keepalive)
                    .then_some(ConnId(i as u32))
            })
            .collect();
        for conn in expired {
            tracing::debug!(?conn, "keepalive expired");
            self.close(conn, CloseReason::KeepaliveExpired);
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
