"""The exceptions the core raises, and the CLI exit code / HTTP status each maps to.

    ApprovalctlError                 exit 1   500
    ├── InvalidInput                 exit 2   400
    │   └── IdempotencyMismatch      exit 2   422
    ├── NotFound                     exit 3   404
    ├── ApprovalConflict             exit 4   409
    ├── Unauthenticated              exit 5   401
    ├── Forbidden                    exit 5   403
    ├── RateLimited                  exit 5   429
    │   └── QuotaExceeded            exit 5   429
    └── Unavailable                  exit 6   503

The faces (CLI, HTTP) translate these and nothing else; any other exception is a bug.
"""

from __future__ import annotations


class ApprovalctlError(Exception):
    """Base of every error approvalctl reports to a user."""

    exit_code = 1
    http_status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ApprovalctlError):
    """A value given by the caller is malformed or not allowed."""

    exit_code = 2
    http_status = 400
    title = "Invalid input"


class IdempotencyMismatch(InvalidInput):
    """An Idempotency-Key was reused with a different request body."""

    http_status = 422
    title = "Idempotency key reused"


class NotFound(ApprovalctlError):
    """No request (or key) matches the given id or prefix."""

    exit_code = 3
    http_status = 404
    title = "Not found"


class ApprovalConflict(ApprovalctlError):
    """The request is no longer pending, so it cannot be decided or cancelled."""

    exit_code = 4
    http_status = 409
    title = "Conflict"

    def __init__(self, detail: str, current_status: str | None = None) -> None:
        super().__init__(detail)
        self.current_status = current_status


class Unauthenticated(ApprovalctlError):
    """No API key, or one that is malformed, unknown, revoked or expired."""

    exit_code = 5
    http_status = 401
    title = "Unauthenticated"


class Forbidden(ApprovalctlError):
    """The caller's role lacks the permission, or the caller would decide their own request."""

    exit_code = 5
    http_status = 403
    title = "Forbidden"


class RateLimited(ApprovalctlError):
    """The caller sent too many requests; try again after `retry_after` seconds."""

    exit_code = 5
    http_status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A per-key quota (limits.Quotas) refused the request; `quota` names it (the label of
    approvalctl_quota_rejections_total)."""

    def __init__(self, detail: str, quota: str, retry_after: int = 1) -> None:
        super().__init__(detail, retry_after)
        self.quota = quota


class Unavailable(ApprovalctlError):
    """The database or the server cannot be reached or used."""

    exit_code = 6
    http_status = 503
    title = "Service unavailable"
