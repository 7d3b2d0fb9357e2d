"""`approvalctl exec` and the local decider's identity, with real processes: the gate
files a request for exactly that argv, waits, consumes the approval and runs the command
once; a rejection runs nothing. Both backends."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time

import pytest
from conftest import env_for

from approvalctl.digest import digest

pytestmark = pytest.mark.slow

OS_USER = pwd.getpwuid(os.getuid()).pw_name


def approvalctl(db, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["approvalctl", *args], env={**env_for(db), **(env or {})},
                          capture_output=True, text=True, timeout=60, **kw)


def pending_id(db) -> str:
    for _ in range(300):
        items = json.loads(approvalctl(db, "list", "--json").stdout)
        if items:
            return items[0]["id"]
        time.sleep(0.1)
    raise AssertionError("exec filed no request")


def start_exec(db, tmp_path, *extra: str) -> subprocess.Popen:
    # The command appends one line per run: running twice would show.
    script = "import sys; open(sys.argv[1], 'a').write(repr(sys.argv[2:]) + '\\n'); sys.exit(7)"
    return subprocess.Popen(
        ["approvalctl", "exec", "--reason", "release", *extra, "--", sys.executable, "-c",
         script, str(tmp_path / "ran.txt"), "a b", "; rm -rf /"],
        env={**env_for(db), "APPROVALCTL_USER": "deploy-bot"}, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_exec_runs_exactly_the_approved_argv_once(db_url, tmp_path) -> None:
    proc = start_exec(db_url, tmp_path)
    rid = pending_id(db_url)
    shown = json.loads(approvalctl(db_url, "show", rid, "--json").stdout)
    assert shown["tool_name"] == "shell.exec" and shown["user_id"] == "deploy-bot"
    assert shown["arguments"]["argv"][-2:] == ["a b", "; rm -rf /"]
    assert shown["arguments"]["cwd"] == str(tmp_path)
    assert shown["digest"] == digest("shell.exec", shown["arguments"])
    decided = approvalctl(db_url, "approve", rid)  # another process, the operator
    assert decided.returncode == 0, decided.stderr
    assert shown["digest"][:19] in decided.stderr and "shell.exec" in decided.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err  # the command's own exit status
    assert (tmp_path / "ran.txt").read_text() == repr(["a b", "; rm -rf /"]) + "\n"
    after = json.loads(approvalctl(db_url, "show", rid, "--json").stdout)
    assert after["consumed_at"] is not None
    # the approval is spent: nobody can consume it again
    again = approvalctl(db_url, "consume", rid, "--digest", shown["digest"])
    assert again.returncode == 4 and "already consumed" in again.stderr


def test_exec_rejected_never_runs_the_command(db_url, tmp_path) -> None:
    proc = start_exec(db_url, tmp_path)
    rid = pending_id(db_url)
    assert approvalctl(db_url, "reject", rid, "--reason", "no").returncode == 0
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 10, err
    assert not (tmp_path / "ran.txt").exists()


def test_exec_timeout_is_124_and_withdraws_the_request(db_url, tmp_path) -> None:
    proc = start_exec(db_url, tmp_path, "--timeout", "1s")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 124, err
    assert not (tmp_path / "ran.txt").exists()
    items = json.loads(approvalctl(db_url, "list", "--status", "all", "--json").stdout)
    assert [i["status"] for i in items] == ["cancelled"]


def test_exec_stopped_mid_wait_withdraws_the_request(db_url, tmp_path) -> None:
    """SIGTERM while waiting: nothing runs, and the operator is not left with a request
    for a call that will never run (its approval would stay consumable until use_by)."""
    import signal

    proc = start_exec(db_url, tmp_path)
    rid = pending_id(db_url)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and not (tmp_path / "ran.txt").exists()
    shown = json.loads(approvalctl(db_url, "show", rid, "--json").stdout)
    assert shown["status"] == "cancelled"


def test_local_decider_is_the_os_account_not_the_environment(db_url) -> None:
    rid = approvalctl(db_url, "request", "deploy", env={"APPROVALCTL_USER": "alice"}
                      ).stdout.strip()
    done = approvalctl(db_url, "approve", rid, "--json",
                       env={"LOGNAME": "alice", "USER": "alice"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["decided_by"] == OS_USER != "alice"
    # and the OS account's own request cannot be approved by claiming to be someone else
    mine = approvalctl(db_url, "request", "deploy", env={"APPROVALCTL_USER": OS_USER}
                       ).stdout.strip()
    refused = approvalctl(db_url, "approve", mine, env={"LOGNAME": "bob", "USER": "bob"})
    assert refused.returncode == 5 and "cannot approve their own request" in refused.stderr
