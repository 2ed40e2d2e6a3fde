//! Differential checking against `mqttbytes::v4`, the reference codec,
//! shared by the unit tests and the codec fuzz target (`tests/fuzz`), which
//! includes this file by path: it names the codec only through `super`, so
//! it compiles in either place.
//!
//! `mqttbytes` is a test and fuzz dependency only; nothing in the product
//! decodes with it.

use bytes::BytesMut;
use mqttbytes::v4 as reference;

use super::{decode, Connect, Packet, SUBACK_FAILURE};

/// Decodes the front of `data` with both codecs and panics on any
/// disagreement; returns the bytes our codec consumed, if it decoded a
/// packet. Checked:
///
/// 1. what we decode re-encodes to exactly the bytes consumed;
/// 2. `Ok(None)` leaves the buffer untouched, and mqttbytes also waits;
/// 3. what both accept, they agree on field by field and in length;
/// 4. what we accept, mqttbytes accepts too, except for the intentional
///    extensions in [`accepted_only_by_us`].
///
/// Where mqttbytes accepts and we refuse is not checked: that is our
/// stricter reading of the specification (flags, trailing bytes, zero
/// packet identifiers, U+0000, empty SUBSCRIBE/UNSUBSCRIBE, wildcard or
/// empty topic names, non-minimal lengths, protocol level 5, ...).
pub fn check(data: &[u8], max_packet_size: usize) -> Option<usize> {
    let mut ours_buf = BytesMut::from(data);
    let ours = decode(&mut ours_buf, max_packet_size);
    let consumed = data.len() - ours_buf.len();
    let mut theirs_buf = BytesMut::from(data);
    let theirs = reference::read(&mut theirs_buf, max_packet_size);
    match (&ours, &theirs) {
        (Ok(Some(packet)), _) => check_reencode(packet, &data[..consumed]),
        (Ok(None), _) => assert_eq!(&ours_buf[..], data, "Ok(None) consumed bytes"),
        (Err(_), _) => {}
    }
    match (&ours, &theirs) {
        (Ok(Some(packet)), Ok(reference)) => {
            assert_eq!(ours_buf.len(), theirs_buf.len(), "frame lengths differ");
            assert_agree(packet, reference);
        }
        (Ok(Some(packet)), Err(error)) => assert!(
            accepted_only_by_us(packet),
            "mqttbytes refused {packet:?}: {error:?}"
        ),
        (Ok(None), theirs) => assert!(
            matches!(theirs, Err(mqttbytes::Error::InsufficientBytes(_))),
            "we wait for more bytes, mqttbytes says {theirs:?}"
        ),
        (Err(_), _) => {}
    }
    match ours {
        Ok(Some(_)) => Some(consumed),
        _ => None,
    }
}

fn check_reencode(packet: &Packet, frame: &[u8]) {
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    assert_eq!(&out[..], frame, "re-encoding {packet:?} differs");
}

/// The intentional extensions: MQTT 3.1 ("MQIsdp", level 3), and a
/// password that is binary data rather than UTF-8 (§3.1.3.5).
pub fn accepted_only_by_us(packet: &Packet) -> bool {
    match packet {
        Packet::Connect(connect) => {
            connect.protocol_level == 3
                || connect
                    .password
                    .as_ref()
                    .is_some_and(|p| std::str::from_utf8(p).is_err())
        }
        _ => false,
    }
}

/// Panics unless both decodings say the same.
pub fn assert_agree(ours: &Packet, theirs: &reference::Packet) {
    use reference::Packet as R;
    match (ours, theirs) {
        (Packet::Connect(c), R::Connect(r)) => assert_connect_agree(c, r),
        (Packet::Publish(p), R::Publish(r)) => {
            assert_eq!(p.dup, r.dup);
            assert_eq!(p.qos as u8, r.qos as u8);
            assert_eq!(p.retain, r.retain);
            assert_eq!(p.topic.as_str(), r.topic);
            assert_eq!(p.pkid, r.pkid);
            assert_eq!(p.payload, r.payload);
        }
        (Packet::PubAck(pkid), R::PubAck(r)) => assert_eq!(*pkid, r.pkid),
        (Packet::PubRec(pkid), R::PubRec(r)) => assert_eq!(*pkid, r.pkid),
        (Packet::PubRel(pkid), R::PubRel(r)) => assert_eq!(*pkid, r.pkid),
        (Packet::PubComp(pkid), R::PubComp(r)) => assert_eq!(*pkid, r.pkid),
        (Packet::Subscribe(s), R::Subscribe(r)) => {
            assert_eq!(s.pkid, r.pkid);
            let theirs: Vec<_> = r.filters.iter().map(|f| (&*f.path, f.qos as u8)).collect();
            let ours: Vec<_> = s.filters.iter().map(|(f, q)| (&**f, *q as u8)).collect();
            assert_eq!(ours, theirs);
        }
        (Packet::Unsubscribe(u), R::Unsubscribe(r)) => {
            assert_eq!(u.pkid, r.pkid);
            assert_eq!(u.filters, r.topics);
        }
        (Packet::PingReq, R::PingReq)
        | (Packet::Disconnect, R::Disconnect)
        | (Packet::PingResp, R::PingResp) => {}
        (
            Packet::ConnAck {
                session_present,
                code,
            },
            R::ConnAck(r),
        ) => {
            assert_eq!(*session_present, r.session_present);
            assert_eq!(*code as u8, r.code as u8);
        }
        (Packet::SubAck { pkid, codes }, R::SubAck(r)) => {
            assert_eq!(*pkid, r.pkid);
            let theirs: Vec<u8> = r.return_codes.iter().map(|c| suback_code(*c)).collect();
            assert_eq!(*codes, theirs);
        }
        (Packet::UnsubAck(pkid), R::UnsubAck(r)) => assert_eq!(*pkid, r.pkid),
        _ => panic!("packet kinds differ: {ours:?} / {theirs:?}"),
    }
}

fn assert_connect_agree(ours: &Connect, theirs: &reference::Connect) {
    assert_eq!(ours.protocol_level, 4);
    assert_eq!(theirs.protocol, mqttbytes::Protocol::V4);
    assert_eq!(ours.keep_alive_s, theirs.keep_alive);
    assert_eq!(ours.client_id, theirs.client_id);
    assert_eq!(ours.clean_session, theirs.clean_session);
    match (&ours.will, &theirs.last_will) {
        (None, None) => {}
        (Some(w), Some(r)) => {
            assert_eq!(w.topic.as_str(), r.topic);
            assert_eq!(w.payload, r.message);
            assert_eq!(w.qos as u8, r.qos as u8);
            assert_eq!(w.retain, r.retain);
        }
        (ours, theirs) => panic!("wills differ: {ours:?} / {theirs:?}"),
    }
    // mqttbytes folds absent and empty credentials into one `Login`,
    // and `None` when both are empty.
    let username = ours.username.clone().unwrap_or_default();
    let password = ours.password.as_deref().unwrap_or_default();
    let password = String::from_utf8(password.to_vec()).expect("checked by the caller");
    let login = theirs.login.as_ref();
    if username.is_empty() && password.is_empty() {
        assert!(login.is_none(), "mqttbytes login {login:?}");
    } else {
        let login = login.expect("mqttbytes lost the login");
        assert_eq!(username, login.username);
        assert_eq!(password, login.password);
    }
}

fn suback_code(code: reference::SubscribeReasonCode) -> u8 {
    match code {
        reference::SubscribeReasonCode::Success(qos) => qos as u8,
        reference::SubscribeReasonCode::Failure => SUBACK_FAILURE,
    }
}
