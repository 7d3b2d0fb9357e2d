"""Real processes: the installed command, racing deciders, waiters, and a kill -9 mid-burst."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import env_for

pytestmark = pytest.mark.slow


def approvalctl(db, *args: str, user: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = env_for(db)
    if user:
        env["APPROVALCTL_USER"] = user
    return subprocess.run(["approvalctl", *args], env=env, capture_output=True, text=True,
                          timeout=60, **kw)


def test_installed_command_round_trip(db_url) -> None:
    created = approvalctl(db_url, "request", "git_push", "--args", '{"branch": "main"}',
                          user="deploy-bot")
    assert created.returncode == 0, created.stderr
    rid = created.stdout.strip()
    assert approvalctl(db_url, "approve", rid).returncode == 0
    shown = json.loads(approvalctl(db_url, "show", rid, "--json").stdout)
    assert shown["status"] == "approved"
    module = subprocess.run([sys.executable, "-m", "approvalctl", "show", rid, "--json"],
                            env=env_for(db_url), capture_output=True, text=True, timeout=60)
    assert json.loads(module.stdout) == shown


def test_errors_never_print_a_traceback(db_url, tmp_path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_text("x" * 5000)
    for args, code in ((["--db", str(bogus), "list"], 6), (["show", "zzzz"], 3),
                       (["request", "t", "--args", "{"], 2)):
        result = approvalctl(db_url, *args)
        assert result.returncode == code
        assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_wait_sees_another_process_decide_promptly_without_spinning(db_url) -> None:
    rid = approvalctl(db_url, "request", "deploy", user="deploy-bot").stdout.strip()
    waiter = subprocess.Popen(["approvalctl", "wait", rid, "--timeout", "60s"],
                              env=env_for(db_url), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the waiter is idle for a while before the decision
    assert waiter.poll() is None
    approvalctl(db_url, "reject", rid, "--reason", "not now")
    decided = time.monotonic()
    _, status, usage = os.wait4(waiter.pid, 0)
    noticed = time.monotonic() - decided
    waiter.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    assert waiter.returncode == 10
    assert noticed < 1.0, f"the waiter took {noticed:.2f}s to notice the decision"
    # ~3.5 s of waiting must cost a small fraction of a CPU (start-up included)
    assert usage.ru_utime + usage.ru_stime < 1.0
    waiter.stdout.close()
    waiter.stderr.close()


def test_racing_deciders_have_exactly_one_winner(db_url) -> None:
    rid = approvalctl(db_url, "request", "deploy", user="deploy-bot").stdout.strip()
    verbs = ["approve", "reject"] * 4
    procs = [subprocess.Popen(["approvalctl", verb, rid], env=env_for(db_url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for verb in verbs]
    codes = [p.wait(60) for p in procs]
    for p in procs:
        p.stderr.close()
    assert sorted(codes) == [0] + [4] * 7
    audit = json.loads(approvalctl(db_url, "audit", "list", "--json").stdout)
    assert [r["action"] for r in audit][0] == "create"
    assert len([r for r in audit if r["action"] in ("approve", "reject")]) == 1
    assert approvalctl(db_url, "audit", "verify").returncode == 0


def _decide_after_barrier(db_url: str, rid: str, barrier, results, index: int) -> None:
    from approvalctl.errors import ApprovalConflict
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    service = ApprovalService(open_store(db_url))
    barrier.wait()
    try:
        service.decide(Principal(f"op{index}", "operator"), rid,
                       "approve" if index % 2 else "reject")
        results[index] = 0
    except ApprovalConflict:
        results[index] = 4


def test_simultaneous_decisions_after_a_barrier(db_url, service, agent) -> None:
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):
        rid = service.create(agent, "deploy").id
        barrier = ctx.Barrier(6)
        results = ctx.Array("i", [-1] * 6)
        procs = [ctx.Process(target=_decide_after_barrier, args=(db_url, rid, barrier,
                                                                 results, i))
                 for i in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(results) == [0, 4, 4, 4, 4, 4]
        decisions = [r for r in service.store.audit_rows(request_id=rid)
                     if r["action"] != "create"]
        assert len(decisions) == 1


WRITER = textwrap.dedent("""
    import sys
    from approvalctl.errors import Unavailable
    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    service = ApprovalService(open_store(sys.argv[1]))
    me = Principal("writer", "admin", local=True)
    op = Principal("op", "operator")
    n = 0
    while True:
        try:
            req = service.create(me, "burst", {"n": n}, user_id="agent")
        except Unavailable:                # starved of the lock past busy_timeout: retry,
            continue                       # as an agent would (SQLite's lock is not fair)
        print(req.id, flush=True)          # acknowledged: committed before this line
        if n % 3 == 0:
            try:
                service.decide(op, req.id, "approve")
            except Unavailable:
                pass
        n += 1
""")


def test_kill_9_mid_burst_loses_nothing_acknowledged(db_url) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, db_url], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    acked: list[str] = []

    def collect(w: subprocess.Popen) -> None:
        for line in w.stdout:
            acked.append(line.strip())

    # Read both writers at once: SQLite's lock is not fair, so one writer may run far
    # ahead of the other, and a full pipe must never be what stalls it.
    readers = [threading.Thread(target=collect, args=(w,), daemon=True) for w in writers]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline and \
            all(w.poll() is None for w in writers):
        time.sleep(0.01)
    for w in writers:
        os.kill(w.pid, signal.SIGKILL)
    for w, r in zip(writers, readers):
        w.wait(10)
        r.join(10)
        errors = w.stderr.read()
        w.stdout.close()
        w.stderr.close()
        assert w.returncode == -signal.SIGKILL, errors  # it was killed, it did not crash
    assert len(acked) >= 300

    from approvalctl.models import Principal
    from approvalctl.service import ApprovalService
    from approvalctl.store import open_store

    store = open_store(db_url)
    missing = [rid for rid in acked if store.get(rid) is None]
    assert missing == []
    if not db_url.startswith("postgres"):
        conn = sqlite3.connect(db_url)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ApprovalService(store).audit_verify(Principal("a", "admin")).ok
    # every stored request has its create row, every decision its decide row
    creates = {r["request_id"] for r in store.audit_rows() if r["action"] == "create"}
    assert set(acked) <= creates
