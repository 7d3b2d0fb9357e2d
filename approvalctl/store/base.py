"""The store interface: every method the faces' helpers and the service call on a store.

`Store` is what the service, the server, the notify worker, `copy` and the CLI are typed
against; `SQLiteStore` and `PostgresStore` (both through `SQLStore`) implement it.
It is a `typing.Protocol`, so a backend satisfies it by shape, not by inheritance; mypy checks
that at every `open_store` return, and tests/test_store_interface.py compares each member's
signature with both backends'. Adding a store method the code outside `store/` calls means
adding it here first. This module declares only: no behaviour, no imports of a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .. import audit
    from ..counters import Counter, CounterBuffer
    from ..models import ApprovalRequest, Change
    from .reminders import StepsQueued
    from .unit import UnitOfWork

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """A database of requests, their audit trail, counters, keys, rules and outbox."""

    #: Where the store lives, safe to print (a path, or a URL with its password redacted).
    url: str

    #: Counter deltas not yet written (RBAC checks); pass it to `rbac.allowed`/`require`.
    #: The process's buffer on a plain store, a unit of work's own on a bound one.
    tally: CounterBuffer

    #: `stats_rows`' `by` values, each with the column it groups by.
    STATS_GROUPS: dict[str, str]

    # ---- lifecycle and schema
    def close(self) -> None:
        """Close this store's connections (the store is unusable afterwards)."""
        ...

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...

    def migration_state(self) -> list[dict[str, str | None]]:
        """Every known migration with `name` and `applied_at` (None when pending)."""
        ...

    def db_now(self) -> str | None:
        """The database server's time now (ISO 8601), or None where the caller's clock rules."""
        ...

    # ---- writes of requests: each applies a `Change` in one transaction
    def create(self, req: ApprovalRequest, change: Change | list[Change],
               idempotency: tuple[str, str, str] | None = None,
               max_pending: int | None = None) -> ApprovalRequest | dict[str, Any]:
        """Insert a request with its change(s); an idempotent replay returns the stored answer."""
        ...

    def transition(self, request_id: str, to_status: str, at: str, decided_by: str,
                   note: str | None, *, timed: bool, not_user: str | None,
                   change_for: Callable[[ApprovalRequest], Change],
                   use_within: float | None = None) -> ApprovalRequest | None:
        """Compare-and-set a pending request to a decision; None when it was not pending."""
        ...

    def expire_one(self, request_id: str, at: str,
                   change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Expire this request if it is pending and overdue at `at`; None otherwise."""
        ...

    def expire_overdue(self, now: str, change_for: Callable[[ApprovalRequest], Change],
                       batch: int = 2000) -> list[str]:
        """Expire every pending request overdue at `now`; return their ids."""
        ...

    def consume(self, request_id: str, digest: str, at: str,
                change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Mark an approval used, once, if `digest` matches; None when it cannot be used."""
        ...

    def prune(self, before: str, change_for: Callable[[ApprovalRequest], Change],
              batch: int = 500) -> tuple[int, int]:
        """Delete final requests older than `before`; return (requests, outbox rows) deleted."""
        ...

    def count_prunable(self, before: str) -> tuple[int, int]:
        """(requests, outbox rows) that `prune(before)` would delete."""
        ...

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """One transaction for one or several changes, made through the yielded unit's
        `store` (the server's write path: server/writepath.py, store/unit.py)."""
        ...

    def brief_writes(self) -> AbstractContextManager[None]:
        """Writes on this thread meanwhile give up quickly on a held lock."""
        ...

    # ---- reads of requests
    def get(self, request_id: str) -> ApprovalRequest | None:
        """The request with this id, or None."""
        ...

    def get_status(self, request_id: str) -> str | None:
        """Only the status of this request, or None when there is no such request."""
        ...

    def resolve_prefix(self, prefix: str, limit: int = 2, *,
                       user_id: str | None = None) -> list[str]:
        """Up to `limit` ids starting with `prefix` (only `user_id`'s when given)."""
        ...

    def has_overdue(self, now: str) -> bool:
        """Whether any pending request's `expires_at` is at or before `now`."""
        ...

    def list_requests(self, *, status: str | None, tool_name: str | None, user_id: str | None,
                      after: str | None, descending: bool, limit: int,
                      risk: str | None = None, created_since: str | None = None,
                      unexpired_at: str | None = None) -> list[ApprovalRequest]:
        """One page of requests in id order, filtered (`unexpired_at`: only rows whose
        `expires_at` is after it)."""
        ...

    def stats_rows(self, since: str, by: str | None) -> list[tuple[Any, ...]]:
        """(group value or None, status, response_ms, decided_at) of every request created
        at or after `since`."""
        ...

    def change_marker(self) -> int:
        """A cheap value that differs after any committed change (for waiters)."""
        ...

    # ---- quorums
    def quorum(self, request_id: str) -> tuple[int, list[str]] | None:
        """(approvals required, approvers so far in order), or None without a quorum."""
        ...

    def quorums(self, request_ids: Sequence[str]) -> dict[str, tuple[int, list[str]]]:
        """`quorum()` of many requests at once; only those with a quorum appear."""
        ...

    def set_quorum(self, request_id: str, required: int, at: str,
                   change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Require `required` approvers for a pending request; None if it is not pending."""
        ...

    def add_approval(self, request_id: str, approver: str, at: str,
                     change_for: Callable[[ApprovalRequest, int, int], Change]
                     ) -> tuple[ApprovalRequest, int, int, bool] | None:
        """Count `approver`'s approval of a pending request with a quorum."""
        ...

    def stats(self, since: str) -> dict[str, Any]:
        """Raw figures over requests created at or after `since`."""
        ...

    def queue_gauges(self) -> tuple[int, str | None]:
        """(pending requests, created_at of the oldest) for the gauges."""
        ...

    # ---- counters
    def counters(self) -> list[tuple[str, str, float]]:
        """Every stored counter as (name, labels JSON, value)."""
        ...

    def add_counters(self, rows: list[Counter]) -> None:
        """Add these counter deltas in one transaction."""
        ...

    def flush_counters(self) -> None:
        """Write buffered counter deltas now."""
        ...

    # ---- audit trail
    def audit_rows(self, *, request_id: str | None = None, limit: int | None = None,
                   newest_first: bool = False) -> list[dict[str, Any]]:
        """Audit rows, optionally of one request, oldest (or newest) first."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit row."""
        ...

    def verify_audit(self, anchors: Sequence[tuple[int, str]] = (),
                     chunk: int = 5000) -> audit.VerifyResult:
        """Check the hash chain, the anchors and every request against its last audit row."""
        ...

    # ---- idempotency keys
    def get_idempotent(self, owner: str, key: str) -> dict[str, Any] | None:
        """The stored answer to `owner`'s request with this Idempotency-Key, or None."""
        ...

    def purge_idempotency(self, before: str) -> int:
        """Delete idempotency keys created before `before`; return how many."""
        ...

    # ---- API keys
    def insert_key(self, row: dict[str, Any], role_counter: Counter,
                   change: Change | None = None) -> None:
        """Store a new API key row (its secret only hashed) and count it; `change` (its
        audit row) is appended to the audit chain in the same transaction."""
        ...

    def get_key(self, *, key_id: str | None = None,
                name: str | None = None) -> dict[str, Any] | None:
        """The key row with this id or name, or None."""
        ...

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key row, secrets' hashes left out."""
        ...

    def revoke_key(self, name: str, at: str, change: Change | None = None) -> bool:
        """Revoke the named key, with `change` appended to the audit chain in the same
        transaction; False (and no audit row) when there is no such live key."""
        ...

    # ---- policy rules
    def list_rules(self) -> list[dict[str, Any]]:
        """The policy rules in order, as stored."""
        ...

    def change_rules(self, edit: Callable[[list[dict[str, Any]]],
                                          tuple[list[dict[str, Any]], Change]]) -> None:
        """Replace the rules with what `edit` makes of them, with its change, atomically."""
        ...

    # ---- notification outbox
    def claim_outbox(self, *, now: str, lease_until: str, limit: int,
                     due_before: str | None = None) -> list[dict[str, Any]]:
        """Lease up to `limit` due pending rows until `lease_until`."""
        ...

    def release_outbox(self, ids: list[int], lease: str) -> None:
        """Give back claimed rows this worker will not attempt."""
        ...

    def record_delivery(self, outbox_id: int, *, lease: str, channel: str, result: str,
                        at: str, error: str | None = None,
                        next_attempt_at: str | None = None) -> bool:
        """Store one attempt's outcome; False when the lease was lost."""
        ...

    def skip_outbox(self, outbox_id: int, *, lease: str, note: str) -> bool:
        """Close a claimed row unsent (`skipped`); False when the lease was lost."""
        ...

    def get_outbox(self, outbox_id: int) -> dict[str, Any] | None:
        """The outbox row with this id, or None."""
        ...

    def list_outbox(self, *, status: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        """Outbox rows newest first, optionally only those in `status`."""
        ...

    def requeue_outbox(self, *, now: str, outbox_id: int | None = None) -> int:
        """Make one row, or every failed row, due again at `now`; return how many."""
        ...

    def outbox_backlog(self) -> int:
        """Notifications not yet delivered, for a gauge."""
        ...

    # ---- reminders and escalation (store/reminders.py)
    def queue_steps(self, *, now: str, remind_after: float | None,
                    escalate_after: float | None, remind_channels: list[str],
                    escalate_to: list[str], channels: list[str],
                    batch: int = 200) -> StepsQueued:
        """Queue the due reminder/escalation steps of pending requests, each exactly once,
        claiming only steps with at least one of this config's `channels`."""
        ...

    def steps_taken(self, request_id: str) -> list[tuple[str, str]]:
        """`(step, at)` of the reminder steps queued for a request."""
        ...

    # ---- bulk copy (`migrate --to`, approvalctl/copy.py)
    def count_rows(self, table: str) -> int:
        """Rows in `table`."""
        ...

    def read_rows(self, table: str, after: tuple | None, limit: int) -> list[tuple]:
        """Up to `limit` rows of `table` with a key after `after`, in key order."""
        ...

    def last_key(self, table: str) -> tuple | None:
        """The greatest key in `table`, or None when it is empty."""
        ...

    def key_of(self, table: str, row: tuple) -> tuple:
        """The key of a row read by `read_rows`."""
        ...

    def insert_rows(self, table: str, rows: list[tuple]) -> None:
        """Insert rows with their own keys in one transaction."""
        ...

    def before_bulk_load(self) -> None:
        """Tune the connections for loading many rows."""
        ...

    def after_bulk_load(self) -> None:
        """Make numbering continue after the copied rows."""
        ...
