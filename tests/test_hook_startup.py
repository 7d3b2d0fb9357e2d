"""The hook's allow path runs before every tool call: what it may import.

`approvalctl hook AGENT` is dispatched by the console script before the Typer app loads
(approvalctl/entry.py). This runs the real command with `python -X importtime` on the allow
path (a policy rule allows the call) and fails if the CLI framework or anything else the
hook does not use is imported; tests/load/bench_hook.py measures the time itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import env_for

from approvalctl.models import Principal
from approvalctl.service import ApprovalService

#: Never needed to gate a call: the CLI framework and its output, httpx (whose import loads
#: click and rich), the server, schema validation, metrics, notifications.
FORBIDDEN = ("typer", "click", "rich", "pydantic", "httpx", "starlette", "uvicorn", "jsonschema",
             "prometheus_client", "tenacity", "aiosmtpd", "approvalctl.cli",
             "approvalctl.server", "approvalctl.notify", "approvalctl.metrics")
EVENT = (Path(__file__).parent / "fixtures" / "hooks" / "claude-code.PreToolUse.json")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", re.M)


def imported_by_hook(env: dict) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "approvalctl", "hook",
                           "claude-code"], env=env, input=EVENT.read_bytes(),
                          capture_output=True, timeout=60)
    names = set(_IMPORT_LINE.findall(proc.stderr.decode()))
    return proc, names | {n.split(".")[0] for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_the_local_allow_path_imports_no_cli_framework(db_path, service: ApprovalService):
    service.add_rule(Principal("t", "admin", local=True),
                     {"name": "bash", "tools": ["Bash"], "action": "allow"})
    service.store.close()
    proc, names = imported_by_hook(env_for(db_path))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b'"allow"' in proc.stdout
    assert "approvalctl.hook" in names  # the probe sees imports
    assert sorted(names & set(FORBIDDEN)) == []


@pytest.mark.slow
def test_the_server_allow_path_imports_no_cli_framework(tmp_path):
    from test_hooks import Serve

    serve = Serve(tmp_path / "approvals.db")
    try:
        serve.operator.add_rule({"name": "bash", "tools": ["Bash"], "action": "allow"})
        proc, names = imported_by_hook(serve.hook_env())
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        assert b'"allow"' in proc.stdout and "http.client" in names
        assert sorted(names & set(FORBIDDEN)) == []
    finally:
        serve.stop()
