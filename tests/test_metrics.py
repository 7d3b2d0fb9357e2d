"""The Prometheus exposition: names, types, labels, buckets, durability across processes."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import env_for
from prometheus_client.parser import text_string_to_metric_families

from approvalctl import counters, metrics
from approvalctl.store import open_store


def scrape(store) -> dict[str, object]:
    body, content_type = metrics.render(store)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def own(labels: dict[str, str]) -> dict[str, str]:
    """A sample's labels less `database`, which every database-derived series carries."""
    return {k: v for k, v in labels.items() if k != "database"}


def value(families, family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and own(s.labels) == labels:
            return s.value
    raise AssertionError(f"no sample {sample}{labels} in {family}")


def test_required_metrics_have_the_designed_names_types_labels_and_buckets(store) -> None:
    fams = scrape(store)
    assert fams["approval_requests"].type == "counter"
    assert {s.labels["status"] for s in fams["approval_requests"].samples} == {
        "pending", "approved", "rejected", "expired", "cancelled"}
    hist = fams["approval_response_time_seconds"]
    assert hist.type == "histogram"
    les = [s.labels["le"] for s in hist.samples if s.name.endswith("_bucket")]
    assert [float(le) for le in les] == [1, 5, 10, 30, 60, 120, 300, 600, float("inf")]
    assert fams["approval_timeout"].type == "counter"
    assert {s.labels["result"] for s in fams["rbac_permission_checks"].samples} == {
        "allowed", "denied"}
    assert {s.labels["role"] for s in fams["rbac_role_assignments"].samples} == {
        "user", "viewer", "operator", "admin"}
    assert fams["approval_pending_requests"].type == "gauge"
    assert fams["approval_oldest_pending_age_seconds"].type == "gauge"
    deliveries = fams["notification_deliveries"]
    assert deliveries.type == "counter"
    assert {(s.labels["channel"], s.labels["result"]) for s in deliveries.samples} == {
        (c, r) for c in ("slack", "email", "webhook", "ntfy")
        for r in ("sent", "retry", "failed")}
    assert fams["notification_outbox_backlog"].type == "gauge"
    assert value(fams, "approvalctl_database_up", "approvalctl_database_up") == 1


def test_every_known_series_exists_at_zero_on_a_fresh_database(store) -> None:
    fams = scrape(store)
    store_families = [f for name, f in fams.items() if not name.startswith(("approvalctl_",
                                                                            "process_"))]
    assert all(s.value == 0 for f in store_families for s in f.samples)
    assert value(fams, "approval_requests", "approval_requests_total", status="rejected") == 0


def test_decisions_show_in_counters_histogram_and_gauges(service, operator, agent,
                                                         store) -> None:
    a = service.create(agent, "deploy", {"env": "prod"})
    b = service.create(agent, "drop_table")
    service.create(agent, "rm")
    service.decide(operator, a.id, "approve")
    service.decide(operator, b.id, "reject")
    fams = scrape(store)
    assert value(fams, "approval_requests", "approval_requests_total", status="pending") == 3
    assert value(fams, "approval_requests", "approval_requests_total", status="approved") == 1
    assert value(fams, "approval_requests", "approval_requests_total", status="rejected") == 1
    assert value(fams, "approval_response_time_seconds",
                 "approval_response_time_seconds_count") == 2
    assert value(fams, "approval_response_time_seconds",
                 "approval_response_time_seconds_bucket", le="1.0") == 2
    assert value(fams, "approval_pending_requests", "approval_pending_requests") == 1
    assert value(fams, "approval_oldest_pending_age_seconds",
                 "approval_oldest_pending_age_seconds") >= 0


def test_notification_counters_and_outbox_backlog(store) -> None:
    store.add_counters([(counters.NOTIFY_DELIVERIES,
                         counters.labels(channel="slack", result="failed"), 2)])
    with store._write() as cur:
        cur.execute("INSERT INTO outbox (event, channel, request_id, payload, next_attempt_at, "
                    "created_at) VALUES ('created', 'slack', 'r1', '{}', 't', 't')")
        cur.execute("INSERT INTO outbox (event, channel, request_id, payload, status, "
                    "next_attempt_at, created_at) VALUES ('created', 'email', 'r1', '{}', "
                    "'sent', 't', 't')")
    assert store.outbox_backlog() == 1
    fams = scrape(store)
    assert value(fams, "notification_deliveries", "notification_deliveries_total",
                 channel="slack", result="failed") == 2
    assert value(fams, "notification_outbox_backlog", "notification_outbox_backlog") == 1


def test_http_metrics_by_route_method_and_status(store) -> None:
    metrics.observe_http("/api/v1/approvals/{id}", "PUT", 409, 0.02)
    fams = scrape(store)
    assert value(fams, "approvalctl_http_requests", "approvalctl_http_requests_total",
                 route="/api/v1/approvals/{id}", method="PUT", status="409") >= 1
    assert value(fams, "approvalctl_http_request_duration_seconds",
                 "approvalctl_http_request_duration_seconds_count",
                 route="/api/v1/approvals/{id}", method="PUT", status="409") >= 1


def test_unreadable_database_is_reported_not_raised(tmp_path) -> None:
    store = open_store(str(tmp_path / "gone.db"))
    with store._write() as cur:
        cur.execute("DROP TABLE metric_counters")
    body, _ = metrics.render(store, include_http=False)
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert list(fams) == ["approvalctl_database_up", "approvalctl_build_info"]
    assert fams["approvalctl_database_up"].samples[0].value == 0
    store.close()


def test_describe_names_what_collect_yields(store) -> None:
    collector = metrics.StoreCollector(metrics.read_snapshot(store), "db")
    described = {(f.name, f.type) for f in collector.describe()}
    collected = {(f.name, f.type) for f in collector.collect()}
    assert described == collected


def test_catalogue_lists_every_exported_family(store) -> None:
    metrics.observe_http("/healthz", "GET", 200, 0.001)
    exported = set(scrape(store))
    listed = set()
    for info in metrics.catalogue():
        listed.add(info.name[: -len("_total")] if info.type == "counter" else info.name)
    # prometheus-client lists `_created` samples as families of their own
    assert exported - listed <= {"approvalctl_http_requests_created",
                                 "approvalctl_http_request_duration_seconds_created",
                                 "approvalctl_quota_rejections_created",
                                 "approvalctl_http_limit_rejections_created"}
    assert listed <= exported


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_promtool_check_metrics_finds_nothing(service, operator, agent, store) -> None:
    req = service.create(agent, "deploy")
    service.decide(operator, req.id, "approve")
    metrics.observe_http("/api/v1/approvals", "POST", 201, 0.01)
    body, _ = metrics.render(store)
    res = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == b"" and res.stderr.strip() == b""


def test_a_decision_made_by_another_process_shows_in_the_next_scrape(db_url, store) -> None:
    env = env_for(db_url)
    run = [sys.executable, "-m", "approvalctl"]
    created = subprocess.run([*run, "request", "deploy", "--user", "bot"], env=env,
                             capture_output=True, text=True, timeout=30, check=True)
    before = scrape(store)
    assert value(before, "approval_pending_requests", "approval_pending_requests") == 1
    subprocess.run([*run, "reject", created.stdout.strip(), "--reason", "no"], env=env,
                   capture_output=True, text=True, timeout=30, check=True)
    after = scrape(store)
    assert value(after, "approval_requests", "approval_requests_total", status="rejected") == 1
    assert value(after, "approval_pending_requests", "approval_pending_requests") == 0
    # the RBAC checks of both CLI runs were flushed to the database at exit
    assert value(after, "rbac_permission_checks", "rbac_permission_checks_total",
                 result="allowed") >= 2
    # and a fresh store (a restarted server) reads the same figures
    reopened = open_store(db_url)
    assert value(scrape(reopened), "approval_requests", "approval_requests_total",
                 status="rejected") == 1
    reopened.close()


def test_scrape_queries_use_indexes_not_table_scans(tmp_path) -> None:
    """A scrape's cost follows the backlog, not the number of stored requests (SQLite)."""
    open_store(str(tmp_path / "plans.db")).close()
    conn = sqlite3.connect(tmp_path / "plans.db")
    plans = {
        "pending count": "SELECT COUNT(*) FROM requests WHERE status = 'pending'",
        "oldest pending": "SELECT created_at FROM requests WHERE status = 'pending' "
                          "ORDER BY id LIMIT 1",
        "outbox backlog": "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
    }
    for what, sql in plans.items():
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and "INDEX" in plan, f"{what}: {plan}"
    conn.close()


def test_build_info_and_process_metrics(store) -> None:
    from approvalctl import __version__

    fams = scrape(store)  # serve's /metrics
    assert value(fams, "approvalctl_build_info", "approvalctl_build_info",
                 version=__version__) == 1
    if sys.platform.startswith("linux"):
        assert value(fams, "process_resident_memory_bytes",
                     "process_resident_memory_bytes") > 0
        assert "process_cpu_seconds" in fams
    # the exporter alone: build info yes, per-process metrics no
    body, _ = metrics.render(store, include_http=False)
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "approvalctl_build_info" in names and "process_resident_memory_bytes" not in names


def test_every_database_series_names_its_database(store) -> None:
    fams = scrape(store)
    expected = metrics.database_identity(store.url)
    for name in ("approval_pending_requests", "approval_requests",
                 "approvalctl_database_up"):
        assert {s.labels["database"] for s in fams[name].samples} == {expected}
    assert "@" not in expected  # never a user or password
