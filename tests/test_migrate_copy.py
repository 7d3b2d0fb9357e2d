"""`approvalctl migrate --to`: copy everything to another database of either kind and prove it.

Every direction is covered: the source is `db_url` (SQLite and PostgreSQL) and the target is
each kind in turn, so SQLite -> PostgreSQL (moving up) and PostgreSQL -> SQLite (rolling
back) are tested the same way, through the real command in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bulk_create, env_for

from approvalctl.config import Settings
from approvalctl.copy import table_checksum
from approvalctl.models import Principal
from approvalctl.service import ApprovalService
from approvalctl.store import open_store
from approvalctl.store.sql import TABLES

NOTIFY = {"slack": {"webhook_url": "https://hooks.slack.com/services/T/B/X",
                    "events": ["created", "decided", "expired"]}}


def cli(db: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "approvalctl", *args], env=env_for(db),
                          capture_output=True, text=True, timeout=timeout)


def fill(store) -> dict[str, str]:
    """A source with rows in every table: every status, keys, idempotency, outbox, counters."""
    service = ApprovalService(store, Settings(db="", notifications=NOTIFY))
    agent, op = Principal("deploy-bot", "user"), Principal("olivia", "operator")
    admin = Principal("root-admin", "admin")
    ids = {}
    for status in ("pending", "approved", "rejected", "cancelled"):
        req = service.create(agent, "deploy", {"env": "prod", "note": "ünïcödé ✓"},
                             reason=f"to be {status}", risk="high")
        ids[status] = req.id
    service.decide(op, ids["approved"], "approve", note="looks fine")
    service.decide(op, ids["rejected"], "reject", note="no")
    service.cancel(agent, ids["cancelled"])
    ids["expired"] = service.create(agent, "rm", ttl_seconds=0.001).id
    service.sweep()
    service.create_key(admin, "ci-bot", "user")
    service.create_key(admin, "old-bot", "viewer")
    service.revoke_key(admin, "old-bot")
    service.create_idempotent(agent, "deploy", {"v": 2}, idempotency_key="retry-1")
    store.flush_counters()
    return ids


def checksums(url: str) -> dict[str, tuple[int, str]]:
    store = open_store(url)
    try:
        out = {}
        for t in TABLES:
            c = table_checksum(store, t)
            out[t] = (c.rows, c.hexdigest())
        return out
    finally:
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target_kind(request) -> str:
    return request.param


def test_copy_everything_and_verify(db_url, store, new_db, target_kind):
    ids = fill(store)
    target = new_db(target_kind)
    result = cli(db_url, "migrate", "--to", target, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["audit"]["ok"] is True
    assert {t["table"] for t in report["tables"]} == set(TABLES)
    for t in report["tables"]:
        assert t["source_rows"] == t["target_rows"] == t["copied"]
        assert t["source_checksum"] == t["target_checksum"]
    assert report["tables"][0]["source_rows"] == 6
    assert "verified" in result.stderr and "audit chain intact" in result.stderr
    assert checksums(target) == checksums(db_url)

    # the copy is a working database: same answers, and new rows get fresh ids
    shown = json.loads(cli(target, "show", ids["approved"], "--json").stdout)
    assert shown["status"] == "approved" and shown["decision_note"] == "looks fine"
    assert shown["arguments"] == {"env": "prod", "note": "ünïcödé ✓"}
    assert cli(target, "audit", "verify").returncode == 0
    copied = open_store(target)
    try:
        before = copied.count_rows("outbox")
        service = ApprovalService(copied, Settings(db="", notifications=NOTIFY))
        service.decide(Principal("olivia", "operator"), ids["pending"], "approve")
        assert copied.count_rows("outbox") == before + 1  # outbox id sequence moved past
        assert service.audit_verify(Principal("a", "admin")).ok
    finally:
        copied.close()


def test_refuses_a_non_empty_target(db_url, store, new_db, target_kind):
    fill(store)
    target = new_db(target_kind)
    other = open_store(target)
    ApprovalService(other).create(Principal("someone", "user"), "unrelated")
    other.close()
    before = checksums(target)
    result = cli(db_url, "migrate", "--to", target)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "is not empty (requests: 1 rows" in result.stderr and "--resume" in result.stderr
    assert checksums(target) == before


def test_dry_run_reports_and_changes_nothing(db_url, store, new_db, target_kind):
    fill(store)
    target = new_db(target_kind)
    result = cli(db_url, "migrate", "--to", target, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["ok"] is None
    rows = {t["table"]: t for t in report["tables"]}
    assert rows["requests"]["source_rows"] == 6 and rows["requests"]["target_rows_before"] == 0
    assert "nothing was changed" in result.stderr
    if target_kind == "sqlite":
        assert not Path(target).exists()
        assert "to be created" in result.stderr
    else:
        import psycopg

        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = "
                                "current_schema()").fetchone()[0] == 0


def test_copy_to_itself_and_bad_arguments_are_refused(db_url, store):
    result = cli(db_url, "migrate", "--to", db_url)
    assert result.returncode == 2 and "is the database being copied" in result.stderr
    result = cli(db_url, "migrate", "--resume")
    assert result.returncode == 2 and "add --to URL" in result.stderr
    result = cli(db_url, "migrate", "--to", "postgresql://postgres@127.0.0.1:1/none")
    assert result.returncode == 6 and "connection refused" in result.stderr


@pytest.mark.slow
def test_kill_9_half_way_then_resume_ends_identical(db_url, store, new_db, backend_kind):
    fill(store)
    bulk_create(store, 8000)
    source_sums = checksums(db_url)
    # across kinds: SQLite -> PostgreSQL (moving up) and PostgreSQL -> SQLite (rolling back)
    target = new_db("postgres" if backend_kind == "sqlite" else "sqlite")
    proc = subprocess.Popen([sys.executable, "-m", "approvalctl", "migrate", "--to", target,
                             "--batch", "250"], env=env_for(db_url), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        line = proc.stderr.readline()  # the first batch has been committed
        assert line.startswith("copying requests: 250/"), line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = checksums(target)
    assert 0 < partial["requests"][0] < source_sums["requests"][0]  # really half-way

    again = cli(db_url, "migrate", "--to", target)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = cli(db_url, "migrate", "--to", target, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] is True and report["ok"] is True
    copied = {t["table"]: t["copied"] for t in report["tables"]}
    assert copied["requests"] == source_sums["requests"][0] - partial["requests"][0]
    assert checksums(target) == source_sums  # identical data, no duplicates
