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
import functools
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from . import errors
from .models import PENDING, ApprovalRequest, Page

__all__ = ["Client", "ApprovalDenied", "require_approval", "to_json_value"]

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


class Client:
    """A connection to an approvalctl server, authenticated with one API key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        base_url = (base_url or "").rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise errors.InvalidInput(f"server URL must start with http:// or https://, got "
                                      f"{base_url!r}")
        self.base_url = base_url
        self.timeout = timeout
        self._http = httpx.Client(base_url=base_url, timeout=timeout,
                                  headers={"X-API-Key": api_key,
                                           "User-Agent": "approvalctl-client"})

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
        except httpx.TimeoutException:
            raise errors.Unavailable(f"approvalctl server at {self.base_url} did not answer "
                                     f"within {timeout or self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"cannot reach approvalctl server at {self.base_url}: "
                                     f"{_reason(exc)}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError:
            raise errors.ApprovalctlError(f"the server at {self.base_url} sent a response "
                                          "that is not JSON") from None

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
        if user_id is not None:
            raise errors.Forbidden("a request is always made as the caller; user_id cannot "
                                   "be set over the API")
        body: dict[str, Any] = {"tool_name": tool_name}
        for name, value in (("arguments", arguments), ("reason", reason), ("risk", risk),
                            ("ttl_seconds", ttl_seconds)):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return ApprovalRequest.from_dict(self._call("POST", f"{API}/approvals", json=body,
                                                    headers=headers))

    def get(self, id_or_prefix: str) -> ApprovalRequest:
        return ApprovalRequest.from_dict(self._call("GET", f"{API}/approvals/"
                                                    f"{self._id(id_or_prefix)}"))

    def list(self, *, status: str | None = PENDING, tool_name: str | None = None,
             user_id: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        data = self._call("GET", f"{API}/approvals", params={
            "status": status or "all", "tool_name": tool_name, "user_id": user_id,
            "limit": limit, "cursor": cursor})
        return Page(items=[ApprovalRequest.from_dict(r) for r in data["items"]],
                    next_cursor=data["next_cursor"])

    def decide(self, id_or_prefix: str, action: str, note: str | None = None
               ) -> ApprovalRequest:
        body: dict[str, Any] = {"action": action}
        if note is not None:
            body["note"] = note
        return ApprovalRequest.from_dict(self._call(
            "PUT", f"{API}/approvals/{self._id(id_or_prefix)}", json=body))

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

    def stats(self, since_seconds: float = 86400) -> dict[str, Any]:
        since = max(1, math.ceil(since_seconds))
        return self._call("GET", f"{API}/approvals/stats", params={"since": str(since)})

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
        done = self.decide(req.id, "approve", note)
        return done, self.add_rule(rule)

    def healthz(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")


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


def require_approval(client: Client, tool_name: str | None = None, *,
                     reason: str | None = None, risk: str = "medium",
                     ttl_seconds: float | None = None, timeout: float | None = None
                     ) -> Callable[[F], F]:
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
    objects meanwhile. Otherwise it raises `ApprovalDenied` naming the outcome.

    Raises InvalidInput (before anything is submitted) for arguments that do not bind or
    have no JSON form. Decorate plain functions: a method's `self` has no JSON form.
    """
    def decorate(func: F) -> F:
        import copy
        import inspect

        from .digest import DigestError, digest

        name = tool_name or func.__name__
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:  # what runs is a private copy: the caller cannot change it meanwhile
                args, kwargs = copy.deepcopy((args, kwargs))
            except Exception as exc:  # noqa: BLE001 - any object may refuse to be copied
                raise errors.InvalidInput(f"{name}: the arguments cannot be copied: "
                                          f"{exc}") from None
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
            req = client.create(name, arguments, reason=reason, risk=risk,
                                ttl_seconds=ttl_seconds)
            if req.digest != expected:
                raise errors.ApprovalctlError(f"{name}: the server stored digest "
                                              f"{req.digest} for {req.id}, not {expected}")
            req = client.wait(req.id, timeout)
            timed_out = req.status == PENDING
            if timed_out:  # nobody may approve it after we stopped waiting
                try:
                    req = client.cancel(req.id)
                except errors.ApprovalConflict:
                    req = client.get(req.id)
            if req.status != "approved":
                who = f" by {req.decided_by}" if req.decided_by else ""
                note = f": {req.decision_note}" if req.decision_note else ""
                outcome = "still pending when the wait timed out; withdrawn" \
                    if timed_out else f"{req.status}{who}{note}"
                denied = ApprovalDenied(f"{name} was not approved ({req.id} {outcome})", req)
                if timed_out:
                    denied.exit_code = 124
                raise denied
            client.consume(req.id, expected)
            return func(*bound.args, **bound.kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
