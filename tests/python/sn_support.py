"""A shardmq broker with its MQTT-SN gateway on, and MQTT-SN clients for it.

Used by the test_sn*.py suites. Only shardmq: mosquitto has no MQTT-SN
gateway, so with SHARDMQ_TEST_PEER=mosquitto these suites are skipped.

Clients come in two kinds: `LibClient`, the third-party MQTT-SN client
library (mqtt-sn-12), for the flows it implements, and `sn_raw.SnRaw`,
messages written by hand from the specification, for the rest.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from mqttsn12.client.MqttSnClient import MqttSnClient, MqttSnListener, MqttSnMessage

import sn_raw
from conftest import HOST, PEER, Broker, free_port

PREDEFINED = {1: "sensors/predefined/one", 2: "sensors/predefined/two"}

# mosquitto_passwd's `$7$` line for alice / secret (as in test_websocket.py).
ALICE = "alice:$7$101$fWcz3ZIazCmPS96M$QPQuO7fiu8nvrmAL9nv1R49JEJcNJxksYWR2PcI17zBd01C1zxcCPfhN/FsNiqsdYmpd7z8oqADYMyRW/vxwNA=="


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


class SnBroker(Broker):
    """shardmq with `[mqtt_sn]` on a free UDP port and `[http]` for /metrics."""

    def __init__(
        self,
        workdir: Path,
        shards: int,
        sn: dict | None = None,
        mqtt: dict | None = None,
        extra_toml: str = "",
    ):
        if PEER != "shardmq":
            pytest.skip("the MQTT-SN gateway tests run against shardmq only")
        self.shards = shards
        self.sn_port = free_udp_port()
        self.http_port = free_port()
        self._sn = {"enabled": True, "listen": f"{HOST}:{self.sn_port}", **(sn or {})}
        self._mqtt = mqtt or {}
        self._extra = extra_toml
        super().__init__(workdir, None)
        self._wait_http()
        self._wait_gateway()

    def _command(self, workdir: Path, config: dict) -> list[str]:
        cmd = super()._command(workdir, config)
        i = cmd.index("--shards")
        cmd[i + 1] = str(self.shards)
        lines = []
        if self._mqtt:
            lines += ["[mqtt]", *(f"{k} = {_toml(v)}" for k, v in self._mqtt.items())]
        lines += ["[mqtt_sn]", *(f"{k} = {_toml(v)}" for k, v in self._sn.items())]
        for pid, topic in PREDEFINED.items():
            lines += ["[[mqtt_sn.predefined]]", f"id = {pid}", f'topic = "{topic}"']
        lines += ["[http]", f'listen = "{HOST}:{self.http_port}"', self._extra]
        conf = workdir / f"shardmq-sn-{self.port}.toml"
        conf.write_text("\n".join(lines) + "\n")
        return cmd + ["--config", str(conf)]

    def log_tail(self, lines: int = 60) -> str:
        # Readable after stop() too: a broker that exits at start-up is
        # reported with its log.
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_http(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.http_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"/metrics not served on {self.http_port}:\n{self.log_tail()}")

    def _wait_gateway(self, timeout: float = 15.0) -> None:
        """Until a SEARCHGW is answered: the UDP sockets are bound."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, 0))
            while time.monotonic() < deadline:
                probe.sendto(sn_raw.searchgw(), (HOST, self.sn_port))
                probe.settimeout(0.2)
                try:
                    data, _ = probe.recvfrom(512)
                    if len(data) > 1 and data[1] == sn_raw.GWINFO:
                        return
                except OSError:
                    pass
        pytest.fail(f"the gateway answered no SEARCHGW on {self.sn_port}:\n{self.log_tail()}")

    # -- /metrics ----------------------------------------------------------

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, series: str) -> float:
        """A series' value, e.g. `shardmq_sn_dropped_total{reason="too_short"}`; 0 if absent."""
        total, seen = 0.0, False
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                total += float(line.split()[-1])
                seen = True
        if not seen and "{" not in series:
            raise AssertionError(f"no metric {series!r} in /metrics")
        return total

    def wait_metric(self, series: str, predicate, timeout: float = 10.0) -> float:
        """Poll until `predicate(value)`; returns the last value read."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.metric(series)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def raw(self, node_id: bytes | None = None) -> sn_raw.SnRaw:
        return sn_raw.SnRaw(HOST, self.sn_port, node_id)


class Inbox(MqttSnListener):
    def __init__(self):
        self.messages: list[MqttSnMessage] = []

    def message_arrived(self, msg: MqttSnMessage) -> None:
        self.messages.append(msg)


class LibClient:
    """The mqtt-sn-12 library's client, synchronous as the library is.

    Downlink through `poll` is for QoS 0 subscriptions: the library's
    `polling` compares the PUBLISH's QoS (0-2) with the flag constant
    (0x20) and so never sends PUBACK, nor PUBREC at QoS 2.
    """

    def __init__(self, broker: SnBroker, client_id: str, keepalive: int = 60, clean: bool = True, will=None):
        self.c = MqttSnClient()
        self.c.set_timeout(5)
        self.c.set_client_id(client_id)
        self.c.set_keep_alive(keepalive)
        self.c.set_clean_session(clean)
        if will is not None:
            topic, message, qos, retain = will
            self.c.set_will(topic, message, qos, retain)
        self.c.open(HOST, broker.sn_port)
        self.inbox = Inbox()

    def poll(self, count: int, timeout: float = 5.0) -> list[MqttSnMessage]:
        """Poll the socket until `count` messages arrived (or the timeout); returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.inbox.messages) < count and time.monotonic() < deadline:
            before = len(self.inbox.messages)
            self.c.polling()
            if len(self.inbox.messages) == before:
                time.sleep(0.02)
        return list(self.inbox.messages)

    def close(self) -> None:
        self.c.close()


def topics_payloads(messages) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in messages]


def receive(r: sn_raw.SnRaw, count: int, names: dict[int, str] | None = None, timeout: float = 5.0):
    """`count` PUBLISHes from the gateway as (topic, payload, qos, retain),
    acknowledging each and any REGISTER before it as a client does (§6.10)."""
    names = {} if names is None else names
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            p = r.recv(remaining)
        except TimeoutError:
            break
        if p.mtype == sn_raw.REGISTER:
            names[p.topic_id] = p.data.decode()
            r.ack(p)
        elif p.mtype == sn_raw.PUBLISH:
            if p.topic_type == sn_raw.TOPIC_SHORT:
                topic = p.topic_id.to_bytes(2, "big").decode()
            elif p.topic_type == sn_raw.TOPIC_PREDEFINED:
                topic = PREDEFINED.get(p.topic_id, f"<predefined {p.topic_id}>")
            else:
                topic = names.get(p.topic_id, f"<unregistered {p.topic_id}>")
            got.append((topic, p.data, p.qos, p.retain))
            r.ack(p)
        else:
            raise AssertionError(f"unexpected {p} while waiting for PUBLISH")
    return got


def watcher(make_client, broker, client_id: str, filters: list[tuple[str, int]]):
    c = make_client(client_id, target=broker)
    c.connect()
    c.subscribe(filters)
    return c


@pytest.fixture(params=[1, 4], ids=["1shard", "4shards"])
def shards(request) -> int:
    return request.param


@pytest.fixture
def sn_factory(request, tmp_path, shards):
    """Start SN brokers (`sn=`, `mqtt=`, `extra_toml=`); all stopped at teardown."""
    # broker_factory (which make_client needs) resets the list of brokers
    # whose logs a failing test's report shows: set up first.
    request.getfixturevalue("broker_factory")
    started: list[SnBroker] = []

    def start(**kw) -> SnBroker:
        b = SnBroker(tmp_path, shards, **kw)
        request.node._brokers.append(b)
        started.append(b)
        return b

    yield start
    crashed = [(b, b.stop()) for b in started]
    # Stopped here: broker_factory's own teardown, which comes next, must
    # not stop them again.
    request.node._brokers = [b for b in request.node._brokers if b not in started]
    for b, code in crashed:
        if code is not None:
            pytest.fail(f"broker exited with code {code} during the test:\n{b.log_tail()}")


@pytest.fixture
def sn_broker(sn_factory) -> SnBroker:
    return sn_factory()


@pytest.fixture
def sn_clients():
    """Raw and library clients, closed at teardown: `sn_clients(x)` registers x."""
    made = []

    def keep(c):
        made.append(c)
        return c

    yield keep
    for c in made:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture
def raw(request, sn_clients):
    """A raw client factory, on the default SN broker unless `target` is given."""

    def make(node_id: bytes | None = None, target: SnBroker | None = None) -> sn_raw.SnRaw:
        b = target or request.getfixturevalue("sn_broker")
        return sn_clients(b.raw(node_id))

    return make


@pytest.fixture
def lib(request, sn_clients):
    """A library client factory; connects unless `connect=False`."""

    def make(client_id: str, target: SnBroker | None = None, connect: bool = True, **kw) -> LibClient:
        b = target or request.getfixturevalue("sn_broker")
        c = sn_clients(LibClient(b, client_id, **kw))
        if connect:
            c.c.send_connect()
        return c

    return make


def quiet_lib_logging() -> None:
    # The library warns on every unexpected message it skips; keep reports short.
    logging.getLogger("mqttsn12").setLevel(logging.ERROR)
