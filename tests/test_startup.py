"""Start-up discipline: what the everyday commands import, and that option parsing stays Typer's.

`approvalctl list` / `approve ID` must start in well under 0.25 s (issue 2), so they must not
import what they do not use. Timing assertions would be flaky; the module graph is not: these
tests run the real command with `python -X importtime` and fail if a heavy module sneaks onto
the hot path (tests/load/bench_core.py measures the time itself).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import CliRunner, env_for

from approvalctl.cli import app
from approvalctl.models import Principal
from approvalctl.service import ApprovalService

#: Never needed by a local read or decision: the server, the client, metrics, schema
#: validation, notifications, PostgreSQL, the config file parser (no config file here),
#: sqlite-utils (only for pending migrations) and pydantic (Typer 0.29+ coerces options with it,
#: hence the `typer<0.29` bound in pyproject.toml).
HEAVY = ("sqlite_utils", "httpx", "prometheus_client", "jsonschema", "pydantic", "yaml",
         "starlette", "uvicorn", "tenacity", "psycopg", "psycopg_pool", "aiosmtpd", "textual")

_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", re.M)


def _imports(db, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "approvalctl", *args],
                          env=env_for(db), capture_output=True, text=True, timeout=60)
    return proc, {m.split(".")[0] for m in _IMPORT_LINE.findall(proc.stderr)}


@pytest.fixture
def seeded(db_url, service: ApprovalService) -> tuple[str, str]:
    """A migrated database with two pending requests (opening it again migrates nothing)."""
    agent = Principal("deploy-bot", "user")
    first = service.create(agent, "git_push", {"branch": "main"}, reason="release")
    second = service.create(agent, "db_migrate", {})
    service.store.close()
    return first.id, second.id


@pytest.mark.slow
# SQLite's start-up path (psycopg is the PostgreSQL path's own import)
@pytest.mark.parametrize("backend_kind", ["sqlite"])
@pytest.mark.parametrize("args", [
    ("approve", "{id}"),
    ("list", "--json"),
    ("show", "{id}", "--json"),
    ("reject", "{id}", "--reason", "not now"),
    ("sweep",),
    ("stats", "--json"),
])
def test_everyday_commands_import_nothing_heavy(db_path, seeded, args) -> None:
    proc, imported = _imports(db_path, *(a.format(id=seeded[0]) for a in args))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "approvalctl" in imported and "typer" in imported  # the probe sees imports
    assert sorted(imported & set(HEAVY)) == []
    # JSON and one-line messages need no rich either; only tables do.
    assert "rich" not in imported


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_a_table_loads_rich_but_still_nothing_heavy(db_path, seeded) -> None:
    proc, imported = _imports(db_path, "list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seeded[0] in proc.stdout
    assert "rich" in imported
    assert sorted(imported & set(HEAVY)) == []


@pytest.mark.slow
def test_help_imports_nothing_heavy(db_path) -> None:
    proc, imported = _imports(db_path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "approve" in proc.stdout
    assert sorted(imported & set(HEAVY)) == []


@pytest.mark.parametrize(("limit", "shown"), [("1", 1), ("2", 2), ("01", 1), ("+1", 1), (" 1", 1)])
def test_integer_options_parse_as_typer_would(db_url, seeded, limit, shown) -> None:
    # Typer's own int parsing: leading zeros, a sign and spaces are accepted as Python's int().
    result = CliRunner().invoke(app, ["--db", db_url, "list", "--limit", limit, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count('"id"') == shown


@pytest.mark.parametrize("limit", ["abc", "1.5", ""])
def test_bad_integer_options_get_typers_usage_error(db_url, seeded, limit) -> None:
    result = CliRunner().invoke(app, ["--db", db_url, "list", "--limit", limit])
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.output


def test_several_ids_and_text_options_arrive_intact(db_url, seeded) -> None:
    result = CliRunner().invoke(app, ["--db", db_url, "approve", *seeded, "--note",
                                      "  spaces kept  ", "--json", "--yes"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count('"decision_note": "  spaces kept  "') == 2
