"""A chat backend the gateway can talk to, shaped like xiaozhi-server (SRV).

One WebSocket per conversation on `/xiaozhi/v1/?from=mqtt_gateway` (§7). It
answers the gateway's hello, echoes every audio frame back as "TTS" (framed
the way SRV frames audio for the gateway), answers `listen stop` with
`tts stop`, and records everything: request path and headers, each message
in either direction, and how the socket ended.

The server runs on its own asyncio event loop in a background thread; every
public method is safe to call from the test thread. A test can also steer a
session: send it any JSON or audio, close it, or have the backend delay or
withhold its hello reply.

With an `ssl_context` it serves `wss://` (a certificate made by the test,
pki.py); `url_host` is the host written in its URL (a name such as
`localhost`, to have the gateway resolve it), while it listens on `host`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BACKEND_AUDIO_PARAMS = {"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60}
GATEWAY_PATH = "/xiaozhi/v1/?from=mqtt_gateway"
RECORDED_HEADERS = ("device-id", "client-id", "protocol-version", "authorization", "x-forwarded-for")


@dataclass(frozen=True)
class Frame:
    """One binary frame: u32 BE timestamp @8, u32 BE length @12, payload @16."""

    timestamp: int
    length: int
    payload: bytes
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> "Frame":
        if len(data) < 16:
            return cls(-1, -1, b"", data)
        timestamp, length = struct.unpack_from("!II", data, 8)
        return cls(timestamp, length, data[16 : 16 + length], data)


def srv_audio_frame(payload: bytes, timestamp: int, seq: int) -> bytes:
    """SRV sendAudioHandle._send_to_mqtt_gateway: [0]=1, [2..4]=u16 len,
    [4..8]=u32 seq, [8..12]=u32 timestamp, [12..16]=u32 len, payload."""
    n = len(payload)
    return struct.pack("!BBHIII", 1, 0, n & 0xFFFF, seq & 0xFFFFFFFF, timestamp & 0xFFFFFFFF, n) + payload


@dataclass(eq=False)
class BackendSession:
    backend: "ChatBackend"
    ws: ServerConnection
    index: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    raw_headers: list[tuple[str, str]] = field(default_factory=list)
    remote: tuple | None = None
    received: list[tuple[str, object]] = field(default_factory=list)  # ("text", str) | ("binary", bytes)
    json: list[dict] = field(default_factory=list)  # received text frames that parsed as JSON objects
    frames: list[Frame] = field(default_factory=list)  # received binary frames
    sent_json: list[dict] = field(default_factory=list)
    sent_frames: list[Frame] = field(default_factory=list)
    hello: dict | None = None
    hello_replied: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    closed_by_backend: bool = False
    close_code: int | None = None
    close_reason: str = ""
    echo: bool = True
    _turn_open: bool = False
    _seq: int = 0

    def __repr__(self) -> str:
        return f"BackendSession(#{self.index} {self.id} device-id={self.headers.get('device-id')!r} closed={self.closed.is_set()})"

    # -- from the test thread -------------------------------------------------

    def send_json(self, obj: dict, timeout: float = 5.0) -> None:
        self.backend._call(self._send_json(obj), timeout)

    def send_text(self, text: str, timeout: float = 5.0) -> None:
        self.backend._call(self.ws.send(text), timeout)

    def send_audio(self, opus: bytes, timestamp: int, timeout: float = 5.0) -> None:
        self.backend._call(self._send_audio(opus, timestamp), timeout)

    def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Close the WebSocket from the backend side (a normal close handshake)."""
        self.closed_by_backend = True
        self.backend._call(self.ws.close(code, reason), timeout)

    def drop(self) -> None:
        """Drop the TCP connection without a close frame (a crashed backend)."""
        self.closed_by_backend = True

        async def abort():
            self.ws.transport.abort()

        self.backend._call(abort(), 5.0)

    def wait_frames(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """At least `count` received audio frames (all of them); what arrived on timeout."""
        self.backend._wait(lambda: len(self.frames) >= count or None, timeout, raise_on_timeout=False)
        with self.backend._cond:
            return list(self.frames)

    def wait_json(self, kind: str, timeout: float = 5.0, predicate=None) -> dict:
        def find():
            for msg in self.json:
                if msg.get("type") == kind and (predicate is None or predicate(msg)):
                    return msg
            return None

        try:
            return self.backend._wait(find, timeout)
        except TimeoutError:
            raise TimeoutError(f"backend session {self.id}: no {kind!r} message within {timeout}s; got {self.json}") from None

    def wait_closed(self, timeout: float = 5.0) -> bool:
        return self.closed.wait(timeout)

    def texts(self) -> list[dict]:
        with self.backend._cond:
            return list(self.json)

    # -- on the event loop ------------------------------------------------------------

    async def _send_json(self, obj: dict) -> None:
        await self.ws.send(json.dumps(obj, ensure_ascii=False))
        with self.backend._cond:
            self.sent_json.append(obj)
            self.backend._cond.notify_all()

    async def _send_audio(self, opus: bytes, timestamp: int) -> None:
        self._seq += 1
        data = srv_audio_frame(opus, timestamp, self._seq)
        await self.ws.send(data)
        with self.backend._cond:
            self.sent_frames.append(Frame.parse(data))
            self.backend._cond.notify_all()


class ChatBackend:
    def __init__(self, host: str = "127.0.0.1", name: str = "backend", *, ssl_context=None, url_host: str | None = None):
        self.host = host
        self.name = name
        self.ssl_context = ssl_context
        self.url_host = url_host or host
        self.port = 0
        # Behaviour knobs; read when a session starts or a hello arrives.
        self.echo = True
        self.hello_delay = 0.0
        self.withhold_hello = False
        self.hello_extra: dict = {}
        self.audio_params = dict(BACKEND_AUDIO_PARAMS)

        self._cond = threading.Condition()
        self.sessions: list[BackendSession] = []
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"{name}-loop", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self._error is not None:
            raise RuntimeError(f"chat backend did not start: {self._error!r}")

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.url_host}:{self.port}{GATEWAY_PATH}"

    # -- loop thread ---------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(self._serve())
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self):
        return await serve(self._handler, self.host, 0, ssl=self.ssl_context)

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _handler(self, ws: ServerConnection) -> None:
        with self._cond:
            sess = BackendSession(self, ws, len(self.sessions), echo=self.echo)
            request = ws.request
            sess.path = request.path if request is not None else ""
            if request is not None:
                sess.raw_headers = list(request.headers.raw_items())
                for name, value in sess.raw_headers:
                    key = name.lower()
                    sess.headers[key] = f"{sess.headers[key]}, {value}" if key in sess.headers else value
            sess.remote = ws.remote_address
            self.sessions.append(sess)
            self._cond.notify_all()
        try:
            async for message in ws:
                if isinstance(message, str):
                    await self._on_text(sess, message)
                else:
                    await self._on_binary(sess, bytes(message))
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                sess.close_code = ws.close_code
                sess.close_reason = ws.close_reason or ""
                sess.closed.set()
                self._cond.notify_all()

    async def _on_text(self, sess: BackendSession, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        with self._cond:
            sess.received.append(("text", text))
            if isinstance(msg, dict):
                sess.json.append(msg)
            self._cond.notify_all()
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "hello" and sess.hello is None:
            with self._cond:
                sess.hello = msg
            if self.withhold_hello:
                return
            if self.hello_delay:
                await asyncio.sleep(self.hello_delay)
            reply = {"type": "hello", "transport": "websocket", "session_id": sess.id, "audio_params": dict(self.audio_params)}
            reply.update(self.hello_extra)
            await sess._send_json(reply)
            sess.hello_replied.set()
        elif kind == "listen" and msg.get("state") == "stop":
            await sess._send_json({"type": "tts", "state": "stop", "session_id": sess.id})
            sess._turn_open = False

    async def _on_binary(self, sess: BackendSession, data: bytes) -> None:
        frame = Frame.parse(data)
        with self._cond:
            sess.received.append(("binary", data))
            sess.frames.append(frame)
            self._cond.notify_all()
        if not sess.echo or frame.length < 0:
            return
        if not sess._turn_open:
            sess._turn_open = True
            await sess._send_json({"type": "tts", "state": "start", "session_id": sess.id})
        await sess._send_audio(frame.payload, frame.timestamp)

    # -- test thread -----------------------------------------------------------------------

    def _wait(self, predicate, timeout: float, raise_on_timeout: bool = True):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value is not None:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if raise_on_timeout:
                        raise TimeoutError(f"{self.name}: condition not met within {timeout}s")
                    return None
                self._cond.wait(remaining)

    def all_sessions(self) -> list[BackendSession]:
        with self._cond:
            return list(self.sessions)

    def wait_sessions(self, count: int, timeout: float = 10.0) -> list[BackendSession]:
        try:
            self._wait(lambda: len(self.sessions) >= count or None, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: {len(self.sessions)} of {count} sessions within {timeout}s") from None
        return self.all_sessions()

    def wait_session(self, index: int = 0, timeout: float = 10.0) -> BackendSession:
        return self.wait_sessions(index + 1, timeout)[index]

    def sessions_for(self, mac: str) -> list[BackendSession]:
        with self._cond:
            return [s for s in self.sessions if s.headers.get("device-id") == mac]

    def wait_session_for(self, mac: str, index: int = 0, timeout: float = 10.0) -> BackendSession:
        def find():
            found = [s for s in self.sessions if s.headers.get("device-id") == mac]
            return found[index] if len(found) > index else None

        try:
            return self._wait(find, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no session #{index} for device {mac} within {timeout}s; sessions {self.sessions}") from None

    def summary(self) -> str:
        lines = []
        for s in self.all_sessions():
            lines.append(
                f"#{s.index} id={s.id} path={s.path} headers={ {k: s.headers.get(k) for k in RECORDED_HEADERS} } "
                f"hello={s.hello} frames={len(s.frames)} sent_frames={len(s.sent_frames)} json={s.json} "
                f"closed={s.closed.is_set()} by_backend={s.closed_by_backend} code={s.close_code}"
            )
        return "\n".join(lines) or "<no sessions>"

    def stop(self) -> None:
        async def shutdown():
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        if self._loop.is_running():
            try:
                self._call(shutdown(), 10)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
