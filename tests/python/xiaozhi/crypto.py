"""The xiaozhi UDP audio packet: 16-byte header, AES-128-CTR payload.

The header doubles as the CTR initial counter block (protocol notes §5):

    0     1      2..3          4..7                8..11           12..15
    type  flags  payload_len   conn id (ssrc)      timestamp (ms)  sequence
    0x01  0x00   u16 BE        u32 BE              u32 BE          u32 BE

Also here: the MQTT credential and the token algorithms the gateway and its
peers share (device password, backend HMAC token, management API token), so
tests compute expected values independently of the server under test.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HEADER_LEN = 16
PACKET_TYPE_AUDIO = 0x01
_HEADER = struct.Struct("!BBHIII")


@dataclass(frozen=True)
class Header:
    type: int
    flags: int
    length: int
    conn_id: int
    timestamp: int
    seq: int

    def pack(self) -> bytes:
        return pack_header(self.length, self.conn_id, self.timestamp, self.seq, type=self.type, flags=self.flags)


def pack_header(length: int, conn_id: int, timestamp: int, seq: int, *, type: int = PACKET_TYPE_AUDIO, flags: int = 0) -> bytes:
    return _HEADER.pack(type, flags, length & 0xFFFF, conn_id & 0xFFFFFFFF, timestamp & 0xFFFFFFFF, seq & 0xFFFFFFFF)


def unpack_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise ValueError(f"{len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    return Header(*_HEADER.unpack_from(data, 0))


def aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR with the whole 16-byte block as initial counter; encrypt == decrypt."""
    if len(key) != 16:
        raise ValueError(f"AES-128 key must be 16 bytes, got {len(key)}")
    if len(iv) != HEADER_LEN:
        raise ValueError(f"IV must be 16 bytes, got {len(iv)}")
    ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def seal(key: bytes, header: bytes, payload: bytes) -> bytes:
    """A full datagram: header, then the payload encrypted with IV = header."""
    return header + aes_ctr(key, header, payload)


def open_packet(key: bytes, data: bytes) -> tuple[Header, bytes]:
    """Header and decrypted payload of a datagram, the payload cut to payload_len."""
    header = unpack_header(data)
    body = data[HEADER_LEN : HEADER_LEN + header.length]
    return header, aes_ctr(key, data[:HEADER_LEN], body)


def conn_id_of_nonce(nonce: bytes) -> int:
    return struct.unpack_from("!I", nonce, 4)[0]


def firmware_header(nonce: bytes, length: int, timestamp: int, seq: int) -> bytes:
    """Header as xiaozhi-esp32 >= 1.6.2 builds it: the server nonce with
    bytes 2..3 = length, 8..11 = timestamp, 12..15 = sequence."""
    h = bytearray(nonce)
    struct.pack_into("!H", h, 2, length & 0xFFFF)
    struct.pack_into("!I", h, 8, timestamp & 0xFFFFFFFF)
    struct.pack_into("!I", h, 12, seq & 0xFFFFFFFF)
    return bytes(h)


def pyxiaozhi_header(nonce: bytes, length: int, seq: int) -> bytes:
    """Header as py-xiaozhi builds it (`build_audio_nonce`): nonce_hex[:4] +
    "%04x" % len + nonce_hex[8:24] + "%08x" % seq; bytes 8..11 keep the nonce."""
    nonce_hex = nonce.hex()
    return bytes.fromhex(nonce_hex[:4] + "%04x" % (length & 0xFFFF) + nonce_hex[8:24] + "%08x" % (seq & 0xFFFFFFFF))


# -- credentials and tokens --------------------------------------------------


def mac_underscored(mac: str) -> str:
    return mac.replace(":", "_")


def mqtt_username(user_data: dict) -> str:
    return base64.b64encode(json.dumps(user_data, separators=(",", ":")).encode()).decode()


def mqtt_password(signature_key: str, client_id: str, username: str) -> str:
    """base64(HMAC-SHA256(key, client_id + "|" + username)), padded (§3.2)."""
    digest = hmac.new(signature_key.encode(), f"{client_id}|{username}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def device_credentials(
    signature_key: str, mac: str, uuid: str | None, group: str = "GID_test", ip: str = "127.0.0.1"
) -> tuple[str, str, str]:
    """(client_id, username, password) as the OTA endpoint would hand them out."""
    parts = [group, mac_underscored(mac)] + ([uuid] if uuid is not None else [])
    client_id = "@@@".join(parts)
    username = mqtt_username({"ip": ip})
    return client_id, username, mqtt_password(signature_key, client_id, username)


def backend_token(secret: str, client_id: str, mac: str, unix_sec: int) -> str:
    """The backend WebSocket token (§7, SRV core/auth.py):
    base64url_nopad(HMAC-SHA256(secret, "<client_id>|<mac>|<unix_sec>")) + "." + unix_sec."""
    digest = hmac.new(secret.encode(), f"{client_id}|{mac}|{unix_sec}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=") + f".{unix_sec}"


def management_token(key: str, day: _dt.date | None = None) -> str:
    """hex(SHA256("yyyy-MM-dd" + key)) with the UTC date (§7 management API)."""
    day = day or _dt.datetime.now(_dt.timezone.utc).date()
    return hashlib.sha256((day.strftime("%Y-%m-%d") + key).encode()).hexdigest()
