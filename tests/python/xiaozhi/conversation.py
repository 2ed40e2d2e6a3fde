"""Steps and checks shared by the voice tests: open a conversation, push
audio both ways and compare, check a server hello the way firmware reads it."""

from __future__ import annotations

import os
import re
import time

import crypto
from backend import BACKEND_AUDIO_PARAMS, BackendSession, ChatBackend
from device import FirmwareDevice, _Device
from gateway import HOST, Gateway

HEX32 = re.compile(r"[0-9a-fA-F]{32}")


def opus_frames(count: int, min_len: int = 90, max_len: int = 200) -> list[bytes]:
    """Random stand-ins for Opus frames (~100-200 bytes, like real 60 ms frames)."""
    sizes = [min_len + (b % (max_len - min_len + 1)) for b in os.urandom(count)]
    return [os.urandom(n) for n in sizes]


def assert_udp_hello(reply: dict, gw: Gateway, session: BackendSession | None = None) -> None:
    """The server hello as §4.2 has it, with the fields firmware v2.4.x requires."""
    assert reply.get("type") == "hello", reply
    assert reply.get("version") == 3, reply
    assert reply.get("transport") == "udp", reply
    assert FirmwareDevice.validate_hello(reply) is None, (FirmwareDevice.validate_hello(reply), reply)
    udp = reply["udp"]
    assert udp["server"] == HOST, reply
    assert udp["port"] == gw.udp_port, reply
    assert udp["encryption"] == "aes-128-ctr", reply
    assert HEX32.fullmatch(udp["key"]) and HEX32.fullmatch(udp["nonce"]), reply
    nonce = bytes.fromhex(udp["nonce"])
    assert nonce[0:4] == b"\x01\x00\x00\x00", f"nonce must start 01 00 0000: {udp['nonce']}"
    assert nonce[8:16] == bytes(8), f"nonce bytes 8..15 must be zero: {udp['nonce']}"
    assert isinstance(reply.get("session_id"), str) and reply["session_id"], reply
    if session is not None:
        assert reply["session_id"] == session.id, (reply, session)
        assert reply.get("audio_params") == BACKEND_AUDIO_PARAMS, reply


def open_conversation(dev: _Device, backend: ChatBackend, index: int = 0) -> tuple[dict, BackendSession]:
    """Hello from `dev`; returns the server hello and the backend session it opened."""
    reply = dev.hello()
    session = backend.wait_session_for(dev.mac, index=index)
    return reply, session


def round_trip(dev: _Device, session: BackendSession, count: int = 20, ts_base: int = 1000, first_turn: bool = True) -> list[bytes]:
    """Send `count` frames up, check the backend got each once, in order, with
    the header's timestamp and length, then check the echoes the backend sends
    back reach the device decrypted, in order, with increasing sequences."""
    frames = opus_frames(count)
    already = len(session.frames)
    sent = []
    for i, frame in enumerate(frames):
        sent.append(dev.send_audio(frame, ts_base + 60 * i))
        time.sleep(0.002)  # a little pacing; the firmware sends one frame per 60 ms
    expected_ts = [crypto.unpack_header(d).timestamp for d in sent]

    got = session.wait_frames(already + count, timeout=10)[already:]
    assert [(f.timestamp, f.length, f.payload) for f in got] == [
        (t, len(f), f) for t, f in zip(expected_ts, frames)
    ], f"backend got {len(got)} of {count} frames, or different ones"

    packets = dev.recv_audio_many(count, timeout=10)
    assert [p.opus for p in packets] == frames, "TTS echoes decrypt to different bytes"
    assert [p.header.timestamp for p in packets] == expected_ts
    assert all(p.header.type == 1 and p.header.length == len(p.opus) for p in packets)
    seqs = [p.header.seq for p in packets]
    assert seqs == sorted(set(seqs)), f"sequences not strictly increasing: {seqs}"
    if first_turn:
        assert seqs == list(range(1, count + 1)), f"server sequences of a new conversation start at 1: {seqs}"
    conn_id = crypto.conn_id_of_nonce(dev.nonce)
    assert all(p.header.conn_id == conn_id for p in packets), "server packets carry the connection id"
    return frames


def wait_counters(gw: Gateway, before: dict[str, float], expected: dict[str, float], timeout: float = 5.0) -> dict[str, float]:
    """Poll /metrics until each counter in `expected` moved by exactly that much since `before`; returns the deltas."""
    deadline = time.monotonic() + timeout
    while True:
        now = gw.udp_counters()
        delta = {k: now.get(k, 0) - before.get(k, 0) for k in set(now) | set(before) | set(expected)}
        if all(delta.get(k, 0) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return delta
        time.sleep(0.1)
