"""Topic filters: wildcards, overlap, unsubscribe, invalid filters, `$` topics."""

import time

import pytest

from conftest import PEER
from mqtt_raw import UNSUBACK, subscribe_packet, unsubscribe_packet

TOPICS = ["a", "a/b", "a/b/c", "a/x/c", "/b", "b", "a/", "/"]

# Filter -> the TOPICS it matches (MQTT 3.1.1 section 4.7). Written out by
# hand rather than computed, so the table is an independent statement.
MATCHES = {
    "a/b": {"a/b"},
    "a/+": {"a/b", "a/"},
    "a/#": {"a", "a/b", "a/b/c", "a/x/c", "a/"},
    "#": set(TOPICS),
    "+/+": {"a/b", "/b", "a/", "/"},
    "+/b": {"a/b", "/b"},
    "a/+/c": {"a/b/c", "a/x/c"},
    "/+": {"/b", "/"},
    "+": {"a", "b"},
    "a/b/#": {"a/b", "a/b/c"},
}


def test_wildcard_matching(make_client):
    subs = {}
    for i, topic_filter in enumerate(MATCHES):
        c = make_client(f"match-{i}")
        c.connect()
        assert c.subscribe([(topic_filter, 1)]) == [1], topic_filter
        subs[topic_filter] = c
    pub = make_client("match-pub")
    pub.connect()
    for topic in TOPICS:
        pub.publish(topic, topic.encode(), 1)
    for topic_filter, c in subs.items():
        c.wait_messages(len(MATCHES[topic_filter]))
    # One quiet window for all, to catch deliveries beyond the expected ones.
    time.sleep(0.3)
    for topic_filter, c in subs.items():
        got = [m.topic for m in c.messages]
        assert sorted(got) == sorted(MATCHES[topic_filter]), f"filter {topic_filter!r}"


@pytest.mark.xfail(
    PEER == "mosquitto",
    strict=True,
    reason="mosquitto 2.0 delivers a single copy at the QoS of the first matching subscription "
    "(eclipse-mosquitto/mosquitto#3319)",
)
def test_overlapping_subscriptions(make_client):
    # MQTT 3.1.1 section 3.3.5: with overlapping subscriptions the server
    # delivers either one copy at the maximum QoS of the matching
    # subscriptions, or one copy per subscription at that subscription's QoS.
    c = make_client("overlap")
    c.connect()
    assert c.subscribe([("topics/#", 2), ("topics/+", 1)]) == [2, 1]
    c.publish("topics/a", b"overlapping", 2)
    c.wait_messages(2, timeout=1)
    msgs = c.collect(0.3)
    assert all(m.payload == b"overlapping" for m in msgs)
    qos = sorted(m.qos for m in msgs)
    assert qos in ([2], [1, 2]), f"got {len(msgs)} copies at QoS {qos}"


def test_resubscribe_replaces_subscription(make_client):
    # MQTT-3.8.4-3: an identical filter replaces the existing subscription
    # (new QoS), it does not add a second one.
    c = make_client("resub")
    c.connect()
    assert c.subscribe([("resub/t", 0)]) == [0]
    assert c.subscribe([("resub/t", 2)]) == [2]
    c.publish("resub/t", b"once", 2)
    c.wait_messages(1)
    assert [(m.payload, m.qos) for m in c.collect(0.5)] == [(b"once", 2)]


def test_unsubscribe(make_client):
    c = make_client("unsub")
    c.connect()
    c.subscribe([("unsub/a", 1), ("unsub/b", 1), ("unsub/+", 1)])
    # Filters are removed by exact string: dropping "unsub/a" leaves
    # "unsub/+" in place, so unsub/a still arrives through it.
    c.unsubscribe(["unsub/a", "unsub/+"])
    pub = make_client("unsub-pub")
    pub.connect()
    for t in ("unsub/a", "unsub/b", "unsub/c"):
        pub.publish(t, t.encode(), 1)
    c.wait_messages(1)
    assert [m.topic for m in c.collect(0.5)] == ["unsub/b"]


def test_unsubscribe_unknown_filter_still_acknowledged(make_raw):
    # MQTT-3.10.4-4/5: UNSUBACK even when nothing was removed.
    raw = make_raw()
    raw.connect("unsub-unknown")
    raw.send(unsubscribe_packet(9, ["never/subscribed"]))
    ack = raw.expect(UNSUBACK)
    assert ack.pid == 9 and len(ack.body) == 2


def test_invalid_filter_closes_despite_valid_neighbour(make_raw):
    # A malformed filter is a protocol violation (MQTT 3.1.1 section 4.8),
    # not a refusal: the connection is closed with no SUBACK at all, the
    # valid filter in the same packet included. mosquitto does the same.
    raw = make_raw()
    raw.connect("bad-filter")
    raw.send(subscribe_packet(3, [("a/#/b", 1), ("good/topic", 1)]))
    assert raw.wait_closed(3) == []


# [MQTT-4.7.1-2] '#' alone and last, [MQTT-4.7.1-3] '+' alone in its level,
# [MQTT-4.7.3-1] at least one character.
@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "+a/b", "#/", ""])
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
def test_invalid_filters_close_the_connection(make_raw, bad, kind):
    raw = make_raw()
    raw.connect("bad-filter")
    if kind == "subscribe":
        raw.send(subscribe_packet(1, [(bad, 0)]))
    else:
        raw.send(unsubscribe_packet(1, [bad]))
    assert raw.wait_closed(3) == [], f"{kind} {bad!r}"


def test_dollar_topics_not_matched_by_wildcards(make_client, broker_factory):
    # MQTT-4.7.2-1: filters starting with a wildcard do not match topics
    # starting with '$'. $SYS, published every second here, is the source.
    b = broker_factory({"sys_interval_s": 1})
    wild = make_client("dollar-wild", target=b)
    wild.connect()
    wild.subscribe([("#", 0), ("+/broker/#", 0), ("+/+/+", 0)])
    control = make_client("dollar-control", target=b)
    control.connect()
    control.subscribe([("$SYS/broker/#", 0)])

    # A client's own publication to a '$' topic: the server may refuse it,
    # but must not route it to the wildcard subscriber either way.
    other = make_client("dollar-pub", target=b)
    other.connect()
    other.publish_nowait("$dollar/x/y", b"dollar", 0)
    other.publish("plain/topic", b"plain", 1)

    assert control.wait_messages(1, timeout=4), "no $SYS messages at all; nothing was tested"
    msgs = wild.collect(1.5)
    assert [m.topic for m in msgs if m.topic.startswith("$")] == []
    assert [m.topic for m in msgs] == ["plain/topic"]
