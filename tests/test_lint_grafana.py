"""`lint-dashboards`: the checks grafana/dashboard-linter and mixtool make, and Grafana's
variable substitution, each on a crafted broken copy of a shipped dashboard or rule file."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_lint_dashboards import (
    findings,
    good_dashboard,
    good_rules,
    repo_tests_for,
    set_expr,
    write_dashboard,
    write_rules,
)


def lint_dash(tmp_path, dash) -> list[tuple[str, str, str]]:
    return findings([write_dashboard(tmp_path, dash)])


def test_shipped_dashboard_is_clean(tmp_path) -> None:
    assert lint_dash(tmp_path, good_dashboard()) == []


@pytest.mark.parametrize(("unit", "needle"), [
    ("seconds", "unit 'seconds' is not a Grafana unit id"),
    ("Percent", "did you mean 'percent'"),
    ("suffix:", "not a Grafana unit id"),
])
def test_unit_must_be_a_grafana_unit_id(tmp_path, unit, needle) -> None:
    dash = good_dashboard()
    dash["panels"][0]["fieldConfig"]["defaults"]["unit"] = unit
    got = lint_dash(tmp_path, dash)
    assert [r for r, _, _ in got] == ["panel-unit"] and needle in got[0][2]


@pytest.mark.parametrize("unit", ["s", "percentunit", "suffix:req", "bool_yes_no", "reqps"])
def test_valid_and_custom_units_pass(tmp_path, unit) -> None:
    dash = good_dashboard()
    dash["panels"][0]["fieldConfig"]["defaults"]["unit"] = unit
    assert lint_dash(tmp_path, dash) == []


def test_panel_without_a_query(tmp_path) -> None:
    dash = good_dashboard()
    dash["panels"][0]["targets"] = []
    got = lint_dash(tmp_path, dash)
    assert [r for r, _, _ in got] == ["panel-query"]


def test_query_ignoring_the_job_variable(tmp_path) -> None:
    dash = good_dashboard()
    set_expr(dash, 0, 'max(approval_pending_requests) + max(approval_pending_requests'
                      '{job=~"$job"})')
    got = lint_dash(tmp_path, dash)
    assert [(r, "approval_pending_requests does not filter on job" in m)
            for r, _, m in got] == [("job-selector", True)]
    set_expr(dash, 0, 'count(ALERTS{alertstate="firing"})')  # about every job: exempt
    assert lint_dash(tmp_path, dash) == []


def test_dashboard_without_a_job_variable(tmp_path) -> None:
    dash = good_dashboard()
    dash["templating"]["list"] = [v for v in dash["templating"]["list"] if v["name"] != "job"]
    rules = {r for r, _, _ in lint_dash(tmp_path, dash)}
    assert "job-variable" in rules


def test_rate_over_a_fixed_range_in_a_dashboard(tmp_path) -> None:
    dash = good_dashboard()
    set_expr(dash, 0, 'max(rate(approval_timeout_total{job=~"$job"}[5m]))')
    got = lint_dash(tmp_path, dash)
    assert [r for r, _, _ in got] == ["rate-interval"]
    # increase() over a fixed window ("in the last hour") is a choice, not a mistake
    set_expr(dash, 0, 'max(increase(approval_timeout_total{job=~"$job"}[1h]))')
    assert lint_dash(tmp_path, dash) == []


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d["panels"][0].update(descripton="x"), "unknown key 'descripton' (did you "
     "mean 'description'?)"),
    (lambda d: d.update(grapTooltip=1), "unknown key 'grapTooltip'"),
    (lambda d: d.update(graphTooltip=3), "graphTooltip 3"),
    (lambda d: d["panels"][0].update(type="timeserie"), "panel type 'timeserie'"),
    (lambda d: d["panels"][0]["options"].update(colorMode="backround"),
     "colorMode 'backround' is not one of Grafana's values (did you mean 'background'?)"),
    (lambda d: d["panels"][0]["options"]["reduceOptions"].update(calcs=["lastNotNul"]),
     "calcs 'lastNotNul'"),
    (lambda d: d["panels"][0]["targets"][0].update(format="timeseries"),
     "format 'timeseries'"),
    (lambda d: d["panels"][0]["fieldConfig"]["defaults"].update(unitt="s"),
     "unknown key 'unitt'"),
    (lambda d: d["templating"]["list"][1].update(includeall=True),
     "unknown key 'includeall'"),
])
def test_unknown_keys_and_misspelled_enum_values(tmp_path, mutate, needle) -> None:
    dash = good_dashboard()
    assert dash["panels"][0]["type"] == "stat"
    mutate(dash)
    got = [m for r, _, m in lint_dash(tmp_path, dash) if r == "dashboard-schema"]
    assert len(got) == 1 and needle in got[0], got


def test_timeseries_legend_enum(tmp_path) -> None:
    dash = good_dashboard()
    panel = next(p for p in dash["panels"] if p["type"] == "timeseries")
    panel["options"]["legend"]["displayMode"] = "tabel"
    got = [m for r, _, m in lint_dash(tmp_path, dash) if r == "dashboard-schema"]
    assert len(got) == 1 and "displayMode 'tabel'" in got[0]


def test_links_and_alert_annotations(tmp_path) -> None:
    dash = good_dashboard()
    dash["links"] = []
    dash["annotations"] = {"list": []}
    assert {r for r, _, _ in lint_dash(tmp_path, dash)} == {"dashboard-links",
                                                            "alert-annotations"}


def test_every_kind_of_variable_is_substituted_as_grafana_does(tmp_path) -> None:
    dash = good_dashboard()
    dash["templating"]["list"] += [
        {"name": "window", "type": "custom", "query": "1h,6h,1d",
         "current": {"text": "6h", "value": "6h"}},
        {"name": "limit", "type": "constant", "query": "20"},
        {"name": "step", "type": "interval", "query": "auto,1m,5m",
         "current": {"value": "$__auto"}},
        {"name": "status", "type": "custom", "query": "approved,rejected", "multi": True,
         "includeAll": True, "current": {"value": ["approved", "rejected"]}},
        {"name": "phrase", "type": "textbox", "query": "deploy"},
    ]
    exprs = [
        'max(increase(approval_timeout_total{job=~"$job"}[$window])) > $limit',
        'max(increase(approval_timeout_total{job=~"${job}"}[${window}])) > ${limit:raw}',
        'max(increase(approval_timeout_total{job=~"[[job]]"}[[[window]]]))',
        'max_over_time(max(approval_pending_requests{job=~"$job"})[$window:$step])',
        'max by (status) (increase(approval_requests_total{job=~"$job",'
        'status=~"${status:regex}"}[$__range]))',
        'max(increase(approval_requests_total{job=~"$job",status=~"$status"}[$__range]))',
        'max(approval_pending_requests{job=~"$job"}) * $__range_s / $__interval_ms',
        'label_replace(max(approval_pending_requests{job=~"$job"}), "w", "$1", "", "(.*)")',
    ]
    for i, expr in enumerate(exprs):
        set_expr(dash, i, expr)
    dash["panels"][0]["targets"][0]["legendFormat"] = "$phrase"
    assert lint_dash(tmp_path, dash) == []


@pytest.mark.parametrize(("field", "text", "rule"), [
    ("summary", "the approval queue is backing up", "alert-summary-style"),
    ("summary", "The approval queue is backing up.", "alert-summary-style"),
    ("description", "{{ $value }} requests are waiting (database {{ $labels.database }})",
     "alert-description-style"),
    ("description", "waiting: {{ $value }}.", "alert-description-style"),
])
def test_alert_text_style(tmp_path, field, text, rule) -> None:
    doc = good_rules()
    alert = next(r for r in doc["groups"][0]["rules"] if r["alert"] == "ApprovalQueueBacklog")
    alert["annotations"][field] = text
    path = write_rules(tmp_path, doc, repo_tests_for(tmp_path / "alerts" / "rules.yml"))
    assert [r for r, _, _ in findings([path])] == [rule]


def test_lint_command_start_up_does_not_load_the_parsers() -> None:
    code = ("import sys, approvalctl.cli, approvalctl.lint; "
            "print(sorted(m for m in ('promql_parser', 're2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_exported_metrics_come_from_the_registry(monkeypatch, tmp_path) -> None:
    """A metric added to metrics.py is queryable at once: the list is not a copy."""
    from prometheus_client import CollectorRegistry, Counter

    from approvalctl import metrics

    registry = CollectorRegistry()
    extra = Counter("approval_consumed", "Approvals consumed.", registry=registry)
    monkeypatch.setattr(metrics, "HTTP_REQUESTS", extra)
    dash = good_dashboard()
    set_expr(dash, 0, 'max(rate(approval_consumed_total{job=~"$job"}[$__rate_interval]))')
    assert lint_dash(tmp_path, dash) == []
