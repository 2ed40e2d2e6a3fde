"""Basic publish/subscribe: QoS levels, downgrade, ordering, payloads, fan-out."""

import pytest


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_basic_pubsub(make_client, qos):
    sub = make_client("basic-sub")
    sub.connect()
    assert sub.subscribe([("basic/topic", 2)]) == [2]

    pub = make_client("basic-pub")
    pub.connect()
    pub.publish("basic/topic", f"qos{qos}".encode(), qos)

    msgs = sub.wait_messages(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [("basic/topic", f"qos{qos}".encode(), qos, False)]
    # Nothing more: exactly one copy, even at QoS 1 on a clean link.
    assert len(sub.collect(0.3)) == 1


def test_publisher_receives_own_message(make_client):
    # MQTT 3.1.1 has no no-local option: a client subscribed to a topic gets
    # its own publications back.
    c = make_client("self-sub")
    c.connect()
    c.subscribe([("self/topic", 1)])
    c.publish("self/topic", b"echo", 1)
    msgs = c.wait_messages(1)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("self/topic", b"echo", 1)]


@pytest.mark.parametrize("sub_qos,pub_qos", [(0, 1), (0, 2), (1, 2), (1, 0), (2, 1)])
def test_delivery_qos_is_minimum_of_publish_and_subscription(make_client, sub_qos, pub_qos):
    sub = make_client("downgrade-sub")
    sub.connect()
    assert sub.subscribe([("downgrade/t", sub_qos)]) == [sub_qos]
    pub = make_client("downgrade-pub")
    pub.connect()
    pub.publish("downgrade/t", b"x", pub_qos)
    msgs = sub.wait_messages(1)
    assert [m.qos for m in msgs] == [min(sub_qos, pub_qos)]


@pytest.mark.parametrize("qos", [1, 2])
def test_order_preserved_from_one_publisher(make_client, qos):
    # MQTT 3.1.1 section 4.6: messages of one QoS from one client to one
    # topic are delivered in the order they were published.
    sub = make_client("order-sub")
    sub.connect()
    sub.subscribe([("order/t", 2)])
    pub = make_client("order-pub")
    pub.connect()
    count = 100
    # Fire them all without waiting for each ack, so many are in flight at
    # once; then wait for the last one.
    for i in range(count - 1):
        pub.publish_nowait("order/t", str(i).encode(), qos)
    pub.publish("order/t", str(count - 1).encode(), qos)
    msgs = sub.wait_messages(count, timeout=10)
    assert [m.payload for m in msgs] == [str(i).encode() for i in range(count)]


def test_payloads_empty_binary_and_large(make_client):
    sub = make_client("payload-sub")
    sub.connect()
    sub.subscribe([("payload/#", 1)])
    pub = make_client("payload-pub")
    pub.connect()
    payloads = {
        "payload/empty": b"",
        "payload/binary": bytes(range(256)) * 4,
        # Above a typical first read buffer and the 2-byte remaining-length
        # boundary (16383), below any sensible default maximum packet size.
        "payload/large": bytes(i % 251 for i in range(60_000)),
    }
    for topic, payload in payloads.items():
        pub.publish(topic, payload, 1)
    msgs = sub.wait_messages(len(payloads))
    assert {m.topic: m.payload for m in msgs} == payloads
    assert len(msgs) == len(payloads)


def test_fan_out_to_many_subscribers(make_client):
    # Distinct client ids spread the subscribers over both shards; every
    # one of them must get every message, in order.
    subs = []
    for i in range(8):
        s = make_client(f"fan-sub-{i}")
        s.connect()
        s.subscribe([("fan/+/data", 1)])
        subs.append(s)
    pub = make_client("fan-pub")
    pub.connect()
    expected = [f"m{i}".encode() for i in range(20)]
    for payload in expected:
        pub.publish("fan/dev1/data", payload, 1)
    for s in subs:
        msgs = s.wait_messages(len(expected))
        assert [m.payload for m in msgs] == expected, s.client_id


def test_zero_length_client_id_accepted_with_clean_session(make_client):
    # MQTT-3.1.3-6/7: the server assigns an identifier. Two such clients at
    # once must be two distinct sessions, not one taking over the other.
    a = make_client("", clean_session=True)
    b = make_client("", clean_session=True)
    assert a.connect() is False
    assert b.connect() is False
    a.subscribe([("zeroid/t", 1)])
    b.subscribe([("zeroid/t", 1)])
    a.publish("zeroid/t", b"hello", 1)
    for c in (a, b):
        msgs = c.wait_messages(1)
        assert [(m.topic, m.payload) for m in msgs] == [("zeroid/t", b"hello")]
    assert not a.disconnected.is_set() and not b.disconnected.is_set()


def test_zero_length_client_id_rejected_without_clean_session(make_raw):
    # MQTT-3.1.3-8: CONNACK 0x02 (identifier rejected), then close.
    raw = make_raw()
    session_present, rc = raw.connect("", clean=False)
    assert (session_present, rc) == (False, 0x02)
    raw.wait_closed(3)
