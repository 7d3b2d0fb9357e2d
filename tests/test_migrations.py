"""One migration runner, one bookkeeping table, and databases made by earlier versions.

Before store/migrations.py, SQLite databases were migrated by sqlite-utils' `Migrations`
(records in `_sqlite_migrations`) and PostgreSQL ones by a loop of their own (records in
`approvalctl_migrations`). These tests build databases exactly that way, then open them
with today's code and check that the data is intact, nothing is applied twice, and the
record ends up in the one table.
"""

from __future__ import annotations

import sqlite3

import pytest
from conftest import RawDB

from approvalctl.config import Settings
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import migrations, open_store
from approvalctl.store.schema import MIGRATION_SET, MIGRATIONS, statements

NAMES = [name for name, _ in MIGRATIONS]


def _old_sqlite(path: str, upto: int) -> None:
    """A SQLite file migrated by sqlite-utils' Migrations, as versions before 0.2 did."""
    from sqlite_utils import Database, Migrations

    old = Migrations(MIGRATION_SET)
    for name, body in MIGRATIONS[:upto]:
        def run(db: Database, body: list[str] = body) -> None:
            for stmt in statements("sqlite", body):
                stmt(db.conn, "sqlite") if callable(stmt) else db.execute(stmt)
        old(name=name)(run)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    old.apply(Database(conn))
    conn.close()


def _old_postgres(url: str, upto: int) -> None:
    """A PostgreSQL schema migrated by the loop versions before 0.2 had (one table, no lock
    needed here: nobody races this test)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name, body in MIGRATIONS[:upto]:
            with conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS approvalctl_migrations ("
                             "migration_set TEXT NOT NULL, name TEXT NOT NULL, "
                             "applied_at TEXT NOT NULL, PRIMARY KEY (migration_set, name))")
                for stmt in statements("postgresql", body):
                    stmt(conn, "postgresql") if callable(stmt) else conn.execute(stmt)
                conn.execute("INSERT INTO approvalctl_migrations VALUES (%s, %s, %s)",
                             (MIGRATION_SET, name, "2026-01-01T00:00:00.000Z"))


def _build_old(kind: str, url: str, upto: int) -> None:
    (_old_sqlite if kind == "sqlite" else _old_postgres)(url, upto)


def _tables(raw: RawDB) -> set[str]:
    if raw.postgres:
        rows = raw.execute("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = current_schema()")
    else:
        rows = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_old_up_to_date_database_opens_without_a_write(new_db, kind) -> None:
    url = new_db(kind)
    if kind == "sqlite":
        import os

        os.makedirs(os.path.dirname(url))
    _build_old(kind, url, len(MIGRATIONS))
    store = open_store(url)
    try:
        assert [m["name"] for m in store.migration_state()] == NAMES
        assert all(m["applied_at"] for m in store.migration_state())
        assert store.migrate() == []
        service = ApprovalService(store, Settings())
        req = service.create(Principal("bot", "user"), "deploy", {"to": "prod"})
        assert service.get(Principal("op", "operator"), req.id).status == "pending"
    finally:
        store.close()
    raw = RawDB(url)
    try:
        if kind == "sqlite":  # read where it was, untouched: nothing was pending
            assert "_sqlite_migrations" in _tables(raw)
            assert "approvalctl_migrations" not in _tables(raw)
    finally:
        raw.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_old_database_upgrades_once_into_the_one_table(new_db, kind, monkeypatch,
                                                          request) -> None:
    url = new_db(kind)
    if kind == "sqlite":
        import os

        os.makedirs(os.path.dirname(url))
    _build_old(kind, url, len(MIGRATIONS) - 1)  # one migration behind
    raw = RawDB(url)
    request.addfinalizer(raw.close)
    raw.execute("INSERT INTO metric_counters (name, labels, value) VALUES (?, ?, ?)",
                ("kept", "{}", 7))
    seen: list[str] = []

    def python_step(cur, dialect: str) -> None:
        seen.append(dialect)
        cur.execute("UPDATE metric_counters SET value = value + 1 WHERE name = 'kept'")

    later = [*MIGRATIONS, ("9999_test_python_step", [python_step])]
    monkeypatch.setattr(migrations, "MIGRATIONS", later)
    store = open_store(url)
    try:
        assert [m["name"] for m in store.migration_state()] == [*NAMES, "9999_test_python_step"]
        assert all(m["applied_at"] for m in store.migration_state())
        assert store.migrate() == []
    finally:
        store.close()
    assert seen == ["sqlite" if kind == "sqlite" else "postgresql"]
    rows = raw.execute("SELECT name FROM approvalctl_migrations WHERE migration_set = ? "
                       "ORDER BY name", (MIGRATION_SET,)).fetchall()
    assert [r[0] for r in rows] == [*NAMES, "9999_test_python_step"]
    assert raw.execute("SELECT value FROM metric_counters WHERE name = 'kept'"
                       ).fetchone()[0] == 8
    assert "_sqlite_migrations" not in _tables(raw)
    # the last shipped migration really ran (its indexes exist)
    if kind == "sqlite":
        idx = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    else:
        idx = {r[0] for r in raw.execute("SELECT indexname FROM pg_indexes "
                                         "WHERE schemaname = current_schema()")}
    assert "requests_user_all" in idx


def test_a_failing_migration_leaves_no_record_and_stays_pending(new_db, monkeypatch) -> None:
    url = new_db("sqlite")
    open_store(url).close()

    def broken(cur, dialect: str) -> None:
        cur.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("step failed")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, ("9999_broken", [broken])])
    with pytest.raises(RuntimeError):
        open_store(url)
    conn = sqlite3.connect(url)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM approvalctl_migrations WHERE name = ?",
                            ("9999_broken",)).fetchone()[0] == 0
    finally:
        conn.close()


def test_a_legacy_table_shared_with_another_set_is_kept(new_db, monkeypatch) -> None:
    url = new_db("sqlite")
    import os

    os.makedirs(os.path.dirname(url))
    _old_sqlite(url, len(MIGRATIONS) - 1)
    conn = sqlite3.connect(url, isolation_level=None)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('someone-else', 'x', '2026')")
    open_store(url).close()
    try:
        assert conn.execute("SELECT migration_set FROM _sqlite_migrations").fetchall() == \
            [("someone-else",)]
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0011_keeps_the_outbox_rows_and_admits_skipped(new_db, kind, request) -> None:
    """SQLite cannot alter a CHECK constraint: 0011 rebuilds the outbox table. Its rows, ids
    and indexes must come through, and the new status be the only new value allowed."""
    url = new_db(kind)
    if kind == "sqlite":
        import os

        os.makedirs(os.path.dirname(url))
    upto = NAMES.index("0011_reminders")
    _build_old(kind, url, upto)
    raw = RawDB(url)
    request.addfinalizer(raw.close)
    for status in ("pending", "sent", "failed"):
        raw.execute("INSERT INTO outbox (event, channel, request_id, payload, status, "
                    "next_attempt_at, created_at, audit_seq, audit_hash) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ("created", "slack", f"r-{status}", "{}", status,
                     "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z", 7, "h"))
    before = raw.execute("SELECT id, status, audit_seq FROM outbox ORDER BY id").fetchall()
    store = open_store(url)
    try:
        assert store.migration_state()[upto]["applied_at"]
        assert [(r["id"], r["status"], r["audit_seq"])
                for r in reversed(store.list_outbox())] == [tuple(r) for r in before]
    finally:
        store.close()
    raw.execute("UPDATE outbox SET status = 'skipped' WHERE status = 'pending'")
    with pytest.raises(raw.error):
        raw.execute("UPDATE outbox SET status = 'lost' WHERE status = 'sent'")
    raw.execute("INSERT INTO outbox (event, channel, request_id, payload, next_attempt_at, "
                "created_at) VALUES ('created', 'slack', 'r-new', '{}', 'x', 'x')")
    assert raw.execute("SELECT MAX(id) FROM outbox").fetchone()[0] == before[-1][0] + 1
    if kind == "sqlite":
        idx = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    else:
        idx = {r[0] for r in raw.execute("SELECT indexname FROM pg_indexes "
                                         "WHERE schemaname = current_schema()")}
    assert {"outbox_due", "outbox_request"} <= idx
