"""End to end: a real Prometheus scrapes `serve-metrics`; every dashboard and alert query runs.

The exporter and Prometheus run as real processes on free loopback ports (never the system
Prometheus on 9090), Prometheus with a 1 s scrape and rule interval, a temp config and temp
storage, and our alert rules loaded. Traffic comes from the real CLI in other processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import env_for, free_port, prometheus, wait_http
from test_serve_metrics import start_exporter, stop

from approvalctl.cli import app as cli_app
from approvalctl.lint.promql import substitute

REPO = Path(__file__).resolve().parent.parent
ALERT_RULES = REPO / "alerts" / "approval_alerts.yml"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("prometheus"), reason="needs prometheus")]

#: `approvalctl serve` (the HTTP API) is scraped too once it is part of the CLI.
HAS_SERVE = any(c.name == "serve" for c in cli_app.registered_commands)
HTTP_PANELS = {"HTTP requests by route and status", "HTTP p95 latency by route"}

#: Panels that must show data once there has been some traffic.
CORE_PANELS = {
    "approval_workflow.json": {"Pending requests", "Queue depth", "Requests by status",
                               "Decision rate", "Oldest pending age", "Decisions in range",
                               "Database reachable"},
    "rbac_metrics.json": {"Permission checks by result", "Denied checks in range"},
    "sla_tracking.json": {"Response time percentiles", "Rejection rate in range",
                          "Decided within 1 / 5 / 10 minutes", "Median response time in range"},
}


def dashboard_queries() -> Iterator[tuple[str, str, str, str]]:
    """(dashboard file, panel title, grafana expr, substituted expr) for every panel query."""
    for path in sorted((REPO / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        variables = {v["name"]: v.get("allValue") or ".+"
                     for v in dash["templating"]["list"] if v["type"] != "datasource"}
        for panel in dash["panels"]:
            for p in [panel, *panel.get("panels", [])]:
                for target in p.get("targets", []):
                    yield path.name, p["title"], target["expr"], substitute(
                        target["expr"], variables)


def alert_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"]
            for r in g["rules"]]


@pytest.fixture
def stack(tmp_path: Path, db_path: Path) -> Iterator[dict[str, Any]]:
    exporter_port, api_port = free_port(), free_port()
    exporter = start_exporter(db_path, exporter_port)
    jobs = [{"job_name": "approvalctl", "static_configs": [
        {"targets": [f"127.0.0.1:{exporter_port}"]}]}]
    api = None
    if HAS_SERVE:
        api = subprocess.Popen([sys.executable, "-m", "approvalctl", "serve", "--port",
                                str(api_port)], env=env_for(db_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_http(f"http://127.0.0.1:{api_port}/healthz", api)
        except BaseException:
            stop(api)
            stop(exporter)
            raise
        jobs.append({"job_name": "approvalctl-api", "static_configs": [
            {"targets": [f"127.0.0.1:{api_port}"]}]})
    try:
        with prometheus(tmp_path, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": jobs,
        }, timeout=20) as url:
            yield {"prometheus": url, "db": db_path, "log": tmp_path / "prometheus.log",
                   "api": f"http://127.0.0.1:{api_port}" if api else None}
    finally:
        stop(exporter)
        if api:
            stop(api)


def query(url: str, expr: str) -> dict[str, Any]:
    res = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = res.json()
    assert res.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def query_range(url: str, expr: str, seconds: int = 60) -> dict[str, Any]:
    """What a Grafana time-series panel asks: the last minute at a 2 s step."""
    end = time.time()
    res = httpx.get(url + "/api/v1/query_range", params={
        "query": expr, "start": end - seconds, "end": end, "step": "2"}, timeout=10)
    body = res.json()
    assert res.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def wait_for(url: str, expr: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(url, expr)["result"]:
            return
        time.sleep(0.25)
    raise AssertionError(f"{expr} returned nothing within {timeout}s")


def cli(db: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "approvalctl", *args], env=env_for(db),
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_every_dashboard_and_alert_query_runs_against_real_prometheus(stack) -> None:
    url, db = stack["prometheus"], stack["db"]
    # traffic: three requests while Prometheus starts scraping (it applies new targets on a
    # 5 s tick), then two decisions it sees happen, and one request left pending
    first = cli(db, "request", "deploy", "--user", "bot", "--reason", "release 1.2")
    second = cli(db, "request", "drop_table", "--user", "bot")
    cli(db, "request", "rm", "--user", "bot")
    wait_for(url, 'up{job="approvalctl"} == 1')
    cli(db, "approve", first)
    cli(db, "reject", second, "--reason", "no")
    if stack["api"]:
        # some HTTP traffic on the API: a health check and an unauthenticated list (401)
        for _ in range(3):
            assert httpx.get(stack["api"] + "/healthz").status_code == 200
            assert httpx.get(stack["api"] + "/api/v1/approvals").status_code == 401
    wait_for(url, 'approval_requests_total{status="rejected"} == 1')
    time.sleep(2.5)  # a few more scrapes after the decisions, so rate() has two points

    ran = 0
    empty_core = []
    for dashboard, title, expr, text in dashboard_queries():
        data = query(url, text)
        query_range(url, text)
        ran += 1
        core = CORE_PANELS.get(dashboard, set()) | (HTTP_PANELS if stack["api"] else set())
        if title in core and not data["result"]:
            empty_core.append(f"{dashboard}: {title}: {expr}")
    assert ran >= 30
    assert empty_core == []

    for _name, expr in alert_queries():
        query(url, expr)  # executes without error; most are (correctly) quiet

    # Prometheus itself loaded and evaluated every rule without error
    rules = httpx.get(url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert set(loaded) == {name for name, _ in alert_queries()}
    assert set(loaded.values()) == {"ok"}, loaded

    # a figure the operator reads: exactly one request pending
    pending = query(url, 'max(approval_pending_requests{job=~".+"})')["result"]
    assert float(pending[0]["value"][1]) == 1
    if stack["api"]:
        # the server and the exporter read the same database, so they report the same figures
        by_job = query(url, 'approval_requests_total{status="approved"}')["result"]
        assert {r["metric"]["job"]: r["value"][1] for r in by_job} == {
            "approvalctl": "1", "approvalctl-api": "1"}
        # and the server's exposition, HTTP metrics included, is clean for promtool
        body = httpx.get(stack["api"] + "/metrics").content
        assert b"approvalctl_http_requests_total{" in body
        if shutil.which("promtool"):
            res = subprocess.run(["promtool", "check", "metrics"], input=body,
                                 capture_output=True, timeout=30)
            assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
