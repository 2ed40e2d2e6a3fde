"""MQTT over WebSocket (the `[websocket]` listener) with real peers.

paho-mqtt over `transport="websockets"` for the MQTT flows, a TCP client on
the other end of them, and the `websockets` package for the framing itself:
packets split over frames and fragments, several packets in one frame,
ping/pong, the close handshake, protocol errors, and refused upgrades.
"""

from __future__ import annotations

import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as ws_connect

from clients import Client, ConnectRefused
from conftest import HOST
from mqtt_raw import (
    CONNACK,
    PUBLISH,
    SUBACK,
    Closed,
    RawClient,
    connect_packet,
    publish_packet,
    subscribe_packet,
)
from ws_support import WS_PATH, WsBroker, WsClient


@pytest.fixture
def ws_broker(request, tmp_path):
    made: list[WsBroker] = []

    def start(websocket: str = "", kind: type[WsBroker] = WsBroker) -> WsBroker:
        broker = kind(tmp_path, websocket)
        made.append(broker)
        request.node._brokers = getattr(request.node, "_brokers", []) + [broker]
        return broker

    yield start
    for broker in made:
        code = broker.stop()
        if code is not None:
            pytest.fail(f"broker exited with code {code} during the test:\n{broker.log_tail()}")


@pytest.fixture
def clients():
    made: list = []
    yield made
    for c in made:
        c.close()


def open_ws(url: str, **kw):
    """A connected client (entered, as websockets 17 wants it)."""
    return ws_connect(url, open_timeout=5, **kw).__enter__()


class WsRaw(RawClient):
    """The raw MQTT client over a WebSocket: each `send` is one binary message."""

    def __init__(self, url: str, **kw):
        self.ws = open_ws(url, subprotocols=["mqtt"], **kw)
        self.timeout = 5.0
        self._buf = bytearray()
        self.frames: list[bytes] = []

    def send(self, data) -> None:
        self.ws.send(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet from broker in time")
        try:
            message = self.ws.recv(timeout=remaining)
        except TimeoutError:
            raise TimeoutError("no packet from broker in time") from None
        except ConnectionClosed as exc:
            raise Closed(str(exc)) from None
        assert isinstance(message, bytes), f"text frame from the broker: {message!r}"
        self.frames.append(message)
        self._buf += message

    def close(self) -> None:
        self.ws.close()


def test_paho_over_websocket_subscribes_and_publishes(ws_broker, clients):
    broker = ws_broker()
    sub = WsClient(broker, "ws-sub")
    clients.append(sub)
    sub.connect()
    assert sub.subscribe([("ws/t/#", 2)]) == [2]
    pub = WsClient(broker, "ws-pub")
    clients.append(pub)
    pub.connect()
    for qos in (0, 1, 2):
        pub.publish(f"ws/t/{qos}", f"payload {qos}".encode(), qos=qos)
    got = sub.wait_messages(3)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        ("ws/t/0", b"payload 0", 0),
        ("ws/t/1", b"payload 1", 1),
        ("ws/t/2", b"payload 2", 2),
    ]
    assert broker.metric("shardmq_ws_upgrades_total") == 2


def test_websocket_and_tcp_clients_exchange_messages(ws_broker, clients):
    # Several client ids, so that with two shards some connections are
    # handed over to their owner shard, WebSocket framing state and all.
    broker = ws_broker()
    ws_clients, tcp_clients = [], []
    for i in range(4):
        w = WsClient(broker, f"ws-client-{i}")
        t = Client(broker.host, broker.port, f"tcp-client-{i}")
        clients.extend([w, t])
        w.connect()
        t.connect()
        assert w.subscribe([("to/ws", 1)]) == [1]
        assert t.subscribe([("to/tcp", 1)]) == [1]
        ws_clients.append(w)
        tcp_clients.append(t)
    ws_clients[0].publish("to/tcp", b"from ws", qos=1)
    tcp_clients[0].publish("to/ws", b"from tcp", qos=1)
    big = bytes(range(256)) * 400  # over 64 KiB: a 64-bit frame length
    tcp_clients[1].publish("to/ws", big, qos=1)
    for t in tcp_clients:
        assert [m.payload for m in t.wait_messages(1)] == [b"from ws"]
    # Two publishers: MQTT orders messages per publisher only
    # [MQTT-4.6.0-6], and theirs may run on different shards.
    for w in ws_clients:
        assert sorted(m.payload for m in w.wait_messages(2)) == sorted([b"from tcp", big])


def test_a_packet_may_span_frames_and_fragments(ws_broker, clients):
    broker = ws_broker()
    raw = WsRaw(broker.ws_url)
    clients.append(raw)
    connect = connect_packet("ws-split")
    # Two bytes in one message, the rest as a fragmented message.
    raw.send(connect[:2])
    raw.send(iter([connect[2:5], connect[5:9], connect[9:]]))
    assert raw.expect(CONNACK).body == b"\x00\x00"
    sub = subscribe_packet(1, [("split/t", 0)])
    for i in range(len(sub)):
        raw.send(sub[i : i + 1])
    assert raw.expect(SUBACK).body == b"\x00\x01\x00"


def test_a_frame_may_carry_several_packets(ws_broker, clients):
    broker = ws_broker()
    raw = WsRaw(broker.ws_url)
    clients.append(raw)
    raw.send(
        connect_packet("ws-batch")
        + subscribe_packet(7, [("batch/t", 0)])
        + publish_packet("batch/t", b"one")
        + publish_packet("batch/t", b"two")
    )
    raw.expect(CONNACK)
    assert raw.expect(SUBACK).body == b"\x00\x07\x00"
    payloads = [raw.expect(PUBLISH).publish()[1] for _ in range(2)]
    assert payloads == [b"one", b"two"]


def test_pings_are_answered(ws_broker, clients):
    broker = ws_broker()
    raw = WsRaw(broker.ws_url)
    clients.append(raw)
    # Before CONNECT too: the CONNECT reader reads through the framing.
    assert raw.ws.ping(b"early").wait(5)
    raw.send(connect_packet("ws-ping"))
    raw.expect(CONNACK)
    assert raw.ws.ping(b"later").wait(5)


def test_close_is_answered_and_publishes_the_will(ws_broker, clients):
    # A WebSocket close without DISCONNECT is a network close: the will is
    # published [MQTT-3.1.2-8].
    broker = ws_broker()
    watcher = Client(broker.host, broker.port, "will-watcher")
    clients.append(watcher)
    watcher.connect()
    watcher.subscribe([("wills/ws", 0)])
    raw = WsRaw(broker.ws_url)
    raw.send(connect_packet("ws-will", will=("wills/ws", b"gone", 0, False)))
    raw.expect(CONNACK)
    raw.ws.close(code=1000)
    close_rcvd = raw.ws.protocol.close_rcvd
    assert close_rcvd is not None, "no close frame from the broker"
    assert close_rcvd.code == 1000
    assert [m.payload for m in watcher.wait_messages(1)] == [b"gone"]


def test_a_text_frame_is_closed_with_1003(ws_broker):
    broker = ws_broker()
    ws = open_ws(broker.ws_url, subprotocols=["mqtt"])
    ws.send("not binary")
    with pytest.raises(ConnectionClosedError) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def upgrade_raw(port: int, protocol: str = "mqtt", path: str = WS_PATH) -> tuple[socket.socket, bytes]:
    """The upgrade by hand, on a plain socket; returns it and the answer head."""
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def read_until_closed(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_an_unmasked_client_frame_is_closed_with_1002(ws_broker):
    broker = ws_broker()
    s, head = upgrade_raw(broker.ws_port)
    with s:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        assert b"Sec-WebSocket-Protocol: mqtt\r\n" in head
        s.sendall(b"\x82\x02\xc0\x00")  # PINGREQ, unmasked
        assert read_until_closed(s) == b"\x88\x02\x03\xea"


def test_refused_upgrades_are_answered_and_counted(ws_broker):
    broker = ws_broker()
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://{HOST}:{broker.ws_port}/elsewhere", subprotocols=["mqtt"], open_timeout=5)
    assert refused.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(broker.ws_url, subprotocols=["chat"], open_timeout=5)
    assert refused.value.response.status_code == 400
    s, head = upgrade_raw(broker.ws_port, protocol="mqttv3.1")
    s.close()
    assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol: mqttv3.1\r\n" in head
    failures = 'shardmq_ws_upgrade_failures_total{reason="%s"}'
    assert broker.wait_metric(failures % "path", 1) == 1
    assert broker.wait_metric(failures % "subprotocol", 1) == 1
    assert broker.wait_metric("shardmq_ws_upgrades_total", 1) == 1


def test_origins_are_checked_when_listed(ws_broker):
    broker = ws_broker('allowed_origins = ["https://app.example"]')
    ok = open_ws(broker.ws_url, subprotocols=["mqtt"], origin="https://app.example")
    ok.close()
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(broker.ws_url, subprotocols=["mqtt"], origin="https://evil.example", open_timeout=5)
    assert refused.value.response.status_code == 403
    assert broker.wait_metric('shardmq_ws_upgrade_failures_total{reason="origin"}', 1) == 1


def test_a_silent_socket_is_dropped_at_the_upgrade_deadline(ws_broker):
    broker = ws_broker("handshake_timeout_s = 1")
    with socket.create_connection((HOST, broker.ws_port), timeout=10) as s:
        assert read_until_closed(s) == b""
    assert broker.metric('shardmq_ws_upgrade_failures_total{reason="timeout"}') == 1


def test_the_broker_closing_a_connection_sends_a_close_frame(ws_broker, clients):
    # A takeover: the same client id over TCP closes the WebSocket
    # connection, which gets a close frame (1000) rather than a bare FIN.
    broker = ws_broker()
    raw = WsRaw(broker.ws_url)
    clients.append(raw)
    raw.send(connect_packet("ws-taken-over"))
    raw.expect(CONNACK)
    tcp = RawClient(broker.host, broker.port)
    clients.append(tcp)
    tcp.send(connect_packet("ws-taken-over"))
    tcp.expect(CONNACK)
    with pytest.raises(Closed):
        raw.recv(timeout=5)
    close_rcvd = raw.ws.protocol.close_rcvd
    assert close_rcvd is not None, "the socket was closed without a close frame"
    assert close_rcvd.code == 1000


# mosquitto_passwd's `$7$` line for alice / secret.
ALICE = "alice:$7$101$fWcz3ZIazCmPS96M$QPQuO7fiu8nvrmAL9nv1R49JEJcNJxksYWR2PcI17zBd01C1zxcCPfhN/FsNiqsdYmpd7z8oqADYMyRW/vxwNA=="


def test_websocket_connections_meet_the_password_file_and_acl(ws_broker, clients, tmp_path):
    # The same CONNECT check as TCP: CONNACK 4 for a wrong password
    # [MQTT-3.2.2-5], and the user's ACL afterwards.
    (tmp_path / "passwd").write_text(ALICE + "\n")
    (tmp_path / "acl").write_text("user alice\ntopic readwrite alice/#\n")
    broker = ws_broker(
        f'[auth]\npassword_file = "{tmp_path / "passwd"}"\nacl_file = "{tmp_path / "acl"}"\n'
    )
    bad = WsClient(broker, "ws-bad")
    clients.append(bad)
    bad._mqttc.username_pw_set("alice", "wrong")
    with pytest.raises(ConnectRefused, match="[Bb]ad user name or password|4"):
        bad.connect()
    anon = WsClient(broker, "ws-anon")
    clients.append(anon)
    with pytest.raises(ConnectRefused):
        anon.connect()
    good = WsClient(broker, "ws-alice")
    clients.append(good)
    good._mqttc.username_pw_set("alice", "secret")
    good.connect()
    assert good.subscribe([("alice/#", 1)]) == [1]
    assert good.subscribe([("bob/#", 1)]) == [0x80]


class DebugWsBroker(WsBroker):
    """A WsBroker logging at debug, where the CONNECT's peer is shown."""

    def _command(self, workdir, config):
        return super()._command(workdir, config) + ["--log", "shardmq=debug"]


def test_proxy_headers_on_the_websocket_listener(ws_broker):
    broker = ws_broker("proxy_protocol = true\n", DebugWsBroker)
    # The start-up probe of the port (one connection, closed) sent no
    # header either: wait until it is counted.
    rejections = "shardmq_proxy_header_rejections_total"
    deadline = time.monotonic() + 5
    while broker.metric(rejections) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.metric(rejections) == 1
    # A v1 header, then the upgrade and an MQTT session behind it: the
    # header's source is the client's address from then on.
    sock = socket.create_connection((HOST, broker.ws_port), timeout=5)
    sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 8083\r\n")
    raw = WsRaw(broker.ws_url, sock=sock)
    raw.send(connect_packet("ws-proxied"))
    assert raw.expect(CONNACK).body == b"\x00\x00"
    deadline = time.monotonic() + 5
    while "203.0.113.7:40000" not in broker.log_tail(400) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "203.0.113.7:40000" in broker.log_tail(400)
    raw.close()
    # Without a header on such a listener: closed, and counted.
    with pytest.raises((InvalidHandshake, ConnectionClosed, OSError, TimeoutError)):
        open_ws(broker.ws_url, subprotocols=["mqtt"])
    assert broker.metric("shardmq_proxy_headers_total") == 1
    deadline = time.monotonic() + 5
    while broker.metric(rejections) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.metric(rejections) == 2
    assert broker.metric("shardmq_ws_upgrades_total") == 1
