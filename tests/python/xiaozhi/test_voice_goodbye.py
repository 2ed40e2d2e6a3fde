"""How a conversation ends (§6): from the backend, from the device, or by
the device going away; and that the MQTT connection outlives it."""

from __future__ import annotations

import pytest

from conversation import open_conversation, round_trip


@pytest.mark.parametrize("how", ["close", "drop"])
def test_backend_end_sends_goodbye(gateway, backend, make_device, how):
    dev = make_device(gateway)
    reply, session = open_conversation(dev, backend)
    round_trip(dev, session, 3)
    if how == "close":
        session.close()
    else:
        session.drop()  # no close frame: a crashed backend
    goodbye = dev.recv_json("goodbye", 5)
    # Firmware >= 2.3.0 acts on a goodbye only with the current session id.
    assert goodbye.get("session_id") == reply["session_id"], goodbye
    assert dev.goodbyes_acted, "the firmware would have ignored this goodbye"
    assert not dev.disconnected.is_set(), "the MQTT connection stays up"

    # The same connection can start the next conversation.
    _, again = open_conversation(dev, backend, 1)
    round_trip(dev, again, 3)


def test_device_goodbye_closes_backend(gateway, backend, make_device):
    dev = make_device(gateway)
    reply, session = open_conversation(dev, backend)
    round_trip(dev, session, 3)
    dev.goodbye()
    assert session.wait_closed(5), "backend socket still open after the device's goodbye"
    assert not session.closed_by_backend
    assert dev.recv_json("goodbye", 5).get("session_id") == reply["session_id"]


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_device_gone_closes_backend(gateway, backend, make_device, how):
    dev = make_device(gateway)
    _, session = open_conversation(dev, backend)
    round_trip(dev, session, 3)
    if how == "disconnect":
        dev.disconnect()
    else:
        dev.drop_connection()  # TCP gone without DISCONNECT
    assert session.wait_closed(10), "backend socket still open after the device went away"
    assert not session.closed_by_backend


def test_goodbye_without_conversation_is_harmless(gateway, backend, make_device):
    dev = make_device(gateway)
    dev.send_json({"session_id": "", "type": "goodbye"})
    reply, session = open_conversation(dev, backend)
    round_trip(dev, session, 2)


def test_one_device_goodbye_leaves_others(gateway, backend, make_device):
    a, b = make_device(gateway), make_device(gateway)
    _, sa = open_conversation(a, backend)
    _, sb = open_conversation(b, backend)
    a.goodbye()
    assert sa.wait_closed(5)
    assert not sb.closed.is_set()
    round_trip(b, sb, 5)
