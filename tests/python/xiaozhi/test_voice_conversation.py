"""A whole conversation the way xiaozhi-esp32 has it: OTA, MQTT with the
OTA credentials, hello, audio both ways over UDP, listen stop, goodbye."""

from __future__ import annotations

import base64
import json
import time

import pytest

import crypto
from backend import BACKEND_AUDIO_PARAMS, GATEWAY_PATH
from conversation import assert_udp_hello, open_conversation, round_trip
from device import FIRMWARE_VERSION, FirmwareDevice, ota_request, random_identity
from gateway import GROUP_ID, HOST

SIGNATURE_KEY = "Sh4rdMQ-Voice-Key"


@pytest.mark.parametrize("shards", [1, 2])
def test_full_conversation_firmware(gateway_factory, backend, make_device, shards):
    gw = gateway_factory({"voice": {"signature_key": SIGNATURE_KEY}}, shards=shards)

    # OTA hands out the MQTT settings (§2).
    mac, uuid = random_identity()
    status, ota, raw = ota_request(gw.http_base, mac, uuid)
    assert status == 200, raw
    mqtt_section = ota["mqtt"]
    assert mqtt_section["endpoint"] == f"{HOST}:{gw.mqtt_port}"
    client_id, username, password = mqtt_section["client_id"], mqtt_section["username"], mqtt_section["password"]
    parts = client_id.split("@@@")
    assert len(parts) == 3 and parts[0].startswith("GID_"), client_id
    assert parts[1:] == [mac.replace(":", "_"), uuid], client_id
    assert isinstance(json.loads(base64.b64decode(username)), dict), username
    assert password == crypto.mqtt_password(SIGNATURE_KEY, client_id, username)
    assert mqtt_section["publish_topic"] == "device-server"

    dev = make_device.raw(FirmwareDevice.from_ota(mqtt_section))
    dev.connect()

    # hello: the gateway opens the backend socket, then answers with UDP parameters.
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gw, session)
    assert session.path == GATEWAY_PATH
    assert session.hello["type"] == "hello"
    assert session.hello["version"] == 2
    assert session.hello["transport"] == "websocket"
    assert session.hello["audio_params"] == {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
    assert session.hello["features"] == {"aec": True, "mcp": True, "glyph_push": True}
    assert "text_font" not in session.hello
    assert session.headers.get("device-id") == mac
    assert session.headers.get("client-id") == uuid
    assert session.headers.get("protocol-version") == "2"
    assert session.headers.get("authorization") == "Bearer test-token"
    assert session.headers.get("x-forwarded-for") in (None, HOST)

    # 20 frames up, 20 echoes down (sequence 1.., same bytes, same timestamps).
    round_trip(dev, session, 20)
    assert dev.recv_json("tts", predicate=lambda m: m.get("state") == "start")["session_id"] == session.id
    assert dict(dev.dropped) == {}

    # End of the turn.
    dev.listen_stop()
    stop = session.wait_json("listen", predicate=lambda m: m.get("state") == "stop")
    assert stop["type"] == "listen"
    assert dev.recv_json("tts", predicate=lambda m: m.get("state") == "stop")["type"] == "tts"

    # Goodbye from the device closes the backend socket and is answered with a goodbye.
    dev.goodbye()
    assert session.wait_closed(5), "backend socket still open after the device's goodbye"
    assert not session.closed_by_backend
    assert dev.recv_json("goodbye", 5)["session_id"] == reply["session_id"]
    assert not dev.disconnected.is_set(), "the MQTT connection outlives the conversation"


def test_ota_response_fields(gateway):
    mac, uuid = random_identity()
    before_ms = int(time.time() * 1000)
    status, ota, raw = ota_request(gateway.http_base, mac, uuid)
    assert status == 200, raw
    assert ota["server_time"]["timezone_offset"] == 480
    assert abs(ota["server_time"]["timestamp"] - before_ms) < 60_000
    assert ota["firmware"]["version"] == FIRMWARE_VERSION  # firmware_version "" reports the device's own
    assert "websocket" not in ota  # no websocket_url configured
    m = ota["mqtt"]
    assert isinstance(m.get("subscribe_topic"), str)  # old firmware fails without it
    assert isinstance(m.get("password"), str)


def test_ota_group_id_without_board(gateway):
    mac, uuid = random_identity()
    status, ota, raw = ota_request(gateway.http_base, mac, uuid, board_type=None)
    assert status == 200, raw
    assert ota["mqtt"]["client_id"] == f"{GROUP_ID}@@@{mac.replace(':', '_')}@@@{uuid}"


def test_ota_credentials_connect(gateway_factory, backend, make_device):
    gw = gateway_factory({"voice": {"signature_key": SIGNATURE_KEY}})
    dev = make_device.from_ota(gw)
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gw, session)


def test_backend_json_reaches_device(gateway, backend, make_device):
    dev = make_device(gateway)
    reply, session = open_conversation(dev, backend)
    sent = [
        {"type": "stt", "text": "你好，小智", "session_id": session.id},
        {"type": "llm", "emotion": "happy", "text": "😀", "session_id": session.id},
        {"type": "tts", "state": "sentence_start", "text": "今天天气不错", "session_id": session.id},
        {"type": "alert", "status": "s", "message": "m", "emotion": "e"},
    ]
    for msg in sent:
        session.send_json(msg)
    got = [dev.recv_message(msg["type"], 5) for msg in sent]
    assert [m.json for m in got] == sent
    assert {m.topic for m in got} == {f"devices/p2p/{dev.mac_}"}
    assert {m.qos for m in got} == {0}


def test_device_json_reaches_backend(gateway, backend, make_device):
    dev = make_device(gateway)
    reply, session = open_conversation(dev, backend)
    dev.listen_start("manual")
    dev.send_json({"session_id": dev.session_id, "type": "listen", "state": "detect", "text": "你好小智"})
    dev.abort()
    assert session.wait_json("listen", predicate=lambda m: m.get("state") == "start")["mode"] == "manual"
    assert session.wait_json("listen", predicate=lambda m: m.get("state") == "detect")["text"] == "你好小智"
    session.wait_json("abort")


def test_mcp_between_backend_and_device(gateway, backend, make_device):
    # A tools/call from the backend reaches the device; the device's answer reaches the backend.
    dev = make_device(gateway)
    dev.mcp_handler = lambda req: {"content": [{"type": "text", "text": "volume=42"}], "isError": False}
    reply, session = open_conversation(dev, backend)
    request = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "self.get_device_status", "arguments": {}}}
    session.send_json({"type": "mcp", "payload": request, "session_id": session.id})
    assert dev.wait_mcp_request("tools/call", 5)["params"]["name"] == "self.get_device_status"
    answer = session.wait_json("mcp", predicate=lambda m: m.get("payload", {}).get("id") == 7)
    assert answer["payload"]["result"]["content"][0]["text"] == "volume=42"


def test_dev_chat_servers_by_mac(gateway_factory, backend, backend_factory, make_device):
    dev_backend = backend_factory("dev-backend")
    special, ordinary = random_identity(), random_identity()
    gw = gateway_factory({"voice": {"dev_chat_servers": [dev_backend.url], "dev_macs": [special[0]]}})
    a = make_device(gw, mac=special[0], uuid=special[1])
    b = make_device(gw, mac=ordinary[0], uuid=ordinary[1])
    a.hello()
    b.hello()
    round_trip(a, dev_backend.wait_session_for(a.mac), 5)
    round_trip(b, backend.wait_session_for(b.mac), 5)
    assert backend.sessions_for(a.mac) == [] and dev_backend.sessions_for(b.mac) == []


def test_backend_secret_token(gateway_factory, backend, make_device):
    gw = gateway_factory({"voice": {"backend_secret": "srv-secret-1"}})
    dev = make_device(gw)
    open_conversation(dev, backend)
    auth = backend.wait_session_for(dev.mac).headers.get("authorization", "")
    assert auth.startswith("Bearer "), auth
    token = auth[len("Bearer ") :]
    unix_sec = int(token.rsplit(".", 1)[1])
    assert abs(unix_sec - time.time()) < 300
    assert token == crypto.backend_token("srv-secret-1", dev.uuid, dev.mac, unix_sec)


def test_two_conversations_on_one_connection(gateway, backend, make_device):
    dev = make_device(gateway)
    first, s1 = open_conversation(dev, backend, 0)
    round_trip(dev, s1, 5)
    dev.goodbye()
    assert s1.wait_closed(5)
    dev.recv_json("goodbye", 5)

    second, s2 = open_conversation(dev, backend, 1)
    assert_udp_hello(second, gateway, s2)
    assert second["session_id"] != first["session_id"]
    assert second["udp"]["key"] != first["udp"]["key"]
    # Both directions restart at sequence 1 and the gateway follows the new socket.
    round_trip(dev, s2, 5, first_turn=True)


def test_backend_hello_delayed(gateway, backend, make_device):
    backend.hello_delay = 2.0
    dev = make_device(gateway)
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gateway, session)
    round_trip(dev, session, 3)


def test_backend_hello_withheld(gateway_factory, backend, make_device):
    gw = gateway_factory({"voice": {"backend_hello_timeout_s": 2}})
    backend.withhold_hello = True
    dev = make_device(gw)
    dev.send_hello()
    session = backend.wait_session_for(dev.mac)
    assert session.wait_closed(10), "the gateway gives up on a backend that never says hello"
    assert not session.closed_by_backend
    assert dev.json_messages("hello") == [], "no hello may reach the device without a backend session"


def test_py_xiaozhi_conversation(gateway, backend, make_device):
    dev = make_device(gateway, "py")
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gateway, session)
    round_trip(dev, session, 10)  # timestamps: py-xiaozhi leaves nonce bytes 8..11 (zero)
    assert {p.source for p in dev.audio_packets} == {(HOST, gateway.udp_port)}
    assert [f.timestamp for f in session.frames] == [0] * 10
    assert session.hello["audio_params"] == {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
    assert reply["audio_params"] == BACKEND_AUDIO_PARAMS
