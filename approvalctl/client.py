"""`approvalctl.Client`: the HTTP API from Python, shaped exactly like the local service.

The CLI uses it in remote mode (`--server`), and agents import it:

    from approvalctl import Client

    with Client("http://127.0.0.1:8020", api_key) as client:
        req = client.create("git_push", {"branch": "main"}, reason="release 1.4")
        req = client.wait(req.id, timeout=600)

It returns the same model objects as the service (`ApprovalRequest`, `Page`,
`VerifyResult`) and raises the same `approvalctl.errors` exceptions, rebuilt from the
server's problem+json answers, so code written against one works against the other. An
unreachable server is `Unavailable` (CLI exit 6).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from . import errors
from .models import PENDING, ApprovalRequest, Page

__all__ = ["AsyncClient", "Client", "ApprovalDenied", "require_approval", "to_json_value"]

API = "/api/v1"
MAX_POLL = 60.0  # the server's cap on ?wait=
WAIT_RETRY_INITIAL = 0.25  # seconds: first pause of a wait that lost its server
WAIT_RETRY_MAX = 5.0  # seconds: the longest pause between attempts to reach it again

_BY_STATUS: dict[int, type[errors.ApprovalctlError]] = {
    400: errors.InvalidInput,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    408: errors.Unavailable,
    409: errors.ApprovalConflict,
    413: errors.InvalidInput,
    415: errors.InvalidInput,
    422: errors.IdempotencyMismatch,
    429: errors.RateLimited,
    431: errors.InvalidInput,
    503: errors.Unavailable,
}


def _server_url(base_url: str) -> str:
    """`base_url` without a trailing slash; InvalidInput unless it is http(s)."""
    base_url = (base_url or "").rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise errors.InvalidInput(f"server URL must start with http:// or https://, got "
                                  f"{base_url!r}")
    return base_url


def _headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "User-Agent": "approvalctl-client"}


class Client:
    """A connection to an approvalctl server, authenticated with one API key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.base_url, self.timeout = _server_url(base_url), timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers=_headers(api_key))
        #: The quorum fields of requests as last received, by id (see `quorum_fields`).
        self._quorums: dict[str, dict[str, Any]] = {}

    def _request(self, data: dict[str, Any]) -> ApprovalRequest:
        """A request from its JSON, remembering its quorum fields if it has any."""
        if "approvals_required" in data:
            self._quorums[data["id"]] = {"approvals_required": data["approvals_required"],
                                         "approvals": list(data.get("approvals") or [])}
        return ApprovalRequest.from_dict(data)

    @classmethod
    def from_env(cls, timeout: float = 30.0) -> Client:
        """A client for APPROVALCTL_SERVER with the key in APPROVALCTL_API_KEY, each falling
        back to the config file's `server` / `api_key` as the CLI does. Raises InvalidInput
        when no server is configured, Unauthenticated when no key is."""
        server, key = _from_env()
        return cls(server, key, timeout)

    # ---- plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, *, json: Any = None,
              params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
              timeout: float | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=params or None,
                                          headers=headers,
                                          timeout=timeout if timeout is not None
                                          else self.timeout)
        except httpx.TransportError as exc:  # timeouts included
            raise _transport_error(exc, self.base_url, timeout or self.timeout) from None
        return _answer(response, self.base_url)

    @staticmethod
    def _id(id_or_prefix: str) -> str:
        """The id as a path segment; refused here, as the service would, if it cannot be one."""
        from .models import id_prefix

        return quote(id_prefix(id_or_prefix), safe="")

    # ---- requests
    def create(self, tool_name: str, arguments: dict[str, Any] | None = None, *,
               reason: str | None = None, risk: str | None = None,
               ttl_seconds: float | None = None, user_id: str | None = None,
               idempotency_key: str | None = None) -> ApprovalRequest:
        """Submit a request as this key's owner (`user_id` must be None or the key's name)."""
        body = _create_body(tool_name, arguments, reason, risk, ttl_seconds, user_id)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return ApprovalRequest.from_dict(self._call("POST", f"{API}/approvals", json=body,
                                                    headers=headers))

    def get(self, id_or_prefix: str) -> ApprovalRequest:
        return self._request(self._call("GET", f"{API}/approvals/{self._id(id_or_prefix)}"))

    def list(self, *, status: str | None = PENDING, tool_name: str | None = None,
             user_id: str | None = None, limit: int = 50, cursor: str | None = None,
             risk: str | None = None, since_seconds: float | None = None) -> Page:
        since = None if since_seconds is None else str(max(1, math.ceil(since_seconds)))
        data = self._call("GET", f"{API}/approvals", params={
            "status": status or "all", "tool_name": tool_name, "user_id": user_id,
            "limit": limit, "cursor": cursor, "risk": risk, "since": since})
        return Page(items=[self._request(r) for r in data["items"]],
                    next_cursor=data["next_cursor"])

    def decide(self, id_or_prefix: str, action: str, note: str | None = None
               ) -> ApprovalRequest:
        body: dict[str, Any] = {"action": action}
        if note is not None:
            body["note"] = note
        return self._request(self._call(
            "PUT", f"{API}/approvals/{self._id(id_or_prefix)}", json=body))

    def require_approvals(self, id_or_prefix: str, required: int) -> ApprovalRequest:
        """Make a pending request need `required` distinct approvers (operators, admins);
        `approvalctl require` over HTTP. See ApprovalService.require_approvals."""
        return self._request(self._call(
            "POST", f"{API}/approvals/{self._id(id_or_prefix)}/require",
            json={"approvals_required": required}))

    def approvals(self, id_or_prefix: str) -> dict[str, Any] | None:
        """`{"required": N, "approvers": [...]}` of a request with a quorum, else None (as
        ApprovalService.approvals); reads the request."""
        req = self.get(id_or_prefix)
        q = self._quorums.get(req.id)
        return None if q is None else {"required": q["approvals_required"],
                                       "approvers": q["approvals"]}

    def quorum_fields(self, reqs: builtins.list[ApprovalRequest]
                      ) -> dict[str, dict[str, Any]]:
        """The quorum fields (`approvals_required`, `approvals`) the server sent with these
        requests when they were read, by id (as ApprovalService.quorum_fields)."""
        return {r.id: self._quorums[r.id] for r in reqs if r.id in self._quorums}

    def approve(self, id_or_prefix: str, note: str | None = None) -> ApprovalRequest:
        return self.decide(id_or_prefix, "approve", note)

    def reject(self, id_or_prefix: str, note: str | None = None) -> ApprovalRequest:
        return self.decide(id_or_prefix, "reject", note)

    def consume(self, id_or_prefix: str, digest: str) -> ApprovalRequest:
        """Use the approval once for the call whose digest is `digest` (see the service)."""
        return ApprovalRequest.from_dict(self._call(
            "POST", f"{API}/approvals/{self._id(id_or_prefix)}/consume",
            json={"digest": digest}))

    def cancel(self, id_or_prefix: str) -> ApprovalRequest:
        return ApprovalRequest.from_dict(self._call(
            "DELETE", f"{API}/approvals/{self._id(id_or_prefix)}"))

    def wait(self, id_or_prefix: str, timeout: float | None = None) -> ApprovalRequest:
        """Block until the request leaves pending or `timeout` seconds pass (None: forever).

        Long-polls the server in slices of at most 60 s; returns the request either way, so
        check `.status` (still `pending` when the time ran out: CLI exit 124). This is the
        one waiting loop of every remote caller (CLI, `require_approval`, hooks): a server
        that restarts or is briefly unreachable (connection errors, timeouts, 502/503/504)
        is retried with exponential backoff and jitter until `timeout`; only if it is still
        unreachable then does `Unavailable` (exit 6) end the wait — the outcome is unknown,
        which is not the same as "still pending".
        """
        from tenacity import Retrying, retry_if_exception_type, wait_exponential, wait_random

        deadline = None if timeout is None else time.monotonic() + timeout
        path = f"{API}/approvals/{self._id(id_or_prefix)}"
        backoff = wait_exponential(multiplier=WAIT_RETRY_INITIAL, max=WAIT_RETRY_MAX) + \
            wait_random(0, WAIT_RETRY_INITIAL)

        def left() -> float:
            return MAX_POLL if deadline is None else max(0.0, deadline - time.monotonic())

        def until_deadline(state: Any) -> float:
            return min(backoff(state), left())

        retrying = Retrying(retry=retry_if_exception_type(errors.Unavailable),
                            stop=lambda state: deadline is not None
                            and time.monotonic() >= deadline,
                            wait=until_deadline, reraise=True)
        while True:
            try:
                for attempt in retrying:
                    with attempt:
                        slice_ = min(MAX_POLL, left())
                        data = self._call("GET", path, params={"wait": _num(slice_)},
                                          timeout=slice_ + self.timeout)
            except errors.Unavailable as exc:
                raise errors.Unavailable(f"{exc.detail} (still unreachable when the wait of "
                                         f"{timeout:g} s ran out)") from None
            req = ApprovalRequest.from_dict(data)
            if req.status != PENDING or (deadline is not None
                                         and time.monotonic() >= deadline):
                return req
            path = f"{API}/approvals/{req.id}"  # a prefix resolved once stays resolved

    def sweep(self) -> builtins.list[str]:
        return self._call("POST", f"{API}/sweep")["ids"]

    def sweep_all(self) -> dict[str, Any]:
        """Expire overdue requests and queue due reminders/escalations on the server:
        `{"expired", "ids", "reminders", "escalations", "no_channel"}`
        (`ApprovalService.sweep_all`)."""
        data = self._call("POST", f"{API}/sweep")
        return {"expired": data["expired"], "ids": data["ids"],
                "reminders": data.get("reminders", 0),
                "escalations": data.get("escalations", 0),
                "no_channel": data.get("no_channel", 0)}

    def stats(self, since_seconds: float = 86400) -> dict[str, Any]:
        since = max(1, math.ceil(since_seconds))
        return self._call("GET", f"{API}/approvals/stats", params={"since": str(since)})

    def stats_detail(self, since_seconds: float = 86400, by: str | None = None
                     ) -> dict[str, Any]:
        """`stats` with the breakdown `by` (tool, user, risk or None) and the chart figures."""
        since = max(1, math.ceil(since_seconds))
        return self._call("GET", f"{API}/approvals/stats",
                          params={"since": str(since), "by": by, "charts": "true"})

    # ---- audit
    def audit_list(self, *, request_id: str | None = None, limit: int | None = None
                   ) -> builtins.list[dict[str, Any]]:
        return self._call("GET", f"{API}/audit", params={"request_id": request_id,
                                                         "limit": limit})

    def audit_verify(self, anchors: builtins.list[str] | tuple[str, ...] = ()
                     ):  # -> audit.VerifyResult
        from .audit import VerifyResult

        data = self._call("GET", f"{API}/audit/verify",
                          params={"anchors": ",".join(anchors) if anchors else None})
        return VerifyResult(ok=data["ok"], rows=data["rows"], bad_seq=data["first_bad_seq"],
                            problem=data["problem"], request_id=data.get("request_id"))

    def audit_anchor(self) -> dict[str, Any]:
        return self._call("GET", f"{API}/audit/anchor")

    def prune(self, older_than_seconds: float, *, dry_run: bool = False) -> dict[str, Any]:
        # deleting a long backlog runs batch after batch on the server: wait for it
        return self._call("POST", f"{API}/prune", json={
            "older_than_seconds": older_than_seconds, "dry_run": dry_run},
            timeout=max(self.timeout, 3600))

    # ---- API keys
    def create_key(self, name: str, role: str, expires_seconds: float | None = None
                   ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_seconds is not None:
            body["expires_seconds"] = expires_seconds
        data = self._call("POST", f"{API}/keys", json=body)
        secret = data.pop("key")
        return secret, data

    def list_keys(self) -> builtins.list[dict[str, Any]]:
        return self._call("GET", f"{API}/keys")

    def revoke_key(self, name: str) -> None:
        self._call("DELETE", f"{API}/keys/{quote(name, safe='')}")

    # ---- policy rules
    def list_rules(self) -> builtins.list[dict[str, Any]]:
        return self._call("GET", f"{API}/rules")

    def add_rule(self, rule: dict[str, Any], *, before: str | None = None) -> dict[str, Any]:
        body = dict(rule)
        if before is not None:
            body["before"] = before
        return self._call("POST", f"{API}/rules", json=body)

    def remove_rule(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"{API}/rules/{quote(name, safe='')}")

    def test_rule(self, tool_name: str, arguments: Any = None) -> dict[str, Any]:
        return self._call("POST", f"{API}/rules/test",
                          json={"tool_name": tool_name, "arguments": arguments})

    def import_rules(self, rules: Any, *, replace: bool = False) -> builtins.list[dict[str, Any]]:
        return self._call("POST", f"{API}/rules/import",
                          json={"rules": rules, "replace": replace})

    def approve_always(self, id_or_prefix: str, note: str | None = None
                       ) -> tuple[ApprovalRequest, dict[str, Any]]:
        """Approve a request and add an allow rule for exactly its call (as the service
        does); the rule is checked before anything is approved."""
        from . import policy

        req = self.get(id_or_prefix)
        try:
            rule = policy.check_rule(policy.exact_rule(f"always-{req.id}", req.tool_name,
                                                       req.arguments, note=note))
        except policy.RuleError as exc:
            raise errors.InvalidInput(str(exc)) from None
        q = self._quorums.get(req.id)
        if q is not None:  # as the service refuses it (ApprovalService.approve_always)
            raise errors.ApprovalConflict(
                f"request {req.id} needs {q['approvals_required']} approvals: --always would "
                "let one person allow this call from now on; approve it without --always",
                req.status)
        done = self.decide(req.id, "approve", note)
        if done.status != "approved" or done.id in self._quorums:
            raise errors.ApprovalConflict(f"request {req.id} needs more than one approver, so "
                                          "no 'always' rule was added (your approval was "
                                          f"counted: {done.status})", done.status)
        return done, self.add_rule(rule)

    def healthz(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def events(self, *, status: str | None = None, tool_name: str | None = None,
                last_event_id: int | None = None, reconnect: bool = True,
                on_open: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
        """Iterate GET /api/v1/events: `{"event": name, "id": audit seq, "data": request
        dict}` per change, forever. After a dropped connection (or the server's `too slow` /
        `server stopping` end) it reconnects with Last-Event-ID, so nothing is missed; with
        `reconnect=False` it returns instead. Errors the server answers (401, 403, 429) raise
        as the other calls do; Unavailable when the server cannot be reached at all.

        `on_open()` is called each time the stream is (re)opened, before its first event:
        from then on every change reaches the stream, so a caller that keeps a copy of state
        read by other calls (a queue from `list`) re-reads it there, and misses nothing
        even when no event had arrived yet to resume from. It runs on the iterating thread.
        """
        params = {k: v for k, v in (("status", status), ("tool_name", tool_name))
                  if v is not None}
        last = last_event_id
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                with self._http.stream("GET", "/api/v1/events", params=params, headers=headers,
                                       timeout=httpx.Timeout(self.timeout, read=60.0)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise _error_from(resp)
                    if on_open is not None:
                        on_open()
                    for event in _parse_sse(resp.iter_lines()):
                        if event["event"] == "error":
                            break
                        try:
                            last = int(event["id"])
                            event["id"] = last
                            event["data"] = json.loads(event["data"])
                        except (KeyError, ValueError) as exc:  # a proxy mangling the stream
                            raise errors.ApprovalctlError(
                                f"the event stream from {self.base_url} sent an event that "
                                f"is not approvalctl's ({type(exc).__name__})") from None
                        yield event
            except httpx.TransportError as exc:
                if not reconnect:
                    raise errors.Unavailable(f"event stream from {self.base_url} lost: "
                                             f"{_reason(exc)}") from None
                time.sleep(1.0)
            if not reconnect:
                return


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Events from text/event-stream lines (WHATWG HTML "Server-sent events"): fields
    `event`, `id`, `data` (lines joined by newline); comments skipped."""
    event: dict[str, Any] = {}  # str values; events() then makes `id` an int
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                event.setdefault("event", "message")
                event["data"] = "\n".join(data)
                yield event
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("event", "id"):
            event[name] = value


def _from_env() -> tuple[str, str]:
    from .config import Settings

    settings = Settings.load()
    if not settings.server:
        raise errors.InvalidInput("no approvalctl server configured: set APPROVALCTL_SERVER "
                                  "(or `server` in the config file)")
    if not settings.api_key:
        raise errors.Unauthenticated("no API key configured: set APPROVALCTL_API_KEY (or "
                                     "`api_key` in the config file)")
    return settings.server, settings.api_key


def _transport_error(exc: Exception, base_url: str, timeout: float) -> errors.Unavailable:
    if isinstance(exc, httpx.TimeoutException):
        return errors.Unavailable(f"approvalctl server at {base_url} did not answer within "
                                  f"{timeout:g} s")
    return errors.Unavailable(f"cannot reach approvalctl server at {base_url}: "
                              f"{_reason(exc)}")  # type: ignore[arg-type]


def _answer(response: httpx.Response, base_url: str) -> Any:
    if response.status_code >= 400:
        raise _error_from(response)
    try:
        return response.json()
    except ValueError:
        raise errors.ApprovalctlError(f"the server at {base_url} sent a response that is "
                                      "not JSON") from None


def _create_body(tool_name: str, arguments: Any, reason: Any, risk: Any, ttl_seconds: Any,
                 user_id: Any) -> dict[str, Any]:
    if user_id is not None:
        raise errors.Forbidden("a request is always made as the caller; user_id cannot "
                               "be set over the API")
    body: dict[str, Any] = {"tool_name": tool_name}
    for name, value in (("arguments", arguments), ("reason", reason), ("risk", risk),
                        ("ttl_seconds", ttl_seconds)):
        if value is not None:
            body[name] = value
    return body


class AsyncClient:
    """`Client` for asyncio code (httpx.AsyncClient): the calls an agent needs — create,
    get, wait, cancel, consume — as coroutines, with the same answers and exceptions.

        async with AsyncClient.from_env() as client:
            req = await client.create("deploy", {"env": "prod"}, reason="release")
            req = await client.wait(req.id, timeout=600)
    """

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.base_url, self.timeout = _server_url(base_url), timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers=_headers(api_key))

    @classmethod
    def from_env(cls, timeout: float = 30.0) -> AsyncClient:
        """As `Client.from_env`."""
        server, key = _from_env()
        return cls(server, key, timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, *, json: Any = None,
                    params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        limit = timeout if timeout is not None else self.timeout
        try:
            response = await self._http.request(method, path, json=json, params=params,
                                                timeout=limit)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.base_url, limit) from None
        return _answer(response, self.base_url)

    async def create(self, tool_name: str, arguments: dict[str, Any] | None = None, *,
                     reason: str | None = None, risk: str | None = None,
                     ttl_seconds: float | None = None, user_id: str | None = None
                     ) -> ApprovalRequest:
        """As `Client.create`."""
        body = _create_body(tool_name, arguments, reason, risk, ttl_seconds, user_id)
        return ApprovalRequest.from_dict(await self._call("POST", f"{API}/approvals",
                                                          json=body))

    async def get(self, id_or_prefix: str) -> ApprovalRequest:
        return ApprovalRequest.from_dict(await self._call(
            "GET", f"{API}/approvals/{Client._id(id_or_prefix)}"))

    async def cancel(self, id_or_prefix: str) -> ApprovalRequest:
        return ApprovalRequest.from_dict(await self._call(
            "DELETE", f"{API}/approvals/{Client._id(id_or_prefix)}"))

    async def consume(self, id_or_prefix: str, digest: str) -> ApprovalRequest:
        """As `Client.consume`."""
        return ApprovalRequest.from_dict(await self._call(
            "POST", f"{API}/approvals/{Client._id(id_or_prefix)}/consume",
            json={"digest": digest}))

    async def wait(self, id_or_prefix: str, timeout: float | None = None) -> ApprovalRequest:
        """As `Client.wait`: long-polls in slices of at most 60 s, riding out a server that
        restarts or is briefly unreachable (exponential backoff with jitter) until
        `timeout`; never blocks the event loop."""
        import asyncio
        import random

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        path = f"{API}/approvals/{Client._id(id_or_prefix)}"
        pause = WAIT_RETRY_INITIAL

        def left() -> float:
            return MAX_POLL if deadline is None else max(0.0, deadline - loop.time())

        while True:
            slice_ = min(MAX_POLL, left())
            try:
                data = await self._call("GET", path, params={"wait": _num(slice_)},
                                        timeout=slice_ + self.timeout)
            except errors.Unavailable as exc:
                if deadline is not None and loop.time() >= deadline:
                    raise errors.Unavailable(f"{exc.detail} (still unreachable when the "
                                             f"wait of {timeout:g} s ran out)") from None
                await asyncio.sleep(min(pause + random.uniform(0, WAIT_RETRY_INITIAL),
                                        left()))
                pause = min(pause * 2, WAIT_RETRY_MAX)
                continue
            pause = WAIT_RETRY_INITIAL
            req = ApprovalRequest.from_dict(data)
            if req.status != PENDING or (deadline is not None and loop.time() >= deadline):
                return req
            path = f"{API}/approvals/{req.id}"


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is `approvalctl serve` running there?)"
    return text


def _error_from(response: httpx.Response) -> errors.ApprovalctlError:
    """The core exception a problem+json response stands for."""
    try:
        data = response.json()
        detail = str(data.get("detail") or data.get("title"))
    except (ValueError, AttributeError):
        data, detail = {}, ""
    status = response.status_code
    if not detail:
        detail = f"the server answered HTTP {status}"
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = errors.Unavailable if status in (502, 504) else errors.ApprovalctlError
        kind = "server error" if status >= 500 else "request refused"
        detail = f"{kind} (HTTP {status}): {detail}"
    if cls is errors.ApprovalConflict:
        if data.get("current_status") == "expired":
            return errors.Expired(detail)
        return errors.ApprovalConflict(detail, data.get("current_status"))
    if status == 422 and data.get("title") == errors.DigestMismatch.title:
        return errors.DigestMismatch(detail, data.get("current_status"))
    if cls is errors.RateLimited:
        try:
            retry = int(response.headers.get("retry-after", "1"))
        except ValueError:
            retry = 1
        if isinstance(data, dict) and isinstance(data.get("quota"), str):
            return errors.QuotaExceeded(detail, data["quota"], retry)
        return errors.RateLimited(detail, retry)
    return cls(detail)


# ---------------------------------------------------------------- for agents
ApprovalDenied = errors.ApprovalDenied


F = TypeVar("F", bound=Callable[..., Any])


def to_json_value(value: Any, where: str = "argument") -> Any:
    """`value` as the JSON value `require_approval` submits for it (the one rule):

    - None, bool, int, float, str: as they are (integers beyond ±(2**53-1), NaN and
      infinities are refused by the service: canonical JSON cannot represent them);
    - dict with string keys: an object, values by this rule; list and tuple: an array;
    - set and frozenset: an array, sorted by each element's canonical JSON (RFC 8785);
    - pathlib paths: `os.fspath(p)`; datetime, date, time: `.isoformat()`;
      Decimal: `str(d)` (exact, a string, never a rounded float); UUID: `str(u)`;
      Enum members: their `.value` by this rule;
    - anything else (bytes, objects, functions, …): InvalidInput naming where it is.
    """
    import datetime
    import decimal
    import enum
    import os
    import pathlib
    import uuid

    if value is None or isinstance(value, (bool, int, float, str)) and \
            not isinstance(value, enum.Enum):
        return value
    if isinstance(value, enum.Enum):
        return to_json_value(value.value, where)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise errors.InvalidInput(f"{where} has a key {key!r} that is not a string")
            out[key] = to_json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        from .digest import DigestError, canonical

        items = [to_json_value(item, f"{where} item") for item in value]
        try:
            return sorted(items, key=canonical)
        except DigestError as exc:
            raise errors.InvalidInput(f"{where}: {exc}") from None
    if isinstance(value, pathlib.PurePath):
        return os.fspath(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise errors.InvalidInput(f"{where} is a {type(value).__name__}, which has no JSON form "
                              "(see require_approval for the types it sends)")


def _bind(name: str, signature: Any, args: tuple, kwargs: dict
          ) -> tuple[Any, dict[str, Any], str]:
    """The call as `require_approval` submits it: (bound arguments of a private deep copy,
    their JSON `arguments` by `to_json_value`'s rule, the digest of tool + arguments)."""
    import copy

    from .digest import DigestError, digest

    try:  # what runs is a private copy: the caller cannot change it meanwhile
        args, kwargs = copy.deepcopy((args, kwargs))
    except Exception as exc:  # noqa: BLE001 - any object may refuse to be copied
        raise errors.InvalidInput(f"{name}: the arguments cannot be copied: {exc}") from None
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise errors.InvalidInput(f"{name}: {exc}") from None
    bound.apply_defaults()
    arguments = {param: to_json_value(value, f"{name} argument {param!r}")
                 for param, value in bound.arguments.items()}
    try:
        expected = digest(name, arguments)
    except DigestError as exc:
        raise errors.InvalidInput(f"{name}: arguments {exc}") from None
    return bound, arguments, expected


def _check_stored(name: str, req: ApprovalRequest, expected: str) -> None:
    if req.digest != expected:
        raise errors.ApprovalctlError(f"{name}: the server stored digest {req.digest} for "
                                      f"{req.id}, not {expected}")


def _denial(name: str, req: ApprovalRequest, timed_out: bool) -> ApprovalDenied | None:
    """None if `req` is approved; else the ApprovalDenied naming the outcome."""
    if req.status == "approved":
        return None
    who = f" by {req.decided_by}" if req.decided_by else ""
    note = f": {req.decision_note}" if req.decision_note else ""
    outcome = "still pending when the wait timed out; withdrawn" \
        if timed_out else f"{req.status}{who}{note}"
    denied = ApprovalDenied(f"{name} was not approved ({req.id} {outcome})", req)
    if timed_out:
        denied.exit_code = 124
    return denied


def require_approval(client: Client | AsyncClient, tool_name: str | None = None, *,
                     reason: str | None = None, risk: str = "medium",
                     ttl_seconds: float | None = None, timeout: float | None = None,
                     on_deny: str = "raise") -> Callable[[F], F]:
    """Run the decorated function only once an operator approves exactly this call.

    Each call binds its arguments to the function's parameters by name
    (`inspect.signature(func).bind` with defaults applied, so `f("x")` and `f(name="x")`
    are the same request; `*args` becomes an array and `**kwargs` an object under their
    parameter names), turns each value into JSON by `to_json_value`'s rule, and submits
    them as the request's `arguments` (tool name: `tool_name` or the function's name). It
    waits for the decision; if the wait (`timeout` seconds) runs out the request is
    cancelled. Approved, it consumes the approval with the call's digest and only then
    runs the function, with private deep copies of the arguments taken before
    submission, so what runs is what the operator saw even if the caller mutates its
    objects meanwhile. Otherwise, with `on_deny="raise"` (the default) it raises
    `ApprovalDenied` naming the outcome; with `on_deny="return"` the function is not run
    and the call returns None.

    An `async def` stays a coroutine function: decorate it with an `AsyncClient` and every
    step (create, wait, cancel, consume) is awaited, never blocking the event loop. A plain
    function needs a `Client`.

    Raises InvalidInput (before anything is submitted) for arguments that do not bind or
    have no JSON form. Decorate plain functions: a method's `self` has no JSON form.
    """
    if on_deny not in ("raise", "return"):
        raise errors.InvalidInput(f"on_deny must be 'raise' or 'return', not {on_deny!r}")

    def decorate(func: F) -> F:
        import inspect

        name = tool_name or func.__name__
        signature = inspect.signature(func)
        is_async = inspect.iscoroutinefunction(func)
        if is_async != isinstance(client, AsyncClient):
            raise errors.InvalidInput(
                f"{name}: an async def needs an AsyncClient, a plain function a Client")

        def settle(req: ApprovalRequest, timed_out: bool) -> bool:
            denied = _denial(name, req, timed_out)
            if denied is not None and on_deny == "raise":
                raise denied
            return denied is None

        if is_async:
            aclient: AsyncClient = client  # type: ignore[assignment]

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                bound, arguments, expected = _bind(name, signature, args, kwargs)
                req = await aclient.create(name, arguments, reason=reason, risk=risk,
                                           ttl_seconds=ttl_seconds)
                _check_stored(name, req, expected)
                try:
                    req = await aclient.wait(req.id, timeout)
                except BaseException:  # cancelled (or failed) while waiting: withdraw it,
                    import asyncio  # (only async callers pay for the import)

                    with contextlib.suppress(Exception):  # nobody approves a call not made
                        await asyncio.shield(aclient.cancel(req.id))
                    raise
                timed_out = req.status == PENDING
                if timed_out:  # nobody may approve it after we stopped waiting
                    try:
                        req = await aclient.cancel(req.id)
                    except errors.ApprovalConflict:
                        req = await aclient.get(req.id)
                if not settle(req, timed_out):
                    return None
                await aclient.consume(req.id, expected)
                return await func(*bound.args, **bound.kwargs)

            return async_wrapper  # type: ignore[return-value]

        sclient: Client = client  # type: ignore[assignment]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound, arguments, expected = _bind(name, signature, args, kwargs)
            req = sclient.create(name, arguments, reason=reason, risk=risk,
                                 ttl_seconds=ttl_seconds)
            _check_stored(name, req, expected)
            try:
                req = sclient.wait(req.id, timeout)
            except BaseException:  # Ctrl-C (or a failure) while waiting: withdraw it, so
                with contextlib.suppress(Exception):  # nobody approves a call not made
                    sclient.cancel(req.id)
                raise
            timed_out = req.status == PENDING
            if timed_out:  # nobody may approve it after we stopped waiting
                try:
                    req = sclient.cancel(req.id)
                except errors.ApprovalConflict:
                    req = sclient.get(req.id)
            if not settle(req, timed_out):
                return None
            sclient.consume(req.id, expected)
            return func(*bound.args, **bound.kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
