"""The management HTTP API (§7, GWX): device status and MCP commands to
idle devices, behind a bearer token derived from the date and the key."""

from __future__ import annotations

import datetime as dt
import time

import pytest

import crypto
from device import random_identity
from gateway import GROUP_ID

KEY = "Sh4rdMQ-Voice-Key"


def auth(key: str = KEY, day: dt.date | None = None) -> dict:
    return {"Authorization": f"Bearer {crypto.management_token(key, day)}"}


@pytest.fixture
def mgmt_gateway(gateway_factory):
    return gateway_factory({"voice": {"signature_key": KEY}})


def unknown_client_id() -> str:
    mac, uuid = random_identity()
    return f"{GROUP_ID}@@@{crypto.mac_underscored(mac)}@@@{uuid}"


def test_device_status(mgmt_gateway, make_device):
    dev = make_device(mgmt_gateway)
    nobody = unknown_client_id()
    resp = mgmt_gateway.http("POST", "/api/devices/status", {"clientIds": [dev.client_id, nobody]}, auth())
    assert resp.status == 200, resp
    assert resp.json == {
        dev.client_id: {"isAlive": True, "exists": True},
        nobody: {"isAlive": False, "exists": False},
    }


def test_device_status_after_disconnect(mgmt_gateway, make_device):
    dev = make_device(mgmt_gateway)
    dev.disconnect()
    deadline = time.monotonic() + 5
    while True:
        resp = mgmt_gateway.http("POST", "/api/devices/status", {"clientIds": [dev.client_id]}, auth())
        assert resp.status == 200, resp
        if resp.json[dev.client_id]["exists"] is False or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert resp.json[dev.client_id] == {"isAlive": False, "exists": False}


def test_mcp_command_answered_by_device(mgmt_gateway, make_device):
    dev = make_device(mgmt_gateway)
    result = {"content": [{"type": "text", "text": '{"volume":42,"battery":88}'}], "isError": False}
    dev.mcp_handler = lambda req: result if req.get("method") == "tools/call" else {}
    body = {"type": "mcp", "payload": {"method": "tools/call", "params": {"name": "self.get_device_status", "arguments": {}}}}
    resp = mgmt_gateway.http("POST", f"/api/commands/{dev.client_id}", body, auth(), timeout=15)
    assert resp.status == 200, resp
    assert resp.json == {"success": True, "data": result}

    request = dev.wait_mcp_request("tools/call", 1)
    assert request["jsonrpc"] == "2.0"
    assert isinstance(request["id"], int) and not isinstance(request["id"], bool)
    assert request["params"] == {"name": "self.get_device_status", "arguments": {}}
    # Delivered like any reply: on the device's p2p topic, with no subscription.
    delivered = dev.recv_message("mcp", 1, predicate=lambda m: m["payload"].get("method") == "tools/call")
    assert delivered.topic == f"devices/p2p/{dev.mac_}"


def test_mcp_commands_get_their_own_answers(mgmt_gateway, make_device):
    a, b = make_device(mgmt_gateway), make_device(mgmt_gateway)
    a.mcp_handler = lambda req: {"who": "a", "args": req.get("params")}
    b.mcp_handler = lambda req: {"who": "b", "args": req.get("params")}
    for dev, name in ((a, "a"), (b, "b"), (a, "a")):
        body = {"type": "mcp", "payload": {"method": "tools/call", "params": {"name": "self.echo", "arguments": {"n": name}}}}
        resp = mgmt_gateway.http("POST", f"/api/commands/{dev.client_id}", body, auth(), timeout=15)
        assert resp.status == 200, resp
        assert resp.json["data"] == {"who": name, "args": {"name": "self.echo", "arguments": {"n": name}}}


def test_mcp_command_device_never_answers(mgmt_gateway, make_device):
    dev = make_device(mgmt_gateway)
    dev.mcp_auto_reply = False
    body = {"type": "mcp", "payload": {"method": "tools/call", "params": {"name": "self.get_device_status", "arguments": {}}}}
    resp = mgmt_gateway.http("POST", f"/api/commands/{dev.client_id}", body, auth(), timeout=20)
    assert resp.status == 500, resp
    assert resp.json.get("success") is False
    assert dev.wait_mcp_request("tools/call", 1)


def test_mcp_command_unknown_device(mgmt_gateway):
    body = {"type": "mcp", "payload": {"method": "tools/list", "params": {}}}
    resp = mgmt_gateway.http("POST", f"/api/commands/{unknown_client_id()}", body, auth(), timeout=15)
    assert resp.status >= 400, resp


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer 0123"},
        auth("Sh4rdMQ-Voice-Kez"),
        auth(day=dt.date(2020, 1, 1)),
        {"Authorization": crypto.management_token(KEY)},  # no "Bearer "
    ],
    ids=["none", "garbage", "other-key", "old-date", "no-bearer"],
)
def test_wrong_token_401(mgmt_gateway, make_device, headers):
    dev = make_device(mgmt_gateway)
    status = mgmt_gateway.http("POST", "/api/devices/status", {"clientIds": [dev.client_id]}, headers)
    assert status.status == 401, status
    body = {"type": "mcp", "payload": {"method": "tools/list", "params": {}}}
    command = mgmt_gateway.http("POST", f"/api/commands/{dev.client_id}", body, headers)
    assert command.status == 401, command
