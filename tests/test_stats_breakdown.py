"""`stats --by tool|user|risk`, the chart figures, and the charts the human view draws
(issue 14): the same numbers from the service, the CLI (local and remote) and the API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import CliRunner
from test_query_plans import _assert_indexed, _plans, traced  # noqa: F401

from approvalctl.cli import app
from approvalctl.errors import InvalidInput
from approvalctl.models import Principal, to_iso, utcnow


@pytest.fixture
def history(service, operator, raw_db):
    """deploy-bot: 3 git_push (high; 2 approved after 2 s and 20 s, 1 rejected after 400 s);
    ci: 1 deploy (low, pending). Decision times are set in the rows themselves."""
    bot, ci = Principal("deploy-bot", "user"), Principal("ci", "user")
    pushes = [service.create(bot, "git_push", {"n": i}, risk="high") for i in range(3)]
    pending = service.create(ci, "deploy", {}, risk="low")
    now = utcnow()
    for req, action, ms, hours_ago in ((pushes[0], "approve", 2000, 0),
                                       (pushes[1], "approve", 20000, 3),
                                       (pushes[2], "reject", 400000, 30)):
        service.decide(operator, req.id, action)
        raw_db.execute("UPDATE requests SET response_ms = ?, decided_at = ? WHERE id = ?",
                       (ms, to_iso(now - timedelta(hours=hours_ago, minutes=1)), req.id))
    return pushes, pending


def test_breakdown_by_tool_counts_rates_and_times(service, operator, history) -> None:
    data = service.stats_detail(operator, 86400 * 7, "tool")
    assert data["by"] == "tool" and data["groups_truncated"] is False
    push, deploy = data["groups"]  # largest first
    assert (push["key"], push["total"], push["approval_rate"]) == ("git_push", 3, 0.6667)
    assert push["by_status"] == {"pending": 0, "approved": 2, "rejected": 1, "expired": 0,
                                 "cancelled": 0}
    assert push["response_time_seconds"] == {"avg": 140.667, "p50": 20.0, "p95": 400.0}
    assert (deploy["key"], deploy["total"], deploy["approval_rate"]) == ("deploy", 1, None)
    assert deploy["response_time_seconds"] == {"avg": None, "p50": None, "p95": None}
    by_risk = {g["key"]: g["total"] for g in
               service.stats_detail(operator, 86400, "risk")["groups"]}
    assert by_risk == {"high": 3, "low": 1}
    assert [g["key"] for g in service.stats_detail(operator, 86400, "user")["groups"]] == [
        "deploy-bot", "ci"]


def test_chart_figures(service, operator, history) -> None:
    data = service.stats_detail(operator, 86400)
    assert "groups" not in data
    counts = {b["le"]: b["count"] for b in data["response_time_histogram"]}
    assert counts == {1: 0, 5: 1, 15: 0, 60: 1, 300: 0, 900: 1, 3600: 0, 14400: 0, None: 0}
    hours = data["decisions_per_hour"]
    assert len(hours) == 24
    assert (hours[-1]["approved"], hours[-4]["approved"]) == (1, 1)  # now and 3 h ago
    # the rejection 30 h ago is outside the last 24 hours
    assert sum(h["rejected"] for h in hours) == 0
    with pytest.raises(InvalidInput, match="unknown breakdown 'colour'"):
        service.stats_detail(operator, 86400, "colour")


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_breakdown_reads_by_index(service, operator, traced) -> None:  # noqa: F811
    _, seen = traced
    service.stats_detail(operator, 86400, "tool")
    plans = _plans(service, seen)
    _assert_indexed(plans)
    assert any("requests_created_stats" in p for s, p in plans.items() if "tool_name, status"
               in s)


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_cli_draws_the_table_and_charts(db_url, history) -> None:
    result = CliRunner().invoke(app, ["--db", db_url, "stats", "--since", "7d", "--by", "tool"],
                                env={"PYTHONIOENCODING": "ascii"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "git_push" in out and "66.7%" in out
    assert "response time (decided requests)" in out
    assert "decisions in the last 24 h, per hour" in out
    # CliRunner's stdout is UTF-8: the bars are block characters, one full bar per maximum
    assert "█" * 40 + " 1" in out
    chart = out[out.index("decisions in the last 24 h"):].splitlines()
    spark = chart[1].split()
    assert spark[0] == "approved" and spark[2] == "2"
    assert spark[1] == "·" * 20 + "█··█"  # 3 h ago and this hour, oldest hour on the left
    # a stdout that cannot carry the blocks gets ASCII charts, not escapes or a crash
    import subprocess
    import sys

    from conftest import env_for

    ascii_run = subprocess.run([sys.executable, "-m", "approvalctl", "stats", "--since", "7d"],
                               env={**env_for(db_url), "PYTHONIOENCODING": "ascii"},
                               capture_output=True, timeout=60)
    assert ascii_run.returncode == 0, ascii_run.stderr
    text = ascii_run.stdout.decode("ascii")
    assert "#" * 40 + " 1" in text
    assert "_" * 20 + "#__# 2" in text


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_api_breakdown_and_cli_remote_agree(history, make_server, db_url) -> None:
    live = make_server(sweep_interval=3600)
    import httpx

    with httpx.Client(base_url=live.url, timeout=10) as http:
        response = http.get("/api/v1/approvals/stats", params={"by": "risk", "since": "604800"},
                            headers=live.headers("viewer"))
        assert response.status_code == 200
        assert {g["key"]: g["total"] for g in response.json()["groups"]} == {"high": 3,
                                                                            "low": 1}
        plain = http.get("/api/v1/approvals/stats", headers=live.headers("viewer")).json()
        assert "response_time_histogram" not in plain
        bad = http.get("/api/v1/approvals/stats", params={"by": "colour"},
                       headers=live.headers("viewer"))
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
    env = {"APPROVALCTL_SERVER": live.url, "APPROVALCTL_API_KEY": live.key("ops", "viewer")}
    result = CliRunner().invoke(app, ["stats", "--by", "user", "--json", "--since", "7d"],
                                env=env)
    assert result.exit_code == 0, result.stderr
    assert [g["key"] for g in json.loads(result.stdout)["groups"]] == ["deploy-bot", "ci"]
