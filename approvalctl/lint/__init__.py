"""`lint-dashboards`: check Grafana dashboards and Prometheus rules against what we export.

Entry point: `lint(paths) -> Report`. Dashboards (`*.json`) follow `dashboards.py`, rule files
(YAML with `groups:`) follow `rules.py`, promtool test files (YAML with `tests:`) count
towards alert test coverage, other YAML (e.g. Grafana provisioning) is skipped. Every query
gets the rules of `queries.py`; the list of exported metrics comes from the application's
own registry (`approvalctl.metrics.catalogue()`), so a renamed metric breaks the lint, not
the dashboard in production. Expressions are parsed with `promql-parser` (Prometheus'
grammar) and label regexes checked with RE2. With promtool installed, Prometheus's own
parser checks every expression as well (`promtool check rules`) and has the last word on
syntax, and the alert tests run (`promtool test rules`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .dashboards import Queries, lint_dashboard
from .findings import (
    ERROR,
    WARNING,
    Exclusion,
    Finding,
    Report,
    load_exclusions,
    parse_exclusions,
)
from .queries import Catalogue
from .rules import is_rule_file, is_test_file, lint_rules, load_yaml, recorded_names
from .rules import test_coverage as _coverage

__all__ = ["lint", "load_exclusions", "parse_exclusions", "Finding", "Report", "Exclusion"]

PROMTOOL_TIMEOUT = 60


def _files(targets: list[Path]) -> list[Path]:
    out: list[Path] = []
    for target in targets:
        if target.is_dir():
            out += sorted(p for p in target.rglob("*") if p.is_file()
                          and p.suffix in (".json", ".yml", ".yaml"))
        else:
            out.append(target)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def lint(targets: list[Path], *, exclusions: tuple[list[Exclusion], list[Finding]] | None = None,
         use_promtool: bool = True) -> Report:
    report = Report(files=_files(targets))
    findings: list[Finding] = list(exclusions[1]) if exclusions else []
    cat = Catalogue.from_registry()

    dashboards: list[Path] = []
    rule_files: list[tuple[Path, object]] = []
    test_files: dict[Path, tuple[Path, object]] = {}
    for path in report.files:
        if path.suffix == ".json":
            dashboards.append(path)
            continue
        doc, problem = load_yaml(path)
        if problem:
            findings.append(problem)
        elif is_rule_file(doc):
            rule_files.append((path, doc))
        elif is_test_file(doc):
            test_files[path.resolve()] = (path, doc)
    # promtool tests live beside the rules in tests/, linted or not
    for path, _ in rule_files:
        for candidate in sorted((path.parent / "tests").glob("*.y*ml")):
            if candidate.resolve() not in test_files:
                doc, problem = load_yaml(candidate)
                if problem is None and is_test_file(doc):
                    test_files[candidate.resolve()] = (candidate, doc)
    for _, doc in rule_files:
        cat.recorded |= recorded_names(doc)
    coverage = _coverage(list(test_files.values()))

    dash_exprs: list[tuple[Path, str, str]] = []
    for path in dashboards:
        queries = Queries()
        findings += lint_dashboard(path, cat, queries)
        dash_exprs += [(path, loc, text) for loc, text, _ in queries.items]
    rule_exprs: list[tuple[Path, str, str]] = []
    for path, doc in rule_files:
        found, exprs = lint_rules(path, doc, cat, coverage.get(path.resolve(), {}))
        findings += found
        rule_exprs += [(path, loc, text) for loc, text, _ in exprs]

    if use_promtool and shutil.which("promtool"):
        rule_found = _promtool_rules([p for p, _ in rule_files])
        expr_found = _promtool_exprs(dash_exprs)
        # Prometheus itself is the judge of syntax: where our parser rejects what promtool
        # accepts (a grammar version apart), promtool wins and ours becomes a warning.
        accepted = {(str(path), loc) for path, loc, _ in dash_exprs} - \
            {(f.path, f.location) for f in expr_found}
        failed_files = {f.path for f in rule_found}
        accepted |= {(str(path), loc) for path, loc, _ in rule_exprs
                     if str(path) not in failed_files}
        findings = [Finding(f.path, "promql-parser", WARNING, f.location,
                            f"promtool accepts what the linter's parser rejects: {f.message}")
                    if f.rule == "promql" and (f.path, f.location) in accepted else f
                    for f in findings]
        findings += rule_found + expr_found
        findings += _promtool_tests([p for p, _ in test_files.values()])

    if exclusions:
        for f in findings:
            (report.excluded if any(e.matches(f) for e in exclusions[0])
             else report.findings).append(f)
    else:
        report.findings = findings
    return report


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT,
                          check=False, cwd=cwd)


def _promtool_rules(paths: list[Path]) -> list[Finding]:
    out = []
    for path in paths:
        res = _run(["promtool", "check", "rules", str(path)])
        if res.returncode != 0:
            lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines()
                     if ln.strip() and not ln.strip().startswith(("Checking", "FAILED"))]
            for line in lines or ["promtool check rules failed"]:
                out.append(Finding(str(path), "promtool-check", ERROR, "file", line))
    return out


def _promtool_tests(paths: list[Path]) -> list[Finding]:
    out = []
    for path in paths:
        # rule_files in a test file are relative to the test file
        res = _run(["promtool", "test", "rules", path.name], cwd=path.parent)
        if res.returncode != 0:
            text = " ".join((res.stdout + res.stderr).split())
            failed = re.findall(r"alertname: (\w+), time: (\w+)", text)
            where = ", ".join(f"{a} at {t}" for a, t in failed) or "file"
            out.append(Finding(str(path), "promtool-test", ERROR, where,
                               f"promtool test rules failed: {text[:600]}"))
    return out


def _promtool_exprs(exprs: list[tuple[Path, str, str]]) -> list[Finding]:
    """Feed dashboard queries to Prometheus's parser as recording rules of a temp file."""
    if not exprs:
        return []
    import yaml

    rules = [{"record": f"lint_expr_{i}", "expr": text} for i, (_, _, text) in enumerate(exprs)]
    out = []
    with tempfile.TemporaryDirectory(prefix="approvalctl-lint-") as tmp:
        rule_path = Path(tmp) / "dashboard_queries.yml"
        rule_path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}))
        res = _run(["promtool", "check", "rules", str(rule_path)])
        if res.returncode == 0:
            return []
        text = res.stdout + res.stderr
        matched = False
        for m in re.finditer(r'"lint_expr_(\d+)": (.*)', text):
            matched = True
            path, loc, _ = exprs[int(m.group(1))]
            out.append(Finding(str(path), "promtool-check", ERROR, loc, m.group(2).strip()))
        if not matched:
            out.append(Finding(str(exprs[0][0]), "promtool-check", ERROR, "file",
                               " ".join(text.split())[:600]))
    return out
