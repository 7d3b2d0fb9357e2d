"""The shared-database backend: PostgreSQL through psycopg 3 and a psycopg_pool pool.

Several `serve` processes, sweeps and notification workers on several machines may share
one database. What makes that safe lives here:

- every write is one transaction (`_write`, or several changes in one `unit_of_work`), so
  a change, its audit row, counters and outbox rows exist together or not at all;
- audit appends take a transaction-scoped advisory lock (`_lock_audit`), so concurrent
  writers extend the hash chain one after another and it never forks;
- sweeps and outbox claims select with `FOR UPDATE SKIP LOCKED`, so any number of them run
  at once without doing the same work twice;
- migrations run one per transaction under an advisory lock, so two processes opening a
  fresh database at the same moment both end up with one schema.

Every psycopg error becomes `Unavailable` with one line naming the problem (wrong URL,
refused connection, unknown role, missing database or schema), so the CLI exits 6 and the
server answers 503. The pool checks a connection before lending it, so after a PostgreSQL
restart the next operation simply gets a fresh connection.

psycopg is imported here only; SQLite users never pay for it (or need it installed).

Pool settings ride on the URL as query parameters that this module removes before libpq
sees them: `pool_min_size` (default 1), `pool_max_size` (10), `pool_timeout` (seconds to wait
for a connection, 10) and `pipeline` (false; see `_write`); `connect_timeout` is passed
through to libpq (default 5).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..counters import CounterBuffer
from ..errors import Unavailable
from ..errors import UniqueViolation as _UniqueViolation
from ..models import ApprovalRequest, Change
from . import migrations
from .sql import AUDIT_COLUMNS, BUMP_SQL, OUTBOX_INSERT_COLUMNS, TABLES, SQLStore

MIGRATIONS_TABLE = migrations.TABLE
def _flag(value: str) -> float:
    if value.lower() in ("1", "true", "on", "yes"):
        return 1.0
    if value.lower() in ("0", "false", "off", "no"):
        return 0.0
    raise ValueError(value)


#: Each `pool_*`/`pipeline` URL parameter with the parser of its value.
POOL_PARAMS: dict[str, Callable[[str], float]] = {
    "pool_min_size": int, "pool_max_size": int, "pool_timeout": float, "pipeline": _flag}
DEFAULTS = {"pool_min_size": 1, "pool_max_size": 10, "pool_timeout": 10.0, "pipeline": 0.0}
CONNECT_TIMEOUT = "5"
IDLE_CHECK_SECONDS = 2.0
#: How long the pool retries a failed connection (with growing pauses) before it stops and
#: waits for the next request to try afresh: short, so a server that comes back is used at
#: once rather than after the pool's next, ever later, retry.
RECONNECT_SECONDS = 2.0
#: Rows of one change (or batch of changes) written as a single CTE statement; above this,
#: the plain statements (a sweep expires thousands at once).
CTE_MAX_ROWS = 200


def redact(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def split_url(url: str) -> tuple[str, dict[str, float]]:
    """(the libpq URL, our pool settings) from a `postgresql://` URL with pool parameters."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise Unavailable(f"invalid PostgreSQL URL {redact(url)}: {exc}") from None
    pool: dict[str, float] = dict(DEFAULTS)
    rest = []
    for key, value in query:
        if key in POOL_PARAMS:
            try:
                pool[key] = POOL_PARAMS[key](value)
            except ValueError:
                what = "true or false" if key == "pipeline" else "a number"
                raise Unavailable(f"invalid PostgreSQL URL {redact(url)}: {key} must be "
                                  f"{what}, got {value!r}") from None
            if pool[key] <= 0 and key not in ("pool_min_size", "pipeline"):
                raise Unavailable(f"invalid PostgreSQL URL {redact(url)}: {key} must be "
                                  "greater than zero")
        else:
            rest.append((key, value))
    if not any(k == "connect_timeout" for k, _ in rest):
        rest.append(("connect_timeout", CONNECT_TIMEOUT))
    # so pg_stat_activity and the server's logs say which connections are ours
    if not any(k == "application_name" for k, _ in rest):
        rest.append(("application_name", "approvalctl"))
    if pool["pool_min_size"] > pool["pool_max_size"]:
        pool["pool_max_size"] = pool["pool_min_size"]
    return urlunsplit(parts._replace(query=urlencode(rest))), pool


def describe(url: str, exc: BaseException) -> str:
    """One line saying what went wrong with the database at `url`, and what to check."""
    where = redact(url)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    if text.startswith("connection to server at ") and " failed: " in text:
        text = text.split(" failed: ", 1)[1]
    text = text.removeprefix("FATAL:").strip()
    sqlstate = getattr(exc, "sqlstate", None)
    low = text.lower()
    if "connection refused" in low:
        return f"cannot connect to PostgreSQL at {where}: connection refused (is the server " \
               "running and listening on that host and port?)"
    if "failed to resolve host" in low or "could not translate host name" in low:
        return f"cannot connect to PostgreSQL at {where}: unknown host ({text})"
    if "timeout expired" in low or "timed out" in low:
        return f"cannot connect to PostgreSQL at {where}: {text}"
    if ("password authentication failed" in low or "role" in low and "does not exist" in low
            or "no password supplied" in low or "not permitted to log in" in low
            or "no pg_hba.conf entry" in low or sqlstate in ("28P01", "28000")):
        return f"cannot log in to PostgreSQL at {where}: {text} (check the user and password)"
    if "database" in low and "does not exist" in low:
        return f"cannot open PostgreSQL database at {where}: {text} (create it with " \
               "createdb, or fix the database name in the URL)"
    if sqlstate == "3F000" or "no schema has been selected" in low:
        return f"PostgreSQL database at {where} has no usable schema: {text} (create the " \
               "schema named in search_path, or fix the URL's options)"
    if sqlstate == "42P01":
        return f"PostgreSQL database at {where} has no approvalctl schema ({text}); run " \
               "`approvalctl migrate` against it first"
    if "invalid" in low and ("uri" in low or "connection option" in low or "integer" in low
                             or "query parameter" in low):
        return f"invalid PostgreSQL URL {where}: {text}"
    if "server closed the connection" in low or "terminating connection" in low \
            or "connection is lost" in low or "consuming input failed" in low:
        return f"lost the connection to PostgreSQL at {where}: {text} (the server may be " \
               "restarting; try again)"
    return f"PostgreSQL error at {where}: {text}"


#: The LISTEN/NOTIFY channel of change notification (server/wakeups.py).
CHANGES_CHANNEL = "approvalctl_changes"


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (per schema, so tests don't mix)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _configure(conn: Any) -> None:
    """Per-connection setup: numeric results (AVG, SUM of integers) load as float, as in
    SQLite, so figures serialise as JSON numbers rather than Decimal strings."""
    from psycopg.types.numeric import FloatLoader

    conn.adapters.register_loader("numeric", FloatLoader)


class _PipelinedCursor:
    """A cursor in pipeline mode whose `rowcount` is always the real one.

    In pipeline mode results arrive only at a sync, so a bare `rowcount` right after an
    UPDATE would read -1; the shared SQL relies on it (compare-and-set outcomes), so reading
    it syncs first. Fetches sync by themselves.
    """

    def __init__(self, cur: Any, pipe: Any) -> None:
        self._cur = cur
        self._pipe = pipe

    def execute(self, sql: Any, params: Any = None) -> _PipelinedCursor:
        self._cur.execute(sql, params)
        return self

    @property
    def rowcount(self) -> int:
        self._pipe.sync()
        return self._cur.rowcount

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur)


class PostgresStore(SQLStore):
    dialect = "postgresql"

    def __init__(self, url: str, *, migrate: bool = True, require_schema: bool = True) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = redact(url)
        self._conninfo, self._pool_settings = split_url(url)
        self._pipeline = bool(self._pool_settings["pipeline"])
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._returned: dict[int, float] = {}  # id(connection) -> when it was last returned
        self._local = threading.local()  # this thread's open plain transaction (_write)
        self.tally = CounterBuffer()
        # One direct connection first: it fails fast with the real reason (a pool would
        # retry in the background and only report a timeout), and it runs the migrations.
        with self._probe() as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                path = conn.execute("SHOW search_path").fetchone()[0]
                raise Unavailable(f"PostgreSQL database at {self.url} has no usable schema: "
                                  f"none of search_path ({path}) exists (create it with "
                                  "CREATE SCHEMA, or fix the URL's options)")
            self.schema = schema
            self._audit_key = _lock_key("approvalctl-audit", schema)
            self._migrate_key = _lock_key("approvalctl-migrate", schema)
            if migrate:
                self._migrate(conn)
            elif require_schema and not migrations.applied(conn, self.dialect):
                raise Unavailable(f"PostgreSQL database at {self.url} has no approvalctl "
                                  "schema; run `approvalctl migrate` against it first")

    # ---- connections
    @contextmanager
    def _probe(self) -> Iterator[Any]:
        try:
            conn = self._psycopg.connect(self._conninfo, autocommit=True)
        except self._psycopg.Error as exc:
            raise Unavailable(describe(self.url, exc)) from None
        try:
            _configure(conn)
            yield conn
        except self._psycopg.Error as exc:
            raise Unavailable(describe(self.url, exc)) from None
        finally:
            conn.close()

    def listen_changes(self) -> Any:
        """A new autocommit connection LISTENing on CHANGES_CHANNEL (its notifications'
        payload is the schema of the change), for one listener thread per process; the
        caller closes it. Named `approvalctl-listen` in pg_stat_activity. Raises
        Unavailable when the server cannot be reached."""
        try:
            conn = self._psycopg.connect(self._conninfo, autocommit=True,
                                         application_name="approvalctl-listen")
            conn.execute("LISTEN " + CHANGES_CHANNEL)
        except self._psycopg.Error as exc:
            raise Unavailable(describe(self.url, exc)) from None
        return conn

    def _get_pool(self) -> Any:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    s = self._pool_settings
                    self._pool = ConnectionPool(
                        self._conninfo, min_size=int(s["pool_min_size"]),
                        max_size=int(s["pool_max_size"]), timeout=s["pool_timeout"],
                        kwargs={"autocommit": True},
                        check=self._check_if_idle, reset=self._stamp,
                        configure=_configure, name="approvalctl", open=True,
                        reconnect_timeout=RECONNECT_SECONDS)
        return self._pool

    def _stamp(self, conn: Any) -> None:
        """Called as a connection goes back to the pool: remember when it was last used."""
        self._returned[id(conn)] = time.monotonic()

    def _check_if_idle(self, conn: Any) -> None:
        """Before lending a connection that sat idle, make one cheap round trip: after a
        server restart the dead ones are replaced instead of failing a request. Busy
        connections skip it (a check per query would cost a round trip each)."""
        if time.monotonic() - self._returned.get(id(conn), 0.0) > IDLE_CHECK_SECONDS:
            from psycopg_pool import ConnectionPool

            ConnectionPool.check_connection(conn)

    def _unavailable(self, exc: BaseException) -> Unavailable:
        from psycopg_pool import PoolTimeout

        if isinstance(exc, PoolTimeout):
            # The pool only knows it waited; ask the server directly for the real reason.
            try:
                self._psycopg.connect(self._conninfo, autocommit=True,
                                      connect_timeout=2).close()
            except self._psycopg.Error as probe:
                return Unavailable(describe(self.url, probe))
            return Unavailable(f"PostgreSQL at {self.url} is busy: no free connection within "
                               f"{self._pool_settings['pool_timeout']:g}s (raise pool_max_size "
                               "or pool_timeout in the URL)")
        if getattr(exc, "sqlstate", None) == "23505":
            return _UniqueViolation(describe(self.url, exc))
        return Unavailable(describe(self.url, exc))

    @contextmanager
    def _read(self) -> Iterator[Any]:
        uow = self._uow
        tx = (uow.connection, uow.pipe) if uow is not None else getattr(self._local, "tx", None)
        try:
            if tx is not None:  # inside an open transaction: its connection
                try:
                    with self._tx_cursor(*tx) as cur:
                        yield cur
                except self._psycopg.Error:
                    self._spoil()  # PostgreSQL has aborted the whole transaction
                    raise
                return
            with self._get_pool().connection() as conn, conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """A read-only REPEATABLE READ transaction: one snapshot for every query in it."""
        try:
            with self._get_pool().connection() as conn, conn.transaction(), \
                    conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cur
        except self._psycopg.Error as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def _tx_cursor(self, conn: Any, pipe: Any) -> Iterator[Any]:
        with conn.cursor() as cur:
            yield cur if pipe is None else _PipelinedCursor(cur, pipe)

    @contextmanager
    def _write(self, *, pipeline: bool | None = None) -> Iterator[Any]:
        """One transaction: committed when the block ends, rolled back if it raises. On a
        store bound to a unit of work it is part of the unit's transaction (see
        SQLStore.unit_of_work).

        With `pipeline=true` in the URL, statements are pipelined: each is sent without
        waiting for the one before, and the client waits only where it needs a result (a
        fetch, a rowcount) and at COMMIT — a change with its audit row, counters and outbox
        rows costs about three round trips instead of nine, most of them inside the audit
        lock. That pays when the database is across a network; on a local socket psycopg's
        pipeline bookkeeping costs more CPU per change than the round trips it saves
        (docs/benchmarks.md), hence off by default. An error anywhere still rolls everything back.

        Every transaction commits with the server's `synchronous_commit` (on by default):
        COMMIT returns only once the change is durable, and only then is anyone told it
        happened (DESIGN.md §10). Turning it off for a transaction would make its rows
        visible to other sessions (long-polls) before the WAL flush, so a crash could undo a
        decision an agent had already acted on.
        """
        uow = self._uow
        if uow is not None:
            # Pipelined, a statement's error surfaces only at the next sync: sync at the end
            # of each change, so a failing one spoils the unit here, not at its COMMIT.
            try:
                with self._tx_cursor(uow.connection, uow.pipe) as cur:
                    yield from self._in_unit(uow, cur,
                                             None if uow.pipe is None else uow.pipe.sync)
            except self._psycopg.Error as exc:
                raise self._unavailable(exc) from None
            return
        with self._transaction(pipeline=pipeline) as (conn, cur, pipe):
            self._local.tx = (conn, pipe)  # reads inside the block use this transaction
            try:
                yield cur
            finally:
                self._local.tx = None

    @contextmanager
    def _transaction(self, *, pipeline: bool | None = None) -> Iterator[tuple[Any, Any, Any]]:
        """(connection, cursor, pipeline or None) of one transaction on a pooled
        connection, pipelined as the URL says (see `_write`)."""
        try:
            with self._get_pool().connection() as conn:
                if self._pipeline if pipeline is None else pipeline:
                    with conn.pipeline() as pipe, conn.transaction(), conn.cursor() as cur:
                        yield conn, _PipelinedCursor(cur, pipe), pipe
                else:
                    with conn.transaction(), conn.cursor() as cur:
                        yield conn, cur, None
        except self._psycopg.Error as exc:
            raise self._unavailable(exc) from None

    server_clock = True
    _NOW = ("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")

    def _db_now(self, cur: Any, at: str) -> str:
        # Every host sharing the database agrees on this clock, whatever its own says.
        return cur.execute(self._NOW).fetchone()[0]

    def db_now(self) -> str | None:
        with self._read() as cur:
            return self._db_now(cur, "")

    def _ms_since_created(self) -> str:
        return ("GREATEST(0, ROUND(EXTRACT(EPOCH FROM (?::timestamptz - "
                "created_at::timestamptz)) * 1000))::bigint")

    def _sql(self, sql: str) -> str:
        # Shared SQL is written with `?`; none of it contains a literal `?` or `%`.
        return sql.replace("?", "%s")

    def _many(self, cur: Any, sql: str, rows: list) -> None:
        # Most changes write one audit row and one or two counters: a plain execute costs
        # half of psycopg's executemany machinery.
        if len(rows) == 1:
            cur.execute(self._sql(sql), rows[0])
        else:
            super()._many(cur, sql, rows)

    def _lock_audit(self, cur: Any) -> None:
        # Appends to the hash chain are serialised by this lock, held until commit and so
        # through the commit's WAL flush (synchronous_commit stays on: see `_write`). What
        # keeps that cheap is approvalctl's own group commit (writepath.py), which puts many
        # changes in one transaction and so under one flush.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._audit_key,))

    def _lock_user(self, cur: Any, user_id: str) -> None:
        # Per user, not the audit lock: creates of different users do not wait on each
        # other. Two groups locking two users in opposite orders deadlock; PostgreSQL breaks
        # that by failing one, whose group the database thread reruns change by change.
        cur.execute("SELECT pg_advisory_xact_lock(%s)",
                    (_lock_key("approvalctl-pending", self.schema, user_id),))

    def _skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def _bump(self, cur: Any, rows: list) -> None:
        # Upsert counter rows in one global order, so two transactions bumping the same
        # series never wait on each other in a cycle (a deadlock).
        super()._bump(cur, sorted(rows))

    def _insert_change_rows(self, cur: Any, audit_rows: list[tuple], counter_rows: list,
                            outbox_rows: list[tuple]) -> None:
        """The audit rows, counters and outbox rows of a change in ONE statement.

        These run while the audit-chain lock is held, so every round trip here is time no
        other writer can append: three statements (each with psycopg's own overhead plus a
        trip to the server) become one, with data-modifying CTEs. They touch different tables and
        need not see each other's rows, so the shared snapshot of one statement is fine;
        the statement is part of the change's transaction like the three were. Big batches
        (a sweep of thousands) keep the plain statements, far from the parameter limit.
        """
        if len(audit_rows) + len(counter_rows) + len(outbox_rows) > CTE_MAX_ROWS:
            super()._insert_change_rows(cur, audit_rows, counter_rows, outbox_rows)
            if audit_rows:
                cur.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, self.schema))
            return
        parts: list[str] = []
        params: list[Any] = []

        def values(rows: list[tuple], width: int) -> str:
            for row in rows:
                params.extend(row)
            return ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(rows))

        if audit_rows:
            parts.append("a AS (INSERT INTO audit_log (" + ", ".join(AUDIT_COLUMNS)
                         + ") VALUES " + values(audit_rows, len(AUDIT_COLUMNS)) + ")")
        if counter_rows:  # one global order, as in _bump (merged by the caller)
            parts.append("c AS (" + BUMP_SQL.format(values=values(sorted(counter_rows), 3))
                         + ")")
        if outbox_rows:
            parts.append("o AS (INSERT INTO outbox (" + ", ".join(OUTBOX_INSERT_COLUMNS)
                         + ") VALUES " + values(outbox_rows, len(OUTBOX_INSERT_COLUMNS))
                         + ")")
        if parts:
            # NOTIFY rides in the same statement and transaction: PostgreSQL delivers it at
            # COMMIT, never before the change is durable, and never for a rollback. The
            # payload is the schema, so listeners of other schemas skip it.
            notify = "pg_notify(%s, %s)" if audit_rows else "1"
            if audit_rows:
                params.extend((CHANGES_CHANNEL, self.schema))
            cur.execute("WITH " + ", ".join(parts) + " SELECT " + notify, params)

    def create(self, req: ApprovalRequest, change: Change | list[Change],
               idempotency: tuple[str, str, str] | None = None,
               max_pending: int | None = None) -> ApprovalRequest | dict[str, Any]:
        try:
            return super().create(req, change, idempotency, max_pending)
        except _UniqueViolation:
            # Under SQLite's single writer the second creator sees the first one's key; here
            # it loses the race on the primary key instead, and replays the winner's answer.
            # In a unit of work the transaction is aborted and cannot read it: the write
            # path runs the call again in a fresh one, which finds the winner's row.
            if idempotency and self._uow is None:
                found = self.get_idempotent(idempotency[0], idempotency[1])
                if found:
                    return found
            raise

    # ---- bulk copy
    def insert_rows(self, table: str, rows: list[tuple]) -> None:
        """COPY is several times faster than INSERT for the millions of rows of a migration."""
        if not rows:
            return
        columns = TABLES[table][1]
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self._write(pipeline=False) as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def after_bulk_load(self) -> None:
        """Rows copied in with their own ids leave the sequences behind: move them past."""
        with self._write(pipeline=False) as cur:
            for table, column in (("audit_log", "seq"), ("outbox", "id")):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                            f"COALESCE(MAX({column}), 0) + 1, false) FROM {table}")

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # ---- migrations
    def _migrate(self, conn: Any) -> list[str]:
        @contextmanager
        def read() -> Iterator[Any]:
            yield conn

        @contextmanager
        def transaction() -> Iterator[Any]:
            with conn.transaction():
                yield conn

        def lock(cur: Any) -> None:
            # Whoever holds the lock migrates; a racing opener waits, then sees the row.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._migrate_key,))

        return migrations.migrate(self.dialect, read, transaction, lock)

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied. Cheap when up to date."""
        with self._probe() as conn:
            return self._migrate(conn)

    def migration_state(self) -> list[dict[str, str | None]]:
        with self._probe() as conn:
            return migrations.state(conn, self.dialect)
