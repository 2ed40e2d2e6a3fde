#!/usr/bin/env python3
"""Commands per second through the MS500 relay, in the seed's shape.

One backend connection sends `--commands` AIM commands pipelined (as the
seed's backend does, `sock.send(json.dumps(cmd))`, no separator), spread
over `--units` devices. One raw MQTT subscriber on
`/service/ms500/+/socket` (QoS 0, reading and discarding) makes every
command reach a socket. The clock runs from the first byte sent until the
subscriber has received every command; the server's CPU (user + system,
from /proc) is read around the run.

    cargo build --release --bin shardmq
    python3 tests/python/bench_relay.py --bin target/release/shardmq --commands 200000

With `--python-relay` the same run goes through a relay in the seed's
shape instead (a socket server on the backend port that decodes commands
with `json` and publishes each QoS 1 with a paho-mqtt client, paho's
defaults, to shardmq's broker), for comparison; the seed's own
`json.loads(conn.recv(65536))` would fail on pipelined commands, so this
one decodes objects back to back with `raw_decode`.

Not part of the test suite (no `test_` prefix): a figure, not a check.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def mqtt_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + remaining_length(len(body)) + body


class Subscriber(threading.Thread):
    """Counts PUBLISH packets on a raw socket; no parsing beyond framing."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((HOST, port))
        connect = mqtt_string("MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + mqtt_string("bench-sub")
        self.sock.sendall(packet(0x10, connect))
        sub = struct.pack("!H", 1) + mqtt_string("/service/ms500/+/socket") + bytes([0])
        self.sock.sendall(packet(0x82, sub))
        self.count = 0
        self.suback = threading.Event()
        self.done = threading.Event()
        self.target = None

    def run(self) -> None:
        buf = b""
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return
            buf += chunk
            i = 0
            while True:
                if len(buf) - i < 2:
                    break
                kind = buf[i]
                n, mult, j = 0, 1, i + 1
                while j < len(buf):
                    b = buf[j]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    j += 1
                    if not b & 0x80:
                        break
                else:
                    break
                if j + n > len(buf):
                    break
                if kind >> 4 == 3:
                    self.count += 1
                elif kind == 0x90:
                    self.suback.set()
                i = j + n
            buf = buf[i:]
            if self.target is not None and self.count >= self.target:
                self.done.set()


def python_relay(listen_port: int, mqtt_port: int) -> None:
    """The seed's relay shape: recv, json, paho publish QoS 1."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="python-relay", protocol=mqtt.MQTTv311)
    client.connect(HOST, mqtt_port)
    client.loop_start()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, listen_port))
    srv.listen(1)
    decoder = json.JSONDecoder()
    while True:  # one backend at a time, as the seed's
        conn, _ = srv.accept()
        buf = ""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data.decode()
            i = 0
            while True:
                while i < len(buf) and buf[i].isspace():
                    i += 1
                try:
                    cmd, i2 = decoder.raw_decode(buf, i)
                except ValueError:
                    break
                client.publish(f"/service/ms500/{cmd['unit']}/socket", json.dumps(cmd), qos=1)
                i = i2
            buf = buf[i:]
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/shardmq")
    ap.add_argument("--commands", type=int, default=100_000)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--python-relay", action="store_true", help="go through a relay in the seed's shape")
    ap.add_argument("--serve-python-relay", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_python_relay:
        python_relay(*args.serve_python_relay)
        return

    mqtt_port, relay_port, http_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "relay.toml"
        conf.write_text(
            f'[http]\nlisten = "{HOST}:{http_port}"\n'
            f'[relay]\nenabled = true\nlisten = "{HOST}:{relay_port}"\n'
        )
        if args.python_relay:
            conf.write_text("")
        proc = subprocess.Popen(
            [args.bin, "--listen", f"{HOST}:{mqtt_port}", "--shards", str(args.shards),
             "--config", str(conf), "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        relay_proc = proc
        try:
            wait_port(mqtt_port)
            if args.python_relay:
                relay_proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve-python-relay", str(relay_port), str(mqtt_port)])
            wait_port(relay_port)
            sub = Subscriber(mqtt_port)
            sub.start()
            sub.suback.wait(5)
            stream = b"".join(
                json.dumps({
                    "type": "AIM", "camera": "30eda0e27100",
                    "unit": f"MS500-H090-EP-2549-{i % args.units:04d}", "model_id": 5,
                    "link": "/media/Organization1/AIModel/yolov8n.rpk",
                    "md5": "5d41402abc4b2a76b9719d911017c592",
                }).encode()
                for i in range(args.commands)
            )
            sub.target = args.commands
            backend = socket.create_connection((HOST, relay_port))
            cpu0 = cpu_seconds(proc.pid)
            relay_cpu0 = cpu_seconds(relay_proc.pid)
            t0 = time.monotonic()
            backend.sendall(stream)
            if not sub.done.wait(120):
                raise SystemExit(f"only {sub.count} of {args.commands} commands arrived")
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            relay_cpu = cpu_seconds(relay_proc.pid) - relay_cpu0
            relayed = sub.count
            if not args.python_relay:
                with urllib.request.urlopen(f"http://{HOST}:{http_port}/metrics") as r:
                    relayed = sum(
                        int(line.split()[-1]) for line in r.read().decode().splitlines()
                        if line.startswith("shardmq_relay_commands_total{")
                    )
            backend.close()
        finally:
            for p in {proc, relay_proc}:
                p.terminate()
                p.wait(5)
    size = len(stream) / args.commands
    via = "a Python relay in the seed's shape" if args.python_relay else "shardmq's relay"
    print(f"{args.commands} AIM commands ({size:.0f} bytes each), one backend connection, pipelined, "
          f"through {via}, {args.shards} shards")
    print(f"relayed {relayed}, delivered {sub.count} in {elapsed:.3f} s: "
          f"{args.commands / elapsed:,.0f} commands/s")
    print(f"shardmq CPU {cpu:.2f} s: {cpu / args.commands * 1e6:.2f} µs per command")
    if args.python_relay:
        print(f"Python relay CPU {relay_cpu:.2f} s: {relay_cpu / args.commands * 1e6:.2f} µs per command")


if __name__ == "__main__":
    main()
