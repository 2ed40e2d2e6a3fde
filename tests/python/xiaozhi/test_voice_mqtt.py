"""The MQTT side of the gateway: device authentication (§3.2), replies to
devices that do or do not subscribe (§10.1), the 8 KB packet limit (§3.4),
and ordinary MQTT clients next to devices."""

from __future__ import annotations

import time
import uuid as uuidlib

import paho.mqtt.client as mqtt
import pytest

import crypto
from conversation import assert_udp_hello, open_conversation, round_trip
from device import ConnectRefused, dumps, random_identity
from gateway import GROUP_ID, raw_connack

SIGNATURE_KEY = "Sh4rdMQ-Voice-Key"
CONNACK_OK = bytes([0x20, 0x02, 0x00, 0x00])


@pytest.fixture
def signed_gateway(gateway_factory):
    return gateway_factory({"voice": {"signature_key": SIGNATURE_KEY}})


def test_good_credentials_accepted(signed_gateway, make_device):
    mac, uuid = random_identity()
    client_id, username, password = crypto.device_credentials(SIGNATURE_KEY, mac, uuid)
    assert raw_connack(signed_gateway.host, signed_gateway.mqtt_port, client_id, username, password) == CONNACK_OK
    make_device(signed_gateway, mac=mac, uuid=uuid).hello()


@pytest.mark.parametrize(
    "tamper",
    ["password", "username", "client_id", "no_password", "other_key"],
)
def test_bad_credentials_refused_with_4(signed_gateway, make_device, tamper):
    mac, uuid = random_identity()
    client_id, username, password = crypto.device_credentials(SIGNATURE_KEY, mac, uuid)
    if tamper == "password":
        password = password[:-4] + ("AAA=" if password[-4:] != "AAA=" else "BBB=")
    elif tamper == "username":
        username = crypto.mqtt_username({"ip": "10.9.9.9"})  # password was signed over the old one
    elif tamper == "client_id":
        client_id = client_id.replace(uuid, str(uuidlib.uuid4()))  # signed for another id
    elif tamper == "no_password":
        password = None
    elif tamper == "other_key":
        password = crypto.mqtt_password("some-other-key", client_id, username)
    assert raw_connack(signed_gateway.host, signed_gateway.mqtt_port, client_id, username, password) == bytes([0x20, 0x02, 0x00, 0x04])
    with pytest.raises(ConnectRefused) as refused:
        make_device(signed_gateway, mac=mac, client_id=client_id, username=username, password=password)
    assert refused.value.rc == 4 and str(refused.value.reason) == "Bad user name or password"


@pytest.mark.parametrize(
    "client_id",
    [
        "GID@@@nothex@@@u",
        "GID_test@@@aa_bb_cc_dd_ee@@@u",  # five octets
        "GID_test@@@aa_bb_cc_dd_ee_ff_00@@@u",  # seven octets
        "GID_test@@@aa_bb_cc_dd_ee_ff@@@u@@@extra",  # four parts
        "GID_test@@@aa_bb_cc_dd_ee_gg",
    ],
)
def test_malformed_device_id_refused_with_2(gateway, make_device, client_id):
    assert raw_connack(gateway.host, gateway.mqtt_port, client_id, "u", "p") == bytes([0x20, 0x02, 0x00, 0x02])
    with pytest.raises(ConnectRefused) as refused:
        make_device(gateway, client_id=client_id, username="u", password="p")
    assert refused.value.rc == 2


@pytest.mark.parametrize("password", ["anything", "", None])
def test_no_signature_key_accepts_any_password(gateway, make_device, backend, password):
    assert gateway.signature_key == ""
    mac, uuid = random_identity()
    client_id = f"{GROUP_ID}@@@{crypto.mac_underscored(mac)}@@@{uuid}"
    dev = make_device(gateway, mac=mac, client_id=client_id, username="x", password=password)
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gateway, session)


def test_legacy_two_part_id_has_no_password_check(signed_gateway, make_device, backend):
    mac, _ = random_identity()
    dev = make_device(signed_gateway, mac=mac, client_id=f"{GROUP_ID}@@@{crypto.mac_underscored(mac)}", username="u", password="not-signed")
    reply, session = open_conversation(dev, backend)
    assert session.headers.get("device-id") == mac
    round_trip(dev, session, 3)


def test_firmware_never_subscribes_yet_gets_replies(gateway, backend, make_device):
    dev = make_device(gateway)
    assert dev.subscriptions == []
    reply, session = open_conversation(dev, backend)
    hello = dev.recv_message("hello")
    assert hello.topic == f"devices/p2p/{dev.mac_}" and hello.qos == 0 and not hello.retain


def test_py_xiaozhi_replies_arrive_exactly_once(gateway, backend, make_device):
    dev = make_device(gateway, "py")
    assert dev.subscriptions == [(f"devices/p2p/{dev.mac_}", 1)]
    assert dev.granted and all(code in (0, 1) for code in dev.granted), dev.granted
    reply, session = open_conversation(dev, backend)
    round_trip(dev, session, 5)
    session.send_json({"type": "stt", "text": "once", "session_id": session.id})
    dev.listen_stop()
    dev.recv_json("tts", predicate=lambda m: m.get("state") == "stop")
    # Only the conversation's messages: MCP traffic the gateway may start on its own is not counted.
    messages = [m for m in dev.collect(1.0) if m.type in ("hello", "tts", "stt")]
    kinds = [(m.json or {}).get("type", "?") + "/" + str((m.json or {}).get("state", "")) for m in messages]
    assert sorted(kinds) == sorted(["hello/", "tts/start", "stt/", "tts/stop"]), kinds
    assert {m.topic for m in messages} == {f"devices/p2p/{dev.mac_}"}


def test_oversized_packet_closes_only_that_device(gateway, backend, make_device):
    other = make_device(gateway)
    reply, other_session = open_conversation(other, backend)
    round_trip(other, other_session, 3)

    dev = make_device(gateway)
    # 8000 bytes (the firmware's MCP page size) fits under the 8192-byte limit...
    filler = {"jsonrpc": "2.0", "id": 99999, "result": {"pad": ""}}
    msg = {"session_id": "", "type": "mcp", "payload": filler}
    filler["result"]["pad"] = "x" * (8000 - len(dumps(msg)))
    assert len(dumps(msg)) == 8000
    dev.send_json(msg)
    dev.hello()  # still connected and served
    assert not dev.disconnected.is_set()

    # ...9000 bytes does not.
    msg = {"session_id": "", "type": "mcp", "payload": {"jsonrpc": "2.0", "id": 99998, "result": {"pad": "y" * 9000}}}
    dev.send_json(msg)
    assert dev.wait_connection_closed(5), "a packet over 8192 bytes must close the connection"

    # The other device's conversation goes on.
    assert not other.disconnected.is_set()
    round_trip(other, other_session, 5, first_turn=False)


def test_max_packet_size_configurable(gateway_factory, make_device):
    gw = gateway_factory({"voice": {"max_packet_size": 2048}})
    dev = make_device(gw)
    dev.publish_raw(dumps({"type": "x", "pad": "z" * 3000}))
    assert dev.wait_connection_closed(5)


def test_non_json_payload_closes_connection(gateway, make_device):
    dev = make_device(gateway)
    dev.publish_raw(b"\x00\x01 definitely not json")
    assert dev.wait_connection_closed(5), "GW78 closes on a payload that is not JSON"


def test_duplicate_client_id_takes_over(gateway, backend, make_device):
    mac, uuid = random_identity()
    first = make_device(gateway, mac=mac, uuid=uuid)
    second = make_device(gateway, mac=mac, uuid=uuid)
    assert first.wait_connection_closed(5), "the older connection of a client id is closed"
    reply, session = open_conversation(second, backend)
    round_trip(second, session, 3)


def test_ordinary_mqtt_clients_still_work(gateway, make_device):
    # Client ids without @@@ are plain MQTT clients of the broker.
    received = []

    def client(cid):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
        c.on_message = lambda _c, _u, m: received.append((m.topic, bytes(m.payload), m.qos))
        c.connect(gateway.host, gateway.mqtt_port, 30)
        c.loop_start()
        return c

    sub, pub = client("plain-sub"), client("plain-pub")
    try:
        deadline = time.monotonic() + 5
        while not (sub.is_connected() and pub.is_connected()) and time.monotonic() < deadline:
            time.sleep(0.02)
        sub.subscribe("plain/#", 1)
        time.sleep(0.3)  # SUBACK; paho's threaded loop offers no simpler wait
        pub.publish("plain/topic", b"hello", 1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received == [("plain/topic", b"hello", 1)]
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()
