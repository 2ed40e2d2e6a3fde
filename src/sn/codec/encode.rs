//! [`Message`] to bytes: the shortest length form that fits (§5.2.1), and
//! a forwarder's wrapping on the way back (§5.5).

use super::msg_type as t;
use super::{Flags, Message, TopicIdType, TopicRef, MAX_MESSAGE};

impl Message<'_> {
    /// The message type octet.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Advertise { .. } => t::ADVERTISE,
            Message::SearchGw { .. } => t::SEARCHGW,
            Message::GwInfo { .. } => t::GWINFO,
            Message::Connect { .. } => t::CONNECT,
            Message::ConnAck(_) => t::CONNACK,
            Message::WillTopicReq => t::WILLTOPICREQ,
            Message::WillTopic(_) => t::WILLTOPIC,
            Message::WillMsgReq => t::WILLMSGREQ,
            Message::WillMsg(_) => t::WILLMSG,
            Message::Register { .. } => t::REGISTER,
            Message::RegAck { .. } => t::REGACK,
            Message::Publish { .. } => t::PUBLISH,
            Message::PubAck { .. } => t::PUBACK,
            Message::PubRec(_) => t::PUBREC,
            Message::PubRel(_) => t::PUBREL,
            Message::PubComp(_) => t::PUBCOMP,
            Message::Subscribe { .. } => t::SUBSCRIBE,
            Message::SubAck { .. } => t::SUBACK,
            Message::Unsubscribe { .. } => t::UNSUBSCRIBE,
            Message::UnsubAck(_) => t::UNSUBACK,
            Message::PingReq(_) => t::PINGREQ,
            Message::PingResp => t::PINGRESP,
            Message::Disconnect(_) => t::DISCONNECT,
            Message::WillTopicUpd(_) => t::WILLTOPICUPD,
            Message::WillTopicResp(_) => t::WILLTOPICRESP,
            Message::WillMsgUpd(_) => t::WILLMSGUPD,
            Message::WillMsgResp(_) => t::WILLMSGRESP,
        }
    }

    /// Appends the message to `out`. `false` (and nothing appended) when it
    /// is longer than the length field can say.
    pub fn encode(&self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        // Room for the three-octet length form; moved down if one is enough.
        out.extend_from_slice(&[0, 0, 0]);
        out.push(self.kind());
        self.encode_body(out);
        // The type and the fields.
        let rest = out.len() - start - 3;
        if let Ok(len) = u8::try_from(rest + 1) {
            // Never 0x01 (the three-octet form's mark): `rest` is at least 1.
            out.drain(start..start + 2);
            out[start] = len;
            true
        } else if rest + 3 <= MAX_MESSAGE {
            let len = (rest + 3) as u16;
            out[start] = 0x01;
            out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
            true
        } else {
            out.truncate(start);
            false
        }
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        let u16 = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_be_bytes());
        match self {
            Message::Advertise { gw_id, duration_s } => {
                out.push(*gw_id);
                u16(out, *duration_s);
            }
            Message::SearchGw { radius } => out.push(*radius),
            Message::GwInfo { gw_id, gw_add } => {
                out.push(*gw_id);
                out.extend_from_slice(gw_add);
            }
            Message::Connect {
                flags,
                protocol_id,
                duration_s,
                client_id,
            } => {
                out.push(flags.to_byte());
                out.push(*protocol_id);
                u16(out, *duration_s);
                out.extend_from_slice(client_id);
            }
            Message::ConnAck(code) | Message::WillTopicResp(code) | Message::WillMsgResp(code) => {
                out.push(code.to_byte())
            }
            Message::WillTopicReq | Message::WillMsgReq | Message::PingResp => {}
            Message::WillTopic(will) | Message::WillTopicUpd(will) => {
                if let Some((flags, topic)) = will {
                    out.push(flags.to_byte());
                    out.extend_from_slice(topic);
                }
            }
            Message::WillMsg(data) | Message::WillMsgUpd(data) => out.extend_from_slice(data),
            Message::Register {
                topic_id,
                msg_id,
                topic_name,
            } => {
                u16(out, *topic_id);
                u16(out, *msg_id);
                out.extend_from_slice(topic_name);
            }
            Message::RegAck {
                topic_id,
                msg_id,
                code,
            }
            | Message::PubAck {
                topic_id,
                msg_id,
                code,
            } => {
                u16(out, *topic_id);
                u16(out, *msg_id);
                out.push(code.to_byte());
            }
            Message::Publish {
                flags,
                topic_id,
                msg_id,
                data,
            } => {
                out.push(flags.to_byte());
                u16(out, *topic_id);
                u16(out, *msg_id);
                out.extend_from_slice(data);
            }
            Message::PubRec(id)
            | Message::PubRel(id)
            | Message::PubComp(id)
            | Message::UnsubAck(id) => u16(out, *id),
            Message::Subscribe {
                flags,
                msg_id,
                topic,
            }
            | Message::Unsubscribe {
                flags,
                msg_id,
                topic,
            } => {
                // The topic decides what the TopicIdType says follows.
                let topic_id_type = match topic {
                    TopicRef::Name(_) => TopicIdType::Normal,
                    TopicRef::Predefined(_) => TopicIdType::Predefined,
                    TopicRef::Short(_) => TopicIdType::Short,
                };
                let flags = Flags {
                    topic_id_type,
                    ..*flags
                };
                out.push(flags.to_byte());
                u16(out, *msg_id);
                match topic {
                    TopicRef::Name(name) => out.extend_from_slice(name),
                    TopicRef::Predefined(id) => u16(out, *id),
                    TopicRef::Short(name) => out.extend_from_slice(name),
                }
            }
            Message::SubAck {
                flags,
                topic_id,
                msg_id,
                code,
            } => {
                out.push(flags.to_byte());
                u16(out, *topic_id);
                u16(out, *msg_id);
                out.push(code.to_byte());
            }
            Message::PingReq(client_id) => out.extend_from_slice(client_id.unwrap_or_default()),
            Message::Disconnect(duration) => {
                if let Some(d) = duration {
                    u16(out, *d);
                }
            }
        }
    }
}

/// Appends `message`, wrapped for the forwarder that sent the client's
/// datagram (Ctrl octet and wireless node id) when there is one. `false`
/// (and nothing appended) when it cannot be encoded.
pub fn encode_frame(
    forwarder: Option<(u8, &[u8])>,
    message: &Message<'_>,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    if let Some((ctrl, node)) = forwarder {
        let Ok(len) = u8::try_from(3 + node.len()) else {
            return false;
        };
        out.extend_from_slice(&[len, t::ENCAPSULATED, ctrl]);
        out.extend_from_slice(node);
    }
    if !message.encode(out) {
        out.truncate(start);
        return false;
    }
    true
}
