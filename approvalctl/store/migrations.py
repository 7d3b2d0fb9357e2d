"""The one migration runner, for both backends, with one bookkeeping table.

`store/schema.py` holds what to run (`MIGRATIONS`); this module holds how: each pending
migration runs in its own transaction together with its row in `approvalctl_migrations`
(`migration_set`, `name`, `applied_at`), so a failed migration leaves no trace and stays
pending. The caller's `transaction()` takes the database's write lock first (SQLite
`BEGIN IMMEDIATE`; PostgreSQL a transaction plus `lock()`, an advisory lock), and the runner
checks the bookkeeping row again under it, so two processes opening a new database at once
apply each migration exactly once.

A migration's body is a list whose entries are SQL statements (spelled for both dialects,
see `schema.statements`) or callables `step(cursor, dialect)` for what SQL cannot say.

Databases made before this runner: PostgreSQL already kept `approvalctl_migrations` in this
layout. SQLite kept its rows in sqlite-utils' `_sqlite_migrations` table (columns `id`,
`migration_set`, `name`, `applied_at`); that table is read as the record until the next
migration is applied, which copies our rows over and drops the table if nothing else is
left in it. Opening an up-to-date database writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..models import to_iso, utcnow
from .schema import MIGRATION_SET, MIGRATIONS, statements

TABLE = "approvalctl_migrations"
#: The SQLite bookkeeping table of sqlite-utils' `Migrations`, used before this runner.
LEGACY_SQLITE_TABLE = "_sqlite_migrations"
_PARAM = {"sqlite": "?", "postgresql": "%s"}


def _exists(cur: Any, dialect: str, table: str) -> bool:
    if dialect == "sqlite":
        return cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (table,)).fetchone() is not None
    return cur.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None


def applied(cur: Any, dialect: str) -> list[tuple[str, str]]:
    """(name, applied_at) of every migration recorded as applied, oldest first."""
    p = _PARAM[dialect]
    for table in (TABLE, LEGACY_SQLITE_TABLE if dialect == "sqlite" else None):
        if table and _exists(cur, dialect, table):
            return [tuple(row) for row in cur.execute(
                f"SELECT name, applied_at FROM {table} WHERE migration_set = {p} "
                "ORDER BY applied_at, name", (MIGRATION_SET,)).fetchall()]
    return []


def state(cur: Any, dialect: str) -> list[dict[str, str | None]]:
    """Every known migration with the time it was applied (None: pending)."""
    done = dict(applied(cur, dialect))
    return [{"name": name, "applied_at": done.get(name)} for name, _ in MIGRATIONS]


def pending_names(cur: Any, dialect: str) -> list[str]:
    done = {name for name, _ in applied(cur, dialect)}
    return [name for name, _ in MIGRATIONS if name not in done]


def _ensure_table(cur: Any, dialect: str) -> None:
    # The layout PostgreSQL databases have always had, so theirs need no conversion.
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "migration_set TEXT NOT NULL, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL, PRIMARY KEY (migration_set, name))")
    if dialect == "sqlite" and _exists(cur, dialect, LEGACY_SQLITE_TABLE):
        cur.execute(f"INSERT OR IGNORE INTO {TABLE} (migration_set, name, applied_at) "
                    f"SELECT migration_set, name, applied_at FROM {LEGACY_SQLITE_TABLE} "
                    "WHERE migration_set = ?", (MIGRATION_SET,))
        cur.execute(f"DELETE FROM {LEGACY_SQLITE_TABLE} WHERE migration_set = ?",
                    (MIGRATION_SET,))
        if cur.execute(f"SELECT 1 FROM {LEGACY_SQLITE_TABLE} LIMIT 1").fetchone() is None:
            cur.execute(f"DROP TABLE {LEGACY_SQLITE_TABLE}")


def migrate(dialect: str, read: Callable[[], AbstractContextManager[Any]],
            transaction: Callable[[], AbstractContextManager[Any]],
            lock: Callable[[Any], None] | None = None) -> list[str]:
    """Apply the pending migrations; returns the names applied (none: nothing written).

    `read()` yields a cursor for the cheap up-to-date check; `transaction()` yields a cursor
    inside a write transaction that commits on success and rolls back on error; `lock(cur)`,
    if given, is called first in each transaction to serialise racing migrators.
    """
    with read() as cur:
        if not pending_names(cur, dialect):
            return []
    done: list[str] = []
    p = _PARAM[dialect]
    for name, body in MIGRATIONS:
        with transaction() as cur:
            if lock is not None:
                lock(cur)
            _ensure_table(cur, dialect)
            if cur.execute(f"SELECT 1 FROM {TABLE} WHERE migration_set = {p} AND name = {p}",
                           (MIGRATION_SET, name)).fetchone():
                continue  # applied earlier, or by a racing process while we waited
            for step in _steps(dialect, body):
                if callable(step):
                    step(cur, dialect)
                else:
                    cur.execute(step)
            cur.execute(f"INSERT INTO {TABLE} (migration_set, name, applied_at) "
                        f"VALUES ({p}, {p}, {p})", (MIGRATION_SET, name, to_iso(utcnow())))
            done.append(name)
    return done


def _steps(dialect: str, body: Any) -> Iterator[Any]:
    if callable(body):
        yield body
        return
    yield from statements(dialect, body)
