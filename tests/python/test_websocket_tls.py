"""MQTT over WebSocket over TLS (`wss`, `[websocket] tls_listen`).

paho-mqtt over `transport="websockets"` with `tls_set(ca_certs=...)`
against certificates made at test time (the `cryptography` package): the
MQTT flows on a two-shard broker (so connections are handed between
shards with their TLS session and framing state), exchange with a plain
TCP client, a client that does not trust the server, and the counters.
"""

from __future__ import annotations

import datetime
import time
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients import Client
from conftest import HOST, free_port
from ws_support import WsBroker, WsClient


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path, label: str) -> Path:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it,
    written as `{label}-ca.pem`, `{label}-server.pem`, `{label}-server.key`.
    Returns the CA's path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} test CA"))
        .issuer_name(_name(f"{label} test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / f"{label}-ca.pem").write_bytes(_pem(ca))
    (directory / f"{label}-server.pem").write_bytes(_pem(server))
    (directory / f"{label}-server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / f"{label}-ca.pem"


class WssBroker(WsBroker):
    """shardmq with `ws`, `wss` (on `wss_port`) and its `[tls]` listener."""

    def __init__(self, workdir: Path):
        self.ca = make_pki(workdir, "wss")
        self.wss_port = free_port()
        tls_port = free_port()
        super().__init__(
            workdir,
            f'tls_listen = "{HOST}:{self.wss_port}"\n'
            f'[tls]\nlisten = "{HOST}:{tls_port}"\n'
            f'cert_file = "{workdir / "wss-server.pem"}"\n'
            f'key_file = "{workdir / "wss-server.key"}"\n',
        )
        self._wait_port(self.wss_port)


class WssClient(WsClient):
    """paho over `wss://`, trusting `ca`."""

    def __init__(self, broker: WssBroker, client_id: str, ca: Path | None = None):
        super().__init__(broker, client_id)
        self.port = broker.wss_port
        self._mqttc.tls_set(ca_certs=str(ca or broker.ca))


@pytest.fixture
def wss_broker(request, tmp_path):
    broker = WssBroker(tmp_path)
    request.node._brokers = getattr(request.node, "_brokers", []) + [broker]
    yield broker
    code = broker.stop()
    if code is not None:
        pytest.fail(f"broker exited with code {code} during the test:\n{broker.log_tail()}")


@pytest.fixture
def clients():
    made: list = []
    yield made
    for c in made:
        c.close()


def test_paho_over_wss_subscribes_and_publishes_across_shards(wss_broker, clients):
    sub = WssClient(wss_broker, "wss-sub")
    clients.append(sub)
    sub.connect()
    assert sub.subscribe([("wss/t/#", 2)]) == [2]
    # Eight publishers with their own ids: the broker runs two shards, so
    # some connections are handed to their owner shard with their TLS
    # session and framing state (all eight staying put: one chance in 256).
    for i in range(8):
        pub = WssClient(wss_broker, f"wss-pub-{i}")
        clients.append(pub)
        pub.connect()
        pub.publish(f"wss/t/{i}", f"payload {i}".encode(), qos=i % 3)
    got = sub.wait_messages(8)
    assert sorted((m.topic, m.payload) for m in got) == sorted(
        (f"wss/t/{i}", f"payload {i}".encode()) for i in range(8)
    )
    assert wss_broker.metric("shardmq_ws_upgrades_total") == 9
    assert wss_broker.metric("shardmq_tls_handshakes_total") == 9


def test_wss_and_tcp_clients_exchange_messages(wss_broker, clients):
    tcp = Client(wss_broker.host, wss_broker.port, "tcp-peer")
    clients.append(tcp)
    tcp.connect()
    assert tcp.subscribe([("to/tcp", 1)]) == [1]
    wss = WssClient(wss_broker, "wss-peer")
    clients.append(wss)
    wss.connect()
    assert wss.subscribe([("to/wss", 1)]) == [1]
    wss.publish("to/tcp", b"from wss", qos=1)
    tcp.publish("to/wss", b"from tcp", qos=1)
    assert [m.payload for m in tcp.wait_messages(1)] == [b"from wss"]
    assert [m.payload for m in wss.wait_messages(1)] == [b"from tcp"]


def test_a_client_not_trusting_the_server_gets_no_connection(wss_broker, tmp_path, clients):
    stranger_ca = make_pki(tmp_path, "stranger")
    client = WssClient(wss_broker, "wss-untrusting", ca=stranger_ca)
    clients.append(client)
    with pytest.raises(ssl.SSLError):
        client.connect()
    # The client's alert reaches the broker, which counts the refusal.
    refused = 'shardmq_tls_handshake_failures_total{reason="alert_received"}'
    deadline = time.monotonic() + 10
    while wss_broker.metric(refused) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wss_broker.metric(refused) == 1
    assert wss_broker.metric("shardmq_ws_upgrades_total") == 0
