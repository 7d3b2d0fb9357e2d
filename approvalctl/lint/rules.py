"""Rules for Prometheus rule files (alerts and recordings) and their promtool tests.

    yaml                the file is valid YAML
    rule-structure      groups with names and rules, each rule an alert or a record
    alert-name          CamelCase
    alert-for           a `for:` so one bad scrape does not page anyone
    alert-severity      labels.severity is critical, warning or info
    alert-summary / alert-description
                        annotations; the description is templated ({{ $value }}, labels)
    alert-summary-style / alert-description-style
                        as mixtool's lint wants them: a summary is one short line starting
                        with a capital letter and no closing period; a description starts
                        with a capital letter (or a template) and ends as a sentence
    alert-runbook       runbook_url, and when it points at docs/runbook.md#anchor, the
                        section exists
    alert-test          every alert has a promtool test, with a firing and a quiet case
    alert-template      `$labels.x` in annotations and labels names a label the alert's
                        expression keeps (`sum()` drops them all)
    + every expr: the rules of `queries.py`
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .findings import ERROR, WARNING, Finding
from .queries import Catalogue, check, missing_labels

_CAMEL = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*")
_SEVERITIES = ("critical", "warning", "info")
_RECORD_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def load_yaml(path: Path) -> tuple[Any, Finding | None]:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"line {mark.line + 1} column {mark.column + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or str(exc)
        return None, Finding(str(path), "yaml", ERROR, loc, f"invalid YAML: {problem}")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Finding(str(path), "yaml", ERROR, "file", f"cannot read: {exc}")


def is_rule_file(doc: Any) -> bool:
    return isinstance(doc, dict) and "groups" in doc


def is_test_file(doc: Any) -> bool:
    return isinstance(doc, dict) and "tests" in doc and "rule_files" in doc


def as_list(value: Any) -> list[Any]:
    """`value` if it is a list, else empty: malformed input is reported, never crashes."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def recorded_names(doc: Any) -> set[str]:
    names: set[str] = set()
    for group in as_list(as_dict(doc).get("groups")):
        for rule in as_list(as_dict(group).get("rules")):
            if isinstance(rule, dict) and isinstance(rule.get("record"), str):
                names.add(rule["record"])
    return names


def _runbook_anchors(runbook: Path) -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in runbook.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _find_runbook(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "docs" / "runbook.md"
        if candidate.exists():
            return candidate
    return None


def lint_rules(path: Path, doc: Any, cat: Catalogue,
               tests: dict[str, dict[str, set[str]]]) -> tuple[list[Finding], list[tuple]]:
    """Findings for one rule file, and its expressions (location, expr) for promtool.

    `tests` maps alert name -> {"firing": test files, "quiet": test files} for this file.
    """
    out: list[Finding] = []
    exprs: list[tuple[str, str, str]] = []

    def add(rule: str, severity: str, location: str, message: str) -> None:
        out.append(Finding(str(path), rule, severity, location, message))

    groups = doc.get("groups")
    if not isinstance(groups, list):
        add("rule-structure", ERROR, "groups", "groups must be a list")
        return out, exprs
    runbook = _find_runbook(path.resolve().parent)
    anchors = _runbook_anchors(runbook) if runbook else set()
    group_names: set[str] = set()
    for gi, group in enumerate(groups):
        if not isinstance(group, dict) or not group.get("name"):
            add("rule-structure", ERROR, f"group {gi + 1}", "group needs a name")
            continue
        gname = str(group["name"])
        if gname in group_names:
            add("rule-structure", ERROR, f"group {gname}", "duplicate group name")
        group_names.add(gname)
        if not isinstance(group.get("rules"), list):
            add("rule-structure", ERROR, f"group {gname}", "rules must be a list")
            continue
        for ri, rule in enumerate(group["rules"]):
            if not isinstance(rule, dict):
                add("rule-structure", ERROR, f"group {gname} rule {ri + 1}", "not a mapping")
                continue
            name = rule.get("alert") or rule.get("record")
            loc = f"group {gname} " + (f"alert {name}" if rule.get("alert") else
                                       f"record {name}" if name else f"rule {ri + 1}")
            if bool(rule.get("alert")) == bool(rule.get("record")):
                add("rule-structure", ERROR, loc, "a rule needs exactly one of alert: or "
                    "record:")
                continue
            if not isinstance(name, str):
                add("rule-structure", ERROR, loc, "alert and record names must be text")
                continue
            expr = rule.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                add("promql", ERROR, loc, "rule has no expr")
            else:
                exprs.append((loc, expr, expr))
                for r, sev, msg in check(expr, cat):
                    add(r, sev, loc, msg)
            if rule.get("record"):
                if not _RECORD_NAME.fullmatch(str(rule["record"])):
                    add("rule-structure", ERROR, loc, "record name is not a valid metric name")
                continue
            _alert(rule, loc, add, anchors, runbook, tests)
            if isinstance(expr, str):
                _template_labels(rule, expr, loc, add, cat)
    return out, exprs


def _alert(rule: dict[str, Any], loc: str, add, anchors: set[str], runbook: Path | None,
           tests: dict[str, dict[str, set[str]]]) -> None:
    name = str(rule["alert"])
    if not _CAMEL.fullmatch(name):
        add("alert-name", ERROR, loc, f"alert name {name!r} should be CamelCase "
            "(e.g. ApprovalQueueBacklog)")
    if "for" not in rule:
        add("alert-for", ERROR, loc, "no for: one bad evaluation would page; say how long "
            "the condition must hold")
    labels = as_dict(rule.get("labels"))
    severity = labels.get("severity")
    if severity is None:
        add("alert-severity", ERROR, loc, "no severity label (critical, warning or info)")
    elif severity not in _SEVERITIES:
        add("alert-severity", ERROR, loc, f"severity {severity!r} is not one of "
            f"{', '.join(_SEVERITIES)}")
    ann = as_dict(rule.get("annotations"))
    if not str(ann.get("summary") or "").strip():
        add("alert-summary", ERROR, loc, "no summary annotation")
    summary = str(ann.get("summary") or "").strip()
    if summary:
        problems = []
        if not (summary[0].isupper() or summary.startswith("{{")):
            problems.append("start with a capital letter")
        if summary.endswith("."):
            problems.append("not end with a period")
        if "\n" in summary or len(summary) > 120:
            problems.append("fit on one line of at most 120 characters")
        if problems:
            add("alert-summary-style", ERROR, loc, f"summary {summary[:60]!r} should "
                + " and ".join(problems))
    desc = str(ann.get("description") or "")
    stripped = desc.strip()
    if stripped and not ((stripped[0].isupper() or stripped.startswith("{{"))
                         and stripped[-1] in ".?!"):
        add("alert-description-style", ERROR, loc, "description should start with a capital "
            "letter (or a template) and end with '.', '?' or '!'")
    if not desc.strip():
        add("alert-description", ERROR, loc, "no description annotation")
    elif "{{" not in desc:
        add("alert-description", WARNING, loc, "description is not templated: include "
            "{{ $value }} or {{ $labels.job }} so the page says what is wrong where")
    url = str(ann.get("runbook_url") or "")
    if not url:
        add("alert-runbook", WARNING, loc, "no runbook_url annotation")
    elif "runbook.md#" in url and runbook is not None:
        anchor = url.rsplit("#", 1)[1].lower()
        if anchor not in anchors:
            add("alert-runbook", ERROR, loc, f"runbook_url points at #{anchor}, which is no "
                f"section of {runbook}")
    cases = tests.get(name)
    if not cases:
        add("alert-test", ERROR, loc, "no promtool test (alert_rule_test) for this alert "
            "under tests/")
    else:
        if not cases.get("firing"):
            add("alert-test", WARNING, loc, "tests never expect this alert to fire")
        if not cases.get("quiet"):
            add("alert-test", WARNING, loc, "tests never expect this alert to stay quiet")


def _template_labels(rule: dict[str, Any], expr: str, loc: str, add, cat: Catalogue) -> None:
    """`{{ $labels.x }}` in annotations and labels must name a label the alert carries."""
    for section in ("annotations", "labels"):
        for key, text in as_dict(rule.get(section)).items():
            if not isinstance(text, str):
                continue
            found = missing_labels(expr, text, cat, legend=False)
            if found and found[0]:
                add("alert-template", ERROR, loc, f"{section[:-1]} {key} uses $labels."
                    f"{', $labels.'.join(found[0])}, which the alert does not carry (it has: "
                    f"{', '.join(sorted(found[1])) or 'no labels'})")


def test_coverage(test_files: list[tuple[Path, Any]]
                  ) -> dict[Path, dict[str, dict[str, set[str]]]]:
    """rule file (resolved) -> alert -> {"firing"/"quiet": test files}."""
    out: dict[Path, dict[str, dict[str, set[str]]]] = {}
    for path, doc in test_files:
        rule_files = [(path.parent / str(f)).resolve() for f in as_list(doc.get("rule_files"))]
        for test in as_list(doc.get("tests")):
            for case in as_list(as_dict(test).get("alert_rule_test")):
                if not isinstance(case, dict) or not isinstance(case.get("alertname"), str):
                    continue
                kind = "firing" if case.get("exp_alerts") else "quiet"
                for rf in rule_files:
                    out.setdefault(rf, {}).setdefault(case["alertname"], {}).setdefault(
                        kind, set()).add(str(path))
    return out
