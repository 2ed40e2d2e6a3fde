//! One MQTT-SN client's machine (sans-IO): the MQTT-SN side of a
//! transparent gateway connection, on the caller's clock.
//!
//! Inputs are the client's messages (`on_message`), the packets its broker
//! connection writes (`on_broker`) and time (`tick`); outputs are MQTT-SN
//! messages for the client and [`ToBroker`] steps for the broker
//! connection, both in [`ClientOut`]. Message ids pass through: the
//! client's QoS 1/2 PUBLISH, SUBSCRIBE and UNSUBSCRIBE keep their id as
//! MQTT packet ids, and the broker's packet ids become the ids of the
//! PUBLISHes to the client, so no table maps one to the other.
//!
//! What MQTT has not and the machine adds:
//! - topic ids (`topics`), and REGISTER before a message on a name the
//!   client has no id for (§6.10);
//! - the will's dialogue at CONNECT and its updates (§6.3, §6.4);
//! - one QoS 1/2 PUBLISH in flight to the client at a time, sent again
//!   after `retry` up to `max_retries` times (§6.13, §6.14 of the client's
//!   side, applied to the gateway's);
//! - sleep (§6.14): messages kept while the client sleeps, given when it
//!   wakes, and the client lost when it sleeps past its duration.
//!
//! The broker-to-client side (`on_broker`, the send queue, retries) is in
//! `client_downlink.rs`.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::codec::{Flags, Message, ReturnCode, SnQoS, TopicIdType, TopicRef, PROTOCOL_ID};
use super::topics::{short_name, Predefined, Topics};
use crate::mqtt::codec::{Connect, LastWill, Packet, Publish, Subscribe, Unsubscribe};
use crate::mqtt::topic::{validate_subscription, TopicName};
use crate::mqtt::QoS;

/// What the machines of one gateway share.
#[derive(Debug)]
pub struct Shared {
    pub retry: Duration,
    pub max_retries: u32,
    pub max_topics: usize,
    pub sleep_buffer: usize,
    pub predefined: Predefined,
    /// Presented to the broker for every client.
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

/// A step for the client's broker connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBroker {
    /// Open it (the CONNACK comes back through `on_broker`).
    Open(Box<Connect>),
    Packet(Packet),
    /// Replace the will (`None`: no will).
    SetWill(Option<LastWill>),
    /// Close it as lost: the will is published.
    Lost,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct ClientOut {
    /// Encoded messages for the client, back to back; `ends` splits them.
    pub wire: Vec<u8>,
    pub ends: Vec<usize>,
    pub broker: Vec<ToBroker>,
    /// QoS 0 messages dropped because the buffer was full.
    pub buffer_dropped: u64,
}

impl ClientOut {
    fn send(&mut self, message: &Message<'_>) {
        if message.encode(&mut self.wire) {
            self.ends.push(self.wire.len());
        }
    }

    /// Whether the call produced anything for the gateway to act on
    /// (datagrams, broker steps, or drops to count).
    pub fn has_output(&self) -> bool {
        !self.ends.is_empty() || !self.broker.is_empty() || self.buffer_dropped > 0
    }

    pub fn clear(&mut self) {
        self.wire.clear();
        self.ends.clear();
        self.broker.clear();
        self.buffer_dropped = 0;
    }

    /// The encoded messages, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let d = &self.wire[start..end];
            start = end;
            d
        })
    }
}

/// Where the client is (§6.14, figure 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// CONNECT with the will flag: WILLTOPICREQ sent.
    WillTopic,
    /// WILLMSGREQ sent.
    WillMsg,
    /// The broker connection is opening.
    Opening,
    Active,
    Asleep,
    /// Woken by a PINGREQ: the buffer is going out.
    Awake,
    /// Gone; the gateway removes it.
    Closed,
}

/// A message to the client that waits for its acknowledgement.
#[derive(Debug)]
struct InFlight {
    /// The PUBLISH's id; the PUBREL's once the client sent PUBREC.
    msg_id: u16,
    publish: Option<Publish>,
    sent: Instant,
    tries: u32,
}

#[derive(Debug)]
struct Registering {
    msg_id: u16,
    topic_id: u16,
    sent: Instant,
    tries: u32,
}

/// The will being built or kept: MQTT-SN may change either half (§6.4).
#[derive(Debug, Default, Clone)]
pub struct Will {
    topic: Option<(Flags, String)>,
    message: Bytes,
}

impl Will {
    /// Whether there is a will to keep (a topic).
    pub fn is_set(&self) -> bool {
        self.topic.is_some()
    }
}

/// One client's machine.
#[derive(Debug)]
pub struct Client {
    client_id: String,
    state: State,
    clean: bool,
    /// The CONNECT's Duration; 0 is no keepalive.
    keepalive: Duration,
    sleep: Duration,
    last_heard: Instant,
    /// A CONNECT while asleep wakes the client, not a new connection.
    resuming: bool,
    will: Will,
    topics: Topics,
    /// Messages from the broker not yet sent to the client.
    pending: VecDeque<Publish>,
    in_flight: Option<InFlight>,
    registering: Option<Registering>,
    next_msg_id: u16,
    /// Client QoS 1/2 PUBLISHes the broker has not acknowledged yet: the
    /// msg id and topic id that the PUBACK repeats.
    uplink: Vec<(u16, u16, TopicIdType)>,
    /// QoS 1/2 PUBLISHes not given to the broker while it throttles
    /// publishers (`hold`).
    held: VecDeque<Publish>,
    /// SUBSCRIBEs waiting for the broker's SUBACK: msg id, topic id, type.
    subscribing: Vec<(u16, u16, TopicIdType)>,
}

/// Uplink exchanges one client may have open before it gets congestion.
const MAX_UPLINK: usize = 64;

fn sn_qos(qos: QoS) -> SnQoS {
    match qos {
        QoS::AtMostOnce => SnQoS::AtMostOnce,
        QoS::AtLeastOnce => SnQoS::AtLeastOnce,
        QoS::ExactlyOnce => SnQoS::ExactlyOnce,
    }
}

fn mqtt_qos(qos: SnQoS) -> QoS {
    match qos {
        SnQoS::AtLeastOnce => QoS::AtLeastOnce,
        SnQoS::ExactlyOnce => QoS::ExactlyOnce,
        SnQoS::AtMostOnce | SnQoS::MinusOne => QoS::AtMostOnce,
    }
}

impl Client {
    /// A CONNECT from a client the gateway does not hold. `None` when the
    /// CONNECT cannot be taken (its answer is in `out`).
    /// `kept`: the will a CleanSession=false connection of the same client
    /// id left, which a CleanSession=false CONNECT without the Will flag
    /// takes up again (§6.3).
    pub fn connect(
        now: Instant,
        shared: &Shared,
        message: &Message<'_>,
        kept: Option<Will>,
        out: &mut ClientOut,
    ) -> Option<Client> {
        let Message::Connect {
            flags,
            protocol_id,
            duration_s,
            client_id,
        } = message
        else {
            return None;
        };
        let client_id = match std::str::from_utf8(client_id) {
            Ok(id) if *protocol_id == PROTOCOL_ID && !id.is_empty() && !id.contains('\0') => id,
            _ => {
                out.send(&Message::ConnAck(ReturnCode::NotSupported));
                return None;
            }
        };
        let mut client = Client {
            client_id: client_id.to_string(),
            state: State::Opening,
            clean: flags.clean_session,
            keepalive: Duration::from_secs(u64::from(*duration_s)),
            sleep: Duration::ZERO,
            last_heard: now,
            resuming: false,
            will: kept.filter(|_| !flags.clean_session).unwrap_or_default(),
            topics: Topics::default(),
            pending: VecDeque::new(),
            in_flight: None,
            registering: None,
            next_msg_id: 0,
            uplink: Vec::new(),
            held: VecDeque::new(),
            subscribing: Vec::new(),
        };
        client.begin(now, flags.will, shared, out);
        Some(client)
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The will dialogue, or the broker connection at once.
    fn begin(&mut self, now: Instant, will: bool, shared: &Shared, out: &mut ClientOut) {
        if will {
            self.state = State::WillTopic;
            out.send(&Message::WillTopicReq);
        } else {
            // §6.3: CleanSession=false without the Will flag keeps the
            // stored will; CleanSession=true deletes it.
            if self.clean {
                self.will = Will::default();
            }
            self.open(now, shared, out);
        }
    }

    /// Whether the client's session (and will, §6.3) outlives it.
    pub fn keeps_session(&self) -> bool {
        !self.clean
    }

    pub fn will(&self) -> &Will {
        &self.will
    }

    fn open(&mut self, now: Instant, shared: &Shared, out: &mut ClientOut) {
        if self.resuming {
            // Awake again through CONNECT: same broker connection (§6.14),
            // and what waited while it slept goes out now.
            self.resuming = false;
            if self.state != State::Opening {
                out.broker.push(ToBroker::SetWill(self.last_will()));
            }
            self.state = State::Active;
            out.send(&Message::ConnAck(ReturnCode::Accepted));
            self.pump(now, shared, out);
            return;
        }
        self.state = State::Opening;
        out.broker.push(ToBroker::Open(Box::new(Connect {
            protocol_level: 4,
            clean_session: self.clean,
            // The machine keeps time itself: sleep suspends the keepalive.
            keep_alive_s: 0,
            client_id: self.client_id.clone(),
            username: shared.username.clone(),
            password: shared.password.clone(),
            will: self.last_will(),
        })));
    }

    fn last_will(&self) -> Option<LastWill> {
        let (flags, topic) = self.will.topic.as_ref()?;
        Some(LastWill {
            topic: TopicName::from_string(topic.clone()).ok()?,
            payload: self.will.message.clone(),
            qos: mqtt_qos(flags.qos),
            retain: flags.retain,
        })
    }

    /// The broker refused the connection (credentials, ACL).
    pub fn refused(&mut self, out: &mut ClientOut) {
        out.send(&Message::ConnAck(ReturnCode::NotSupported));
        self.state = State::Closed;
    }

    /// The broker closed the connection on its side (another connection
    /// took the client id, a limit): the client is told.
    pub fn broker_closed(&mut self, out: &mut ClientOut) {
        if self.state != State::Closed {
            out.send(&Message::Disconnect(None));
            self.state = State::Closed;
        }
    }

    /// A message from the client.
    pub fn on_message(
        &mut self,
        now: Instant,
        shared: &Shared,
        message: &Message<'_>,
        out: &mut ClientOut,
    ) {
        self.last_heard = now;
        match (self.state, message) {
            (State::Closed, _) => {}
            (
                _,
                Message::Connect {
                    flags, duration_s, ..
                },
            ) => {
                // Again (its CONNACK was lost), or awake from sleep.
                self.keepalive = Duration::from_secs(u64::from(*duration_s));
                self.clean = flags.clean_session;
                if matches!(self.state, State::Asleep | State::Awake | State::Active) {
                    self.resuming = true;
                    if !flags.will {
                        self.state = State::Active;
                        self.resuming = false;
                        out.send(&Message::ConnAck(ReturnCode::Accepted));
                        self.pump(now, shared, out);
                        return;
                    }
                }
                self.begin(now, flags.will, shared, out);
            }
            (State::WillTopic, Message::WillTopic(topic)) => match topic {
                Some((flags, name)) => match std::str::from_utf8(name) {
                    Ok(name) if crate::mqtt::topic::validate_name(name).is_ok() => {
                        self.will.topic = Some((*flags, name.to_string()));
                        self.state = State::WillMsg;
                        out.send(&Message::WillMsgReq);
                    }
                    _ => {
                        out.send(&Message::ConnAck(ReturnCode::NotSupported));
                        self.state = State::Closed;
                    }
                },
                None => {
                    self.will = Will::default();
                    self.open(now, shared, out);
                }
            },
            (State::WillMsg, Message::WillMsg(data)) => {
                self.will.message = Bytes::copy_from_slice(data);
                self.open(now, shared, out);
            }
            (State::WillTopic | State::WillMsg | State::Opening, _) => {}
            (
                _,
                Message::Register {
                    msg_id, topic_name, ..
                },
            ) => {
                let code = match std::str::from_utf8(topic_name) {
                    Ok(name) if crate::mqtt::topic::validate_name(name).is_ok() => {
                        match self.topics.register(name, shared.max_topics) {
                            Ok(id) => {
                                out.send(&Message::RegAck {
                                    topic_id: id,
                                    msg_id: *msg_id,
                                    code: ReturnCode::Accepted,
                                });
                                return;
                            }
                            Err(_) => ReturnCode::Congestion,
                        }
                    }
                    _ => ReturnCode::NotSupported,
                };
                out.send(&Message::RegAck {
                    topic_id: 0,
                    msg_id: *msg_id,
                    code,
                });
            }
            (
                _,
                Message::RegAck {
                    msg_id,
                    code,
                    topic_id,
                },
            ) if self
                .registering
                .as_ref()
                .is_some_and(|r| r.msg_id == *msg_id) =>
            {
                self.registering = None;
                if *code != ReturnCode::Accepted {
                    // The client will not take the topic: its message is
                    // dropped, the next ones may fare better.
                    self.topics.remove(*topic_id);
                    self.pending.pop_front();
                }
                self.pump(now, shared, out);
            }
            (
                _,
                Message::Publish {
                    flags,
                    topic_id,
                    msg_id,
                    data,
                },
            ) => self.publish(shared, *flags, *topic_id, *msg_id, data, out),
            (
                _,
                Message::PubAck {
                    msg_id,
                    code,
                    topic_id,
                },
            ) if self.awaits(*msg_id, false) => {
                let sent = self.in_flight.take().and_then(|f| f.publish);
                // Only the client's own ids can be forgotten: a refused
                // predefined id or short name with the same number is not
                // the registered topic's.
                let own = sent.is_some_and(|p| self.topics.id(p.topic.as_str()) == Some(*topic_id));
                if *code == ReturnCode::InvalidTopicId && own {
                    self.topics.remove(*topic_id);
                }
                out.broker.push(ToBroker::Packet(Packet::PubAck(*msg_id)));
                self.pump(now, shared, out);
            }
            (_, Message::PubRec(msg_id)) => {
                if let Some(f) = self.in_flight.as_mut().filter(|f| f.msg_id == *msg_id) {
                    if f.publish.take().is_some() {
                        // The broker answers with PUBREL, which goes on
                        // with the same retry.
                        f.sent = now;
                        f.tries = 0;
                        out.broker.push(ToBroker::Packet(Packet::PubRec(*msg_id)));
                    } else {
                        out.send(&Message::PubRel(*msg_id));
                    }
                } else {
                    // A PUBREC again after the exchange ended.
                    out.send(&Message::PubRel(*msg_id));
                }
            }
            (_, Message::PubComp(msg_id)) if self.awaits(*msg_id, true) => {
                self.in_flight = None;
                out.broker.push(ToBroker::Packet(Packet::PubComp(*msg_id)));
                self.pump(now, shared, out);
            }
            (_, Message::PubRel(msg_id)) => {
                out.broker.push(ToBroker::Packet(Packet::PubRel(*msg_id)))
            }
            (
                _,
                Message::Subscribe {
                    flags,
                    msg_id,
                    topic,
                },
            ) => self.subscribe(shared, *flags, *msg_id, topic, out),
            (_, Message::Unsubscribe { msg_id, topic, .. }) => {
                self.unsubscribe(shared, *msg_id, topic, out)
            }
            (_, Message::PingReq(client_id)) => self.ping(now, shared, client_id.is_some(), out),
            (_, Message::Disconnect(None)) => {
                out.broker.push(ToBroker::Packet(Packet::Disconnect));
                out.send(&Message::Disconnect(None));
                self.state = State::Closed;
            }
            (_, Message::Disconnect(Some(duration))) => {
                self.sleep = Duration::from_secs(u64::from(*duration));
                self.state = State::Asleep;
                out.send(&Message::Disconnect(None));
            }
            (_, Message::WillTopicUpd(topic)) => {
                let code = match topic {
                    None => {
                        self.will = Will::default();
                        ReturnCode::Accepted
                    }
                    Some((flags, name)) => match std::str::from_utf8(name) {
                        Ok(name) if crate::mqtt::topic::validate_name(name).is_ok() => {
                            self.will.topic = Some((*flags, name.to_string()));
                            ReturnCode::Accepted
                        }
                        _ => ReturnCode::NotSupported,
                    },
                };
                if code == ReturnCode::Accepted {
                    out.broker.push(ToBroker::SetWill(self.last_will()));
                }
                out.send(&Message::WillTopicResp(code));
            }
            (_, Message::WillMsgUpd(data)) => {
                self.will.message = Bytes::copy_from_slice(data);
                out.broker.push(ToBroker::SetWill(self.last_will()));
                out.send(&Message::WillMsgResp(ReturnCode::Accepted));
            }
            // What only a gateway sends, or out of place: ignored, as the
            // client's retries will tell it.
            _ => {}
        }
    }

    fn resolve(&self, shared: &Shared, kind: TopicIdType, id: u16) -> Option<TopicName> {
        match kind {
            TopicIdType::Normal => self.topics.topic(id).cloned(),
            TopicIdType::Predefined => shared.predefined.topic(id).cloned(),
            TopicIdType::Short => {
                short_name(id.to_be_bytes()).and_then(|n| TopicName::from_string(n).ok())
            }
        }
    }

    fn publish(
        &mut self,
        shared: &Shared,
        flags: Flags,
        topic_id: u16,
        msg_id: u16,
        data: &[u8],
        out: &mut ClientOut,
    ) {
        let qos = mqtt_qos(flags.qos);
        let puback = |code| Message::PubAck {
            topic_id,
            msg_id,
            code,
        };
        let Some(topic) = self.resolve(shared, flags.topic_id_type, topic_id) else {
            out.send(&puback(ReturnCode::InvalidTopicId));
            return;
        };
        if qos != QoS::AtMostOnce {
            if msg_id == 0 {
                out.send(&puback(ReturnCode::NotSupported));
                return;
            }
            if self.held.iter().any(|p| p.pkid == msg_id) {
                // A retry of what waits here already.
                return;
            }
            if !self.uplink.iter().any(|u| u.0 == msg_id) {
                if self.uplink.len() >= MAX_UPLINK {
                    out.send(&puback(ReturnCode::Congestion));
                    return;
                }
                self.uplink.push((msg_id, topic_id, flags.topic_id_type));
            }
        }
        out.broker.push(ToBroker::Packet(Packet::Publish(Publish {
            dup: flags.dup,
            qos,
            retain: flags.retain,
            topic,
            pkid: if qos == QoS::AtMostOnce { 0 } else { msg_id },
            payload: Bytes::copy_from_slice(data),
        })));
    }

    /// The broker throttles publishers (a subscriber is behind): the
    /// client's QoS 1/2 PUBLISH waits here, unacknowledged, as a TCP
    /// publisher's bytes wait in its socket. Bounded by `MAX_UPLINK`.
    pub fn hold(&mut self, publish: Publish) {
        self.held.push_back(publish);
    }

    /// The next held PUBLISH, once the broker takes them again.
    pub fn take_held(&mut self) -> Option<Publish> {
        self.held.pop_front()
    }

    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    fn topic_filter(
        &mut self,
        shared: &Shared,
        topic: &TopicRef<'_>,
    ) -> Result<(String, TopicIdType, u16), ReturnCode> {
        match topic {
            TopicRef::Name(name) => {
                let name = std::str::from_utf8(name).map_err(|_| ReturnCode::NotSupported)?;
                validate_subscription(name).map_err(|_| ReturnCode::NotSupported)?;
                let wildcard = name.contains(['+', '#']) || name.starts_with("$share/");
                let id = match wildcard {
                    true => 0,
                    false => self
                        .topics
                        .register(name, shared.max_topics)
                        .map_err(|_| ReturnCode::Congestion)?,
                };
                Ok((name.to_string(), TopicIdType::Normal, id))
            }
            TopicRef::Predefined(id) => shared
                .predefined
                .name(*id)
                .map(|n| (n.to_string(), TopicIdType::Predefined, *id))
                .ok_or(ReturnCode::InvalidTopicId),
            TopicRef::Short(octets) => match std::str::from_utf8(octets) {
                Ok(name) if validate_subscription(name).is_ok() => Ok((
                    name.to_string(),
                    TopicIdType::Short,
                    u16::from_be_bytes(*octets),
                )),
                _ => Err(ReturnCode::InvalidTopicId),
            },
        }
    }

    fn subscribe(
        &mut self,
        shared: &Shared,
        flags: Flags,
        msg_id: u16,
        topic: &TopicRef<'_>,
        out: &mut ClientOut,
    ) {
        let refuse = |code| Message::SubAck {
            flags: Flags::new(SnQoS::AtMostOnce, TopicIdType::Normal),
            topic_id: 0,
            msg_id,
            code,
        };
        if msg_id == 0 || self.subscribing.len() >= MAX_UPLINK {
            out.send(&refuse(ReturnCode::Congestion));
            return;
        }
        match self.topic_filter(shared, topic) {
            Ok((filter, kind, id)) => {
                self.subscribing.retain(|s| s.0 != msg_id);
                self.subscribing.push((msg_id, id, kind));
                out.broker
                    .push(ToBroker::Packet(Packet::Subscribe(Subscribe {
                        pkid: msg_id,
                        filters: vec![(filter, mqtt_qos(flags.qos))],
                    })));
            }
            Err(code) => out.send(&refuse(code)),
        }
    }

    fn unsubscribe(
        &mut self,
        shared: &Shared,
        msg_id: u16,
        topic: &TopicRef<'_>,
        out: &mut ClientOut,
    ) {
        let filter = match topic {
            TopicRef::Name(name) => std::str::from_utf8(name).ok().map(str::to_string),
            TopicRef::Predefined(id) => shared.predefined.name(*id).map(|n| n.to_string()),
            TopicRef::Short(octets) => std::str::from_utf8(octets).ok().map(str::to_string),
        };
        match filter.filter(|f| validate_subscription(f).is_ok() && msg_id != 0) {
            Some(filter) => out
                .broker
                .push(ToBroker::Packet(Packet::Unsubscribe(Unsubscribe {
                    pkid: msg_id,
                    filters: vec![filter],
                }))),
            // Nothing to take away: said done, as MQTT does (§3.10.4).
            None => out.send(&Message::UnsubAck(msg_id)),
        }
    }

    fn ping(&mut self, now: Instant, shared: &Shared, with_id: bool, out: &mut ClientOut) {
        match self.state {
            State::Asleep | State::Awake if with_id => {
                if self.state == State::Asleep {
                    // What was unanswered when it fell asleep goes again
                    // now, not at the next retry: PINGRESP waits for it.
                    for sent in [
                        self.registering.as_mut().map(|r| &mut r.sent),
                        self.in_flight.as_mut().map(|f| &mut f.sent),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        *sent = now;
                    }
                    self.send_registering(out);
                    self.send_in_flight(shared, out);
                }
                self.state = State::Awake;
                self.pump(now, shared, out);
            }
            _ => out.send(&Message::PingResp),
        }
    }

    /// Whether the message in flight is `msg_id`, at its PUBLISH's ack
    /// (`released` false) or its PUBREL's (true).
    fn awaits(&self, msg_id: u16, released: bool) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.msg_id == msg_id && f.publish.is_none() == released)
    }

    /// Timers: keepalive and sleep expiry, retries. `false` when the
    /// client is gone (the will, if any, is in `out`).
    pub fn tick(&mut self, now: Instant, shared: &Shared, out: &mut ClientOut) -> bool {
        let silent = now.saturating_duration_since(self.last_heard);
        let limit = match self.state {
            State::Closed => return false,
            State::Asleep | State::Awake => self.sleep,
            State::WillTopic | State::WillMsg | State::Opening => {
                shared.retry * (shared.max_retries + 1)
            }
            State::Active => self.keepalive,
        };
        if !limit.is_zero() && silent > limit + limit / 2 {
            if !matches!(self.state, State::WillTopic | State::WillMsg) {
                out.broker.push(ToBroker::Lost);
            }
            self.state = State::Closed;
            return false;
        }
        if matches!(self.state, State::Active | State::Awake) {
            self.retry(now, shared, out);
        }
        self.state != State::Closed
    }
}

#[path = "client_downlink.rs"]
mod downlink;

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
