"""TLS on both sides of the gateway.

Devices: xiaozhi firmware speaks MQTT over TLS when its OTA endpoint's port
is 8883 or absent, verifying the server against its CA bundle (§3.1). On
shardmq's `[tls]` listener the control path (hello, goodbye, UDP steering
by shard) must be what it is over TCP, including when the TLS session is
handed to the shard that owns the device.

Backends: `wss://` chat servers, verified against `voice.chat_ca_file`
with the URL's host as SNI; a backend whose certificate is not trusted is
refused like an unreachable one (the device gets the gateway's error) and
counted; names such as `localhost` are resolved by the gateway.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from conversation import assert_udp_hello, open_conversation, round_trip
from gateway import HOST

DEVICES_PER_SHARD = 2
DEBUG_LOG = "info,shardmq=debug"


def tls_gateway(gateway_factory, pki, shards: int, **voice):
    """A gateway with the `[tls]` listener serving the test CA's certificate,
    and the OTA handing devices its port (the firmware's 8883)."""

    def config(ports):
        return {
            "server": {"log": DEBUG_LOG},
            "tls": pki.tls_section(ports.tls),
            "voice": {"ota": {"intranet": {"mqtt_endpoint": f"{HOST}:{ports.tls}"}}, **voice},
        }

    return gateway_factory(config, shards=shards)


def handed_off(gw) -> set[str]:
    """Client ids whose CONNECT was read on one shard and run on another (debug log)."""
    read, run = {}, {}
    for line in gw.log_text().splitlines():
        m = re.search(r"(CONNECT received|connection runs).*?shard=(\d+).*?client_id=(\S+)", line)
        if m:
            (read if m.group(1) == "CONNECT received" else run)[m.group(3)] = m.group(2)
    return {cid for cid, shard in run.items() if cid in read and read[cid] != shard}


def converse_and_part(dev, backend, gw) -> None:
    reply, session = open_conversation(dev, backend)
    assert_udp_hello(reply, gw, session)
    round_trip(dev, session, 10)
    dev.goodbye()
    assert session.wait_closed(5), "backend socket still open after the device's goodbye"
    assert dev.recv_json("goodbye", 5).get("session_id") == reply["session_id"]
    assert not dev.disconnected.is_set(), "the MQTT/TLS connection outlives the conversation"


@pytest.mark.parametrize("shards", [1, 4])
def test_devices_over_tls_converse_on_their_owner_shard(gateway_factory, backend, make_device, pki, shards):
    gw = tls_gateway(gateway_factory, pki, shards)
    handshakes = gw.metric("shardmq_tls_handshakes_total")
    devices = [make_device.from_ota(gw, tls=pki.client_context()) for _ in range(DEVICES_PER_SHARD * shards)]
    assert all(d.tls is not None and d.port == gw.tls_port for d in devices), "OTA handed out the TLS port"
    assert gw.metric("shardmq_tls_handshakes_total") - handshakes == len(devices)

    errors: dict[str, BaseException] = {}

    def run(dev):
        try:
            converse_and_part(dev, backend, gw)
            # The next conversation on the same TLS connection.
            _, again = open_conversation(dev, backend, 1)
            round_trip(dev, again, 3)
        except BaseException as exc:  # reported below, per device
            errors[dev.client_id] = exc

    threads = [threading.Thread(target=run, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, "\n".join(f"{cid}: {exc!r}" for cid, exc in errors.items())
    if shards > 1:
        # 8 connections over 4 accepting shards: some were read elsewhere
        # (the odds of none are 4^-8) and ran on their owner after a hand-off.
        moved = handed_off(gw)
        assert moved & {d.client_id for d in devices}, "no TLS connection was handed to its owner shard"
    assert gw.udp_counters().get("forwarded", 0) == 0, "steering by conn id reached the owner directly"


def test_tls_device_gone_closes_backend(gateway_factory, backend, make_device, pki):
    gw = tls_gateway(gateway_factory, pki, 2)
    dev = make_device(gw, tls=pki.client_context())
    _, session = open_conversation(dev, backend)
    round_trip(dev, session, 3)
    dev.drop_connection()
    assert session.wait_closed(10), "backend socket still open after the TLS connection went away"


def test_tls_and_tcp_devices_side_by_side(gateway_factory, backend, make_device, pki):
    gw = tls_gateway(gateway_factory, pki, 2)
    over_tls = make_device(gw, tls=pki.client_context())
    over_tcp = make_device(gw)
    for dev in (over_tls, over_tcp):
        converse_and_part(dev, backend, gw)


# -- wss:// backends -----------------------------------------------------------------


def backend_metrics(gw) -> dict[str, float]:
    return {
        "failures": gw.metric("shardmq_voice_backend_failures_total"),
        "certificate": gw.metric("shardmq_voice_backend_tls_failures_total", reason="certificate"),
        "tls": gw.metric("shardmq_voice_backend_tls_failures_total"),
        "resolve": gw.metric("shardmq_voice_backend_resolve_failures_total"),
    }


def wait_metrics(gw, before: dict, expected: dict, timeout: float = 5.0) -> dict:
    """Counters are summed on shard 0 each tick: poll until they show `expected` deltas."""
    deadline = time.monotonic() + timeout
    while True:
        now = backend_metrics(gw)
        delta = {k: now[k] - before[k] for k in now}
        if all(delta[k] == v for k, v in expected.items()) or time.monotonic() > deadline:
            return delta
        time.sleep(0.1)


@pytest.mark.parametrize("url_host", ["127.0.0.1", "localhost"])
def test_conversation_through_a_wss_backend(gateway_factory, backend_factory, make_device, pki, url_host):
    wss = backend_factory("wss-backend", ssl_context=pki.server_context(), url_host=url_host)
    assert wss.url.startswith(f"wss://{url_host}:")
    gw = gateway_factory({"voice": {"chat_ca_file": pki.ca_file}}, chat_servers=[wss.url])
    before = backend_metrics(gw)
    for _ in range(2):  # two devices: the second finds the name in the shard's cache or looks it up
        dev = make_device(gw)
        reply, session = open_conversation(dev, wss)
        assert_udp_hello(reply, gw, session)
        assert session.headers.get("device-id") == dev.mac
        assert session.headers.get("authorization") == "Bearer test-token"
        round_trip(dev, session, 10)
        dev.goodbye()
        assert session.wait_closed(5)
    assert backend_metrics(gw) == before, "nothing failed"


def test_ws_backend_by_name(gateway_factory, backend_factory, make_device):
    """A plain ws:// URL with a host name is resolved too (off the shard)."""
    named = backend_factory("named-backend", url_host="localhost")
    gw = gateway_factory(chat_servers=[named.url])
    dev = make_device(gw)
    reply, session = open_conversation(dev, named)
    assert_udp_hello(reply, gw, session)
    round_trip(dev, session, 5)


def test_untrusted_wss_backend_is_refused_and_counted(gateway_factory, backend_factory, make_device, pki):
    stranger = backend_factory("untrusted-backend", ssl_context=pki.server_context("stranger"))
    gw = gateway_factory({"voice": {"chat_ca_file": pki.ca_file}}, chat_servers=[stranger.url])
    before = backend_metrics(gw)
    dev = make_device(gw)
    dev.send_hello()
    error = dev.recv_json("error", 10)
    assert "backend" in error.get("message", ""), error
    assert dev.json_messages("hello") == [], "no hello without a backend"
    assert stranger.all_sessions() == [], "no WebSocket was opened over an unverified connection"
    delta = wait_metrics(gw, before, {"failures": 1, "certificate": 1, "tls": 1})
    assert delta == {"failures": 1, "certificate": 1, "tls": 1, "resolve": 0}, delta
    assert "chat backend unreachable" in gw.log_text()
    # The device's connection is fine: the next hello meets the same refusal, counted again.
    assert not dev.disconnected.is_set()
    dev.send_hello()
    dev.recv_json("error", 10)
    assert wait_metrics(gw, before, {"failures": 2, "certificate": 2})["certificate"] == 2


def test_wss_backend_trusted_only_through_chat_ca_file(gateway_factory, backend_factory, make_device, pki):
    """Without `chat_ca_file` the system roots apply, and they do not know the test CA."""
    wss = backend_factory("wss-backend", ssl_context=pki.server_context())
    gw = gateway_factory(chat_servers=[wss.url])
    before = backend_metrics(gw)
    dev = make_device(gw)
    dev.send_hello()
    dev.recv_json("error", 10)
    assert wait_metrics(gw, before, {"certificate": 1})["certificate"] == 1


def test_unresolvable_backend_is_counted(gateway_factory, make_device):
    # `.invalid` never resolves (RFC 6761); the gateway still starts.
    gw = gateway_factory(chat_servers=["wss://backend.invalid/xiaozhi/v1/"])
    before = backend_metrics(gw)
    dev = make_device(gw)
    dev.send_hello()
    dev.recv_json("error", 10)
    delta = wait_metrics(gw, before, {"failures": 1, "resolve": 1})
    assert (delta["failures"], delta["resolve"], delta["tls"]) == (1, 1, 0), delta
