"""Certificates made at test time (the `cryptography` package): a test CA,
a server certificate for localhost and 127.0.0.1 signed by it, and the same
from a second CA nobody trusts.

Used both ways round: shardmq's `[tls]` listener serves `server.pem` to
devices that trust `ca.pem` (as the firmware trusts its CA bundle), and a
`wss://` chat backend serves it to shardmq, configured with
`voice.chat_ca_file = ca.pem`.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server(ca_cert, ca_key, names=SERVER_NAMES):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


class Pki:
    """PEM files in `directory`: ca.pem, server.pem/server.key (signed by the
    CA), stranger-ca.pem, stranger.pem/stranger.key (signed by the other CA)."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = _ca("shardmq voice test CA")
        other_cert, other_key = _ca("a CA nobody here trusts")
        self._write("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
        self._write("stranger-ca.pem", other_cert.public_bytes(serialization.Encoding.PEM))
        for name, (issuer_cert, issuer_key) in (("server", (ca_cert, ca_key)), ("stranger", (other_cert, other_key))):
            cert, key = _server(issuer_cert, issuer_key)
            self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
            self._write(f"{name}.key", _pem_key(key))

    def _write(self, name: str, data: bytes) -> None:
        (self.dir / name).write_bytes(data)

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def ca_file(self) -> str:
        return self.path("ca.pem")

    def tls_section(self, port: int, host: str = "127.0.0.1") -> dict:
        """shardmq's `[tls]` listener serving the CA's server certificate."""
        return {"listen": f"{host}:{port}", "cert_file": self.path("server.pem"), "key_file": self.path("server.key")}

    def client_context(self) -> ssl.SSLContext:
        """A client trusting the test CA only, checking the host name (as
        the firmware checks the server against its CA bundle)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self, which: str = "server") -> ssl.SSLContext:
        """A server serving `server` (trusted) or `stranger` (untrusted)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(f"{which}.pem"), self.path(f"{which}.key"))
        return ctx
