"""CONNECT handling and protocol violations the server must answer by closing."""

import pytest

from conftest import PEER
from mqtt_raw import (
    CONNACK,
    PINGREQ,
    PINGRESP,
    SUBSCRIBE,
    connect_packet,
    packet,
    publish_packet,
    subscribe_packet,
)


def test_ping(make_raw):
    raw = make_raw()
    raw.connect("pinger")
    raw.send(packet(PINGREQ, 0, b""))
    resp = raw.expect(PINGRESP)
    assert resp.flags == 0 and resp.body == b""


def test_first_packet_must_be_connect(make_raw):
    # MQTT-3.1.0-1: anything else first and the server closes, without a reply.
    raw = make_raw()
    raw.send(packet(PINGREQ, 0, b""))
    assert raw.wait_closed(3) == []


def test_second_connect_is_a_violation(make_raw):
    # MQTT-3.1.0-2.
    raw = make_raw()
    raw.connect("twice")
    raw.send(connect_packet("twice"))
    assert raw.wait_closed(3) == []


@pytest.mark.parametrize("level", [3, 6, pytest.param(5, id="mqtt5")])
def test_unsupported_protocol_level(make_raw, level):
    # MQTT-3.1.2-2: CONNACK 0x01 (unacceptable protocol level), then close.
    # Level 3 is MQTT 3.1, whose name is "MQIsdp"; sent with "MQTT" it is
    # simply an unsupported level.
    if level == 5 and PEER == "mosquitto":
        pytest.skip("mosquitto speaks MQTT 5")
    raw = make_raw()
    raw.send(connect_packet("level", protocol_level=level))
    got = raw.wait_closed(3)
    assert [(p.ptype, p.body) for p in got] == [(CONNACK, b"\x00\x01")], got


def test_connect_without_client_id_but_clean_session(make_raw):
    raw = make_raw()
    assert raw.connect("", clean=True) == (False, 0)
    raw.send(packet(PINGREQ, 0, b""))
    raw.expect(PINGRESP)


VIOLATIONS = {
    # MQTT-3.8.1-1: SUBSCRIBE fixed-header flags must be 0b0010.
    "subscribe-bad-flags": subscribe_packet(1, [("t", 0)], flags=0x00),
    # MQTT-3.8.3-3: a SUBSCRIBE with no topic filter.
    "subscribe-empty": packet(SUBSCRIBE, 0x02, b"\x00\x01"),
    # MQTT-3.3.1-4: QoS 3 does not exist.
    "publish-qos3": packet(3, 0x06, b"\x00\x01t\x00\x01x"),
    # MQTT-3.3.2-2: no wildcards in a topic name.
    "publish-wildcard-topic": publish_packet("a/+/b", b"x", 0),
    "publish-hash-topic": publish_packet("a/#", b"x", 0),
    # MQTT-3.3.2-1 / 1.5.3: topic names are UTF-8 without U+0000.
    "publish-nul-in-topic": publish_packet("a\x00b", b"x", 0),
    "publish-invalid-utf8": packet(3, 0x00, b"\x00\x02\xc3\x28x"),
    # Reserved packet types 0 and 15.
    "reserved-type-0": packet(0, 0, b""),
    "reserved-type-15": packet(15, 0, b""),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_protocol_violation_closes_connection(make_raw, make_client, name):
    # Section 4.8: on a protocol violation the server closes the connection.
    # A watcher on '#' also checks nothing leaked out as a publication.
    watcher = make_client("violation-watch")
    watcher.connect()
    watcher.subscribe([("#", 0)])
    raw = make_raw()
    raw.connect("violator")
    raw.send(VIOLATIONS[name])
    got = raw.wait_closed(3)
    assert got == [], f"expected a close, received {got!r}"
    assert watcher.collect(0.3) == []
