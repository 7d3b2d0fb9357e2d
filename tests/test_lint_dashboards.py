"""`lint-dashboards`: each rule on a crafted broken file, and the repo's own files clean."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CliRunner

from approvalctl.cli import app
from approvalctl.lint import lint, parse_exclusions
from approvalctl.lint.promql import PromQLError, parse, substitute

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "dashboards"
ALERTS = REPO / "alerts"
needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool")


def good_dashboard() -> dict[str, Any]:
    return json.loads((DASHBOARDS / "sla_tracking.json").read_text())


def good_rules() -> dict[str, Any]:
    return yaml.safe_load((ALERTS / "approval_alerts.yml").read_text())


def write_dashboard(tmp_path: Path, dash: dict[str, Any]) -> Path:
    path = tmp_path / "dash.json"
    path.write_text(json.dumps(dash))
    return path


def findings(paths: list[Path], promtool: bool = False) -> list[tuple[str, str, str]]:
    report = lint(paths, use_promtool=promtool)
    return [(f.rule, f.severity, f.location + ": " + f.message) for f in report.findings]


def rules_of(paths: list[Path], **kw: Any) -> set[str]:
    return {rule for rule, _, _ in findings(paths, **kw)}


def set_expr(dash: dict[str, Any], index: int, expr: str) -> str:
    dash["panels"][index]["targets"][0]["expr"] = expr
    return dash["panels"][index]["title"]


# ---------------------------------------------------------------- the repo's own files
def test_repo_dashboards_and_alerts_lint_clean_with_promtool(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, ["lint-dashboards"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_json_format_lists_findings_and_files(tmp_path, monkeypatch) -> None:
    dash = good_dashboard()
    dash["uid"] = ""
    path = write_dashboard(tmp_path, dash)
    result = CliRunner().invoke(app, ["lint-dashboards", str(path), "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["errors"] == 1 and doc["files"] == [str(path)]
    assert doc["findings"][0] == {"path": str(path), "rule": "dashboard-uid",
                                  "severity": "error", "location": "dashboard",
                                  "message": "no uid: without a stable uid, links and "
                                             "provisioning break on every import"}


def test_text_format_is_path_rule_severity_location_message(tmp_path) -> None:
    dash = good_dashboard()
    del dash["title"]
    path = write_dashboard(tmp_path, dash)
    result = CliRunner().invoke(app, ["lint-dashboards", str(path), "--no-promtool"])
    assert result.exit_code == 1
    assert result.stdout == f"{path}:dashboard-title:error:dashboard:no title\n"


def test_bad_format_and_missing_path_are_usage_errors(tmp_path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["lint-dashboards", str(DASHBOARDS), "--format", "xml"])
    assert bad.exit_code == 2 and "--format must be text or json" in bad.stderr
    missing = runner.invoke(app, ["lint-dashboards", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


# ---------------------------------------------------------------- dashboard structure
def test_invalid_json_names_line_and_column(tmp_path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "uid": "x",\n  "panels": [\n}')
    assert findings([path]) == [("json", "error", "line 4 column 1: invalid JSON: "
                                 "Expecting value")]


def test_uid_title_and_id_rules(tmp_path) -> None:
    dash = good_dashboard()
    dash["uid"] = "has spaces!"
    dash["title"] = " "
    dash["panels"][1]["id"] = dash["panels"][0]["id"]
    del dash["panels"][2]["id"]
    got = findings([write_dashboard(tmp_path, dash)])
    rules = [r for r, _, _ in got]
    assert rules.count("dashboard-uid") == 1 and rules.count("dashboard-title") == 1
    assert any(r == "panel-id" and "also used by panel 1" in m for r, _, m in got)
    assert any(r == "panel-id" and "no integer id" in m for r, _, m in got)


def test_duplicate_id_inside_a_collapsed_row_is_found(tmp_path) -> None:
    dash = json.loads((DASHBOARDS / "approval_workflow.json").read_text())
    row = next(p for p in dash["panels"] if p["type"] == "row")
    row["panels"][0]["id"] = 1
    got = findings([write_dashboard(tmp_path, dash)])
    assert [r for r, _, _ in got] == ["panel-id"]


def test_grid_too_wide_and_overlapping(tmp_path) -> None:
    dash = good_dashboard()
    dash["panels"][0]["gridPos"] = {"x": 20, "y": 0, "w": 6, "h": 4}
    got = [m for r, _, m in findings([write_dashboard(tmp_path, dash)]) if r == "grid"]
    assert any("wider than the 24-column grid" in m for m in got)
    assert any("overlaps" in m for m in got)


def test_every_panel_needs_datasource_variable_title_description_unit(tmp_path) -> None:
    dash = good_dashboard()
    dash["panels"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    dash["panels"][1]["targets"][0]["datasource"] = "Prometheus"
    del dash["panels"][2]["description"]
    dash["panels"][3]["fieldConfig"]["defaults"].pop("unit")
    dash["panels"][4]["title"] = ""
    dash["templating"]["list"] = [v for v in dash["templating"]["list"]
                                  if v["name"] != "datasource"]
    got = findings([write_dashboard(tmp_path, dash)])
    assert sorted(r for r, _, _ in got) == ["datasource", "datasource", "datasource",
                                            "panel-description", "panel-title", "panel-unit"]


# ---------------------------------------------------------------- queries
@pytest.mark.parametrize(("expr", "rule", "needle"), [
    ("sum(rate(approval_requests_total[5m])", "promql", "unclosed left parenthesis"),
    ('approval_requests_total{status=approved}', "promql", "expected string"),
    ("rate(approval_timeout_total)", "promql", "expected type matrix"),
    ("max(approval_timeout_total)", "counter-rate", "counter approval_timeout_total"),
    ("approval_response_time_seconds_count / 2", "counter-rate",
     "approval_response_time_seconds_count"),
    ("histogram_quantile(0.9, sum(rate(approval_response_time_seconds_bucket[5m])))",
     "histogram-quantile", "drops the `le` label"),
    ("histogram_quantile(0.9, sum by (job) (rate(approval_response_time_seconds_bucket[5m])))",
     "histogram-quantile", "sum by (job) drops"),
    ("histogram_quantile(0.9, rate(approval_response_time_seconds_sum[5m]))",
     "histogram-quantile", "must read a _bucket series"),
    ("approval_pending_request", "metric-exported", "did you mean approval_pending_requests"),
    ('approval_requests_total{state="approved"}', "metric-exported", "has no label 'state'"),
    ('rate(approval_requests_total{status="aproved"}[5m])', "metric-exported",
     "never exists"),
    ('rate(approval_requests_total{status=~"approved|denied"}[5m])', "metric-exported",
     "denied never exists"),
    ('rate(rbac_permission_checks_total{result=~"den.*x"}[5m])', "metric-exported",
     "matches no value"),
    ('increase(approval_response_time_seconds_bucket{le="60"}[1h])', "metric-exported",
     "never exists"),
    ("sum by (route) (rate(approval_requests_total[5m]))", "metric-exported",
     "no metric here has label 'route'"),
])
def test_query_rules_on_a_panel(tmp_path, expr: str, rule: str, needle: str) -> None:
    dash = good_dashboard()
    title = set_expr(dash, 0, expr)
    got = findings([write_dashboard(tmp_path, dash)])
    assert any(r == rule and needle in m and title in m for r, _, m in got), got


@pytest.mark.parametrize("expr", [
    'max(increase(approval_requests_total{job=~"$job",status="rejected"}[$__range]))',
    "histogram_quantile(0.99, sum by (le, route) "
    "(rate(approvalctl_http_request_duration_seconds_bucket{job=~\"${job}\"}"
    "[${__rate_interval}])))",
    "up{job=~\"$job\"} == 0",
    'sum(ALERTS{alertstate="firing"})',
    'absent(approval_pending_requests{job=~"[[job]]"})',
    'increase(approval_timeout_total{job=~"$job"}[1h:1m])',
    'max by (version) (approvalctl_build_info{job=~"$job"})',
    'max(process_resident_memory_bytes{job=~"$job"})',
    'max by (database) (approval_pending_requests{job=~"$job"})',
])
def test_correct_queries_pass(tmp_path, expr: str) -> None:
    dash = good_dashboard()
    set_expr(dash, 0, expr)
    assert findings([write_dashboard(tmp_path, dash)]) == []


def test_variable_query_metric_and_label_are_checked(tmp_path) -> None:
    dash = good_dashboard()
    var = next(v for v in dash["templating"]["list"] if v["name"] == "job")
    var["query"]["query"] = "label_values(approval_pending_requests, tool)"
    got = findings([write_dashboard(tmp_path, dash)])
    assert got == [("metric-exported", "error", "variable job: approval_pending_requests "
                    "has no label 'tool'")]


def test_grafana_variables_are_substituted_before_parsing() -> None:
    text = substitute('rate(x_total{job=~"$job",a="${a:regex}"}[$__rate_interval]) '
                      '* $__range_s', {"job": ".+"})
    assert text == 'rate(x_total{job=~".+",a="${a:regex}"}[5m1ms]) * 3600'
    parse(text)


@pytest.mark.parametrize(("expr", "needle"), [
    ("", "empty expression"),
    ("1 > 0", "BOOL modifier"),
    ("x and 1", "set operator"),
    ("topk(x)", "wrong number of arguments"),
    ("nosuchfn(x)", "unknown function"),
    ("x{a=~\"(\"}", "illegal regex"),
    ("{}", "at least one non-empty matcher"),
    ("(x + y)[5m]", "ranges only allowed for vector selectors"),
    ('x{a="b}', "unterminated quoted string"),
])
def test_parser_errors(expr: str, needle: str) -> None:
    with pytest.raises(PromQLError) as err:
        parse(expr)
    assert needle in str(err.value)


def test_parser_accepts_the_full_grammar() -> None:
    for expr in ["-2 ^ 2", "a / on(x) group_left(y) b", "x > bool 1", "x offset 5m",
                 "x @ end()", "max_over_time(rate(x[1m])[5m:])", 'count_values("v", x)',
                 "sum without (a) (x) or vector(0)", "1e3 * x", "0x1f", "+Inf",
                 "quantile(0.9, x) unless ignoring(a) y", "x[5m] offset 1h",
                 "label_replace(x, 'a', '$1', 'b', '(.*)')", "x atan2 y",
                 "SUM BY (a) (x) / ON(a) GROUP_LEFT(b) y", "x OFFSET 5m", "x{a=\"b\",}"]:
        parse(expr)


# ---------------------------------------------------------------- alert rules
def write_rules(tmp_path: Path, doc: dict[str, Any], tests: dict[str, Any] | None = None
                ) -> Path:
    folder = tmp_path / "alerts"
    (folder / "tests").mkdir(parents=True, exist_ok=True)
    path = folder / "rules.yml"
    path.write_text(yaml.safe_dump(doc))
    if tests is not None:
        (folder / "tests" / "rules_test.yml").write_text(yaml.safe_dump(tests))
    return path


def repo_tests_for(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load((ALERTS / "tests" / "approval_alerts_test.yml").read_text())
    doc["rule_files"] = ["../" + path.name]
    return doc


def test_alert_rules(tmp_path) -> None:
    doc = good_rules()
    alerts = doc["groups"][0]["rules"]
    bad = copy.deepcopy(alerts[0])
    bad["alert"] = "approval_timeout"
    del bad["for"]
    bad["labels"]["severity"] = "page"
    bad["annotations"]["description"] = "requests expired"
    del bad["annotations"]["summary"]
    bad["annotations"]["runbook_url"] = "https://example.com/docs/runbook.md#no-such-section"
    alerts.append(bad)
    path = write_rules(tmp_path, doc)
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "runbook.md", tmp_path / "docs" / "runbook.md")
    (path.parent / "tests" / "t.yml").write_text(yaml.safe_dump(repo_tests_for(path)))
    got = [(r, s, m.split(": ", 1)[1]) for r, s, m in findings([path])]
    assert sorted(got) == sorted([
        ("alert-name", "error", "alert name 'approval_timeout' should be CamelCase (e.g. "
         "ApprovalQueueBacklog)"),
        ("alert-for", "error", "no for: one bad evaluation would page; say how long the "
         "condition must hold"),
        ("alert-severity", "error", "severity 'page' is not one of critical, warning, info"),
        ("alert-summary", "error", "no summary annotation"),
        ("alert-description", "warning", "description is not templated: include "
         "{{ $value }} or {{ $labels.job }} so the page says what is wrong where"),
        ("alert-description-style", "error", "description should start with a capital "
         "letter (or a template) and end with '.', '?' or '!'"),
        ("alert-runbook", "error", "runbook_url points at #no-such-section, which is no "
         f"section of {tmp_path / 'docs' / 'runbook.md'}"),
        ("alert-test", "error", "no promtool test (alert_rule_test) for this alert under "
         "tests/"),
    ])


def test_alert_without_a_quiet_case_is_a_warning(tmp_path) -> None:
    path = write_rules(tmp_path, good_rules())
    tests = repo_tests_for(path)
    tests["tests"] = [t for t in tests["tests"] if not (
        t["alert_rule_test"][0]["alertname"] == "ApprovalQueueBacklog"
        and not t["alert_rule_test"][0]["exp_alerts"])]
    (path.parent / "tests" / "t.yml").write_text(yaml.safe_dump(tests))
    assert findings([path]) == [("alert-test", "warning", "group approvalctl alert "
                                 "ApprovalQueueBacklog: tests never expect this alert to "
                                 "stay quiet")]


def test_recording_rules_count_as_exported(tmp_path) -> None:
    doc = good_rules()
    doc["groups"].append({"name": "recordings", "rules": [
        {"record": "approvalctl:rejections:rate1h",
         "expr": 'max without (instance) (rate(approval_requests_total{status="rejected"}'
                 "[1h]))"}]})
    path = write_rules(tmp_path, doc, repo_tests_for(tmp_path / "alerts" / "rules.yml"))
    dash = good_dashboard()
    set_expr(dash, 0, 'approvalctl:rejections:rate1h{job=~"$job"} > 0')
    assert findings([path, write_dashboard(tmp_path, dash)]) == []


def test_invalid_yaml_is_reported(tmp_path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("groups:\n  - name: x\n    rules: [\n")
    got = findings([path])
    assert len(got) == 1 and got[0][0] == "yaml" and got[0][2].startswith("line ")


# ---------------------------------------------------------------- promtool
@needs_promtool
def test_promtool_failing_test_is_reported(tmp_path) -> None:
    path = write_rules(tmp_path, good_rules())
    tests = repo_tests_for(path)
    case = next(t for t in tests["tests"]
                if t["alert_rule_test"][0]["alertname"] == "ApprovalQueueBacklog"
                and t["alert_rule_test"][0]["exp_alerts"])
    for series in case["input_series"]:
        series["values"] = "1x20"  # never above the threshold: test fails
    (path.parent / "tests" / "t.yml").write_text(yaml.safe_dump(tests))
    got = [(r, m) for r, _, m in findings([path], promtool=True)]
    assert len(got) == 1
    assert got[0][0] == "promtool-test"
    assert got[0][1].startswith("ApprovalQueueBacklog at 15m: promtool test rules failed")


@needs_promtool
def test_promtool_checks_dashboard_queries_too(tmp_path, monkeypatch) -> None:
    # Our parser accepts a duration Prometheus rejects; promtool is the second opinion.
    monkeypatch.setattr("approvalctl.lint.dashboards.check_query", lambda *a: [])
    dash = good_dashboard()
    title = set_expr(dash, 2, "max(increase(approval_timeout_total[5x]))")
    got = findings([write_dashboard(tmp_path, dash)], promtool=True)
    assert [(r, m.split(":")[0]) for r, _, m in got] == [
        ("promtool-check", f"panel 3 {title!r} query A")]


# ---------------------------------------------------------------- exclusions
def test_exclusions_need_a_reason_and_silence_matching_findings(tmp_path, monkeypatch) -> None:
    dash = good_dashboard()
    set_expr(dash, 0, 'approval_pending_request{job=~"$job"}')
    write_dashboard(tmp_path, dash)
    monkeypatch.chdir(tmp_path)
    ignore = tmp_path / ".lint-dashboards-ignore"
    ignore.write_text("# legacy\ndash.json:metric-exported:panel 1*\n")
    runner = CliRunner()
    result = runner.invoke(app, ["lint-dashboards", "dash.json", "--no-promtool"])
    assert result.exit_code == 1
    assert ".lint-dashboards-ignore:exclusion:error:line 2:exclusion of metric-exported on " \
           "dash.json gives no reason" in result.stdout
    assert "dash.json:metric-exported:error:panel 1" in result.stdout
    ignore.write_text("dash.json:metric-exported:panel 1*  -- old exporter, until Q3\n")
    result = runner.invoke(app, ["lint-dashboards", "dash.json", "--no-promtool"])
    assert result.exit_code == 0, result.stdout
    assert "1 excluded" in result.stderr


def test_exclusion_parser() -> None:
    entries, problems = parse_exclusions("a.json:grid  -- ok\nbad line\n\n# c\nx:y\n")
    assert [(e.path, e.rule, e.location, e.reason) for e in entries] == [
        ("a.json", "grid", "", "ok")]
    assert [p.location for p in problems] == ["line 2", "line 5"]


def test_malformed_structures_are_findings_never_crashes(tmp_path) -> None:
    odd_json = [[], {"panels": None}, "text", {"uid": "x", "title": "t", "templating": None,
                                               "panels": [None, 3, {"type": "row",
                                                                    "panels": [None]}]},
                {"uid": "x", "title": "t", "panels": [{"id": 1, "gridPos": {"x": "0"},
                                                       "targets": "x", "fieldConfig": None}]},
                {"uid": "x", "title": "t", "panels": [{"id": 1, "targets": [
                    {"expr": 5}, None, {"expr": "rate(x"}]}]}]
    odd_yaml = [{"groups": None}, {"groups": {"a": 1}},
                {"groups": [None, {"name": "a", "rules": "x"}, {"name": "b", "rules": [
                    None, {"alert": 5, "expr": 3}, {"alert": "A", "record": "b"},
                    {"alert": "B", "expr": "x", "labels": "s", "annotations": ["a"]}]}]},
                {"rule_files": 5, "tests": [None, {"alert_rule_test": 3}]}]
    for i, doc in enumerate(odd_json):
        (tmp_path / f"d{i}.json").write_text(json.dumps(doc))
    for i, doc in enumerate(odd_yaml):
        (tmp_path / f"r{i}.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    result = CliRunner().invoke(app, ["lint-dashboards", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    flagged = {Path(f["path"]).name for f in doc["findings"]}
    assert flagged >= {f"d{i}.json" for i in range(len(odd_json))} | {
        f"r{i}.yml" for i in range(3)} | {"binary.json"}


@needs_promtool
def test_alert_unit_tests_pass_under_promtool() -> None:
    import subprocess

    tests = sorted(str(p.relative_to(ALERTS)) for p in (ALERTS / "tests").glob("*.yml"))
    res = subprocess.run(["promtool", "test", "rules", *tests], cwd=ALERTS,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_legend_must_name_a_label_the_result_carries(tmp_path) -> None:
    dash = good_dashboard()
    title = set_expr(dash, 4, 'max by (status) (rate(approval_requests_total{job=~"$job"}'
                              '[$__rate_interval]))')
    dash["panels"][4]["targets"][0]["legendFormat"] = "{{status}} on {{instance}}"
    got = findings([write_dashboard(tmp_path, dash)])
    assert got == [("legend-label", "error", f"panel 5 {title!r} query A: legend uses "
                    "instance, which the query's result does not carry (it has: status)")]


def test_alert_templates_must_name_labels_the_alert_keeps(tmp_path) -> None:
    doc = good_rules()
    rule = next(r for r in doc["groups"][0]["rules"] if r["alert"] == "ApprovalQueueBacklog")
    rule["expr"] = "sum(approval_pending_requests) > 20"  # sum() drops database
    path = write_rules(tmp_path, doc, repo_tests_for(tmp_path / "alerts" / "rules.yml"))
    got = findings([path])
    assert got == [("alert-template", "error", "group approvalctl alert ApprovalQueueBacklog: "
                    "annotation description uses $labels.database, which the alert does not "
                    "carry "
                    "(it has: no labels)")]

