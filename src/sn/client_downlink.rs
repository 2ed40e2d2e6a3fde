//! The client machine's broker-to-client side: what the broker connection
//! writes, and how it reaches the client: a REGISTER before a name the
//! client has no id for (§6.10), one QoS 1/2 message in flight, sent
//! again after `retry` up to `max_retries` times (§6.13), nothing while
//! the client sleeps (§6.14).

use std::time::Instant;

use super::{sn_qos, Client, ClientOut, InFlight, Registering, Shared, State, ToBroker};
use crate::mqtt::codec::{Packet, Publish};
use crate::mqtt::QoS;
use crate::sn::codec::{Flags, Message, ReturnCode, SnQoS, TopicIdType};
use crate::sn::topics::downlink_id;

impl Client {
    /// A packet the broker wrote to the client's connection.
    pub fn on_broker(
        &mut self,
        now: Instant,
        shared: &Shared,
        packet: Packet,
        out: &mut ClientOut,
    ) {
        match packet {
            Packet::ConnAck { code, .. } => {
                if self.state != State::Opening {
                    return;
                }
                if code == crate::mqtt::codec::ConnectReturnCode::Accepted {
                    self.state = State::Active;
                    out.send(&Message::ConnAck(ReturnCode::Accepted));
                    self.pump(now, shared, out);
                } else {
                    self.refused(out);
                }
            }
            Packet::Publish(p) => {
                if self.pending.len() >= shared.sleep_buffer && p.qos == QoS::AtMostOnce {
                    out.buffer_dropped += 1;
                    return;
                }
                self.pending.push_back(p);
                self.pump(now, shared, out);
            }
            Packet::PubAck(pkid) => {
                if let Some(i) = self.uplink.iter().position(|u| u.0 == pkid) {
                    let (_, topic_id, _) = self.uplink.swap_remove(i);
                    out.send(&Message::PubAck {
                        topic_id,
                        msg_id: pkid,
                        code: ReturnCode::Accepted,
                    });
                }
            }
            Packet::PubRec(pkid) => out.send(&Message::PubRec(pkid)),
            Packet::PubComp(pkid) => {
                self.uplink.retain(|u| u.0 != pkid);
                out.send(&Message::PubComp(pkid));
            }
            Packet::PubRel(pkid) => {
                if let Some(f) = self.in_flight.as_mut().filter(|f| f.msg_id == pkid) {
                    f.sent = now;
                    f.tries = 0;
                    if self.state != State::Asleep {
                        out.send(&Message::PubRel(pkid));
                    }
                }
            }
            Packet::SubAck { pkid, codes } => {
                let Some(i) = self.subscribing.iter().position(|s| s.0 == pkid) else {
                    return;
                };
                let (msg_id, topic_id, kind) = self.subscribing.swap_remove(i);
                let (qos, code) = match codes.first().copied().and_then(QoS::from_u8) {
                    Some(q) => (sn_qos(q), ReturnCode::Accepted),
                    None => (SnQoS::AtMostOnce, ReturnCode::NotSupported),
                };
                out.send(&Message::SubAck {
                    flags: Flags::new(qos, kind),
                    topic_id: if code == ReturnCode::Accepted {
                        topic_id
                    } else {
                        0
                    },
                    msg_id,
                    code,
                });
            }
            Packet::UnsubAck(pkid) => out.send(&Message::UnsubAck(pkid)),
            _ => {}
        }
    }

    /// Sends what waits, as far as the state allows: nothing while asleep,
    /// a REGISTER before a name the client has no id for, one QoS 1/2
    /// message in flight.
    pub(super) fn pump(&mut self, now: Instant, shared: &Shared, out: &mut ClientOut) {
        if !matches!(self.state, State::Active | State::Awake) {
            return;
        }
        while self.registering.is_none() {
            let Some(head) = self.pending.front() else {
                break;
            };
            if head.qos != QoS::AtMostOnce && self.in_flight.is_some() {
                break;
            }
            let name = head.topic.as_str();
            let Some((kind, topic_id)) = downlink_id(&self.topics, &shared.predefined, name) else {
                match self.topics.register(name, shared.max_topics) {
                    Ok(topic_id) => {
                        self.next_msg_id = self.next_msg_id.wrapping_add(1).max(1);
                        let r = Registering {
                            msg_id: self.next_msg_id,
                            topic_id,
                            sent: now,
                            tries: 0,
                        };
                        out.send(&Message::Register {
                            topic_id,
                            msg_id: r.msg_id,
                            topic_name: name.as_bytes(),
                        });
                        self.registering = Some(r);
                    }
                    // No id to give: the message cannot be said.
                    Err(_) => {
                        self.pending.pop_front();
                        out.buffer_dropped += 1;
                    }
                }
                continue;
            };
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            out.send(&publish_message(&p, kind, topic_id, false));
            if p.qos != QoS::AtMostOnce {
                self.in_flight = Some(InFlight {
                    msg_id: p.pkid,
                    publish: Some(p),
                    sent: now,
                    tries: 0,
                });
            }
        }
        if self.state == State::Awake
            && self.pending.is_empty()
            && self.in_flight.is_none()
            && self.registering.is_none()
        {
            // All given: PINGRESP, and back to sleep (§6.14).
            out.send(&Message::PingResp);
            self.state = State::Asleep;
        }
    }

    pub(super) fn retry(&mut self, now: Instant, shared: &Shared, out: &mut ClientOut) {
        // Nretry sends again, then no more: the client is taken as gone
        // (§6.13), and a copy past that would reach no one who waits.
        let mut exhausted = false;
        if let Some(r) = self.registering.as_mut() {
            if now.saturating_duration_since(r.sent) >= shared.retry {
                r.tries += 1;
                r.sent = now;
                exhausted |= r.tries > shared.max_retries;
                if r.tries <= shared.max_retries {
                    self.send_registering(out);
                }
            }
        }
        if let Some(f) = self.in_flight.as_mut() {
            if now.saturating_duration_since(f.sent) >= shared.retry {
                f.tries += 1;
                f.sent = now;
                exhausted |= f.tries > shared.max_retries;
                if f.tries <= shared.max_retries {
                    self.send_in_flight(shared, out);
                }
            }
        }
        if exhausted {
            match self.state {
                // Back to sleep; what is unacknowledged waits for the
                // next wake.
                State::Awake => {
                    if let Some(f) = self.in_flight.take() {
                        if let Some(p) = f.publish {
                            self.pending.push_front(p);
                        } else {
                            self.in_flight = Some(InFlight { tries: 0, ..f });
                        }
                    }
                    // The client never took the id: REGISTER again next time.
                    if let Some(r) = self.registering.take() {
                        self.topics.remove(r.topic_id);
                    }
                    self.state = State::Asleep;
                }
                _ => {
                    out.broker.push(ToBroker::Lost);
                    self.state = State::Closed;
                }
            }
        }
    }

    /// The REGISTER that waits for its REGACK, again.
    pub(super) fn send_registering(&self, out: &mut ClientOut) {
        let Some(r) = &self.registering else { return };
        if let Some(name) = self.topics.name(r.topic_id) {
            out.send(&Message::Register {
                topic_id: r.topic_id,
                msg_id: r.msg_id,
                topic_name: name.as_bytes(),
            });
        }
    }

    /// The message in flight again: its PUBLISH with DUP, or its PUBREL.
    pub(super) fn send_in_flight(&self, shared: &Shared, out: &mut ClientOut) {
        let Some(f) = &self.in_flight else { return };
        match &f.publish {
            Some(p) => {
                if let Some((kind, id)) =
                    downlink_id(&self.topics, &shared.predefined, p.topic.as_str())
                {
                    out.send(&publish_message(p, kind, id, true));
                }
            }
            None => out.send(&Message::PubRel(f.msg_id)),
        }
    }
}

fn publish_message(p: &Publish, kind: TopicIdType, topic_id: u16, dup: bool) -> Message<'_> {
    let mut flags = Flags::new(sn_qos(p.qos), kind);
    flags.retain = p.retain;
    flags.dup = dup;
    Message::Publish {
        flags,
        topic_id,
        msg_id: p.pkid,
        data: &p.payload,
    }
}
