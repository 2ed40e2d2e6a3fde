//! Datagram to [`Message`]: the length header, the type, each message's
//! fields, and the forwarder's encapsulation around them.

use super::msg_type as t;
use super::{Flags, Frame, Message, ReturnCode, SnDecodeError, SnQoS, TopicIdType, TopicRef};

/// A datagram, possibly wrapped by a forwarder (§5.5).
pub fn decode_frame(datagram: &[u8]) -> Result<Frame<'_>, SnDecodeError> {
    if !wrapped(datagram) {
        return Ok(Frame {
            forwarder: None,
            message: decode(datagram)?,
        });
    }
    // Length (one octet, up to the end of the node id), 0xFE, Ctrl, node id.
    let [len, _, ctrl, ..] = *datagram else {
        return Err(SnDecodeError::TooShort);
    };
    let (header, inner) = datagram
        .split_at_checked(usize::from(len))
        .ok_or(SnDecodeError::LengthMismatch)?;
    let node = header.get(3..).ok_or(SnDecodeError::LengthMismatch)?;
    if wrapped(inner) {
        // One forwarder per hop: a wrapped wrapping is not a client's.
        return Err(SnDecodeError::Malformed);
    }
    Ok(Frame {
        forwarder: Some((ctrl, node)),
        message: decode(inner)?,
    })
}

/// Whether a datagram is a forwarder's encapsulation: type 0xFE after a
/// one-octet length (0x01 starts the three-octet form, whose next octet is
/// part of the length).
fn wrapped(datagram: &[u8]) -> bool {
    matches!(datagram, [len, t::ENCAPSULATED, ..] if *len != 0x01)
}

/// One unwrapped message; its length field must match `datagram` exactly.
pub fn decode(datagram: &[u8]) -> Result<Message<'_>, SnDecodeError> {
    let (len, header) = match datagram {
        [] => return Err(SnDecodeError::TooShort),
        [0x01, rest @ ..] => match rest {
            [hi, lo, _, ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), 3),
            _ => return Err(SnDecodeError::TooShort),
        },
        [len, _, ..] => (usize::from(*len), 1),
        [_] => return Err(SnDecodeError::TooShort),
    };
    if len != datagram.len() {
        return Err(SnDecodeError::LengthMismatch);
    }
    match datagram.get(header..) {
        Some([kind, body @ ..]) => decode_body(*kind, Fields(body)),
        // A length that does not reach past its own octets.
        _ => Err(SnDecodeError::LengthMismatch),
    }
}

/// The fields after the type, read front to back.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> Result<u8, SnDecodeError> {
        let (&b, rest) = self.0.split_first().ok_or(SnDecodeError::Malformed)?;
        self.0 = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, SnDecodeError> {
        match self.0 {
            [hi, lo, rest @ ..] => {
                self.0 = rest;
                Ok(u16::from_be_bytes([*hi, *lo]))
            }
            _ => Err(SnDecodeError::Malformed),
        }
    }

    fn flags(&mut self) -> Result<Flags, SnDecodeError> {
        Flags::from_byte(self.u8()?)
    }

    fn code(&mut self) -> Result<ReturnCode, SnDecodeError> {
        Ok(ReturnCode::from_byte(self.u8()?))
    }

    /// Whatever is left: a variable-length field.
    fn rest(self) -> &'a [u8] {
        self.0
    }

    /// Nothing may be left.
    fn end(self) -> Result<(), SnDecodeError> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(SnDecodeError::Malformed),
        }
    }
}

fn done<'a>(body: Fields<'a>, message: Message<'a>) -> Result<Message<'a>, SnDecodeError> {
    body.end()?;
    Ok(message)
}

fn decode_body(kind: u8, mut body: Fields<'_>) -> Result<Message<'_>, SnDecodeError> {
    match kind {
        t::ADVERTISE => {
            let gw_id = body.u8()?;
            let duration_s = body.u16()?;
            done(body, Message::Advertise { gw_id, duration_s })
        }
        t::SEARCHGW => {
            let radius = body.u8()?;
            done(body, Message::SearchGw { radius })
        }
        t::GWINFO => {
            let gw_id = body.u8()?;
            Ok(Message::GwInfo {
                gw_id,
                gw_add: body.rest(),
            })
        }
        t::CONNECT => {
            let flags = body.flags()?;
            let protocol_id = body.u8()?;
            let duration_s = body.u16()?;
            Ok(Message::Connect {
                flags,
                protocol_id,
                duration_s,
                client_id: body.rest(),
            })
        }
        t::CONNACK => {
            let code = body.code()?;
            done(body, Message::ConnAck(code))
        }
        t::WILLTOPICREQ => done(body, Message::WillTopicReq),
        t::WILLTOPIC => Ok(Message::WillTopic(will_topic(body)?)),
        t::WILLMSGREQ => done(body, Message::WillMsgReq),
        t::WILLMSG => Ok(Message::WillMsg(body.rest())),
        t::REGISTER => {
            let topic_id = body.u16()?;
            let msg_id = body.u16()?;
            Ok(Message::Register {
                topic_id,
                msg_id,
                topic_name: body.rest(),
            })
        }
        t::REGACK => {
            let topic_id = body.u16()?;
            let msg_id = body.u16()?;
            let code = body.code()?;
            done(
                body,
                Message::RegAck {
                    topic_id,
                    msg_id,
                    code,
                },
            )
        }
        t::PUBLISH => {
            let flags = body.flags()?;
            if flags.dup && flags.qos <= SnQoS::AtMostOnce {
                // DUP is meaningful only where there is a retry (§5.3.4).
                return Err(SnDecodeError::BadFlags);
            }
            let topic_id = body.u16()?;
            let msg_id = body.u16()?;
            Ok(Message::Publish {
                flags,
                topic_id,
                msg_id,
                data: body.rest(),
            })
        }
        t::PUBACK => {
            let topic_id = body.u16()?;
            let msg_id = body.u16()?;
            let code = body.code()?;
            done(
                body,
                Message::PubAck {
                    topic_id,
                    msg_id,
                    code,
                },
            )
        }
        t::PUBREC | t::PUBREL | t::PUBCOMP | t::UNSUBACK => {
            let msg_id = body.u16()?;
            body.end()?;
            Ok(match kind {
                t::PUBREC => Message::PubRec(msg_id),
                t::PUBREL => Message::PubRel(msg_id),
                t::PUBCOMP => Message::PubComp(msg_id),
                _ => Message::UnsubAck(msg_id),
            })
        }
        t::SUBSCRIBE | t::UNSUBSCRIBE => {
            let flags = body.flags()?;
            // A SUBSCRIBE's QoS is the one it asks for (§5.4.15), which
            // cannot be -1; an UNSUBSCRIBE's is "not used" (§5.4.17).
            if kind == t::SUBSCRIBE && flags.qos == SnQoS::MinusOne {
                return Err(SnDecodeError::BadFlags);
            }
            let msg_id = body.u16()?;
            let topic = match flags.topic_id_type {
                TopicIdType::Normal if body.0.is_empty() => return Err(SnDecodeError::Malformed),
                TopicIdType::Normal => TopicRef::Name(body.rest()),
                TopicIdType::Predefined => {
                    let id = body.u16()?;
                    body.end()?;
                    TopicRef::Predefined(id)
                }
                TopicIdType::Short => {
                    let id = body.u16()?;
                    body.end()?;
                    TopicRef::Short(id.to_be_bytes())
                }
            };
            Ok(match kind {
                t::SUBSCRIBE => Message::Subscribe {
                    flags,
                    msg_id,
                    topic,
                },
                _ => Message::Unsubscribe {
                    flags,
                    msg_id,
                    topic,
                },
            })
        }
        t::SUBACK => {
            let flags = body.flags()?;
            let topic_id = body.u16()?;
            let msg_id = body.u16()?;
            let code = body.code()?;
            done(
                body,
                Message::SubAck {
                    flags,
                    topic_id,
                    msg_id,
                    code,
                },
            )
        }
        t::PINGREQ => {
            let id = body.rest();
            Ok(Message::PingReq((!id.is_empty()).then_some(id)))
        }
        t::PINGRESP => done(body, Message::PingResp),
        t::DISCONNECT => match body.0.len() {
            0 => Ok(Message::Disconnect(None)),
            _ => {
                let duration = body.u16()?;
                done(body, Message::Disconnect(Some(duration)))
            }
        },
        t::WILLTOPICUPD => Ok(Message::WillTopicUpd(will_topic(body)?)),
        t::WILLTOPICRESP => {
            let code = body.code()?;
            done(body, Message::WillTopicResp(code))
        }
        t::WILLMSGUPD => Ok(Message::WillMsgUpd(body.rest())),
        t::WILLMSGRESP => {
            let code = body.code()?;
            done(body, Message::WillMsgResp(code))
        }
        other => Err(SnDecodeError::UnknownType(other)),
    }
}

/// WILLTOPIC and WILLTOPICUPD: empty (no will), or flags and a topic.
fn will_topic(mut body: Fields<'_>) -> Result<Option<(Flags, &[u8])>, SnDecodeError> {
    if body.0.is_empty() {
        return Ok(None);
    }
    let flags = body.flags()?;
    if flags.qos == SnQoS::MinusOne {
        return Err(SnDecodeError::BadFlags);
    }
    Ok(Some((flags, body.rest())))
}
