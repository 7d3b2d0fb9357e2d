"""Every exception approvalctl defines, and the CLI exit code / HTTP status each maps to.

    ApprovalctlError                 exit 1   500
    ├── InvalidInput                 exit 2   400
    │   ├── IdempotencyMismatch      exit 2   422
    │   ├── PayloadTooLarge          exit 2   413
    │   ├── BodyTimeout              exit 2   408
    │   └── UnsupportedMediaType     exit 2   415
    ├── NotFound                     exit 3   404
    ├── ApprovalConflict             exit 4   409
    │   ├── Expired                  exit 11  409
    │   └── DigestMismatch           exit 2   422
    ├── Unauthenticated              exit 5   401
    ├── Forbidden                    exit 5   403
    ├── RateLimited                  exit 5   429
    │   └── QuotaExceeded            exit 5   429
    ├── Unavailable                  exit 6   503
    ├── VerificationFailed           exit 1         (`migrate copy --verify`)
    └── ApprovalDenied               exit 10/11/12/124 (not approved: `STATUS_EXIT_CODES`)

The faces (CLI, HTTP) translate these and nothing else; any other exception is a bug.
`exit_code()` is the one mapping from an error or a request's final status to the exit
code the CLI and `require_approval` report (docs/design.md, "Exit codes").

Internal signals, never shown to a user as such (each is caught by its own module):

    DeliveryError(Exception)         a notification attempt failed (notify/)
    GroupSpoiled(Exception)          a group commit was rolled back (store/sql.py)
    UniqueViolation(Unavailable)     a concurrent insert of the same key (store/postgres.py)
    PromQLError(ValueError)          an expression does not parse (lint/)
    RuleError(ValueError)            a policy rule is malformed or can never match (policy.py)
    DuplicateKey(ValueError)         a JSON object or YAML mapping repeats a key (strictjson.py,
                                     strictyaml.py)
    Refused(Exception)               an agent hook denies the call, with the reason (hook.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ApprovalRequest

#: Exit code for a request's status once a wait ends: 0 only for approved.
STATUS_EXIT_CODES = {"approved": 0, "rejected": 10, "expired": 11, "cancelled": 12,
                     "pending": 124}


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


class PayloadTooLarge(InvalidInput):
    """The request body exceeds the server's size bound."""

    http_status = 413
    title = "Payload too large"


class BodyTimeout(InvalidInput):
    """The request body did not arrive within `http_limits.body_timeout` (the connection is
    then closed)."""

    http_status = 408
    title = "Request timeout"


class UnsupportedMediaType(InvalidInput):
    """A body that is not application/json."""

    http_status = 415
    title = "Unsupported media type"


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


class Expired(ApprovalConflict):
    """The request expired (or its approval passed `use_by`): too late to decide, cancel
    or consume it."""

    exit_code = 11
    title = "Expired"

    def __init__(self, detail: str, current_status: str | None = "expired") -> None:
        super().__init__(detail, current_status)


class DigestMismatch(ApprovalConflict):
    """A consume presented a digest other than the approved call's."""

    exit_code = 2
    http_status = 422
    title = "Digest mismatch"


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


class VerificationFailed(ApprovalctlError):
    """The target does not hold exactly the source's data after a copy."""


class ApprovalDenied(ApprovalctlError):
    """The operator rejected the request, or it expired, was cancelled, or the wait ran out."""

    exit_code = STATUS_EXIT_CODES["rejected"]

    def __init__(self, detail: str, request: ApprovalRequest) -> None:
        super().__init__(detail)
        self.request = request
        # A status with no code of its own (never "approved" here) reads as still pending.
        self.exit_code = STATUS_EXIT_CODES.get(request.status) or STATUS_EXIT_CODES["pending"]


def exit_code(outcome: BaseException | str) -> int:
    """The documented exit code of an error, or of a request status after a wait.

    An `ApprovalctlError` carries its own; any other exception is 1; a status is looked up in
    `STATUS_EXIT_CODES` (an unknown one is 1: never 0 for something not approved).
    """
    if isinstance(outcome, ApprovalctlError):
        return outcome.exit_code
    if isinstance(outcome, BaseException):
        return 1
    return STATUS_EXIT_CODES.get(outcome, 1)


# ---------------------------------------------------------------- internal signals
class DeliveryError(Exception):
    """One notification attempt failed; `transient` says whether a later one may succeed."""

    def __init__(self, detail: str, *, transient: bool, retry_after: float | None = None
                 ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after


class UniqueViolation(Unavailable):
    """PostgreSQL: a concurrent writer inserted the same key first (store/postgres.py retries
    an idempotent create as a replay; anywhere else it is the 503 it derives from)."""


class GroupSpoiled(Exception):
    """A change failed part-way inside a group commit: all of it was rolled back."""


class PromQLError(ValueError):
    """The expression is not valid PromQL; the message is Prometheus' own wording."""


class RuleError(ValueError):
    """A rule that is malformed or can never match; the message says which field and why."""


class DuplicateKey(ValueError):
    """A JSON object (or YAML mapping) names the same member twice."""

    def __init__(self, key: str, container: str = "a JSON object") -> None:
        super().__init__(f"duplicate key {key!r} in {container}")
        self.key = key


class Refused(Exception):
    """An agent hook denies the call; the message is the one-line reason (hook.py)."""
