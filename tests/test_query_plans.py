"""The statements the hot paths really run use indexes: no full scans, no sorts.

Instead of re-typing the SQL, each test records what the service executes (sqlite3's trace
callback, parameters filled in) and asks SQLite for the plan of every statement on the
requests table. `list`, `show`, `approve`, `sweep` and `stats` must stay flat from a
thousand rows to a million (tests/load/bench_core.py measures that).
"""

from __future__ import annotations

import re

import pytest

from approvalctl.config import Settings
from approvalctl.limits import Quotas
from approvalctl.models import Principal
from approvalctl.service import ApprovalService


@pytest.fixture
def backend_kind() -> str:
    """SQLite's planner; tests/test_store_postgres.py asks PostgreSQL's the same questions."""
    return "sqlite"


@pytest.fixture
def traced(service, operator):
    agent = Principal("deploy-bot", "user")
    ids = [service.create(agent, tool, {}).id for tool in ("git_push", "deploy", "git_push")]
    service.decide(operator, ids[0], "approve")
    conn = service.store._conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    yield ids, seen
    conn.set_trace_callback(None)


def _plans(service, seen: list[str]) -> dict[str, str]:
    conn = service.store._conn()
    conn.set_trace_callback(None)
    out = {}
    for sql in seen:
        if re.search(r"\b(FROM|UPDATE)\s+requests\b", sql) and \
                sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
            out[sql] = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert out, "no statement on requests was traced"
    return out


def _assert_indexed(plans: dict[str, str]) -> None:
    for sql, plan in plans.items():
        steps = plan.split(" | ")
        assert "SCAN requests" not in steps, f"full table scan: {sql}\n  {plan}"
        assert "TEMP B-TREE" not in plan, f"sorts rows: {sql}\n  {plan}"


@pytest.mark.parametrize("filters", [
    {}, {"status": "approved"}, {"status": "all"}, {"user_id": "deploy-bot"},
    {"status": "all", "user_id": "deploy-bot"}, {"status": "all", "tool_name": "git_push"},
    {"status": "expired", "tool_name": "git_push"},
])
def test_list_pages_by_index(service, operator, traced, filters) -> None:
    _, seen = traced
    page = service.list(operator, limit=1, **filters)
    if page.next_cursor:
        service.list(operator, limit=1, cursor=page.next_cursor, **filters)
    _assert_indexed(_plans(service, seen))


def test_show_and_decide_by_id_and_prefix(service, operator, traced) -> None:
    ids, seen = traced
    service.get(operator, ids[1])
    service.get(operator, ids[1][:12])
    service.decide(operator, ids[1][:20], "reject", "no")
    plans = _plans(service, seen)
    _assert_indexed(plans)
    assert any(s.startswith("UPDATE requests") for s in plans)


def test_the_pending_quota_counts_only_the_users_pending_requests(store, traced) -> None:
    """The pending quota's count, made on every create, walks the (status, user_id) index:
    neither other users' pending requests nor this user's history."""
    _, seen = traced
    quota = ApprovalService(store, Settings(quotas=Quotas(max_pending=5)))
    quota.create(Principal("deploy-bot", "user"), "git_push", {})
    plans = _plans(quota, seen)
    _assert_indexed(plans)
    counted = [p for s, p in plans.items() if "OFFSET" in s]
    assert counted and all("requests_status_user" in p for p in counted), plans


def test_sweep_and_stats(service, operator, traced) -> None:
    _, seen = traced
    service.sweep()
    stats = service.stats(operator, 86400)
    assert stats["total"] == 3 and stats["response_time_seconds"]["p95"] is not None
    plans = _plans(service, seen)
    _assert_indexed(plans)
    percentile = [p for s, p in plans.items() if "OFFSET" in s]
    assert percentile and all("requests_response_time" in p for p in percentile)


def test_prune_and_audit_verify_read_by_index(service, traced) -> None:
    """prune walks the creation-time index (a batch costs what it deletes); verify's merge of
    requests with their audit rows walks the primary key and (request_id, seq)."""
    _, seen = traced
    admin = Principal("root-admin", "admin")
    service.prune(admin, 90 * 86400, dry_run=True)
    service.prune(admin, 90 * 86400)
    assert service.audit_verify(admin).ok
    conn = service.store._conn()
    conn.set_trace_callback(None)
    plans = {}
    for sql in seen:
        if sql.lstrip().upper().startswith(("SELECT", "DELETE")) and \
                re.search(r"\b(FROM|UPDATE)\s+(requests|outbox)\b|request_id, seq", sql):
            plans[sql] = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert any("DELETE FROM requests" in s for s in plans)
    assert any("request_id, seq" in s for s in plans)
    for sql, plan in plans.items():
        steps = plan.split(" | ")
        for table in ("requests", "outbox", "audit_log"):
            assert f"SCAN {table}" not in steps, f"full table scan: {sql}\n  {plan}"
        assert "TEMP B-TREE" not in plan, f"sorts rows: {sql}\n  {plan}"
