//! Persistence as the broker sees it: the journal of state changes the
//! shell writes to the shard's store, acknowledgements held until what they
//! acknowledge is durable (`Durability::Sync`), restoring a store's state,
//! the snapshot a compaction writes, and the expiry of persistent sessions
//! that never come back.
//!
//! # The journal
//! Records (`crate::mqtt::store`) are appended to `journal` as the state
//! changes: at `open_session`, `end_session`, `add_subscription`,
//! `remove_subscription`, `store_retained`, a persistent session's
//! departure, and after every call that moves a persistent session's QoS
//! state (`journal_session`). The shell takes the bytes with
//! `take_journal`, writes and syncs them, and reports `handle_committed`
//! with the position it was given. Positions count journal bytes ever
//! appended, so "durable" is one comparison.
//!
//! # Held acknowledgements (`sync`)
//! A PUBACK or PUBREC waits, and the acks of the connection's later
//! PUBLISHes wait behind it (acks keep their order; the connection is
//! paused only past `HELD_ACKS_PER_CONN_MAX`), until (a) this shard has committed
//! the journal up to the end of the PUBLISH's records, and (b) every shard
//! the message was forwarded to has answered `Durable`: each answers after
//! its own commit of what it had appended when the question arrived, which
//! the FIFO channel puts after the copy. A SUBACK that adds filters to a
//! persistent session waits likewise for the local commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::subscribe::PendingSuback;
use super::{Broker, ConnId, RemoteMsg, SessionId, ShardId};
use crate::mqtt::codec;
use crate::mqtt::session::{Change, Session};
use crate::mqtt::store::{self, state, Record};

/// When acknowledged state reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Nothing is written: today's in-memory broker.
    #[default]
    None,
    /// The shell writes the journal every flush interval; a crash loses at
    /// most that window.
    Periodic,
    /// An acknowledgement goes out only once what it acknowledges is
    /// durable.
    Sync,
}

/// How the broker persists; see `Broker::set_persistence`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Persistence {
    pub durability: Durability,
    /// Persistent sessions offline longer than this end; `None`: never.
    pub session_expiry: Option<Duration>,
    /// The wall clock (Unix ms) at the broker's `started` instant, so that
    /// departure times in the store mean something after a restart.
    pub unix_ms_at_start: u64,
}

/// Acknowledgements one connection may have held before it is no longer
/// read: a publisher that pipelines keeps its window full without growing
/// the broker's memory without bound.
const HELD_ACKS_PER_CONN_MAX: usize = 64;

/// How often offline sessions are checked for expiry.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// An acknowledgement to a publisher waiting for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    PubAck(u16),
    PubRec(u16),
}

#[derive(Debug)]
struct HeldAck {
    ack: Ack,
    local_end: u64,
    token: u64,
    remote_missing: u32,
}

/// The broker's persistence state (see the module docs).
#[derive(Default)]
pub(super) struct Persist {
    settings: Persistence,
    journal: Vec<u8>,
    appended: u64,
    committed: u64,
    /// Per connection, its held acknowledgements in PUBLISH order.
    held_acks: HashMap<ConnId, VecDeque<HeldAck>>,
    /// The connection of each token some shard has yet to answer.
    held_tokens: HashMap<u64, ConnId>,
    /// Connections paused for holding `HELD_ACKS_PER_CONN_MAX`.
    held_paused: HashSet<ConnId>,
    held_subacks: Vec<(u64, PendingSuback)>,
    /// `Durable` questions of other shards: (position, shard, token).
    remote_waits: Vec<(u64, ShardId, u64)>,
    next_expiry_check: Option<Instant>,
}

/// What the shell writes next: the journal bytes, or a whole snapshot that
/// replaces the store's file, and the position to report once durable.
#[derive(Debug)]
pub struct JournalBatch {
    pub bytes: Vec<u8>,
    pub end: u64,
    pub snapshot: bool,
}

impl Persist {
    pub(super) fn on(&self) -> bool {
        self.settings.durability != Durability::None
    }

    pub(super) fn sync(&self) -> bool {
        self.settings.durability == Durability::Sync
    }

    fn append(&mut self, record: &Record) {
        let before = self.journal.len();
        store::encode(&mut self.journal, record);
        self.appended += (self.journal.len() - before) as u64;
    }

    fn durable(&self) -> bool {
        self.committed >= self.appended
    }
}

impl Broker {
    /// Sets how this broker persists. Call before any input.
    pub fn set_persistence(&mut self, settings: Persistence) {
        self.persist.settings = settings;
    }

    /// Bytes of journal waiting for the shell.
    pub fn journal_len(&self) -> usize {
        self.persist.journal.len()
    }

    /// Whether journal bytes were appended past the last commit: the
    /// shell in `sync` mode writes at once when they were.
    pub fn uncommitted(&self) -> bool {
        self.persist.appended > self.persist.committed
    }

    /// The journal position made durable so far (`handle_committed`).
    pub fn committed(&self) -> u64 {
        self.persist.committed
    }

    /// The journal position appended so far.
    pub fn appended(&self) -> u64 {
        self.persist.appended
    }

    /// How this broker persists.
    pub fn persistence(&self) -> Persistence {
        self.persist.settings
    }

    /// Takes the journal for the shell to write; with `snapshot`, the whole
    /// live state instead (it supersedes the journal, which is dropped).
    pub fn take_journal(&mut self, snapshot: bool) -> JournalBatch {
        let end = self.persist.appended;
        if !snapshot {
            let bytes = std::mem::take(&mut self.persist.journal);
            return JournalBatch {
                bytes,
                end,
                snapshot,
            };
        }
        self.persist.journal.clear();
        let mut bytes = Vec::new();
        self.write_snapshot(&mut bytes);
        JournalBatch {
            bytes,
            end,
            snapshot,
        }
    }

    fn write_snapshot(&self, out: &mut Vec<u8>) {
        let now = self.last_now;
        for (i, s) in self.sessions.iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| s.is_journaled()) else {
                continue;
            };
            let mut st = s.to_state();
            if self.session_conn[i].is_none() {
                st.offline_since_ms = Some(self.unix_ms(s.left_at().unwrap_or(now)));
            }
            state::session_records(s.client_id(), &st, out);
        }
        self.retained.for_each(|r| {
            if !r.topic.as_str().starts_with("$SYS/") {
                store::encode(
                    out,
                    &Record::Retain {
                        topic: r.topic.clone(),
                        qos: r.qos,
                        payload: r.payload.clone(),
                    },
                );
            }
        });
    }

    /// The shell made the journal durable up to `end` (`JournalBatch::end`):
    /// held acknowledgements and other shards' questions are answered.
    pub fn handle_committed(&mut self, end: u64) {
        let p = &mut self.persist;
        p.committed = p.committed.max(end);
        let committed = p.committed;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut p.remote_waits)
            .into_iter()
            .partition(|(at, _, _)| *at <= committed);
        p.remote_waits = waiting;
        for (_, from, token) in ready {
            self.send(from, RemoteMsg::DurableAck(token));
        }
        self.release_all_acks();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.persist.held_subacks)
            .into_iter()
            .partition(|(at, _)| *at <= committed);
        self.persist.held_subacks = waiting;
        for (_, pending) in ready {
            self.complete_subscribe(pending);
        }
    }

    /// Another shard asks to hear once what it sent is durable here.
    pub(super) fn handle_durable(&mut self, from: ShardId, token: u64) {
        if self.persist.durable() {
            self.send(from, RemoteMsg::DurableAck(token));
        } else {
            let at = self.persist.appended;
            self.persist.remote_waits.push((at, from, token));
        }
    }

    pub(super) fn handle_durable_ack(&mut self, token: u64) {
        let Some(&conn) = self.persist.held_tokens.get(&token) else {
            return;
        };
        let held = self
            .persist
            .held_acks
            .get_mut(&conn)
            .and_then(|q| q.iter_mut().find(|h| h.token == token));
        let missing = held.map_or(0, |h| {
            h.remote_missing = h.remote_missing.saturating_sub(1);
            h.remote_missing
        });
        if missing == 0 {
            self.persist.held_tokens.remove(&token);
            self.release_acks(conn);
        }
    }

    /// Sends `ack` now, or holds it (`sync`) until this shard and the
    /// shards in `targets` (a bit per shard) have made the PUBLISH durable.
    /// Acks of one connection go out in the order of its PUBLISHes
    /// [MQTT-4.6.0-2], [MQTT-4.6.0-3]: one held holds those after it.
    pub(super) fn acknowledge(&mut self, conn: ConnId, ack: Ack, targets: u64) {
        let remote_missing = targets.count_ones();
        let behind = self.persist.held_acks.contains_key(&conn);
        if !self.persist.sync() || (!behind && self.persist.durable() && remote_missing == 0) {
            self.write_ack(conn, ack);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        for shard in 0..self.shards {
            if targets & (1 << shard) != 0 {
                self.send(ShardId(shard as u16), RemoteMsg::Durable(token));
            }
        }
        if remote_missing > 0 {
            self.persist.held_tokens.insert(token, conn);
        }
        let local_end = self.persist.appended;
        let queue = self.persist.held_acks.entry(conn).or_default();
        queue.push_back(HeldAck {
            ack,
            local_end,
            token,
            remote_missing,
        });
        if queue.len() >= HELD_ACKS_PER_CONN_MAX {
            self.persist.held_paused.insert(conn);
            if let Some(c) = self.conn_mut(conn) {
                c.paused = true;
            }
        }
    }

    fn write_ack(&mut self, conn: ConnId, ack: Ack) {
        self.write(conn, |out| match ack {
            Ack::PubAck(pkid) => codec::encode_puback(out, pkid),
            Ack::PubRec(pkid) => codec::encode_pubrec(out, pkid),
        });
    }

    /// Writes the acks of `conn` that are durable, in order, up to the
    /// first that is not.
    fn release_acks(&mut self, conn: ConnId) {
        let committed = self.persist.committed;
        let Some(queue) = self.persist.held_acks.get_mut(&conn) else {
            return;
        };
        let mut ready = Vec::new();
        while let Some(h) = queue.front() {
            if h.local_end > committed || h.remote_missing > 0 {
                break;
            }
            ready.extend(queue.pop_front().map(|h| h.ack));
        }
        let left = queue.len();
        if left == 0 {
            self.persist.held_acks.remove(&conn);
        }
        if ready.is_empty() {
            return;
        }
        for ack in ready {
            self.write_ack(conn, ack);
        }
        if left < HELD_ACKS_PER_CONN_MAX && self.persist.held_paused.remove(&conn) {
            if let Some(c) = self.conn_mut(conn) {
                c.paused = false;
            }
            self.woken.push(conn);
        }
    }

    fn release_all_acks(&mut self) {
        let conns: Vec<ConnId> = self.persist.held_acks.keys().copied().collect();
        for conn in conns {
            self.release_acks(conn);
        }
    }

    /// The connection closes: its held acknowledgements are dropped (its
    /// id may serve another connection before they would go), and the
    /// filters of its held SUBACKs take effect without the SUBACK, as
    /// after a barrier that completes on a closed connection.
    pub(super) fn forget_held(&mut self, conn: ConnId) {
        if let Some(queue) = self.persist.held_acks.remove(&conn) {
            for h in queue {
                self.persist.held_tokens.remove(&h.token);
            }
        }
        self.persist.held_paused.remove(&conn);
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.persist.held_subacks)
            .into_iter()
            .partition(|(_, p)| p.conn == conn);
        self.persist.held_subacks = others;
        for (_, pending) in mine {
            self.activate(pending.session, &pending.granted);
        }
    }

    /// A SUBACK for filters of a persistent session waits, in `sync` mode,
    /// for their records to be durable; `None` when it is held.
    pub(super) fn hold_suback(&mut self, pending: PendingSuback) -> Option<PendingSuback> {
        let persistent = self
            .session(pending.session)
            .is_some_and(Session::is_journaled);
        if !self.persist.sync() || !persistent || self.persist.durable() {
            return Some(pending);
        }
        if let Some(c) = self.conn_mut(pending.conn) {
            c.paused = true;
        }
        let at = self.persist.appended;
        self.persist.held_subacks.push((at, pending));
        None
    }

    fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions.get(sid.0 as usize).and_then(Option::as_ref)
    }

    /// Moves the session's QoS changes into the journal.
    pub(super) fn journal_session(&mut self, sid: SessionId) {
        let Some(s) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if !s.is_journaled() {
            return;
        }
        let changes = s.take_changes();
        if changes.is_empty() {
            return;
        }
        let id = s.client_id().to_string();
        for change in changes {
            let client_id = id.clone();
            let record = match change {
                Change::Enqueued(message) => Record::Enqueue { client_id, message },
                Change::Sent { pkid, message } => Record::Send {
                    client_id,
                    pkid,
                    message,
                },
                Change::Dequeued(pkid) => Record::Dequeue { client_id, pkid },
                Change::Acked(pkid) => Record::Acked { client_id, pkid },
                Change::Released(pkid) => Record::Released { client_id, pkid },
                Change::InboundQos2(pkid) => Record::InboundQos2 { client_id, pkid },
                Change::InboundReleased(pkid) => Record::InboundReleased { client_id, pkid },
            };
            self.persist.append(&record);
        }
    }

    /// Appends a record about the session, if it is persisted.
    pub(super) fn journal_record(&mut self, sid: SessionId, record: impl FnOnce(String) -> Record) {
        let Some(s) = self.session(sid).filter(|s| s.is_journaled()) else {
            return;
        };
        let record = record(s.client_id().to_string());
        self.persist.append(&record);
    }

    /// A session became persistent (clean session 0) while persistence is
    /// on: it journals from now, starting with all it holds.
    pub(super) fn journal_open(&mut self, sid: SessionId) {
        if !self.persist.on() {
            return;
        }
        let Some(s) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let fresh = !s.is_journaled();
        s.set_journal(true);
        if fresh {
            let mut bytes = Vec::new();
            state::session_records(s.client_id(), &s.to_state(), &mut bytes);
            self.persist.appended += bytes.len() as u64;
            self.persist.journal.extend_from_slice(&bytes);
        }
        let at_ms = self.unix_ms(self.last_now);
        self.journal_record(sid, |client_id| Record::Presence {
            client_id,
            online: true,
            at_ms,
        });
    }

    /// A persisted session's client left, at `last_now`.
    pub(super) fn journal_left(&mut self, sid: SessionId) {
        let now = self.last_now;
        let at_ms = self.unix_ms(now);
        if let Some(s) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        {
            s.set_left(Some(now));
        }
        self.journal_record(sid, |client_id| Record::Presence {
            client_id,
            online: false,
            at_ms,
        });
    }

    /// Records a retained change (`$SYS` values are the broker's own and
    /// are published anew after a restart).
    pub(super) fn journal_retained(&mut self, record: Record) {
        if self.persist.on() {
            if let Record::Retain { topic, .. } = &record {
                if topic.as_str().starts_with("$SYS/") {
                    return;
                }
            }
            self.persist.append(&record);
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started).as_millis();
        self.persist
            .settings
            .unix_ms_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Loads what a store held, before any input: persistent sessions
    /// (offline, journaling), their filters in the index, the retained
    /// messages, and the filters of other shards' restored sessions
    /// (`remote_routes`), so that publishes route to them from the start.
    pub fn restore(
        &mut self,
        now: Instant,
        restored: state::State,
        remote_routes: &[(ShardId, String)],
    ) {
        self.last_now = now;
        let now_ms = self.unix_ms(now);
        for (shard, filter) in remote_routes {
            if *shard != self.shard && crate::mqtt::topic::parse_share(filter).is_some() {
                self.restore_remote_member(*shard, filter);
            } else if *shard != self.shard {
                self.routes
                    .subscribe(filter, *shard, crate::mqtt::QoS::AtMostOnce);
            }
        }
        for (_, (topic, r)) in restored.retained {
            self.retained.set(crate::mqtt::retained::RetainedMessage {
                topic,
                payload: r.payload,
                qos: r.qos,
            });
        }
        for (client_id, st) in restored.sessions {
            let away_ms = st
                .offline_since_ms
                .map_or(0, |at| now_ms.saturating_sub(at));
            let left = now
                .checked_sub(Duration::from_millis(away_ms))
                .unwrap_or(now);
            let mut session = Session::from_state(client_id.clone(), st);
            session.set_left(Some(left));
            self.queued = self.queued.moved(Default::default(), session.queue_size());
            let filters: Vec<_> = session
                .subscriptions()
                .map(|(f, q)| (f.to_string(), q))
                .collect();
            let sid = self.insert_session(session);
            self.by_client_id.insert(client_id, sid);
            for (filter, qos) in filters {
                if crate::mqtt::topic::parse_share(&filter).is_some() {
                    self.share_join(sid, &filter, qos);
                    continue;
                }
                *self.filter_refs.entry(filter.clone()).or_insert(0) += 1;
                self.index.subscribe(&filter, sid, qos);
            }
        }
    }

    /// Ends the persistent sessions offline for longer than the expiry.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        let Some(expiry) = self.persist.settings.session_expiry else {
            return;
        };
        if self.persist.next_expiry_check.is_some_and(|at| now < at) {
            return;
        }
        self.persist.next_expiry_check = Some(now + EXPIRY_CHECK_INTERVAL);
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                let left = s.left_at()?;
                (self.session_conn[i].is_none()
                    && !s.is_clean()
                    && now.saturating_duration_since(left) > expiry)
                    .then_some(SessionId(i as u32))
            })
            .collect();
        for sid in expired {
            tracing::debug!(?sid, "persistent session expired");
            self.end_session(sid);
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
