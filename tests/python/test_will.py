"""Keep-alive and will messages (MQTT 3.1.1 sections 3.1.2.5 and 3.1.2.10)."""

import time

import pytest

from conftest import PEER
from mqtt_raw import PINGREQ, PINGRESP, packet

# Allowance past 1.5 x keep-alive for the server's timer granularity.
# mosquitto checks keep-alives on a coarse periodic tick (it cuts a 2 s
# keep-alive client off after about 5 s), so the reference run needs more.
KEEPALIVE_SLACK = 7.0 if PEER == "mosquitto" else 2.0


def _will_watcher(make_client, topic_filter="will/#"):
    w = make_client("will-watcher")
    w.connect()
    w.subscribe([(topic_filter, 2)])
    return w


def test_keepalive_expiry_publishes_will(make_client, make_raw):
    # The client stops talking but keeps its socket open: the server must
    # cut it off after 1.5 x keep-alive (MQTT-3.1.2-24) and publish the will.
    watcher = _will_watcher(make_client)
    keepalive = 2
    raw = make_raw()
    assert raw.connect("will-ka", keepalive=keepalive, will=("will/ka", b"gone quiet", 1, False)) == (False, 0)
    start = time.monotonic()

    msgs = watcher.wait_messages(1, timeout=1.5 * keepalive + KEEPALIVE_SLACK)
    elapsed = time.monotonic() - start
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("will/ka", b"gone quiet", 1)], (
        f"no will {elapsed:.1f}s after the client went silent"
    )
    # A client that pings once per keep-alive period is within its rights,
    # so the server must not give up on it before that.
    assert elapsed >= keepalive - 0.2, f"will published after only {elapsed:.2f}s of silence"
    raw.wait_closed(1)


def test_pings_keep_the_connection_alive(make_client, make_raw):
    watcher = _will_watcher(make_client)
    keepalive = 2
    raw = make_raw()
    raw.connect("will-ping", keepalive=keepalive, will=("will/ping", b"should not fire", 0, False))
    # Ping every second for longer than 1.5 x keep-alive.
    for _ in range(4):
        time.sleep(1)
        raw.send(packet(PINGREQ, 0, b""))
        raw.expect(PINGRESP, timeout=2)
    assert watcher.messages == []
    raw.disconnect()
    assert watcher.collect(0.5) == []


def test_will_on_dropped_connection(make_client, make_raw):
    # A connection closed without DISCONNECT publishes the will (MQTT-3.1.2-8).
    watcher = _will_watcher(make_client)
    raw = make_raw()
    raw.connect("will-drop", keepalive=2, will=("will/drop", b"socket died", 2, False))
    raw.close()
    msgs = watcher.wait_messages(1, timeout=3)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [("will/drop", b"socket died", 2, False)]


def test_no_will_after_clean_disconnect(make_client, make_raw):
    # MQTT-3.1.2-10: DISCONNECT discards the will.
    watcher = _will_watcher(make_client)
    raw = make_raw()
    raw.connect("will-clean", keepalive=2, will=("will/clean", b"must not appear", 1, False))
    raw.disconnect()
    assert watcher.collect(1.0) == []


def test_retained_will(make_client, make_raw):
    # A will with WillRetain=1 is published as a retained message
    # (MQTT-3.1.2-17), so a later subscriber still sees it.
    watcher = _will_watcher(make_client, "willret/#")
    raw = make_raw()
    raw.connect("will-retain", keepalive=5, will=("willret/status", b"offline", 1, True))
    raw.close()
    # Live subscribers get it with RETAIN 0 (MQTT-3.3.1-9) ...
    msgs = watcher.wait_messages(1, timeout=3)
    assert [(m.payload, m.retain) for m in msgs] == [(b"offline", False)]
    # ... and once it has been published, a new subscriber gets the stored copy.
    late = make_client("will-late")
    late.connect()
    late.subscribe([("willret/status", 1)])
    late.wait_messages(1)
    assert [(m.payload, m.retain) for m in late.collect(0.3)] == [(b"offline", True)]


def test_will_from_paho_client(make_client):
    # The same through paho's will_set, for wire-format interoperability
    # with a widely used client: drop its socket without DISCONNECT.
    watcher = _will_watcher(make_client)
    dying = make_client("will-paho", keepalive=2, will=("will/paho", b"paho will", 1, False))
    dying.connect()
    dying.close()
    msgs = watcher.wait_messages(1, timeout=3)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("will/paho", b"paho will", 1)]


@pytest.mark.parametrize("old_clean,new_clean", [(True, True), (True, False), (False, True)])
def test_will_on_session_takeover(make_client, make_raw, old_clean, new_clean):
    # A takeover (MQTT-3.1.4-2) closes the old network connection without a
    # DISCONNECT, so its will is published (MQTT-3.1.2-8).
    watcher = _will_watcher(make_client)
    first = make_raw()
    first.connect("will-takeover", clean=old_clean, will=("will/takeover", b"replaced", 1, False))
    second = make_raw()
    assert second.connect("will-takeover", clean=new_clean)[1] == 0
    first.wait_closed(3)
    watcher.wait_messages(1, timeout=3)
    msgs = watcher.collect(0.3)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("will/takeover", b"replaced", 1)]


def test_no_will_when_a_persistent_session_goes_on(make_client, make_raw):
    # Both connections with clean session 0: the session goes on and the
    # will is not published (mosquitto 2.0.12 and later agree).
    watcher = _will_watcher(make_client)
    first = make_raw()
    first.connect("will-keeper", clean=False, will=("will/keeper", b"replaced", 1, False))
    second = make_raw()
    assert second.connect("will-keeper", clean=False) == (True, 0)
    first.wait_closed(3)
    # Published by the new connection after the takeover: a will would have
    # been routed before it.
    second.publish("will/keeper", b"sentinel", 1, pid=1)
    msgs = watcher.wait_messages(1, timeout=3)
    assert [(m.topic, m.payload) for m in msgs] == [("will/keeper", b"sentinel")]
