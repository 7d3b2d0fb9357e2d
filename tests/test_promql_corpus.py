"""The linter agrees with Prometheus on a corpus of tricky expressions (tests/promql_corpus.yml).

The recorded verdicts come from promtool; with promtool installed they are derived again
here, so a corpus that drifts from Prometheus fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from approvalctl.lint import lint
from approvalctl.lint.queries import Catalogue, check

CORPUS_PATH = Path(__file__).with_name("promql_corpus.yml")
CORPUS = yaml.safe_load(CORPUS_PATH.read_text())
needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool")


def test_corpus_covers_the_tricky_kinds() -> None:
    exprs = [e["expr"] for e in CORPUS]
    assert len(exprs) >= 80 and len(set(exprs)) == len(exprs)
    for needle in ("(?=", "[[:alpha:]]", "[0s]", '\\q"', "sort_by_label", "@ ", "[5m:",
                   "on", "offset -"):
        assert any(needle in e for e in exprs), needle
    assert {e["valid"] for e in CORPUS} == {True, False}


def linter_rejects(expr: str, cat: Catalogue) -> bool:
    return any(rule == "promql" for rule, _, _ in check(expr, cat))


def test_linter_alone_agrees_except_where_the_corpus_says_why() -> None:
    cat = Catalogue.from_registry()
    wrong = []
    for entry in CORPUS:
        agrees = linter_rejects(entry["expr"], cat) != entry["valid"]
        # a stale note fails too: remove it once the parser agrees
        if agrees == bool(entry.get("linter_differs")):
            wrong.append((entry["expr"], entry["valid"], entry.get("linter_differs")))
    assert wrong == []


@needs_promtool
def test_promtool_still_gives_the_recorded_verdicts(tmp_path) -> None:
    rules = [{"record": f"corpus_{i}", "expr": e["expr"]} for i, e in enumerate(CORPUS)]
    path = tmp_path / "corpus.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "corpus", "rules": rules}]}))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    rejected = {int(i) for i in re.findall(r'"corpus_(\d+)"', res.stdout + res.stderr)}
    drift = [e["expr"] for i, e in enumerate(CORPUS) if (i not in rejected) != e["valid"]]
    assert drift == [], "promtool's verdicts changed: re-record tests/promql_corpus.yml"


@needs_promtool
def test_linter_with_promtool_agrees_on_every_expression(tmp_path) -> None:
    panels = [{"id": i + 1, "type": "timeseries", "title": f"e{i}",
               "gridPos": {"x": 0, "y": i * 4, "w": 24, "h": 4},
               "targets": [{"refId": "A", "expr": e["expr"]}]}
              for i, e in enumerate(CORPUS)]
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps({"uid": "corpus", "title": "corpus", "panels": panels}))
    report = lint([path], use_promtool=True)
    rejected = {int(f.location.split()[1]) - 1 for f in report.findings
                if f.rule in ("promql", "promtool-check") and f.severity == "error"}
    wrong = [e["expr"] for i, e in enumerate(CORPUS) if (i not in rejected) != e["valid"]]
    assert wrong == []
