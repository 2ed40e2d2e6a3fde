"""The MQTT-SN 1.2 gateway over real UDP, against MQTT clients on the other side.

Client library: **mqtt-sn-12 1.0.9** (PyPI, released November 2025, MIT,
module `mqttsn12`), chosen as the one maintained MQTT-SN 1.2 client on PyPI:
it implements SEARCHGW/GWINFO, CONNECT with the will dialogue, REGISTER in
both directions, PUBLISH at QoS -1, 0, 1 and 2, predefined and short topic
ids, SUBSCRIBE/UNSUBSCRIBE, will updates, PINGREQ and DISCONNECT with a sleep
duration. The only other candidate, `mqttsn` 0.0.4, was last released in
2018. The library is synchronous and answers for the client as a well-behaved
client does, so the flows where a test must act otherwise, or that it does
not implement, are written as raw datagrams from the specification by
`sn_raw.py`: the gateway's retransmissions (acknowledgements held back),
downlink QoS 2 (the library does not answer a PUBLISH at QoS 2), SUBACK's
fields (the library returns only the topic id), the removal of a will by an
empty WILLTOPICUPD, ADVERTISE, sleeping clients woken by a PINGREQ carrying
the client id, forwarder encapsulation and malformed datagrams.

Every test runs with 1 and with 4 shards (the `shards` fixture): with 4, a
client's datagrams and its session's owner shard are usually different.
Sleeping clients, forwarders, bad input, limits and metrics are in
test_sn_sleep.py. Section numbers are those of the MQTT-SN 1.2 specification.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from mqttsn12.client.MqttSnClientException import MqttSnClientException

import sn_raw as sn
from sn_support import (  # noqa: F401 (fixtures)
    ALICE,
    HOST,
    LibClient,
    lib,
    quiet_lib_logging,
    raw,
    shards,
    sn_broker,
    sn_clients,
    sn_factory,
    receive,
    topics_payloads,
    watcher,
)

quiet_lib_logging()


# -- discovery (§6.1) -------------------------------------------------------


def test_searchgw_is_answered_with_gwinfo_and_the_gateway_id(sn_factory, raw, lib, caplog):
    # MQTT-SN 1.2 §6.1, §5.4.2, §5.4.3: a SEARCHGW is answered with GWINFO
    # carrying the gateway id (sent by the gateway itself: no GwAdd).
    b = sn_factory(sn={"gateway_id": 7})
    r = raw(target=b)
    r.send(sn.searchgw(radius=1))
    info = r.expect(sn.GWINFO)
    assert info.gw_id == 7
    assert info.data == b""

    c = lib("gw-search", target=b, connect=False)
    with caplog.at_level(logging.INFO, logger="mqttsn12"):
        c.c.send_search_gateway(1)
    assert "Gateway ID: 7" in caplog.text


def test_advertise_is_sent_to_the_configured_address_every_interval(sn_factory):
    # MQTT-SN 1.2 §6.1, §5.4.1: ADVERTISE(GwId, Duration) every Duration
    # seconds to the configured (broadcast) address, once per interval for
    # the whole gateway however many shards it has.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind((HOST, 0))
        port = listener.getsockname()[1]
        b = sn_factory(
            sn={"gateway_id": 9, "advertise_address": f"{HOST}:{port}", "advertise_interval_s": 1}
        )
        listener.settimeout(5)
        data, source = listener.recvfrom(512)
        first = sn.parse(data)
        assert first.mtype == sn.ADVERTISE, first
        assert (first.gw_id, first.duration) == (9, 1)
        assert source[1] == b.sn_port, "ADVERTISE not sent from the gateway's port"
        start = time.monotonic()
        seen = []
        while time.monotonic() - start < 2.6:
            listener.settimeout(max(0.01, 2.6 - (time.monotonic() - start)))
            try:
                data, _ = listener.recvfrom(512)
            except socket.timeout:
                break
            seen.append(sn.parse(data))
        assert all(p.mtype == sn.ADVERTISE and p.gw_id == 9 for p in seen), seen
        # About two more in 2.6 s at one a second: not none, and not one per shard.
        assert 1 <= len(seen) <= 3, f"{len(seen)} ADVERTISE in 2.6 s with a 1 s interval"


# -- connection (§6.2, §6.3, §6.11, §6.12) -----------------------------------------


def test_connect_connack_publish_and_disconnect(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.2, §5.4.4, §5.4.5: CONNECT answered CONNACK accepted;
    # §6.12, §5.4.21: DISCONNECT answered with DISCONNECT.
    w = watcher(make_client, sn_broker, "w-connect", [("sn/connect/#", 0)])
    c = lib("sn-connect")
    c.c.send_publish("sn/connect/hello", b"hi", 0)
    assert topics_payloads(w.wait_messages(1)) == [("sn/connect/hello", b"hi")]
    c.c.send_ping_req()  # §6.11: PINGREQ without ClientId while active -> PINGRESP
    c.c.send_disconnect()


def test_clean_false_keeps_subscriptions_and_clean_true_drops_them(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.3: with CleanSession false the gateway keeps the
    # client's subscriptions across connections; with it true they go.
    pub = make_client("p-clean", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-clean", clean=False) == sn.ACCEPTED
    sub = r.subscribe("sn/clean/t", qos=1)
    assert sub.rc == sn.ACCEPTED
    names = {sub.topic_id: "sn/clean/t"}
    r.send(sn.disconnect())
    r.expect(sn.DISCONNECT)

    pub.publish("sn/clean/t", b"while-away", qos=1)
    r2 = raw()
    assert r2.connect("sn-clean", clean=False) == sn.ACCEPTED
    assert receive(r2, 1, names) == [("sn/clean/t", b"while-away", 1, False)]
    pub.publish("sn/clean/t", b"still-subscribed", qos=1)
    assert receive(r2, 1, names) == [("sn/clean/t", b"still-subscribed", 1, False)]
    r2.send(sn.disconnect())
    r2.expect(sn.DISCONNECT)

    r3 = raw()
    assert r3.connect("sn-clean", clean=True) == sn.ACCEPTED
    pub.publish("sn/clean/t", b"after-clean", qos=1)
    assert r3.quiet(0.7) == []


def test_keepalive_expiry_publishes_the_will(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.11: no message for 1.5 x Duration and the client is
    # lost; §6.14 (lost state) / §6.2: its will is published. The will
    # dialogue (WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG) is the library's.
    w = watcher(make_client, sn_broker, "w-will", [("sn/will/#", 1)])
    lib("sn-will", keepalive=1, will=("sn/will/gone", "bye", 1, False))
    got = w.wait_messages(1, timeout=6)
    assert [(m.topic, m.payload, m.qos) for m in got] == [("sn/will/gone", b"bye", 1)]


def test_retained_will_reaches_a_later_subscriber(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §5.4.7: WILLTOPIC's Retain flag is the will's retain flag.
    r = raw()
    assert r.connect("sn-will-ret", duration=1, will=("sn/willret/x", b"gone", 0, True)) == 0
    active = 'shardmq_sn_clients{state="active"}'
    assert sn_broker.wait_metric(active, lambda v: v >= 1) == 1
    assert sn_broker.wait_metric(active, lambda v: v == 0) == 0
    # The will is published before the client is forgotten.
    c = make_client("w-willret", target=sn_broker)
    c.connect()
    c.subscribe([("sn/willret/#", 0)])
    got = c.wait_messages(1)
    assert [(m.topic, m.payload, m.retain) for m in got] == [("sn/willret/x", b"gone", True)]


def test_pings_keep_a_client_alive(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.11, §5.4.19-20: PINGREQ (no client id) answered with
    # PINGRESP, and it counts as traffic for the keepalive.
    w = watcher(make_client, sn_broker, "w-ping", [("sn/ping/#", 0)])
    r = raw()
    assert r.connect("sn-ping", duration=1, will=("sn/ping/will", b"lost", 0, False)) == 0
    for _ in range(6):
        r.send(sn.pingreq())
        r.expect(sn.PINGRESP)
        time.sleep(0.5)
    assert w.messages == []


def test_keepalive_allows_one_and_a_half_durations(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.11: the client is lost only after 1.5 x Duration of
    # silence: silent for a little over one Duration, it is still there.
    w = watcher(make_client, sn_broker, "w-grace", [("sn/grace/#", 0)])
    r = raw()
    assert r.connect("sn-grace", duration=2, will=("sn/grace/will", b"lost", 0, False)) == 0
    time.sleep(2.3)
    r.send(sn.pingreq())
    r.expect(sn.PINGRESP)
    assert w.messages == []


def test_disconnect_does_not_publish_the_will(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.12: a DISCONNECT ends the connection without the will.
    w = watcher(make_client, sn_broker, "w-nowill", [("sn/nowill/#", 0)])
    c = lib("sn-nowill", keepalive=1, will=("sn/nowill/x", "should-not", 0, False))
    c.c.send_disconnect()
    assert w.collect(2.5) == []


def test_clean_false_without_will_flag_keeps_the_stored_will(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.3: CleanSession=false, Will=false: "the GW keeps all
    # stored client's data" - the will too.
    w = watcher(make_client, sn_broker, "w-keptwill", [("sn/keptwill/#", 0)])
    r = raw()
    assert r.connect("sn-keptwill", clean=False, will=("sn/keptwill/x", b"kept", 0, False)) == 0
    r.send(sn.disconnect())
    r.expect(sn.DISCONNECT)
    r2 = raw()
    assert r2.connect("sn-keptwill", duration=1, clean=False) == 0
    assert [(m.topic, m.payload) for m in w.wait_messages(1, timeout=6)] == [("sn/keptwill/x", b"kept")]


def test_will_topic_and_message_updates(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.4, §5.4.22-25: WILLTOPICUPD/WILLMSGUPD answered with
    # WILLTOPICRESP/WILLMSGRESP accepted (the library raises otherwise),
    # and the updated will is the one published.
    w = watcher(make_client, sn_broker, "w-willupd", [("sn/willupd/#", 0)])
    c = lib("sn-willupd", keepalive=2, will=("sn/willupd/old", "old", 0, False))
    c.c.send_will_topic_update("sn/willupd/new")
    c.c.send_will_message_update("new")
    got = w.wait_messages(1, timeout=8)
    assert topics_payloads(got) == [("sn/willupd/new", b"new")]


def test_empty_willtopicupd_removes_the_will(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §5.4.22: an empty WILLTOPICUPD deletes the will.
    w = watcher(make_client, sn_broker, "w-willdel", [("sn/willdel/#", 0)])
    r = raw()
    assert r.connect("sn-willdel", duration=1, will=("sn/willdel/x", b"x", 0, False)) == 0
    r.send(sn.willtopicupd(None))
    assert r.expect(sn.WILLTOPICRESP).rc == sn.ACCEPTED
    assert w.collect(2.5) == []


# -- configured user name and password ---------------------------------------


def _auth_toml(tmp_path) -> str:
    (tmp_path / "passwd").write_text(ALICE + "\n")
    (tmp_path / "acl").write_text("user alice\ntopic readwrite alice/#\ntopic read public/#\n")
    return f'[auth]\npassword_file = "{tmp_path / "passwd"}"\nacl_file = "{tmp_path / "acl"}"\n'


def test_configured_credentials_meet_the_password_file_and_acl(sn_factory, raw, lib, make_client, tmp_path):
    # The issue's "configured user name and password applied to MQTT-SN
    # clients for the broker's authentication and ACL" (MQTT-SN 1.2 §6.2:
    # a transparent gateway holds one MQTT connection per client).
    b = sn_factory(sn={"username": "alice", "password": "secret"}, extra_toml=_auth_toml(tmp_path))
    w = make_client("w-alice", target=b)
    w._mqttc.username_pw_set("alice", "secret")
    w.connect()
    w.subscribe([("alice/#", 1), ("public/#", 1)])

    c = lib("sn-alice", target=b)
    c.c.send_publish("alice/ok", b"allowed", 1)
    try:
        c.c.send_publish("public/no", b"denied", 1)  # read-only for alice
    except MqttSnClientException:
        pass  # a PUBACK with a rejection code is as good as a silent drop
    c.c.send_publish("alice/after", b"allowed-too", 1)
    assert topics_payloads(w.wait_messages(2)) == [("alice/ok", b"allowed"), ("alice/after", b"allowed-too")]
    assert topics_payloads(w.collect(0.3)) == [("alice/ok", b"allowed"), ("alice/after", b"allowed-too")]

    r = raw(target=b)
    assert r.connect("sn-alice-raw") == sn.ACCEPTED
    assert r.subscribe("bob/#").rc != sn.ACCEPTED
    assert r.subscribe("alice/#").rc == sn.ACCEPTED


def test_wrong_configured_password_is_refused(sn_factory, raw, tmp_path):
    # MQTT-SN 1.2 §5.4.5: MQTT-SN has no authentication return code; a
    # CONNECT the broker refuses is answered CONNACK "rejected: not supported".
    b = sn_factory(sn={"username": "alice", "password": "wrong"}, extra_toml=_auth_toml(tmp_path))
    r = raw(target=b)
    assert r.connect("sn-refused") == sn.NOT_SUPPORTED
    r.send(sn.publish(1, b"x", qos=1, msg_id=1, topic_type=sn.TOPIC_PREDEFINED))
    assert [p for p in r.quiet(0.5) if p.mtype == sn.PUBACK and p.rc == sn.ACCEPTED] == []


# -- topics (§6.5, §6.7) --------------------------------------------------------


def test_register_assigns_topic_ids(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.5, §5.4.10-11: REGISTER answered REGACK with a topic
    # id (not 0x0000 nor 0xFFFF), the same for the same name, and PUBLISH
    # with that id reaches the name's MQTT subscribers.
    w = watcher(make_client, sn_broker, "w-reg", [("sn/reg/#", 0)])
    c = lib("sn-reg")
    a = c.c.send_register("sn/reg/a")
    b = c.c.send_register("sn/reg/b")
    assert a not in (0, 0xFFFF) and b not in (0, 0xFFFF) and a != b
    assert c.c.send_register("sn/reg/a") == a
    c.c.send_publish_with_id(b, sn.TOPIC_NORMAL, b"to-b", 0)
    c.c.send_publish_with_id(a, sn.TOPIC_NORMAL, b"to-a", 0)
    assert topics_payloads(w.wait_messages(2)) == [("sn/reg/b", b"to-b"), ("sn/reg/a", b"to-a")]


def test_gateway_registers_a_wildcard_match_before_publishing_it(sn_factory, raw, make_client):
    # MQTT-SN 1.2 §6.10, §6.5: before its first PUBLISH of a topic the
    # client has no id for (subscribed by wildcard), the gateway sends
    # REGISTER and waits for REGACK (retransmitting it, §6.13).
    b = sn_factory(sn={"retry_interval_ms": 500})
    pub = make_client("p-wild", target=b)
    pub.connect()
    r = raw(target=b)
    assert r.connect("sn-wild") == 0
    ack = r.subscribe("sn/wild/#", qos=1)
    assert (ack.rc, ack.topic_id) == (sn.ACCEPTED, 0)

    pub.publish("sn/wild/x", b"one", qos=1)
    reg = r.expect(sn.REGISTER)
    assert reg.data == b"sn/wild/x" and reg.topic_id not in (0, 0xFFFF)
    again = r.expect(sn.REGISTER, timeout=3)  # no REGACK yet: only the REGISTER again
    assert (again.topic_id, again.data) == (reg.topic_id, reg.data)
    r.send(sn.regack(again.topic_id, again.msg_id))
    p = r.wait_for(sn.PUBLISH)
    assert (p.topic_id, p.topic_type, p.data) == (reg.topic_id, sn.TOPIC_NORMAL, b"one")
    r.ack(p)
    # Only copies of that REGISTER may still be in flight.
    assert [x for x in r.quiet(0.3) if (x.mtype, x.msg_id) != (sn.REGISTER, reg.msg_id)] == []

    pub.publish("sn/wild/x", b"two", qos=1)
    p2 = r.expect(sn.PUBLISH)  # registered already: no second REGISTER
    assert (p2.topic_id, p2.data) == (reg.topic_id, b"two")
    r.ack(p2)


def test_library_subscriber_gets_a_wildcard_match_by_name(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.10: the library answers the gateway's REGISTER and
    # resolves the PUBLISH's topic id to the name.
    c = lib("sn-libwild")
    c.c.send_subscribe("sn/libwild/+", 0, c.inbox)
    pub = make_client("p-libwild", target=sn_broker)
    pub.connect()
    pub.publish("sn/libwild/a", b"A", qos=1)
    pub.publish("sn/libwild/b", b"B", qos=0)
    got = c.poll(2)
    assert [(m.get_topic_name(), m.get_payload()) for m in got] == [("sn/libwild/a", b"A"), ("sn/libwild/b", b"B")]


def test_predefined_topic_ids(sn_broker, lib, raw, make_client):
    # MQTT-SN 1.2 §6.7: predefined ids need no REGISTER and mean the same
    # topic for every client; an unknown one is PUBACK "invalid topic id".
    w = watcher(make_client, sn_broker, "w-pre", [("sensors/predefined/#", 1)])
    c = lib("sn-pre")
    c.c.send_publish_predefined(1, b"p1", 1)
    assert topics_payloads(w.wait_messages(1)) == [("sensors/predefined/one", b"p1")]

    c.c.send_subscribe_predefined(2, 0, c.inbox)
    w.publish("sensors/predefined/two", b"p2", qos=1)
    got = c.poll(1)
    assert [(m.get_topic_id(), m.get_payload()) for m in got] == [(2, b"p2")]

    r = raw()
    assert r.connect("sn-pre-raw") == 0
    ack = r.publish(99, b"nope", qos=1, topic_type=sn.TOPIC_PREDEFINED)
    assert (ack.topic_id, ack.rc) == (99, sn.INVALID_TOPIC_ID)


def test_short_topic_names(sn_broker, lib, raw, make_client):
    # MQTT-SN 1.2 §6.7, §5.3.11: a two-character topic name travels in the
    # TopicId field with topic id type 0b10, both ways.
    w = watcher(make_client, sn_broker, "w-short", [("ab", 0)])
    c = lib("sn-short")
    c.c.send_publish("ab", b"short-up", 0)
    assert topics_payloads(w.wait_messages(1)) == [("ab", b"short-up")]

    r = raw()
    assert r.connect("sn-short-raw") == 0
    ack = r.subscribe(sn.short_id("cd"), qos=1, topic_type=sn.TOPIC_SHORT)
    assert ack.rc == sn.ACCEPTED
    w.publish("cd", b"short-down", qos=1)
    p = r.expect(sn.PUBLISH)
    assert (p.topic_type, p.topic_id, p.data) == (sn.TOPIC_SHORT, sn.short_id("cd"), b"short-down")


def test_topic_ids_per_client_are_bounded(sn_factory, raw):
    # MQTT-SN 1.2 §6.5: a REGISTER the gateway cannot accept is answered
    # REGACK with a rejection code (max_topics_per_client = 3).
    b = sn_factory(sn={"max_topics_per_client": 3})
    r = raw(target=b)
    assert r.connect("sn-bounded") == 0
    ids = {r.register(f"sn/bounded/{i}") for i in range(3)}
    assert len(ids) == 3
    mid = r.next_id()
    r.send(sn.register(0, mid, "sn/bounded/over"))
    ack = r.expect(sn.REGACK)
    assert ack.msg_id == mid and ack.rc != sn.ACCEPTED, ack
    # Another client has its own table.
    r2 = raw(target=b)
    assert r2.connect("sn-bounded-2") == 0
    assert r2.register("sn/bounded/over") not in (0, 0xFFFF)


# -- publish (§6.6, §6.8, §6.10, §6.13) --------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_client_publishes_at_each_qos(sn_broker, lib, make_client, qos):
    # MQTT-SN 1.2 §6.6, §5.4.12-14: PUBLISH at QoS 0, 1 (PUBACK) and 2
    # (PUBREC, PUBREL, PUBCOMP; driven by the library), delivered once.
    w = watcher(make_client, sn_broker, "w-qos", [("sn/qos/#", 2)])
    c = lib(f"sn-qos{qos}")
    c.c.send_publish(f"sn/qos/{qos}", f"at-{qos}".encode(), qos)
    got = w.wait_messages(1)
    assert [(m.topic, m.payload, m.qos) for m in got] == [(f"sn/qos/{qos}", f"at-{qos}".encode(), qos)]
    assert len(w.collect(0.3)) == 1


def test_resent_qos_2_publish_is_delivered_once(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.6, §6.13: a client that lost the PUBREC sends the
    # PUBLISH again with DUP and the same MsgId; QoS 2 still delivers it
    # exactly once, and the exchange ends with PUBCOMP.
    w = watcher(make_client, sn_broker, "w-once", [("sn/once/#", 2)])
    r = raw()
    assert r.connect("sn-once") == 0
    t = r.register("sn/once/t")
    r.send(sn.publish(t, b"once", qos=2, msg_id=9))
    assert r.expect(sn.PUBREC).msg_id == 9
    r.send(sn.publish(t, b"once", qos=2, msg_id=9, dup=True))
    assert r.expect(sn.PUBREC).msg_id == 9
    r.send(sn.pubrel(9))
    assert r.expect(sn.PUBCOMP).msg_id == 9
    assert w.wait_messages(1) and topics_payloads(w.collect(0.5)) == [("sn/once/t", b"once")]


def test_gateway_publishes_at_qos_1_and_2(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.10, §5.4.12-14: downlink at the granted QoS, with
    # PUBACK for 1 and PUBREC/PUBREL/PUBCOMP for 2 on the same MsgId.
    pub = make_client("p-down", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-down") == 0
    two = r.subscribe("sn/down/two", qos=2)
    assert (two.rc, two.qos) == (sn.ACCEPTED, 2) and two.topic_id not in (0, 0xFFFF)
    one = r.subscribe("sn/down/one", qos=1)
    assert (one.rc, one.qos) == (sn.ACCEPTED, 1)

    pub.publish("sn/down/two", b"q2", qos=2)
    p = r.expect(sn.PUBLISH)
    assert (p.topic_id, p.qos, p.dup, p.data) == (two.topic_id, 2, False, b"q2") and p.msg_id != 0
    r.send(sn.pubrec(p.msg_id))
    assert r.expect(sn.PUBREL).msg_id == p.msg_id
    r.send(sn.pubcomp(p.msg_id))

    pub.publish("sn/down/one", b"q2-to-q1", qos=2)  # granted 1: delivered at 1
    p = r.expect(sn.PUBLISH)
    assert (p.topic_id, p.qos, p.data) == (one.topic_id, 1, b"q2-to-q1")
    r.send(sn.puback(p.topic_id, p.msg_id))
    assert r.quiet(0.5) == []


def test_unacknowledged_publish_is_resent_with_dup(sn_factory, raw, make_client):
    # MQTT-SN 1.2 §6.13: the gateway retransmits a QoS 1 PUBLISH after
    # Tretry with the DUP flag, the same MsgId, until acknowledged; the
    # same for QoS 2's PUBLISH (until PUBREC) and PUBREL (until PUBCOMP).
    b = sn_factory(sn={"retry_interval_ms": 400, "max_retries": 5})
    pub = make_client("p-dup", target=b)
    pub.connect()
    r = raw(target=b)
    assert r.connect("sn-dup") == 0
    one = r.subscribe("sn/dup/one", qos=1)
    two = r.subscribe("sn/dup/two", qos=2)

    pub.publish("sn/dup/one", b"d1", qos=1)
    first = r.expect(sn.PUBLISH)
    assert not first.dup
    again = r.expect(sn.PUBLISH, timeout=3)
    assert (again.dup, again.msg_id, again.topic_id, again.data) == (True, first.msg_id, one.topic_id, b"d1")
    r.send(sn.puback(again.topic_id, again.msg_id))
    assert [p for p in r.quiet(1.0) if p.mtype == sn.PUBLISH] == []

    pub.publish("sn/dup/two", b"d2", qos=2)
    first = r.expect(sn.PUBLISH)
    again = r.expect(sn.PUBLISH, timeout=3)
    assert (again.dup, again.msg_id, again.topic_id, again.qos) == (True, first.msg_id, two.topic_id, 2)
    r.send(sn.pubrec(again.msg_id))
    rel = r.wait_for(sn.PUBREL)
    rel_again = r.wait_for(sn.PUBREL, timeout=3)  # PUBREL is retransmitted too
    assert rel.msg_id == rel_again.msg_id == first.msg_id
    r.pending.clear()  # PUBLISH copies sent before our PUBREC arrived
    r.send(sn.pubcomp(first.msg_id))
    assert [p for p in r.quiet(1.0) if p.mtype in (sn.PUBLISH, sn.PUBREL)] == []


def test_client_lost_after_max_retries_publishes_its_will(sn_factory, raw, make_client):
    # MQTT-SN 1.2 §6.13 (Nretry) applied by the gateway: a client that
    # never acknowledges is given up as lost, and its will is published.
    b = sn_factory(sn={"retry_interval_ms": 300, "max_retries": 2})
    w = watcher(make_client, b, "w-retries", [("sn/retries/#", 1)])
    r = raw(target=b)
    assert r.connect("sn-retries", duration=60, will=("sn/retries/will", b"lost", 0, False)) == 0
    r.subscribe("sn/retries/data", qos=1)
    w.publish("sn/retries/data", b"never-acked", qos=1)
    sent = [p for p in r.quiet(2.0) if p.mtype == sn.PUBLISH]
    assert 2 <= len(sent) <= 3, sent  # the first and up to max_retries copies
    got = w.wait_messages(2, timeout=5)
    assert ("sn/retries/will", b"lost") in topics_payloads(got)


def test_unknown_topic_id_is_puback_invalid_topic_id(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.6, §5.4.13: a PUBLISH to a topic id the gateway does
    # not know is answered PUBACK "rejected: invalid topic ID" (0x02),
    # echoing TopicId and MsgId, and published nowhere.
    w = watcher(make_client, sn_broker, "w-badid", [("#", 0)])
    r = raw()
    assert r.connect("sn-badid") == 0
    r.send(sn.publish(0x1234, b"lost", qos=1, msg_id=77))
    ack = r.expect(sn.PUBACK)
    assert (ack.topic_id, ack.msg_id, ack.rc) == (0x1234, 77, sn.INVALID_TOPIC_ID)
    r.send(sn.publish(0x1235, b"lost-too", qos=0))
    assert [m for m in w.collect(0.5) if m.payload.startswith(b"lost")] == []


def test_qos_1_publish_without_msg_id_is_puback_not_supported(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §5.3.7, §5.3.10: MsgId 0x0000 is only for QoS 0 and -1;
    # a QoS 1 PUBLISH carrying it cannot be acknowledged as such and is
    # answered PUBACK "rejected: not supported", published nowhere.
    w = watcher(make_client, sn_broker, "w-noid", [("sensors/predefined/#", 0)])
    r = raw()
    assert r.connect("sn-noid") == 0
    r.send(sn.publish(1, b"no-id", qos=1, msg_id=0, topic_type=sn.TOPIC_PREDEFINED))
    ack = r.expect(sn.PUBACK)
    assert (ack.topic_id, ack.msg_id, ack.rc) == (1, 0, sn.NOT_SUPPORTED)
    assert w.collect(0.3) == []


def test_qos_minus_one_from_a_client_that_never_connected(sn_factory, sn_clients, make_client):
    # MQTT-SN 1.2 §6.8, §7.1: QoS -1 PUBLISH without a connection, to
    # predefined ids and short names only, delivered at QoS 0; a normal
    # topic id is dropped (counted).
    b = sn_factory()
    w = watcher(make_client, b, "w-qm1", [("sensors/predefined/#", 1), ("qm", 1)])
    c = sn_clients(LibClient(b, "never-connects"))
    c.c.send_publish_predefined(1, b"pre", -1)
    c.c.send_publish("qm", b"short", -1)
    got = w.wait_messages(2)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        ("qm", b"short", 0),
        ("sensors/predefined/one", b"pre", 0),
    ]
    series = 'shardmq_sn_dropped_total{reason="qos_minus_one"}'
    before = b.metric(series)
    r = sn_clients(b.raw())
    r.send(sn.publish(5, b"normal-id", qos=-1))
    assert b.wait_metric(series, lambda v: v >= before + 1) == before + 1
    assert r.quiet(0.3) == []
    assert len(w.collect(0.3)) == 2


def test_qos_minus_one_can_be_switched_off(sn_factory, sn_clients, make_client):
    # MQTT-SN 1.2 §6.8: QoS -1 support is the gateway's choice (switchable).
    b = sn_factory(sn={"qos_minus_one": False})
    w = watcher(make_client, b, "w-qm1-off", [("sensors/predefined/#", 0)])
    r = sn_clients(b.raw())
    series = 'shardmq_sn_dropped_total{reason="qos_minus_one"}'
    before = b.metric(series)
    r.send(sn.publish(1, b"off", qos=-1, topic_type=sn.TOPIC_PREDEFINED))
    assert b.wait_metric(series, lambda v: v >= before + 1) == before + 1
    assert w.collect(0.3) == []


# -- subscribe (§6.9) --------------------------------------------------------------


def test_suback_fields_for_each_kind_of_subscription(sn_broker, raw, make_client):
    # MQTT-SN 1.2 §6.9, §5.4.16: SUBACK carries the granted QoS in its
    # flags, the topic id (registered id for a name without wildcard, 0x0000
    # for a wildcard, the predefined id), the MsgId and "accepted"; an
    # unknown predefined id is "rejected: invalid topic ID".
    pub = make_client("p-suback", target=sn_broker)
    pub.connect()
    r = raw()
    assert r.connect("sn-suback") == 0
    by_name = r.subscribe("sn/suback/name", qos=2)
    assert (by_name.qos, by_name.rc) == (2, sn.ACCEPTED) and by_name.topic_id not in (0, 0xFFFF)
    wild = r.subscribe("sn/suback/+/x", qos=1)
    assert (wild.qos, wild.topic_id, wild.rc) == (1, 0, sn.ACCEPTED)
    pre = r.subscribe(1, qos=0, topic_type=sn.TOPIC_PREDEFINED)
    assert (pre.qos, pre.topic_id, pre.rc) == (0, 1, sn.ACCEPTED)
    short = r.subscribe(sn.short_id("sx"), qos=1, topic_type=sn.TOPIC_SHORT)
    assert (short.qos, short.rc) == (1, sn.ACCEPTED)

    missing = r.subscribe(99, qos=0, topic_type=sn.TOPIC_PREDEFINED)
    assert missing.rc == sn.INVALID_TOPIC_ID, missing

    pub.publish("sn/suback/name", b"n", qos=0)
    p = r.expect(sn.PUBLISH)
    assert (p.topic_id, p.topic_type, p.data) == (by_name.topic_id, sn.TOPIC_NORMAL, b"n")
    assert p.msg_id == 0, "§5.3.7: MsgId is 0x0000 at QoS 0"
    pub.publish("sensors/predefined/one", b"pre", qos=0)
    p = r.expect(sn.PUBLISH)
    assert (p.topic_id, p.topic_type, p.data) == (1, sn.TOPIC_PREDEFINED, b"pre")


def test_library_subscribes_by_name_and_predefined_id(sn_broker, lib, make_client):
    # MQTT-SN 1.2 §6.9: subscriptions by name and by predefined id, each
    # receiving what an MQTT client publishes (short names: test_short_topic_names).
    c = lib("sn-libsub")
    c.c.send_subscribe("sn/libsub/name", 0, c.inbox)
    c.c.send_subscribe_predefined(2, 0, c.inbox)
    pub = make_client("p-libsub", target=sn_broker)
    pub.connect()
    pub.publish("sn/libsub/name", b"by-name", qos=1)
    pub.publish("sensors/predefined/two", b"by-predefined", qos=1)
    pub.publish("sn/libsub/other", b"not-subscribed", qos=1)
    got = c.poll(2)
    assert sorted(m.get_payload() for m in got) == [b"by-name", b"by-predefined"]
    assert len(c.poll(3, timeout=0.5)) == 2


def test_unsubscribe_stops_delivery(sn_broker, lib, raw, make_client):
    # MQTT-SN 1.2 §6.9, §5.4.17-18: UNSUBSCRIBE answered UNSUBACK with its
    # MsgId; nothing is delivered afterwards.
    pub = make_client("p-unsub", target=sn_broker)
    pub.connect()
    c = lib("sn-unsub")
    c.c.send_subscribe("sn/unsub/a", 0, c.inbox)
    c.c.send_unsubscribe("sn/unsub/a")
    pub.publish("sn/unsub/a", b"gone", qos=1)
    assert c.poll(1, timeout=0.7) == []

    r = raw()
    assert r.connect("sn-unsub-raw") == 0
    r.subscribe("sn/unsub/#", qos=0)
    r.subscribe(1, qos=0, topic_type=sn.TOPIC_PREDEFINED)
    r.send(sn.unsubscribe("sn/unsub/#", 41))
    assert r.expect(sn.UNSUBACK).msg_id == 41
    r.send(sn.unsubscribe(1, 42, sn.TOPIC_PREDEFINED))
    assert r.expect(sn.UNSUBACK).msg_id == 42
    pub.publish("sn/unsub/b", b"gone", qos=1)
    pub.publish("sensors/predefined/one", b"gone", qos=1)
    assert r.quiet(0.7) == []


# -- retained ---------------------------------------------------------------------


def test_retained_messages_both_ways(sn_broker, lib, raw, make_client):
    # MQTT-SN 1.2 §5.3.4 (Retain flag): a retained PUBLISH from an MQTT-SN
    # client is kept for later MQTT subscribers; retained MQTT messages
    # reach a later MQTT-SN subscriber with the flag, registered first
    # (§6.10) when subscribed by wildcard.
    pub = make_client("p-ret", target=sn_broker)
    pub.connect()
    pub.publish("sn/ret/a", b"ra", qos=1, retain=True)
    pub.publish("sn/ret/b", b"rb", qos=1, retain=True)
    r = raw()
    assert r.connect("sn-ret") == 0
    r.subscribe("sn/ret/+", qos=1)
    got = receive(r, 2)
    assert sorted(got) == [("sn/ret/a", b"ra", 1, True), ("sn/ret/b", b"rb", 1, True)]

    c = lib("sn-ret-pub")
    c.c.send_publish("sn/ret/from-sn", b"kept", 1, retain=True)
    late = make_client("w-ret-late", target=sn_broker)
    late.connect()
    late.subscribe([("sn/ret/from-sn", 1)])
    assert [(m.topic, m.payload, m.retain) for m in late.wait_messages(1)] == [("sn/ret/from-sn", b"kept", True)]


def test_library_errors_surface(sn_broker, lib):
    # The library raises on a rejected PUBACK (MQTT-SN 1.2 §5.4.13): a
    # guard that rejections are not silently accepted by the helpers above.
    c = lib("sn-liberr")
    with pytest.raises(MqttSnClientException, match="invalid topic ID"):
        c.c.send_publish_with_id(0x4321, sn.TOPIC_NORMAL, b"x", 1)


