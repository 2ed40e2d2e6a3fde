"""Fixtures for the xiaozhi voice gateway tests.

Every test gets its own chat backend (a WebSocket server in this process),
its own shardmq with the voice gateway on (configured from a dict, see
gateway.py) and devices simulated over real MQTT and UDP (device.py).
On failure, the report carries the gateway's log, the backend's record of
each session, and each device's view.
"""

from __future__ import annotations

import ssl

import pytest

from backend import ChatBackend
from device import FirmwareDevice, PyXiaozhiDevice, ota_request, random_identity
from gateway import GROUP_ID, Gateway, Mosquitto
from pki import Pki
import crypto

KINDS = {"firmware": FirmwareDevice, "py": PyXiaozhiDevice}


def _report(request, obj) -> None:
    if not hasattr(request.node, "_voice_report"):
        request.node._voice_report = []
    request.node._voice_report.append(obj)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for obj in getattr(item, "_voice_report", []):
        if isinstance(obj, (Gateway, Mosquitto)):
            report.sections.append((f"{obj.name} log", obj.log_tail(120)))
        elif isinstance(obj, ChatBackend):
            report.sections.append((f"{obj.name} sessions", obj.summary()))
        else:
            report.sections.append((f"device {obj.client_id}", obj.summary()))


@pytest.fixture
def backend_factory(request):
    """Start chat backends; all stopped at teardown."""
    made: list[ChatBackend] = []

    def make(name: str = "backend", **kw) -> ChatBackend:
        b = ChatBackend(name=name, **kw)
        made.append(b)
        _report(request, b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def backend(backend_factory) -> ChatBackend:
    return backend_factory()


@pytest.fixture
def gateway_factory(request, tmp_path, backend):
    """Start shardmq with a config dict merged over the defaults (gateway.py).

    `chat_servers` defaults to the test's `backend`; `shards` to 2, so that
    devices land on different shards.
    """
    made: list[Gateway] = []

    def start(config=None, *, shards: int = 2, chat_servers: list[str] | None = None) -> Gateway:
        gw = Gateway(tmp_path, config, chat_servers=[backend.url] if chat_servers is None else chat_servers, shards=shards)
        made.append(gw)
        _report(request, gw)
        return gw

    yield start
    crashed = [(gw, gw.stop()) for gw in made]
    for gw, code in crashed:
        if code is not None:
            pytest.fail(f"{gw.name} exited with code {code} during the test:\n{gw.log_tail()}")


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A test CA and server certificates (pki.py), made once per run."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto(request, tmp_path):
    m = Mosquitto(tmp_path)
    _report(request, m)
    yield m
    m.stop()


class DeviceFactory:
    """Builds simulated devices and closes them at teardown."""

    def __init__(self, request):
        self._request = request
        self.made = []

    def _track(self, dev):
        self.made.append(dev)
        _report(self._request, dev)
        return dev

    def __call__(
        self,
        gw: Gateway,
        kind: str = "firmware",
        *,
        mac: str | None = None,
        uuid: str | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        connect: bool = True,
        tls: ssl.SSLContext | None = None,
        **kw,
    ):
        """A device with credentials computed from the gateway's signature key (as OTA would).

        With `tls` (the CAs it trusts) it connects to the gateway's `[tls]` listener."""
        mac_default, uuid_default = random_identity()
        mac = mac or mac_default
        uuid = uuid or uuid_default
        if client_id is None:
            client_id, user, pw = crypto.device_credentials(gw.signature_key, mac, uuid, GROUP_ID)
            username = user if username is None else username
            password = pw if password is None else password
        port = gw.mqtt_port if tls is None else gw.tls_port
        dev = self._track(KINDS[kind](gw.host, port, client_id, username, password, mac=mac, tls=tls, **kw))
        if connect:
            dev.connect()
        return dev

    def from_ota(self, gw: Gateway, kind: str = "firmware", *, connect: bool = True, tls: ssl.SSLContext | None = None, **kw):
        """A device provisioned through POST /xiaozhi/ota/, as the firmware is.

        `tls`: the CAs it trusts; it speaks TLS when the endpoint's port is
        the gateway's `[tls]` port (standing in for the firmware's 8883)."""
        mac, uuid = random_identity()
        status, body, raw = ota_request(gw.http_base, mac, uuid)
        assert status == 200, f"OTA: HTTP {status} {raw[:300]!r}"
        assert isinstance(body, dict) and isinstance(body.get("mqtt"), dict), f"OTA response without mqtt section: {raw[:500]!r}"
        dev = self._track(KINDS[kind].from_ota(body["mqtt"], tls_context=tls, tls_port=gw.tls_port, **kw))
        dev.ota_response = body
        if connect:
            dev.connect()
        return dev

    def raw(self, dev):
        """Track a device built by the test itself."""
        return self._track(dev)


@pytest.fixture
def make_device(request):
    factory = DeviceFactory(request)
    yield factory
    for dev in factory.made:
        dev.close()
