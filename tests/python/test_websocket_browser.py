"""A browser as the MQTT client: MQTT.js in headless Chromium over the
WebSocket listener.

The page (tests/browser/index.html) and MQTT.js's browser bundle
(tests/browser/node_modules, from `npm ci` there) are served by a small HTTP
server of the test, which also takes the page's reports. The browser
subscribes, publishes to itself and to a TCP client, and receives from that
client; the test fails unless all of it arrives.

Needs `chromium` (Debian package) and `npm ci` in tests/browser; .ci/run
installs both. Missing either is a failure, not a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clients import Client
from conftest import HOST, REPO_ROOT
from ws_support import WsBroker

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
MQTT_BUNDLE = BROWSER_DIR / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
# Chromium starting cold in CI, plus MQTT.js's connect timeout.
RESULT_TIMEOUT = 60.0


class PageServer:
    """Serves the page and the bundle; records the page's POSTs."""

    def __init__(self):
        self.reports: dict[str, str] = {}
        self.events = {"/subscribed": threading.Event(), "/result": threading.Event()}
        files = {"/": (BROWSER_DIR / "index.html", "text/html"), "/mqtt.min.js": (MQTT_BUNDLE, "text/javascript")}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                if path not in files:
                    self.send_error(404)
                    return
                file, content_type = files[path]
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                text = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                self.send_response(204)
                self.end_headers()
                if self.path in outer.events:
                    outer.reports[self.path] = text
                    outer.events[self.path].set()

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no chromium found: apt-get install chromium")


def test_mqtt_js_in_chromium_subscribes_and_publishes(tmp_path):
    if not MQTT_BUNDLE.exists():
        pytest.fail(f"{MQTT_BUNDLE} missing: run `npm ci` in {BROWSER_DIR}")
    broker = WsBroker(tmp_path)
    tcp = Client(broker.host, broker.port, "tcp-peer-of-chromium")
    page = PageServer()
    browser = None
    try:
        tcp.connect()
        assert tcp.subscribe([("browser/out", 1)]) == [1]
        url = f"http://{HOST}:{page.port}/?ws={urllib.parse.quote(broker.ws_url, safe='')}"
        browser = subprocess.Popen(
            [
                chromium_binary(),
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "chromium.log").open("wb"),
            stdin=subprocess.DEVNULL,
        )
        # An error report ends the wait early: the page posts /result then.
        deadline = time.monotonic() + RESULT_TIMEOUT
        while time.monotonic() < deadline and not page.events["/result"].is_set():
            if page.events["/subscribed"].wait(0.1):
                break
        if not page.events["/subscribed"].is_set():
            pytest.fail(
                f"the page never subscribed; it reported {page.reports}\n"
                f"chromium: {(tmp_path / 'chromium.log').read_text(errors='replace')[-2000:]}\n"
                f"broker: {broker.log_tail()}"
            )
        tcp.publish("browser/in", b"tcp to chromium", qos=1)
        assert page.events["/result"].wait(RESULT_TIMEOUT), f"no result from the page: {page.reports}"
        assert page.reports["/result"] == "ok hello from chromium | tcp to chromium"
        assert [m.payload for m in tcp.wait_messages(1)] == [b"chromium to tcp"]
        assert broker.metric("shardmq_ws_upgrades_total") >= 1
    finally:
        if browser is not None:
            browser.kill()
            browser.wait(10)
        page.close()
        tcp.close()
        code = broker.stop()
        if code is not None:
            pytest.fail(f"broker exited with code {code}:\n{broker.log_tail()}")
