"""Processes under test: shardmq with the voice gateway on, and mosquitto.

`Gateway` starts shardmq (`SHARDMQ_BIN`, default target/debug/shardmq) with a
TOML file written from a nested dict, on free loopback ports, and waits until
it answers an MQTT CONNECT. `Mosquitto` starts a real mosquitto for the
external broker mode. Both keep their output in a log file that the conftest
attaches to a failing test's report.

Config dicts mirror the TOML tables: {"server": {...}, "mqtt": {...},
"http": {...}, "voice": {..., "ota": {..., "intranet": {...}},
"external_broker": {...}}}. A user dict is merged over the defaults below,
key by key; a value of None removes the key.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
BACKEND_TOKEN = "test-token"
GROUP_ID = "GID_test"


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- config --------------------------------------------------------------------


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string takes JSON's escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def to_toml(cfg: dict, prefix: str = "") -> str:
    scalars = [(k, v) for k, v in cfg.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in cfg.items() if isinstance(v, dict)]
    lines = []
    if prefix and (scalars or not tables):
        lines.append(f"[{prefix}]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, sub in tables:
        text += ("\n" if text else "") + to_toml(sub, f"{prefix}.{key}" if prefix else key)
    return text


@dataclass(frozen=True)
class Ports:
    mqtt: int
    http: int
    udp: int
    tls: int  # free for a `[tls]` listener; used only when the config has one


def default_config(ports: Ports, chat_servers: list[str], shards: int) -> dict:
    cfg: dict = {
        "server": {"shards": shards},
        "mqtt": {"enabled": True, "listen": f"{HOST}:{ports.mqtt}"},
        "http": {"listen": f"{HOST}:{ports.http}"},
        "voice": {
            "enabled": True,
            "signature_key": "",
            "udp_listen": f"{HOST}:{ports.udp}",
            "public_host": HOST,
            "public_port": 0,
            "steering": "bpf",
            "chat_servers": list(chat_servers),
            "backend_token": BACKEND_TOKEN,
            "ota": {"group_id": GROUP_ID, "intranet": {"mqtt_endpoint": f"{HOST}:{ports.mqtt}"}},
        },
    }
    log = os.environ.get("SHARDMQ_TEST_LOG")
    if log:
        cfg["server"]["log"] = log
    return cfg


# -- processes ------------------------------------------------------------------


def connect_packet(client_id: str, username: str | None = None, password: str | None = None, keepalive: int = 30) -> bytes:
    """A 3.1.1 CONNECT with clean session."""

    def field(value: str) -> bytes:
        data = value.encode()
        return struct.pack("!H", len(data)) + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = field("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + field(client_id)
    if username is not None:
        body += field(username)
    if password is not None:
        body += field(password)
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return bytes([0x10]) + length + body


def raw_connack(host: str, port: int, client_id: str, username: str | None = None, password: str | None = None, timeout: float = 5.0) -> bytes:
    """The first 4 bytes the server answers a CONNECT with (fewer if it closes first)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(connect_packet(client_id, username, password))
        data = b""
        while len(data) < 4:
            try:
                chunk = s.recv(4 - len(data))
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        return data


def _mqtt_probe(host: str, port: int, client_id: str = "voice-test-probe") -> bool:
    """True once the port answers a 3.1.1 CONNECT with a CONNACK."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            if s.getsockname() == s.getpeername():
                return False  # TCP simultaneous open onto ourselves, not the server
            s.sendall(connect_packet(client_id))
            data = b""
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    return False
                data += chunk
            if data[0] != 0x20:
                return False
            s.sendall(b"\xe0\x00")  # DISCONNECT
            return True
    except OSError:
        return False


class _Process:
    name = "process"

    def _spawn(self, cmd: list[str], log_path: Path) -> None:
        # --pdeathsig: the process dies with the test run even if pytest is killed.
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def log_text(self) -> str:
        try:
            self._log.flush()
        except ValueError:
            pass
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "<empty log>"

    def _fail_start(self, why: str) -> None:
        self.stop()
        pytest.fail(f"{self.name} {why}\ncommand: {' '.join(self.cmd)}\n{self.log_tail()}")

    def stop(self) -> int | None:
        """Stop the process; returns its exit code if it had exited on its own."""
        crashed = self.proc.poll()
        if crashed is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        return crashed


@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


class Gateway(_Process):
    def __init__(
        self,
        workdir: Path,
        config: dict | Callable[[Ports], dict] | None = None,
        *,
        chat_servers: list[str] = (),
        shards: int = 2,
        ready_timeout: float = 20.0,
    ):
        self.host = HOST
        self.ports = Ports(free_tcp_port(), free_tcp_port(), free_udp_port(), free_tcp_port())
        user = config(self.ports) if callable(config) else (config or {})
        self.config = deep_merge(default_config(self.ports, list(chat_servers), shards), user)
        self.name = f"shardmq (mqtt {self.ports.mqtt}, udp {self.ports.udp})"
        binary = Path(os.environ.get("SHARDMQ_BIN", "target/debug/shardmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        if not binary.exists():
            # A failure, not a skip: a missing binary must not read as green.
            pytest.fail(f"shardmq binary {binary} not found; run `cargo build` or set SHARDMQ_BIN")
        self.config_path = workdir / f"shardmq-voice-{self.ports.mqtt}.toml"
        self.config_path.write_text(to_toml(self.config))
        self._spawn([str(binary), "--config", str(self.config_path)], workdir / f"shardmq-voice-{self.ports.mqtt}.log")
        self._wait_ready(ready_timeout)

    # -- derived settings ------------------------------------------------------------

    @property
    def mqtt_enabled(self) -> bool:
        return bool(self.config.get("mqtt", {}).get("enabled", True))

    @property
    def mqtt_port(self) -> int:
        return self.ports.mqtt

    @property
    def udp_port(self) -> int:
        return self.ports.udp

    @property
    def tls_port(self) -> int:
        """The `[tls]` listener's port (configured from `ports.tls`)."""
        listen = self.config.get("tls", {}).get("listen", "")
        return int(listen.rsplit(":", 1)[1]) if listen else self.ports.tls

    @property
    def http_listen(self) -> str:
        return self.config.get("http", {}).get("listen", "")

    @property
    def http_base(self) -> str:
        return f"http://{self.http_listen}"

    @property
    def signature_key(self) -> str:
        return self.config.get("voice", {}).get("signature_key", "")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        mqtt_ok = not self.mqtt_enabled
        http_ok = not self.http_listen
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail_start(f"exited with {self.proc.returncode} at startup")
            if not mqtt_ok:
                mqtt_ok = _mqtt_probe(self.host, self.ports.mqtt)
            if mqtt_ok and not http_ok:
                try:
                    self.http("GET", "/metrics", timeout=1.0)
                    http_ok = True
                except OSError:
                    pass
            if mqtt_ok and http_ok:
                return
            time.sleep(0.05)
        self._fail_start(f"not ready after {timeout}s (mqtt ready: {mqtt_ok}, http ready: {http_ok})")

    # -- HTTP -----------------------------------------------------------------------------

    def http(self, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 10.0) -> HttpResponse:
        """One request; any status is returned (not raised). OSError if nothing answers."""
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.http_base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as err:
            return HttpResponse(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def metrics(self) -> dict[str, dict[frozenset, float]]:
        resp = self.http("GET", "/metrics")
        assert resp.status == 200, f"GET /metrics: {resp.status} {resp.body[:200]!r}"
        return parse_prometheus(resp.body.decode())

    def metric(self, name: str, **labels) -> float:
        """Sum of the series of `name` that carry `labels` (0 if none, as a counter that never moved)."""
        want = set(labels.items())
        return sum(v for ls, v in self.metrics().get(name, {}).items() if want <= ls)

    def udp_counters(self) -> dict[str, float]:
        """{reason: dropped count} plus "forwarded", from /metrics."""
        m = self.metrics()
        out: dict[str, float] = {}
        for labels, value in m.get("shardmq_voice_udp_dropped_total", {}).items():
            reason = dict(labels).get("reason", "")
            out[reason] = out.get(reason, 0.0) + value  # summed over any other label (per shard, ...)
        out["forwarded"] = sum(m.get("shardmq_voice_udp_forwarded_total", {}).values())
        return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, dict[frozenset, float]]:
    out: dict[str, dict[frozenset, float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, _, labels, value = m.groups()
        pairs = frozenset((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in _LABEL.findall(labels or ""))
        try:
            out.setdefault(name, {})[pairs] = float(value)
        except ValueError:
            continue
    return out


class Mosquitto(_Process):
    """A real mosquitto on a free loopback port, anonymous access, every log type."""

    def __init__(self, workdir: Path, ready_timeout: float = 10.0):
        if shutil.which("mosquitto") is None:
            pytest.fail("mosquitto not installed (Debian package `mosquitto`)")
        self.host = HOST
        self.port = free_tcp_port()
        self.name = f"mosquitto ({self.port})"
        conf = workdir / f"mosquitto-{self.port}.conf"
        # Logging to stderr (redirected to our file): as root, mosquitto drops
        # to its own user and could not write a log file in the test's
        # directory, and its stdout is block-buffered when not a terminal.
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} {HOST}",
                    "allow_anonymous true",
                    "persistence false",
                    "log_dest stderr",
                    "log_type all",
                    "connection_messages true",
                ]
            )
            + "\n"
        )
        self._spawn(["mosquitto", "-c", str(conf)], workdir / f"mosquitto-{self.port}.log")
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail_start(f"exited with {self.proc.returncode} at startup")
            if _mqtt_probe(self.host, self.port):
                return
            time.sleep(0.05)
        self._fail_start(f"not ready after {ready_timeout}s")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return False
