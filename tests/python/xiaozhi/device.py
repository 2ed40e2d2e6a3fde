"""Device simulators: real MQTT (paho, 3.1.1) for control, real UDP for audio.

`FirmwareDevice` behaves like xiaozhi-esp32 v2.4.x, the strictest client in
the field (protocol notes §3.1, §4, §5): it never subscribes, parses the
server hello strictly and silently ignores a bad one, opens a new connected
UDP socket per conversation, and drops datagrams that fail the §5.3 checks.
`PyXiaozhiDevice` behaves like py-xiaozhi (§9): it subscribes at QoS 1, keeps
one unconnected UDP socket that hears any source, and checks nothing.

Each device keeps everything it received, so a test can assert on what
arrived (and on what was dropped) after the fact.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt

import crypto

# paho reports 3.1.1 CONNACK codes as MQTT 5 reason codes; map them back by name.
CONNACK_CODES = {
    "Success": 0,
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}

FIRMWARE_VERSION = "2.4.2"
BOARD_TYPE = "bread-compact-wifi"
HELLO_TIMEOUT_S = 10.0  # FW: xEventGroupWaitBits(..., pdMS_TO_TICKS(10000))
UDP_RECV_BUFFER = 1500  # FW (esp_udp.cc): longer datagrams are truncated


class ConnectRefused(Exception):
    def __init__(self, reason):
        self.reason = reason
        self.rc = CONNACK_CODES.get(str(reason))
        super().__init__(f"CONNACK refused: {reason} (3.1.1 code {self.rc})")


class HelloTimeout(TimeoutError):
    pass


def random_mac() -> str:
    # Locally administered unicast, lower-case and colon separated like the firmware's.
    octets = [0x02] + list(os.urandom(5))
    return ":".join(f"{b:02x}" for b in octets)


def random_identity() -> tuple[str, str]:
    return random_mac(), str(uuidlib.uuid4())


def dumps(obj) -> str:
    """Compact JSON as cJSON_PrintUnformatted writes it (UTF-8, no spaces)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    json: dict | None
    at: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str | None:
        if isinstance(self.json, dict) and isinstance(self.json.get("type"), str):
            return self.json["type"]
        return None


@dataclass
class AudioPacket:
    header: crypto.Header
    opus: bytes
    source: tuple[str, int]


# -- OTA ---------------------------------------------------------------------


def ota_request(
    base_url: str,
    mac: str,
    uuid: str,
    *,
    board_type: str | None = BOARD_TYPE,
    version: str = FIRMWARE_VERSION,
    timeout: float = 10.0,
) -> tuple[int, dict | None, bytes]:
    """POST /xiaozhi/ota/ as the firmware does (§2.1): (status, parsed JSON or None, raw body)."""
    body: dict = {
        "version": 2,
        "language": "zh-CN",
        "flash_size": 16777216,
        "minimum_free_heap_size": "7265024",
        "mac_address": mac,
        "uuid": uuid,
        "chip_model_name": "esp32s3",
        "chip_info": {"model": 9, "cores": 2, "revision": 2, "features": 18},
        "application": {
            "name": "xiaozhi",
            "version": version,
            "compile_time": "Aug  8 2026T12:00:00Z",
            "idf_version": "v5.5.1",
            "elf_sha256": "0" * 64,
        },
        "partition_table": [
            {"label": "nvs", "type": 1, "subtype": 2, "address": 36864, "size": 16384},
            {"label": "ota_0", "type": 0, "subtype": 16, "address": 1048576, "size": 6291456},
        ],
        "ota": {"label": "ota_0"},
        "display": {"monochrome": False, "width": 240, "height": 240},
    }
    if board_type is not None:
        body["board"] = {"type": board_type, "name": board_type, "ssid": "test", "rssi": -50, "channel": 6, "ip": "127.0.0.1", "mac": mac}
    headers = {
        "Activation-Version": "1",
        "Device-Id": mac,
        "Client-Id": uuid,
        "User-Agent": f"{board_type or 'unknown'}/{version}",
        "Accept-Language": "zh-CN",
        "Content-Type": "application/json",
    }
    req = urllib.request.Request(base_url.rstrip("/") + "/xiaozhi/ota/", data=dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return status, parsed, raw


MQTT_TLS_PORT = 8883  # ML EspMqtt::Connect: TLS only on this port


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """FW: split at the first ':'; no port means 8883 (TLS)."""
    host, sep, port = endpoint.partition(":")
    return host, int(port) if sep else MQTT_TLS_PORT


# -- common MQTT part ----------------------------------------------------------


class _Device:
    """MQTT connection, message store and MCP responder shared by both simulators."""

    name = "device"
    default_keepalive = 60

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        keepalive: int | None = None,
        publish_topic: str = "device-server",
        subscribe: list[tuple[str, int]] | None = None,
        mac: str | None = None,
        uuid: str | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.host, self.port = host, port
        self.tls = tls
        self.client_id = client_id
        self.username, self.password = username, password
        self.keepalive = self.default_keepalive if keepalive is None else keepalive
        self.publish_topic = publish_topic
        self.subscriptions = list(subscribe or [])
        parts = client_id.split("@@@")
        self.mac = mac or (parts[1].replace("_", ":") if len(parts) >= 2 else "")
        self.uuid = uuid or (parts[2] if len(parts) >= 3 else None)
        self.mac_ = crypto.mac_underscored(self.mac)

        self._cond = threading.Condition()
        self.messages: list[Received] = []
        self._taken: set[int] = set()
        self.granted: list[int] = []
        self._connack = None
        self._acks: dict[int, list[int]] = {}
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        # Conversation state (§4, §5): set from the server hello.
        self.session_id = ""
        self.key: bytes | None = None
        self.nonce: bytes | None = None
        self.udp_addr: tuple[str, int] | None = None
        self.server_hello: dict | None = None
        self.ignored_hellos: list[dict] = []
        self._hello_event = threading.Event()
        self.local_seq = 0
        self.remote_seq = 0
        self._sock: socket.socket | None = None
        self._udp_thread: threading.Thread | None = None
        self._udp_stop = threading.Event()
        self._audio: queue.Queue[AudioPacket] = queue.Queue()
        self.audio_packets: list[AudioPacket] = []
        self.dropped: Counter[str] = Counter()
        self.sequence_gaps = 0
        self.channel_open = False
        self.goodbyes_acted: list[dict] = []
        self.goodbyes_ignored: list[dict] = []
        self._attacker: socket.socket | None = None

        # MCP (§6): requests from the server, answered by `mcp_handler`
        # unless `mcp_auto_reply` is off.
        self.mcp_requests: list[dict] = []
        self.mcp_auto_reply = True
        self.mcp_handler: Callable[[dict], dict] = default_mcp_result

        self._mqttc = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if username is not None or password is not None:
            self._mqttc.username_pw_set(username or "", password)
        if tls is not None:
            # The server is verified against the context's CAs and host name,
            # as the firmware verifies it against its certificate bundle.
            self._mqttc.tls_set_context(tls)
        self._mqttc.on_connect = self._on_connect
        self._mqttc.on_message = self._on_message
        self._mqttc.on_subscribe = self._on_subscribe
        self._mqttc.on_disconnect = self._on_disconnect

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client_id!r})"

    @classmethod
    def from_ota(cls, mqtt_section: dict, *, tls_context: ssl.SSLContext | None = None, tls_port: int = MQTT_TLS_PORT, **kw):
        """A device configured from an OTA response's `mqtt` object, as the firmware stores it.

        Like the firmware, it speaks TLS exactly when the endpoint's port is
        the TLS port (8883, or no port); a test whose listener cannot have
        8883 names its port as `tls_port`. `tls_context` holds the CAs it trusts.
        """
        host, port = parse_endpoint(mqtt_section["endpoint"])
        if port == tls_port:
            if tls_context is None:
                raise ValueError(f"endpoint {mqtt_section['endpoint']!r} means TLS: give a tls_context")
            kw["tls"] = tls_context
        keepalive = mqtt_section.get("keepalive")
        if isinstance(keepalive, int) and not isinstance(keepalive, bool):
            kw.setdefault("keepalive", keepalive)
        kw.setdefault("publish_topic", mqtt_section.get("publish_topic") or "device-server")
        return cls(host, port, mqtt_section["client_id"], mqtt_section.get("username"), mqtt_section.get("password"), **kw)

    # -- MQTT callbacks (network thread) ---------------------------------------

    def _on_connect(self, _c, _u, _flags, reason_code, _p):
        with self._cond:
            self._connack = reason_code
            if not reason_code.is_failure:
                self.connected.set()
            self._cond.notify_all()

    def _on_subscribe(self, _c, _u, mid, reason_codes, _p):
        with self._cond:
            self._acks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_disconnect(self, *_args):
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, _c, _u, msg):
        payload = bytes(msg.payload)
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        rec = Received(msg.topic, payload, msg.qos, bool(msg.retain), parsed if isinstance(parsed, dict) else None)
        # FW: the topic is ignored; the payload must be JSON with a string `type`.
        # Handled before it is stored, so a test that sees the message also sees its effect.
        kind = rec.type
        if kind == "hello":
            self._handle_server_hello(rec.json)
        elif kind == "goodbye":
            self._handle_goodbye(rec.json)
        elif kind == "mcp":
            self._handle_mcp(rec.json)
        with self._cond:
            self.messages.append(rec)
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._mqttc.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _wait(self, predicate, timeout: float, what: str, fail_on_disconnect: bool = True):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value is not None:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: no {what} within {timeout}s")
                if fail_on_disconnect and self.disconnected.is_set():
                    raise ConnectionError(f"{self.client_id}: MQTT connection lost waiting for {what}")
                self._cond.wait(min(remaining, 0.1))

    # -- MQTT API ----------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> "_Device":
        """Connect and wait for CONNACK (FW connect timeout: 10 s); ConnectRefused on a refusal."""
        self._mqttc.connect(self.host, self.port, self.keepalive)
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.mac_}", daemon=True)
        # Tell paho a network thread exists: it then queues a publish for that
        # thread instead of writing from the caller's thread, which would race
        # the loop (a close seen there made the caller's publish fail as if
        # it had never been sent).
        self._mqttc._thread = self._thread
        self._thread.start()
        reason = self._wait(lambda: self._connack, timeout, "CONNACK", fail_on_disconnect=False)
        if reason.is_failure:
            raise ConnectRefused(reason)
        for topic, qos in self.subscriptions:
            self.granted += self.subscribe(topic, qos)
        return self

    def subscribe(self, topic: str, qos: int, timeout: float = 10.0) -> list[int]:
        rc, mid = self._mqttc.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        return self._wait(lambda: self._acks.pop(mid, None), timeout, "SUBACK")

    def publish_raw(self, payload: bytes | str, topic: str | None = None, qos: int = 0) -> None:
        info = self._mqttc.publish(topic or self.publish_topic, payload, qos, False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{self.client_id}: publish failed: {mqtt.error_string(info.rc)}")

    def send_json(self, obj: dict) -> None:
        """Control JSON on the publish topic, QoS 0, retain 0 (FW Mqtt::Publish defaults)."""
        self.publish_raw(dumps(obj))

    def wait_connection_closed(self, timeout: float) -> bool:
        return self.disconnected.wait(timeout)

    def disconnect(self) -> None:
        """Clean MQTT DISCONNECT."""
        if self._thread is not None and not self.disconnected.is_set():
            self._mqttc.disconnect()
            self.disconnected.wait(5)
        self._stop_mqtt()

    def drop_connection(self) -> None:
        """Lose the TCP connection without DISCONNECT (power loss, Wi-Fi gone)."""
        self._stop_mqtt()

    def _stop_mqtt(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
            self._thread = None
        sock = self._mqttc.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        self.disconnected.set()

    def close(self) -> None:
        self._close_udp()
        if self._attacker is not None:
            self._attacker.close()
            self._attacker = None
        self._stop_mqtt()

    def summary(self) -> str:
        with self._cond:
            msgs = [(m.topic, m.qos, m.payload[:300]) for m in self.messages]
            return (
                f"{self!r} connected={self.connected.is_set()} disconnected={self.disconnected.is_set()} "
                f"session={self.session_id!r} udp={self.udp_addr} channel_open={self.channel_open}\n"
                f"  audio accepted={len(self.audio_packets)} dropped={dict(self.dropped)} gaps={self.sequence_gaps}\n"
                f"  ignored hellos={self.ignored_hellos}\n  mqtt messages={msgs}"
            )

    # -- received JSON -------------------------------------------------------------

    def json_messages(self, kind: str | None = None) -> list[dict]:
        with self._cond:
            return [m.json for m in self.messages if m.json is not None and (kind is None or m.type == kind)]

    def recv_json(self, kind: str | None = None, timeout: float = 5.0, predicate: Callable[[dict], bool] | None = None) -> dict:
        """The oldest not yet taken JSON message of type `kind` (any type if None)."""
        return self.recv_message(kind, timeout, predicate).json

    def recv_message(self, kind: str | None = None, timeout: float = 5.0, predicate: Callable[[dict], bool] | None = None) -> Received:
        def find():
            for i, m in enumerate(self.messages):
                if i in self._taken or m.json is None:
                    continue
                if kind is not None and m.type != kind:
                    continue
                if predicate is not None and not predicate(m.json):
                    continue
                self._taken.add(i)
                return m
            return None

        try:
            return self._wait(find, timeout, f"{kind or 'JSON'} message", fail_on_disconnect=False)
        except TimeoutError:
            seen = [m.payload[:200] for m in self.messages]
            raise TimeoutError(f"{self.client_id}: no {kind or 'JSON'} message within {timeout}s; received {seen}") from None

    def collect(self, window: float) -> list[Received]:
        time.sleep(window)
        with self._cond:
            return list(self.messages)

    # -- MCP -------------------------------------------------------------------------

    def _handle_mcp(self, msg: dict) -> None:
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            return
        with self._cond:
            self.mcp_requests.append(payload)
            self._cond.notify_all()
        if "id" not in payload or "method" not in payload or not self.mcp_auto_reply:
            return  # a notification, a response, or a device told to stay silent
        try:
            reply = {"jsonrpc": "2.0", "id": payload["id"], "result": self.mcp_handler(payload)}
        except Exception as exc:  # the handler's way to send a JSON-RPC error
            reply = {"jsonrpc": "2.0", "id": payload["id"], "error": {"code": -32601, "message": str(exc)}}
        # FW Protocol::SendMcpMessage: {"session_id":"..","type":"mcp","payload":..}
        self.publish_raw(dumps({"session_id": self.session_id, "type": "mcp", "payload": reply}))

    def wait_mcp_request(self, method: str, timeout: float = 10.0) -> dict:
        return self._wait(
            lambda: next((r for r in self.mcp_requests if r.get("method") == method), None),
            timeout,
            f"MCP {method} request",
            fail_on_disconnect=False,
        )

    # -- conversation ------------------------------------------------------------------

    def hello_message(self) -> str:
        raise NotImplementedError

    def send_hello(self) -> None:
        """Clear the session and publish the hello, without waiting for the reply."""
        with self._cond:
            self.session_id = ""
            self.server_hello = None
            self._hello_event.clear()
        self.publish_raw(self.hello_message())

    def hello(self, timeout: float = HELLO_TIMEOUT_S) -> dict:
        """Open a conversation: hello, wait for a valid server hello, open UDP. HelloTimeout if none."""
        self.send_hello()
        return self.wait_hello(timeout)

    def wait_hello(self, timeout: float = HELLO_TIMEOUT_S) -> dict:
        if not self._hello_event.wait(timeout):
            raise HelloTimeout(
                f"{self.client_id}: no valid server hello within {timeout}s; "
                f"ignored hellos: {self.ignored_hellos}; received: {[m.payload[:300] for m in self.messages]}"
            )
        with self._cond:
            reply = self.server_hello
        self._open_udp()
        return reply

    def _accept_hello(self, msg: dict, key: bytes, nonce: bytes, server: str, port: int) -> None:
        with self._cond:
            self.server_hello = msg
            if isinstance(msg.get("session_id"), str):
                self.session_id = msg["session_id"]
            self.key, self.nonce = key, nonce
            self.udp_addr = (server, port)
            self.local_seq = 0
            self.remote_seq = 0
            self._hello_event.set()
            self._cond.notify_all()

    def _handle_server_hello(self, msg: dict) -> None:
        raise NotImplementedError

    def _handle_goodbye(self, msg: dict) -> None:
        raise NotImplementedError

    def listen_start(self, mode: str = "auto") -> None:
        self.send_json({"session_id": self.session_id, "type": "listen", "state": "start", "mode": mode})

    def listen_stop(self) -> None:
        self.send_json({"session_id": self.session_id, "type": "listen", "state": "stop"})

    def abort(self) -> None:
        self.send_json({"session_id": self.session_id, "type": "abort"})

    def goodbye(self) -> None:
        """FW CloseAudioChannel(send_goodbye=true): the UDP socket is closed first, then goodbye."""
        session = self.session_id
        self._close_udp()
        self.send_json({"session_id": session, "type": "goodbye"})

    # -- UDP ------------------------------------------------------------------------------

    def _new_socket(self) -> socket.socket:
        raise NotImplementedError

    def _open_udp(self) -> None:
        self._close_udp()
        sock = self._new_socket()
        sock.settimeout(0.05)
        stop = threading.Event()
        thread = threading.Thread(target=self._udp_loop, args=(sock, stop), name=f"udp-{self.mac_}", daemon=True)
        with self._cond:
            self._sock = sock
            self._udp_stop = stop
            self._udp_thread = thread
            self._audio = queue.Queue()
            self.audio_packets = []
            self.dropped.clear()
            self.sequence_gaps = 0
            self.channel_open = True
        thread.start()

    def _close_udp(self, only: socket.socket | None = None) -> None:
        """Close the audio channel; with `only`, just if that socket is still the current one."""
        with self._cond:
            if only is not None and self._sock is not only:
                return
            sock, self._sock = self._sock, None
            thread, self._udp_thread = self._udp_thread, None
            self.channel_open = False
            self._udp_stop.set()
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2)
        if sock is not None:
            sock.close()

    def _udp_loop(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data, source = self._recv(sock)
            except (socket.timeout, BlockingIOError):
                continue
            except ConnectionRefusedError:
                continue  # ICMP port unreachable reported on a connected socket
            except OSError:
                return
            with self._cond:
                if stop.is_set():
                    return
                self._on_datagram(data, source)
                self._cond.notify_all()

    def _recv(self, sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
        raise NotImplementedError

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        raise NotImplementedError

    def _deliver(self, header: crypto.Header, opus: bytes, source) -> None:
        pkt = AudioPacket(header, opus, source)
        self.audio_packets.append(pkt)
        self._audio.put(pkt)

    def header_for(self, length: int, timestamp: int, seq: int) -> bytes:
        raise NotImplementedError

    def craft(
        self,
        opus: bytes,
        seq: int,
        timestamp: int = 0,
        *,
        conn_id: int | None = None,
        type: int = crypto.PACKET_TYPE_AUDIO,
        length: int | None = None,
        key: bytes | None = None,
    ) -> bytes:
        """A datagram this device's way but with chosen fields; the sequence counter is untouched."""
        assert self.nonce is not None and self.key is not None, "no conversation (hello first)"
        header = bytearray(self.header_for(len(opus), timestamp, seq))
        header[0] = type
        if length is not None:
            header[2:4] = (length & 0xFFFF).to_bytes(2, "big")
        if conn_id is not None:
            header[4:8] = (conn_id & 0xFFFFFFFF).to_bytes(4, "big")
        return crypto.seal(key or self.key, bytes(header), opus)

    def send_audio(self, opus: bytes, timestamp: int = 0) -> bytes:
        """Encrypt and send one Opus frame with the next sequence number; returns the datagram."""
        with self._cond:
            self.local_seq = (self.local_seq + 1) & 0xFFFFFFFF
            seq = self.local_seq
        data = self.craft(opus, seq, timestamp)
        self.send_raw(data)
        return data

    def send_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def recv_audio(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """(timestamp, opus) of the next accepted packet."""
        pkt = self.recv_audio_packet(timeout)
        return pkt.header.timestamp, pkt.opus

    def recv_audio_packet(self, timeout: float = 5.0) -> AudioPacket:
        try:
            return self._audio.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"{self.client_id}: no audio within {timeout}s (accepted so far {len(self.audio_packets)}, dropped {dict(self.dropped)})"
            ) from None

    def recv_audio_many(self, count: int, timeout: float = 10.0) -> list[AudioPacket]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.client_id}: {len(out)} of {count} audio packets within {timeout}s; dropped {dict(self.dropped)}")
            out.append(self.recv_audio_packet(remaining))
        return out

    # -- attacker -----------------------------------------------------------------------------

    def attacker_send(self, data: bytes) -> tuple[str, int]:
        """Send `data` to the conversation's UDP address from a second socket; returns that socket's address."""
        assert self.udp_addr is not None, "no conversation (hello first)"
        if self._attacker is None:
            self._attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._attacker.bind(("127.0.0.1", 0))
        self._attacker.sendto(data, self.udp_addr)
        return self._attacker.getsockname()

    def attacker_recv(self, timeout: float) -> bytes | None:
        """A datagram that reached the attacker socket within `timeout`, or None."""
        if self._attacker is None:
            return None
        self._attacker.settimeout(timeout)
        try:
            return self._attacker.recv(65536)
        except (socket.timeout, OSError):
            return None


def default_mcp_result(request: dict) -> dict:
    """A plausible answer to each MCP method the firmware implements."""
    method = request.get("method")
    if method == "initialize":
        return {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": {"name": "xiaozhi-sim", "version": FIRMWARE_VERSION}}
    if method == "tools/list":
        return {
            "tools": [
                {
                    "name": "self.get_device_status",
                    "description": "Current device status",
                    "inputSchema": {"type": "object", "properties": {}},
                }
            ]
        }
    if method == "tools/call":
        params = request.get("params") or {}
        return {"content": [{"type": "text", "text": dumps({"called": params.get("name"), "arguments": params.get("arguments")})}], "isError": False}
    return {}


# -- the firmware -------------------------------------------------------------------------------


def _hex16(value) -> bytes | None:
    """FW: exactly 16 bytes of hex, either case; anything else rejects the hello."""
    if not isinstance(value, str) or len(value) != 32:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


class FirmwareDevice(_Device):
    """xiaozhi-esp32 v2.4.x over MQTT + UDP."""

    name = "firmware"
    default_keepalive = 240  # FW default since v1.7.5

    def __init__(self, *args, aec: bool = True, glyph_push: bool = True, **kw):
        super().__init__(*args, **kw)
        self.aec = aec
        self.glyph_push = glyph_push

    def hello_message(self) -> str:
        # §4.1, byte for byte: cJSON_PrintUnformatted, this key order.
        features = {}
        if self.aec:
            features["aec"] = True
        features["mcp"] = True
        msg: dict = {"type": "hello", "version": 3, "transport": "udp", "features": features}
        if self.glyph_push:
            features["glyph_push"] = True
            msg["text_font"] = {"bundle": "noto-v1", "charset": "common", "size": 20, "bpp": 4}
        msg["audio_params"] = {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
        return dumps(msg)

    @staticmethod
    def validate_hello(msg: dict) -> str | None:
        """Why FW ParseServerHello would reject `msg`, or None if it accepts it."""
        if msg.get("transport") != "udp":
            return "transport is not udp"
        udp = msg.get("udp")
        if not isinstance(udp, dict):
            return "udp is not an object"
        if not isinstance(udp.get("server"), str):
            return "udp.server is not a string"
        port = udp.get("port")
        if isinstance(port, bool) or not isinstance(port, (int, float)) or not 1 <= port <= 65535 or port != int(port):
            return "udp.port is not a number in 1..65535"
        if _hex16(udp.get("key")) is None:
            return "udp.key is not 32 hex chars"
        if _hex16(udp.get("nonce")) is None:
            return "udp.nonce is not 32 hex chars"
        return None

    def _handle_server_hello(self, msg: dict) -> None:
        problem = self.validate_hello(msg)
        if problem is not None:
            with self._cond:
                self.ignored_hellos.append({"reason": problem, "hello": msg})
            return
        udp = msg["udp"]
        try:
            server = socket.gethostbyname(udp["server"])  # IPv4 only, as the firmware
        except OSError:
            with self._cond:
                self.ignored_hellos.append({"reason": "udp.server does not resolve", "hello": msg})
            return
        self._accept_hello(msg, _hex16(udp["key"]), _hex16(udp["nonce"]), server, int(udp["port"]))

    def _handle_goodbye(self, msg: dict) -> None:
        # FW >= 2.3.0: acted on only if session_id is a string equal to ours.
        sid = msg.get("session_id")
        with self._cond:
            matches = isinstance(sid, str) and sid == self.session_id
            (self.goodbyes_acted if matches else self.goodbyes_ignored).append(msg)
            current = self._sock
        if matches and current is not None:
            # Closed without a goodbye of our own; off the network thread, as FW schedules it.
            threading.Thread(target=self._close_udp, args=(current,), daemon=True).start()

    def _new_socket(self) -> socket.socket:
        # A new socket (new source port) per conversation, connect()ed so that it
        # only hears the advertised server address.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(self.udp_addr)
        return sock

    def _recv(self, sock):
        return sock.recv(UDP_RECV_BUFFER), self.udp_addr

    def _on_datagram(self, data: bytes, source) -> None:
        # §5.3, current firmware.
        if len(data) < crypto.HEADER_LEN:
            self.dropped["too_short"] += 1
            return
        header = crypto.unpack_header(data)
        if header.type != crypto.PACKET_TYPE_AUDIO:
            self.dropped["bad_type"] += 1
            return
        if len(data) != crypto.HEADER_LEN + header.length:
            self.dropped["bad_length"] += 1
            return
        if header.seq <= self.remote_seq:
            self.dropped["old_seq"] += 1
            return
        if header.seq != self.remote_seq + 1:
            self.sequence_gaps += 1
        opus = crypto.aes_ctr(self.key, data[: crypto.HEADER_LEN], data[crypto.HEADER_LEN :])
        self.remote_seq = header.seq
        self._deliver(header, opus, source)

    def header_for(self, length: int, timestamp: int, seq: int) -> bytes:
        return crypto.firmware_header(self.nonce, length, timestamp, seq)

    def send_raw(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None, "audio channel is closed"
        sock.send(data)


# -- py-xiaozhi -----------------------------------------------------------------------------------


class PyXiaozhiDevice(_Device):
    """py-xiaozhi (huangjunsen0406/py-xiaozhi) over MQTT + UDP."""

    name = "py-xiaozhi"
    default_keepalive = 60

    def __init__(self, *args, subscribe_topic: str | None = None, disconnect_on_goodbye: bool = True, **kw):
        super().__init__(*args, **kw)
        topic = subscribe_topic or f"devices/p2p/{self.mac_}"
        if topic != "null" and not kw.get("subscribe"):
            self.subscriptions = [(topic, 1)]
        self.disconnect_on_goodbye = disconnect_on_goodbye

    @classmethod
    def from_ota(cls, mqtt_section: dict, **kw):
        kw.setdefault("subscribe_topic", mqtt_section.get("subscribe_topic"))
        return super().from_ota(mqtt_section, **kw)

    def hello_message(self) -> str:
        return dumps(
            {
                "type": "hello",
                "version": 3,
                "features": {"mcp": True},
                "transport": "udp",
                "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
            }
        )

    def _handle_server_hello(self, msg: dict) -> None:
        if msg.get("transport") != "udp":
            with self._cond:
                self.ignored_hellos.append({"reason": "transport is not udp", "hello": msg})
            return
        try:
            udp = msg["udp"]
            key, nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
            server, port = udp["server"], int(udp["port"])
            if len(key) != 16 or len(nonce) != 16:
                raise ValueError("key/nonce length")
        except (KeyError, TypeError, ValueError) as exc:
            with self._cond:
                self.ignored_hellos.append({"reason": repr(exc), "hello": msg})
            return
        self._accept_hello(msg, key, nonce, server, port)

    def _handle_goodbye(self, msg: dict) -> None:
        sid = msg.get("session_id")
        with self._cond:
            matches = sid is None or sid == self.session_id
            (self.goodbyes_acted if matches else self.goodbyes_ignored).append(msg)
            current = self._sock
        if matches:
            def end():
                if current is not None:
                    self._close_udp(current)
                if self.disconnect_on_goodbye:
                    self._mqttc.disconnect()

            threading.Thread(target=end, daemon=True).start()

    def goodbye(self) -> None:
        session = self.session_id
        self.send_json({"session_id": session, "type": "goodbye"})
        self._close_udp()
        if self.disconnect_on_goodbye:
            time.sleep(0.05)  # let the loop thread write the goodbye first
            self.disconnect()

    def _new_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", 0))
        return sock

    def _recv(self, sock):
        return sock.recvfrom(4096)

    def _on_datagram(self, data: bytes, source) -> None:
        if len(data) < crypto.HEADER_LEN:
            self.dropped["too_short"] += 1
            return
        # No type, length or sequence checks: decrypt everything after the header.
        opus = crypto.aes_ctr(self.key, data[: crypto.HEADER_LEN], data[crypto.HEADER_LEN :])
        self.remote_seq = crypto.unpack_header(data).seq
        self._deliver(crypto.unpack_header(data), opus, source)

    def header_for(self, length: int, timestamp: int, seq: int) -> bytes:
        # py-xiaozhi never writes a timestamp: bytes 8..11 keep the server nonce.
        return crypto.pyxiaozhi_header(self.nonce, length, seq)

    def send_raw(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None, "audio channel is closed"
        sock.sendto(data, self.udp_addr)
