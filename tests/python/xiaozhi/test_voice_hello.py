"""The hello handshake (§4): what an invalid hello gets, and a second hello
replacing the conversation in progress."""

from __future__ import annotations

import time

import pytest

from conversation import assert_udp_hello, open_conversation, round_trip

AUDIO = {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}


@pytest.mark.parametrize(
    "hello",
    [
        {"type": "hello", "version": 2, "transport": "udp", "features": {"mcp": True}, "audio_params": AUDIO},
        {"type": "hello", "version": 3, "transport": "websocket", "features": {"mcp": True}, "audio_params": AUDIO},
        {"type": "hello", "transport": "udp", "audio_params": AUDIO},
    ],
    ids=["version-2", "transport-websocket", "no-version"],
)
def test_invalid_hello_gets_error(gateway, backend, make_device, hello):
    dev = make_device(gateway)
    dev.send_json(hello)
    error = dev.recv_json("error", 5)
    assert isinstance(error.get("message"), str) and error["message"], error
    assert dev.json_messages("hello") == []
    time.sleep(0.5)
    assert backend.sessions_for(dev.mac) == [], "no backend session for an invalid hello"


def test_hello_payload_not_json_closes_connection(gateway, backend, make_device):
    dev = make_device(gateway)
    dev.publish_raw(b'{"type":"hello","version":3,')
    assert dev.wait_connection_closed(5)
    assert backend.sessions_for(dev.mac) == []


def test_repeated_hello_replaces_conversation(gateway, backend, make_device):
    dev = make_device(gateway)
    first, s1 = open_conversation(dev, backend, 0)
    round_trip(dev, s1, 3)

    second, s2 = open_conversation(dev, backend, 1)
    assert_udp_hello(second, gateway, s2)
    assert s1.wait_closed(5), "the first conversation's backend socket is closed"
    assert not s1.closed_by_backend
    assert s2.id != s1.id and second["session_id"] == s2.id
    assert second["udp"]["key"] != first["udp"]["key"], "a fresh key per hello"
    assert not s2.closed.is_set()

    # The new conversation carries audio with the new key from the new socket;
    # the old backend session hears nothing more.
    old_frames = len(s1.frames)
    round_trip(dev, s2, 5, first_turn=True)
    assert len(s1.frames) == old_frames
