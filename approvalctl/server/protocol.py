"""uvicorn's httptools protocol with the connection limits uvicorn itself lacks.

uvicorn bounds nothing before a request reaches the app: httptools accumulates a header line
or a request target of any length, a connection may take as long as it likes to finish its
headers (its keep-alive timer runs only *between* requests, and any byte cancels it), and
`limit_concurrency` counts running requests too, so it would refuse long-polls. This
subclass of the public `HttpToolsProtocol`, passed to uvicorn with `http=`, adds (see
limits.HttpLimits):

- a bound on the request line plus header block in bytes, and on the number of header
  fields: 431 and close;
- a header timeout from the connection (or from the first byte of the next request on a
  kept-alive connection) until the header block is complete: 408 and close — slowloris;
- a cap on open connections per process: a connection beyond it is answered 503 and closed
  before anything is read; connections already open carry on.

It overrides only the asyncio Protocol interface and httptools' parser callbacks, always
calling uvicorn's own implementation; it reads no private state of uvicorn. Its limits ride on
the uvicorn Config as `approvalctl_http_limits` (a plain attribute, so it survives the trip to
worker processes).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import metrics
from ..limits import HttpLimits

CONFIG_ATTRIBUTE = "approvalctl_http_limits"


def _problem(status: int, reason: str, detail: str) -> bytes:
    slug = reason.lower().replace(" ", "-")
    body = json.dumps({"type": f"urn:approvalctl:problem:{slug}", "title": reason,
                       "status": status, "detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header size/count bounds, a header timeout and a connection
    cap (module docstring). Construct through uvicorn: `uvicorn.Config(app, http=this)`."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: HttpLimits = getattr(config, CONFIG_ATTRIBUTE, None) or HttpLimits()
        self.open_connections = server_state.connections
        self.loop_ = _loop or asyncio.get_event_loop()
        self.conn_transport: asyncio.Transport | None = None
        self.in_headers = False
        self.header_bytes = 0  # bytes received while the header block is incomplete
        self.header_size = 0  # the parsed target and fields of the current request
        self.header_count = 0
        self.over_limit: str | None = None  # a bound passed in a complete header block
        self.header_timer: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.refused = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.conn_transport = transport
        if len(self.open_connections) >= self.limits.max_connections:
            # Refused before uvicorn counts it: nothing of this connection is read or kept.
            self.refused = True
            metrics.count_http_limit("connections")
            transport.write(_problem(503, "Service Unavailable", "the server has reached its "
                                     f"limit of {self.limits.max_connections} open "
                                     "connections; retry shortly"))
            transport.close()
            return
        super().connection_made(transport)
        self._start_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self.refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        if not self.in_headers or self.conn_transport is None \
                or self.conn_transport.is_closing():
            return
        self.header_bytes += len(data)
        if self.over_limit is None and self.header_bytes > self.limits.max_header_bytes:
            self.over_limit = "header_bytes"  # still incomplete, already too long
        if self.over_limit == "header_bytes":
            self._reject(431, "Request Header Fields Too Large", "the request line and headers "
                         f"exceed {self.limits.max_header_bytes} bytes", "header_bytes")
        elif self.over_limit == "header_count":
            self._reject(431, "Request Header Fields Too Large", "the request has more than "
                         f"{self.limits.max_headers} header fields", "header_count")

    # ---- httptools parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self.in_headers:
            self._start_headers(timed=self.in_flight == 0)

    def on_url(self, url: bytes) -> None:
        self.header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_size += len(name) + len(value) + 4  # ": " and CRLF
        if self.header_count <= self.limits.max_headers:  # past it: dropped, and refused
            super().on_header(name, value)               # in data_received

    def on_headers_complete(self) -> None:
        # A whole header block can arrive in one read: bound it here, not only by the bytes
        # received while it is incomplete (data_received).
        if self.header_count > self.limits.max_headers:
            self.over_limit = "header_count"
        elif self.header_size > self.limits.max_header_bytes:
            self.over_limit = "header_bytes"
        if self.over_limit is not None:
            return  # no request starts; data_received answers 431 once this chunk is parsed
        self.in_headers = False
        self._stop_timer()
        self.in_flight += 1
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.over_limit is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.over_limit is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        super().on_response_complete()
        if self.in_headers and self.in_flight == 0 and self.header_timer is None:
            # a pipelined request's headers are timed once the one before it is answered
            self._start_headers(timed=True, reset=False)

    # ---- the header phase
    def _start_headers(self, *, timed: bool = True, reset: bool = True) -> None:
        self.in_headers = True
        if reset:
            self.header_bytes = 0
            self.header_size = 0
            self.header_count = 0
        self._stop_timer()
        if timed:
            self.header_timer = self.loop_.call_later(self.limits.header_timeout,
                                                      self._header_timeout)

    def _stop_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if self.in_headers:
            self._reject(408, "Request Timeout", "the request headers did not arrive within "
                         f"{self.limits.header_timeout:g} s", "header_timeout")

    def _reject(self, status: int, reason: str, detail: str, limit: str) -> None:
        transport = self.conn_transport
        if transport is None or transport.is_closing():
            return
        metrics.count_http_limit(limit)
        self.in_headers = False
        self._stop_timer()
        if self.in_flight == 0:  # never interleave with a response still being written
            transport.write(_problem(status, reason, detail))
        transport.close()
