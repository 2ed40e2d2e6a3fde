//! The client machine on a virtual clock: MQTT-SN messages and the broker
//! connection's packets in, datagrams and broker steps out. Section
//! numbers are those of MQTT-SN 1.2 (e.g. "MQTT-SN 1.2 §6.14" for a test
//! named `..._6_14`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Client, ClientOut, Shared, State, ToBroker};
use crate::mqtt::codec::{Connect, ConnectReturnCode, LastWill, Packet, Publish};
use crate::mqtt::topic::TopicName;
use crate::mqtt::QoS;
use crate::sn::codec::{decode, Flags, Message, ReturnCode, SnQoS, TopicIdType};
use crate::sn::config::Predefined as PredefinedEntry;
use crate::sn::topics::Predefined;

const RETRY: Duration = Duration::from_secs(10);
const PREDEFINED_ID: u16 = 2;
const PREDEFINED: &str = "pre/seven";

fn shared() -> Shared {
    Shared {
        retry: RETRY,
        max_retries: 3,
        max_topics: 4,
        sleep_buffer: 3,
        predefined: Predefined::new(&[PredefinedEntry {
            id: PREDEFINED_ID,
            topic: PREDEFINED.into(),
        }]),
        username: Some("sn-gw".into()),
        password: Some(Bytes::from_static(b"secret")),
    }
}

fn flags(qos: SnQoS, kind: TopicIdType) -> Flags {
    Flags::new(qos, kind)
}

fn connect_flags(will: bool, clean: bool) -> Flags {
    let mut f = flags(SnQoS::AtMostOnce, TopicIdType::Normal);
    f.will = will;
    f.clean_session = clean;
    f
}

fn connect_msg(will: bool, clean: bool, duration_s: u16) -> Message<'static> {
    Message::Connect {
        flags: connect_flags(will, clean),
        protocol_id: 0x01,
        duration_s,
        client_id: b"sensor-1",
    }
}

fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::from_string(topic.into()).unwrap(),
        pkid,
        payload: Bytes::from_static(payload),
    })
}

fn sn_publish(
    qos: SnQoS,
    kind: TopicIdType,
    topic_id: u16,
    msg_id: u16,
    dup: bool,
) -> Message<'static> {
    let mut f = flags(qos, kind);
    f.dup = dup;
    Message::Publish {
        flags: f,
        topic_id,
        msg_id,
        data: b"m",
    }
}

/// One client and its clock.
struct Rig {
    now: Instant,
    shared: Shared,
    out: ClientOut,
    client: Client,
}

impl Rig {
    /// A client past CONNECT (without will) and the broker's CONNACK.
    fn active(duration_s: u16) -> Rig {
        let mut rig = Rig::connecting(connect_msg(false, true, duration_s));
        rig.broker(Packet::ConnAck {
            session_present: false,
            code: ConnectReturnCode::Accepted,
        });
        assert_eq!(rig.sent(), [Message::ConnAck(ReturnCode::Accepted)]);
        assert_eq!(rig.client.state(), State::Active);
        rig
    }

    fn connecting(connect: Message<'_>) -> Rig {
        let now = Instant::now();
        let shared = shared();
        let mut out = ClientOut::default();
        let client =
            Client::connect(now, &shared, &connect, None, &mut out).expect("a valid CONNECT");
        Rig {
            now,
            shared,
            out,
            client,
        }
    }

    fn msg(&mut self, message: Message<'_>) {
        self.out.clear();
        self.client
            .on_message(self.now, &self.shared, &message, &mut self.out);
    }

    fn broker(&mut self, packet: Packet) {
        self.out.clear();
        self.client
            .on_broker(self.now, &self.shared, packet, &mut self.out);
    }

    /// Moves the clock and runs the timers; whether the client lives.
    fn advance(&mut self, by: Duration) -> bool {
        self.now += by;
        self.out.clear();
        self.client.tick(self.now, &self.shared, &mut self.out)
    }

    /// The datagrams of the last call.
    fn sent(&self) -> Vec<Message<'_>> {
        self.out
            .datagrams()
            .map(|d| decode(d).expect("the machine encodes valid messages"))
            .collect()
    }

    fn steps(&self) -> &[ToBroker] {
        &self.out.broker
    }

    /// REGISTERs `name` from the client's side; its id.
    fn register(&mut self, name: &str, msg_id: u16) -> u16 {
        self.msg(Message::Register {
            topic_id: 0,
            msg_id,
            topic_name: name.as_bytes(),
        });
        match self.sent().as_slice() {
            [Message::RegAck {
                topic_id,
                msg_id: m,
                code: ReturnCode::Accepted,
            }] if *m == msg_id => *topic_id,
            other => panic!("expected REGACK, got {other:?}"),
        }
    }
}

fn the_open(steps: &[ToBroker]) -> &Connect {
    match steps {
        [ToBroker::Open(c)] => c,
        other => panic!("expected one Open, got {other:?}"),
    }
}

#[test]
fn connect_without_will_opens_the_broker_connection_then_connack_6_2() {
    let mut rig = Rig::connecting(connect_msg(false, true, 30));
    assert!(rig.sent().is_empty(), "no CONNACK before the broker's");
    let open = the_open(rig.steps());
    assert_eq!(open.client_id, "sensor-1");
    assert!(open.clean_session);
    // The machine keeps the keepalive itself (sleep suspends it).
    assert_eq!(open.keep_alive_s, 0);
    assert_eq!(open.username.as_deref(), Some("sn-gw"));
    assert_eq!(open.password.as_deref(), Some(&b"secret"[..]));
    assert_eq!(open.will, None);
    assert_eq!(rig.client.state(), State::Opening);
    rig.broker(Packet::ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    });
    assert_eq!(rig.sent(), [Message::ConnAck(ReturnCode::Accepted)]);
    assert_eq!(rig.client.state(), State::Active);

    let persistent = Rig::connecting(connect_msg(false, false, 30));
    assert!(!the_open(persistent.steps()).clean_session);
}

#[test]
fn a_broker_refusal_is_connack_not_supported_5_3_10() {
    let mut rig = Rig::connecting(connect_msg(false, true, 30));
    rig.broker(Packet::ConnAck {
        session_present: false,
        code: ConnectReturnCode::NotAuthorized,
    });
    assert_eq!(rig.sent(), [Message::ConnAck(ReturnCode::NotSupported)]);
    assert_eq!(rig.client.state(), State::Closed);
    assert!(!rig.advance(Duration::from_secs(1)));
}

#[test]
fn a_connect_with_a_bad_protocol_id_or_empty_id_is_refused_5_4_4() {
    let shared = shared();
    for (protocol_id, client_id) in [(0x02, &b"ok"[..]), (0x01, &b""[..]), (0x01, &b"\xff"[..])] {
        let mut out = ClientOut::default();
        let connect = Message::Connect {
            flags: connect_flags(false, true),
            protocol_id,
            duration_s: 10,
            client_id,
        };
        assert!(Client::connect(Instant::now(), &shared, &connect, None, &mut out).is_none());
        let sent: Vec<_> = out.datagrams().map(|d| decode(d).unwrap()).collect();
        assert_eq!(sent, [Message::ConnAck(ReturnCode::NotSupported)]);
        assert!(out.broker.is_empty());
    }
}

#[test]
fn the_will_dialogue_comes_before_the_broker_connection_6_2() {
    let mut rig = Rig::connecting(connect_msg(true, true, 30));
    assert_eq!(rig.sent(), [Message::WillTopicReq]);
    assert!(rig.steps().is_empty());
    let mut will_flags = flags(SnQoS::AtLeastOnce, TopicIdType::Normal);
    will_flags.retain = true;
    rig.msg(Message::WillTopic(Some((will_flags, b"will/sensor-1"))));
    assert_eq!(rig.sent(), [Message::WillMsgReq]);
    assert!(rig.steps().is_empty());
    rig.msg(Message::WillMsg(b"gone"));
    assert!(rig.sent().is_empty());
    let open = the_open(rig.steps());
    assert_eq!(
        open.will,
        Some(LastWill {
            topic: TopicName::from_string("will/sensor-1".into()).unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
        })
    );
}

#[test]
fn an_empty_willtopic_is_no_will_5_4_7() {
    let mut rig = Rig::connecting(connect_msg(true, true, 30));
    rig.msg(Message::WillTopic(None));
    assert_eq!(the_open(rig.steps()).will, None);
    assert!(
        rig.sent().is_empty(),
        "no WILLMSGREQ after an empty WILLTOPIC"
    );
}

#[test]
fn will_updates_replace_the_brokers_will_and_are_answered_6_4() {
    let mut rig = Rig::active(30);
    rig.msg(Message::WillTopicUpd(Some((
        flags(SnQoS::AtMostOnce, TopicIdType::Normal),
        b"will/a",
    ))));
    assert_eq!(rig.sent(), [Message::WillTopicResp(ReturnCode::Accepted)]);
    let will = |payload: &'static [u8]| LastWill {
        topic: TopicName::from_string("will/a".into()).unwrap(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    assert_eq!(rig.steps(), [ToBroker::SetWill(Some(will(b"")))]);
    rig.msg(Message::WillMsgUpd(b"bye"));
    assert_eq!(rig.sent(), [Message::WillMsgResp(ReturnCode::Accepted)]);
    assert_eq!(rig.steps(), [ToBroker::SetWill(Some(will(b"bye")))]);
    // An empty WILLTOPICUPD deletes the will (§5.4.22).
    rig.msg(Message::WillTopicUpd(None));
    assert_eq!(rig.sent(), [Message::WillTopicResp(ReturnCode::Accepted)]);
    assert_eq!(rig.steps(), [ToBroker::SetWill(None)]);
}

#[test]
fn register_gives_ids_from_one_and_the_same_id_again_6_5() {
    let mut rig = Rig::active(30);
    assert_eq!(rig.register("a/b", 1), 1);
    assert_eq!(rig.register("a/c", 2), 2);
    assert_eq!(rig.register("a/b", 3), 1);
    assert!(rig.steps().is_empty());
    // A wildcard is no topic name.
    rig.msg(Message::Register {
        topic_id: 0,
        msg_id: 4,
        topic_name: b"a/+",
    });
    assert_eq!(
        rig.sent(),
        [Message::RegAck {
            topic_id: 0,
            msg_id: 4,
            code: ReturnCode::NotSupported
        }]
    );
    // Past max_topics (4): congestion.
    rig.register("a/d", 5);
    rig.register("a/e", 6);
    rig.msg(Message::Register {
        topic_id: 0,
        msg_id: 7,
        topic_name: b"a/f",
    });
    assert_eq!(
        rig.sent(),
        [Message::RegAck {
            topic_id: 0,
            msg_id: 7,
            code: ReturnCode::Congestion
        }]
    );
}

#[test]
fn a_publish_to_an_unknown_topic_id_is_puback_invalid_topic_id_6_6() {
    let mut rig = Rig::active(30);
    for qos in [SnQoS::AtMostOnce, SnQoS::AtLeastOnce] {
        rig.msg(sn_publish(qos, TopicIdType::Normal, 9, 3, false));
        assert_eq!(
            rig.sent(),
            [Message::PubAck {
                topic_id: 9,
                msg_id: 3,
                code: ReturnCode::InvalidTopicId
            }]
        );
        assert!(rig.steps().is_empty());
    }
    rig.msg(sn_publish(
        SnQoS::AtMostOnce,
        TopicIdType::Predefined,
        99,
        0,
        false,
    ));
    assert!(matches!(
        rig.sent().as_slice(),
        [Message::PubAck {
            code: ReturnCode::InvalidTopicId,
            ..
        }]
    ));
}

#[test]
fn a_qos1_publish_is_acknowledged_with_its_topic_id_when_the_broker_acks_6_6() {
    let mut rig = Rig::active(30);
    let id = rig.register("up/one", 1);
    rig.msg(sn_publish(
        SnQoS::AtLeastOnce,
        TopicIdType::Normal,
        id,
        42,
        false,
    ));
    assert!(rig.sent().is_empty(), "PUBACK waits for the broker's");
    assert_eq!(
        rig.steps(),
        [ToBroker::Packet(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicName::from_string("up/one".into()).unwrap(),
            pkid: 42,
            payload: Bytes::from_static(b"m"),
        }))]
    );
    rig.broker(Packet::PubAck(42));
    assert_eq!(
        rig.sent(),
        [Message::PubAck {
            topic_id: id,
            msg_id: 42,
            code: ReturnCode::Accepted
        }]
    );
    // Predefined ids and short names publish without REGISTER.
    rig.msg(sn_publish(
        SnQoS::AtMostOnce,
        TopicIdType::Predefined,
        PREDEFINED_ID,
        0,
        false,
    ));
    rig.msg(sn_publish(
        SnQoS::AtMostOnce,
        TopicIdType::Short,
        u16::from_be_bytes(*b"ab"),
        0,
        false,
    ));
    match rig.steps() {
        [ToBroker::Packet(Packet::Publish(p))] => assert_eq!(p.topic.as_str(), "ab"),
        other => panic!("expected a publish on ab, got {other:?}"),
    }
}

#[test]
fn a_qos2_publish_runs_pubrec_pubrel_pubcomp_through_the_broker_6_6() {
    let mut rig = Rig::active(30);
    let id = rig.register("up/two", 1);
    rig.msg(sn_publish(
        SnQoS::ExactlyOnce,
        TopicIdType::Normal,
        id,
        8,
        false,
    ));
    assert!(matches!(
        rig.steps(),
        [ToBroker::Packet(Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            pkid: 8,
            ..
        }))]
    ));
    rig.broker(Packet::PubRec(8));
    assert_eq!(rig.sent(), [Message::PubRec(8)]);
    rig.msg(Message::PubRel(8));
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubRel(8))]);
    rig.broker(Packet::PubComp(8));
    assert_eq!(rig.sent(), [Message::PubComp(8)]);
}

#[test]
fn a_downlink_message_on_a_new_name_is_registered_first_6_10() {
    let mut rig = Rig::active(30);
    rig.broker(publish("down/x", QoS::AtMostOnce, 0, b"m"));
    let (topic_id, reg_id) = match rig.sent().as_slice() {
        [Message::Register {
            topic_id,
            msg_id,
            topic_name,
        }] => {
            assert_eq!(*topic_name, b"down/x");
            (*topic_id, *msg_id)
        }
        other => panic!("expected REGISTER, got {other:?}"),
    };
    assert_ne!(topic_id, 0);
    assert_ne!(reg_id, 0);
    rig.msg(Message::RegAck {
        topic_id,
        msg_id: reg_id,
        code: ReturnCode::Accepted,
    });
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtMostOnce,
            TopicIdType::Normal,
            topic_id,
            0,
            false
        )]
    );
    // The next message on the name goes at once.
    rig.broker(publish("down/x", QoS::AtMostOnce, 0, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtMostOnce,
            TopicIdType::Normal,
            topic_id,
            0,
            false
        )]
    );
}

#[test]
fn a_refused_register_drops_its_message_and_the_id_6_10() {
    let mut rig = Rig::active(30);
    rig.broker(publish("down/x", QoS::AtMostOnce, 0, b"m"));
    let Message::Register {
        topic_id, msg_id, ..
    } = rig.sent()[0]
    else {
        panic!("expected REGISTER");
    };
    rig.msg(Message::RegAck {
        topic_id,
        msg_id,
        code: ReturnCode::NotSupported,
    });
    assert!(rig.sent().is_empty());
    assert_eq!(rig.client.topics(), 0);
    assert_eq!(rig.client.buffered(), 0);
}

#[test]
fn predefined_ids_and_short_names_go_down_without_register_6_7() {
    let mut rig = Rig::active(30);
    rig.broker(publish(PREDEFINED, QoS::AtMostOnce, 0, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtMostOnce,
            TopicIdType::Predefined,
            PREDEFINED_ID,
            0,
            false
        )]
    );
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtMostOnce,
            TopicIdType::Short,
            0x6162,
            0,
            false
        )]
    );
}

#[test]
fn one_qos1_message_is_in_flight_to_the_client_at_a_time_6_13() {
    let mut rig = Rig::active(30);
    rig.broker(publish("ab", QoS::AtLeastOnce, 1, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtLeastOnce,
            TopicIdType::Short,
            0x6162,
            1,
            false
        )]
    );
    rig.broker(publish("ab", QoS::AtLeastOnce, 2, b"m"));
    assert!(
        rig.sent().is_empty(),
        "the second waits for the first's PUBACK"
    );
    assert_eq!(rig.client.buffered(), 1);
    rig.msg(Message::PubAck {
        topic_id: 0x6162,
        msg_id: 1,
        code: ReturnCode::Accepted,
    });
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubAck(1))]);
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtLeastOnce,
            TopicIdType::Short,
            0x6162,
            2,
            false
        )]
    );
    // A stale PUBACK changes nothing.
    rig.msg(Message::PubAck {
        topic_id: 0x6162,
        msg_id: 1,
        code: ReturnCode::Accepted,
    });
    assert!(rig.sent().is_empty() && rig.steps().is_empty());
}

#[test]
fn an_unacknowledged_publish_is_sent_again_with_dup_then_the_client_is_lost_6_13() {
    let mut rig = Rig::active(0);
    rig.broker(publish("ab", QoS::AtLeastOnce, 5, b"m"));
    assert_eq!(rig.sent().len(), 1);
    assert!(rig.advance(RETRY - Duration::from_millis(1)));
    assert!(rig.sent().is_empty(), "not before Tretry");
    for _ in 0..rig.shared.max_retries {
        assert!(rig.advance(RETRY));
        assert_eq!(
            rig.sent(),
            [sn_publish(
                SnQoS::AtLeastOnce,
                TopicIdType::Short,
                0x6162,
                5,
                true
            )]
        );
        assert!(rig.steps().is_empty());
    }
    // Nretry sends again are all: the next timeout loses the client,
    // without another copy to a client taken as gone.
    assert!(!rig.advance(RETRY));
    assert!(rig.sent().is_empty(), "no send after Nretry");
    assert_eq!(rig.steps(), [ToBroker::Lost]);
    assert_eq!(rig.client.state(), State::Closed);
}

#[test]
fn an_unanswered_register_is_sent_again_then_the_client_is_lost_6_13() {
    let mut rig = Rig::active(0);
    rig.broker(publish("down/x", QoS::AtMostOnce, 0, b"m"));
    let first = format!("{:?}", rig.sent());
    for _ in 0..rig.shared.max_retries {
        assert!(rig.advance(RETRY));
        assert_eq!(format!("{:?}", rig.sent()), first);
    }
    assert!(!rig.advance(RETRY));
    assert!(rig.sent().is_empty());
    assert_eq!(rig.steps(), [ToBroker::Lost]);
}

#[test]
fn a_qos2_downlink_runs_pubrec_pubrel_pubcomp_through_the_broker_6_10() {
    let mut rig = Rig::active(0);
    rig.broker(publish("ab", QoS::ExactlyOnce, 9, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::ExactlyOnce,
            TopicIdType::Short,
            0x6162,
            9,
            false
        )]
    );
    rig.msg(Message::PubRec(9));
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubRec(9))]);
    rig.broker(Packet::PubRel(9));
    assert_eq!(rig.sent(), [Message::PubRel(9)]);
    // PUBREL is retried as the PUBLISH was.
    assert!(rig.advance(RETRY));
    assert_eq!(rig.sent(), [Message::PubRel(9)]);
    rig.msg(Message::PubComp(9));
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubComp(9))]);
    // Nothing in flight any more: no retry.
    assert!(rig.advance(RETRY));
    assert!(rig.sent().is_empty());
}

#[test]
fn pingreq_without_client_id_while_active_is_pingresp_6_11() {
    let mut rig = Rig::active(30);
    rig.msg(Message::PingReq(None));
    assert_eq!(rig.sent(), [Message::PingResp]);
    assert_eq!(rig.client.state(), State::Active);
}

/// A client asleep for `sleep_s`, with the short name "ab".
fn asleep(sleep_s: u16) -> Rig {
    let mut rig = Rig::active(30);
    rig.msg(Message::Disconnect(Some(sleep_s)));
    assert_eq!(rig.sent(), [Message::Disconnect(None)]);
    assert!(rig.steps().is_empty(), "the broker connection stays open");
    assert_eq!(rig.client.state(), State::Asleep);
    rig
}

#[test]
fn a_sleeping_client_gets_its_buffer_then_pingresp_when_it_wakes_6_14() {
    let mut rig = asleep(60);
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    rig.broker(publish("ab", QoS::AtLeastOnce, 3, b"m"));
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    assert!(rig.sent().is_empty(), "nothing goes to a sleeping client");
    assert_eq!(rig.client.buffered(), 3);
    // Over sleep_buffer (3): QoS 0 is dropped and counted, QoS 1 kept.
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    assert_eq!(rig.out.buffer_dropped, 1);
    rig.broker(publish("ab", QoS::AtLeastOnce, 4, b"m"));
    assert_eq!(rig.out.buffer_dropped, 0);
    assert_eq!(rig.client.buffered(), 4);

    rig.now += Duration::from_secs(50);
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert_eq!(rig.client.state(), State::Awake);
    // QoS 0, the first QoS 1, and the QoS 0 behind it; the second QoS 1
    // waits for the first's PUBACK, and PINGRESP for both.
    assert_eq!(
        rig.sent(),
        [
            sn_publish(SnQoS::AtMostOnce, TopicIdType::Short, 0x6162, 0, false),
            sn_publish(SnQoS::AtLeastOnce, TopicIdType::Short, 0x6162, 3, false),
            sn_publish(SnQoS::AtMostOnce, TopicIdType::Short, 0x6162, 0, false),
        ]
    );
    rig.msg(Message::PubAck {
        topic_id: 0x6162,
        msg_id: 3,
        code: ReturnCode::Accepted,
    });
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtLeastOnce,
            TopicIdType::Short,
            0x6162,
            4,
            false
        )]
    );
    rig.msg(Message::PubAck {
        topic_id: 0x6162,
        msg_id: 4,
        code: ReturnCode::Accepted,
    });
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubAck(4))]);
    assert_eq!(rig.sent(), [Message::PingResp]);
    assert_eq!(rig.client.state(), State::Asleep);
    assert_eq!(rig.client.buffered(), 0);

    // Asleep again: a new message waits for the next wake.
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    assert!(rig.sent().is_empty());
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert_eq!(
        rig.sent(),
        [
            sn_publish(SnQoS::AtMostOnce, TopicIdType::Short, 0x6162, 0, false),
            Message::PingResp
        ]
    );
}

#[test]
fn an_empty_wake_is_pingresp_at_once_6_14() {
    let mut rig = asleep(60);
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert_eq!(rig.sent(), [Message::PingResp]);
    assert_eq!(rig.client.state(), State::Asleep);
}

#[test]
fn a_client_asleep_past_one_and_a_half_durations_is_lost_6_14() {
    let mut rig = asleep(60);
    // The keepalive (30 s) does not run while asleep.
    assert!(rig.advance(Duration::from_secs(90)));
    assert!(rig.steps().is_empty());
    assert!(!rig.advance(Duration::from_millis(1)));
    assert_eq!(rig.steps(), [ToBroker::Lost]);
    assert_eq!(rig.client.state(), State::Closed);
}

#[test]
fn a_wake_restarts_the_sleep_timer_6_14() {
    let mut rig = asleep(60);
    assert!(rig.advance(Duration::from_secs(80)));
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert!(rig.advance(Duration::from_secs(80)));
    assert!(rig.steps().is_empty());
}

#[test]
fn a_silent_client_is_lost_after_one_and_a_half_keepalives_6_11() {
    let mut rig = Rig::active(20);
    assert!(rig.advance(Duration::from_secs(20)));
    // Any message counts as heard.
    rig.msg(Message::PingReq(None));
    assert!(rig.advance(Duration::from_secs(30)));
    assert!(rig.steps().is_empty());
    assert!(!rig.advance(Duration::from_millis(1)));
    assert_eq!(rig.steps(), [ToBroker::Lost]);
}

#[test]
fn disconnect_without_duration_closes_without_will_6_12() {
    let mut rig = Rig::active(30);
    rig.msg(Message::Disconnect(None));
    assert_eq!(rig.sent(), [Message::Disconnect(None)]);
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::Disconnect)]);
    assert_eq!(rig.client.state(), State::Closed);
    assert!(!rig.advance(Duration::from_secs(1)));
    assert!(rig.steps().is_empty(), "no Lost after a DISCONNECT");
}

#[test]
fn a_connect_while_asleep_is_active_again_on_the_same_connection_6_14() {
    let mut rig = asleep(60);
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    rig.msg(connect_msg(false, false, 30));
    assert!(rig.steps().is_empty(), "no new broker connection");
    assert_eq!(
        rig.sent(),
        [
            Message::ConnAck(ReturnCode::Accepted),
            sn_publish(SnQoS::AtMostOnce, TopicIdType::Short, 0x6162, 0, false),
        ]
    );
    assert_eq!(rig.client.state(), State::Active);
    // Back under the keepalive.
    assert!(rig.advance(Duration::from_secs(45)));
    assert!(!rig.advance(Duration::from_millis(1)));
}

#[test]
fn a_connect_with_will_while_asleep_sets_the_will_and_delivers_the_buffer_6_14() {
    let mut rig = asleep(60);
    rig.broker(publish("ab", QoS::AtMostOnce, 0, b"m"));
    rig.msg(connect_msg(true, false, 30));
    assert_eq!(rig.sent(), [Message::WillTopicReq]);
    rig.msg(Message::WillTopic(Some((
        flags(SnQoS::AtMostOnce, TopicIdType::Normal),
        b"will/s",
    ))));
    assert_eq!(rig.sent(), [Message::WillMsgReq]);
    rig.msg(Message::WillMsg(b"bye"));
    assert!(
        matches!(rig.steps(), [ToBroker::SetWill(Some(_))]),
        "the will changes on the same connection: {:?}",
        rig.steps()
    );
    assert_eq!(
        rig.sent(),
        [
            Message::ConnAck(ReturnCode::Accepted),
            sn_publish(SnQoS::AtMostOnce, TopicIdType::Short, 0x6162, 0, false),
        ]
    );
    assert_eq!(rig.client.state(), State::Active);
}

#[test]
fn the_broker_closing_the_connection_is_disconnect_to_the_client() {
    let mut rig = Rig::active(30);
    rig.out.clear();
    rig.client.broker_closed(&mut rig.out);
    assert_eq!(rig.sent(), [Message::Disconnect(None)]);
    assert_eq!(rig.client.state(), State::Closed);
}

#[test]
fn an_awake_client_that_misses_a_register_sleeps_again_and_is_asked_again_6_14() {
    let mut rig = asleep(600);
    rig.broker(publish("down/x", QoS::AtMostOnce, 0, b"m"));
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert!(matches!(rig.sent().as_slice(), [Message::Register { .. }]));
    for _ in 0..rig.shared.max_retries {
        assert!(rig.advance(RETRY));
        assert!(matches!(rig.sent().as_slice(), [Message::Register { .. }]));
    }
    // Out of retries while awake: asleep again, not lost.
    assert!(rig.advance(RETRY));
    assert!(rig.steps().is_empty());
    assert_eq!(rig.client.state(), State::Asleep);
    assert_eq!(rig.client.topics(), 0, "the unacknowledged id is not kept");
    assert_eq!(rig.client.buffered(), 1);
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    match rig.sent().as_slice() {
        [Message::Register { topic_name, .. }] => assert_eq!(*topic_name, b"down/x"),
        other => panic!("expected REGISTER again, got {other:?}"),
    }
}

#[test]
fn puback_invalid_topic_id_for_a_predefined_id_keeps_the_clients_own_id_6_10() {
    let mut rig = Rig::active(30);
    // The client's own id 2 is not the predefined id 2.
    assert_eq!(rig.register("own/1", 1), 1);
    assert_eq!(rig.register("own/2", 2), PREDEFINED_ID);
    rig.broker(publish(PREDEFINED, QoS::AtLeastOnce, 1, b"m"));
    rig.msg(Message::PubAck {
        topic_id: PREDEFINED_ID,
        msg_id: 1,
        code: ReturnCode::InvalidTopicId,
    });
    assert_eq!(rig.steps(), [ToBroker::Packet(Packet::PubAck(1))]);
    assert_eq!(rig.client.topics(), 2);
    // With a normal id, the refused id is forgotten (and registered again).
    rig.broker(publish("own/1", QoS::AtLeastOnce, 2, b"m"));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtLeastOnce,
            TopicIdType::Normal,
            1,
            2,
            false
        )]
    );
    rig.msg(Message::PubAck {
        topic_id: 1,
        msg_id: 2,
        code: ReturnCode::InvalidTopicId,
    });
    assert_eq!(rig.client.topics(), 1);
}

#[test]
fn what_was_in_flight_when_the_client_fell_asleep_goes_again_when_it_wakes_6_14() {
    let mut rig = Rig::active(30);
    rig.broker(publish("ab", QoS::AtLeastOnce, 6, b"m"));
    assert_eq!(rig.sent().len(), 1);
    rig.msg(Message::Disconnect(Some(60)));
    // No retries to a sleeping client.
    assert!(rig.advance(RETRY * 5));
    assert!(rig.sent().is_empty());
    rig.msg(Message::PingReq(Some(b"sensor-1")));
    assert_eq!(
        rig.sent(),
        [sn_publish(
            SnQoS::AtLeastOnce,
            TopicIdType::Short,
            0x6162,
            6,
            true
        )],
        "sent again at the wake, not at the next retry"
    );
    rig.msg(Message::PubAck {
        topic_id: 0x6162,
        msg_id: 6,
        code: ReturnCode::Accepted,
    });
    assert_eq!(rig.sent(), [Message::PingResp]);
    assert_eq!(rig.client.state(), State::Asleep);
}
