"""Schemathesis against the spec and a live server: authenticated, every default check, and
zero failures allowed.

Phases: examples, coverage and fuzzing. The stateful phase is left out on purpose: DELETE
on a request *cancels* it (docs/design.md section 5) and the cancelled request stays readable
for the audit trail, which the stateful use-after-free check reports as a deleted resource
still being served. Bounded by example count and time so the suite stays fast; set
APPROVALCTL_SCHEMATHESIS_EXAMPLES / _SEED to dig deeper or reproduce a run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "schemathesis"


@pytest.mark.slow
def test_schemathesis_finds_nothing(make_server, tmp_path):
    live = make_server()
    shutil.copy(HERE / "schemathesis.toml", tmp_path / "schemathesis.toml")
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "hooks"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parents[1]),
                                         env.get("PYTHONPATH", "")])
    examples = os.environ.get("APPROVALCTL_SCHEMATHESIS_EXAMPLES", "15")
    seed = os.environ.get("APPROVALCTL_SCHEMATHESIS_SEED", "20261126")
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{live.url}/openapi.json",
           "-H", f"X-API-Key: {live.keys['admin']}",
           "--phases", "examples,coverage,fuzzing", "--checks", "all",
           "-n", examples, "--seed", seed,
           # one worker: CPython 3.11.7 can raise "AST constructor recursion depth mismatch"
           # inside schemathesis when several generator threads build code at once
           "--workers", "1",
           "--request-timeout", "10", "--generation-database", "none", "--no-color"]
    def run() -> tuple[subprocess.CompletedProcess, str]:
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        return result, result.stdout + result.stderr

    result, output = run()
    summary = output[output.rfind("SUMMARY"):]
    if result.returncode != 0 and "Runtime Error" in summary and "Failures" not in summary:
        # A crash inside schemathesis itself (CPython 3.11.7's intermittent "AST constructor
        # recursion depth mismatch"), not a finding about the API: run the same seed again.
        # Any real check failure is never retried.
        result, output = run()
    assert "schemathesis.toml" in output  # the configuration above was loaded
    assert result.returncode == 0, output[-6000:]
    summary = output[output.rfind("SUMMARY"):]
    assert "failure" not in summary and "error" not in summary.lower(), summary
