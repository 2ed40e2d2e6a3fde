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


def test_no_will_on_session_takeover(make_client, make_raw):
    # shardmq discards the will when a second connection with the same client
    # id takes the session over (MQTT-3.1.4-2): the device is back, and a will
    # such as "offline" would announce the opposite of the truth. Fleet
    # presence is built on this. mosquitto publishes the will here instead.
    if PEER == "mosquitto":
        pytest.skip("mosquitto publishes the will on takeover")
    watcher = _will_watcher(make_client)
    first = make_raw()
    first.connect("will-takeover", will=("will/takeover", b"replaced", 1, False))
    second = make_raw()
    assert second.connect("will-takeover") == (False, 0)
    first.wait_closed(3)
    # A will is routed at takeover, before the new CONNACK; waiting well
    # past the delivery of one message shows that none was.
    assert watcher.wait_messages(1, timeout=1.5) == []
