"""`approvalctl watch` (issue 14): the installed command in a real pseudo-terminal, updated by
requests another process makes, ringing the bell and calling notify-send for high risk (its
text escaped for notification markup); on a terminal shorter than the queue it keeps the
high-risk rows, the newest first, and says what it left out; a quorum shows as `list` shows
it (`pending (1 of 2)`) and follows approvals made elsewhere."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from conftest import bulk_create, env_for, installed, quit_with_ctrl_c

from approvalctl.models import Principal

AGENT = Principal("deploy-bot", "user")
HOSTILE = ('<b>Pre-approved by SecOps</b> <a href="http://evil.example">details</a> '
           '&amp; <img src="x.png"/>')


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
    child = pexpect.spawn(installed(), ["watch", "--bell"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(24, 100),
                          cwd=str(tmp_path))
    child.logfile_read = seen = io.StringIO()
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
    # the bell would follow the redraw: give it the moment, then none may have rung
    child.expect([pexpect.TIMEOUT, "\a"], timeout=1)
    assert "\a" not in seen.getvalue(), "a low-risk request rang the bell"
    request("db_drop", "high", "[red]cleanup[/red]\x1b]0;x\x07" + HOSTILE)
    child.expect("\a")  # the bell rings once the high-risk request shows
    child.expect(r"pending requests: 2")
    child.expect("db_drop")
    quit_with_ctrl_c(child)
    assert seen.getvalue().count("\a") == 1  # once, for the high-risk request only
    called = log.read_text()
    assert called.count("--|") == 1
    assert called.startswith("--|approvalctl: high-risk request|db_drop for deploy-bot: ")
    assert "[red]cleanup[/red]\\x1b]0;x\\x07" in called and "\x1b" not in called
    # notification servers read a markup subset in the body: every tag arrives as text
    assert "&lt;b&gt;Pre-approved by SecOps&lt;/b&gt; &lt;a href=\"http://evil.example\"&gt;" \
           "details&lt;/a&gt; &amp;amp; &lt;img src=\"x.png\"/&gt;|" in called
    assert "<" not in called and ">" not in called


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_a_short_terminal_keeps_the_newest_high_risk_and_says_what_it_cut(service, operator,
                                                                         db_url, tmp_path):
    """Ten pending requests in a terminal with room for six rows: the newest (high-risk)
    request is drawn, a last line counts the rest; a new high-risk request made by another
    process is drawn too; a quorum shows as `pending (0 of 2)` and counts an approval
    made elsewhere."""
    pexpect = pytest.importorskip("pexpect")
    low = [service.create(AGENT, f"lint_{i}", {"n": i}, risk="low").id for i in range(9)]
    service.require_approvals(operator, low[0], 2)
    high = service.create(AGENT, "db_drop", {}, risk="high", reason="cleanup").id
    # the size in the environment too: rich falls back to 80x25 when it cannot read the
    # pty's size, and this test is about what fits in 10 lines
    env = {**env_for(db_url), "TERM": "xterm-256color", "LINES": "10", "COLUMNS": "140",
           "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    child = pexpect.spawn(installed(), ["watch"], env=env, encoding="utf-8",
                          timeout=60, dimensions=(10, 140), cwd=str(tmp_path))
    child.logfile_read = seen = io.StringIO()
    try:
        child.expect(r"pending requests: 10")
        child.expect(high[:12])  # the newest, high risk: drawn although the oldest fill up
        child.expect(r"\+4 more not shown; newest not shown: lint_8 for deploy-bot \(low, ")
        assert "pending (0 of 2)" in seen.getvalue()  # the oldest, with its quorum
        made = subprocess.run([sys.executable, "-m", "approvalctl", "request", "db_wipe",
                               "--risk", "high"], env={**env, "APPROVALCTL_USER": "deploy-bot"},
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        child.expect(r"pending requests: 11")
        child.expect("db_wipe")
        child.expect(r"\+5 more not shown; newest not shown: lint_8 ")
        approved = subprocess.run([sys.executable, "-m", "approvalctl", "approve", low[0]],
                                  env=env, capture_output=True, text=True, timeout=60)
        assert approved.returncode == 0, approved.stderr
        child.expect(r"pending \(1 of 2\)")
        assert "lint_5" not in seen.getvalue()  # left out all along, as the last line says
        quit_with_ctrl_c(child)
    finally:
        if child.isalive():
            child.terminate(force=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_past_200_pending_a_new_high_risk_request_still_shows_and_rings(service, db_url,
                                                                         tmp_path):
    """The queue read is the 200 oldest: a high-risk request made after them by another
    process is drawn and rings the bell all the same."""
    pexpect = pytest.importorskip("pexpect")
    bulk_create(service.store, 230)
    env = {**env_for(db_url), "TERM": "xterm-256color", "LINES": "24", "COLUMNS": "160",
           "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    child = pexpect.spawn(installed(), ["watch", "--bell"], env=env, encoding="utf-8",
                          timeout=60, dimensions=(24, 160), cwd=str(tmp_path))
    try:
        child.expect(r"pending requests: 200\+")
        child.expect(r"over 200 pending: only the 200 oldest and those new")
        made = subprocess.run([sys.executable, "-m", "approvalctl", "request", "db_wipe",
                               "--risk", "high"], env={**env, "APPROVALCTL_USER": "deploy-bot"},
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        child.expect("\a")
        child.expect(r"pending requests: 201\+")
        child.expect(made.stdout.strip()[:12])
        quit_with_ctrl_c(child)
    finally:
        if child.isalive():
            child.terminate(force=True)


@pytest.mark.parametrize("backend_kind", ["sqlite"])
def test_the_rows_kept_on_a_short_terminal(service) -> None:
    """More high-risk requests than room: the newest of them first, then the oldest; the
    rows drawn stay oldest first, and the last line names the newest left out."""
    from approvalctl.cli.watch import fit, left_out_line

    made = [service.create(AGENT, f"t{i}", {}, risk=risk)
            for i, risk in enumerate(["high", "low", "high", "high", "low", "high"])]
    shown, left = fit(made, 3)
    assert [r.tool_name for r in shown] == ["t0", "t2", "t5"]
    assert [r.tool_name for r in left] == ["t1", "t3", "t4"]
    assert left_out_line(left).startswith("+3 more not shown (1 high risk); newest not "
                                          "shown: t4 for deploy-bot (low, ")
    assert "over 200 pending" not in left_out_line(left)
    assert "over 200 pending: only the 200 oldest and those new since watch began are " \
           "known" in left_out_line(left, True)
    assert fit(made, 6) == (made, [])


def test_watch_refuses_a_bad_filter_at_once(db_url) -> None:
    proc = subprocess.run([sys.executable, "-m", "approvalctl", "watch", "--status", "done"],
                          env=env_for(db_url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown status 'done'")
