"""MQTT-SN 1.2 messages encoded and decoded by hand, and a raw UDP client.

Written from the MQTT-SN 1.2 specification (section 5, "Message Formats"),
independently of the broker's own codec, for the flows the third-party client
library does not cover: the gateway's side of a flow a test must hold back
(unacknowledged downlink, held REGACKs), ADVERTISE, sleeping clients woken by
a PINGREQ with a client id, forwarder encapsulation, and malformed datagrams.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

# Message types (MQTT-SN 1.2 §5.2.2, Table 3).
ADVERTISE = 0x00
SEARCHGW = 0x01
GWINFO = 0x02
CONNECT = 0x04
CONNACK = 0x05
WILLTOPICREQ = 0x06
WILLTOPIC = 0x07
WILLMSGREQ = 0x08
WILLMSG = 0x09
REGISTER = 0x0A
REGACK = 0x0B
PUBLISH = 0x0C
PUBACK = 0x0D
PUBCOMP = 0x0E
PUBREC = 0x0F
PUBREL = 0x10
SUBSCRIBE = 0x12
SUBACK = 0x13
UNSUBSCRIBE = 0x14
UNSUBACK = 0x15
PINGREQ = 0x16
PINGRESP = 0x17
DISCONNECT = 0x18
WILLTOPICUPD = 0x1A
WILLTOPICRESP = 0x1B
WILLMSGUPD = 0x1C
WILLMSGRESP = 0x1D
ENCAPSULATED = 0xFE

NAMES = {v: k for k, v in dict(globals()).items() if k.isupper() and isinstance(v, int)}

# Flags (§5.3.4).
DUP = 0x80
RETAIN = 0x10
WILL = 0x08
CLEAN = 0x04
TOPIC_NORMAL = 0b00
TOPIC_PREDEFINED = 0b01
TOPIC_SHORT = 0b10

# Return codes (§5.3.10, Table 5).
ACCEPTED = 0x00
CONGESTION = 0x01
INVALID_TOPIC_ID = 0x02
NOT_SUPPORTED = 0x03


def qos_bits(qos: int) -> int:
    """QoS -1 is 0b11 in bits 6-5 (§5.3.4)."""
    return (0b11 if qos == -1 else qos) << 5


def flags_qos(flags: int) -> int:
    q = (flags >> 5) & 0b11
    return -1 if q == 0b11 else q


def short_id(name: str) -> int:
    """A two-character short topic name carried in the TopicId field (§3 and §6.7)."""
    raw = name.encode()
    assert len(raw) == 2, name
    return struct.unpack(">H", raw)[0]


def frame(mtype: int, body: bytes = b"") -> bytes:
    """Length, MsgType, body: one octet of length up to 255, else 0x01 and two (§5.2.1)."""
    if len(body) + 2 <= 255:
        return bytes([len(body) + 2, mtype]) + body
    return b"\x01" + struct.pack(">H", len(body) + 4) + bytes([mtype]) + body


# -- encoders (§5.4) -------------------------------------------------------


def searchgw(radius: int = 0) -> bytes:
    return frame(SEARCHGW, bytes([radius]))


def connect(client_id: str, duration: int = 60, clean: bool = True, will: bool = False) -> bytes:
    flags = (CLEAN if clean else 0) | (WILL if will else 0)
    return frame(CONNECT, bytes([flags, 0x01]) + struct.pack(">H", duration) + client_id.encode())


def willtopic(topic: str, qos: int = 0, retain: bool = False) -> bytes:
    return frame(WILLTOPIC, bytes([qos_bits(qos) | (RETAIN if retain else 0)]) + topic.encode())


def willmsg(data: bytes) -> bytes:
    return frame(WILLMSG, data)


def willtopicupd(topic: str | None, qos: int = 0, retain: bool = False) -> bytes:
    """WILLTOPICUPD; `None` is the empty message that removes the will (§5.4.22)."""
    if topic is None:
        return frame(WILLTOPICUPD)
    return frame(WILLTOPICUPD, bytes([qos_bits(qos) | (RETAIN if retain else 0)]) + topic.encode())


def willmsgupd(data: bytes) -> bytes:
    return frame(WILLMSGUPD, data)


def register(topic_id: int, msg_id: int, name: str) -> bytes:
    return frame(REGISTER, struct.pack(">HH", topic_id, msg_id) + name.encode())


def regack(topic_id: int, msg_id: int, rc: int = ACCEPTED) -> bytes:
    return frame(REGACK, struct.pack(">HHB", topic_id, msg_id, rc))


def publish(
    topic_id: int,
    data: bytes,
    qos: int = 0,
    msg_id: int = 0,
    topic_type: int = TOPIC_NORMAL,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    flags = qos_bits(qos) | topic_type | (RETAIN if retain else 0) | (DUP if dup else 0)
    return frame(PUBLISH, bytes([flags]) + struct.pack(">HH", topic_id, msg_id) + data)


def puback(topic_id: int, msg_id: int, rc: int = ACCEPTED) -> bytes:
    return frame(PUBACK, struct.pack(">HHB", topic_id, msg_id, rc))


def pubrec(msg_id: int) -> bytes:
    return frame(PUBREC, struct.pack(">H", msg_id))


def pubrel(msg_id: int) -> bytes:
    return frame(PUBREL, struct.pack(">H", msg_id))


def pubcomp(msg_id: int) -> bytes:
    return frame(PUBCOMP, struct.pack(">H", msg_id))


def subscribe(topic: str | int, msg_id: int, qos: int = 0, topic_type: int = TOPIC_NORMAL) -> bytes:
    """By name (a str, normal type) or by id (an int, predefined or short type)."""
    flags = qos_bits(qos) | topic_type
    field = topic.encode() if isinstance(topic, str) else struct.pack(">H", topic)
    return frame(SUBSCRIBE, bytes([flags]) + struct.pack(">H", msg_id) + field)


def unsubscribe(topic: str | int, msg_id: int, topic_type: int = TOPIC_NORMAL) -> bytes:
    field = topic.encode() if isinstance(topic, str) else struct.pack(">H", topic)
    return frame(UNSUBSCRIBE, bytes([topic_type]) + struct.pack(">H", msg_id) + field)


def pingreq(client_id: str = "") -> bytes:
    return frame(PINGREQ, client_id.encode())


def disconnect(duration: int | None = None) -> bytes:
    return frame(DISCONNECT, b"" if duration is None else struct.pack(">H", duration))


def encapsulate(node_id: bytes, inner: bytes, radius: int = 0) -> bytes:
    """Forwarder encapsulation (§5.5): Length, 0xFE, Ctrl, Wireless Node Id, message."""
    return bytes([3 + len(node_id), ENCAPSULATED, radius & 0b11]) + node_id + inner


# -- decoder -------------------------------------------------------------


@dataclass
class Packet:
    mtype: int
    raw: bytes
    flags: int = 0
    topic_id: int = 0
    msg_id: int = 0
    rc: int = 0
    data: bytes = b""
    gw_id: int = 0
    duration: int | None = None
    node_id: bytes = b""
    inner: "Packet | None" = None

    @property
    def name(self) -> str:
        return NAMES.get(self.mtype, hex(self.mtype))

    @property
    def qos(self) -> int:
        return flags_qos(self.flags)

    @property
    def dup(self) -> bool:
        return bool(self.flags & DUP)

    @property
    def retain(self) -> bool:
        return bool(self.flags & RETAIN)

    @property
    def topic_type(self) -> int:
        return self.flags & 0b11

    def __repr__(self) -> str:
        fields = f"flags={self.flags:#04x} topic_id={self.topic_id} msg_id={self.msg_id} rc={self.rc}"
        return f"<{self.name} {fields} data={self.data!r}>"


class Malformed(Exception):
    pass


def parse(datagram: bytes) -> Packet:
    """One message per datagram, its Length checked against the datagram's size."""
    if len(datagram) < 2:
        raise Malformed(f"{len(datagram)} octets")
    if datagram[1] == ENCAPSULATED and datagram[0] != 0x01:
        hdr = datagram[0]
        if hdr < 3 or len(datagram) < hdr:
            raise Malformed("encapsulation header")
        inner = parse(datagram[hdr:])
        return Packet(ENCAPSULATED, datagram, flags=datagram[2], node_id=datagram[3:hdr], inner=inner)
    if datagram[0] == 0x01:
        if len(datagram) < 4:
            raise Malformed("three-octet length")
        length, mtype, body = struct.unpack(">H", datagram[1:3])[0], datagram[3], datagram[4:]
    else:
        length, mtype, body = datagram[0], datagram[1], datagram[2:]
    if length != len(datagram):
        raise Malformed(f"length field {length}, datagram {len(datagram)}")
    p = Packet(mtype, datagram)
    try:
        if mtype == ADVERTISE:
            p.gw_id, p.duration = body[0], struct.unpack(">H", body[1:3])[0]
        elif mtype == GWINFO:
            p.gw_id, p.data = body[0], body[1:]
        elif mtype in (CONNACK, WILLTOPICRESP, WILLMSGRESP):
            p.rc = body[0]
        elif mtype in (REGISTER,):
            p.topic_id, p.msg_id = struct.unpack(">HH", body[:4])
            p.data = body[4:]
        elif mtype in (REGACK, PUBACK):
            p.topic_id, p.msg_id, p.rc = struct.unpack(">HHB", body[:5])
        elif mtype == PUBLISH:
            p.flags = body[0]
            p.topic_id, p.msg_id = struct.unpack(">HH", body[1:5])
            p.data = body[5:]
        elif mtype in (PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            (p.msg_id,) = struct.unpack(">H", body[:2])
        elif mtype == SUBACK:
            p.flags = body[0]
            p.topic_id, p.msg_id, p.rc = struct.unpack(">HHB", body[1:6])
        elif mtype == DISCONNECT and body:
            (p.duration,) = struct.unpack(">H", body[:2])
        else:
            p.data = body
    except (IndexError, struct.error) as e:
        raise Malformed(f"{NAMES.get(mtype, mtype)}: {e}") from None
    return p


# -- client --------------------------------------------------------------


class SnRaw:
    """A UDP socket talking MQTT-SN to one gateway address.

    `node_id` set: every message goes out wrapped as a forwarder would wrap
    it (§5.5), and answers must come back wrapped with the same node id.
    """

    def __init__(self, host: str, port: int, node_id: bytes | None = None, sock: socket.socket | None = None):
        self.gateway = (host, port)
        self.node_id = node_id
        self.sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sock is None:
            self.sock.bind((host, 0))
        self._next_id = 1
        self.pending: list[Packet] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def next_id(self) -> int:
        mid = self._next_id
        self._next_id = self._next_id % 0xFFFF + 1
        return mid

    def send(self, message: bytes) -> None:
        if self.node_id is not None:
            message = encapsulate(self.node_id, message)
        self.sock.sendto(message, self.gateway)

    def send_raw(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.gateway)

    def recv(self, timeout: float = 5.0) -> Packet:
        """The next message from the gateway (unwrapped), or TimeoutError."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no datagram from the gateway within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            if peer != self.gateway:
                continue
            p = parse(data)
            if self.node_id is not None:
                assert p.mtype == ENCAPSULATED, f"answer to a forwarded message not encapsulated: {p}"
                assert p.node_id == self.node_id, f"wireless node id {p.node_id!r}, sent {self.node_id!r}"
                assert p.inner is not None
                return p.inner
            return p

    def expect(self, mtype: int, timeout: float = 5.0) -> Packet:
        """The next message, which must be of type `mtype`."""
        p = self.recv(timeout)
        assert p.mtype == mtype, f"expected {NAMES[mtype]}, got {p}"
        return p

    def wait_for(self, mtype: int, timeout: float = 5.0) -> Packet:
        """The first message of type `mtype`; others are kept for `recv`."""
        deadline = time.monotonic() + timeout
        skipped: list[Packet] = []
        try:
            while True:
                p = self.recv(max(0.0, deadline - time.monotonic()))
                if p.mtype == mtype:
                    return p
                skipped.append(p)
        finally:
            self.pending = skipped + self.pending

    def quiet(self, window: float) -> list[Packet]:
        """Everything received within `window` seconds (the caller asserts it is empty)."""
        got = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + window
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.recv(remaining))
            except TimeoutError:
                break
        return got

    # -- flows -----------------------------------------------------------

    def connect(
        self,
        client_id: str,
        duration: int = 60,
        clean: bool = True,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> int:
        """CONNECT (and the will dialogue, §6.2); returns CONNACK's return code."""
        self.send(connect(client_id, duration, clean, will is not None))
        if will is not None:
            topic, message, qos, retain = will
            self.expect(WILLTOPICREQ)
            self.send(willtopic(topic, qos, retain))
            self.expect(WILLMSGREQ)
            self.send(willmsg(message))
        return self.expect(CONNACK).rc

    def register(self, name: str) -> int:
        mid = self.next_id()
        self.send(register(0, mid, name))
        ack = self.expect(REGACK)
        assert (ack.msg_id, ack.rc) == (mid, ACCEPTED), ack
        return ack.topic_id

    def subscribe(self, topic: str | int, qos: int = 0, topic_type: int = TOPIC_NORMAL) -> Packet:
        mid = self.next_id()
        self.send(subscribe(topic, mid, qos, topic_type))
        ack = self.expect(SUBACK)
        assert ack.msg_id == mid, ack
        return ack

    def publish(
        self, topic_id: int, data: bytes, qos: int = 0, topic_type: int = TOPIC_NORMAL, retain: bool = False
    ) -> Packet | None:
        """PUBLISH and its QoS flow; returns PUBACK (QoS 1) or PUBCOMP (QoS 2)."""
        mid = self.next_id() if qos > 0 else 0
        self.send(publish(topic_id, data, qos, mid, topic_type, retain))
        if qos == 1:
            return self.expect(PUBACK)
        if qos == 2:
            rec = self.expect(PUBREC)
            assert rec.msg_id == mid, rec
            self.send(pubrel(mid))
            comp = self.expect(PUBCOMP)
            assert comp.msg_id == mid, comp
            return comp
        return None

    def ack(self, p: Packet) -> None:
        """Acknowledge a downlink PUBLISH (or REGISTER) as a well-behaved client does."""
        if p.mtype == REGISTER:
            self.send(regack(p.topic_id, p.msg_id))
        elif p.mtype == PUBLISH and p.qos == 1:
            self.send(puback(p.topic_id, p.msg_id))
        elif p.mtype == PUBLISH and p.qos == 2:
            self.send(pubrec(p.msg_id))
            rel = self.expect(PUBREL)
            assert rel.msg_id == p.msg_id, rel
            self.send(pubcomp(p.msg_id))

    def close(self) -> None:
        self.sock.close()
