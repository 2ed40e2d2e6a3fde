"""The MS500 device command relay end to end (seed 001, issue 13).

A real backend (a Python socket client, as the seed's backend is) sends
JSON commands to the relay's TCP listener; ESP32-like paho-mqtt devices
subscribe to `/service/ms500/{unit}/socket` and must receive exactly the
valid commands for their unit, byte for byte as the backend sent them.
Devices publish heartbeats on `/device/ms500/{id}/online`, go silent, and
`GET /api/devices` shows them online, then offline.

Every test runs twice: with the built-in broker (devices connect to
shardmq, the relay publishes in-process) and with mosquitto as the
external broker (devices connect to mosquitto, the relay is its client).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from clients import Client
from conftest import HOST, REPO_ROOT, free_port

UNITS = ["MS500-H090-EP-2549-0038", "MS500-H090-EP-2549-0039", "MS500-A"]
MD5 = "5d41402abc4b2a76b9719d911017c592"


def topic_of(unit: str) -> str:
    return f"/service/ms500/{unit}/socket"


# The seed's AIM example, and one command of every other type.
def commands() -> list[dict]:
    u0, u1, u2 = UNITS
    return [
        {"type": "AIM", "camera": "30eda0e27100", "unit": u0, "model_id": 5,
         "link": "/media/Organization1/AIModel/yolov8n.rpk", "md5": MD5},
        {"type": "FMW", "unit": u1, "firmware_id": "2.1.0", "link": "/media/fw.bin", "md5": MD5.upper()},
        {"type": "APP", "unit": u2, "application_id": 3, "link": "/media/app.bin", "md5": MD5},
        {"type": "CDN", "unit": u0, "camera": "c1", "coordinates": [[0, 0], [640, 0], [640, 480]]},
        {"type": "CFG", "unit": u1, "configs": {"threshold": 0.45, "name": "门口 {x}"}},
        {"type": "CTS", "unit": u2, "cs_picEnable": 1, "cs_vidFps": 15, "cs_quality": "high"},
        {"type": "WFI", "unit": u0, "wifi_enabled": True, "wifi_password": "p\"w}{d"},
        {"type": "SCS", "unit": u1},
        {"type": "UDS", "unit": u2, "settings": {"tz": "Asia/Shanghai", "led": False}},
        {"type": "FRS", "unit": u0, "reset_level": 1},
        {"type": "IMG", "unit": u1, "camera": "c2"},
        {"type": "RSR", "unit": u2},
    ]


# Malformed pieces a backend might send between commands, each refused
# while the connection stays usable.
MALFORMED = [
    b'{"type": "AIM", "unit": "MS500-A", "model_id": 5,, }',  # not JSON
    b'{"type": "XYZ", "unit": "MS500-A"}',  # unknown type
    b'{"type": "AIM", "unit": "MS500-A", "link": "/x", "md5": "' + MD5.encode() + b'"}',  # missing model_id
    b'{"unit": "MS500-A"}',  # missing type
    b'{"type": "SCS", "unit": "MS500-A/../#"}',  # topic injection
    b'{"type": "SCS", "unit": "+"}',
    b'{"type": "SCS", "unit": "a\\u0000b"}',
    b'{"type": "AIM", "unit": "MS500-A", "model_id": 5, "link": "/x", "md5": "nothex"}',
    b"hello relay\n",  # junk line
    b"[1, 2, 3]",  # not an object
]


def encode(cmd: dict, style: int) -> bytes:
    """The same command in the shapes backends send."""
    if style == 0:
        return json.dumps(cmd).encode()  # sock.send(json.dumps(cmd)): no separator
    if style == 1:
        return json.dumps(cmd, separators=(",", ":")).encode() + b"\n"
    if style == 2:
        return json.dumps(cmd, ensure_ascii=False, indent=2).encode() + b"\r\n"
    return b"  " + json.dumps(cmd, ensure_ascii=False).encode() + b"\t"


def pipelined_stream() -> tuple[bytes, dict[str, list[bytes]]]:
    """All 12 types with malformed pieces in between; and per unit, the
    exact bytes each device must receive, in order."""
    stream = b""
    expected: dict[str, list[bytes]] = {u: [] for u in UNITS}
    for i, cmd in enumerate(commands()):
        body = encode(cmd, i % 4)
        stream += body
        expected[cmd["unit"]].append(body.strip())
        bad = MALFORMED[i % len(MALFORMED)]
        stream += bad
    return stream, expected


# -- processes -----------------------------------------------------------------


def _spawn(cmd: list[str], log_path: Path) -> tuple[subprocess.Popen, object]:
    if shutil.which("setpriv"):
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, NO_COLOR="1"))
    return proc, log


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} at startup")
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                if s.getsockname() != s.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} not listening on {port} after {timeout}s")


class Mosquitto:
    def __init__(self, workdir: Path):
        if shutil.which("mosquitto") is None:
            pytest.fail("mosquitto not installed (Debian package `mosquitto`)")
        self.port = free_port()
        conf = workdir / f"mosquitto-{self.port}.conf"
        # max_queued_messages 0: no bound on what waits for a slow
        # subscriber (the default, 1000, drops the excess of a burst of
        # commands before paho has read them).
        conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\nlog_dest stderr\nlog_type all\n")
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        self.proc, self._log = _spawn(["mosquitto", "-c", str(conf)], self.log_path)
        _wait_port(self.port, self.proc, "mosquitto")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class Relay:
    """shardmq with the relay on, and where devices reach their broker."""

    def __init__(self, workdir: Path, mode: str, relay: dict | None = None):
        self.mqtt_port = free_port()
        self.relay_port = free_port()
        self.http_port = free_port()
        self.mosquitto = Mosquitto(workdir) if mode == "external" else None
        settings = {"enabled": True, "listen": f"{HOST}:{self.relay_port}", "device_timeout_s": 2}
        settings.update(relay or {})
        lines = ["[http]", f'listen = "{HOST}:{self.http_port}"', "[relay]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        if self.mosquitto:
            lines += ["[relay.external_broker]", f'address = "{HOST}:{self.mosquitto.port}"']
        conf = workdir / f"relay-{self.relay_port}.toml"
        conf.write_text("\n".join(lines) + "\n")
        binary = Path(os.environ.get("SHARDMQ_BIN", "target/debug/shardmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        self.log_path = workdir / f"relay-{self.relay_port}.log"
        cmd = [str(binary), "--listen", f"{HOST}:{self.mqtt_port}", "--shards", "2", "--config", str(conf),
               "--log", "info,shardmq=debug"]
        self.proc, self._log = _spawn(cmd, self.log_path)
        _wait_port(self.relay_port, self.proc, "shardmq")
        _wait_port(self.http_port, self.proc, "shardmq http")
        if self.mosquitto:
            assert self.wait_log("attached to external broker"), self.log_tail()

    @property
    def device_port(self) -> int:
        return self.mosquitto.port if self.mosquitto else self.mqtt_port

    @property
    def port(self) -> int:
        return self.relay_port

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return False

    def http(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}{path}", timeout=5) as r:
            return r.read()

    def devices(self) -> dict:
        return json.loads(self.http("/api/devices"))

    def metric(self, line_prefix: str) -> int:
        for line in self.http("/metrics").decode().splitlines():
            if line.startswith(line_prefix + " "):
                return int(float(line.split()[-1]))
        raise AssertionError(f"no metric {line_prefix}")

    def backend(self) -> socket.socket:
        s = socket.create_connection((HOST, self.relay_port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self) -> int | None:
        crashed = self.proc.poll()
        if crashed is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if self.mosquitto:
            self.mosquitto.stop()
        return crashed


@pytest.fixture(params=["builtin", "external"])
def relay_factory(request, tmp_path):
    made: list[Relay] = []
    clients: list[Client] = []
    # conftest attaches the log of everything in `_brokers` to a failure.
    request.node._brokers = made

    def start(relay: dict | None = None) -> Relay:
        r = Relay(tmp_path, request.param, relay)
        made.append(r)
        return r

    start.clients = clients
    yield start
    for c in clients:
        c.close()
    crashed = [(r, r.stop()) for r in made]
    for r, code in crashed:
        if code is not None:
            pytest.fail(f"shardmq exited with {code} during the test:\n{r.log_tail()}")


def device(factory, relay: Relay, client_id: str) -> Client:
    c = Client(HOST, relay.device_port, client_id)
    factory.clients.append(c)
    c.connect()
    return c


def esp32(factory, relay: Relay, unit: str) -> Client:
    """A device subscribed to its socket topic, as the firmware does."""
    c = device(factory, relay, f"esp32-{unit}")
    assert c.subscribe([(topic_of(unit), 1)]) == [1]
    return c


def received(dev: Client, count: int, timeout: float = 10.0) -> list[bytes]:
    msgs = dev.wait_messages(count, timeout)
    return [m.payload for m in msgs]


def send_split(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    """Sends `data` in pieces cut at `cuts`, each its own segment."""
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > last:
            sock.sendall(data[last:cut])
            time.sleep(0.002)
            last = cut


# -- tests ---------------------------------------------------------------------


def test_all_types_pipelined_reach_exactly_their_devices_byte_identical(relay_factory):
    relay = relay_factory()
    devs = {u: esp32(relay_factory, relay, u) for u in UNITS}
    bystander = esp32(relay_factory, relay, "MS500-OTHER")
    stream, expected = pipelined_stream()
    with relay.backend() as s:
        s.sendall(stream)
        for unit, dev in devs.items():
            got = received(dev, len(expected[unit]))
            assert got == expected[unit], unit
            assert all(m.qos == 1 for m in dev.messages)
    assert bystander.collect(0.3) == []
    for cmd in commands():
        assert relay.metric(f'shardmq_relay_commands_total{{type="{cmd["type"]}"}}') == 1
    # MALFORMED[i % 10] follows command i: two not-JSON, two unknown types,
    # three unit injections, a junk line and an array among them.
    assert relay.metric('shardmq_relay_rejected_total{reason="invalid_json"}') == 4
    assert relay.metric('shardmq_relay_rejected_total{reason="unknown_type"}') == 2
    assert relay.metric('shardmq_relay_rejected_total{reason="missing_field"}') == 2
    assert relay.metric('shardmq_relay_rejected_total{reason="invalid_unit"}') == 3
    assert relay.metric('shardmq_relay_rejected_total{reason="invalid_field"}') == 1
    assert "relay command refused" in relay.log_text()


def test_a_stream_split_at_every_byte_boundary_is_relayed_the_same(relay_factory):
    relay = relay_factory()
    devs = {u: esp32(relay_factory, relay, u) for u in UNITS}
    stream, expected = pipelined_stream()
    # One byte per segment: every boundary is a cut.
    with relay.backend() as s:
        send_split(s, stream, list(range(len(stream))))
        for unit, dev in devs.items():
            assert received(dev, len(expected[unit]), 20) == expected[unit], unit
    # And a connection per sample of cut pairs, whole streams each.
    rng = random.Random(13)
    rounds = 5
    for _ in range(rounds):
        with relay.backend() as s:
            send_split(s, stream, [rng.randrange(len(stream)) for _ in range(2)])
    for unit, dev in devs.items():
        want = expected[unit] * (rounds + 1)
        assert received(dev, len(want), 20) == want, unit


def test_replies_say_ok_with_the_topic_or_the_error_and_field(relay_factory):
    relay = relay_factory({"reply": True})
    dev = esp32(relay_factory, relay, UNITS[0])
    aim = json.dumps(commands()[0]).encode()
    bad_md5 = json.dumps({**commands()[0], "md5": "xyz"}).encode()
    with relay.backend() as s:
        s.sendall(aim + b'{"type":"FOO","unit":"u"}' + bad_md5 + b"garbage\n" +
                  b'{"type":"SCS","unit":"a/b"}\n' + aim)
        f = s.makefile("rb")
        lines = [json.loads(f.readline()) for _ in range(6)]
    assert lines[0] == {"ok": True, "topic": topic_of(UNITS[0])}
    assert lines[1]["ok"] is False and lines[1]["field"] == "type" and "FOO" in lines[1]["error"]
    assert lines[2]["ok"] is False and lines[2]["field"] == "md5"
    assert lines[3]["ok"] is False and lines[3]["field"] is None
    assert lines[4]["ok"] is False and lines[4]["field"] == "unit"
    assert lines[5] == lines[0]
    assert received(dev, 2) == [aim, aim]


def test_a_backend_that_never_reads_replies_does_not_stall_the_relay(relay_factory):
    relay = relay_factory({"reply": True, "reply_buffer_bytes": 2048})
    dev = esp32(relay_factory, relay, UNITS[1])
    scs = json.dumps({"type": "SCS", "unit": UNITS[1], "pad": "x" * 200}).encode() + b"\n"
    n = 3000
    lazy = relay.backend()
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        lazy.sendall(scs * n)  # never reads a reply
        got = received(dev, n, 30)
        assert len(got) == n
        # Another backend is served meanwhile, and gets its reply.
        with relay.backend() as other:
            other.sendall(scs)
            assert json.loads(other.makefile("rb").readline())["ok"] is True
        assert len(received(dev, n + 1)) == n + 1
        assert relay.metric("shardmq_relay_replies_dropped_total") > 0
    finally:
        lazy.close()


def test_heartbeats_go_online_then_offline_after_the_timeout(relay_factory):
    relay = relay_factory()
    beat = {"timestamp": 12345, "ip": "192.168.1.100", "network_type": "eth", "eth": True,
            "wifi": False, "lte": False, "cpu_temp": 45.5, "sense_temp": 42.3,
            "video_fps": 30.0, "spi_fps": 29.8}
    ids = ["A0B1C2D3E4F5", "A0B1C2D3E4F6"]
    devs = [device(relay_factory, relay, f"hb-{i}") for i in ids]
    for d, i in zip(devs, ids):
        d.publish(f"/device/ms500/{i}/online", json.dumps(beat), qos=0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and relay.devices()["online"] < 2:
        time.sleep(0.05)
    snap = relay.devices()
    assert snap["online"] == 2, snap
    first = snap["devices"][0]
    assert first["device_id"] == ids[0] and first["state"] == "online"
    assert first["heartbeat"]["ip"] == "192.168.1.100"
    assert first["heartbeat"]["cpu_temp"] == 45.5 and first["heartbeat"]["spi_fps"] == 29.8
    assert first["raw"] == beat
    # One keeps beating, the other goes silent past the 2 s timeout.
    # Waits for the state rather than a fixed time: a loaded machine may
    # tick late, never early.
    want = {ids[0]: "offline", ids[1]: "online"}
    deadline = time.monotonic() + 15
    while True:
        devs[1].publish(f"/device/ms500/{ids[1]}/online", json.dumps(beat), qos=0)
        time.sleep(0.5)
        snap = relay.devices()
        states = {d["device_id"]: d["state"] for d in snap["devices"]}
        if states == want or time.monotonic() > deadline:
            break
    assert states == want, snap
    assert relay.metric('shardmq_relay_devices{state="offline"}') == 1
    log = relay.log_text()
    assert log.count("MS500 device offline") == 1, log
    assert log.count("MS500 device online") == 2
    # Back online with its next heartbeat.
    devs[0].publish(f"/device/ms500/{ids[0]}/online", json.dumps(beat), qos=0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and relay.devices()["online"] < 2:
        time.sleep(0.05)
    assert relay.devices()["online"] == 2


def test_a_client_taking_the_relays_own_id_does_not_stop_the_relay(relay_factory):
    relay = relay_factory()
    dev = esp32(relay_factory, relay, UNITS[0])
    aim = json.dumps(commands()[0]).encode()
    # The in-process client's id is shardmq-relay-local-<n> for the first
    # n its shard owns; take over every candidate.
    intruders = [device(relay_factory, relay, f"shardmq-relay-local-{n}") for n in range(8)]
    if relay.mosquitto is None:
        assert relay.wait_log("relay's broker connection was taken over")
    # A command sent while the relay reconnects waits for it, not lost.
    with relay.backend() as s:
        s.sendall(aim)
        assert received(dev, 1) == [aim]
    for c in intruders:
        c.close()
    with relay.backend() as s:
        s.sendall(aim)
        assert received(dev, 2) == [aim, aim]


def test_a_backend_closing_inside_a_command_is_counted_and_nothing_is_sent(relay_factory):
    relay = relay_factory()
    dev = esp32(relay_factory, relay, UNITS[0])
    aim = json.dumps(commands()[0]).encode()
    with relay.backend() as s:
        s.sendall(aim + aim[:40])
    assert relay.wait_log("closed its connection inside a command")
    assert relay.metric('shardmq_relay_rejected_total{reason="invalid_json"}') == 1
    assert received(dev, 1) == [aim]
    assert dev.collect(0.3) == dev.messages and len(dev.messages) == 1
