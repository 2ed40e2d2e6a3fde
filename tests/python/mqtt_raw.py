"""A minimal MQTT 3.1.1 client on a raw TCP socket.

paho-mqtt hides exactly the details some conformance checks are about: it
acknowledges and resends on its own, refuses to send invalid packets, and
reconnects by itself. This client does nothing unless told to, so a test can
hold back an acknowledgement, drop the socket mid-flow, or send a packet the
broker must reject, and then look at every byte the broker sends back.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

# Control packet types (MQTT 3.1.1 section 2.2.1).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
}


def encode_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def encode_str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + encode_remaining_length(len(body)) + body


def connect_packet(
    client_id: str,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    protocol_name: str = "MQTT",
    protocol_level: int = 4,
) -> bytes:
    flags = 0x02 if clean else 0x00
    payload = encode_str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += encode_str(topic) + encode_str(message)
    body = encode_str(protocol_name) + bytes([protocol_level, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, body + payload)


def publish_packet(
    topic: str,
    payload: bytes,
    qos: int = 0,
    pid: int | None = None,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = encode_str(topic)
    if qos > 0:
        assert pid is not None, "QoS > 0 needs a packet identifier"
        body += struct.pack("!H", pid)
    return packet(PUBLISH, flags, body + payload)


def subscribe_packet(pid: int, filters: list[tuple[str, int]], flags: int = 0x02) -> bytes:
    body = struct.pack("!H", pid)
    for topic_filter, qos in filters:
        body += encode_str(topic_filter) + bytes([qos])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe_packet(pid: int, filters: list[str]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(encode_str(f) for f in filters)
    return packet(UNSUBSCRIBE, 0x02, body)


def ack_packet(ptype: int, pid: int) -> bytes:
    # PUBREL carries the fixed flags 0b0010 (MQTT-3.6.1-1); the others 0.
    return packet(ptype, 0x02 if ptype == PUBREL else 0x00, struct.pack("!H", pid))


@dataclass
class Packet:
    ptype: int
    flags: int
    body: bytes

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.ptype, f"type{self.ptype}")

    @property
    def pid(self) -> int:
        """Packet identifier of an ack, SUBACK, UNSUBACK or QoS>0 PUBLISH."""
        if self.ptype == PUBLISH:
            return self.publish()[3]
        return struct.unpack("!H", self.body[:2])[0]

    def publish(self) -> tuple[str, bytes, int, int | None, bool, bool]:
        """(topic, payload, qos, pid, retain, dup) of a PUBLISH."""
        assert self.ptype == PUBLISH, f"not a PUBLISH: {self}"
        qos = (self.flags >> 1) & 0x03
        (tlen,) = struct.unpack("!H", self.body[:2])
        topic = self.body[2 : 2 + tlen].decode()
        pos = 2 + tlen
        pid = None
        if qos > 0:
            (pid,) = struct.unpack("!H", self.body[pos : pos + 2])
            pos += 2
        return topic, self.body[pos:], qos, pid, bool(self.flags & 0x01), bool(self.flags & 0x08)

    def __repr__(self) -> str:
        if self.ptype == PUBLISH:
            topic, payload, qos, pid, retain, dup = self.publish()
            return (
                f"PUBLISH(topic={topic!r}, payload={payload[:40]!r}, qos={qos}, "
                f"pid={pid}, retain={retain}, dup={dup})"
            )
        return f"{self.name}(flags={self.flags:#x}, body={self.body.hex()})"


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._buf = bytearray()

    # -- transport ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet from broker in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet from broker in time") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Closed(str(exc)) from None
        if not chunk:
            raise Closed("EOF")
        self._buf += chunk

    def _try_parse(self) -> Packet | None:
        if len(self._buf) < 2:
            return None
        length, mult, pos = 0, 1, 1
        while True:
            if pos >= len(self._buf):
                return None
            byte = self._buf[pos]
            length += (byte & 0x7F) * mult
            mult *= 128
            pos += 1
            if not byte & 0x80:
                break
        if len(self._buf) < pos + length:
            return None
        first = self._buf[0]
        body = bytes(self._buf[pos : pos + length])
        del self._buf[: pos + length]
        return Packet(first >> 4, first & 0x0F, body)

    def recv(self, timeout: float | None = None) -> Packet:
        """Next packet; TimeoutError if none in time, Closed on EOF/reset."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            pkt = self._try_parse()
            if pkt is not None:
                return pkt
            self._fill(deadline)

    def expect(self, ptype: int, timeout: float | None = None) -> Packet:
        pkt = self.recv(timeout)
        assert pkt.ptype == ptype, f"expected {PACKET_NAMES[ptype]}, got {pkt!r}"
        return pkt

    def recv_all(self, window: float) -> list[Packet]:
        """Every packet that arrives within `window` seconds (stops at EOF)."""
        out: list[Packet] = []
        deadline = time.monotonic() + window
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.recv(remaining))
            except (TimeoutError, Closed):
                return out

    def wait_closed(self, timeout: float) -> list[Packet]:
        """Wait for the broker to close the connection.

        Returns the packets received before the close; raises AssertionError
        if the connection is still open after `timeout`.
        """
        got: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.recv(max(remaining, 0.001)))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"broker kept the connection open for {timeout}s; received {got!r}"
                ) from None

    def close(self) -> None:
        """Drop the TCP connection without an MQTT DISCONNECT."""
        try:
            self.sock.close()
        except OSError:
            pass

    # -- MQTT conveniences -------------------------------------------------

    def connect(self, client_id: str, clean: bool = True, keepalive: int = 60, **kw) -> tuple[bool, int]:
        """Send CONNECT and return (session_present, return_code) of the CONNACK."""
        self.send(connect_packet(client_id, clean, keepalive, **kw))
        ack = self.expect(CONNACK)
        assert len(ack.body) == 2, f"CONNACK must have a 2-byte body: {ack!r}"
        return bool(ack.body[0] & 0x01), ack.body[1]

    def subscribe(self, pid: int, filters: list[tuple[str, int]]) -> list[int]:
        self.send(subscribe_packet(pid, filters))
        ack = self.expect(SUBACK)
        assert ack.pid == pid, f"SUBACK for packet {ack.pid}, expected {pid}"
        return list(ack.body[2:])

    def subscribe_receiving(self, pid: int, filters: list[tuple[str, int]]) -> tuple[list[int], list[Packet]]:
        """Subscribe on a connection that may be delivered to at once.

        The server is permitted to send matching PUBLISH packets before the
        SUBACK (MQTT 3.1.1 section 3.8.4), so those are returned beside the
        granted QoS list instead of failing the exchange.
        """
        self.send(subscribe_packet(pid, filters))
        before: list[Packet] = []
        while True:
            pkt = self.recv()
            if pkt.ptype != SUBACK:
                before.append(pkt)
                continue
            assert pkt.pid == pid, f"SUBACK for packet {pkt.pid}, expected {pid}"
            return list(pkt.body[2:]), before

    def publish(self, topic: str, payload: bytes, qos: int = 0, pid: int | None = None, **kw) -> None:
        """Publish and complete the QoS flow from the sender's side.

        Expects the acknowledgements to be the next packets, so use it on a
        connection that is not also receiving publications.
        """
        self.send(publish_packet(topic, payload, qos, pid, **kw))
        if qos == 1:
            assert self.expect(PUBACK).pid == pid
        elif qos == 2:
            assert self.expect(PUBREC).pid == pid
            self.send(ack_packet(PUBREL, pid))
            assert self.expect(PUBCOMP).pid == pid

    def disconnect(self) -> None:
        try:
            self.send(packet(DISCONNECT, 0, b""))
        except OSError:
            pass
        self.close()
