"""$SYS broker statistics, published (retained) every `sys_interval_s`."""

import re
import time

import pytest

SYS_TOPICS = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
]

INTEGER = re.compile(rb"^\d+$")


def _latest(msgs, topic):
    values = [m.payload for m in msgs if m.topic == topic]
    return values[-1] if values else None


@pytest.fixture
def sys_broker(broker_factory):
    return broker_factory({"sys_interval_s": 1})


def test_sys_topics_published(make_client, sys_broker):
    c = make_client("sys-reader", target=sys_broker)
    c.connect()
    assert c.subscribe([(t, 0) for t in SYS_TOPICS]) == [0] * len(SYS_TOPICS)

    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and {m.topic for m in c.messages} < set(SYS_TOPICS):
        time.sleep(0.1)
    msgs = c.messages
    missing = set(SYS_TOPICS) - {m.topic for m in msgs}
    assert not missing, f"not published within 4s with sys_interval_s=1: {sorted(missing)}"

    assert _latest(msgs, "$SYS/broker/version"), "empty version"
    assert re.match(rb"^\d+", _latest(msgs, "$SYS/broker/uptime")), _latest(msgs, "$SYS/broker/uptime")
    for topic in ("$SYS/broker/clients/connected", "$SYS/broker/messages/received", "$SYS/broker/messages/sent"):
        assert INTEGER.match(_latest(msgs, topic)), f"{topic}: {_latest(msgs, topic)!r}"


def test_sys_clients_connected_tracks_connections(make_client, sys_broker):
    reader = make_client("sys-count", target=sys_broker)
    reader.connect()
    reader.subscribe([("$SYS/broker/clients/connected", 0)])
    for i in range(3):
        make_client(f"sys-extra-{i}", target=sys_broker).connect()

    # With four clients connected the count must reach 4 within a couple of
    # intervals (counted across both shards).
    deadline = time.monotonic() + 4
    seen = []
    while time.monotonic() < deadline:
        seen = [int(m.payload) for m in reader.messages if INTEGER.match(m.payload)]
        if seen and seen[-1] >= 4:
            break
        time.sleep(0.1)
    assert seen and seen[-1] >= 4, f"clients/connected values seen: {seen}"


def test_sys_topics_are_retained(make_client, sys_broker):
    first = make_client("sys-first", target=sys_broker)
    first.connect()
    first.subscribe([("$SYS/broker/version", 0)])
    assert first.wait_messages(1, timeout=4), "no $SYS/broker/version within 4s"

    # A subscriber arriving later gets the stored copy straight away,
    # flagged as retained.
    late = make_client("sys-late", target=sys_broker)
    late.connect()
    late.subscribe([("$SYS/broker/version", 0)])
    msgs = late.collect(0.5)
    assert any(m.retain for m in msgs), msgs
