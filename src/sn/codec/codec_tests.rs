use super::*;

#[test]
fn a_publish_round_trips_through_the_short_length_form() {
    let msg = Message::Publish {
        flags: Flags::new(SnQoS::AtLeastOnce, TopicIdType::Normal),
        topic_id: 1,
        msg_id: 2,
        data: b"hi",
    };
    let mut out = Vec::new();
    assert!(msg.encode(&mut out));
    assert_eq!(out, [9, 0x0C, 0x20, 0, 1, 0, 2, b'h', b'i']);
    assert_eq!(decode(&out), Ok(msg));
}
