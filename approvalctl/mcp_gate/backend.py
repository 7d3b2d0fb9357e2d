"""One blocking way to file, wait for, withdraw and consume requests, locally or remotely.

The MCP faces call it from worker threads (`asyncio.to_thread`), so it may block. Locally it
is the service on the configured database, acting for the OS account running the command,
with the requests filed as `user_id` (so the operator may decide them: no self-approval);
remotely it is `Client` with the `user` key in APPROVALCTL_API_KEY (or the config file).
Every method raises `approvalctl.errors` exceptions.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..models import ApprovalRequest


class Backend:
    """The service (local) or the HTTP client (remote), behind one set of calls."""

    def __init__(self, user_id: str, settings: Any = None) -> None:
        """`settings`: a `config.Settings` (default: loaded from the environment and the
        config file, as the CLI does)."""
        if settings is None:
            from ..config import Settings

            settings = Settings.load()
        self.remote = bool(settings.server)
        if self.remote:
            if not settings.api_key:
                raise errors.Unauthenticated("APPROVALCTL_SERVER is set but "
                                             "APPROVALCTL_API_KEY is not")
            from ..client import Client

            # `Client` remotely, `ApprovalService` locally: the same calls except the
            # service's leading actor, which `_actor` supplies (empty remotely), so the
            # checked type is neither class alone.
            self._client: Any = Client(settings.server or "", settings.api_key)
            self._actor: tuple = ()
            self._user: dict[str, Any] = {}
            self._close = self._client.close
        else:
            from ..config import local_user
            from ..models import Principal
            from ..service import ApprovalService
            from ..store import open_store

            store = open_store(settings.db)
            self._client = ApprovalService(store, settings)  # same calls, plus the actor
            self._actor = (Principal(name=local_user(), role="admin", local=True),)
            self._user = {"user_id": user_id}

            def close() -> None:
                store.flush_counters()
                store.close()

            self._close = close

    def create(self, tool_name: str, arguments: dict[str, Any], *, reason: str | None,
               risk: str | None = None, ttl_seconds: float | None = None) -> ApprovalRequest:
        extra = {k: v for k, v in (("risk", risk), ("ttl_seconds", ttl_seconds))
                 if v is not None}
        return self._client.create(*self._actor, tool_name, arguments, reason=reason,
                                   **extra, **self._user)

    def file_call(self, tool_name: str, arguments: dict[str, Any], *, reason: str | None,
                  digest: str) -> tuple[ApprovalRequest, bool]:
        """File the call about to run (its digest `digest`); returns the request and
        whether its approval is already used for that call. Locally a call a policy rule
        allows is filed, allowed and consumed in one transaction (service.create with
        `consume`); remotely, and for every other outcome, it is False and the caller
        waits and consumes as usual."""
        if self.remote:
            return self.create(tool_name, arguments, reason=reason), False
        req = self._client.create(*self._actor, tool_name, arguments, reason=reason,
                                  consume=digest, **self._user)
        return req, req.status == "approved" and req.consumed_at is not None

    def get(self, request_id: str) -> ApprovalRequest:
        return self._client.get(*self._actor, request_id)

    def wait(self, request_id: str, timeout: float) -> ApprovalRequest:
        return self._client.wait(*self._actor, request_id, max(0.0, timeout))

    def cancel(self, request_id: str) -> ApprovalRequest:
        return self._client.cancel(*self._actor, request_id)

    def consume(self, request_id: str, digest: str) -> ApprovalRequest:
        return self._client.consume(*self._actor, request_id, digest)

    def close(self) -> None:
        self._close()
