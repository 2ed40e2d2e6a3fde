"""A synchronous wrapper around paho-mqtt (2.x API) for the tests.

Every call waits for the broker's answer (CONNACK, SUBACK, PUBACK/PUBCOMP,
UNSUBACK) so a test reads as a sequence of steps. Received messages are
collected by a callback and read with `wait_messages` / `collect`.

paho's own `loop_start` reconnects after a lost connection; a test that checks
what happens when a connection goes away must not have it come back on its
own, so this runs its own network loop that stops at the first disconnect.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class ConnectRefused(Exception):
    pass


class Client:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        clean_session: bool = True,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
    ):
        self.host, self.port, self.keepalive = host, port, keepalive
        self.client_id = client_id
        self._mqttc = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self._mqttc.will_set(topic, payload, qos, retain)
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._acks: dict[int, object] = {}
        self._connack: tuple[bool, object] | None = None
        self.disconnected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self._mqttc.on_connect = self._on_connect
        self._mqttc.on_message = self._on_message
        self._mqttc.on_subscribe = self._on_subscribe
        self._mqttc.on_unsubscribe = self._on_unsubscribe
        self._mqttc.on_disconnect = self._on_disconnect

    # -- callbacks (network thread) -----------------------------------------

    def _on_connect(self, _c, _u, flags, reason_code, _p):
        with self._cond:
            self._connack = (bool(flags.session_present), reason_code)
            self._cond.notify_all()

    def _on_message(self, _c, _u, msg):
        with self._cond:
            self._messages.append(
                Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup))
            )
            self._cond.notify_all()

    def _on_subscribe(self, _c, _u, mid, reason_codes, _p):
        with self._cond:
            self._acks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, _c, _u, mid, _reason_codes, _p):
        with self._cond:
            self._acks[mid] = True
            self._cond.notify_all()

    def _on_disconnect(self, *_args):
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._mqttc.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _wait_for(self, predicate, timeout: float, what: str, fail_on_disconnect: bool = True):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value is not None:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id or '<empty id>'}: no {what} within {timeout}s")
                if fail_on_disconnect and self.disconnected.is_set():
                    raise ConnectionError(f"{self.client_id or '<empty id>'}: connection lost waiting for {what}")
                self._cond.wait(remaining)

    # -- API -------------------------------------------------------------

    def connect(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Connect and wait for CONNACK; returns the session-present flag."""
        self._mqttc.connect(self.host, self.port, self.keepalive)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        session_present, rc = self._wait_for(lambda: self._connack, timeout, "CONNACK")
        if rc.value != 0:
            raise ConnectRefused(f"CONNACK refused: {rc}")
        return session_present

    def subscribe(self, filters: list[tuple[str, int]], timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Subscribe and return the SUBACK return codes (granted QoS or 0x80)."""
        rc, mid = self._mqttc.subscribe(filters)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        return self._wait_for(lambda: self._acks.pop(mid, None), timeout, "SUBACK")

    def unsubscribe(self, filters: list[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        rc, mid = self._mqttc.unsubscribe(filters)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        self._wait_for(lambda: self._acks.pop(mid, None), timeout, "UNSUBACK")

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Publish and wait until the QoS flow is complete (sent, PUBACK or PUBCOMP)."""
        info = self._mqttc.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic!r} at QoS {qos} not completed within {timeout}s")

    def publish_nowait(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Queue a publish without waiting for its acknowledgement."""
        info = self._mqttc.publish(topic, payload, qos, retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def wait_messages(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        """Wait until at least `count` messages have arrived; returns all so far.

        Returns what arrived (possibly fewer) on timeout, so the caller's
        assertion shows what was actually received.
        """
        try:
            self._wait_for(
                lambda: True if len(self._messages) >= count else None,
                timeout,
                f"{count} messages",
                fail_on_disconnect=False,
            )
        except TimeoutError:
            pass
        return self.messages

    def collect(self, window: float) -> list[Message]:
        """Everything received by the end of a quiet `window` seconds from now."""
        time.sleep(window)
        return self.messages

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def disconnect(self) -> None:
        """Clean MQTT DISCONNECT (no will), then stop the network loop."""
        if self._thread is not None and not self.disconnected.is_set():
            self._mqttc.disconnect()
            self.disconnected.wait(DEFAULT_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Stop the network loop and drop the socket, without DISCONNECT."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(DEFAULT_TIMEOUT)
            self._thread = None
        sock = self._mqttc.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
