"""PostgreSQL mechanics: the schema the migrations build, its collation, index use, migrations
table and the per-schema isolation the test-suite (and shared servers) rely on."""

from __future__ import annotations

import pytest

from approvalctl.store import open_store
from approvalctl.store.postgres import MIGRATIONS_TABLE, PostgresStore, redact, split_url
from approvalctl.store.schema import MIGRATIONS

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend_kind() -> str:
    """PostgreSQL mechanics only; tests/test_store_sqlite.py checks SQLite's own."""
    return "postgres"


def test_fresh_schema_has_every_table_index_and_guard(store, raw_db) -> None:
    assert isinstance(store, PostgresStore)
    tables = {r[0] for r in raw_db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert tables == {MIGRATIONS_TABLE, "requests", "audit_log", "metric_counters", "api_keys",
                      "idempotency_keys", "outbox", "policy_rules", "server_secrets",
                      "request_quorum", "request_approvals", "request_schedule",
                      "request_steps"}
    cols = [r[0] for r in raw_db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = 'requests' ORDER BY ordinal_position")]
    assert cols == ["id", "tool_name", "arguments", "reason", "risk", "user_id", "status",
                    "created_at", "expires_at", "decided_at", "decided_by", "decision_note",
                    "response_ms", "digest", "use_by", "consumed_at"]
    indexes = {r[0] for r in raw_db.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {"requests_status_id", "requests_status_expiry", "requests_created_stats",
            "audit_log_request", "outbox_due"} <= indexes
    triggers = {r[0] for r in raw_db.execute(
        "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relname = 'audit_log' AND NOT t.tgisinternal")}
    assert triggers == {"audit_log_no_update", "audit_log_no_truncate"}
    with pytest.raises(raw_db.error, match="append-only"):
        raw_db.execute("TRUNCATE audit_log")


def test_text_compares_bytewise_like_sqlite(store, raw_db) -> None:
    """COLLATE "C" on every text column: ids and ISO times order the same on both backends."""
    collations = {r[0] for r in raw_db.execute(
        "SELECT collation_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND data_type = 'text' AND table_name <> %s", (MIGRATIONS_TABLE,))}
    assert collations == {"C"}
    raw_db.execute("INSERT INTO metric_counters (name, labels, value) VALUES "
                   "('a', 'B', 1), ('a', 'a', 1), ('a', '_', 1), ('a', 'é', 1)")
    assert [r[1] for r in store.read_rows("metric_counters", None, 10)] == ["B", "_", "a", "é"]


def test_queries_can_use_their_indexes(store, raw_db) -> None:
    raw_db.execute("SET enable_seqscan = off")  # empty tables: ask whether an index *can* serve

    def plan(sql: str, *params) -> str:
        return " ".join(r[0] for r in raw_db.execute("EXPLAIN " + sql, params))

    assert "requests_status_id" in plan(
        "SELECT * FROM requests WHERE status = ? ORDER BY id LIMIT 50", "pending")
    assert "requests_status_expiry" in plan(
        "SELECT id FROM requests WHERE status = ? AND expires_at <= ? ORDER BY expires_at "
        "LIMIT 10 FOR UPDATE SKIP LOCKED", "pending", "x")
    assert "requests_user_all" in plan(
        "SELECT * FROM requests WHERE user_id = ? AND id > ? ORDER BY id LIMIT 50", "bot", "0")
    assert "requests_tool_all" in plan(
        "SELECT * FROM requests WHERE tool_name = ? ORDER BY id DESC LIMIT 50", "deploy")
    assert "requests_response_time" in plan(
        "SELECT response_ms FROM requests WHERE response_ms IS NOT NULL AND created_at >= ? "
        "ORDER BY response_ms LIMIT 1 OFFSET 10", "2026")
    assert "requests_pkey" in plan("SELECT * FROM requests WHERE id >= ? AND id < ? "
                                   "ORDER BY id LIMIT 2", "01", "01\x7f")


def test_migrations_are_recorded_and_reopening_is_a_no_op(db_url, store, raw_db) -> None:
    names = [r[0] for r in raw_db.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name")]
    assert names == [n for n, _ in MIGRATIONS]
    again = open_store(db_url)
    try:
        assert again.migrate() == []
    finally:
        again.close()
    assert raw_db.execute(f"SELECT COUNT(*) FROM {MIGRATIONS_TABLE}").fetchone()[0] == \
        len(MIGRATIONS)


def test_schemas_on_one_server_are_separate_databases(store, new_db, service, agent) -> None:
    service.create(agent, "deploy")
    other = open_store(new_db("postgres"))
    try:
        assert other.count_rows("requests") == 0
        assert other.schema != store.schema
    finally:
        other.close()


def test_url_helpers_keep_secrets_out_and_pool_settings_apart() -> None:
    url = "postgresql://app:pa55@db.example:5433/approvals?sslmode=require&pool_max_size=20"
    assert redact(url) == "postgresql://app:***@db.example:5433/approvals?sslmode=require" \
                          "&pool_max_size=20"
    conninfo, pool = split_url(url)
    assert "pool_max_size" not in conninfo and "sslmode=require" in conninfo
    assert "connect_timeout=5" in conninfo
    assert pool["pool_max_size"] == 20 and pool["pool_min_size"] == 1
    assert pool["pipeline"] == 0.0


def test_pipelined_writes_keep_every_guarantee(new_db) -> None:
    """`pipeline=true`: compare-and-set outcomes (rowcount), the chain and idempotency hold."""
    import threading

    from approvalctl.errors import ApprovalConflict
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService

    store = open_store(new_db("postgres") + "&pipeline=true")
    try:
        assert store._pipeline is True
        service = ApprovalService(store)
        agent, op = Principal("bot", "user"), Principal("op", "operator")
        admin = Principal("root", "admin", local=True)
        ids = [service.create(agent, "deploy", {"i": i}).id for i in range(20)]
        results: list[str] = []

        def decide(rid: str) -> None:
            try:
                service.decide(op, rid, "approve")
                results.append("won")
            except ApprovalConflict:
                results.append("conflict")

        threads = [threading.Thread(target=decide, args=(ids[0],)) for _ in range(4)]
        threads += [threading.Thread(target=decide, args=(rid,)) for rid in ids[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("won") == 20 and results.count("conflict") == 3
        service.create_key(admin, "k", "user")
        service.revoke_key(admin, "k")  # rowcount-driven
        with pytest.raises(ApprovalConflict):
            service.revoke_key(admin, "k")
        assert service.audit_verify(admin).ok
    finally:
        store.close()
