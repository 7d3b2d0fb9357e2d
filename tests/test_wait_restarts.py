"""Remote waits ride out a server restart (issue #12.4).

A real `approvalctl serve` process is killed while CLI waiters long-poll it, and started
again on the same port and database; the approval made afterwards reaches the waiters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import env_for, free_port, stop_process, wait_http

from approvalctl import errors
from approvalctl.client import Client

pytestmark = pytest.mark.slow


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["approvalctl", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60, status=200)
    return proc


def test_waiters_ride_out_a_server_restart_and_see_the_approval(tmp_path: Path):
    db = tmp_path / "approvals.db"
    env = env_for(db)

    def key(name: str, role: str) -> str:
        out = subprocess.run(["approvalctl", "keys", "create", "--name", name, "--role", role,
                              "--json"], env=env, capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)["key"]

    agent, operator = key("agent-bot", "user"), key("olivia", "operator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    remote = {**env, "APPROVALCTL_SERVER": url, "APPROVALCTL_API_KEY": agent}
    server = serve(env, port)
    waiters: list[subprocess.Popen] = []
    try:
        with Client(url, agent) as client:
            rid = client.create("git_push").id
        waiters.append(subprocess.Popen(
            ["approvalctl", "wait", rid, "--timeout", "60s"], env=remote,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        waiters.append(subprocess.Popen(
            ["approvalctl", "request", "deploy", "--wait", "--timeout", "60s"], env=remote,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        line = waiters[1].stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("waiting for a decision on "), line
        second = line.split()[5]
        time.sleep(0.5)  # both are long-polling now
        server.send_signal(signal.SIGKILL)
        server.wait()
        server.stderr.close()  # type: ignore[union-attr]
        time.sleep(1.5)  # the restart gap
        server = serve(env, port)
        with Client(url, operator) as ops:
            ops.approve(rid)
            ops.approve(second)
        for waiter in waiters:
            out, err = waiter.communicate(timeout=60)
            assert waiter.returncode == 0, err
            assert "Traceback" not in err
    finally:
        for waiter in waiters:
            if waiter.poll() is None:
                waiter.kill()
                waiter.communicate()
        stop_process(server)


def test_a_wait_on_a_server_that_stays_down_ends_at_its_timeout_with_exit_6(tmp_path):
    port = free_port()
    env = {**os.environ, "APPROVALCTL_SERVER": f"http://127.0.0.1:{port}",
           "APPROVALCTL_API_KEY": "actl_0000000000_x"}
    result = subprocess.run(["approvalctl", "wait", "01abcdefgh", "--timeout", "2s"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 6, result.stderr
    assert result.stderr.count("\n") == 1
    assert "cannot reach approvalctl server" in result.stderr
    assert "ran out" in result.stderr
    with Client(f"http://127.0.0.1:{port}", "k") as client, \
            pytest.raises(errors.Unavailable, match="ran out"):
        client.wait("01abcdefgh", timeout=1)
