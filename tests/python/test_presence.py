"""Fleet presence of MeekYolo nodes end to end (seed 000, issue 13).

paho-mqtt nodes register on `/meek/system/nodes` with the seed's
`node_register` envelope and a will on their status topic, report health,
status and resources on `/meek/nodes/{node_id}/...`, and are killed (the
socket closed without DISCONNECT: the broker publishes the will) or go
silent (no health for `health_timeout_s`). shardmq's registry shows them
on `GET /api/nodes` and as a retained snapshot; a malformed registration
gets the seed's §7.1 error on the error topic.

Every test runs twice: with the built-in broker (nodes connect to
shardmq, the service is an in-process client) and with mosquitto as the
external broker (nodes connect to mosquitto, the service is its client).
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from clients import Client
from conftest import HOST, REPO_ROOT, free_port
from test_relay import Mosquitto, _spawn, _wait_port

ERROR_TOPIC = "/meek/system/errors"
SNAPSHOT_TOPIC = "/meek/system/registry"
WILL = json.dumps({"status": "offline"}).encode()

# The registration of seed 000 §4.2 in the §4.1 envelope.
SEED_REGISTRATION = {
    "version": "2.0.0",
    "timestamp": 1698765432,
    "trace_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "message_type": "node_register",
    "payload": {
        "node_id": "analysis-001",
        "node_type": "analysis",
        "group_id": "group-001",
        "capabilities": {
            "models": ["yolov8"],
            "analysis_types": ["detection", "segmentation", "tracking"],
            "gpu_info": {"available": True, "name": "NVIDIA A100", "memory": "40GB"},
            "max_concurrent_tasks": 4,
        },
        "metadata": {
            "version": "2.0.0",
            "region": "cn-shanghai",
            "tags": ["gpu", "prod"],
            "ip_address": "192.168.1.100",
        },
    },
}


def registration(node_id: str, group: str = "group-001", node_type: str = "analysis") -> dict:
    r = copy.deepcopy(SEED_REGISTRATION)
    r["timestamp"] = int(time.time())
    r["trace_id"] = f"trace-{node_id}"
    r["payload"].update(node_id=node_id, group_id=group, node_type=node_type)
    return r


def envelope(message_type: str, payload: dict) -> bytes:
    return json.dumps({"version": "2.0.0", "timestamp": int(time.time()), "trace_id": "t-1",
                       "message_type": message_type, "payload": payload}).encode()


class Presence:
    """shardmq with presence on, and where nodes reach their broker."""

    def __init__(self, workdir: Path, mode: str):
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.mosquitto = Mosquitto(workdir) if mode == "external" else None
        lines = ["[http]", f'listen = "{HOST}:{self.http_port}"', "[presence]", "enabled = true",
                 "health_timeout_s = 2", "snapshot_interval_ms = 200"]
        if self.mosquitto:
            lines += ["[presence.external_broker]", f'address = "{HOST}:{self.mosquitto.port}"']
        conf = workdir / f"presence-{self.http_port}.toml"
        conf.write_text("\n".join(lines) + "\n")
        binary = Path(os.environ.get("SHARDMQ_BIN", "target/debug/shardmq"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        self.log_path = workdir / f"presence-{self.http_port}.log"
        cmd = [str(binary), "--listen", f"{HOST}:{self.mqtt_port}", "--shards", "2", "--config", str(conf),
               "--log", "info,shardmq=debug"]
        self.proc, self._log = _spawn(cmd, self.log_path)
        _wait_port(self.mqtt_port, self.proc, "shardmq")
        _wait_port(self.http_port, self.proc, "shardmq http")

    @property
    def node_port(self) -> int:
        return self.mosquitto.port if self.mosquitto else self.mqtt_port

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def http(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{HOST}:{self.http_port}{path}", timeout=5) as r:
            return r.read()

    def nodes(self, query: str = "") -> dict:
        return json.loads(self.http("/api/nodes" + query))

    def states(self) -> dict[str, str]:
        return {n["node_id"]: n["state"] for n in self.nodes()["nodes"]}

    def metric(self, line_prefix: str) -> int:
        for line in self.http("/metrics").decode().splitlines():
            if line.startswith(line_prefix + " "):
                return int(float(line.split()[-1]))
        raise AssertionError(f"no metric {line_prefix}")

    def stop(self) -> int | None:
        crashed = self.proc.poll()
        if crashed is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if self.mosquitto:
            self.mosquitto.stop()
        return crashed


@pytest.fixture(params=["builtin", "external"])
def presence_factory(request, tmp_path):
    made: list[Presence] = []
    clients: list[Client] = []
    request.node._brokers = made

    def start() -> Presence:
        p = Presence(tmp_path, request.param)
        made.append(p)
        # The first snapshot goes out after the service's SUBSCRIBE on the
        # same connection: once it arrives, registrations are heard.
        watcher = client(start, p, "watcher")
        watcher.subscribe([(SNAPSHOT_TOPIC, 1)])
        assert watcher.wait_messages(1, 10), p.log_tail()
        watcher.close()
        return p

    start.clients = clients
    yield start
    for c in clients:
        c.close()
    crashed = [(p, p.stop()) for p in made]
    for p, code in crashed:
        if code is not None:
            pytest.fail(f"shardmq exited with {code} during the test:\n{p.log_tail()}")


def client(factory, presence: Presence, client_id: str, will: bool = False) -> Client:
    topic = f"/meek/nodes/{client_id}/status"
    c = Client(HOST, presence.node_port, client_id, will=(topic, WILL, 1, False) if will else None)
    factory.clients.append(c)
    c.connect()
    return c


def node(factory, presence: Presence, node_id: str, group: str = "group-001") -> Client:
    """A MeekYolo analysis node as §6.1 has it start: will, connect, register."""
    c = client(factory, presence, node_id, will=True)
    c.publish("/meek/system/nodes", json.dumps(registration(node_id, group)), qos=1)
    return c


def health(c: Client) -> None:
    c.publish(f"/meek/nodes/{c.client_id}/health",
              envelope("node_health", {"node_id": c.client_id, "healthy": True}), qos=0)


def wait_until(predicate, timeout: float = 6.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")


# -- tests ---------------------------------------------------------------------


def test_the_seeds_registration_is_kept_whole_with_status_health_and_resources(presence_factory):
    p = presence_factory()
    n = client(presence_factory, p, "analysis-001", will=True)
    n.publish("/meek/system/nodes", json.dumps(SEED_REGISTRATION), qos=1)
    wait_until(lambda: p.states() == {"analysis-001": "online"}, what="registered")
    n.publish("/meek/nodes/analysis-001/status", envelope("node_status", {"status": "busy"}), qos=1)
    health(n)
    n.publish("/meek/nodes/analysis-001/resource", json.dumps({"cpu": 35.5, "memory": 1.2, "gpu": 65.8}), qos=0)
    got = wait_until(lambda: (lambda s: s if s["nodes"][0]["resource"] else None)(p.nodes()),
                     what="resource kept")
    node_json = got["nodes"][0]
    want = SEED_REGISTRATION["payload"]
    assert node_json["node_type"] == "analysis" and node_json["group_id"] == "group-001"
    assert node_json["capabilities"] == want["capabilities"]
    assert node_json["metadata"] == want["metadata"]
    assert node_json["registered_at"] == SEED_REGISTRATION["timestamp"]
    assert node_json["status"] == "busy"
    assert node_json["health"] == {"node_id": "analysis-001", "healthy": True}
    assert node_json["resource"] == {"cpu": 35.5, "memory": 1.2, "gpu": 65.8}
    assert p.metric("shardmq_presence_registrations_total") == 1
    assert p.metric('shardmq_presence_nodes{state="online"}') == 1
    assert p.metric('shardmq_presence_reports_total{kind="health"}') == 1


def test_a_killed_node_goes_offline_by_its_will(presence_factory):
    p = presence_factory()
    a = node(presence_factory, p, "analysis-001")
    node(presence_factory, p, "analysis-002")
    wait_until(lambda: p.states() == {"analysis-001": "online", "analysis-002": "online"}, what="online")
    a.close()  # the socket closed without DISCONNECT: the broker sends the will
    wait_until(lambda: p.states().get("analysis-001") == "offline", what="offline by will")
    snap = p.nodes()
    gone = [n for n in snap["nodes"] if n["node_id"] == "analysis-001"][0]
    assert gone["offline_cause"] == "will" and gone["status"] == "offline"
    assert p.states()["analysis-002"] == "online"
    assert p.metric('shardmq_presence_offline_total{cause="will"}') == 1
    assert p.log_text().count("MeekYolo node offline") == 1


def test_a_silent_node_goes_offline_after_the_health_timeout_and_health_brings_it_back(presence_factory):
    p = presence_factory()
    beating = node(presence_factory, p, "analysis-001")
    silent = node(presence_factory, p, "analysis-002")
    wait_until(lambda: len(p.states()) == 2, what="registered")
    # One reports health every 0.5 s past the 2 s timeout; the other never.
    end = time.monotonic() + 3.5
    while time.monotonic() < end:
        health(beating)
        time.sleep(0.5)
    assert p.states() == {"analysis-001": "online", "analysis-002": "offline"}, p.nodes()
    offline = [n for n in p.nodes()["nodes"] if n["node_id"] == "analysis-002"][0]
    assert offline["offline_cause"] == "health_timeout"
    assert p.metric('shardmq_presence_offline_total{cause="health_timeout"}') == 1
    assert p.log_text().count("MeekYolo node offline") == 1
    health(silent)
    wait_until(lambda: p.states()["analysis-002"] == "online", what="back online")


def test_a_late_subscriber_gets_the_retained_snapshot_at_once(presence_factory):
    p = presence_factory()
    early = client(presence_factory, p, "api-early")
    early.subscribe([(SNAPSHOT_TOPIC, 1)])
    node(presence_factory, p, "analysis-001", group="group-001")
    node(presence_factory, p, "api-001", group="group-002")

    def fleet_of(msgs):
        body = json.loads(msgs[-1].payload)
        return {n["node_id"]: n["state"] for n in body["payload"]["nodes"]}, msgs[-1], body

    # Both nodes are in a published snapshot before the late one subscribes.
    wait_until(lambda: early.messages and len(fleet_of(early.messages)[0]) == 2, what="snapshot")

    late = client(presence_factory, p, "api-late")
    late.subscribe([(SNAPSHOT_TOPIC, 1)])
    msgs = late.wait_messages(1, 2)
    assert msgs, "no retained snapshot"
    # The first is the retained one. The nodes send no health reports, so
    # on a slow machine the 2 s health timeout may already have marked
    # them offline (and a live snapshot may follow): the fleet is checked
    # by its members.
    fleet, msg, body = fleet_of(msgs[:1])
    assert msg.retain
    assert body["message_type"] == "node_list" and body["version"] == "2.0.0"
    assert set(fleet) == {"analysis-001", "api-001"}
    # A change is published again, coalesced.
    late.clear()
    node(presence_factory, p, "analysis-003")
    msgs = late.wait_messages(1, 3)
    assert msgs and "analysis-003" in fleet_of(msgs)[0]
    assert p.metric("shardmq_presence_snapshots_total") >= 2


MALFORMED = [
    (b"not json at all", "ERR_002", "message"),
    (json.dumps({**registration("n-1"), "version": "1.0.0"}).encode(), "ERR_003", "version"),
    (json.dumps({k: v for k, v in registration("n-2").items() if k != "timestamp"}).encode(),
     "ERR_001", "timestamp"),
    (json.dumps({**registration("n-3"), "trace_id": ""}).encode(), "ERR_001", "trace_id"),
    (json.dumps({**registration("n-4"), "message_type": "task_request"}).encode(), "ERR_001", "message_type"),
    (json.dumps({**registration("n-5"), "payload": []}).encode(), "ERR_001", "payload"),
    (json.dumps(registration("bad/node")).encode(), "ERR_001", "payload.node_id"),
    (json.dumps(registration("n-6", node_type="gpu")).encode(), "ERR_001", "payload.node_type"),
]


def test_a_malformed_registration_gets_the_7_1_error_on_the_error_topic(presence_factory):
    p = presence_factory()
    api = client(presence_factory, p, "api-errors")
    api.subscribe([(ERROR_TOPIC, 1)])
    sender = client(presence_factory, p, "n-sender")
    for payload, _, _ in MALFORMED:
        sender.publish("/meek/system/nodes", payload, qos=1)
    msgs = api.wait_messages(len(MALFORMED), 5)
    assert len(msgs) == len(MALFORMED), [m.payload for m in msgs]
    for m, (payload, code, field) in zip(msgs, MALFORMED):
        err = json.loads(m.payload)
        assert set(err) == {"error_code", "error_type", "message", "details"}, err
        assert err["error_code"] == code, (payload, err)
        assert err["details"]["field"] == field, (payload, err)
        assert err["details"]["reason"]
    assert json.loads(msgs[-1].payload)["details"]["node_id"] == "n-6"
    assert json.loads(msgs[-1].payload)["details"]["trace_id"] == "trace-n-6"
    assert p.metric('shardmq_presence_errors_total{reason="payload.node_type"}') == 1
    assert p.metric('shardmq_presence_errors_total{reason="version"}') == 1
    assert p.nodes()["nodes"] == []
    # The sender's next, valid registration goes through.
    sender.publish("/meek/system/nodes", json.dumps(registration("n-sender")), qos=1)
    wait_until(lambda: p.states() == {"n-sender": "online"}, what="registered")


def test_api_nodes_filters_by_group_and_status(presence_factory):
    p = presence_factory()
    node(presence_factory, p, "a-1", group="g-east")
    b = node(presence_factory, p, "a-2", group="g-east")
    node(presence_factory, p, "a-3", group="g-west")
    wait_until(lambda: len(p.states()) == 3, what="registered")
    b.close()
    wait_until(lambda: p.states()["a-2"] == "offline", what="offline by will")

    def ids(query):
        return [n["node_id"] for n in p.nodes(query)["nodes"]]

    assert ids("?group=g-east") == ["a-1", "a-2"]
    assert ids("?group=g-west") == ["a-3"]
    assert ids("?status=online") == ["a-1", "a-3"]
    assert ids("?status=offline") == ["a-2"]
    assert ids("?group=g-east&status=online") == ["a-1"]
    assert ids("?group=g%2Deast&status=offline") == ["a-2"]
    assert ids("?group=nobody") == []
    assert p.metric('shardmq_presence_nodes{state="offline"}') == 1


def test_a_node_leaving_with_node_unregister_goes_offline_and_unknown_nodes_reports_are_ignored(presence_factory):
    p = presence_factory()
    n = node(presence_factory, p, "analysis-001")
    wait_until(lambda: p.states() == {"analysis-001": "online"}, what="registered")
    n.publish("/meek/system/nodes", envelope("node_unregister", {"node_id": "analysis-001"}), qos=1)
    wait_until(lambda: p.states() == {"analysis-001": "offline"}, what="offline")
    stranger = client(presence_factory, p, "stranger")
    stranger.publish("/meek/nodes/stranger/health", envelope("node_health", {}), qos=1)
    wait_until(lambda: p.metric("shardmq_presence_reports_ignored_total") == 1, what="ignored")
    assert "stranger" not in p.states()
    assert p.metric('shardmq_presence_offline_total{cause="will"}') == 1


def test_a_client_taking_the_services_own_id_does_not_stop_it(presence_factory):
    p = presence_factory()
    # The in-process client's id is shardmq-presence-local-<n> for the
    # first n its shard owns; take over every candidate.
    intruders = [client(presence_factory, p, f"shardmq-presence-local-{n}") for n in range(8)]
    if p.mosquitto is None:
        deadline = time.monotonic() + 5
        while "presence's broker connection was taken over" not in p.log_text():
            assert time.monotonic() < deadline, p.log_tail()
            time.sleep(0.05)
    for c in intruders:
        c.close()
    # The service opens its next connection a second later; a registration
    # sent before that is not heard (no session), so the node repeats it.
    n = node(presence_factory, p, "analysis-001")

    def registered():
        if p.states() == {"analysis-001": "online"}:
            return True
        n.publish("/meek/system/nodes", json.dumps(registration("analysis-001")), qos=1)
        time.sleep(0.2)
        return False

    wait_until(registered, timeout=10, what="registered after the takeover")
