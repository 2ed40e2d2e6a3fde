"""The MQTT-SN gateway: sleeping clients, forwarders, bad input, limits, metrics.

Over real UDP with 1 and 4 shards, MQTT clients on the other side. Most
flows here are raw datagrams written from the specification (`sn_raw.py`):
the mqtt-sn-12 client library (see test_sn.py) sends PINGREQ without a
client id, cannot wrap messages for a forwarder, and does not write
malformed ones; it puts a client to sleep (DISCONNECT with a duration).
Section numbers are those of the MQTT-SN 1.2 specification.
"""

from __future__ import annotations

import time

import sn_raw as sn
from sn_support import (  # noqa: F401 (fixtures)
    lib,
    quiet_lib_logging,
    raw,
    receive,
    shards,
    sn_broker,
    sn_clients,
    sn_factory,
    topics_payloads,
    watcher,
)

quiet_lib_logging()

ACTIVE = 'shardmq_sn_clients{state="active"}'
ASLEEP = 'shardmq_sn_clients{state="asleep"}'
AWAKE = 'shardmq_sn_clients{state="awake"}'


def dropped(reason: str) -> str:
    return f'shardmq_sn_dropped_total{{reason="{reason}"}}'


def fall_asleep(r: sn.SnRaw, duration: int) -> None:
    r.send(sn.disconnect(duration))
    answer = r.expect(sn.DISCONNECT)
    assert answer.duration is None, f"DISCONNECT answered with a duration: {answer.raw!r}"


# -- sleeping clients (§6.14) ------------------------------------------------------


def test_sleeping_client_gets_its_buffer_on_pingreq_then_pingresp(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.14: DISCONNECT with a duration puts the client to
    # sleep; what is published for it meanwhile is buffered; a PINGREQ with
    # its ClientId wakes it, the buffer is sent, then PINGRESP, and it
    # sleeps again (later messages wait for the next PINGREQ).
    pub = make_client("p-sleep", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-sleeper", duration=60) == 0
    t = r.subscribe("sn/sleep/t", qos=1).topic_id
    names = {t: "sn/sleep/t"}
    fall_asleep(r, 30)
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 1) == 1

    pub.publish("sn/sleep/t", b"m1", qos=1)
    pub.publish("sn/sleep/t", b"m2", qos=0)
    pub.publish("sn/sleep/t", b"m3", qos=1)
    # The QoS 0 one at least is in the gateway's buffer (QoS 1 ones may wait
    # in the broker session instead).
    assert sn_broker.wait_metric("shardmq_sn_buffered_messages", lambda v: v >= 1) >= 1
    assert r.quiet(0.5) == [], "sent to a sleeping client"

    r.send(sn.pingreq("sn-sleeper"))
    got = receive(r, 3, names)
    assert [(p, q) for _, p, q, _ in got] == [(b"m1", 1), (b"m2", 0), (b"m3", 1)]
    r.expect(sn.PINGRESP)
    assert sn_broker.wait_metric("shardmq_sn_buffered_messages", lambda v: v == 0) == 0

    pub.publish("sn/sleep/t", b"m4", qos=1)
    assert r.quiet(0.5) == [], "asleep again after PINGRESP"
    r.send(sn.pingreq("sn-sleeper"))
    assert [p for _, p, _, _ in receive(r, 1, names)] == [b"m4"]
    r.expect(sn.PINGRESP)


def test_sleeper_wakes_from_a_new_address(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.14, §5.4.19: the PINGREQ of a waking client carries
    # its ClientId, which identifies it wherever it now sends from (a
    # device that slept behind a NAT): the buffer follows it there.
    pub = make_client("p-moved", target=sn_broker)
    pub.connect()
    old = raw()
    assert old.connect("sn-moved") == 0
    t = old.subscribe("sn/moved/t", qos=1).topic_id
    fall_asleep(old, 30)
    pub.publish("sn/moved/t", b"kept1", qos=1)
    pub.publish("sn/moved/t", b"kept0", qos=0)
    assert sn_broker.wait_metric("shardmq_sn_buffered_messages", lambda v: v >= 1) >= 1
    new = raw()
    new.send(sn.pingreq("sn-moved"))
    assert [p for _, p, _, _ in receive(new, 2, {t: "sn/moved/t"})] == [b"kept1", b"kept0"]
    new.expect(sn.PINGRESP)
    assert old.quiet(0.3) == []


def test_pingresp_waits_for_the_acknowledgements_while_awake(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.14: the gateway sends PINGRESP once the buffered
    # messages are delivered (QoS 1 acknowledged); meanwhile the client is
    # "awake" in the metrics.
    pub = make_client("p-awake", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-awake") == 0
    r.subscribe("sn/awake/t", qos=1)
    fall_asleep(r, 30)
    pub.publish("sn/awake/t", b"held", qos=1)
    pub.publish("sn/awake/t", b"after", qos=0)
    assert sn_broker.wait_metric("shardmq_sn_buffered_messages", lambda v: v >= 1) >= 1

    r.send(sn.pingreq("sn-awake"))
    p = r.expect(sn.PUBLISH)
    assert (p.qos, p.data) == (1, b"held")
    assert sn_broker.wait_metric(AWAKE, lambda v: v == 1) == 1
    assert [x for x in r.quiet(0.3) if x.mtype == sn.PINGRESP] == [], "PINGRESP before PUBACK"
    r.send(sn.puback(p.topic_id, p.msg_id))
    r.wait_for(sn.PINGRESP)
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 1) == 1
    assert sn_broker.metric(AWAKE) == 0


def test_sleep_buffer_is_bounded_and_counts_what_it_drops(sn_factory, raw, make_client):
    # MQTT-SN 1.2 §6.14 leaves the buffer's size to the gateway: over
    # sleep_buffer_messages, QoS 0 messages are dropped and counted.
    b = sn_factory(sn={"sleep_buffer_messages": 2})
    pub = make_client("p-bound", target=b)
    pub.connect()
    r = raw(target=b)
    assert r.connect("sn-bound") == 0
    t = r.subscribe("sn/bound/t", qos=0).topic_id
    fall_asleep(r, 30)
    before = b.metric("shardmq_sn_buffer_dropped_total")
    for i in range(5):
        pub.publish("sn/bound/t", f"b{i}".encode(), qos=0)
    assert b.wait_metric("shardmq_sn_buffer_dropped_total", lambda v: v >= before + 3, timeout=5) == before + 3
    assert b.wait_metric("shardmq_sn_buffered_messages", lambda v: v == 2) == 2
    r.send(sn.pingreq("sn-bound"))
    got = receive(r, 2, {t: "sn/bound/t"})
    assert len(got) == 2, got
    r.expect(sn.PINGRESP)  # the two kept, and nothing more


def test_sleeping_client_missing_its_duration_is_lost_with_its_will(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.14: asleep longer than its sleep duration (1.5x, as
    # the keepalive) without PINGREQ or CONNECT, the client is lost and
    # its will published. The library's DISCONNECT with a duration.
    w = watcher(make_client, sn_broker, "w-sleeplost", [("sn/sleeplost/#", 0)])
    c = lib("sn-sleeplost", will=("sn/sleeplost/will", "gone", 0, False))
    c.c.send_disconnect(1)
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 1) == 1
    assert topics_payloads(w.wait_messages(1, timeout=6)) == [("sn/sleeplost/will", b"gone")]
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 0) == 0


def test_pingreq_with_client_id_keeps_a_sleeper_alive(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.14: each PINGREQ(ClientId) restarts the sleep timer.
    w = watcher(make_client, sn_broker, "w-sleepalive", [("sn/sleepalive/#", 0)])
    r = raw()
    assert r.connect("sn-sleepalive", duration=60, will=("sn/sleepalive/will", b"gone", 0, False)) == 0
    fall_asleep(r, 1)
    for _ in range(6):
        time.sleep(0.5)
        r.send(sn.pingreq("sn-sleepalive"))
        r.expect(sn.PINGRESP)
    assert w.messages == []
    assert sn_broker.metric(ASLEEP) == 1


def test_connect_while_asleep_makes_the_client_active(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.14 (Fig. 4): a CONNECT from an asleep client returns
    # it to the active state: messages flow without PINGREQ again.
    pub = make_client("p-reactive", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-reactive", clean=False) == 0
    t = r.subscribe("sn/reactive/t", qos=0).topic_id
    fall_asleep(r, 30)
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 1) == 1
    assert r.connect("sn-reactive", clean=False) == 0
    assert sn_broker.wait_metric(ACTIVE, lambda v: v == 1) == 1
    assert sn_broker.metric(ASLEEP) == 0
    r.pending = [p for p in r.quiet(0.3) if p.mtype != sn.PUBLISH]  # any buffered ones
    pub.publish("sn/reactive/t", b"live", qos=0)
    got = receive(r, 1, {t: "sn/reactive/t"})
    assert [p for _, p, _, _ in got] == [b"live"]


# -- forwarder encapsulation (§5.5) --------------------------------------------------


def test_forwarded_clients_are_answered_through_the_forwarder(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §5.5: messages wrapped by a forwarder (0xFE, Ctrl,
    # Wireless Node Id) are answered wrapped with the same node id; two
    # nodes behind one forwarder address are two clients.
    pub = make_client("p-fwd", target=sn_broker)
    pub.connect()
    fwd = raw(node_id=b"\x00\x01")
    assert fwd.connect("sn-node-1") == sn.ACCEPTED
    a = fwd.subscribe("sn/fwd/a", qos=0).topic_id
    fwd.node_id = b"\x00\x02\x03"
    assert fwd.connect("sn-node-2") == sn.ACCEPTED
    b = fwd.subscribe("sn/fwd/b", qos=0).topic_id

    pub.publish("sn/fwd/a", b"for-1", qos=0)
    pub.publish("sn/fwd/b", b"for-2", qos=0)
    fwd.node_id = None  # read the wrappers ourselves
    got = {}
    for _ in range(2):
        p = fwd.recv()
        assert p.mtype == sn.ENCAPSULATED, p
        assert p.inner is not None and p.inner.mtype == sn.PUBLISH, p.inner
        got[p.node_id] = (p.inner.topic_id, p.inner.data)
    assert got == {b"\x00\x01": (a, b"for-1"), b"\x00\x02\x03": (b, b"for-2")}

    fwd.node_id = b"\x00\x01"
    w = watcher(make_client, sn_broker, "w-fwd", [("sn/fwd/#", 0)])
    fwd.publish(a, b"from-1", qos=1)
    assert topics_payloads(w.wait_messages(1)) == [("sn/fwd/a", b"from-1")]


def test_a_bare_datagram_is_not_a_forwarded_client(sn_broker, raw):
    # MQTT-SN 1.2 §5.5: the forwarded client is keyed by the forwarder's
    # address and the node id; the bare address is not that client.
    fwd = raw(node_id=b"\x07")
    assert fwd.connect("sn-node-7") == 0
    series = dropped("unknown_client")
    before = sn_broker.metric(series)
    fwd.send_raw(sn.publish(1, b"bare", qos=1, msg_id=3, topic_type=sn.TOPIC_PREDEFINED))
    assert sn_broker.wait_metric(series, lambda v: v >= before + 1) == before + 1
    fwd.node_id = None
    assert fwd.quiet(0.3) == []


# -- bad input (§5.2) ---------------------------------------------------------------


def test_bad_datagrams_are_dropped_counted_and_unanswered(sn_factory, raw):
    # MQTT-SN 1.2 §5.2 (message header: Length covers the whole message,
    # MsgType from Table 3) and §5.3.4 (flags): a datagram that is not a
    # well-formed message for a known client is dropped, counted by
    # reason, answered with nothing, and leaves no client behind.
    b = sn_factory(sn={"max_datagram": 128})
    connected = raw(target=b)
    assert connected.connect("sn-garbage") == 0
    cases = {
        "too_short": (False, b"\x01"),
        "length_mismatch": (False, b"\x05\x18\x00"),
        "unknown_type": (False, b"\x02\x03"),
        "too_large": (False, sn.publish(1, b"x" * 200, topic_type=sn.TOPIC_PREDEFINED, qos=-1)),
        "unknown_client": (False, sn.publish(1, b"x", qos=1, msg_id=1, topic_type=sn.TOPIC_PREDEFINED)),
        # Topic id type 0b11 is reserved (§5.3.4).
        "bad_flags": (True, sn.publish(1, b"x", qos=1, msg_id=2, topic_type=0b11)),
        # CONNECT cut after its ProtocolId: no Duration, no ClientId (§5.4.4).
        "malformed": (False, sn.frame(sn.CONNECT, b"\x04\x01")),
    }
    # The gauges are written at the shards' ticks: wait for the one client.
    clients_before = b.wait_metric(ACTIVE, lambda v: v == 1)
    wrong = {}
    for reason, (from_connected, datagram) in cases.items():
        series = dropped(reason)
        before = b.metric(series)
        sender = connected if from_connected else raw(target=b)
        sender.send_raw(datagram)
        after = b.wait_metric(series, lambda v: v >= before + 1, timeout=5)
        answered = sender.quiet(0.2)
        if after != before + 1 or answered:
            wrong[reason] = (after - before, answered)
    assert wrong == {}, "reason: (count increase, answers)"
    assert b.metric(ACTIVE) == clients_before
    # The gateway still serves the client that sent garbage.
    connected.send(sn.pingreq())
    connected.expect(sn.PINGRESP)


# -- per-address limits ----------------------------------------------------------------


def test_clients_per_address_are_limited(sn_factory, raw, shards):
    # The per-address limit on clients (MQTT-SN 1.2 §6.2 lets the
    # gateway refuse a CONNECT): over max_clients_per_address from one IP,
    # CONNECT is not accepted and is counted. The limit applies per shard
    # receiving the datagrams, so with N shards at most N x limit pass.
    limit = 2
    b = sn_factory(sn={"max_clients_per_address": limit})
    accepted = refused = 0
    for i in range(limit * shards + 1):
        r = raw(target=b)
        r.send(sn.connect(f"sn-per-ip-{i}"))
        try:
            if r.expect(sn.CONNACK, timeout=1).rc == sn.ACCEPTED:
                accepted += 1
            else:
                refused += 1
        except TimeoutError:
            refused += 1
    assert refused >= 1 and accepted <= limit * shards, (accepted, refused)
    if shards == 1:
        assert accepted == limit
    assert b.wait_metric(dropped("too_many_clients"), lambda v: v >= 1) >= 1


def test_datagram_rate_per_address_is_limited(sn_factory, raw):
    # The per-address datagram rate (token bucket, burst = rate):
    # a burst far over it is mostly dropped and counted as rate_limited.
    b = sn_factory(sn={"max_datagrams_per_second": 5})
    r = raw(target=b)
    for _ in range(40):
        r.send(sn.searchgw())
    answers = [p for p in r.quiet(1.0) if p.mtype == sn.GWINFO]
    assert 1 <= len(answers) <= 12, f"{len(answers)} of 40 answered at 5 datagrams/s"
    assert b.wait_metric(dropped("rate_limited"), lambda v: v >= 28) >= 28


# -- metrics --------------------------------------------------------------------------


def test_metrics_count_clients_by_state_and_traffic(sn_broker, raw):
    # MQTT-SN 1.2 §6.14 (client states active / asleep / awake / lost) as
    # the metrics, with datagrams and registered topics.
    m = sn_broker.metric
    received, sent = m("shardmq_sn_datagrams_received_total"), m("shardmq_sn_datagrams_sent_total")
    a = raw()
    assert a.connect("sn-metrics-a") == 0
    s = raw()
    assert s.connect("sn-metrics-s") == 0
    assert sn_broker.wait_metric(ACTIVE, lambda v: v == 2) == 2
    a.register("sn/metrics/one")
    assert sn_broker.wait_metric("shardmq_sn_registered_topics", lambda v: v >= 1) >= 1
    fall_asleep(s, 30)
    assert sn_broker.wait_metric(ASLEEP, lambda v: v == 1) == 1
    assert m(ACTIVE) == 1
    a.send(sn.disconnect())
    a.expect(sn.DISCONNECT)
    assert sn_broker.wait_metric(ACTIVE, lambda v: v == 0) == 0
    # 2 CONNECT, REGISTER, 2 DISCONNECT in; 2 CONNACK, REGACK, 2 DISCONNECT out.
    assert m("shardmq_sn_datagrams_received_total") >= received + 5
    assert m("shardmq_sn_datagrams_sent_total") >= sent + 5
