"""Running under a service manager: sd_notify, SIGTERM drain, SIGHUP reload.

A fake service manager is a unix datagram socket the test binds and names
in NOTIFY_SOCKET, as systemd does; the broker is started directly (not
through the conftest fixture) because these tests choose its environment,
its config file and how it is signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from clients import Client
from conftest import HOST, PEER, REPO_ROOT, free_port
from mqtt_raw import PUBLISH, RawClient, publish_packet

pytestmark = pytest.mark.skipif(PEER != "shardmq", reason="shardmq's own process behaviour")


class Manager:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, abstract: bool):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"shardmq-test-{os.getpid()}-{free_port()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
            self._dir = None
        else:
            # A short directory: unix socket paths are limited to 107 bytes.
            self._dir = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.received: list[str] = []

    def wait_for(self, line: str, timeout: float) -> float:
        """Reads notifications until one has `line`; returns when it came."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {line!r} within {timeout}s; got {self.received!r}")
            self.sock.settimeout(remaining)
            try:
                datagram = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.received.append(datagram)
            if line in datagram.split("\n"):
                return time.monotonic()

    def close(self) -> None:
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class Process:
    """shardmq with a config file and an environment of the test's choice."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str]):
        self.port = free_port()
        self.config_path = workdir / f"shardmq-{self.port}.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / f"shardmq-{self.port}.log"
        self._log = open(self.log_path, "wb")
        binary = Path(os.environ.get("SHARDMQ_BIN", "target/debug/shardmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        cmd = [str(binary), "--config", str(self.config_path), "--listen", f"{HOST}:{self.port}", "--shards", "2"]
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, NO_COLOR="1", **env),
        )

    def accepts(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as probe:
                return probe.getsockname() != probe.getpeername()
        except OSError:
            return False

    def wait_accepting(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.accepts():
            assert self.proc.poll() is None, f"broker exited at start-up:\n{self.log()}"
            assert time.monotonic() < deadline, f"broker not accepting:\n{self.log()}"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log()}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def start(tmp_path):
    made: list[object] = []

    def run(config: str = "", env: dict[str, str] | None = None) -> Process:
        p = Process(tmp_path, config, env or {})
        made.append(p)
        return p

    def manager(abstract: bool = True) -> Manager:
        m = Manager(abstract)
        made.append(m)
        return m

    run.manager = manager
    yield run
    for thing in made:
        thing.close()


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract-socket", "path-socket"])
def test_ready_after_listening_then_watchdog_then_stopping_on_sigterm(start, abstract):
    manager = start.manager(abstract)
    broker = start(env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"})
    manager.wait_for("READY=1", timeout=15)
    # READY=1 only once every listener is bound: the port takes a
    # connection at once, with no retry.
    assert broker.accepts(), "READY=1 before the port accepts"
    assert any(line.startswith("STATUS=") for d in manager.received for line in d.split("\n"))
    # Keep-alives every half WatchdogSec, each after every shard answered.
    manager.wait_for("WATCHDOG=1", timeout=10)
    manager.wait_for("WATCHDOG=1", timeout=10)
    client = Client(HOST, broker.port, "ops-client")
    client.connect()
    broker.signal(signal.SIGTERM)
    manager.wait_for("STOPPING=1", timeout=10)
    assert broker.wait(30) == 0, broker.log()
    assert client.disconnected.wait(5), "the client was not closed"
    client.close()


def test_watchdog_pid_of_another_process_sends_no_keepalives_and_sigint_drains(start):
    manager = start.manager()
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    broker = start(env=env)
    manager.wait_for("READY=1", timeout=15)
    with pytest.raises(AssertionError):
        manager.wait_for("WATCHDOG=1", timeout=1.5)
    # SIGINT (Ctrl-C) drains as SIGTERM does.
    broker.signal(signal.SIGINT)
    manager.wait_for("STOPPING=1", timeout=10)
    assert broker.wait(30) == 0, broker.log()


def stuck_subscriber(port: int) -> RawClient:
    """A subscriber to `t` that reads nothing: a tiny receive buffer, set
    before connecting, keeps what the broker sends it in its outbox."""
    raw = RawClient.__new__(RawClient)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((HOST, port))
    raw.sock, raw.timeout, raw._buf = sock, 5.0, bytearray()
    raw.connect("stuck")
    assert raw.subscribe(1, [("t", 0)]) == [0]
    return raw


def publish_acked(port: int, count: int, size: int) -> None:
    """Publishes `count` QoS 1 messages of `size` bytes, every one acked."""
    publisher = RawClient(HOST, port)
    publisher.connect("publisher")
    payload = b"x" * size
    batch = b"".join(publish_packet("t", payload, 1, pid) for pid in range(1, count + 1))
    publisher.send(batch)
    for _ in range(count):
        publisher.expect(4)  # PUBACK
    publisher.disconnect()
    publisher.close()


# Outboxes large enough that the broker never throttles the publisher: the
# messages wait in the subscriber's outbox, not in the publisher's socket.
BIG_OUTBOX = "[mqtt]\nmax_outbox_bytes = 67108864\n"


def backlog_messages(size: int) -> int:
    """Messages of `size` bytes that overflow the broker's socket send
    buffer however far the kernel grows it (tcp_wmem's maximum), so that
    some are left in the outbox when the drain begins."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    return (2 * wmem_max + (1 << 20)) // size


def test_sigterm_writes_every_outbox_before_closing(start):
    broker = start(BIG_OUTBOX)
    broker.wait_accepting()
    sub = stuck_subscriber(broker.port)
    size = 1024
    count = backlog_messages(size)
    publish_acked(broker.port, count, size)
    # Acked on the publisher's shard; let the deliveries reach the other.
    time.sleep(0.5)
    broker.signal(signal.SIGTERM)
    got = [p for p in sub.wait_closed(30) if p.ptype == PUBLISH]
    assert len(got) == count, f"{len(got)} of {count} delivered before the close"
    assert broker.wait(30) == 0, broker.log()


def test_a_drain_past_shutdown_timeout_exits_anyway(start):
    broker = start("[server]\nshutdown_timeout_s = 1\n" + BIG_OUTBOX)
    broker.wait_accepting()
    sub = stuck_subscriber(broker.port)
    publish_acked(broker.port, backlog_messages(1024), 1024)
    broker.signal(signal.SIGTERM)
    # The subscriber never reads, so its outbox never empties.
    assert broker.wait(30) == 0, broker.log()
    assert "drain not finished" in broker.log()
    sub.close()


def test_draining_stops_accepting_and_a_second_sigterm_exits_at_once(start):
    broker = start("[server]\nshutdown_timeout_s = 600\n" + BIG_OUTBOX)
    broker.wait_accepting()
    sub = stuck_subscriber(broker.port)
    publish_acked(broker.port, backlog_messages(1024), 1024)
    broker.signal(signal.SIGTERM)
    broker.wait_log("stopping")
    # Draining: the listener is closed, so new clients are refused...
    deadline = time.monotonic() + 10
    while broker.accepts():
        assert time.monotonic() < deadline, "still accepting while draining"
        time.sleep(0.05)
    # ...and the process waits for the subscriber that reads nothing.
    with pytest.raises(subprocess.TimeoutExpired):
        broker.wait(1)
    broker.signal(signal.SIGTERM)
    assert broker.wait(30) == 1, broker.log()
    assert "second stop signal" in broker.log()
    sub.close()


def test_sighup_changes_the_log_level_without_dropping_a_connection(start):
    broker = start('[server]\nlog = "info"\n')
    broker.wait_accepting()
    client = Client(HOST, broker.port, "stays")
    client.connect()
    client.subscribe([("t", 1)])
    assert "CONNECT received" not in broker.log(), "debug lines before the reload"
    broker.config_path.write_text('[server]\nlog = "debug"\n[mqtt]\nmax_inflight = 7\n')
    broker.signal(signal.SIGHUP)
    broker.wait_log("log filter reloaded")
    # What needs a restart is named, and stays as it was.
    broker.wait_log("take effect only after a restart")
    assert '["mqtt"]' in broker.log()
    # Debug lines from now on: a new connection's CONNECT is one.
    other = Client(HOST, broker.port, "after-reload")
    other.connect()
    broker.wait_log("CONNECT received")
    # The first connection was never dropped and still works.
    other.publish("t", b"still here", qos=1)
    got = client.wait_messages(1)
    assert got[0].payload == b"still here"
    assert not client.disconnected.is_set()
    other.close()
    client.close()
    broker.signal(signal.SIGTERM)
    assert broker.wait(30) == 0


def test_a_bad_config_on_sighup_keeps_the_one_in_force(start):
    broker = start('[server]\nlog = "info"\n')
    broker.wait_accepting()
    broker.config_path.write_text("[server\n")
    broker.signal(signal.SIGHUP)
    broker.wait_log("configuration not reloaded")
    client = Client(HOST, broker.port, "after-bad-reload")
    client.connect()
    client.close()
    broker.signal(signal.SIGTERM)
    assert broker.wait(30) == 0


@pytest.mark.parametrize("wills", [True, False], ids=["wills-by-default", "will_on_shutdown-false"])
def test_wills_of_clients_connected_at_sigterm_outlive_the_stop_mqtt_3_1_2_8(start, tmp_path, wills):
    # A stop closes the device's connection without its DISCONNECT, so its
    # will MUST be published [MQTT-3.1.2-8]: into the retained store and
    # the offline persistent session's queue, both kept by the store.
    config = f'[persistence]\ndir = "{tmp_path / "store"}"\n'
    if not wills:
        config += "[server]\nwill_on_shutdown = false\n"
    broker = start(config)
    broker.wait_accepting()
    watcher = Client(HOST, broker.port, "will-watcher", clean_session=False)
    watcher.connect()
    assert watcher.subscribe([("wills/#", 1)]) == [1]
    watcher.disconnect()
    device = Client(HOST, broker.port, "will-device", will=("wills/device", b"gone", 1, True))
    device.connect()
    broker.signal(signal.SIGTERM)
    assert broker.wait(30) == 0, broker.log()
    device.close()

    again = start(config)
    again.wait_accepting()
    fresh = Client(HOST, again.port, "will-reader")
    fresh.connect()
    assert fresh.subscribe([("wills/#", 1)]) == [1]
    watcher = Client(HOST, again.port, "will-watcher", clean_session=False)
    watcher.connect()
    if wills:
        assert [(m.payload, m.retain) for m in fresh.wait_messages(1)] == [(b"gone", True)]
        assert [m.payload for m in watcher.wait_messages(1)] == [b"gone"]
    else:
        assert fresh.collect(1.0) == [] and watcher.collect(0.5) == []
    for c in (fresh, watcher):
        c.close()
