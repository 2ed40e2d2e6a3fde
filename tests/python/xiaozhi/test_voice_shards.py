"""Many devices at once on two shards, with either UDP steering: datagrams
must reach the shard that owns the conversation (by the reuseport BPF
program on the conn id, or by forwarding between shards), and replies
must leave from the advertised address."""

from __future__ import annotations

import threading

import pytest

import crypto
from conversation import assert_udp_hello, open_conversation, round_trip

DEVICES = 8


@pytest.mark.parametrize("steering", ["bpf", "forward"])
@pytest.mark.parametrize("kind", ["firmware", "py"])
def test_concurrent_conversations(gateway_factory, backend, make_device, steering, kind):
    gw = gateway_factory({"voice": {"steering": steering}}, shards=2)
    devices = [make_device(gw, kind) for _ in range(DEVICES)]
    errors: dict[str, BaseException] = {}
    start = threading.Barrier(DEVICES)

    def converse(dev):
        try:
            start.wait(10)
            reply, session = open_conversation(dev, backend)
            assert_udp_hello(reply, gw, session)
            round_trip(dev, session, 20)
            round_trip(dev, session, 10, ts_base=50_000, first_turn=False)
            dev.listen_stop()
            dev.recv_json("tts", 5, predicate=lambda m: m.get("state") == "stop")
            dev.goodbye()
            assert session.wait_closed(5)
        except BaseException as exc:  # reported below, per device
            errors[dev.client_id] = exc

    threads = [threading.Thread(target=converse, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, "\n".join(f"{cid}: {exc!r}" for cid, exc in errors.items())
    conn_ids = {crypto.conn_id_of_nonce(d.nonce) for d in devices}
    assert len(conn_ids) == DEVICES, "every connection has its own conn id"
    assert len({s.id for s in backend.all_sessions()}) == DEVICES
    if kind == "py":
        assert all({p.source for p in d.audio_packets} == {(gw.host, gw.udp_port)} for d in devices)
