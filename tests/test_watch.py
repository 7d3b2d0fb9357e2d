"""`approvalctl watch` (issue 14): the installed command in a real pseudo-terminal, updated by
requests another process makes, ringing the bell and calling notify-send for high risk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import env_for


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_watch_updates_from_another_process_and_rings_for_high_risk(db_url, tmp_path) -> None:
    pexpect = pytest.importorskip("pexpect")
    # a notify-send of our own on PATH records how it was called
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "notified.txt"
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> {log}\n")
    fake.chmod(0o755)
    env = {**env_for(db_url), "TERM": "xterm-256color",
           "PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    child = pexpect.spawn(shutil.which("approvalctl"), ["watch", "--bell"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(24, 100),
                          cwd=str(tmp_path))
    child.expect(r"pending requests: 0")

    def request(tool: str, risk: str, reason: str) -> str:
        made = subprocess.run([sys.executable, "-m", "approvalctl", "request", tool, "--risk",
                               risk, "--reason", reason],
                              env={**env_for(db_url), "APPROVALCTL_USER": "deploy-bot"},
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    request("lint_code", "low", "tidy")
    child.expect(r"pending requests: 1")
    child.expect("lint_code")
    assert "\a" not in child.before
    request("db_drop", "high", "[red]cleanup[/red]\x1b]0;x\x07")
    child.expect("\a")  # the bell rings once the high-risk request shows
    child.expect(r"pending requests: 2")
    child.expect("db_drop")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    called = log.read_text()
    assert called.startswith("--|approvalctl: high-risk request|db_drop for deploy-bot: ")
    assert "[red]cleanup[/red]\\x1b]0;x\\x07" in called and "\x1b" not in called


def test_watch_refuses_a_bad_filter_at_once(db_url) -> None:
    proc = subprocess.run([sys.executable, "-m", "approvalctl", "watch", "--status", "done"],
                          env=env_for(db_url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown status 'done'")
