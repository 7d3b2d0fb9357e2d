"""The notification outbox queries, shared by both backends (mixed into `SQLStore`).

Rows are written by `SQLStore._write_changes` in the same transaction as the state change
that causes them. Here is everything the delivery side does with them afterwards:

- `claim_outbox` leases due rows to one worker (`claimed_until`): a second worker skips a
  leased row (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the write lock), and a lease that
  ran out — its worker was killed between claim and send — makes the row claimable again.
- `record_delivery` stores one attempt's outcome (sent, retry later, or dead-lettered) with
  its counter, in one transaction; the lease is the fencing token, so a worker that lost its
  lease cannot overwrite the outcome recorded by the worker that took the row over.
- `skip_outbox` closes a claimed reminder whose request was decided meanwhile, unsent.
- `list_outbox`, `get_outbox`, `requeue_outbox` serve `approvalctl notify list/retry`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .. import counters

OUTBOX_FIELDS = ("id", "event", "channel", "request_id", "payload", "status", "attempts",
                 "next_attempt_at", "claimed_until", "last_error", "created_at", "sent_at",
                 "audit_seq", "audit_hash")
_SELECT_OUTBOX = "SELECT " + ", ".join(OUTBOX_FIELDS) + " FROM outbox"
#: `skipped`: a reminder or escalation not sent because its request was no longer pending.
OUTBOX_STATUSES = ("pending", "sent", "failed", "skipped")
RESULTS = ("sent", "retry", "failed")
#: Longest error text kept per row: enough to diagnose, never a whole HTML error page.
MAX_ERROR = 1000


def channel_kind(channel: str) -> str:
    """The metric label of a channel: `webhook:2` counts as `webhook`."""
    return channel.split(":", 1)[0]


def _row(row: tuple) -> dict[str, Any]:
    return dict(zip(OUTBOX_FIELDS, row))


class OutboxQueries:
    """Outbox SQL; relies on the backend's `_read`/`_write`/`_exec`/`_many`/`_bump`."""

    if TYPE_CHECKING:  # provided by SQLStore and its backends
        def _read(self) -> AbstractContextManager[Any]: ...
        def _write(self) -> AbstractContextManager[Any]: ...
        def _exec(self, cur: Any, sql: str, params: tuple | list = ()) -> Any: ...
        def _many(self, cur: Any, sql: str, rows: list) -> None: ...
        def _bump(self, cur: Any, rows: list[counters.Counter]) -> None: ...
        def _skip_locked(self) -> str: ...

    def claim_outbox(self, *, now: str, lease_until: str, limit: int,
                     due_before: str | None = None) -> list[dict[str, Any]]:
        """Lease up to `limit` pending rows due at `due_before` (default `now`) until
        `lease_until`; returns them with `claimed_until` set to the lease (the token).

        A row is claimable when its last lease (if any) ran out at or before `now`.
        """
        with self._write() as cur:
            rows = self._exec(
                cur, _SELECT_OUTBOX + " WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND (claimed_until IS NULL OR claimed_until <= ?) "
                "ORDER BY next_attempt_at, id LIMIT ?" + self._skip_locked(),
                (due_before or now, now, limit)).fetchall()
            claimed = [_row(r) for r in rows]
            self._many(cur, "UPDATE outbox SET claimed_until = ? WHERE id = ?",
                       [(lease_until, r["id"]) for r in claimed])
        for r in claimed:
            r["claimed_until"] = lease_until
        return claimed

    def release_outbox(self, ids: list[int], lease: str) -> None:
        """Give back rows this worker claimed but will not attempt (its lease is short)."""
        with self._write() as cur:
            self._many(cur, "UPDATE outbox SET claimed_until = NULL WHERE id = ? AND "
                       "claimed_until = ? AND status = 'pending'", [(i, lease) for i in ids])

    def record_delivery(self, outbox_id: int, *, lease: str, channel: str, result: str,
                        at: str, error: str | None = None,
                        next_attempt_at: str | None = None) -> bool:
        """Store one attempt's outcome and bump `notification_deliveries_total` with it.

        `result` is `sent`, `retry` (due again at `next_attempt_at`) or `failed`
        (dead-lettered). False when this worker no longer holds the lease: the outcome is
        then not recorded, because another worker owns the row now.
        """
        if result not in RESULTS:
            raise ValueError(f"unknown delivery result {result!r}")
        if result == "retry" and not next_attempt_at:
            raise ValueError("a retry needs next_attempt_at")
        error = error[:MAX_ERROR] if error else None
        with self._write() as cur:
            if result == "sent":
                # a note with a success (e-mail: who accepted on which attempt) replaces
                # the last error; without one the last error stays for the record
                cur = self._exec(cur, "UPDATE outbox SET status = 'sent', attempts = attempts "
                                 "+ 1, sent_at = ?, claimed_until = NULL, last_error = "
                                 "COALESCE(?, last_error) WHERE id = ? AND "
                                 "claimed_until = ? AND status = 'pending'",
                                 (at, error, outbox_id, lease))
            elif result == "retry":
                cur = self._exec(cur, "UPDATE outbox SET attempts = attempts + 1, "
                                 "last_error = ?, next_attempt_at = ?, claimed_until = NULL "
                                 "WHERE id = ? AND claimed_until = ? AND status = 'pending'",
                                 (error, next_attempt_at, outbox_id, lease))
            else:
                cur = self._exec(cur, "UPDATE outbox SET status = 'failed', attempts = "
                                 "attempts + 1, last_error = ?, claimed_until = NULL "
                                 "WHERE id = ? AND claimed_until = ? AND status = 'pending'",
                                 (error, outbox_id, lease))
            if cur.rowcount != 1:
                return False
            self._bump(cur, [(counters.NOTIFY_DELIVERIES,
                              counters.labels(channel=channel_kind(channel), result=result),
                              1)])
        return True

    def skip_outbox(self, outbox_id: int, *, lease: str, note: str) -> bool:
        """Close a claimed row without sending it (`skipped`, `note` saying why); False
        when this worker no longer holds the lease."""
        with self._write() as cur:
            return self._exec(cur, "UPDATE outbox SET status = 'skipped', claimed_until = "
                              "NULL, last_error = ? WHERE id = ? AND claimed_until = ? AND "
                              "status = 'pending'", (note[:MAX_ERROR], outbox_id, lease)
                              ).rowcount == 1

    def get_outbox(self, outbox_id: int) -> dict[str, Any] | None:
        with self._read() as cur:
            row = self._exec(cur, _SELECT_OUTBOX + " WHERE id = ?", (outbox_id,)).fetchone()
        return _row(row) if row else None

    def list_outbox(self, *, status: str | None = None, limit: int = 100
                    ) -> list[dict[str, Any]]:
        """Rows newest first, optionally only those in `status`."""
        sql, params = _SELECT_OUTBOX, []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._read() as cur:
            return [_row(r) for r in self._exec(cur, sql, (*params, limit)).fetchall()]

    def requeue_outbox(self, *, now: str, outbox_id: int | None = None) -> int:
        """Make one row (failed or pending), or every failed row, due again at `now`.

        Attempts restart from zero so the row gets a full retry budget; the last error is
        kept until the next attempt replaces it. Returns how many rows were requeued.
        """
        with self._write() as cur:
            if outbox_id is None:
                return self._exec(cur, "UPDATE outbox SET status = 'pending', attempts = 0, "
                                  "next_attempt_at = ? WHERE status = 'failed'",
                                  (now,)).rowcount
            # A pending row keeps its lease: a worker may be sending it right now.
            return self._exec(cur, "UPDATE outbox SET status = 'pending', attempts = 0, "
                              "next_attempt_at = ? WHERE id = ? AND "
                              "status IN ('failed', 'pending')", (now, outbox_id)).rowcount
