"""The SQL both backends share: every query and write the service needs.

A backend subclass supplies the connection handling (`_read`, `_write`, `_transaction`), its
placeholder style and how to serialise audit appends; everything else is here once, including
the unit of work of the server's write path (`unit_of_work`, store/unit.py). Queries are written
with `?` placeholders and translated for PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

from .. import audit, counters
from ..digest import DigestError, digest
from ..errors import GroupSpoiled, QuotaExceeded
from ..models import (
    APPROVED,
    EXPIRED,
    FINAL_STATUSES,
    PENDING,
    STATUSES,
    ApprovalRequest,
    Change,
    from_iso,
    to_iso,
)
from .outbox import OUTBOX_FIELDS, OutboxQueries
from .reminders import ReminderQueries
from .unit import UnitOfWork

Counter = counters.Counter  # the class body's `counters` method hides the module

#: Seconds a client is told to wait when its user is at the pending quota: decisions take
#: a person, so retrying sooner only adds load.
PENDING_RETRY_AFTER = 30

REQUEST_COLUMNS = ApprovalRequest.FIELDS
_SELECT = "SELECT " + ", ".join(REQUEST_COLUMNS) + " FROM requests"
AUDIT_COLUMNS = ("seq", "at", "actor", "action", "request_id", "from_status", "to_status",
                 "detail", "prev_hash", "hash", "format", "digest", "state")
KEY_COLUMNS = ("name", "key_id", "secret_hash", "role", "created_at", "created_by",
               "expires_at", "revoked_at", "last_used_at")
OUTBOX_COLUMNS = OUTBOX_FIELDS  # declared once, beside the outbox queries
#: Every table `migrate --to` copies, in an order that respects references, with its key.
TABLES = {
    "requests": ("id", REQUEST_COLUMNS + ("response_ms",)),
    "audit_log": ("seq", AUDIT_COLUMNS),
    "metric_counters": ("name, labels", ("name", "labels", "value")),
    "api_keys": ("name", KEY_COLUMNS),
    "idempotency_keys": ("owner, key", ("owner", "key", "body_hash", "request_id", "response",
                                        "created_at")),
    "outbox": ("id", OUTBOX_COLUMNS),
    "policy_rules": ("name", ("name", "position", "body")),
    "server_secrets": ("name", ("name", "value", "created_at")),
    "request_quorum": ("request_id", ("request_id", "required")),
    "request_approvals": ("request_id, approver", ("request_id", "approver", "at")),
    "request_schedule": ("request_id", ("request_id", "remind_at", "escalate_at",
                                        "escalate_to")),
    "request_steps": ("request_id, step", ("request_id", "step", "at")),
}
#: The tables that hold rows about one request besides `requests` itself (and its outbox
#: and audit rows): `prune` deletes a pruned request's rows from each.
REQUEST_SIDE_TABLES = ("request_quorum", "request_approvals", "request_schedule",
                       "request_steps")
#: An approval needs its quorum (request_quorum) met: the CAS itself says so, so no path
#: can approve a request that still waits for approvers.
_QUORUM_MET = (" AND NOT EXISTS (SELECT 1 FROM request_quorum q WHERE q.request_id = "
               "requests.id AND q.required > (SELECT COUNT(*) FROM request_approvals a "
               "WHERE a.request_id = requests.id))")
AUDIT_INSERT = ("INSERT INTO audit_log (" + ", ".join(AUDIT_COLUMNS) + ") VALUES ("
                + ", ".join("?" * len(AUDIT_COLUMNS)) + ")")
OUTBOX_INSERT_COLUMNS = ("event", "channel", "request_id", "payload", "next_attempt_at",
                         "created_at", "audit_seq", "audit_hash")
OUTBOX_INSERT = ("INSERT INTO outbox (" + ", ".join(OUTBOX_INSERT_COLUMNS) + ") VALUES ("
                 + ", ".join("?" * len(OUTBOX_INSERT_COLUMNS)) + ")")
BUMP_SQL = ("INSERT INTO metric_counters (name, labels, value) VALUES {values} ON CONFLICT "
            "(name, labels) DO UPDATE SET value = metric_counters.value + excluded.value")
#: Counter rows per upsert statement (3 parameters each, far below any parameter limit).
BUMP_CHUNK = 100


_decode = json.JSONDecoder().decode
_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """Stored JSON text (as `_sorted_json` wrote it) as a value, by `raw_decode`: `decode`
    around it costs two whitespace regex matches per value, a noticeable share of reading
    a page of 50 rows. Anything it does not consume whole (leading or trailing text, bad
    JSON, not a string) goes through `decode`, which raises as always."""
    try:
        value, end = _raw_decode(text)
    except (ValueError, TypeError):  # bad JSON, not a string: decode says what
        return _decode(text)
    return value if end == len(text) else _decode(text)
# Built once (json.dumps with options builds an encoder per call); output is the same.
_sorted_json = json.JSONEncoder(sort_keys=True).encode
_detail_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
assert REQUEST_COLUMNS[2] == "arguments"  # request_from_row relies on the column order
_NCOLUMNS = len(REQUEST_COLUMNS)
_STATE_INDEX = [REQUEST_COLUMNS.index(f) for f in audit.STATE_FIELDS]
_STATUS, _DECIDED_AT = REQUEST_COLUMNS.index("status"), REQUEST_COLUMNS.index("decided_at")
_CONSUMED_AT = REQUEST_COLUMNS.index("consumed_at")
_UNDECIDED = [REQUEST_COLUMNS.index(f) for f in ("decided_at", "decided_by", "decision_note",
                                                  "use_by", "consumed_at")]
#: Request rows per batch of `prune` (and of the reads of `audit verify`).
PRUNE_BATCH = 500


def seal(change: Change, row: tuple | list, req: ApprovalRequest) -> Change:
    """Record on `change` the request's digest and the hash of `row`, the request row (in
    REQUEST_COLUMNS order, `arguments` as stored text) exactly as the change leaves it."""
    change.state = audit.state_hash([row[i] for i in _STATE_INDEX])
    # Stored on the request (DESIGN §10) it is read back, not recomputed: canonical JSON
    # costs more than the rest of a change's bookkeeping together.
    change.digest = getattr(req, "digest", None)
    if change.digest is None:
        try:
            change.digest = digest(req.tool_name, req.arguments)
        except DigestError:  # refused at creation once digests are stored; never crash here
            change.digest = None
    return change


def _as_created(row: tuple) -> tuple:
    """A request row as its creation left it (pending, undecided), for a request a policy
    rule decided in the same transaction."""
    out = list(row)
    out[_STATUS] = PENDING
    for i in _UNDECIDED:
        out[i] = None
    return tuple(out)


def _as_left_by(change: Change, row: tuple, req: ApprovalRequest) -> tuple:
    """The request row as `change`, one of the changes a create makes at once, left it:
    created (pending, undecided), decided by a policy rule (not yet used), or used."""
    if change.to_status != req.status:
        return _as_created(row)
    if req.consumed_at is not None and change.action != "consume":
        out = list(row)
        out[_CONSUMED_AT] = None
        return tuple(out)
    return row


def request_from_row(row: tuple) -> ApprovalRequest:
    # Positional, in REQUEST_COLUMNS order (the dataclass's field order): a page of 50
    # built through dict(zip(...)) and **kwargs was a noticeable share of a listing.
    return ApprovalRequest(row[0], row[1], _loads(row[2]), *row[3:_NCOLUMNS])


class SQLStore(OutboxQueries, ReminderQueries):
    """Shared queries; subclasses provide `_read()`/`_write()` cursors, `_transaction()`
    and locking.

    A store is either plain (every `_write()` block its own transaction) or bound to a
    unit of work (`unit_of_work()`; `_uow` set): then every read and write runs inside that
    unit's transaction, and audit changes and counters wait for its end.
    """

    dialect = "sqlite"
    url = ""
    #: The unit of work this store is bound to (see unit_of_work()); None on the plain store.
    _uow: UnitOfWork | None = None
    #: Counter deltas not yet written (RBAC checks on reads): the process's buffer on the
    #: plain store, the unit's own on a bound one. Set by the backend's constructor.
    tally: counters.CounterBuffer
    _local: threading.local

    # ---- provided by the backend
    def _read(self) -> AbstractContextManager[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[tuple[Any, Any, Any]]:
        """(connection, cursor, pipeline or None) of a new transaction on this thread's
        connection: committed when the block ends, rolled back if it raises."""
        raise NotImplementedError  # pragma: no cover - abstract

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction for one or several changes: one commit (and one flush) for all.

        Yields a `UnitOfWork` whose `store` is this store bound to the transaction; the
        changes are made through it. The changes run without savepoints: each would cost
        two statements, and on PostgreSQL two round trips, per change. If a change fails
        part-way through its writes (a `_write()` block raised) or a read fails (the backend
        may have aborted the transaction), the unit is spoiled: leave the block (stop
        running changes), everything is rolled back and `GroupSpoiled` is raised, so the
        caller can run the changes again each in a unit of its own (server/writepath.py
        does). A change that fails before writing (a 404, a 409 found by the
        compare-and-set) spoils nothing.

        At the end, before the commit, the unit's deferred audit rows, counters and outbox
        rows are written together (one read of the chain's head, one insert of all audit
        rows, one counter upsert), with its own RBAC-check counters and those the process
        buffered meanwhile (`tally`; put back if the commit fails). A unit rolled back
        writes none of its counters.
        """
        taken: list[Counter] = []
        try:
            with self._transaction() as (conn, cur, pipe):
                uow = UnitOfWork(conn, cur, pipe)
                uow.store = self._bound(uow)
                yield uow
                if uow.spoiled:
                    raise GroupSpoiled
                taken = self.tally.take()
                rows = uow.tally.take() + taken
                if uow.changes:
                    self._write_changes(cur, uow.changes, rows)
                elif rows:
                    self._bump(cur, rows)
        except BaseException:
            if taken:
                self.tally.put_back(taken)
            raise

    def _bound(self, uow: UnitOfWork) -> SQLStore:
        """This store bound to `uow`: a shallow copy sharing connections and settings,
        whose reads and writes run in the unit's transaction and whose `tally` is the
        unit's."""
        view = copy.copy(self)
        view._uow = uow
        view.tally = uow.tally
        return view

    def _in_unit(self, uow: UnitOfWork, cur: Any,
                 sync: Callable[[], Any] | None = None) -> Iterator[Any]:
        """`_write()` inside a unit of work: no transaction of its own; a failure spoils
        it. `sync` makes a pipelined backend report this change's errors here, not later."""
        try:
            yield cur
            if sync is not None:
                sync()
        except BaseException:
            uow.spoiled = True
            raise

    def _spoil(self) -> None:
        """A read failed inside a unit of work: its transaction may be gone."""
        if self._uow is not None:
            self._uow.spoiled = True

    def _lock_audit(self, cur: Any) -> None:
        """Serialise audit appends (SQLite's BEGIN IMMEDIATE already does)."""

    def _sql(self, sql: str) -> str:
        return sql

    def _exec(self, cur: Any, sql: str, params: tuple | list = ()) -> Any:
        cur.execute(self._sql(sql), params)
        return cur

    def _many(self, cur: Any, sql: str, rows: list) -> None:
        if rows:
            cur.executemany(self._sql(sql), rows)

    # ---- writes: every state change with its audit row, counters and outbox rows
    def _append_changes(self, cur: Any, changes: list[Change], payloads: dict[str, str]) -> None:
        """Append changes to the audit chain with their counters and outbox rows, now or,
        inside a unit of work, at its end (with the buffered counters)."""
        entries = [(ch, payloads[ch.request_id] if ch.outbox else "") for ch in changes]
        uow = self._uow
        if uow is not None:
            uow.changes.extend(entries)
        else:
            self._write_changes(cur, entries, self.tally.take())

    def _write_changes(self, cur: Any, entries: list[tuple[Change, str]],
                       extra: list[Counter]) -> None:
        """Chain `entries` (changes with their payloads) onto the audit trail and write their
        counters (with the `extra` deltas: RBAC checks) and outbox rows."""
        self._lock_audit(cur)
        last = self._exec(cur, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                          ).fetchone()
        seq, prev = (last[0], last[1]) if last else (0, audit.GENESIS)
        audit_rows, outbox_rows = [], []
        counter_rows = list(extra)
        for ch, payload in entries:
            seq += 1
            if ch.state is None and ch.request_id is not None:  # fail closed: it would not verify
                raise ValueError(f"change {ch.action} of {ch.request_id} was not sealed")
            row = {"seq": seq, "at": ch.at, "actor": ch.actor, "action": ch.action,
                   "request_id": ch.request_id, "from_status": ch.from_status,
                   "to_status": ch.to_status,
                   "detail": _detail_json(ch.detail), "format": audit.FORMAT,
                   "digest": ch.digest, "state": ch.state}
            row["prev_hash"] = prev
            row["hash"] = prev = audit.row_hash(prev, row)
            audit_rows.append(tuple(row[c] for c in AUDIT_COLUMNS))
            counter_rows.extend(ch.counters)
            # the chain head as this change leaves it: notifications carry it outside
            for channel, event in ch.outbox:
                outbox_rows.append((event, channel, ch.request_id, payload, ch.at, ch.at,
                                    seq, prev))
        self._insert_change_rows(cur, audit_rows, counters.merge(counter_rows), outbox_rows)

    def _insert_change_rows(self, cur: Any, audit_rows: list[tuple],
                            counter_rows: list[Counter], outbox_rows: list[tuple]
                            ) -> None:
        """Write the audit rows, counter deltas and outbox rows of appended changes."""
        self._many(cur, AUDIT_INSERT, audit_rows)
        self._bump(cur, counter_rows)
        self._many(cur, OUTBOX_INSERT, outbox_rows)

    def _bump(self, cur: Any, rows: list[Counter]) -> None:
        # One multi-row upsert, not one statement per series: a decision bumps about ten
        # series (the response-time buckets), and each statement costs its own round of
        # parsing, binding and (on PostgreSQL) a trip to the server. Rows are merged first:
        # PostgreSQL refuses to update one row twice in a statement.
        rows = counters.merge(rows)
        for start in range(0, len(rows), BUMP_CHUNK):
            chunk = rows[start:start + BUMP_CHUNK]
            self._exec(cur, BUMP_SQL.format(values=", ".join(["(?, ?, ?)"] * len(chunk))),
                       [v for row in chunk for v in row])

    def create(self, req: ApprovalRequest, change: Change | list[Change],
               idempotency: tuple[str, str, str] | None = None,
               max_pending: int | None = None) -> ApprovalRequest | dict[str, Any]:
        """Insert `req` with its change(s); with `idempotency` (owner, key, body hash), record
        it. `change` is a list when a policy rule decided the request as it was created (the
        create, then the decision).

        If the idempotency key was stored meanwhile, return the request it created instead.
        With `max_pending`, raise QuotaExceeded (before writing anything) if `req.user_id`
        already has that many pending requests — counted in the transaction of the insert,
        under a per-user lock, so concurrent creates (group commit, other processes) cannot
        all pass one count. A request a rule decided adds nothing pending and is not counted.
        """
        changes = change if isinstance(change, list) else [change]
        over = False
        with self._write() as cur:
            if idempotency:
                found = self._idempotent(cur, idempotency[0], idempotency[1])
                if found:
                    return found
            if max_pending is not None and req.status == PENDING and \
                    self._at_pending_cap(cur, req.user_id, max_pending):
                over = True  # raised below: an error inside the block would spoil a group
            else:
                self._insert(cur, req, changes, idempotency)
        if over:
            raise QuotaExceeded(f"pending quota exceeded: user {req.user_id!r} already has "
                                f"{max_pending} pending requests (quotas.max_pending); wait "
                                "for decisions or cancel some", "pending", PENDING_RETRY_AFTER)
        return req

    def _insert(self, cur: Any, req: ApprovalRequest, changes: list[Change],
                idempotency: tuple[str, str, str] | None) -> None:
        if self.server_clock:  # created and expiring by the database's clock
            now = self._db_now(cur, req.created_at)
            ttl = from_iso(req.expires_at) - from_iso(req.created_at)
            req.created_at, req.expires_at = now, to_iso(from_iso(now) + ttl)
            if req.decided_at is not None:  # decided by a policy rule as it was created
                if req.use_by is not None:
                    req.use_by = to_iso(from_iso(now) + (from_iso(req.use_by) -
                                                         from_iso(req.decided_at)))
                req.decided_at = now
                if req.consumed_at is not None:  # allowed and used at once (create(consume=))
                    req.consumed_at = now
            for ch in changes:
                ch.at = now
        # The stored response (idempotency) and the notification payload (outbox rows) are
        # the same JSON; a plain create needs neither, so it is not encoded for nothing.
        payload = _sorted_json(req.to_dict()) if idempotency or any(
            ch.outbox for ch in changes) else ""
        values = tuple(_sorted_json(req.arguments) if c == "arguments"
                       else getattr(req, c) for c in REQUEST_COLUMNS)
        for ch in changes:  # each audit row holds the row as its own change left it
            seal(ch, _as_left_by(ch, values, req), req)
        self._exec(cur, "INSERT INTO requests (" + ", ".join(REQUEST_COLUMNS) + ") VALUES ("
                   + ", ".join("?" * len(REQUEST_COLUMNS)) + ")", values)
        required = next((ch.detail.get("approvals_required") for ch in changes
                         if ch.action == "create" and ch.detail), None)
        if required:  # a policy rule's quorum, recorded with the creation it audits
            self._exec(cur, "INSERT INTO request_quorum (request_id, required) VALUES (?, ?)",
                       (req.id, int(required)))
        self._insert_schedule(cur, req, changes)  # a policy rule's reminder steps, if any
        if idempotency:
            self._exec(cur, "INSERT INTO idempotency_keys (owner, key, body_hash, "
                       "request_id, response, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (*idempotency, req.id, payload, req.created_at))
        self._append_changes(cur, changes, {req.id: payload})

    #: Whose clock decides expiry and decision times: False, the caller's (SQLite, one
    #: machine); True, the database server's (PostgreSQL, shared by many hosts).
    server_clock = False

    def _db_now(self, cur: Any, at: str) -> str:
        """The time of a change as stored text: `at` (the caller's clock) here; the
        database server's clock where `server_clock` (DESIGN.md §10)."""
        return at

    def db_now(self) -> str | None:
        """The database server's time now, or None where the caller's clock decides."""
        return None

    def _at_pending_cap(self, cur: Any, user_id: str, cap: int) -> bool:
        """Whether `user_id` has `cap` pending requests, under the user's lock (held until
        the transaction ends, so the insert that follows is counted by the next check)."""
        self._lock_user(cur, user_id)
        # Walk this user's pending rows in the (status, user_id, id) index; LIMIT/OFFSET
        # stops at the cap-th. Other users' pending requests and this user's history cost
        # nothing; see docs/api.md "Limits".
        return self._exec(cur, "SELECT 1 FROM requests WHERE status = ? AND user_id = ? "
                          "ORDER BY id LIMIT 1 OFFSET ?",
                          (PENDING, user_id, cap - 1)).fetchone() is not None

    def _lock_user(self, cur: Any, user_id: str) -> None:
        """Serialise one user's pending-quota checks until commit (SQLite's BEGIN IMMEDIATE
        already serialises every writer)."""

    def transition(self, request_id: str, to_status: str, at: str, decided_by: str,
                   note: str | None, *, timed: bool, not_user: str | None,
                   change_for: Callable[[ApprovalRequest], Change],
                   use_within: float | None = None) -> ApprovalRequest | None:
        """Compare-and-set from pending in one statement (and, with `not_user`, not that
        user's own request) while `expires_at` is still ahead, returning the row; None if
        nothing matched, and the caller finds out why. With `timed`, `response_ms` is the
        time since `created_at`. With `use_within` (seconds), `use_by` is set that long after
        the decision. `at` is replaced by the database's time where `server_clock`;
        `change_for` builds the change from the row it returned (its `decided_at`)."""
        with self._write() as cur:
            at = self._db_now(cur, at)
            use_by = None if use_within is None else \
                to_iso(from_iso(at) + timedelta(seconds=use_within))
            sql = ("UPDATE requests SET status = ?, decided_at = ?, decided_by = ?, "
                   "decision_note = ?, use_by = ?, response_ms = " +
                   (self._ms_since_created() if timed else "NULL") +
                   " WHERE id = ? AND status = ? AND expires_at > ?" +
                   (" AND user_id <> ?" if not_user else "") +
                   (_QUORUM_MET if to_status == APPROVED else "") +
                   " RETURNING " + ", ".join(REQUEST_COLUMNS))
            params = (to_status, at, decided_by, note, use_by) + ((at,) if timed else ()) + (
                request_id, PENDING, at) + ((not_user,) if not_user else ())
            row = self._exec(cur, sql, params).fetchone()
            return self._record_row_change(cur, row, change_for)

    def expire_one(self, request_id: str, at: str,
                   change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Expire this request if it is pending and its `expires_at` has passed (as of `at`,
        or the database's time where `server_clock`); None if it was not. The
        compare-and-set on status makes the expiry recorded exactly once."""
        with self._write() as cur:
            at = self._db_now(cur, at)
            row = self._exec(cur, "UPDATE requests SET status = ?, decided_at = ? WHERE id = ? "
                             "AND status = ? AND expires_at <= ? RETURNING "
                             + ", ".join(REQUEST_COLUMNS),
                             (EXPIRED, at, request_id, PENDING, at)).fetchone()
            return self._record_row_change(cur, row, change_for)

    def consume(self, request_id: str, digest: str, at: str,
                change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Mark an approval used, once: a compare-and-set on (approved, not consumed, this
        digest, `use_by` still ahead of `at` or the database's time). None if nothing
        matched; the caller finds out why."""
        with self._write() as cur:
            at = self._db_now(cur, at)
            row = self._exec(cur, "UPDATE requests SET consumed_at = ? WHERE id = ? AND "
                             "status = ? AND consumed_at IS NULL AND digest = ? AND use_by > ? "
                             "RETURNING " + ", ".join(REQUEST_COLUMNS),
                             (at, request_id, APPROVED, digest, at)).fetchone()
            if row is None:
                return None
            req = request_from_row(row)
            self._append_changes(cur, [seal(change_for(req), row, req)], {})
        return req

    def _record_row_change(self, cur: Any, row: tuple | None,
                           change_for: Callable[[ApprovalRequest], Change]
                           ) -> ApprovalRequest | None:
        """After a compare-and-set that returned `row` (None: nothing matched), append the
        change `change_for` builds from it, with the request as its notification payload."""
        if row is None:
            return None
        req = request_from_row(row)
        change = seal(change_for(req), row, req)
        self._append_changes(cur, [change], {req.id: _sorted_json(req.to_dict())}
                             if change.outbox else {})
        return req

    def _ms_since_created(self) -> str:
        """SQL for whole milliseconds from `created_at` to the time bound to its `?`, at
        least 0 (both are fixed-width UTC text with milliseconds)."""
        return ("MAX(0, CAST((julianday(?) - julianday(created_at)) * 86400000.0 + 0.5 "
                "AS INTEGER))")

    def expire_overdue(self, now: str, change_for: Callable[[ApprovalRequest], Change],
                       batch: int = 2000) -> list[str]:
        """Expire every pending request whose `expires_at` is at or before `now`.

        Works in short batches so other writers are never held up long; the compare-and-set
        on status makes concurrent sweeps expire each request exactly once.
        """
        expired: list[str] = []
        while True:
            with self._write() as cur:
                now = self._db_now(cur, now)
                rows = self._exec(cur, _SELECT + " WHERE status = ? AND expires_at <= ? "
                                  "ORDER BY expires_at LIMIT ?" + self._skip_locked(),
                                  (PENDING, now, batch)).fetchall()
                if not rows:
                    return expired
                reqs = [request_from_row(r) for r in rows]
                changes = [change_for(r) for r in reqs]
                self._many(cur, "UPDATE requests SET status = ?, decided_at = ? "
                           "WHERE id = ? AND status = ?",
                           [(c.to_status, c.at, c.request_id, PENDING) for c in changes])
                payloads = {}
                for raw, r, c in zip(rows, reqs, changes):
                    r.status, r.decided_at = c.to_status, c.at
                    raw = list(raw)
                    raw[_STATUS], raw[_DECIDED_AT] = c.to_status, c.at
                    seal(c, raw, r)
                    if c.outbox:  # only notification rows carry the payload; it is costly
                        payloads[r.id] = _sorted_json(r.to_dict())
                self._append_changes(cur, changes, payloads)
                expired.extend(r.id for r in reqs)
            if len(rows) < batch:
                return expired

    def _skip_locked(self) -> str:
        return ""

    def _use_index(self, index: str) -> str:
        """A planner hint where the dialect has one (SQLite's INDEXED BY)."""
        return ""

    @contextmanager
    def brief_writes(self) -> Iterator[None]:
        """Writes on this thread meanwhile give up quickly on a lock (see SQLiteStore);
        PostgreSQL's expiry sweep already skips locked rows."""
        yield

    def flush_counters(self) -> None:
        """Write buffered counter deltas (RBAC checks on reads) now."""
        deltas = self.tally.take()
        if not deltas:
            return
        try:
            with self._write() as cur:
                self._bump(cur, deltas)
        except BaseException:
            self.tally.put_back(deltas)
            raise

    def add_counters(self, rows: list[Counter]) -> None:
        with self._write() as cur:
            self._bump(cur, counters.merge(rows))

    # ---- reads
    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._read() as cur:
            row = self._exec(cur, _SELECT + " WHERE id = ?", (request_id,)).fetchone()
        return request_from_row(row) if row else None

    def has_overdue(self, now: str) -> bool:
        """Whether any pending request's `expires_at` is at or before `now` (one probe of
        the (status, expires_at) index)."""
        with self._read() as cur:
            return self._exec(cur, "SELECT 1 FROM requests WHERE status = ? AND "
                              "expires_at <= ? LIMIT 1", (PENDING, now)).fetchone() is not None

    def get_status(self, request_id: str) -> str | None:
        with self._read() as cur:
            row = self._exec(cur, "SELECT status FROM requests WHERE id = ?",
                             (request_id,)).fetchone()
        return row[0] if row else None

    def resolve_prefix(self, prefix: str, limit: int = 2, *, user_id: str | None = None
                       ) -> list[str]:
        """Ids starting with `prefix` (a range scan on the primary key), only those of
        `user_id` when given."""
        owner = " AND user_id = ?" if user_id is not None else ""
        params = (prefix, prefix + "\x7f") + ((user_id,) if user_id is not None else ())
        with self._read() as cur:
            rows = self._exec(cur, "SELECT id FROM requests WHERE id >= ? AND id < ?"
                              f"{owner} ORDER BY id LIMIT ?", params + (limit,)).fetchall()
        return [r[0] for r in rows]

    def list_requests(self, *, status: str | None, tool_name: str | None, user_id: str | None,
                      after: str | None, descending: bool, limit: int,
                      risk: str | None = None, created_since: str | None = None,
                      unexpired_at: str | None = None) -> list[ApprovalRequest]:
        """One page of requests by id. `unexpired_at` keeps only rows whose `expires_at` is
        after it (for a list of what is pending now); it is checked on the rows the id-ordered
        index walk reaches (`|| ''` keeps the planner off the (status, expires_at) index,
        whose range would have to be sorted by id)."""
        where, params = [], []
        for col, value in (("status", status), ("tool_name", tool_name), ("user_id", user_id),
                           ("risk", risk)):
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        if created_since is not None:
            where.append("created_at >= ?")
            params.append(created_since)
        if unexpired_at is not None:
            where.append("expires_at || '' > ?")
            params.append(unexpired_at)
        if after is not None:
            where.append("id < ?" if descending else "id > ?")
            params.append(after)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id" + (" DESC" if descending else "") + " LIMIT ?"
        with self._read() as cur:
            rows = self._exec(cur, sql, (*params, limit)).fetchall()
        return [request_from_row(r) for r in rows]

    def stats(self, since: str) -> dict[str, Any]:
        """Raw figures over requests created at or after `since`.

        Counts and the response-time average come from one pass over the covering
        (created_at, status, response_ms) index; a GROUP BY would sort every row in the window,
        which grows with the table. Each percentile is a walk along the response-time index to the
        n-th row in the window, never a sort.
        """
        counts = ", ".join(f"COUNT(CASE WHEN status = '{s}' THEN 1 END)" for s in STATUSES)
        with self._read() as cur:
            row = self._exec(
                cur, f"SELECT {counts}, COUNT(response_ms), AVG(response_ms) FROM requests"
                + self._use_index("requests_created_stats")
                + " WHERE created_at >= ?", (since,)).fetchone()
            by_status = {s: c for s, c in zip(STATUSES, row) if c}
            n, avg = row[len(STATUSES)], row[len(STATUSES) + 1]
            percentiles: dict[str, Any] = {}
            for name, q in (("p50", 0.50), ("p95", 0.95)):
                if not n:
                    percentiles[name] = None
                    continue
                index = min(n - 1, int(q * n))
                # walk from the nearer end: p95 is 5 % from the top, not 95 % from the bottom
                descending = index > (n - 1) / 2
                row = self._exec(
                    cur, "SELECT response_ms FROM requests"
                    + self._use_index("requests_response_time")
                    + " WHERE response_ms IS NOT NULL AND created_at >= ? "
                    "ORDER BY response_ms" + (" DESC" if descending else "")
                    + " LIMIT 1 OFFSET ?",
                    (since, n - 1 - index if descending else index)).fetchone()
                percentiles[name] = row[0] if row else None
            oldest = self._exec(cur, "SELECT created_at FROM requests WHERE status = ? "
                                "ORDER BY id LIMIT 1", (PENDING,)).fetchone()
        return {"by_status": by_status, "decided": n, "avg_ms": avg, **percentiles,
                "oldest_pending_created_at": oldest[0] if oldest else None}

    #: `stats --by` groups: the group name -> its column (never user text in the SQL)
    STATS_GROUPS = {"tool": "tool_name", "user": "user_id", "risk": "risk"}

    def stats_rows(self, since: str, by: str | None) -> list[tuple[Any, ...]]:
        """(group value or None, status, response_ms, decided_at) of every request created
        at or after `since`, for breakdowns and charts.

        A range walk along the created_at index: the cost follows the window, not the table.
        Grouping happens in the caller; a GROUP BY here would sort every row of the window.
        Raises KeyError for an unknown `by`.
        """
        col = "NULL" if by is None else self.STATS_GROUPS[by]
        with self._read() as cur:
            return [tuple(r) for r in self._exec(
                cur, f"SELECT {col}, status, response_ms, decided_at FROM requests"
                + self._use_index("requests_created_stats")
                + " WHERE created_at >= ?", (since,)).fetchall()]

    def queue_gauges(self) -> tuple[int, str | None]:
        """(number of pending requests, created_at of the oldest) for the gauges."""
        with self._read() as cur:
            count = self._exec(cur, "SELECT COUNT(*) FROM requests WHERE status = ?",
                               (PENDING,)).fetchone()[0]
            oldest = self._exec(cur, "SELECT created_at FROM requests WHERE status = ? "
                                "ORDER BY id LIMIT 1", (PENDING,)).fetchone()
        return count, (oldest[0] if oldest else None)

    def outbox_backlog(self) -> int:
        """Notifications not yet delivered (outbox rows still 'pending'), for a gauge.

        Counted on the `outbox_due (status, next_attempt_at)` index: the cost follows the
        backlog, not the number of notifications ever sent.
        """
        with self._read() as cur:
            return self._exec(cur, "SELECT COUNT(*) FROM outbox WHERE status = ?",
                              ("pending",)).fetchone()[0]

    def counters(self) -> list[tuple[str, str, float]]:
        with self._read() as cur:
            return [tuple(r) for r in self._exec(
                cur, "SELECT name, labels, value FROM metric_counters").fetchall()]

    # ---- audit
    def audit_rows(self, *, request_id: str | None = None, limit: int | None = None,
                   newest_first: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT " + ", ".join(AUDIT_COLUMNS) + " FROM audit_log"
        params: list[Any] = []
        if request_id:
            sql += " WHERE request_id = ?"
            params.append(request_id)
        sql += " ORDER BY seq" + (" DESC" if newest_first else "")
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        with self._read() as cur:
            return [dict(zip(AUDIT_COLUMNS, r)) for r in self._exec(cur, sql, params)]

    def iter_audit(self, chunk: int = 5000) -> Iterator[dict[str, Any]]:
        """Every audit row in physical `seq` order, read in chunks."""
        after = -1
        sql = ("SELECT " + ", ".join(AUDIT_COLUMNS) + " FROM audit_log WHERE seq > ? "
               "ORDER BY seq LIMIT ?")
        while True:
            with self._read() as cur:
                rows = self._exec(cur, sql, (after, chunk)).fetchall()
            for r in rows:
                yield dict(zip(AUDIT_COLUMNS, r))
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def changes_after(self, after: int, limit: int) -> list[tuple[int, str, str | None]]:
        """(seq, action, request_id) of up to `limit` audit rows with seq > `after`, oldest
        first: what change notification (server/wakeups.py) reads to learn which requests
        moved, one query for all the waiters of a process."""
        with self._read() as cur:
            return [tuple(r) for r in self._exec(
                cur, "SELECT seq, action, request_id FROM audit_log WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (after, limit)).fetchall()]

    def change_marker(self) -> int:
        """A cheap value that differs after any committed change (here the audit head's
        seq; SQLite overrides it with PRAGMA data_version). Waiters compare it tick by tick
        and read rows only when it moved."""
        return self.audit_head()[0]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit row; (0, GENESIS) for an empty trail."""
        with self._read() as cur:
            row = self._exec(cur, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                             ).fetchone()
        return (row[0], row[1]) if row else (0, audit.GENESIS)

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A cursor on one read-only snapshot of the database (see the backends)."""
        with self._read() as cur:
            yield cur

    def _keyset(self, cur: Any, sql: str, after: tuple, chunk: int,
                key: Callable[[tuple], tuple]) -> Iterator[tuple]:
        """Rows of `sql` (which ends with a keyset condition on its last `len(after)`
        parameters and `LIMIT ?`), chunk by chunk, without holding more than a chunk."""
        while True:
            rows = self._exec(cur, sql, (*after, chunk)).fetchall()
            yield from rows
            if len(rows) < chunk:
                return
            after = key(rows[-1])

    def verify_audit(self, anchors: Sequence[tuple[int, str]] = (),
                     chunk: int = 5000) -> audit.VerifyResult:
        """The chain, then each anchor, then every request against its last audit row, all
        on one snapshot (a live server's writes cannot make a false finding), streamed in
        chunks: memory stays flat at millions of rows."""
        cols = ", ".join(AUDIT_COLUMNS)
        iseq, irid = AUDIT_COLUMNS.index("seq"), AUDIT_COLUMNS.index("request_id")
        with self._snapshot() as cur:
            chain = self._keyset(cur, f"SELECT {cols} FROM audit_log WHERE seq > ? "
                                 "ORDER BY seq LIMIT ?", (-1,), chunk, lambda r: (r[iseq],))
            result = audit.verify_chain(dict(zip(AUDIT_COLUMNS, r)) for r in chain)
            if not result.ok:
                return result
            last = self._exec(cur, "SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1"
                              ).fetchone()
            for seq, expected in anchors:
                found = self._exec(cur, "SELECT hash FROM audit_log WHERE seq = ?", (seq,)
                                   ).fetchone()
                why = audit.check_anchor(seq, expected, found[0] if found else None,
                                         last[0] if last else 0)
                if why:
                    return audit.VerifyResult(False, result.rows, seq, why)
            requests = self._keyset(cur, _SELECT + " WHERE id > ? ORDER BY id LIMIT ?", ("",),
                                    chunk, lambda r: (r[0],))
            rows = self._keyset(cur, f"SELECT {cols} FROM audit_log WHERE request_id IS NOT "
                                "NULL AND (request_id, seq) > (?, ?) ORDER BY request_id, seq "
                                "LIMIT ?", ("", -1), chunk, lambda r: (r[irid], r[iseq]))
            finding = audit.cross_check(
                (dict(zip(REQUEST_COLUMNS, r)) for r in requests),
                audit.last_rows(dict(zip(AUDIT_COLUMNS, r)) for r in rows))
        if finding:
            return audit.VerifyResult(False, result.rows, finding.seq, finding.problem,
                                      finding.request_id)
        return result

    # ---- retention
    def _prunable(self) -> str:
        # Walk the creation-time index from the oldest row: a batch costs what it deletes,
        # not a pass over every decided request (which the status index would make).
        return (" FROM requests" + self._use_index("requests_created_stats")
                + " WHERE created_at < ? AND decided_at < ? AND status IN ("
                + ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES)) + ")")

    def count_prunable(self, before: str) -> tuple[int, int]:
        """(requests, outbox rows) that `prune(before)` would delete."""
        with self._read() as cur:
            n = self._exec(cur, "SELECT COUNT(*)" + self._prunable(), (before, before)
                           ).fetchone()[0]
            m = self._exec(cur, "SELECT COUNT(*) FROM outbox WHERE request_id IN (SELECT id"
                           + self._prunable() + ")", (before, before)).fetchone()[0]
        return n, m

    def prune(self, before: str, change_for: Callable[[ApprovalRequest], Change],
              batch: int = PRUNE_BATCH) -> tuple[int, int]:
        """Delete final requests created and decided before `before`, with their outbox
        rows, batch by batch; each deleted request gets its audit row (`change_for`) in the
        same transaction, recording the row it deleted. Returns (requests, outbox rows)."""
        total = outbox = 0
        while True:
            with self._write() as cur:
                # DELETE … RETURNING: a concurrent prune cannot record a row twice
                rows = self._exec(cur, "DELETE FROM requests WHERE id IN (SELECT id"
                                  + self._prunable() + " ORDER BY created_at LIMIT ?) RETURNING "
                                  + ", ".join(REQUEST_COLUMNS), (before, before, batch)
                                  ).fetchall()
                if not rows:
                    return total, outbox
                ids = [r[0] for r in rows]
                outbox += self._exec(cur, "DELETE FROM outbox WHERE request_id IN ("
                                     + ", ".join("?" * len(ids)) + ")", ids).rowcount
                for table in REQUEST_SIDE_TABLES:  # quorum, approvals, reminder steps
                    self._exec(cur, f"DELETE FROM {table} WHERE request_id IN ("
                               + ", ".join("?" * len(ids)) + ")", ids)
                changes = []
                for raw in rows:
                    req = request_from_row(raw)
                    changes.append(seal(change_for(req), raw, req))
                self._append_changes(cur, changes, {})
                total += len(rows)
            if len(rows) < batch:
                return total, outbox

    # ---- idempotency
    def _idempotent(self, cur: Any, owner: str, key: str) -> dict[str, Any] | None:
        row = self._exec(cur, "SELECT body_hash, request_id, response FROM idempotency_keys "
                         "WHERE owner = ? AND key = ?", (owner, key)).fetchone()
        if not row:
            return None
        return {"body_hash": row[0], "request_id": row[1], "response": json.loads(row[2])}

    def get_idempotent(self, owner: str, key: str) -> dict[str, Any] | None:
        with self._read() as cur:
            return self._idempotent(cur, owner, key)

    def purge_idempotency(self, before: str) -> int:
        with self._write() as cur:
            return self._exec(cur, "DELETE FROM idempotency_keys WHERE created_at < ?",
                              (before,)).rowcount

    # ---- server secrets (the decision-link key)
    def server_secret(self, name: str, make: Callable[[], str], at: str) -> str:
        """The secret `name`, made with `make()` and stored on first use.

        Two processes asking at once store one value (the primary key decides) and both
        return it.
        """
        with self._read() as cur:
            row = self._exec(cur, "SELECT value FROM server_secrets WHERE name = ?",
                             (name,)).fetchone()
        if row:
            return row[0]
        with self._write() as cur:
            self._exec(cur, "INSERT INTO server_secrets (name, value, created_at) VALUES "
                       "(?, ?, ?) ON CONFLICT (name) DO NOTHING", (name, make(), at))
            return self._exec(cur, "SELECT value FROM server_secrets WHERE name = ?",
                              (name,)).fetchone()[0]

    def replace_server_secret(self, name: str, value: str, at: str) -> None:
        """Store `value` as the secret `name`, replacing any earlier one."""
        with self._write() as cur:
            self._exec(cur, "INSERT INTO server_secrets (name, value, created_at) VALUES "
                       "(?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                       "created_at = excluded.created_at", (name, value, at))

    # ---- quorum (approvals_required)
    def quorum(self, request_id: str) -> tuple[int, list[str]] | None:
        """(approvals required, approvers so far in order) of a request with a quorum, or
        None for a request that needs one approval."""
        return self.quorums([request_id]).get(request_id)

    def quorums(self, request_ids: Sequence[str]) -> dict[str, tuple[int, list[str]]]:
        """`quorum()` for many requests at once (a page of a listing): only those with a
        quorum appear. Two primary-key lookups, whatever the page size."""
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self._read() as cur:
            rows = self._exec(cur, "SELECT request_id, required FROM request_quorum WHERE "
                              f"request_id IN ({marks})", ids).fetchall()
            if not rows:
                return {}
            out: dict[str, tuple[int, list[str]]] = {r[0]: (int(r[1]), []) for r in rows}
            for rid, who in self._exec(
                    cur, "SELECT request_id, approver FROM request_approvals WHERE "
                    f"request_id IN ({', '.join('?' * len(out))}) ORDER BY at, approver",
                    list(out)).fetchall():
                out[rid][1].append(who)
        return out

    def _pending_row(self, cur: Any, request_id: str, at: str) -> tuple | None:
        """The request's row if it is pending and not expired, locked until commit."""
        lock = " FOR UPDATE" if getattr(self, "dialect", "sqlite") == "postgresql" else ""
        return self._exec(cur, "SELECT " + ", ".join(REQUEST_COLUMNS) + " FROM requests "
                          "WHERE id = ? AND status = ? AND expires_at > ?" + lock,
                          (request_id, PENDING, at)).fetchone()

    def set_quorum(self, request_id: str, required: int, at: str,
                   change_for: Callable[[ApprovalRequest], Change]) -> ApprovalRequest | None:
        """Require `required` approvers for a pending request (audited by `change_for`);
        None if it is not pending (any more). Never lowers an existing requirement: the
        caller checks, and the larger value wins here too."""
        with self._write() as cur:
            row = self._pending_row(cur, request_id, at)
            if row is None:
                return None
            self._exec(cur, "INSERT INTO request_quorum (request_id, required) VALUES (?, ?) "
                       "ON CONFLICT (request_id) DO UPDATE SET required = CASE WHEN "
                       "excluded.required > request_quorum.required THEN excluded.required "
                       "ELSE request_quorum.required END", (request_id, required))
            req = request_from_row(row)
            self._append_changes(cur, [seal(change_for(req), row, req)], {})
        return req

    def add_approval(self, request_id: str, approver: str, at: str,
                     change_for: Callable[[ApprovalRequest, int, int], Change]
                     ) -> tuple[ApprovalRequest, int, int, bool] | None:
        """Count `approver`'s approval of a pending request with a quorum, under the row's
        lock (SQLite: the write lock), so simultaneous approvers are each counted once.

        Returns (request, approvals, required, added): `added` is False when this approver
        had already approved. Below the quorum the partial approval is audited with
        `change_for(req, approvals, required)` in the same transaction; at the quorum
        nothing is audited here: the caller's compare-and-set makes the one final
        transition. None if the request is not pending (any more) or has no quorum.
        """
        with self._write() as cur:
            row = self._pending_row(cur, request_id, at)
            if row is None:
                return None
            q = self._exec(cur, "SELECT required FROM request_quorum WHERE request_id = ?",
                           (request_id,)).fetchone()
            if q is None:
                return None
            added = self._exec(cur, "INSERT INTO request_approvals (request_id, approver, at) "
                               "VALUES (?, ?, ?) ON CONFLICT (request_id, approver) DO "
                               "NOTHING", (request_id, approver, at)).rowcount == 1
            count = self._exec(cur, "SELECT COUNT(*) FROM request_approvals WHERE "
                               "request_id = ?", (request_id,)).fetchone()[0]
            req = request_from_row(row)
            if added and count < q[0]:
                self._append_changes(cur, [seal(change_for(req, count, q[0]), row, req)], {})
        return req, int(count), int(q[0]), added

    # ---- policy rules
    def list_rules(self) -> list[dict[str, Any]]:
        """The policy rules in order, as stored (see approvalctl/policy.py)."""
        with self._read() as cur:
            return [_loads(r[0]) for r in self._exec(
                cur, "SELECT body FROM policy_rules ORDER BY position")]

    def change_rules(self, edit: Callable[[list[dict[str, Any]]],
                                          tuple[list[dict[str, Any]], Change]]) -> None:
        """Replace the rules with what `edit` makes of the current ones, and append the
        change it returns to the audit chain, in one transaction. The audit lock is taken
        first, so two editors never both start from the same rules."""
        with self._write() as cur:
            self._lock_audit(cur)
            current = [_loads(r[0]) for r in self._exec(
                cur, "SELECT body FROM policy_rules ORDER BY position")]
            rules, change = edit(current)
            self._exec(cur, "DELETE FROM policy_rules")
            self._many(cur, "INSERT INTO policy_rules (name, position, body) VALUES (?, ?, ?)",
                       [(r["name"], i, _sorted_json(r)) for i, r in enumerate(rules)])
            self._append_changes(cur, [change], {})

    # ---- API keys
    def insert_key(self, row: dict[str, Any], role_counter: Counter,
                   change: Change | None = None) -> None:
        with self._write() as cur:
            self._exec(cur, "INSERT INTO api_keys (" + ", ".join(KEY_COLUMNS) + ") VALUES ("
                       + ", ".join("?" * len(KEY_COLUMNS)) + ")",
                       tuple(row.get(c) for c in KEY_COLUMNS))
            self._bump(cur, [role_counter])
            if change is not None:
                self._append_changes(cur, [change], {})

    def get_key(self, *, key_id: str | None = None, name: str | None = None
                ) -> dict[str, Any] | None:
        col, value = ("key_id", key_id) if key_id is not None else ("name", name)
        with self._read() as cur:
            row = self._exec(cur, "SELECT " + ", ".join(KEY_COLUMNS) + f" FROM api_keys "
                             f"WHERE {col} = ?", (value,)).fetchone()
        return dict(zip(KEY_COLUMNS, row)) if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            return [dict(zip(KEY_COLUMNS, r)) for r in self._exec(
                cur, "SELECT " + ", ".join(KEY_COLUMNS) + " FROM api_keys ORDER BY name")]

    def revoke_key(self, name: str, at: str, change: Change | None = None) -> bool:
        with self._write() as cur:
            done = self._exec(cur, "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND "
                              "revoked_at IS NULL", (at, name)).rowcount > 0
            if done and change is not None:
                self._append_changes(cur, [change], {})
            return done

    # ---- bulk copy (`migrate --to`): whole tables, in key order, batch by batch
    @staticmethod
    def _key_columns(table: str) -> list[str]:
        return [k.strip() for k in TABLES[table][0].split(",")]

    def count_rows(self, table: str) -> int:
        with self._read() as cur:
            return self._exec(cur, f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def read_rows(self, table: str, after: tuple | None, limit: int) -> list[tuple]:
        """Up to `limit` rows of `table` (all of TABLES' columns) with a key after `after`."""
        keys = self._key_columns(table)
        sql = "SELECT " + ", ".join(TABLES[table][1]) + f" FROM {table}"
        params: list[Any] = []
        if after is not None:
            # a row-value comparison walks a composite primary key in index order
            sql += " WHERE (" + ", ".join(keys) + ") > (" + ", ".join("?" * len(keys)) + ")"
            params.extend(after)
        sql += " ORDER BY " + ", ".join(keys) + " LIMIT ?"
        with self._read() as cur:
            return self._exec(cur, sql, (*params, limit)).fetchall()

    def last_key(self, table: str) -> tuple | None:
        """The greatest key in `table`, or None when it is empty."""
        keys = self._key_columns(table)
        with self._read() as cur:
            row = self._exec(cur, "SELECT " + ", ".join(keys) + f" FROM {table} ORDER BY "
                             + ", ".join(k + " DESC" for k in keys) + " LIMIT 1").fetchone()
        return tuple(row) if row else None

    def key_of(self, table: str, row: tuple) -> tuple:
        columns = TABLES[table][1]
        return tuple(row[columns.index(k)] for k in self._key_columns(table))

    def insert_rows(self, table: str, rows: list[tuple]) -> None:
        """Insert rows (all of TABLES' columns, keys included) in one transaction."""
        columns = TABLES[table][1]
        with self._write() as cur:
            self._many(cur, f"INSERT INTO {table} (" + ", ".join(columns) + ") VALUES ("
                       + ", ".join("?" * len(columns)) + ")", rows)

    def before_bulk_load(self) -> None:
        """Tune this store's connections for loading millions of rows (`migrate --to`)."""

    def after_bulk_load(self) -> None:
        """Make numbering continue after copied rows (SQLite's rowids already do)."""
