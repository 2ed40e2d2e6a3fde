"""External broker mode (§3.3, GO variant): devices talk MQTT to another
broker (mosquitto here) and shardmq, with its own broker off, is an MQTT
client of it. A broker hook would map a device's `device-server` publishes
to `/p2p/device_public/<mac_>` and subscribe it to `/p2p/device_sub/<mac_>`;
the simulator does both itself. UDP goes straight to shardmq."""

from __future__ import annotations

import socket

import pytest

import crypto
from conversation import assert_udp_hello, open_conversation, round_trip
from device import FirmwareDevice, random_identity
from gateway import GROUP_ID


def external_device(make_device, mosquitto, **kw) -> FirmwareDevice:
    mac, uuid = random_identity()
    mac_ = crypto.mac_underscored(mac)
    client_id, username, password = crypto.device_credentials("", mac, uuid, GROUP_ID)
    dev = make_device.raw(
        FirmwareDevice(
            mosquitto.host,
            mosquitto.port,
            client_id,
            username,
            password,
            publish_topic=f"/p2p/device_public/{mac_}",
            subscribe=[(f"/p2p/device_sub/{mac_}", 0)],
            **kw,
        )
    )
    return dev.connect()


@pytest.mark.parametrize("share_group", ["", "voice"])
def test_external_broker_conversation(mosquitto, gateway_factory, backend, make_device, share_group):
    gw = gateway_factory(
        {
            "mqtt": {"enabled": False},
            "voice": {"external_broker": {"address": mosquitto.address, "share_group": share_group}},
        }
    )
    # Device topics start with "/", so the shared form of "/p2p/device_public/#"
    # is "$share/<group>//p2p/device_public/#" (share name, then the filter);
    # "$share/<group>/p2p/..." would subscribe to topics without the leading
    # slash and never see a device. The conversation below is what tells.
    assert mosquitto.wait_log("p2p/device_public/#", 15), "the gateway never subscribed to the device topics"
    if share_group:
        assert mosquitto.wait_log(f"$share/{share_group}/", 1)

    dev = external_device(make_device, mosquitto)
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gw, session)
    assert session.headers.get("device-id") == dev.mac
    assert dev.recv_message("hello").topic == f"/p2p/device_sub/{dev.mac_}"

    round_trip(dev, session, 20)
    dev.listen_stop()
    assert session.wait_json("listen", predicate=lambda m: m.get("state") == "stop")
    assert dev.recv_json("tts", predicate=lambda m: m.get("state") == "stop")

    dev.goodbye()
    assert session.wait_closed(5)
    assert not session.closed_by_backend
    assert dev.recv_json("goodbye", 5).get("session_id") == reply["session_id"]


def test_external_broker_backend_goodbye_and_two_devices(mosquitto, gateway_factory, backend, make_device):
    gw = gateway_factory({"mqtt": {"enabled": False}, "voice": {"external_broker": {"address": mosquitto.address}}})
    assert mosquitto.wait_log("/p2p/device_public/#", 15)
    a, b = external_device(make_device, mosquitto), external_device(make_device, mosquitto)
    ra, sa = open_conversation(a, backend)
    rb, sb = open_conversation(b, backend)
    assert_udp_hello(ra, gw, sa)
    assert_udp_hello(rb, gw, sb)
    assert crypto.conn_id_of_nonce(a.nonce) != crypto.conn_id_of_nonce(b.nonce)
    round_trip(a, sa, 5)
    round_trip(b, sb, 5)
    sa.close()
    assert a.recv_json("goodbye", 5).get("session_id") == ra["session_id"]
    assert a.goodbyes_acted
    assert b.json_messages("goodbye") == [], "a goodbye goes only to its own device"
    round_trip(b, sb, 5, first_turn=False)


def test_external_broker_no_mqtt_listener(mosquitto, gateway_factory):
    gw = gateway_factory({"mqtt": {"enabled": False}, "voice": {"external_broker": {"address": mosquitto.address}}})
    with pytest.raises(OSError):
        socket.create_connection((gw.host, gw.mqtt_port), timeout=1).close()
