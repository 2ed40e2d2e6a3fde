"""A shardmq broker with its WebSocket listener on, and a paho client over it.

Used by test_websocket.py and test_websocket_browser.py. Only shardmq: the
WebSocket listener's options (path, origins, metrics) are its own.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from clients import Client
from conftest import HOST, PEER, Broker, free_port

WS_PATH = "/mqtt"


class WsBroker(Broker):
    """shardmq with `[websocket]` on a free port and `[http]` for /metrics."""

    def __init__(self, workdir: Path, websocket: str = ""):
        if PEER != "shardmq":
            pytest.skip("the WebSocket listener tests run against shardmq only")
        self.ws_port = free_port()
        self.http_port = free_port()
        self._websocket = websocket
        super().__init__(workdir, None)
        # Every shard has its own WebSocket listener, but /metrics is served
        # by shard 0 alone, which may bind later than another shard's.
        self._wait_port(self.ws_port)
        self._wait_port(self.http_port)

    def _command(self, workdir: Path, config: dict) -> list[str]:
        cmd = super()._command(workdir, config)
        conf = workdir / f"shardmq-ws-{self.port}.toml"
        conf.write_text(
            "[websocket]\nenabled = true\n"
            f'listen = "{HOST}:{self.ws_port}"\n{self._websocket}\n'
            f'[http]\nlisten = "{HOST}:{self.http_port}"\n'
        )
        return cmd + ["--config", str(conf)]

    def _wait_port(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"nothing accepting on {port}:\n{self.log_tail()}")

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.ws_port}{WS_PATH}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, line_prefix: str) -> int:
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " "):
                return int(line.split()[-1])
        raise AssertionError(f"no metric {line_prefix!r} in /metrics")

    def wait_metric(self, line_prefix: str, value: int, timeout: float = 5.0) -> int:
        """The metric once it reads `value`: a refusal is answered before
        it is counted, so the count may trail the client's view."""
        deadline = time.monotonic() + timeout
        while (got := self.metric(line_prefix)) != value and time.monotonic() < deadline:
            time.sleep(0.02)
        return got


class WsClient(Client):
    """The synchronous paho wrapper, over `transport="websockets"`."""

    def __init__(self, broker: WsBroker, client_id: str = "", **kw):
        super().__init__(broker.host, broker.ws_port, client_id, **kw)
        plain = self._mqttc
        self._mqttc = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=kw.get("clean_session", True),
            protocol=mqtt.MQTTv311,
            transport="websockets",
        )
        self._mqttc.ws_set_options(path=WS_PATH)
        for callback in ("on_connect", "on_message", "on_subscribe", "on_unsubscribe", "on_disconnect"):
            setattr(self._mqttc, callback, getattr(plain, callback))
