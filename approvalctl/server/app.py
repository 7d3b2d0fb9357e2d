"""The HTTP face of the service: a Starlette app, thin by design.

Routing is Starlette's: one `ApiRoute` per path with its methods (Starlette answers 404 and
405), and the app's exception handlers turn the core's named errors into
`application/problem+json` (`error_response`), HTTP errors into problems (405 with the full
`Allow`), and anything unexpected into a logged 500 without a traceback. What every request
gets before its handler is in `Api.route`: its route label for the metrics, HEAD served as
GET, the path and query checked against the OpenAPI document, the key looked up.

Reads authenticate on the way in and call one service method. Changes (create, decide,
cancel, consume, decision links) are jobs of the write path (writepath.py: its docstring
holds every invariant): the handler reads the request into a `WriteJob`, which looks the
key up inside the unit of work that makes the change. Who may do what is decided by the
service, never here. The service's calls are synchronous database work, so they run off
the event loop (on the database thread of writepath.py, point reads inline on SQLite) and
the loop stays free for long-polls.

Where this module reaches the store without the service, on purpose (docs/design.md section
2): `/metrics` and `/healthz` (no principal; a scrape bumps no counter), and the background
`housekeeping` (counter flush and idempotency-key purge are the process's own bookkeeping).
The long-poll's status re-read is a known gap, left to its rewrite.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import __version__, metrics, rbac
from ..config import Settings
from ..errors import (  # noqa: F401  (PayloadTooLarge, UnsupportedMediaType: re-exported)
    ApprovalctlError,
    BodyTimeout,
    InvalidInput,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    UnsupportedMediaType,
)
from ..models import PENDING, Page, from_iso, to_iso, utcnow
from ..service import IDEMPOTENCY_HOURS, ApprovalService
from ..strictjson import decode as strict_decode
from ..strictjson import describe as describe_json_error
from . import spec
from .docs import DOCS_HTML
from .links import LinkPages
from .wakeups import Wakeups
from .writepath import DatabaseThread, WriteJob

log = logging.getLogger("approvalctl.server")

#: Bodies are small JSON objects (arguments are capped at 64 KiB); anything bigger is refused
#: while it is still being read, long before a 1 MiB upload is buffered.
MAX_BODY = 256 * 1024
#: The longest long-poll (s): the spec refuses a larger `?wait=`; the client asks again.
MAX_WAIT = 60.0
#: Seconds between heartbeat comments on an idle event stream (proxies keep it open).
HEARTBEAT_SECONDS = 15.0
IDEMPOTENCY_HEADER = re.compile(r"[!-~]{1,255}")
PROBLEM = "application/problem+json"
INLINE_PAGE = 100
_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+
WAIT_RETRY_AFTER = 5


# ---------------------------------------------------------------- responses
# Built once: json.dumps with options builds a new encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    body = _encode(data).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def problem(status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None,
            **extra: Any) -> Response:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    data = {"type": f"urn:approvalctl:problem:{slug}", "title": title, "status": status,
            "detail": detail, **{k: v for k, v in extra.items() if v is not None}}
    body = json.dumps(data, ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM)


def error_response(exc: ApprovalctlError) -> Response:
    headers = None
    extra: dict[str, Any] = {}
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
        extra["retry_after"] = exc.retry_after
        if isinstance(exc, QuotaExceeded):
            extra["quota"] = exc.quota
            metrics.count_quota(exc.quota)
    if isinstance(exc, BodyTimeout):  # the rest of the body may never come: do not wait
        headers = {"Connection": "close"}
    current = getattr(exc, "current_status", None)
    if current:
        extra["current_status"] = current
    return problem(exc.http_status, exc.title, exc.detail, headers=headers, **extra)


# ---------------------------------------------------------------- rate limiting
class RateLimiter:
    """A token bucket per API key: `rate` requests per second, bursts of up to `rate`.

    One mechanism for every rate: the request rate (`rate_limit`, all requests, quota
    label "request_rate") and the creation quota (`quotas.create_rate`, "create_rate").
    """

    def __init__(self, rate: float, quota: str = "request_rate",
                 what: str = "rate limit of {rate:g} requests per second") -> None:
        self.rate = float(rate)
        self.burst = max(1.0, self.rate)
        self.quota = quota
        self.what = what
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()  # checked on the loop and in database jobs

    def check(self, key: str) -> None:
        with self._lock:
            self._check(key)

    def _check(self, key: str) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise QuotaExceeded(f"{self.what.format(rate=self.rate)} for API key {key!r} "
                                f"exceeded; retry after {retry} s", self.quota, retry)
        self._buckets[key] = (tokens - 1.0, now)


class KeySlots:
    """At most `limit` things held at once per API key: long-polls now, event streams
    later (share one instance so both count against `quotas.max_waits`). Event-loop only.

        with slots.hold(principal.name):  # QuotaExceeded (429) when the key is at its limit
            ...wait...
    """

    def __init__(self, limit: int | None, quota: str = "waits",
                 what: str = "concurrent long-polls and streams") -> None:
        self.limit = limit
        self.quota = quota
        self.what = what
        self._held: dict[str, int] = {}

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        count = self._held.get(key, 0)
        if self.limit is not None and count >= self.limit:
            raise QuotaExceeded(f"quota of {self.limit} {self.what} for API key {key!r} "
                                "reached (quotas.max_waits); retry after one ends",
                                self.quota, WAIT_RETRY_AFTER)
        self._held[key] = count + 1
        try:
            yield
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]


# ---------------------------------------------------------------- the app
Handler = Callable[["Call"], Awaitable[Response]]
#: What a change handler's `parse` returns: an ApprovalService function taking
#: (service, principal, ...) and its further positional and keyword arguments.
ServiceCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Call:
    """One request as a handler sees it: validated parameters, the caller (reads), the body."""

    __slots__ = ("request", "op", "principal", "query", "path")

    def __init__(self, request: Request, op: spec.Operation) -> None:
        self.request = request
        self.op = op
        self.principal: Any = None
        self.query: dict[str, Any] = {}
        self.path: dict[str, str] = {}


class Change:
    """A change route's handler, in two halves around its `WriteJob` (writepath.py):
    `parse(call)` reads and checks the request and returns the ServiceCall; `respond(call,
    result)` builds the answer from the service's result. `create` marks creations, which
    the creation quota (quotas.create_rate) counts."""

    __slots__ = ("parse", "respond", "create")

    def __init__(self, parse: Callable[[Call], Awaitable[ServiceCall]],
                 respond: Callable[[Call, Any], Response], *, create: bool = False) -> None:
        self.parse = parse
        self.respond = respond
        self.create = create


class ApiRoute(Route):
    """Starlette's Route, labelling each request with its path template (for the HTTP
    metrics) before Starlette dispatches it or refuses its method."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["approvalctl.route"] = self.path
        await super().handle(scope, receive, send)


class Api:
    """The handlers, bound to one service."""

    def __init__(self, store: Any, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.service = ApprovalService(store, settings)
        rate = settings.rate_limit
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not rate > 0):
            raise InvalidInput(f"rate_limit must be a number of requests per second greater "
                               f"than zero, got {rate!r}")
        self.limiter = RateLimiter(rate) if rate else None
        settings.reminders()  # a bad reminder setting stops `serve` now, not every sweep
        quotas = settings.quotas
        self.create_limiter = RateLimiter(
            quotas.create_rate, "create_rate", "creation quota of {rate:g} requests per "
            "second (quotas.create_rate)") if quotas.create_rate else None
        #: A change's `admit` (see WriteJob), by whether the change is a creation.
        self._admits = {create: self._limits(create) for create in (False, True)}
        self.waits = KeySlots(quotas.max_waits)
        self.max_response_bytes = quotas.max_response_bytes
        self.ops = spec.operations()
        # Changes (write()) go through one database thread with group commit on both
        # stores (see writepath.py). Everything else (run()) goes to that thread too on
        # SQLite; on PostgreSQL it waits on the network, so a few pool threads overlap it.
        sqlite = getattr(store, "dialect", "sqlite") == "sqlite"
        self.db_thread = DatabaseThread(store)
        self.db_pool = None if sqlite else ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="approvalctl-db")
        # Point reads by primary key (the key look-up of reads, one request by id) take
        # microseconds on SQLite and WAL readers never wait for the writer, so they run on
        # the loop's own connection and save a thread hop; over a network they do not.
        self.inline_reads = sqlite
        self.stopping = False
        self._last_purge = 0.0
        self.wakeups = Wakeups(store, self.read, self.run)
        self.db_thread.on_commit = self.wakeups.poke_threadsafe

    # ---- plumbing shared by every operation
    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking service call on the database thread(s), off the event loop."""
        call = functools.partial(func, *args, **kwargs)
        if self.db_pool is None:
            return await self.db_thread.submit_async(call)
        return await asyncio.get_running_loop().run_in_executor(self.db_pool, call)

    async def write(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A change that proves itself without an API key (a decision link): `func` is an
        ApprovalService function taking (service, *args, **kwargs), run as a job of the
        write path; it may share one commit with others queued with it."""
        return await self.db_thread.submit_async(
            WriteJob(self.service, None, func, args, kwargs), write=True)

    def close(self) -> None:
        self.db_thread.shutdown()
        if self.db_pool is not None:
            self.db_pool.shutdown(wait=True)

    async def run_apart(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A long admin job (verifying or pruning millions of rows) on a thread of its own,
        with its own connection: the database thread keeps serving everyone else, and the
        job's short write batches take turns with it for the lock."""
        call = functools.partial(func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    async def read(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A point read: inline on SQLite, on the database threads otherwise."""
        if self.inline_reads:
            return func(*args, **kwargs)
        return await self.run(func, *args, **kwargs)

    def _authenticate(self, request: Request) -> Any:
        return self.service.authenticate(self._secret(request))

    @staticmethod
    def _secret(request: Request) -> str | None:
        headers = request.headers
        # Two different keys in one request are ambiguous (which one acts?): refused. The
        # same key in both headers, as OpenAPI's "either scheme" lets a client send, is fine.
        sent = set(headers.getlist("x-api-key"))
        for auth in headers.getlist("authorization"):
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer":
                raise _unauth("Authorization must use the Bearer scheme "
                              "(Authorization: Bearer KEY)")
            sent.add(value)
        if len(sent) > 1:  # ambiguous credentials authenticate nobody
            raise _unauth("two different API keys in one request: send one, in X-API-Key "
                          "or in Authorization: Bearer")
        return sent.pop() if sent else None

    def _admit(self, call: Call, principal: Any) -> None:
        """The per-key rate limit of a read, once the key is known."""
        if self.limiter is not None:
            self.limiter.check(principal.name)
        call.principal = principal

    def _limits(self, create: bool) -> Callable[[Any], None] | None:
        """A change's `admit` (see WriteJob): the per-key rate limit and, for creations,
        the creation quota; None when neither is configured."""
        checks = [lim for lim in (self.limiter, self.create_limiter if create else None)
                  if lim is not None]
        if not checks:
            return None

        def admit(principal: Any) -> None:
            for limiter in checks:
                limiter.check(principal.name)
        return admit

    async def _body(self, call: Call) -> Any:
        request = call.request
        ctype = request.headers.get("content-type")
        length = request.headers.get("content-length")
        if ctype is None and length in (None, "0"):
            raise InvalidInput("a JSON request body is required (Content-Type: "
                               "application/json)")
        media = (ctype or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType(f"Content-Type must be application/json, got "
                                       f"{(ctype or 'none')[:80]!r}")
        if length is not None:
            try:
                int(length)
            except ValueError:
                raise InvalidInput("malformed Content-Length header") from None
        raw = await read_body(request, MAX_BODY, self.settings.http_limits.body_timeout,
                              f"request body exceeds the limit of {MAX_BODY // 1024} KiB")
        return call.op.check_body(parse_json(raw))

    def route(self, path: str, handlers: dict[str, Handler | Change]) -> Route:
        """One Starlette route for `path` with `handlers` by method (HEAD is served as GET;
        other methods are Starlette's 405, see `_http_error`).

        Per request: the path and query are checked against the OpenAPI document; a read
        (a Handler) is authenticated and rate-limited first, then handled; a change (a
        `Change`) becomes one WriteJob, which authenticates in the database job itself
        (writepath.py, invariants 2 and 3)."""
        ops = {m: self.ops[(m, path)] for m in handlers}

        async def endpoint(request: Request) -> Response:
            method = request.method if request.method != "HEAD" else "GET"
            call = Call(request, ops[method])
            handler = handlers[method]
            if isinstance(handler, Change):
                return await self._change(call, handler)
            if not call.op.public:
                self._admit(call, await self.read(self._authenticate, request))
            self._check_params(call)
            return await handler(call)

        return ApiRoute(path, endpoint, methods=list(handlers))

    @staticmethod
    def _check_params(call: Call) -> None:
        op = call.op
        for name, value in call.request.path_params.items():
            call.path[name] = op.check_path(name, value)
        call.query = op.check_query(call.request.query_params.multi_items())

    async def _change(self, call: Call, change: Change) -> Response:
        """Parse the request into a WriteJob and run it on the write path. A missing or
        malformed key is refused here (no database needed); any other problem found while
        reading the request rides in the job as its `refusal`, answered after the key's
        own problems and the limits (writepath.py, invariant 3)."""
        secret = self.service.well_formed_key(self._secret(call.request))
        try:
            self._check_params(call)
            func, args, kwargs = await change.parse(call)
        except ApprovalctlError as exc:  # the request rate counts it; a creation quota not
            job = WriteJob(self.service, secret, refusal=exc, admit=self._admits[False])
        else:
            job = WriteJob(self.service, secret, func, args, kwargs,
                           admit=self._admits[change.create])
        result = await self.db_thread.submit_async(job, write=True)
        return change.respond(call, result)

    # ---- approvals
    async def _parse_create(self, call: Call) -> ServiceCall:
        body = await self._body(call)
        key = call.request.headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_HEADER.fullmatch(key):
            raise InvalidInput("Idempotency-Key must be 1-255 visible ASCII characters")
        return (_create_and_quorum, (body["tool_name"], body.get("arguments")),
                {"reason": body.get("reason"), "risk": body.get("risk"),
                 "ttl_seconds": body.get("ttl_seconds"), "idempotency_key": key})

    @staticmethod
    def _created(call: Call, result: Any) -> Response:
        req, replayed, quorum = result
        headers = {"Location": f"/api/v1/approvals/{req.id}"}
        if call.request.headers.get("idempotency-key") is not None:
            headers["Idempotent-Replayed"] = "true" if replayed else "false"
        return json_response({**req.to_dict(), **quorum.get(req.id, {})}, 201, headers)

    async def list_approvals(self, call: Call) -> Response:
        q = call.query
        # A plain page (no tool/user filter, at most INLINE_PAGE rows) is a walk along the
        # (status, id) index: on SQLite it is as quick as a point read and never waits for
        # the writer (docs/benchmarks.md, "Figures behind the code"), so it runs on the loop
        # like a point read and saves the hop to the database thread.
        # Filtered or big pages may scan many rows and stay off the loop; so do the pages of
        # callers who only see their own requests (the service filters those by user).
        small = not {"tool_name", "user_id", "risk", "since"} & set(q) and \
            q.get("limit", 50) <= INLINE_PAGE and rbac.sees_all(call.principal)
        page, quorum = await (self.read if small else self.run)(
                              self._with_quorum, self.service.list, call.principal,
                              status=q.get("status", PENDING), tool_name=q.get("tool_name"),
                              user_id=q.get("user_id"), limit=q.get("limit", 50),
                              cursor=q.get("cursor"), risk=q.get("risk"),
                              since_seconds=int(q["since"]) if "since" in q else None)
        return self._page_response(page, q.get("status", PENDING), quorum)

    def _with_quorum(self, func: Callable[..., Any], principal: Any, *args: Any,
                     **kwargs: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
        """`func(principal, ...)` (a request or a page of them) and the quorum fields of
        what it returned, in one database job."""
        got = func(principal, *args, **kwargs)
        items = got.items if isinstance(got, Page) else [got]
        return got, self.service.quorum_fields(principal, items)

    async def _request_json(self, call: Call, req: Any,
                            quorum: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """A request's JSON with its quorum (`approvals_required`, `approvals`) if it has
        one (docs/away.md); `quorum` if already read, else read now."""
        if quorum is None:
            quorum = await self.read(self.service.quorum_fields, call.principal, [req])
        return {**req.to_dict(), **quorum.get(req.id, {})}

    def _page_response(self, page: Any, status: str,
                       quorum: dict[str, dict[str, Any]] | None = None) -> Response:
        """A list page, cut short at the response size budget (quotas.max_response_bytes):
        items stop before the one that would pass it (always at least one), and
        next_cursor continues from the last item sent. `quorum` adds the quorum fields of
        the items that have one."""
        items = [r.to_dict() for r in page.items]
        if quorum:
            for item in items:
                item.update(quorum.get(item["id"], {}))
        body = _encode({"items": items, "next_cursor": page.next_cursor}).encode()
        budget = self.max_response_bytes
        if budget is None or len(body) <= budget:  # the usual case: one encoding
            return Response(body, media_type="application/json")
        parts: list[bytes] = []
        size = 0
        for item in items:
            part = _encode(item).encode()
            if parts and size + len(part) > budget:
                break
            parts.append(part)
            size += len(part) + 1
        cursor = page.next_cursor
        if len(parts) < len(items):
            cursor = self.service.cursor_after(page.items[len(parts) - 1], status)
            metrics.count_quota("response_bytes")
        body = b'{"items":[' + b",".join(parts) + b'],"next_cursor":' + \
            _encode(cursor).encode() + b"}"
        return Response(body, media_type="application/json")

    async def stats(self, call: Call) -> Response:
        since = int(call.query.get("since", "86400"))
        by = call.query.get("by")
        if by is None and call.query.get("charts", "false") == "false":
            return json_response(await self.run(self.service.stats, call.principal, since))
        return json_response(await self.run(self.service.stats_detail, call.principal, since,
                                            by))

    async def get(self, call: Call) -> Response:
        quorum = None
        if self.inline_reads:
            # Read on the loop; an overdue request is expired (a write) on the database
            # thread, never on the loop (SQLite: this machine's clock decides).
            req = await self.read(self.service.resolve, call.principal, call.path["id"])
            if req.status == PENDING and req.expires_at <= to_iso(utcnow()):
                req = await self.run(self.service.get, call.principal, req.id)
        else:  # the request and its quorum in one trip to the database
            req, quorum = await self.run(self._with_quorum, self.service.get, call.principal,
                                         call.path["id"])
        wait = call.query.get("wait")
        if wait and req.status == PENDING:
            with self.waits.hold(call.principal.name):
                req = await self._long_poll(call, req, min(float(wait), MAX_WAIT))
            quorum = None  # approvals may have come in meanwhile
        return json_response(await self._request_json(call, req, quorum))

    async def _long_poll(self, call: Call, req: Any, wait: float) -> Any:
        """Wait until the request leaves pending, its expiry, `wait` s, or the client goes.

        Woken by change notification (wakeups.py), which sees decisions made here, by
        another server process and by a local CLI; the row is read again only when woken.
        A client that disconnects releases its waiter at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        expires = from_iso(req.expires_at)
        await self.wakeups.ensure_started()
        gone = asyncio.ensure_future(_disconnected(call.request))
        try:
            with self.wakeups.waiting(req.id) as woken:
                # read again now that the waiter is registered: nothing falls in between
                status = await self.read(self.store.get_status, req.id)
                while status == PENDING and not self.stopping:
                    remaining = min(deadline - loop.time(),
                                    (expires - utcnow()).total_seconds())
                    if remaining <= 0 or gone.done():
                        break
                    woke = asyncio.ensure_future(woken.wait())
                    try:
                        await asyncio.wait({woke, gone}, timeout=remaining,
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woke.cancel()
                    woken.clear()
                    status = await self.read(self.store.get_status, req.id)
        finally:
            gone.cancel()
        # expires it now (once) if it is overdue, rather than wait for a sweep
        return await self.run(self.service.get, call.principal, req.id)

    # ---- the event stream
    async def events(self, call: Call) -> Response:
        """GET /api/v1/events: Server-Sent Events of request changes (see wakeups.py)."""
        principal = call.principal
        if not rbac.allowed(principal, rbac.READ_OWN, self.store.tally):
            from ..errors import Forbidden

            raise Forbidden(f"role {principal.role!r} may not read requests")
        resume = call.request.headers.get("last-event-id")
        if resume is None:
            resume = call.query.get("last_event_id")
        after: int | None = None
        if resume is not None:
            text = str(resume).strip()
            if not text.isascii() or not text.isdigit() or len(text) > 18:
                raise InvalidInput("Last-Event-ID must be an audit seq (a non-negative "
                                   "integer)")
            after = int(text)
        filters = (call.query.get("status"), call.query.get("tool_name"))
        await self.wakeups.ensure_started()
        head = None
        if after is None and self.wakeups.seq is None:  # the hub has not read the head yet
            head = (await self.run(self.store.audit_head))[0]
        slot = self.waits.hold(principal.name)
        slot.__enter__()  # 429 now, before the stream starts; released when it ends
        try:
            stream_cm = self.wakeups.streaming()
            stream = stream_cm.__enter__()
        except BaseException:
            slot.__exit__(None, None, None)
            raise
        # without Last-Event-ID, from now on: what was handed out before the stream was
        # registered is the past (read after registering, so nothing falls in between)
        start = after if after is not None else head if head is not None \
            else self.wakeups.dispatched

        def release() -> None:
            stream_cm.__exit__(None, None, None)
            slot.__exit__(None, None, None)

        body = self._event_stream(principal, stream, start, filters)
        return _EventStream(body, release)

    def _visible(self, principal: Any, req: Any, name: str,
                 filters: tuple[str | None, str | None]) -> bool:
        status, tool = filters
        if not (rbac.sees_all(principal) or req.user_id == principal.name):
            return False
        if tool is not None and req.tool_name != tool:
            return False
        return status is None or req.status == status

    async def _event_stream(self, principal: Any, stream: Any, cursor: int,
                            filters: tuple[str | None, str | None]) -> Any:
        from .wakeups import BATCH, EVENTS

        yield b": approvalctl events\n\n"  # headers and a first byte out at once
        while True:  # the audit trail after Last-Event-ID, then the live queue
            rows = await self.run(self.store.changes_after, cursor, BATCH)
            if not rows:
                break
            ids = {rid for _, action, rid in rows if rid and action in EVENTS}
            reqs = await self.run(self.wakeups.requests_of, ids)
            for seq, action, rid in rows:
                name, found = EVENTS.get(action), reqs.get(rid)
                if name and found is not None and \
                        self._visible(principal, found[0], name, filters):
                    yield _sse(seq, name, found)
                cursor = seq
            if len(rows) < BATCH:
                break
        while not self.stopping:
            get = asyncio.ensure_future(stream.queue.get())
            over = asyncio.ensure_future(stream.overflowed.wait())
            try:
                await asyncio.wait({get, over}, timeout=HEARTBEAT_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                over.cancel()
                if not get.done():
                    get.cancel()
            if stream.overflowed.is_set():
                reason = "server stopping" if self.stopping else "too slow"
                yield (b"event: error\ndata: " + _encode({"reason": reason}).encode()
                       + b"\n\n")
                return
            if not get.done() or get.cancelled():
                yield b": heartbeat\n\n"
                continue
            seq, name, found = get.result()
            if seq <= cursor:  # already sent from the audit trail
                continue
            cursor = seq
            if self._visible(principal, found[0], name, filters):
                yield _sse(seq, name, found)

    async def _parse_decide(self, call: Call) -> ServiceCall:
        body = await self._body(call)
        return _and_quorum(ApprovalService.decide), \
            (call.path["id"], body["action"], body.get("note")), {}

    async def _parse_require(self, call: Call) -> ServiceCall:
        """`approvalctl require ID N` over HTTP (operators and admins, as on the database)."""
        body = await self._body(call)
        return _and_quorum(ApprovalService.require_approvals), \
            (call.path["id"], body["approvals_required"]), {}

    @staticmethod
    def _request_with_quorum(call: Call, result: Any) -> Response:
        req, quorum = result
        return json_response({**req.to_dict(), **quorum.get(req.id, {})})

    async def _parse_consume(self, call: Call) -> ServiceCall:
        body = await self._body(call)
        return ApprovalService.consume, (call.path["id"], body["digest"]), {}

    async def _parse_cancel(self, call: Call) -> ServiceCall:
        return ApprovalService.cancel, (call.path["id"],), {}

    @staticmethod
    def _request(call: Call, req: Any) -> Response:
        return json_response(req.to_dict())

    # ---- operations and admin (extensions for the remote CLI)
    async def sweep(self, call: Call) -> Response:
        return json_response(await self.run(self.service.sweep_all, call.principal))

    async def audit_list(self, call: Call) -> Response:
        q = call.query
        rows = await self.run(self.service.audit_list, call.principal,
                              request_id=q.get("request_id"), limit=q.get("limit", 100))
        return json_response(rows)

    async def audit_verify(self, call: Call) -> Response:
        anchors = call.query.get("anchors")
        result = await self.run_apart(self.service.audit_verify, call.principal,
                                      anchors.split(",") if anchors else ())
        return json_response(result.to_dict())

    async def audit_anchor(self, call: Call) -> Response:
        return json_response(await self.run(self.service.audit_anchor, call.principal))

    async def prune(self, call: Call) -> Response:
        body = await self._body(call)
        return json_response(await self.run_apart(self.service.prune, call.principal,
                                                  body["older_than_seconds"],
                                                  dry_run=body.get("dry_run", False)))

    async def list_keys(self, call: Call) -> Response:
        return json_response(await self.run(self.service.list_keys, call.principal))

    async def _parse_create_key(self, call: Call) -> ServiceCall:
        body = await self._body(call)
        return (ApprovalService.create_key, (body["name"], body["role"],
                                             body.get("expires_seconds")), {})

    @staticmethod
    def _key_created(call: Call, result: Any) -> Response:
        secret, record = result
        return json_response({**record, "key": secret}, 201,
                             {"Location": f"/api/v1/keys/{quote(record['name'])}"})

    async def _parse_revoke_key(self, call: Call) -> ServiceCall:
        return _revoke_and_show, (call.path["name"],), {}

    # ---- policy rules
    async def list_rules(self, call: Call) -> Response:
        return json_response(await self.run(self.service.list_rules, call.principal))

    async def _parse_add_rule(self, call: Call) -> ServiceCall:
        body = dict(await self._body(call))
        before = body.pop("before", None)
        return ApprovalService.add_rule, (body,), {"before": before}

    @staticmethod
    def _rule_added(call: Call, rule: Any) -> Response:
        return json_response(rule, 201)

    async def _parse_remove_rule(self, call: Call) -> ServiceCall:
        return ApprovalService.remove_rule, (call.path["name"],), {}

    async def test_rules(self, call: Call) -> Response:
        body = await self._body(call)
        return json_response(await self.run(self.service.test_rule, call.principal,
                                            body["tool_name"], body.get("arguments")))

    async def _parse_import_rules(self, call: Call) -> ServiceCall:
        body = await self._body(call)
        return ApprovalService.import_rules, (body["rules"],), \
            {"replace": body.get("replace", False)}

    @staticmethod
    def _json(call: Call, result: Any) -> Response:
        return json_response(result)

    # ---- service endpoints
    async def health(self, call: Call) -> Response:
        await self.run(self.store.get_status, "0" * 26)  # raises Unavailable if the DB is gone
        return json_response({"status": "ok", "version": __version__})

    async def metrics(self, call: Call) -> Response:
        # off the database thread: a scrape waits for the database only within its budget
        budget = metrics.scrape_budget(
            call.request.headers.get("x-prometheus-scrape-timeout-seconds"))
        body, ctype = await asyncio.to_thread(metrics.render, self.store, timeout=budget)
        return Response(body, headers={"Content-Type": ctype})

    async def openapi(self, call: Call) -> Response:
        return Response(spec.spec_json(), media_type="application/json")

    async def docs(self, call: Call) -> Response:
        return Response(DOCS_HTML, media_type="text/html")

    async def docs_asset(self, call: Call) -> Response:
        from .docs import asset

        found = asset(call.path["name"])
        if found is None:
            return problem(404, "Not found", "no such /docs asset")
        body, media_type = found
        return Response(body, headers={"Content-Type": media_type,
                                       "Cache-Control": "public, max-age=3600"})

    # ---- housekeeping in the background
    def housekeeping(self) -> None:
        """Expire overdue requests, queue due reminders and escalations, write buffered
        counters, drop old idempotency keys."""
        if self.service.sweep():
            self.wakeups.poke_threadsafe()
        self.service.send_reminders()  # each step once, whichever server gets there first
        self.store.flush_counters()
        now = time.monotonic()
        if now - self._last_purge > 600:
            self._last_purge = now
            self.store.purge_idempotency(to_iso(utcnow() - timedelta(hours=IDEMPOTENCY_HOURS)))

    def routes(self) -> list[Route]:
        decide = Change(self._parse_decide, self._request_with_quorum)
        cancel = Change(self._parse_cancel, self._request)
        return [
            self.route("/api/v1/approvals", {
                "POST": Change(self._parse_create, self._created, create=True),
                "GET": self.list_approvals}),
            self.route("/api/v1/approvals/stats", {"GET": self.stats}),
            self.route("/api/v1/approvals/{id}", {"GET": self.get, "PUT": decide,
                                                  "DELETE": cancel}),
            self.route("/api/v1/approvals/{id}/consume",
                       {"POST": Change(self._parse_consume, self._request)}),
            self.route("/api/v1/approvals/{id}/require",
                       {"POST": Change(self._parse_require, self._request_with_quorum)}),
            self.route("/api/v1/events", {"GET": self.events}),
            self.route("/api/v1/sweep", {"POST": self.sweep}),
            self.route("/api/v1/audit", {"GET": self.audit_list}),
            self.route("/api/v1/audit/verify", {"GET": self.audit_verify}),
            self.route("/api/v1/audit/anchor", {"GET": self.audit_anchor}),
            self.route("/api/v1/prune", {"POST": self.prune}),
            self.route("/api/v1/keys", {
                "GET": self.list_keys,
                "POST": Change(self._parse_create_key, self._key_created)}),
            self.route("/api/v1/keys/{name}",
                       {"DELETE": Change(self._parse_revoke_key, self._json)}),
            self.route("/api/v1/rules", {
                "GET": self.list_rules, "POST": Change(self._parse_add_rule, self._rule_added)}),
            self.route("/api/v1/rules/test", {"POST": self.test_rules}),
            self.route("/api/v1/rules/import",
                       {"POST": Change(self._parse_import_rules, self._json)}),
            self.route("/api/v1/rules/{name}",
                       {"DELETE": Change(self._parse_remove_rule, self._json)}),
            self.route("/healthz", {"GET": self.health}),
            self.route("/metrics", {"GET": self.metrics}),
            self.route("/openapi.json", {"GET": self.openapi}),
            self.route("/docs", {"GET": self.docs}),
            *LinkPages(self).routes(),  # decision links (server/links.py)
            self.route("/docs/assets/{name}", {"GET": self.docs_asset}),
        ]


def _revoke_and_show(service: Any, principal: Any, name: str) -> dict[str, Any]:
    """Revoke the key `name` and return its public record as it now stands, both in the
    same unit of work."""
    service.revoke_key(principal, name)
    return next(k for k in service.list_keys(principal) if k["name"] == name)


def _create_and_quorum(service: Any, principal: Any, *args: Any, **kwargs: Any
                       ) -> tuple[Any, bool, dict[str, dict[str, Any]]]:
    """ApprovalService.create_idempotent, with the new request's quorum fields read in the
    same unit of work (a policy rule may set `approvals_required` at creation)."""
    req, replayed = service.create_idempotent(principal, *args, **kwargs)
    return req, replayed, service.created_quorum_fields(principal, req, replayed)


def _and_quorum(func: Callable[..., Any]) -> Callable[..., Any]:
    """A change's service call that also reads the request's quorum fields in the same unit
    of work: the answer is sent only once that unit committed, so the approvals it lists
    are the committed ones, without a second trip to the database."""
    def call(service: Any, principal: Any, *args: Any, **kwargs: Any) -> Any:
        req = func(service, principal, *args, **kwargs)
        return req, service.quorum_fields(principal, [req])
    return call


def _sse(seq: int, name: str, found: tuple[Any, dict[str, Any]]) -> bytes:
    """One Server-Sent Event (WHATWG HTML, "Server-sent events"): the JSON is one line, the
    request (`found`: it and its quorum fields) as GET /api/v1/approvals/{id} shows it."""
    req, quorum = found
    return (f"id: {seq}\nevent: {name}\ndata: ".encode()
            + _encode({**req.to_dict(), **quorum}).encode() + b"\n\n")


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (ASGI http.disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _EventStream(StreamingResponse):
    """A text/event-stream response that releases its slot and queue when it ends, however
    it ends (client gone, overflow, server stopping), even if it never started."""

    def __init__(self, body: Any, release: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def read_body(request: Request, limit: int, timeout: float, too_large: str) -> bytes:
    """The request body, read within `timeout` seconds and refused once it passes `limit`
    bytes (declared or sent: nothing more is buffered). PayloadTooLarge(`too_large`),
    BodyTimeout (the rest may never come: the connection is closed), InvalidInput when the
    client goes away mid-body."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(too_large)
            chunks.append(chunk)

    try:
        if _TIMEOUT is not None:  # Python 3.11+: no task per body, as wait_for makes
            async with _TIMEOUT(timeout):
                await read()
        else:
            await asyncio.wait_for(read(), timeout)
    except ClientDisconnect:
        raise InvalidInput("the client disconnected while sending the body") from None
    except asyncio.TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout:g}s "
                          "(http_limits.body_timeout)") from None
    return b"".join(chunks)


def _unauth(detail: str) -> ApprovalctlError:
    from ..errors import Unauthenticated

    return Unauthenticated(detail)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or InvalidInput saying exactly what is wrong with it."""
    if not raw.strip():
        raise InvalidInput("the request body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the request body is not UTF-8 (byte {exc.start})") from None
    try:  # duplicate keys at any depth are refused too (DESIGN.md §10)
        value = strict_decode(text)
    except (ValueError, RecursionError) as exc:  # DuplicateKey, JSONDecodeError: ValueErrors
        raise InvalidInput(f"malformed JSON: {describe_json_error(exc)}") from None
    if "\\u" in text and re.search(r"\\u[dD][89a-fA-F]", text):
        try:  # a lone surrogate escape cannot be stored or echoed as UTF-8
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("malformed JSON: a \\u escape is an unpaired surrogate, "
                               "which is not valid Unicode") from None
    return value


class MetricsMiddleware:
    """Times every request into the HTTP metrics, labelled by route template (not raw path)."""

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            method = scope["method"] if scope["method"] in self.METHODS else "OTHER"
            metrics.observe_http(scope.get("approvalctl.route", "unmatched"), method,
                                 status[0], time.perf_counter() - start)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors as problems: 404 for an unknown path, 405 with the route's
    full `Allow` (its methods in order; HEAD, served as GET, is not listed)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, "Not found", f"no such endpoint: {request.url.path[:200]} "
                       "(see /docs)")
    if exc.status_code == 405:
        allow = ", ".join(sorted({m.strip() for m in (exc.headers or {}).get("Allow", "")
                                  .split(",") if m.strip() and m.strip() != "HEAD"}))
        where = request.scope.get("approvalctl.route", request.url.path[:200])
        return problem(405, "Method not allowed", f"{request.method[:20]} is not allowed on "
                       f"{where}; allowed: {allow}", headers={"Allow": allow})
    return problem(exc.status_code, "HTTP error", str(exc.detail), headers=exc.headers)


async def _core_error(request: Request, exc: Exception) -> Response:
    """The core's named errors (errors.py) as application/problem+json."""
    assert isinstance(exc, ApprovalctlError)
    return error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: logged, answered 500 without a traceback (Starlette then re-raises it to the
    server, which logs the traceback)."""
    from ..render import escape  # the path is the client's: keep the log inert

    log.error("unhandled error in %s %s: %s", escape(request.method[:20]),
              escape(request.scope.get("approvalctl.route", request.url.path[:200])),
              type(exc).__name__)
    return problem(500, "Internal error", "the server failed to handle this request; the "
                   "error is in its log")


def create_app(store: Any, settings: Settings | None = None, *, background: bool = True,
               sweep_interval: float = 5.0) -> Starlette:
    """The ASGI app over `store`; with `background`, it sweeps every `sweep_interval` s."""
    settings = settings or Settings()
    api = Api(store, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        await api.wakeups.start()
        if background:
            task = asyncio.create_task(_housekeeping_loop(api, sweep_interval))
        try:
            yield
        finally:
            api.stopping = True
            await api.wakeups.stop()
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            try:
                await api.run(store.flush_counters)
            except ApprovalctlError:
                log.warning("could not write buffered counters at shutdown")
            api.close()

    app = Starlette(routes=api.routes(), lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error,
                                        ApprovalctlError: _core_error,
                                        Exception: _internal_error})
    app.router.redirect_slashes = False
    app.add_middleware(MetricsMiddleware)
    app.state.api = api
    return app


async def _housekeeping_loop(api: Api, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await api.run(api.housekeeping)
        except ApprovalctlError as exc:
            log.warning("background sweep failed: %s", exc.detail)
        except Exception:
            log.exception("background sweep failed")
