"""Reminders and escalation of pending requests (mixed into `SQLStore`), both backends.

A pending request can take two further notification *steps* (docs/away.md):

- `remind`: the channels that announced the request hear about it again, once, when it has
  been pending for `remind_after`;
- `escalate`: other, named channels (`escalate_to`) hear about it, once, after
  `escalate_after`.

The times come from the policy rule that asked for the request (table `request_schedule`,
written with the request's creation, absolute times) or else from the config
(`notifications.remind_after` ...), applied here as a cut-off on `created_at`.

Exactly once, whoever sweeps: `queue_steps` claims a due step by inserting
`(request_id, step)` into `request_steps`, whose primary key admits one such row ever, and
writes the step's outbox rows in the same transaction only when its own insert took.
A sweeper claims only a step it can send: one whose channels (the `created` channels for a
reminder, `escalate_to` for an escalation) include at least one of the channels its own
config has. A claim is final, so a sweeper without them (a cron job run with another
config) leaves the step for one that has them instead of claiming it with no message; and
it writes rows only for the channels its config has. Two
sweepers racing (two servers, a server and a cron `approvalctl sweep`) therefore queue one
set of messages between them; a restart loses nothing (the state is in the database) and
repeats nothing. On PostgreSQL the candidate rows are also locked (`FOR UPDATE OF r SKIP
LOCKED`), so a decision committing meanwhile either waits for the step or makes the request
no longer pending before the step looks at it; on SQLite the write lock does the same.

No audit rows: a step changes no request (the audit trail records changes of requests,
docs/audit.md); the outbox rows and the `request_steps` row are the record of what was sent
and when.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from ..models import PENDING, ApprovalRequest, Change, from_iso, to_iso

#: The steps, in the order they are considered, and the outbox event each one queues.
STEP_EVENTS = {"remind": "reminder", "escalate": "escalated"}
#: Requests looked at per transaction: a sweep never holds the write lock long.
STEP_BATCH = 200
_SCHEDULE_KEYS = ("remind_after", "escalate_after", "escalate_to")


class StepsQueued(NamedTuple):
    """What one `queue_steps` call did, each step as `(request_id, step)`, step `remind` or
    `escalate`."""

    #: The steps this call claimed and queued outbox rows for.
    queued: list[tuple[str, str]]
    #: Due steps left unclaimed because this config has none of their channels (another
    #: sweeper, with a config that has them, will queue them).
    no_channel: list[tuple[str, str]]


def schedule_of(detail: dict[str, Any] | None) -> dict[str, Any]:
    """The reminder settings a creation's audit detail carries (a rule's), possibly {}."""
    return {k: detail[k] for k in _SCHEDULE_KEYS if detail and detail.get(k) is not None}


def _cutoff(now: str, seconds: float | None) -> str:
    """The creation time at or before which a step `seconds` long is due at `now`; "" (before
    every time, so nothing matches) for a step that is off."""
    return "" if seconds is None else to_iso(from_iso(now) - timedelta(seconds=seconds))


class ReminderQueries:
    """Reminder SQL; relies on the backend's `_read`/`_write`/`_exec`/`_many`/`_db_now`."""

    if TYPE_CHECKING:  # provided by SQLStore and its backends
        dialect: str

        def _read(self) -> AbstractContextManager[Any]: ...
        def _write(self) -> AbstractContextManager[Any]: ...
        def _exec(self, cur: Any, sql: str, params: tuple | list = ()) -> Any: ...
        def _many(self, cur: Any, sql: str, rows: list) -> None: ...
        def _db_now(self, cur: Any, at: str) -> str: ...

    def _insert_schedule(self, cur: Any, req: ApprovalRequest, changes: list[Change]) -> None:
        """With a request's creation: the schedule its policy rule set, if any, as absolute
        times from the stored `created_at` (the database's clock on PostgreSQL)."""
        sched = next((schedule_of(ch.detail) for ch in changes
                      if ch.action == "create" and ch.detail), {})
        if not sched:
            return
        created = from_iso(req.created_at)

        def at(key: str) -> str | None:
            seconds = sched.get(key)
            return None if seconds is None else to_iso(created + timedelta(seconds=seconds))

        to = sched.get("escalate_to")
        self._exec(cur, "INSERT INTO request_schedule (request_id, remind_at, escalate_at, "
                   "escalate_to) VALUES (?, ?, ?, ?)",
                   (req.id, at("remind_after"), at("escalate_after"),
                    json.dumps(list(to)) if to else None))

    def queue_steps(self, *, now: str, remind_after: float | None,
                    escalate_after: float | None, remind_channels: list[str],
                    escalate_to: list[str], channels: list[str],
                    batch: int = STEP_BATCH) -> StepsQueued:
        """Queue every reminder and escalation due at `now` (ISO; the database's clock on
        PostgreSQL) for requests still pending and not expired; returns the steps this call
        queued (a step another sweeper queued is not repeated) and the due steps it left
        because this config has no channel for them.

        `remind_after`/`escalate_after` (seconds, None: off) and `escalate_to` are the
        config's global settings, for requests whose rule set none; `remind_channels` are
        the channels of `created` messages; `channels` are all the channels this config has
        (`Settings.channel_names()`): a step's outbox rows go only to those, and a step with
        none of them is not claimed. Each outbox row's payload is the request's JSON with
        `"step": {"name", "after_seconds"}` added (what the message says).
        """
        from .sql import REQUEST_COLUMNS, _sorted_json, request_from_row

        cols = ", ".join("r." + c for c in REQUEST_COLUMNS)
        lock = " FOR UPDATE OF r SKIP LOCKED" if self.dialect == "postgresql" else ""
        sql = (
            f"SELECT {cols}, s.remind_at, s.escalate_at, s.escalate_to, "
            "EXISTS (SELECT 1 FROM request_steps t WHERE t.request_id = r.id AND "
            "t.step = 'remind'), EXISTS (SELECT 1 FROM request_steps t WHERE "
            "t.request_id = r.id AND t.step = 'escalate') "
            "FROM requests r LEFT JOIN request_schedule s ON s.request_id = r.id "
            "WHERE r.status = ? AND r.expires_at > ? AND r.id > ? AND ("
            "((s.remind_at <= ? OR (s.remind_at IS NULL AND r.created_at <= ?)) AND NOT "
            "EXISTS (SELECT 1 FROM request_steps t WHERE t.request_id = r.id AND "
            "t.step = 'remind')) OR "
            "((s.escalate_at <= ? OR (s.escalate_at IS NULL AND r.created_at <= ?)) AND NOT "
            "EXISTS (SELECT 1 FROM request_steps t WHERE t.request_id = r.id AND "
            "t.step = 'escalate'))) ORDER BY r.id LIMIT ?" + lock)
        n = len(REQUEST_COLUMNS)
        known = set(channels)
        queued: list[tuple[str, str]] = []
        left: list[tuple[str, str]] = []
        after = ""
        while True:
            with self._write() as cur:
                at = self._db_now(cur, now)
                rows = self._exec(cur, sql, (PENDING, at, after, at, _cutoff(at, remind_after),
                                             at, _cutoff(at, escalate_after), batch)).fetchall()
                if not rows:
                    return StepsQueued(queued, left)
                after = rows[-1][0]
                head = self._exec(cur, "SELECT seq, hash FROM audit_log ORDER BY seq DESC "
                                  "LIMIT 1").fetchone() or (None, None)
                outbox: list[tuple] = []
                for row in rows:
                    req = request_from_row(row[:n])
                    remind_at, escalate_at, to_json, reminded, escalated = row[n:n + 5]
                    created = from_iso(req.created_at)
                    steps = (("remind", remind_at, remind_after, remind_channels, reminded),
                             ("escalate", escalate_at, escalate_after,
                              json.loads(to_json) if to_json else escalate_to, escalated))
                    for step, due, default, targets, done in steps:
                        if done:
                            continue
                        due_at = from_iso(due) if due else (
                            created + timedelta(seconds=default) if default is not None
                            else None)
                        if due_at is None or due_at > from_iso(at):
                            continue
                        sendable = [c for c in targets if c in known]
                        if not sendable:  # claiming it would lose it: leave it
                            left.append((req.id, step))
                            continue
                        claimed = self._exec(
                            cur, "INSERT INTO request_steps (request_id, step, at) VALUES "
                            "(?, ?, ?) ON CONFLICT (request_id, step) DO NOTHING RETURNING "
                            "step", (req.id, step, at)).fetchone()
                        if claimed is None:  # another sweeper queued it first
                            continue
                        queued.append((req.id, step))
                        payload = _sorted_json({**req.to_dict(), "step": {
                            "name": step,
                            "after_seconds": round((due_at - created).total_seconds())}})
                        outbox.extend((STEP_EVENTS[step], channel, req.id, payload, at, at,
                                       head[0], head[1]) for channel in sendable)
                from .sql import OUTBOX_INSERT

                self._many(cur, OUTBOX_INSERT, outbox)
            if len(rows) < batch:
                return StepsQueued(queued, left)

    def steps_taken(self, request_id: str) -> list[tuple[str, str]]:
        """`(step, at)` of the reminder steps queued for a request, oldest first."""
        with self._read() as cur:
            return [(r[0], r[1]) for r in self._exec(
                cur, "SELECT step, at FROM request_steps WHERE request_id = ? ORDER BY at, "
                "step", (request_id,)).fetchall()]
