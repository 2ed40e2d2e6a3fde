"""Shared subscriptions, `$share/<group>/<filter>`, end to end with paho clients.

shardmq runs 4 shards here, so that a group's members, its publishers and
its plain subscribers sit on different shards. With SHARDMQ_TEST_PEER=mosquitto
the tests whose behaviour mosquitto shares run against it as the reference
(mosquitto reads `$share` in MQTT 3.1.1 too); those that check a shardmq
setting or a choice mosquitto makes differently are skipped there.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

# The module object itself, taken at import: `conftest` names another
# module (tests/python/xiaozhi's) once that directory's tests are collected.
import conftest as broker_conftest
from conftest import PEER, Broker
from mqtt_raw import subscribe_packet

GROUP = "$share/workers/jobs/+"


class Broker4(Broker):
    def _command(self, workdir, config):
        cmd = super()._command(workdir, config)
        if "--shards" in cmd:
            cmd[cmd.index("--shards") + 1] = "4"
        return cmd


@pytest.fixture
def broker4(broker_factory, monkeypatch):
    """`broker_factory` starting 4-shard brokers."""
    monkeypatch.setattr(broker_conftest, "Broker", Broker4)
    return broker_factory


def members(make_client, b, n, stem="member", qos=1):
    out = []
    for i in range(n):
        c = make_client(f"{stem}-{i}", target=b)
        c.connect()
        assert c.subscribe([(GROUP, qos)]) == [qos]
        out.append(c)
    return out


def publish_all(pub, n, tag, topic=lambda i: f"jobs/{i % 5}", pace=0.0):
    for i in range(n):
        pub.publish_nowait(topic(i), f"{tag}-{i}".encode(), 1)
        if pace and i % 50 == 49:
            time.sleep(pace)
    # One more with a wait: paho sends in order, so when it completes the
    # broker has acknowledged the others too.
    pub.publish("jobs/end", f"{tag}-end".encode(), 1, timeout=30)


def wait_total(clients, total, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(c.messages) for c in clients) >= total:
            break
        time.sleep(0.05)
    # A quiet moment: anything sent twice would arrive now.
    time.sleep(0.3)
    return [[m.payload.decode() for m in c.messages] for c in clients]


def test_each_message_reaches_one_member_and_plain_subscribers_all(broker4, make_client):
    b = broker4()
    group = members(make_client, b, 8)
    plain = make_client("plain", target=b)
    plain.connect()
    plain.subscribe([("jobs/#", 1)])
    pub = make_client("publisher", target=b)
    pub.connect()
    publish_all(pub, 400, "m")
    got = wait_total(group, 401)
    counts = collections.Counter(p for msgs in got for p in msgs)
    assert len(counts) == 401, "every message reached the group"
    assert set(counts.values()) == {1}, "each exactly once"
    spread = [len(msgs) for msgs in got]
    print("spread over 8 members:", spread)
    assert all(n > 0 for n in spread), spread
    assert len(plain.wait_messages(401, 20)) == 401


def test_round_robin_spreads_evenly(broker4, make_client):
    b = broker4()
    group = members(make_client, b, 4)
    pub = make_client("rr-pub", target=b)
    pub.connect()
    publish_all(pub, 399, "rr")
    got = wait_total(group, 400)
    spread = sorted(len(m) for m in got)
    print("round robin spread:", spread)
    assert sum(spread) == 400
    if PEER == "shardmq":
        # One publisher: the members of all shards in turn.
        assert spread == [100, 100, 100, 100]


@pytest.mark.parametrize("strategy", ["random", "hash_clientid", "hash_topic"])
def test_strategies(broker4, make_client, strategy):
    if PEER != "shardmq":
        pytest.skip("a shardmq setting")
    b = broker4({"shared_subscription_strategy": f'"{strategy}"'})
    group = members(make_client, b, 4)
    pubs = []
    for i in range(3):
        p = make_client(f"device-{i}", target=b)
        p.connect()
        pubs.append(p)
    for i, p in enumerate(pubs):
        publish_all(p, 60, f"d{i}", topic=lambda k: f"jobs/t{k % 3}")
    wait_total(group, 183)
    got = [[(m.topic, m.payload.decode()) for m in c.messages] for c in group]
    counts = collections.Counter(p for msgs in got for _, p in msgs)
    assert len(counts) == 183 and set(counts.values()) == {1}
    print(strategy, "spread:", [len(m) for m in got])
    if strategy == "hash_clientid":
        owner = {}
        for member, msgs in enumerate(got):
            for _, p in msgs:
                assert owner.setdefault(p.split("-")[0], member) == member, "a device moved"
    elif strategy == "hash_topic":
        owner = {}
        for member, msgs in enumerate(got):
            for topic, _ in msgs:
                assert owner.setdefault(topic, member) == member, "a topic moved"


def test_retained_messages_are_not_sent_to_a_shared_subscription(broker4, make_client):
    # MQTT 5 §4.8.2: no retained message on a new shared subscription,
    # or every member would get its own copy. mosquitto 2.0.11 sends them.
    if PEER != "shardmq":
        pytest.skip("mosquitto 2.0.11 sends retained messages on $share")
    b = broker4()
    pub = make_client("ret-pub", target=b)
    pub.connect()
    pub.publish("jobs/r", b"kept", 1, retain=True)
    (m,) = members(make_client, b, 1)
    assert m.collect(0.5) == []
    pub.publish("jobs/r", b"live", 1)
    assert [x.payload for x in m.wait_messages(1)] == [b"live"]


@pytest.mark.parametrize("bad", ["$share/+/jobs", "$share/g", "$share//jobs", "$share/g#/jobs"])
def test_malformed_share_closes_the_connection(broker4, make_raw, bad):
    # The syntax of MQTT 5 §4.8.2 [MQTT-4.8.2-1] [MQTT-4.8.2-2]; a bad
    # filter is a protocol violation in 3.1.1 [MQTT-4.7.3-1].
    if PEER != "shardmq" and bad != "$share/g#/jobs":
        pytest.skip("mosquitto 2.0.11 grants this filter in MQTT 3.1.1")
    b = broker4()
    raw = make_raw(target=b)
    raw.connect("bad-share")
    raw.send(subscribe_packet(1, [(bad, 1)]))
    packets = raw.wait_closed(3)
    assert not any(p.name == "SUBACK" for p in packets), packets


def test_members_join_and_leave_under_qos1_load(broker4, make_client, make_raw):
    if PEER != "shardmq":
        # Run against mosquitto 2.0.11 this test lost 276 of 4000 messages:
        # what a member held when it died is not given to another.
        pytest.skip("mosquitto 2.0.11 loses what a departed member held")
    b = broker4({"max_inflight": 5})
    stable = members(make_client, b, 4, "stable")
    pub = make_client("load-pub", target=b)
    pub.connect()
    total = 4000
    done = threading.Event()

    def load():
        try:
            # Paced, so that members come and go all along the load.
            publish_all(pub, total - 1, "L", pace=0.05)
        finally:
            done.set()

    t = threading.Thread(target=load)
    t.start()
    graceful, held_by_killed = [], set()
    round_ = 0
    while not done.is_set() and round_ < 60:
        if round_ % 2 == 0:
            # Joins, then leaves in the orderly way: out of the group, then
            # away once what it holds is acknowledged.
            c = members(make_client, b, 1, f"churn-{round_}")[0]
            time.sleep(0.05)
            c.unsubscribe([GROUP])
            time.sleep(0.1)
            c.disconnect()
            graceful.append(c)
        else:
            # Joins, takes messages without ever acknowledging them, and
            # dies (no DISCONNECT): they must reach another member.
            raw = make_raw(target=b)
            raw.connect(f"killed-{round_}")
            granted, early = raw.subscribe_receiving(1, [(GROUP, 1)])
            assert granted == [1]
            for p in early + raw.recv_all(0.1):
                if p.name == "PUBLISH":
                    held_by_killed.add(p.publish()[1].decode())
            raw.close()
        round_ += 1
    t.join(60)
    assert done.is_set()
    everyone = stable + graceful
    got = wait_total(everyone, total, 30)
    counts = collections.Counter(p for msgs in got for p in msgs)
    missing = total - len(counts)
    assert missing == 0, f"{missing} of {total} lost"
    assert set(counts.values()) == {1}, "each message once to the members that acknowledge"
    assert held_by_killed <= set(counts)
    spread = [len(m) for m in got]
    print(
        f"{total} messages, {len(graceful)} members left cleanly, {round_ - len(graceful)} killed",
        f"holding {len(held_by_killed)} unacknowledged (all delivered again);",
        f"stable members got {spread[:4]}, churning ones {sum(spread[4:])}",
    )
    assert len(held_by_killed) > 0, "the kills happened under load"
    assert all(n > 0 for n in spread[:4])
