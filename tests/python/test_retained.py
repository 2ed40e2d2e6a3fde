"""Retained messages (MQTT 3.1.1 section 3.3.1.3)."""

import time

RETAINED = {
    "fromb/qos0": (b"qos 0", 0),
    "fromb/qos1": (b"qos 1", 1),
    "fromb/qos2": (b"qos 2", 2),
}


def test_retained_messages_set_wildcard_receive_and_clear(make_client):
    pub = make_client("retain-pub")
    pub.connect()
    for topic, (payload, qos) in RETAINED.items():
        pub.publish(topic, payload, qos, retain=True)

    # A later subscriber gets every retained message matching its filter,
    # with the retain flag set and at min(published QoS, subscription QoS).
    sub = make_client("retain-sub")
    sub.connect()
    sub.subscribe([("fromb/+", 2)])
    msgs = sub.wait_messages(len(RETAINED))
    got = {m.topic: (m.payload, m.qos, m.retain) for m in msgs}
    assert got == {t: (p, q, True) for t, (p, q) in RETAINED.items()}
    assert len(sub.collect(0.3)) == len(RETAINED), "duplicate retained deliveries"
    sub.disconnect()

    # A zero-length retained publish removes the retained message
    # (MQTT-3.3.1-10/11).
    for topic in RETAINED:
        pub.publish(topic, b"", 1, retain=True)
    late = make_client("retain-late")
    late.connect()
    late.subscribe([("fromb/+", 2)])
    assert late.collect(1.0) == []


def test_retained_flag_clear_on_live_delivery(make_client):
    # MQTT-3.3.1-9: a message sent to an existing subscription carries
    # RETAIN 0 even if it was published with RETAIN 1.
    sub = make_client("retain-live-sub")
    sub.connect()
    sub.subscribe([("retlive/t", 1)])
    pub = make_client("retain-live-pub")
    pub.connect()
    pub.publish("retlive/t", b"now", 1, retain=True)
    msgs = sub.wait_messages(1)
    assert [(m.payload, m.retain) for m in msgs] == [(b"now", False)]
    pub.publish("retlive/t", b"", 1, retain=True)


def test_retained_message_is_replaced(make_client):
    pub = make_client("retain-replace-pub")
    pub.connect()
    pub.publish("retreplace/t", b"first", 1, retain=True)
    pub.publish("retreplace/t", b"second", 1, retain=True)
    sub = make_client("retain-replace-sub")
    sub.connect()
    sub.subscribe([("retreplace/t", 1)])
    sub.wait_messages(1)
    assert [(m.payload, m.retain) for m in sub.collect(0.5)] == [(b"second", True)]


def test_retained_delivery_downgraded_to_subscription_qos(make_client):
    pub = make_client("retain-qos-pub")
    pub.connect()
    pub.publish("retqos/t", b"two", 2, retain=True)
    sub = make_client("retain-qos-sub")
    sub.connect()
    sub.subscribe([("retqos/#", 0)])
    msgs = sub.wait_messages(1)
    assert [(m.payload, m.qos, m.retain) for m in msgs] == [(b"two", 0, True)]


def test_retained_sent_again_on_resubscribe(make_client):
    # MQTT-3.8.4-3: a SUBSCRIBE that replaces an existing subscription
    # re-sends the matching retained messages.
    pub = make_client("retain-resub-pub")
    pub.connect()
    pub.publish("retresub/t", b"kept", 1, retain=True)
    sub = make_client("retain-resub-sub")
    sub.connect()
    sub.subscribe([("retresub/t", 1)])
    assert len(sub.wait_messages(1)) == 1
    sub.subscribe([("retresub/t", 2)])
    msgs = sub.wait_messages(2)
    assert [(m.payload, m.retain) for m in msgs] == [(b"kept", True), (b"kept", True)]


def test_no_live_copy_of_messages_acknowledged_before_subscribe(make_client):
    # A retained message whose PUBACK came before a SUBSCRIBE was even sent
    # reaches that subscription only as the stored copy (RETAIN 1), never
    # also as a live delivery. Subscribers with several client ids land on
    # different shards from the publisher, and many rounds give a
    # cross-shard race room to show.
    pub = make_client("race-pub")
    pub.connect()
    subs = [make_client(f"race-sub-{k}") for k in range(4)]
    for s in subs:
        s.connect()
    rounds = 40
    for i in range(rounds):
        pub.publish(f"race/{i}", f"v{i}".encode(), 1, retain=True)
        subs[i % len(subs)].subscribe([(f"race/{i}", 1)])
    time.sleep(0.3)
    for k, s in enumerate(subs):
        got = sorted((m.topic, m.payload, m.retain) for m in s.messages)
        expected = sorted((f"race/{i}", f"v{i}".encode(), True) for i in range(k, rounds, len(subs)))
        extra = [m for m in got if m not in expected or got.count(m) > 1]
        missing = [m for m in expected if m not in got]
        assert got == expected, f"race-sub-{k}: unexpected {extra}, missing {missing}"
