//! The gateway's side of each client's broker connection: a client's
//! input runs, its datagrams go out, its `ToBroker` steps become calls on
//! the broker, and what the broker wrote back goes to the client, until
//! nothing is left; and a client's removal, which closes its connection.

use std::time::Instant;

use super::{Authorize, Gateway, PeerKey};
use crate::mqtt::broker::{Broker, ConnId, ShardId};
use crate::mqtt::codec::{self as mqtt, Packet};
use crate::mqtt::QoS;
use crate::sn::client::{Client, ClientOut, Shared, State, ToBroker};

impl Gateway {
    /// Runs one input of client `i`, then applies what it produced.
    pub(super) fn step(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        i: usize,
        input: impl FnOnce(&mut Client, &Shared, &mut ClientOut),
    ) {
        self.scratch.clear();
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        input(&mut e.client, &self.shared, &mut self.scratch);
        self.apply(now, broker, auth, i);
    }

    pub(super) fn flush_scratch(&mut self, key: &PeerKey, ctrl: u8) {
        let mut n = 0;
        for d in self.scratch.datagrams() {
            self.outgoing.push(key, ctrl, d);
            n += 1;
        }
        self.count_sent(n);
        if self.scratch.buffer_dropped > 0 {
            self.metrics.buffer_dropped.fetch_add(
                self.scratch.buffer_dropped,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    pub(super) fn count_sent(&self, n: u64) {
        self.metrics
            .sent
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends what client `i` said, runs its broker steps, and reads what the
    /// broker answered, until nothing is left.
    pub(super) fn apply(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        i: usize,
    ) {
        loop {
            let Some(e) = self.entry(i) else { return };
            let (key, ctrl) = (e.key.clone(), e.ctrl);
            self.flush_scratch(&key, ctrl);
            // The steps' vector goes back to the scratch once run: no
            // allocation per message.
            let mut steps = std::mem::take(&mut self.spare_steps);
            std::mem::swap(&mut steps, &mut self.scratch.broker);
            self.scratch.clear();
            for step in steps.drain(..) {
                self.broker_step(now, broker, auth, i, step);
            }
            self.spare_steps = steps;
            let Some(e) = self.entry(i) else { return };
            let (closed, conn) = (e.client.state() == State::Closed, e.conn);
            if closed || conn.is_none() {
                // What the steps said (a refusal's CONNACK) goes out
                // before the client does.
                self.flush_scratch(&key, ctrl);
                self.scratch.clear();
            }
            if closed {
                self.remove(now, broker, i, false);
                return;
            }
            let Some(conn) = conn else { return };
            if !self.read_outbox(now, broker, i, conn) {
                return;
            }
        }
    }

    pub(super) fn broker_step(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        auth: Authorize<'_>,
        i: usize,
        step: ToBroker,
    ) {
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        match step {
            ToBroker::Open(connect) => {
                if let Some(old) = e.conn.take() {
                    self.by_conn.remove(&old);
                    broker.connection_lost(old);
                    broker.release(old);
                    self.released.push(old);
                }
                match auth(&connect, e.key.addr) {
                    Ok(acl) => {
                        let conn = broker.connect_with_acl(now, *connect, acl);
                        e.conn = Some(conn);
                        self.by_conn.insert(conn, i);
                        self.opened.push(conn);
                    }
                    Err(_) => e.client.refused(&mut self.scratch),
                }
            }
            ToBroker::Packet(Packet::Publish(p))
                if p.qos != QoS::AtMostOnce
                    && (e.client.holds() || e.conn.is_some_and(|c| broker.is_throttled(c))) =>
            {
                // A subscriber is behind: as a TCP publisher is not read
                // from, this one's PUBLISH waits, unacknowledged, so that
                // nothing is acknowledged that a full queue would drop.
                // The broker wakes the connection when the pressure ends.
                e.client.hold(p);
                self.metrics.count_held();
            }
            ToBroker::Packet(packet) => {
                if let Some(conn) = e.conn {
                    broker.handle_packet(now, conn, packet);
                }
            }
            ToBroker::SetWill(will) => {
                if let Some(conn) = e.conn {
                    broker.set_will(conn, will);
                }
            }
            ToBroker::Lost => {
                if let Some(conn) = e.conn {
                    broker.connection_lost(conn);
                }
            }
        }
    }

    /// Gives client `i` what its broker connection wrote. `true` when the
    /// client produced something to apply.
    pub(super) fn read_outbox(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        i: usize,
        conn: ConnId,
    ) -> bool {
        if let Some(outbox) = broker.outbox_mut(conn) {
            self.mqtt_buf.extend_from_slice(outbox);
            outbox.clear();
        }
        let closing = broker.closing(conn).is_some();
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        loop {
            match mqtt::decode(&mut self.mqtt_buf, usize::MAX) {
                Ok(Some(packet)) => {
                    e.client
                        .on_broker(now, &self.shared, packet, &mut self.scratch)
                }
                Ok(None) => break,
                Err(error) => {
                    // The broker's own encoding: a bug, not a peer's doing.
                    tracing::error!(%error, "MQTT-SN gateway cannot read its broker connection");
                    self.mqtt_buf.clear();
                    break;
                }
            }
        }
        if closing && e.client.state() != State::Closed {
            e.client.broker_closed(&mut self.scratch);
        }
        self.scratch.has_output() || e.client.state() == State::Closed
    }

    /// The broker wrote to (or closes) `conn`.
    pub fn drain(&mut self, now: Instant, broker: &mut Broker, auth: Authorize<'_>, conn: ConnId) {
        let Some(&i) = self.by_conn.get(&conn) else {
            return;
        };
        self.scratch.clear();
        self.release_held(now, broker, i, conn);
        if self.read_outbox(now, broker, i, conn) {
            self.apply(now, broker, auth, i);
        }
    }

    /// Gives the broker what client `i` held while it was throttled, in
    /// order, as long as it takes them.
    fn release_held(&mut self, now: Instant, broker: &mut Broker, i: usize, conn: ConnId) {
        let Some(e) = self.entries.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        while e.client.holds() && !broker.is_throttled(conn) {
            let Some(p) = e.client.take_held() else { break };
            broker.handle_packet(now, conn, Packet::Publish(p));
        }
    }

    /// Removes client `i`; `lost`: its broker connection closes as lost
    /// (the will goes out) if it is still open.
    pub(super) fn remove(&mut self, now: Instant, broker: &mut Broker, i: usize, lost: bool) {
        if let Some((key, via)) = self.remove_client(now, broker, i, lost) {
            self.release_key(key, via);
        }
    }

    /// As `remove`, but the address stays taken: its key and via shard.
    pub(super) fn remove_client(
        &mut self,
        now: Instant,
        broker: &mut Broker,
        i: usize,
        lost: bool,
    ) -> Option<(PeerKey, ShardId)> {
        let e = self.entries.get_mut(i).and_then(Option::take)?;
        self.free.push(i);
        if self.by_key.get(&e.key) == Some(&i) {
            self.by_key.remove(&e.key);
        }
        if self.by_id.get(e.client.client_id()) == Some(&i) {
            self.by_id.remove(e.client.client_id());
        }
        let id = e.client.client_id();
        if e.client.keeps_session() && e.client.will().is_set() {
            if self.kept_wills.len() < super::MAX_KEPT_WILLS || self.kept_wills.contains_key(id) {
                self.kept_wills
                    .insert(id.to_string(), e.client.will().clone());
            }
        } else {
            self.kept_wills.remove(id);
        }
        if let Some(conn) = e.conn {
            self.by_conn.remove(&conn);
            if broker.closing(conn).is_none() {
                if lost {
                    broker.connection_lost(conn);
                } else {
                    broker.handle_packet(now, conn, Packet::Disconnect);
                }
            }
            broker.release(conn);
            self.released.push(conn);
        }
        Some((e.key, e.via))
    }
}
