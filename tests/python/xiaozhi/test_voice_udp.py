"""The UDP audio path against bad datagrams (§5.3, §10.6, §10.7): replays,
reordering, sequence 0, spoofed sources and malformed packets are dropped,
never forwarded, and counted in /metrics by reason."""

from __future__ import annotations

import os
import time

import pytest

import crypto
from conversation import open_conversation, opus_frames, wait_counters

REASONS = ("too_short", "bad_type", "bad_length", "unknown_conn", "no_conversation", "replayed", "wrong_source", "too_large")


@pytest.fixture(params=["bpf", "forward"])
def udp_gateway(request, gateway_factory):
    return gateway_factory({"voice": {"steering": request.param}}, shards=2)


def payloads(session) -> list[bytes]:
    return [f.payload for f in session.frames]


def settle(session, count: int) -> list[bytes]:
    """The backend's frames once `count` have arrived and a moment has passed for strays."""
    session.wait_frames(count, timeout=10)
    time.sleep(0.3)
    return payloads(session)


def assert_only(delta: dict, expected: dict) -> None:
    moved = {k: v for k, v in delta.items() if k in REASONS and v}
    assert moved == expected, f"drop counters moved by {moved}, expected {expected}"


def test_replayed_packets_dropped(udp_gateway, backend, make_device):
    gw = udp_gateway
    dev = make_device(gw)
    _, session = open_conversation(dev, backend)
    before = gw.udp_counters()
    f = opus_frames(3)
    d1 = dev.send_audio(f[0], 100)
    d2 = dev.send_audio(f[1], 160)
    dev.send_raw(d2)  # the same datagram again
    dev.send_raw(d1)  # and an older one
    dev.send_audio(f[2], 220)
    assert settle(session, 3) == f
    delta = wait_counters(gw, before, {"replayed": 2})
    assert_only(delta, {"replayed": 2})


def test_reordered_and_sequence_zero(udp_gateway, backend, make_device):
    gw = udp_gateway
    dev = make_device(gw)
    _, session = open_conversation(dev, backend)
    before = gw.udp_counters()
    f = opus_frames(8)
    dev.send_raw(dev.craft(f[0], seq=0))  # the first sequence is 1: 0 is dropped
    for seq in (1, 2, 3, 4, 6, 5, 7):  # 5 arrives after 6: dropped, the gap itself is fine
        dev.send_raw(dev.craft(f[seq], seq=seq, timestamp=seq * 60))
        time.sleep(0.005)
    assert settle(session, 6) == [f[1], f[2], f[3], f[4], f[6], f[7]]
    assert [fr.timestamp for fr in session.frames] == [60, 120, 180, 240, 360, 420]
    delta = wait_counters(gw, before, {"replayed": 2})
    assert_only(delta, {"replayed": 2})


def test_spoofed_source_dropped(udp_gateway, backend, make_device):
    gw = udp_gateway
    dev = make_device(gw)
    _, session = open_conversation(dev, backend)
    f = opus_frames(3)
    dev.send_audio(f[0], 60)  # pins the device's address
    assert settle(session, 1) == [f[0]]
    before = gw.udp_counters()

    # A packet with the right conn id (even the right key) from another address.
    dev.attacker_send(dev.craft(b"spoofed-frame", seq=2, timestamp=120))
    dev.attacker_send(dev.craft(b"spoofed-frame", seq=1000, timestamp=120))
    delta = wait_counters(gw, before, {"wrong_source": 2})
    assert_only(delta, {"wrong_source": 2})

    # The device's own next packets still go through, and replies still go to the device.
    dev.send_audio(f[1], 120)  # seq 2: the spoofed seq 1000 did not move the window
    dev.send_audio(f[2], 180)
    assert settle(session, 3) == f
    echoes = dev.recv_audio_many(3, timeout=10)
    assert [p.opus for p in echoes] == f
    assert dev.attacker_recv(0.5) is None, "nothing may be sent to the spoofing address"


def test_malformed_datagrams_dropped(udp_gateway, backend, make_device):
    gw = udp_gateway
    dev = make_device(gw)
    _, session = open_conversation(dev, backend)
    f = opus_frames(2)
    dev.send_audio(f[0])
    assert settle(session, 1) == [f[0]]
    conn_id = crypto.conn_id_of_nonce(dev.nonce)
    before = gw.udp_counters()

    cases = {
        "too_short": dev.craft(b"", seq=2)[:10],
        "bad_type": dev.craft(b"type two", seq=2, type=2),
        "bad_length": dev.craft(b"x" * 100, seq=2, length=200),  # header says more than is there
        "unknown_conn": dev.craft(b"nobody", seq=2, conn_id=conn_id ^ 0xFFFFFFFF),
        "too_large": dev.craft(os.urandom(65000), seq=2),
    }
    for data in cases.values():
        dev.send_raw(data)
    delta = wait_counters(gw, before, {reason: 1 for reason in cases})
    assert_only(delta, {reason: 1 for reason in cases})

    dev.send_audio(f[1])  # seq 2, never used by the dropped ones
    assert settle(session, 2) == f


def test_packet_after_conversation_end_dropped(udp_gateway, backend, make_device):
    gw = udp_gateway
    dev = make_device(gw)
    _, session = open_conversation(dev, backend)
    dev.send_audio(b"first")
    assert settle(session, 1) == [b"first"]
    stale = dev.craft(b"late", seq=2)
    dev.goodbye()
    assert session.wait_closed(5)
    dev.recv_json("goodbye", 5)
    before = gw.udp_counters()
    dev.attacker_send(stale)
    # The conn id may still name the MQTT connection (no_conversation) or be gone (unknown_conn).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = gw.udp_counters()
        moved = {k: now.get(k, 0) - before.get(k, 0) for k in REASONS}
        if any(moved.values()):
            break
        time.sleep(0.1)
    time.sleep(0.2)
    now = gw.udp_counters()
    moved = {k: now.get(k, 0) - before.get(k, 0) for k in REASONS if now.get(k, 0) != before.get(k, 0)}
    assert moved in ({"no_conversation": 1}, {"unknown_conn": 1}), moved
    assert payloads(session) == [b"first"]


@pytest.mark.parametrize("steering", ["bpf", "forward"])
def test_forwarded_counter_follows_steering(gateway_factory, backend, make_device, steering):
    # shardmq_voice_udp_forwarded_total counts datagrams that arrived on a
    # socket of a shard other than the conversation's and were passed on. The
    # BPF program delivers each datagram to its owner's socket: none forwarded.
    # Without it the kernel spreads datagrams by address: with 16 devices on 2
    # shards, some land on the wrong shard (all landing right: p = 2^-16).
    gw = gateway_factory({"voice": {"steering": steering}}, shards=2)
    devices = [make_device(gw) for _ in range(16)]
    sessions = [open_conversation(dev, backend)[1] for dev in devices]
    before = gw.udp_counters()
    for dev in devices:
        for frame in opus_frames(3):
            dev.send_audio(frame)
    for session in sessions:
        assert len(settle(session, 3)) == 3
    forwarded = gw.udp_counters()["forwarded"] - before["forwarded"]
    if steering == "bpf":
        assert forwarded == 0, f"{forwarded} datagrams forwarded although the BPF program steers them"
    else:
        assert forwarded > 0, "no datagram forwarded between shards with steering = forward"
    assert_only(wait_counters(gw, before, {}), {})
