"""Persistent sessions: offline queueing, redelivery, session present, takeover."""

from mqtt_raw import PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, ack_packet, publish_packet


def test_offline_message_queueing(make_client):
    sub = make_client("offline-sub", clean_session=False)
    assert sub.connect() is False
    assert sub.subscribe([("fromb/+", 2)]) == [2]
    sub.disconnect()

    pub = make_client("offline-pub")
    pub.connect()
    for qos in (0, 1, 2):
        pub.publish(f"fromb/qos{qos}", f"qos {qos}".encode(), qos)

    back = make_client("offline-sub", clean_session=False)
    assert back.connect() is True, "session present must be 1 for a stored session"
    back.wait_messages(2)
    msgs = back.collect(0.5)
    got = {m.topic: (m.payload, m.qos) for m in msgs}
    # QoS 1 and 2 must have been queued; QoS 0 may be (an option).
    assert got.get("fromb/qos1") == (b"qos 1", 1), msgs
    assert got.get("fromb/qos2") == (b"qos 2", 2), msgs
    assert set(got) <= {"fromb/qos0", "fromb/qos1", "fromb/qos2"}, msgs
    assert len(msgs) == len(got), f"duplicates: {msgs}"


def test_offline_queue_keeps_order(make_client):
    sub = make_client("offline-order", clean_session=False)
    sub.connect()
    sub.subscribe([("offorder/t", 1)])
    sub.disconnect()
    pub = make_client("offline-order-pub")
    pub.connect()
    expected = [f"m{i}".encode() for i in range(30)]
    for payload in expected:
        pub.publish("offorder/t", payload, 1)
    back = make_client("offline-order", clean_session=False)
    back.connect()
    msgs = back.wait_messages(len(expected))
    assert [m.payload for m in msgs] == expected


def test_clean_session_discards_stored_session(make_client):
    first = make_client("cleaner", clean_session=False)
    first.connect()
    first.subscribe([("cleaner/t", 1)])
    first.disconnect()

    clean = make_client("cleaner", clean_session=True)
    assert clean.connect() is False, "CleanSession=1 must report no session (MQTT-3.2.2-1)"
    clean.disconnect()

    pub = make_client("cleaner-pub")
    pub.connect()
    pub.publish("cleaner/t", b"nobody", 1)

    again = make_client("cleaner", clean_session=False)
    assert again.connect() is False, "the CleanSession=1 connection should have discarded the session"
    assert again.collect(0.5) == []


def test_session_present_flag(make_raw):
    def connect(clean):
        raw = make_raw()
        session_present, rc = raw.connect("sp-client", clean=clean)
        assert rc == 0
        raw.disconnect()
        return session_present

    assert connect(clean=False) is False  # nothing stored yet
    assert connect(clean=False) is True  # resumed
    assert connect(clean=True) is False  # MQTT-3.2.2-1
    assert connect(clean=False) is False  # the clean connection discarded it


def test_redelivery_of_unacknowledged_messages_on_reconnect(make_raw, make_client):
    # MQTT-4.4.0-1: on reconnect with CleanSession=0 the server re-sends
    # unacknowledged QoS 1 and QoS 2 PUBLISH packets with their original
    # packet identifiers (and DUP=1, MQTT-3.3.1-1).
    sub = make_raw()
    sub.connect("redeliver", clean=False)
    assert sub.subscribe(1, [("redeliver/#", 2)]) == [2]

    pub = make_client("redeliver-pub")
    pub.connect()
    pub.publish("redeliver/one", b"one", 1)
    pub.publish("redeliver/two", b"two", 2)

    first = [sub.expect(PUBLISH).publish() for _ in range(2)]
    assert [(t, p, q) for t, p, q, _pid, _r, _d in first] == [
        ("redeliver/one", b"one", 1),
        ("redeliver/two", b"two", 2),
    ]
    # Acknowledge nothing, go away, come back.
    sub.disconnect()

    sub = make_raw()
    assert sub.connect("redeliver", clean=False) == (True, 0)
    again = [sub.expect(PUBLISH).publish() for _ in range(2)]
    for (t1, p1, q1, pid1, _r1, _d1), (t2, p2, q2, pid2, _r2, dup2) in zip(first, again):
        assert (t2, p2, q2, pid2) == (t1, p1, q1, pid1), "redelivery must reuse the packet identifier"
        assert dup2, f"redelivered {t2} without DUP"

    # Now complete both flows; nothing must come a third time.
    sub.send(ack_packet(PUBACK, again[0][3]))
    sub.send(ack_packet(PUBREC, again[1][3]))
    assert sub.expect(PUBREL).pid == again[1][3]
    sub.send(ack_packet(PUBCOMP, again[1][3]))
    sub.disconnect()

    sub = make_raw()
    assert sub.connect("redeliver", clean=False) == (True, 0)
    assert sub.recv_all(0.7) == []


def test_pubrel_resent_on_reconnect(make_raw, make_client):
    # MQTT-4.4.0-1: an outgoing QoS 2 flow that got PUBREC but not PUBCOMP
    # resumes with PUBREL, not a second PUBLISH.
    sub = make_raw()
    sub.connect("pubrel-resend", clean=False)
    sub.subscribe(1, [("pubrel/t", 2)])
    pub = make_client("pubrel-pub")
    pub.connect()
    pub.publish("pubrel/t", b"exactly once", 2)

    pid = sub.expect(PUBLISH).pid
    sub.send(ack_packet(PUBREC, pid))
    assert sub.expect(PUBREL).pid == pid
    sub.disconnect()  # without PUBCOMP

    sub = make_raw()
    assert sub.connect("pubrel-resend", clean=False) == (True, 0)
    rel = sub.recv(3)
    assert rel.ptype == PUBREL and rel.flags == 0x02 and rel.pid == pid, rel
    sub.send(ack_packet(PUBCOMP, pid))
    assert sub.recv_all(0.7) == []


def test_inbound_qos2_delivered_exactly_once(make_raw, make_client):
    # The server side of the QoS 2 flow: a retransmitted PUBLISH (DUP=1)
    # and a flow completed on a later connection still yield one delivery.
    watcher = make_client("qos2-watch")
    watcher.connect()
    watcher.subscribe([("eo/#", 2)])

    pub = make_raw()
    pub.connect("qos2-sender", clean=False)
    pub.send(publish_packet("eo/dup", b"dup", qos=2, pid=11))
    assert pub.expect(PUBREC).pid == 11
    pub.send(publish_packet("eo/dup", b"dup", qos=2, pid=11, dup=True))
    assert pub.expect(PUBREC).pid == 11
    pub.send(ack_packet(PUBREL, 11))
    assert pub.expect(PUBCOMP).pid == 11

    pub.send(publish_packet("eo/resume", b"resume", qos=2, pid=12))
    assert pub.expect(PUBREC).pid == 12
    pub.disconnect()  # before PUBREL
    pub = make_raw()
    assert pub.connect("qos2-sender", clean=False) == (True, 0)
    pub.send(ack_packet(PUBREL, 12))
    assert pub.expect(PUBCOMP).pid == 12

    watcher.wait_messages(2)
    msgs = watcher.collect(0.7)
    assert sorted((m.topic, m.payload) for m in msgs) == [("eo/dup", b"dup"), ("eo/resume", b"resume")]


def test_session_takeover(make_client):
    # MQTT-3.1.4-2: a second connection with the same client id closes the
    # first; with CleanSession=0 the new one continues its session, and the
    # first one's will is not published since the session goes on (with a
    # clean session on either side it is: test_will.py).
    watcher = make_client("takeover-watcher")
    watcher.connect()
    watcher.subscribe([("takeover/will", 1)])
    first = make_client("takeover", clean_session=False, will=("takeover/will", b"gone", 1, False))
    first.connect()
    first.subscribe([("takeover/t", 1)])
    second = make_client("takeover", clean_session=False)
    assert second.connect() is True
    assert first.disconnected.wait(3), "first connection not closed by the takeover"

    pub = make_client("takeover-pub")
    pub.connect()
    pub.publish("takeover/t", b"to the new one", 1)
    msgs = second.wait_messages(1)
    assert [m.payload for m in msgs] == [b"to the new one"]
    assert not second.disconnected.is_set()
    # Published after the takeover: a will would have arrived before it.
    pub.publish("takeover/will", b"sentinel", 1)
    msgs = watcher.wait_messages(1)
    assert [m.payload for m in msgs] == [b"sentinel"]
