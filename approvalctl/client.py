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

import functools
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from . import errors
from .models import PENDING, ApprovalRequest, Page

__all__ = ["Client", "ApprovalDenied", "require_approval"]

API = "/api/v1"
MAX_POLL = 60.0  # the server's cap on ?wait=

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
        from .models import normalise_id

        prefix = normalise_id(str(id_or_prefix))
        if not prefix or len(prefix) > 26 or not prefix.isalnum():
            raise errors.InvalidInput(f"invalid request id {id_or_prefix!r}")
        return quote(prefix, safe="")

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

    def cancel(self, id_or_prefix: str) -> ApprovalRequest:
        return ApprovalRequest.from_dict(self._call(
            "DELETE", f"{API}/approvals/{self._id(id_or_prefix)}"))

    def wait(self, id_or_prefix: str, timeout: float | None = None) -> ApprovalRequest:
        """Block until the request leaves pending or `timeout` seconds pass (None: forever).

        Long-polls the server in slices of at most 60 s; returns the request either way, so
        check `.status`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        path = f"{API}/approvals/{self._id(id_or_prefix)}"
        while True:
            left = MAX_POLL if deadline is None else deadline - time.monotonic()
            slice_ = max(0.0, min(MAX_POLL, left))
            data = self._call("GET", path, params={"wait": _num(slice_)},
                              timeout=slice_ + self.timeout)
            req = ApprovalRequest.from_dict(data)
            if req.status != PENDING or (deadline is not None
                                         and time.monotonic() >= deadline):
                return req
            path = f"{API}/approvals/{req.id}"  # a prefix resolved once stays resolved

    def sweep(self) -> list[str]:
        return self._call("POST", f"{API}/sweep")["ids"]

    def stats(self, since_seconds: float = 86400) -> dict[str, Any]:
        since = max(1, math.ceil(since_seconds))
        return self._call("GET", f"{API}/approvals/stats", params={"since": str(since)})

    # ---- audit
    def audit_list(self, *, request_id: str | None = None, limit: int | None = None
                   ) -> list[dict[str, Any]]:
        return self._call("GET", f"{API}/audit", params={"request_id": request_id,
                                                         "limit": limit})

    def audit_verify(self):  # -> audit.VerifyResult
        from .audit import VerifyResult

        data = self._call("GET", f"{API}/audit/verify")
        return VerifyResult(ok=data["ok"], rows=data["rows"], bad_seq=data["first_bad_seq"],
                            problem=data["problem"])

    # ---- API keys
    def create_key(self, name: str, role: str, expires_seconds: float | None = None
                   ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_seconds is not None:
            body["expires_seconds"] = expires_seconds
        data = self._call("POST", f"{API}/keys", json=body)
        secret = data.pop("key")
        return secret, data

    def list_keys(self) -> list[dict[str, Any]]:
        return self._call("GET", f"{API}/keys")

    def revoke_key(self, name: str) -> None:
        self._call("DELETE", f"{API}/keys/{quote(name, safe='')}")

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
        return errors.ApprovalConflict(detail, data.get("current_status"))
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
class ApprovalDenied(errors.ApprovalctlError):
    """The operator rejected the request, or it expired, was cancelled, or the wait ran out."""

    exit_code = 10

    def __init__(self, detail: str, request: ApprovalRequest) -> None:
        super().__init__(detail)
        self.request = request
        self.exit_code = {"rejected": 10, "expired": 11, "cancelled": 12}.get(
            request.status, 124)


F = TypeVar("F", bound=Callable[..., Any])


def require_approval(client: Client, tool_name: str | None = None, *,
                     reason: str | None = None, risk: str = "medium",
                     ttl_seconds: float | None = None, timeout: float | None = None
                     ) -> Callable[[F], F]:
    """Run the decorated function only once an operator approves the call.

    Each call submits a request (tool name: `tool_name` or the function's name; arguments:
    the call's keyword arguments, and positional ones as `args`), waits for the decision and
    then either runs the function or raises `ApprovalDenied` naming the outcome.
    """
    def decorate(func: F) -> F:
        name = tool_name or func.__name__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            arguments: dict[str, Any] = dict(kwargs)
            if args:
                arguments["args"] = list(args)
            req = client.create(name, arguments, reason=reason, risk=risk,
                                ttl_seconds=ttl_seconds)
            req = client.wait(req.id, timeout)
            if req.status != "approved":
                who = f" by {req.decided_by}" if req.decided_by else ""
                note = f": {req.decision_note}" if req.decision_note else ""
                outcome = "still pending when the wait timed out" \
                    if req.status == PENDING else f"{req.status}{who}{note}"
                raise ApprovalDenied(f"{name} was not approved ({req.id} {outcome})", req)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
