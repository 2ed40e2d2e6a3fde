"""Fixtures: a broker under test on a free loopback port, and client factories.

The broker is shardmq (`SHARDMQ_BIN`, default target/debug/shardmq, run with
`--shards 2` so that connections land on different shard threads). With
`SHARDMQ_TEST_PEER=mosquitto` the same tests run against mosquitto instead,
which is how the suite itself is checked against a reference broker.

Each test gets a fresh broker so that retained messages and persistent
sessions of one test can never satisfy (or break) another.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from clients import Client
from mqtt_raw import RawClient

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER = os.environ.get("SHARDMQ_TEST_PEER", "shardmq")
HOST = "127.0.0.1"

# shardmq config keys ([mqtt] table) and their mosquitto equivalents, for
# tests that need a non-default setting.
MOSQUITTO_KEYS = {
    "sys_interval_s": "sys_interval",
    "max_queued_messages": "max_queued_messages",
    "max_inflight": "max_inflight_messages",
    "queue_qos0_offline": "queue_qos0_messages",
    "max_packet_size": "max_packet_size",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Broker:
    def __init__(self, workdir: Path, config: dict | None = None):
        self.host = HOST
        self.port = free_port()
        self.log_path = workdir / f"broker-{self.port}.log"
        cmd = self._command(workdir, config or {})
        # --pdeathsig: the broker dies with the test process even if pytest
        # itself is killed (a CI timeout), so no broker outlives the run.
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        self.cmd = cmd
        self._log = open(self.log_path, "wb")
        # NO_COLOR: keep terminal colour codes out of the log attached to reports.
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self._wait_ready()

    def _command(self, workdir: Path, config: dict) -> list[str]:
        if PEER == "mosquitto":
            conf = workdir / f"mosquitto-{self.port}.conf"
            lines = [f"listener {self.port} {HOST}", "allow_anonymous true", "persistence false"]
            for key, value in config.items():
                if key not in MOSQUITTO_KEYS:
                    pytest.skip(f"no mosquitto equivalent for config key {key!r}")
                lines.append(f"{MOSQUITTO_KEYS[key]} {_toml_value(value)}")
            conf.write_text("\n".join(lines) + "\n")
            return ["mosquitto", "-c", str(conf)]
        if PEER != "shardmq":
            raise pytest.UsageError(f"unknown SHARDMQ_TEST_PEER={PEER!r} (expected shardmq or mosquitto)")
        binary = Path(os.environ.get("SHARDMQ_BIN", "target/debug/shardmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        if not binary.exists():
            # A failure, not a skip: a missing binary must not read as green.
            pytest.fail(f"broker binary {binary} not found; run `cargo build` or set SHARDMQ_BIN")
        cmd = [str(binary), "--listen", f"{HOST}:{self.port}", "--shards", "2"]
        if config:
            conf = workdir / f"shardmq-{self.port}.toml"
            conf.write_text("[mqtt]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in config.items()))
            cmd += ["--config", str(conf)]
        return cmd

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"broker exited with {self.proc.returncode} at startup:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as probe:
                    # A probe to a port nobody listens on yet can, rarely,
                    # connect to itself (TCP simultaneous open); that is not
                    # the broker.
                    if probe.getsockname() != probe.getpeername():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"broker not accepting connections on {self.port} after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """Stop the broker; returns its exit code if it had already exited."""
        crashed = self.proc.poll()
        if crashed is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return crashed


def pytest_report_header(config):
    return f"broker under test: {PEER}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Attach the broker's log to a failing test's report: the broker's view
    # of the failure is usually the quickest way to its cause.
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_brokers", []):
            # Suites keep their own server objects here too (presence's),
            # named by another port attribute; a report never fails on it.
            port = getattr(broker, "port", getattr(broker, "mqtt_port", "?"))
            try:
                tail = broker.log_tail()
            except (OSError, ValueError) as e:
                tail = f"(log unreadable: {e})"
            report.sections.append((f"broker log (port {port})", tail))


@pytest.fixture
def broker_factory(request, tmp_path):
    """Start brokers with an optional `[mqtt]` config; all stopped at teardown."""
    request.node._brokers = []

    def start(config: dict | None = None) -> Broker:
        broker = Broker(tmp_path, config)
        request.node._brokers.append(broker)
        return broker

    yield start
    crashed = [(b, b.stop()) for b in request.node._brokers]
    for broker, code in crashed:
        if code is not None:
            pytest.fail(f"broker exited with code {code} during the test:\n{broker.log_tail()}")


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture
def make_client(request, broker_factory):
    """Factory for paho clients (connect with `.connect()`), closed at teardown."""
    made: list[Client] = []

    def make(client_id: str = "", *, target: Broker | None = None, **kw) -> Client:
        # The default broker starts only when a client needs it, so a test
        # that runs its own configured broker does not start a second one.
        b = target or request.getfixturevalue("broker")
        client = Client(b.host, b.port, client_id, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_raw(request, broker_factory):
    """Factory for raw-socket MQTT clients, closed at teardown."""
    made: list[RawClient] = []

    def make(*, target: Broker | None = None) -> RawClient:
        b = target or request.getfixturevalue("broker")
        client = RawClient(b.host, b.port)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
