"""The packet format and cipher the simulators use, checked against the
protocol notes' worked example (§5.2) and NIST SP 800-38A; no server needed."""

import base64
import datetime as dt
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import crypto

# §4.2 official capture / §5.2 worked example.
CAPTURE_KEY = bytes.fromhex("40711a81786b35f5f127fb31c32841b8")
CAPTURE_NONCE = bytes.fromhex("010000007014e57e0000000000000000")
WORKED_IV = bytes.fromhex("010000787014e57e0000000000000001")


def ecb_keystream(key: bytes, iv: bytes, nbytes: int) -> bytes:
    """CTR keystream built by hand: AES-ECB of the counter, +1 as a 128-bit big-endian integer."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    counter = int.from_bytes(iv, "big")
    out = b""
    while len(out) < nbytes:
        out += enc.update(counter.to_bytes(16, "big"))
        counter = (counter + 1) % (1 << 128)
    return out[:nbytes]


def test_worked_example_header_firmware():
    # 120-byte frame, ts=0, seq=1 on nonce 010000007014e57e0000000000000000.
    assert crypto.firmware_header(CAPTURE_NONCE, 120, 0, 1) == WORKED_IV


def test_worked_example_header_pyxiaozhi():
    # py-xiaozhi writes no timestamp, which for this nonce (bytes 8..11 zero) is the same header.
    assert crypto.pyxiaozhi_header(CAPTURE_NONCE, 120, 1) == WORKED_IV


def test_worked_example_header_server():
    assert crypto.pack_header(120, crypto.conn_id_of_nonce(CAPTURE_NONCE), 0, 1) == WORKED_IV
    assert crypto.conn_id_of_nonce(CAPTURE_NONCE) == 0x7014E57E


def test_header_fields_are_big_endian():
    h = crypto.unpack_header(crypto.pack_header(0x1234, 0xA1B2C3D4, 0x01020304, 0x0A0B0C0D) + b"tail")
    assert h == crypto.Header(1, 0, 0x1234, 0xA1B2C3D4, 0x01020304, 0x0A0B0C0D)
    assert crypto.pack_header(0x1234, 0xA1B2C3D4, 0x01020304, 0x0A0B0C0D).hex() == "01001234a1b2c3d4010203040a0b0c0d"


def test_firmware_header_keeps_type_flags_and_conn_id():
    nonce = bytes.fromhex("0100abcd11223344aabbccddeeff0011")
    h = crypto.firmware_header(nonce, 7, 0xDEADBEEF, 5)
    assert h.hex() == "0100000711223344deadbeef00000005"
    py = crypto.pyxiaozhi_header(nonce, 7, 5)
    assert py.hex() == "0100000711223344aabbccdd00000005"  # nonce bytes 8..11 kept


def test_worked_example_cipher_matches_manual_ctr():
    frame = bytes(range(120))
    packet = crypto.seal(CAPTURE_KEY, WORKED_IV, frame)
    assert packet[:16] == WORKED_IV
    assert len(packet) == 16 + 120  # no padding, no tag
    expected = bytes(a ^ b for a, b in zip(frame, ecb_keystream(CAPTURE_KEY, WORKED_IV, 120)))
    assert packet[16:] == expected
    header, opus = crypto.open_packet(CAPTURE_KEY, packet)
    assert (header.length, header.conn_id, header.timestamp, header.seq, opus) == (120, 0x7014E57E, 0, 1, frame)


def test_nist_sp800_38a_ctr_aes128():
    # SP 800-38A F.5.1 CTR-AES128.Encrypt.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    plain = bytes.fromhex(
        "6bc1bee22e409f96e93d7e117393172a"
        "ae2d8a571e03ac9c9eb76fac45af8e51"
        "30c81c46a35ce411e5fbc1191a0a52ef"
        "f69f2445df4f9b17ad2b417be66c3710"
    )
    cipher = bytes.fromhex(
        "874d6191b620e3261bef6864990db6ce"
        "9806f66b7970fdff8617187bb9fffdff"
        "5ae4df3edbd5d35e5b4f09020db03eab"
        "1e031dda2fbe03d1792170a0f3009cee"
    )
    assert crypto.aes_ctr(key, iv, plain) == cipher
    assert crypto.aes_ctr(key, iv, cipher) == plain


def test_counter_carries_over_all_128_bits():
    # A sequence of 0xffffffff in the IV: the counter wraps into the timestamp,
    # conn id and length bytes, as mbedTLS and Node's aes-128-ctr do.
    iv = bytes.fromhex("0100ffffffffffffffffffffffffffff")
    data = bytes(100)
    assert crypto.aes_ctr(CAPTURE_KEY, iv, data) == ecb_keystream(CAPTURE_KEY, iv, 100)


def test_open_packet_ignores_bytes_past_payload_len():
    packet = crypto.seal(CAPTURE_KEY, crypto.pack_header(4, 1, 0, 1), b"abcd") + b"junk"
    assert crypto.open_packet(CAPTURE_KEY, packet)[1] == b"abcd"


def test_mqtt_password_is_padded_base64_hmac():
    client_id, username, password = crypto.device_credentials("k3y", "aa:bb:cc:dd:ee:ff", "u-1", "GID_test", "1.2.3.4")
    assert client_id == "GID_test@@@aa_bb_cc_dd_ee_ff@@@u-1"
    assert base64.b64decode(username) == b'{"ip":"1.2.3.4"}'
    raw = base64.b64decode(password, validate=True)
    assert len(password) == 44 and password.endswith("=")
    assert raw == hmac.new(b"k3y", f"{client_id}|{username}".encode(), hashlib.sha256).digest()
    legacy, _, _ = crypto.device_credentials("k3y", "aa:bb:cc:dd:ee:ff", None)
    assert legacy == "GID_test@@@aa_bb_cc_dd_ee_ff"


def test_backend_token_format():
    token = crypto.backend_token("s3cret", "u-1", "aa:bb:cc:dd:ee:ff", 1700000000)
    sig, ts = token.rsplit(".", 1)
    assert ts == "1700000000"
    assert "=" not in sig and "+" not in sig and "/" not in sig
    digest = hmac.new(b"s3cret", b"u-1|aa:bb:cc:dd:ee:ff|1700000000", hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=") == digest


def test_management_token_uses_date_then_key():
    day = dt.date(2026, 8, 8)
    assert crypto.management_token("Sh4rdMQ-Voice-Key", day) == hashlib.sha256(b"2026-08-08Sh4rdMQ-Voice-Key").hexdigest()
