"""Helpers for the notification tests: a real HTTP receiver on 127.0.0.1, fast settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from conftest import free_port, serve_in_thread

__all__ = ["FAST_RETRY", "FAST_WORKER", "SECRET", "Receiver", "free_port", "notify_settings",
           "until", "webhook"]

from approvalctl.config import Settings

#: Tiny backoff so retry tests take milliseconds, not minutes.
FAST_RETRY = {"max_attempts": 4, "initial_delay": 0.05, "max_delay": 0.2}
FAST_WORKER = {"poll_interval": 0.05, "lease": 30, "batch": 10}
SECRET = "whsec-test-5f1c"


def notify_settings(**channels: Any) -> Settings:
    block = {"retry": dict(FAST_RETRY), "worker": dict(FAST_WORKER), **channels}
    return Settings(db="", notifications=block)


def webhook(url: str, events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"url": url, "secret_env": "TEST_WEBHOOK_SECRET",
            "events": events or ["created", "decided", "expired"], **extra}


class Receiver:
    """A real HTTP server that answers POSTs from a script and records what it got.

    Script entries: an int status, a (status, headers) pair, or "hang" — hold the request
    until `release` is set (a receiver that stops answering mid-delivery).
    """

    def __init__(self, script: list[Any] | None = None, default: int = 200) -> None:
        self.script = list(script or [])
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.hanging = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({"at": time.monotonic(), "body": body,
                                              "headers": dict(self.headers),
                                              "path": self.path})
                    step = receiver.script.pop(0) if receiver.script else receiver.default
                if step == "hang":
                    receiver.hanging.set()
                    receiver.release.wait(30)
                    step = 200
                status, headers = step if isinstance(step, tuple) else (step, {})
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the client was killed meanwhile
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread = serve_in_thread(self.server)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def until(predicate: Callable[[], Any], timeout: float = 15.0, step: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
