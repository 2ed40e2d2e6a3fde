"""Configured limits: connect timeout and maximum packet size."""

import time

from mqtt_raw import PUBLISH, publish_packet


def test_connect_timeout(make_raw, broker_factory):
    # A connection that never sends CONNECT is closed after connect_timeout_s.
    b = broker_factory({"connect_timeout_s": 1})
    raw = make_raw(target=b)
    start = time.monotonic()
    raw.wait_closed(4)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.8, f"closed after {elapsed:.2f}s, before the 1s connect timeout"


def test_max_packet_size(make_raw, make_client, broker_factory):
    b = broker_factory({"max_packet_size": 1024})
    watcher = make_client("limit-watch", target=b)
    watcher.connect()
    watcher.subscribe([("limit/#", 0)])

    raw = make_raw(target=b)
    raw.connect("limit-pub")
    raw.send(publish_packet("limit/small", b"s" * 200, 0))
    assert [(m.topic, len(m.payload)) for m in watcher.wait_messages(1)] == [("limit/small", 200)]

    # Over the limit: the connection is closed and nothing is routed.
    try:
        raw.send(publish_packet("limit/big", b"b" * 4000, 0))
    except OSError:
        pass  # already closed while we were still writing
    got = raw.wait_closed(3)
    assert [p for p in got if p.ptype == PUBLISH] == []
    assert [m.topic for m in watcher.collect(0.3)] == ["limit/small"]
