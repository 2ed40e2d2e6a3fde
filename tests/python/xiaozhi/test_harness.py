"""The test harness itself, without a gateway: the chat backend against a
plain WebSocket client, and the two device simulators' UDP framing and
checks against a stand-in server socket and against each other."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
from websockets.sync.client import connect as ws_connect

import crypto
from backend import BACKEND_AUDIO_PARAMS, GATEWAY_PATH, Frame
from device import FirmwareDevice, PyXiaozhiDevice, dumps
from gateway import deep_merge, parse_prometheus, raw_connack, to_toml

KEY = bytes.fromhex("40711a81786b35f5f127fb31c32841b8")
NONCE = bytes.fromhex("010000007014e57e0000000000000000")

# §4.1, byte for byte.
FIRMWARE_HELLO = (
    '{"type":"hello","version":3,"transport":"udp",'
    '"features":{"aec":true,"mcp":true,"glyph_push":true},'
    '"text_font":{"bundle":"noto-v1","charset":"common","size":20,"bpp":4},'
    '"audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
)


def gateway_headers(mac="aa:bb:cc:dd:ee:ff", uuid="u-1"):
    return {"device-id": mac, "client-id": uuid, "protocol-version": "2", "authorization": "Bearer test-token"}


def gateway_frame(payload: bytes, timestamp: int) -> bytes:
    frame = bytearray(16)
    struct.pack_into("!II", frame, 8, timestamp, len(payload))
    return bytes(frame) + payload


# -- chat backend ------------------------------------------------------------------


def test_backend_hello_echo_and_stop(backend):
    with ws_connect(backend.url, additional_headers=gateway_headers()) as ws:
        ws.send(json.dumps({"type": "hello", "version": 2, "transport": "websocket", "audio_params": {"format": "opus"}}))
        reply = json.loads(ws.recv(5))
        assert reply["type"] == "hello" and reply["transport"] == "websocket"
        assert reply["audio_params"] == BACKEND_AUDIO_PARAMS
        assert len(reply["session_id"]) == 8 and int(reply["session_id"], 16) >= 0

        ws.send(gateway_frame(b"abc", 1234))
        ws.send(gateway_frame(b"defg", 1294))
        assert json.loads(ws.recv(5)) == {"type": "tts", "state": "start", "session_id": reply["session_id"]}
        first, second = ws.recv(5), ws.recv(5)
        # SRV style: [0]=1, [2..4]=u16 len, [4..8]=seq, [8..12]=ts, [12..16]=u32 len.
        assert first == struct.pack("!BBHIII", 1, 0, 3, 1, 1234, 3) + b"abc"
        assert second == struct.pack("!BBHIII", 1, 0, 4, 2, 1294, 4) + b"defg"

        ws.send(json.dumps({"session_id": reply["session_id"], "type": "listen", "state": "stop"}))
        assert json.loads(ws.recv(5))["state"] == "stop"
        ws.send(gateway_frame(b"x", 5))  # a new turn starts with tts start again
        assert json.loads(ws.recv(5))["state"] == "start"
        assert Frame.parse(ws.recv(5)).payload == b"x"

    s = backend.wait_session(0)
    assert s.wait_closed(5) and not s.closed_by_backend
    assert s.path == GATEWAY_PATH
    assert {k: s.headers[k] for k in gateway_headers()} == gateway_headers()
    assert s.hello["version"] == 2
    assert [(f.timestamp, f.payload) for f in s.frames] == [(1234, b"abc"), (1294, b"defg"), (5, b"x")]
    assert [f.payload for f in s.sent_frames] == [b"abc", b"defg", b"x"]


def test_backend_close_send_and_lookup(backend):
    with ws_connect(backend.url, additional_headers=gateway_headers("02:00:00:00:00:01")) as ws:
        ws.send(json.dumps({"type": "hello", "version": 2, "transport": "websocket"}))
        ws.recv(5)
        s = backend.wait_session_for("02:00:00:00:00:01")
        s.send_json({"type": "stt", "text": "你好"})
        assert json.loads(ws.recv(5)) == {"type": "stt", "text": "你好"}
        s.send_audio(b"\x01\x02", 77)
        assert Frame.parse(ws.recv(5)) .payload == b"\x01\x02"
        s.close()
        with pytest.raises(Exception):
            ws.recv(5)
    assert s.wait_closed(5) and s.closed_by_backend and s.close_code == 1000


def test_backend_delays_or_withholds_hello(backend):
    backend.hello_delay = 0.5
    with ws_connect(backend.url) as ws:
        ws.send(json.dumps({"type": "hello"}))
        assert json.loads(ws.recv(5))["type"] == "hello"
    backend.hello_delay = 0
    backend.withhold_hello = True
    with ws_connect(backend.url) as ws:
        ws.send(json.dumps({"type": "hello"}))
        with pytest.raises(TimeoutError):
            ws.recv(1)
    assert backend.wait_sessions(2)[1].hello == {"type": "hello"}


def test_backend_drop_without_close_frame(backend):
    with ws_connect(backend.url) as ws:
        s = backend.wait_session(0)
        s.drop()
        with pytest.raises(Exception):
            ws.recv(5)
    assert s.wait_closed(5)


# -- device simulators, UDP ------------------------------------------------------------


@pytest.fixture
def udp_server():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def server_hello(port: int, key=KEY, nonce=NONCE, **udp_overrides) -> dict:
    udp = {"server": "127.0.0.1", "port": port, "encryption": "aes-128-ctr", "key": key.hex(), "nonce": nonce.hex()}
    udp.update(udp_overrides)
    return {"type": "hello", "version": 3, "session_id": "s1", "transport": "udp", "udp": udp, "audio_params": BACKEND_AUDIO_PARAMS}


def open_device(cls, port: int):
    dev = cls("127.0.0.1", 1, "GID_test@@@02_00_00_00_00_09@@@u-9")
    dev._handle_server_hello(server_hello(port))
    dev.wait_hello(1)
    return dev


def test_firmware_hello_message_is_byte_identical():
    assert FirmwareDevice("127.0.0.1", 1, "GID_test@@@aa_bb_cc_dd_ee_ff@@@u").hello_message() == FIRMWARE_HELLO


def test_pyxiaozhi_hello_message():
    msg = json.loads(PyXiaozhiDevice("127.0.0.1", 1, "GID_test@@@aa_bb_cc_dd_ee_ff@@@u").hello_message())
    assert (msg["type"], msg["version"], msg["transport"], msg["features"]) == ("hello", 3, "udp", {"mcp": True})


@pytest.mark.parametrize(
    "change",
    [
        {"transport": "websocket"},
        {"udp": None},
        {"udp.server": 1},
        {"udp.port": "8884"},
        {"udp.port": 0},
        {"udp.port": 65536},
        {"udp.key": "00" * 15},
        {"udp.key": "zz" * 16},
        {"udp.nonce": "0" * 31},
        {"udp.nonce": None},
    ],
)
def test_firmware_ignores_invalid_server_hello(change):
    hello = server_hello(8884)
    for path, value in change.items():
        target, key = (hello["udp"], path[4:]) if path.startswith("udp.") else (hello, path)
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    dev = FirmwareDevice("127.0.0.1", 1, "GID_test@@@aa_bb_cc_dd_ee_ff@@@u")
    dev._handle_server_hello(hello)
    assert not dev._hello_event.is_set()
    assert len(dev.ignored_hellos) == 1


def test_firmware_accepts_upper_case_hex():
    dev = FirmwareDevice("127.0.0.1", 1, "GID_test@@@aa_bb_cc_dd_ee_ff@@@u")
    hello = server_hello(8884)
    hello["udp"]["key"] = KEY.hex().upper()
    dev._handle_server_hello(hello)
    assert dev._hello_event.is_set() and dev.key == KEY


@pytest.mark.parametrize("cls", [FirmwareDevice, PyXiaozhiDevice])
def test_device_uplink_framing(cls, udp_server):
    dev = open_device(cls, udp_server.getsockname()[1])
    try:
        dev.send_audio(b"frame-one", timestamp=960)
        dev.send_audio(b"frame-two!", timestamp=1020)
        packets = [udp_server.recvfrom(2048) for _ in range(2)]
        (d1, src1), (d2, src2) = packets
        h1, p1 = crypto.open_packet(KEY, d1)
        h2, p2 = crypto.open_packet(KEY, d2)
        assert (p1, p2) == (b"frame-one", b"frame-two!")
        assert (h1.seq, h2.seq) == (1, 2) and (h1.length, h2.length) == (9, 10)
        assert h1.conn_id == 0x7014E57E and h1.type == 1
        expected_ts = (960, 1020) if cls is FirmwareDevice else (0, 0)  # py-xiaozhi keeps nonce bytes 8..11
        assert (h1.timestamp, h2.timestamp) == expected_ts
        assert src1 == src2  # one socket per conversation
    finally:
        dev.close()


def test_firmware_new_socket_per_conversation(udp_server):
    port = udp_server.getsockname()[1]
    dev = open_device(FirmwareDevice, port)
    try:
        dev.send_audio(b"a")
        _, src1 = udp_server.recvfrom(2048)
        dev._handle_server_hello(server_hello(port))
        dev.wait_hello(1)
        dev.send_audio(b"b")
        data, src2 = udp_server.recvfrom(2048)
        assert src1 != src2
        assert crypto.unpack_header(data).seq == 1  # counters reset on each hello
    finally:
        dev.close()


def test_firmware_downlink_checks(udp_server):
    dev = open_device(FirmwareDevice, udp_server.getsockname()[1])
    try:
        dev.send_audio(b"hi")
        _, addr = udp_server.recvfrom(2048)

        def server_packet(payload, seq, ts=0, **kw):
            header = bytearray(crypto.pack_header(len(payload), 0x7014E57E, ts, seq))
            if "type" in kw:
                header[0] = kw["type"]
            if "length" in kw:
                header[2:4] = kw["length"].to_bytes(2, "big")
            return crypto.seal(KEY, bytes(header), payload)

        send = lambda data: udp_server.sendto(data, addr)  # noqa: E731
        send(server_packet(b"zero", 0))  # seq 0: dropped
        send(b"\x01\x00\x00")  # too short
        send(server_packet(b"type2", 1, type=2))
        send(server_packet(b"len", 1, length=9))  # payload_len != datagram - 16
        send(server_packet(b"long", 1) + b"x")
        send(server_packet(b"one", 1, 60))
        send(server_packet(b"one again", 1))  # replay
        send(server_packet(b"three", 3, 180))  # gap: accepted with a warning
        send(server_packet(b"two", 2))  # older: dropped
        # From another address: the connected socket never hears it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(server_packet(b"spoof", 4), addr)
        send(server_packet(b"four", 4, 240))
        got = [dev.recv_audio(5) for _ in range(3)]
        assert got == [(60, b"one"), (180, b"three"), (240, b"four")]
        time.sleep(0.2)
        assert dict(dev.dropped) == {"old_seq": 3, "too_short": 1, "bad_type": 1, "bad_length": 2}
        assert dev.sequence_gaps == 1
    finally:
        dev.close()


def test_pyxiaozhi_downlink_accepts_anything_from_anyone(udp_server):
    dev = open_device(PyXiaozhiDevice, udp_server.getsockname()[1])
    try:
        dev.send_audio(b"hi")
        _, addr = udp_server.recvfrom(2048)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(crypto.seal(KEY, crypto.pack_header(5, 1, 0, 0), b"other"), addr)
            assert dev.recv_audio_packet(5).opus == b"other"
            udp_server.sendto(b"short", addr)
            udp_server.sendto(crypto.seal(KEY, crypto.pack_header(3, 1, 0, 7), b"abc"), addr)
            pkt = dev.recv_audio_packet(5)
            assert pkt.opus == b"abc" and pkt.source == udp_server.getsockname()
            assert dev.dropped["too_short"] == 1
    finally:
        dev.close()


def test_simulators_parse_each_others_packets(udp_server):
    port = udp_server.getsockname()[1]
    fw = open_device(FirmwareDevice, port)
    py = open_device(PyXiaozhiDevice, port)
    try:
        # Each simulator's datagram, as built for the server, is one the other accepts.
        fw_packet = fw.craft(b"from firmware", seq=1, timestamp=42)
        py_packet = py.craft(b"from py-xiaozhi", seq=1)
        py._on_datagram(fw_packet, ("127.0.0.1", port))
        fw._on_datagram(py_packet, ("127.0.0.1", port))
        assert py.audio_packets[-1].opus == b"from firmware" and py.audio_packets[-1].header.timestamp == 42
        assert fw.audio_packets[-1].opus == b"from py-xiaozhi" and fw.audio_packets[-1].header.seq == 1
    finally:
        fw.close()
        py.close()


def test_attacker_socket_is_a_different_source(udp_server):
    dev = open_device(FirmwareDevice, udp_server.getsockname()[1])
    try:
        dev.send_audio(b"real")
        _, real = udp_server.recvfrom(2048)
        fake = dev.attacker_send(dev.craft(b"fake", seq=2))
        data, src = udp_server.recvfrom(2048)
        assert src == fake != real
        assert crypto.open_packet(KEY, data)[1] == b"fake"
        assert dev.local_seq == 1  # crafting leaves the counter alone
    finally:
        dev.close()


# -- config and metrics helpers ------------------------------------------------------------


def test_toml_and_merge():
    import tomllib

    base = {"server": {"shards": 2}, "voice": {"enabled": True, "chat_servers": ["ws://a"], "ota": {"intranet": {"mqtt_endpoint": "h:1"}}}}
    merged = deep_merge(base, {"voice": {"chat_servers": ["ws://b"], "signature_key": 'k"\\', "ota": {"group_id": "G"}}, "server": {"shards": None}})
    assert tomllib.loads(to_toml(merged)) == {
        "server": {},
        "voice": {"enabled": True, "chat_servers": ["ws://b"], "signature_key": 'k"\\', "ota": {"group_id": "G", "intranet": {"mqtt_endpoint": "h:1"}}},
    }


def test_prometheus_parser():
    text = (
        "# HELP shardmq_voice_udp_dropped_total Dropped datagrams\n"
        "# TYPE shardmq_voice_udp_dropped_total counter\n"
        'shardmq_voice_udp_dropped_total{reason="replayed"} 3\n'
        'shardmq_voice_udp_dropped_total{reason="too_short",shard="1"} 1\n'
        "shardmq_voice_udp_forwarded_total 42\n"
    )
    m = parse_prometheus(text)
    assert m["shardmq_voice_udp_dropped_total"][frozenset({("reason", "replayed")})] == 3
    assert m["shardmq_voice_udp_forwarded_total"][frozenset()] == 42


def test_dumps_is_compact_utf8():
    assert dumps({"a": "你", "b": [1, True]}) == '{"a":"你","b":[1,true]}'


def test_mosquitto_fixture_and_raw_connect(mosquitto):
    assert raw_connack(mosquitto.host, mosquitto.port, "harness-probe", "user", "pass") == bytes([0x20, 2, 0, 0])
    assert mosquitto.wait_log("harness-probe", 5)
