"""SQLite mechanics: schema, pragmas, permissions, migrations."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat

import pytest

from approvalctl.store import open_store
from approvalctl.store.schema import MIGRATIONS
from approvalctl.store.sqlite import SQLiteStore


@pytest.fixture
def backend_kind() -> str:
    """SQLite mechanics only; tests/test_store_postgres.py checks PostgreSQL's own."""
    return "sqlite"


EXPECTED_TABLES = {"approvalctl_migrations", "requests", "audit_log", "metric_counters",
                   "api_keys", "idempotency_keys", "outbox"}


def test_fresh_database_gets_the_whole_schema(db_path) -> None:
    store = SQLiteStore(db_path)
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= EXPECTED_TABLES
    cols = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
    assert cols == ["id", "tool_name", "arguments", "reason", "risk", "user_id", "status",
                    "created_at", "expires_at", "decided_at", "decided_by", "decision_note",
                    "response_ms", "digest", "use_by", "consumed_at"]
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"requests_status_id", "requests_status_expiry", "requests_created_stats"} <= indexes
    assert [m["name"] for m in store.migration_state()] == [n for n, _ in MIGRATIONS]
    assert all(m["applied_at"] for m in store.migration_state())


def test_file_is_private_and_in_wal_mode(tmp_path) -> None:
    path = tmp_path / "deep" / "dir" / "a.db"
    store = open_store(str(path))
    store.get_status("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # FULL (2): a commit is on disk before it returns, so an acknowledged decision survives
    # power loss (DESIGN.md §10)
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2


def test_reopening_is_a_no_op(db_path) -> None:
    SQLiteStore(db_path).close()
    assert SQLiteStore(db_path).migrate() == []


def _open(path: str) -> None:
    SQLiteStore(path).close()


def test_concurrent_first_opens_migrate_once(db_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open, args=(str(db_path),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    conn = sqlite3.connect(db_path)
    names = [r[0] for r in conn.execute("SELECT name FROM approvalctl_migrations")]
    assert names == [n for n, _ in MIGRATIONS]


def test_query_plans_use_indexes(store) -> None:
    conn = sqlite3.connect(store.path)

    def plan(sql: str, *params) -> str:
        return " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

    assert "requests_status_id" in plan(
        "SELECT * FROM requests WHERE status = ? ORDER BY id LIMIT 50", "pending")
    sweep = plan("SELECT id FROM requests WHERE status = ? AND expires_at <= ? "
                 "ORDER BY expires_at LIMIT 10", "pending", "x")
    assert "requests_status_expiry" in sweep and "TEMP B-TREE" not in sweep
    assert "PRIMARY KEY" in plan("SELECT * FROM requests WHERE id = ?", "x") or \
        "sqlite_autoindex_requests_1" in plan("SELECT * FROM requests WHERE id = ?", "x")
    assert "COVERING INDEX requests_created_stats" in plan(
        "SELECT status, COUNT(*) FROM requests" + store._use_index("requests_created_stats")
        + " WHERE created_at >= ? GROUP BY status", "x")


def test_a_directory_is_not_a_database(tmp_path) -> None:
    from approvalctl.errors import Unavailable

    with pytest.raises(Unavailable, match="directory"):
        open_store(str(tmp_path))
