"""The embedded default: one SQLite file, opened with WAL and migrated on open.

Everything uses the standard library's sqlite3 directly (importing sqlite-utils would add to
every start-up); `store/migrations.py` applies the schema.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..counters import CounterBuffer
from ..errors import Unavailable
from ..models import Change
from . import migrations
from .sql import SQLStore

MIGRATIONS_TABLE = migrations.TABLE
_RULES = object()  # the key of the policy rules in a unit of work's memo
BRIEF_BUSY_MS = 200  # how long a read's best-effort write waits for the lock


def _fail(path: Path, exc: sqlite3.Error) -> Unavailable:
    """One line naming what went wrong with the file and what to check."""
    msg = str(exc)
    low = msg.lower()
    if "not a database" in low or "malformed" in low:
        return Unavailable(f"{path} is not an approvalctl database or is damaged ({msg}): "
                           "check the --db path, or restore the file from a backup")
    if "full" in low or ("disk i/o" in low and _no_space(path)):
        return Unavailable(f"database {path}: the disk is full ({msg}): free space on the "
                           "file system that holds it")
    if "readonly" in low or "read-only" in low:
        return Unavailable(f"database {path} is read-only ({msg}): check the permissions of "
                           "the file, its -wal/-shm files and its folder, and the mount")
    if "unable to open" in low:
        return Unavailable(f"cannot open database {path} ({msg}): check that its folder "
                           "exists and is readable and writable by this user")
    if "locked" in low or "busy" in low:
        return Unavailable(f"database {path} is locked by another process ({msg}): check for "
                           "a process holding a long write transaction on it")
    if "disk i/o" in low:
        return Unavailable(f"I/O error on database {path} ({msg}): check the disk and the "
                           "file system")
    return Unavailable(f"database error on {path}: {msg}")


def _no_space(path: Path) -> bool:
    """Whether the file system holding `path` is full (SQLite reports a WAL reader that
    cannot create its -shm file as a plain I/O error)."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class SQLiteStore(SQLStore):
    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 10000,
                 migrate: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.url = str(self.path)
        self._busy_ms = busy_timeout_ms
        self._local = threading.local()  # this thread's connection
        self.tally = CounterBuffer()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        if self.path.is_dir():
            raise Unavailable(f"cannot open database {self.path}: it is a directory")
        if not self.path.exists():
            self._create_file()
        elif not os.access(self.path, os.R_OK):
            raise Unavailable(f"cannot open database {self.path}: permission denied (check "
                              "the file's owner and mode)")
        # A file this user may not write is opened read-only, so reads still work from it
        # and a write fails at once with "read-only" instead of on some later lock.
        self._read_only = not os.access(self.path, os.W_OK)
        if migrate:
            self.migrate()

    def _create_file(self) -> None:
        """Create the file 0600 (and its folder 0700) before SQLite touches it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise Unavailable(f"cannot create database {self.path}: {exc.strerror}") from None

    # ---- connections: one per thread, autocommit, explicit transactions
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                target: str | Path = self.path
                if self._read_only:
                    target = f"file:{quote(str(self.path))}?mode=ro"
                    if _on_read_only_mount(self.path):
                        # Nothing can change the file there, and SQLite could not create the
                        # -shm file WAL readers need: read it as an immutable file.
                        target += "&immutable=1"
                conn = sqlite3.connect(target, isolation_level=None, timeout=self._busy_ms
                                       / 1000, check_same_thread=False, uri=self._read_only)
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                mode = "wal" if self._read_only else self._enable_wal(conn)
                if mode != "wal":
                    raise sqlite3.OperationalError(f"could not enable WAL (got {mode})")
                # FULL: a commit is fsynced before it returns, so an acknowledged decision
                # survives power loss (NORMAL in WAL mode may lose the last commits); the
                # server's group commit (writepath.py) spreads the fsync over many changes.
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise _fail(self.path, exc) from None
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch a connection's file to WAL; returns the journal mode it got.

        On a brand-new file opened by several processes at once, the switch can answer
        SQLITE_BUSY without consulting the busy handler (it needs an exclusive lock that a
        waiting reader could otherwise deadlock on), so it is retried here for up to the
        busy timeout.
        """
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        try:
            cur = self._conn().cursor()
            yield cur
        except sqlite3.Error as exc:
            self._spoil()  # SQLite rolls back on some errors (IOERR, FULL, NOMEM)
            raise _fail(self.path, exc) from None

    def change_marker(self) -> int:
        """PRAGMA data_version of this thread's connection: it changes when any other
        connection (another thread, process or the CLI) commits, and costs no page read."""
        with self._read() as cur:
            return cur.execute("PRAGMA data_version").fetchone()[0]

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Cursor]:
        """A deferred read transaction: every query in it sees one WAL snapshot, and it
        takes no write lock."""
        with self._read() as cur:
            cur.execute("BEGIN")
            try:
                yield cur
            finally:
                cur.execute("ROLLBACK")

    @contextmanager
    def _transaction(self) -> Iterator[tuple[sqlite3.Connection, sqlite3.Cursor, None]]:
        """BEGIN IMMEDIATE: take the write lock up front, so transactions never deadlock."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _fail(self.path, exc) from None
        try:
            yield conn, conn.cursor(), None
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _fail(self.path, exc) from None
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _fail(self.path, exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """A transaction of its own (`_transaction`), or, on a store bound to a unit of
        work, part of the unit's (see SQLStore.unit_of_work)."""
        uow = self._uow
        if uow is not None:
            try:
                yield from self._in_unit(uow, uow.connection.cursor())
            except sqlite3.Error as exc:
                raise _fail(self.path, exc) from None
            return
        with self._transaction() as (_, cur, _):
            yield cur

    @contextmanager
    def brief_writes(self) -> Iterator[None]:
        """Writes on this thread meanwhile wait for the lock a moment, not busy_timeout:
        for the best-effort writes a read makes (recording an expiry), which must never
        hold the read up behind another process's transaction."""
        conn = self._conn()
        conn.execute(f"PRAGMA busy_timeout = {min(self._busy_ms, BRIEF_BUSY_MS)}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    # ---- policy rules, read once per change of them
    def list_rules(self) -> list[dict[str, Any]]:
        """The policy rules, re-read only when they may have changed (every create
        evaluates them). Kept per thread (per connection) and trusted while `PRAGMA
        data_version` is unchanged — it moves when any other connection, thread or
        process commits, so a rule change committed before this call is always seen —
        and this thread's own rule writes drop it. Inside a unit of work (the server's
        write transaction, which nobody else can commit during) rules are read once per
        unit and kept in its memo, so what was read there is never reused after it (it
        may be rolled back); inside any other open transaction they are always read.
        Callers must not modify the rules returned."""
        uow = self._uow
        if uow is not None:
            rules = uow.memo.get(_RULES)
            if rules is None:
                rules = uow.memo[_RULES] = super().list_rules()
            return list(rules)
        cached = getattr(self._local, "rules", None)
        if self._conn().in_transaction:  # may hold uncommitted rule changes: not cached
            return super().list_rules()
        marker = self.change_marker()  # before the read: a later commit moves it again
        if cached is None or cached[0] != marker:
            cached = self._local.rules = (marker, super().list_rules())
        return list(cached[1])

    def change_rules(self, edit: Callable[[list[dict[str, Any]]],
                                          tuple[list[dict[str, Any]], Change]]) -> None:
        if self._uow is not None:
            self._uow.memo.pop(_RULES, None)
        try:
            super().change_rules(edit)
        finally:  # read again after the change (or its failure), never the old copy
            self._local.rules = None

    def insert_rows(self, table: str, rows: list[tuple]) -> None:
        try:
            super().insert_rows(table, rows)
        finally:
            self._local.rules = None

    def before_bulk_load(self) -> None:
        # Index inserts in key order of a secondary index land on random pages; with the
        # default 2 MB page cache a million-row copy would spend its time re-reading them.
        self._conn().execute("PRAGMA cache_size = -262144")  # 256 MB, this connection only

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def _use_index(self, index: str) -> str:
        # Without ANALYZE statistics the planner prefers the status index for GROUP BY
        # status and then reads every row; the covering index answers from the index alone.
        return f" INDEXED BY {index}"

    # ---- migrations
    def migration_state(self) -> list[dict[str, str | None]]:
        with self._read() as cur:
            return migrations.state(cur, self.dialect)

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied. Cheap when up to date."""
        # BEGIN IMMEDIATE is the lock: a racing process waits, then finds nothing to do.
        return migrations.migrate(self.dialect, self._read, self._write)
